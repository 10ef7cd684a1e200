"""The output grid of a mosaic and its tiling.

``output_grid`` builds a north-up TAN grid that covers a set of frame footprints;
``tile_bounds`` cuts it into tiles; ``frames_in_tiles`` says which frames can touch which
tile. Conventions as in :mod:`reduce.mosaic.kernels.frames` (0-based pixels, origin=0).
"""
from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from reduce.mosaic.kernels.frames import Grid


def _unit_vectors(ra_deg, dec_deg):
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def mean_direction(ra_deg, dec_deg):
    """(ra, dec) deg of the normalised mean of the unit vectors of the given positions
    (no trouble at RA 0/360 or at the poles)."""
    v = _unit_vectors(np.ravel(ra_deg), np.ravel(dec_deg)).sum(axis=0)
    x, y, z = v / np.linalg.norm(v)
    ra = float(np.degrees(np.arctan2(y, x)) % 360.0)
    return (0.0 if ra >= 360.0 else ra), float(np.degrees(np.arcsin(np.clip(z, -1, 1))))


def tan_wcs(ra0, dec0, pixel_scale_arcsec, crpix=(1.0, 1.0), shape=None) -> WCS:
    """North-up, east-left TAN WCS: tangent point (``ra0``, ``dec0``) deg at the 1-based FITS
    ``crpix``, CD = [[-s, 0], [0, s]] with s = ``pixel_scale_arcsec`` / 3600 deg."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = list(crpix)
    s = pixel_scale_arcsec / 3600.0
    w.wcs.cd = [[-s, 0.0], [0.0, s]]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    if shape is not None:
        w.pixel_shape = (shape[1], shape[0])
    return w


def output_grid(footprints, pixel_scale_arcsec, *, margin_px=2) -> Grid:
    """The mosaic grid covering every footprint.

    ``footprints``: (n, 4, 2) deg, (ra, dec) of the outer corners of each frame
    (:func:`frames.footprint`); ``pixel_scale_arcsec``: output pixel size in arcsec.
    Returns a :class:`Grid` with a TAN WCS, north up, east left, tangent point at the
    unit-vector mean of all corners and at the centre of a pixel (integer CRPIX), whose
    pixel edges enclose every corner with at least ``margin_px`` pixels to spare.

    The corners suffice: a frame's edges are straight on its own tangent plane, i.e. great
    circles, and a gnomonic projection maps great circles to straight lines, so on the grid a
    frame lies inside the bounding box of its corners up to its SIP bow (< 0.1 input pixel
    for MIPS), which the margin absorbs.
    """
    fp = np.asarray(footprints, dtype=float).reshape(-1, 2)
    ra0, dec0 = mean_direction(fp[:, 0], fp[:, 1])
    w = tan_wcs(ra0, dec0, pixel_scale_arcsec)  # CRPIX 1: tangent point at pixel 0
    u, v = w.all_world2pix(fp[:, 0], fp[:, 1], 0)
    # first/last pixel (relative to the tangent pixel) whose edges contain the extremes +- margin
    x0 = int(np.floor(u.min() - margin_px + 0.5))
    x1 = int(np.ceil(u.max() + margin_px - 0.5))
    y0 = int(np.floor(v.min() - margin_px + 0.5))
    y1 = int(np.ceil(v.max() + margin_px - 0.5))
    shape = (y1 - y0 + 1, x1 - x0 + 1)
    return Grid(tan_wcs(ra0, dec0, pixel_scale_arcsec, crpix=(1.0 - x0, 1.0 - y0), shape=shape),
                shape)


def tile_bounds(shape, size=512):
    """(y0, y1, x0, x1) of square tiles of side ``size`` (the last row/column smaller) that
    cover an image of ``shape`` (ny, nx), row-major order; slices are [y0:y1, x0:x1]."""
    ny, nx = shape
    return [(y0, min(y0 + size, ny), x0, min(x0 + size, nx))
            for y0 in range(0, ny, size) for x0 in range(0, nx, size)]


def frames_in_tiles(footprints, grid: Grid, bounds, *, pad_px=4.0):
    """For each tile of ``bounds`` ((y0, y1, x0, x1) on ``grid``) the int array of the indices
    of frames whose footprint bounding box in grid pixels, grown by ``pad_px``, overlaps the
    tile's pixel edges. ``footprints``: (n, 4, 2) deg.

    The pad covers the SIP bow of frame edges (< 0.1 px) and pointing corrections applied
    after the footprints were taken: 4 px exceeds 5 sigma of the MIPS pointing error at the
    SSC mosaic scales; pass more for larger corrections. Too many frames cost only time (a
    frame that misses a tile adds nothing); too few make seams."""
    fp = np.asarray(footprints, dtype=float)
    n = fp.shape[0]
    if n == 0:
        return [np.zeros(0, dtype=int) for _ in bounds]
    x, y = grid.wcs.all_world2pix(fp[..., 0].ravel(), fp[..., 1].ravel(), 0)
    x, y = x.reshape(n, 4), y.reshape(n, 4)
    fx0, fx1 = x.min(1) - pad_px, x.max(1) + pad_px
    fy0, fy1 = y.min(1) - pad_px, y.max(1) + pad_px
    b = np.asarray(bounds, dtype=float).reshape(-1, 4)[:, :, None]  # (ntiles, 4, 1)
    hit = ((fy0 < b[:, 1] - 0.5) & (fy1 > b[:, 0] - 0.5)
           & (fx0 < b[:, 3] - 0.5) & (fx1 > b[:, 2] - 0.5))  # (ntiles, n)
    return [np.flatnonzero(h) for h in hit]
