"""The shared data model of the mosaic kernels: a BCD frame, an output grid, the pixel map.

Conventions (every mosaic kernel follows them):

- Pixel indices are 0-based (numpy), ``image[y, x]``; astropy WCS calls use ``origin=0``
  (``wcs.all_pix2world(x, y, 0)``, ``wcs.all_world2pix(ra, dec, 0)``), so SIP distortion
  is always applied.
- Images are surface brightness (MJy/sr for MIPS, IRAC); ``unc`` is the 1-sigma
  uncertainty in the same unit; ``good`` is True where a pixel may be used.
- A pointing correction of a frame is (``d_east``, ``d_north``) in arcsec: the frame's true
  sky positions are its WCS positions moved by that much east and north on the tangent
  plane at the frame's centre (``shift_wcs`` applies it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from astropy.wcs import WCS


@dataclass
class Frame:
    """One BCD: ``image``, ``unc`` (float, (ny, nx)), ``good`` (bool, (ny, nx)), ``wcs``
    (2-D celestial, SIP where the BCD has it); ``meta``: small per-frame facts (time MJD,
    aorkey, dceid, name) the kernels may carry along but never need."""

    image: np.ndarray
    unc: np.ndarray
    good: np.ndarray
    wcs: WCS
    meta: dict = field(default_factory=dict)

    @property
    def shape(self):
        return self.image.shape


@dataclass
class Grid:
    """An output pixel grid: a 2-D celestial ``wcs`` (TAN, north up) and ``shape`` (ny, nx)."""

    wcs: WCS
    shape: tuple

    def tile(self, y0, y1, x0, x1) -> "Grid":
        """The sub-grid [y0:y1, x0:x1] (its WCS has CRPIX shifted; same sky positions)."""
        return Grid(self.wcs[y0:y1, x0:x1], (y1 - y0, x1 - x0))


def pixel_centres(shape):
    """(x, y) float arrays of every pixel centre of an image of ``shape`` (ny, nx), 0-based."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return x, y


MAP_STEP = 16  # pixels between the exact evaluations of a pixel map (pixel_map)


def pixel_map(from_wcs: WCS, to_wcs: WCS, shape, origin=(0, 0), step=MAP_STEP) -> np.ndarray:
    """``to_wcs`` pixel coordinates of the centres of the ``from_wcs`` pixels
    ``[y0:y0 + ny, x0:x0 + nx]`` (``shape`` (ny, nx), ``origin`` (y0, x0)): (ny, nx, 2)
    float64, [..., 0] = x and [..., 1] = y (0-based).

    Both transforms are exact (SIP both ways, ``all_pix2world`` then ``all_world2pix``) on
    nodes every ``step`` pixels and on the edges; a bicubic spline through the nodes fills
    the pixels between (as SWarp interpolates its astrometry). The map is smooth over a
    frame: for TAN+SIP frames of a few arcmin it agrees with transforming every pixel to
    ~1e-10 pixel (tests/mosaic/test_grid.py), at a tenth of the cost (``_spline_matrix``). Regions with fewer
    than 4 nodes on an axis (the 2-row 160 um array), or a node that does not transform,
    are transformed pixel by pixel."""
    ny, nx = int(shape[0]), int(shape[1])
    y0, x0 = origin
    nodes_y = np.linspace(0, ny - 1, int(np.ceil((ny - 1) / step)) + 1) if ny > 1 else np.zeros(1)
    nodes_x = np.linspace(0, nx - 1, int(np.ceil((nx - 1) / step)) + 1) if nx > 1 else np.zeros(1)
    if min(len(nodes_y), len(nodes_x)) >= 4 and len(nodes_y) * len(nodes_x) < ny * nx:
        gx, gy = np.meshgrid(nodes_x + x0, nodes_y + y0)
        ox, oy = to_wcs.all_world2pix(*from_wcs.all_pix2world(gx, gy, 0), 0, quiet=True)
        if np.isfinite(ox).all() and np.isfinite(oy).all():
            by, bx = _spline_matrix(ny, len(nodes_y)), _spline_matrix(nx, len(nodes_x))
            return np.dstack([by @ ox @ bx.T, by @ oy @ bx.T])
    x, y = pixel_centres((ny, nx))
    ra, dec = from_wcs.all_pix2world(x + x0, y + y0, 0)
    ox, oy = to_wcs.all_world2pix(ra, dec, 0, quiet=True)
    return np.dstack([ox, oy])


@lru_cache(maxsize=256)
def _spline_matrix(n, m):
    """(n, m) matrix taking values on the ``m`` nodes of ``pixel_map`` (``np.linspace(0, n - 1,
    m)``) to their cubic interpolating spline (not-a-knot, the knots of FITPACK's interpolating
    ``RectBivariateSpline(s=0)``) at the ``n`` pixels 0 .. n - 1. The bicubic spline through a
    grid of nodes is the tensor product of two such 1-D splines, so a map is ``By @ V @ Bx.T``:
    the same numbers as ``RectBivariateSpline`` (to 1e-12 pixel), 30x cheaper for one frame,
    and the matrices are shared by every map of that shape (read-only)."""
    from scipy.interpolate import make_interp_spline
    out = make_interp_spline(np.linspace(0, n - 1, m), np.eye(m), k=3)(np.arange(n, dtype=np.float64))
    out.setflags(write=False)
    return out


def pixmap(frame_wcs: WCS, frame_shape, grid_wcs: WCS) -> np.ndarray:
    """Output-grid pixel coordinates of every input pixel centre: (ny, nx, 2) float64 with
    [..., 0] = x and [..., 1] = y (0-based), the ``pixmap`` of ``drizzle`` (``pixel_map``)."""
    return pixel_map(frame_wcs, grid_wcs, frame_shape)


def frame_centre(wcs: WCS, shape):
    """(ra, dec) deg of the centre of a frame of ``shape``."""
    ra, dec = wcs.all_pix2world((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0, 0)
    return float(ra), float(dec)


def footprint(wcs: WCS, shape):
    """(4, 2) array of (ra, dec) deg of the outer corners of a frame (pixel edges)."""
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return np.column_stack(wcs.all_pix2world(x, y, 0))


def shift_wcs(wcs: WCS, d_east: float, d_north: float) -> WCS:
    """A copy of ``wcs`` whose sky positions are moved by ``d_east``, ``d_north`` arcsec on the
    tangent plane at CRVAL: CRVAL becomes the sky position of the tangent-plane point (xi, eta)
    = (d_east, d_north) (the inverse gnomonic projection; numpy, as it runs for every frame in
    every step)."""
    out = wcs.deepcopy()
    if d_east == 0 and d_north == 0:
        return out
    ra0, dec0 = np.radians(out.wcs.crval[0]), np.radians(out.wcs.crval[1])
    xi, eta = np.radians(d_east / 3600.0), np.radians(d_north / 3600.0)
    den = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, den))
    out.wcs.crval = [float(np.degrees(ra) % 360.0), float(np.degrees(dec))]
    out.wcs.set()
    return out
