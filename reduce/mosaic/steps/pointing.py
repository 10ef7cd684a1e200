"""Step: pointing refinement. Sources are extracted per block of frames (in parallel), their
positions taken to the sky through each frame's WCS; one task then solves the per-frame
offsets (``kernels.pointing.refine_pointing``: sparse robust least squares)."""
from __future__ import annotations

import warnings

import dask
import numpy as np
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from ..kernels import pointing as K
from . import frames as F


def _catalog_block(src, positions, fwhm_px, nsigma, sigma_floor_arcsec, pixel_arcsec, masks=None, ready=None):
    out = {}
    frames = F.load(src, positions)
    if masks is not None:       # the background step's source masks, while the frames are loaded
        masks(frames, positions)
    for f in frames:
        p = f.meta["position"]
        if f.wcs is None or not f.good.any():
            out[p] = None
            continue
        good = f.good & ~f.meta["suspect"] if "suspect" in f.meta else f.good
        narrow = K.is_narrow(f.image.shape, fwhm_px)
        if narrow:   # the 160 um strips: FWHM and errors per pixel axis (16" x 18" pixels)
            scale = proj_plane_pixel_scales(f.wcs.celestial) * 3600.0
            fwhm_xy = tuple(fwhm_px * pixel_arcsec / scale)
        with warnings.catch_warnings():     # astropy / photutils notes on odd frames (what they flag is dropped)
            warnings.simplefilter("ignore", AstropyUserWarning)
            s = K.extract_sources(f.image, f.unc, good, fwhm_px, nsigma=nsigma, fwhm_xy=fwhm_xy if narrow else None)
        ra, dec = f.wcs.all_pix2world(s["x"], s["y"], 0)
        if narrow:   # per-axis rms of the fit errors (y_err ~ 2 x_err on the strips)
            err = np.sqrt(0.5 * ((scale[0] * s["x_err"]) ** 2 + (scale[1] * s["y_err"]) ** 2))
        else:
            err = pixel_arcsec * 0.5 * (s["x_err"] + s["y_err"])
        sigma = np.hypot(err, sigma_floor_arcsec)   # fit errors
        out[p] = {"ra": np.asarray(ra, float), "dec": np.asarray(dec, float), "sigma": sigma}
    return out


def _solve(n, centres, parts, refcat, match_radius_arcsec, min_matches, enabled):
    cats = [None] * n
    for part in parts:
        for p, c in part.items():
            cats[p] = c
    empty = {"ra": np.zeros(0), "dec": np.zeros(0), "sigma": np.zeros(0)}
    if enabled:
        sol = K.refine_pointing([c if c is not None else empty for c in cats], centres, refcat=refcat,
                                match_radius_arcsec=match_radius_arcsec, min_matches=min_matches)
    else:
        sol = _zero(n)
    sol["nsources"] = np.array([-1 if c is None else len(c["ra"]) for c in cats])   # -1: frame not usable
    return sol


def refine(src, positions, n, centres, *, fwhm_px, pixel_arcsec, refcat, match_radius_arcsec, min_matches,
           nsigma=5.0, sigma_floor_arcsec=0.05, block=64, enabled=True, masks=None, ready=None):
    """Lazy solution dict of ``kernels.pointing.refine_pointing`` for the frames at ``positions``
    (``n`` frames in the unit, ``centres`` (n, 2) deg), with ``nsources`` per frame (-1: no WCS or
    no good pixel); ``enabled`` False: sources counted, all offsets 0. ``masks``: called as
    ``masks(frames, positions)`` on each block of loaded frames (blocks of ``F.chunk_blocks``:
    ``background.SourceMasks`` writes them, one zarr chunk per task), after ``ready``."""
    parts = [dask.delayed(_catalog_block, pure=True)(src, blk, fwhm_px, nsigma, sigma_floor_arcsec, pixel_arcsec,
                                                    masks, ready)
             for blk in F.chunk_blocks(positions, block)]
    return dask.delayed(_solve, pure=True)(n, centres, parts, refcat, match_radius_arcsec, min_matches, enabled)


def _zero(n):
    z = np.zeros(n)
    return {"d_east": z, "d_north": z, "sigma_east": z, "sigma_north": z, "nmatch": np.zeros(n, int),
            "refined": np.zeros(n, bool), "rms": float("nan"), "n_ref_matches": 0, "mode": "off",
            "nsources": np.full(n, -1)}
