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


def pixmap(frame_wcs: WCS, frame_shape, grid_wcs: WCS) -> np.ndarray:
    """Output-grid pixel coordinates of every input pixel centre: (ny, nx, 2) float64 with
    [..., 0] = x and [..., 1] = y (0-based), the ``pixmap`` of ``drizzle``."""
    x, y = pixel_centres(frame_shape)
    ra, dec = frame_wcs.all_pix2world(x, y, 0)
    ox, oy = grid_wcs.all_world2pix(ra, dec, 0)
    return np.dstack([ox, oy])


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
    tangent plane at CRVAL (exact for the small offsets of pointing refinement)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    out = wcs.deepcopy()
    c = SkyCoord(out.wcs.crval[0] * u.deg, out.wcs.crval[1] * u.deg, frame="icrs")
    sep = np.hypot(d_east, d_north)
    if sep == 0:
        return out
    moved = c.directional_offset_by(np.arctan2(d_east, d_north) * u.rad, sep * u.arcsec)
    out.wcs.crval = [moved.ra.deg, moved.dec.deg]
    out.wcs.set()
    return out
