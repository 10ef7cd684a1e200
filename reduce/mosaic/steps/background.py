"""Step: background matching. Robust level differences of overlapping frame pairs (pairs from
the footprints' spatial index, sources masked), computed per block of pairs in parallel; one
task solves the additive offsets, per frame or per group of frames (scan legs), over the
overlap graph (sparse, sum zero)."""
from __future__ import annotations

import dask
import numpy as np

from ..kernels import background as K
from . import frames as F


def _pair_block(src, pairs, pointing, min_pixels, nsigma, dilate_px, fwhm_px=None):
    pairs = [(int(i), int(j)) for i, j in pairs]      # (m, 2) array: not a list, which dask would walk
    need = sorted({p for pair in pairs for p in pair})
    frames = {f.meta["position"]: f for f in F.load(src, need, pointing)}
    masks = {p: K.source_mask(f.image, f.unc, f.good, nsigma=nsigma, dilate_px=dilate_px, fwhm_px=fwhm_px)
             for p, f in frames.items() if f.wcs is not None and f.good.any()}
    out = np.full((len(pairs), 3), np.nan)
    for k, (i, j) in enumerate(pairs):
        if i in masks and j in masks:
            out[k] = K.pair_difference(frames[i], frames[j], mask_i=masks[i], mask_j=masks[j],
                                       min_pixels=min_pixels)
    return out


def _solve(n, pairs, parts, footprints, groups=None):
    res = np.concatenate(parts) if parts else np.zeros((0, 3))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    corr = K.pair_correlation(footprints, pairs) if n <= 2000 else None   # honest sigmas (shared frames)
    offsets, sigma, component = K.solve_offsets(n, pairs, res[:, 0], res[:, 1], corr=corr, groups=groups)
    used = np.isfinite(res[:, 0]).sum() if len(res) else 0
    return {"offsets": offsets, "sigma": sigma, "component": component, "pairs": len(pairs), "pairs_used": int(used)}


def match(src, pairs, n, pointing, footprints, *, enabled=True, block=256, min_pixels=20, nsigma=3.0, dilate_px=2,
          fwhm_px=None, groups=None):
    """Lazy {offsets (n,) MJy/sr, sigma, component, pairs, pairs_used}; ``enabled`` False: zeros.
    ``pairs``: (m, 2) frame indices of overlapping frames; ``footprints``: (n, 4, 2) deg (the
    correlation of pair differences that share a frame, for the offsets' sigmas); ``fwhm_px``:
    the PSF FWHM in pixels, for the source masks of narrow frames (``kernels.background
    .source_mask``); ``min_pixels``: pixels a pair difference needs (fewer for small frames:
    ``pair_difference``'s ``min_frac``); ``groups``: (n,) int labels of frames sharing one offset
    (``kernels.background.leg_groups``), None: one offset per frame."""
    if not enabled or len(pairs) == 0:
        return dask.delayed(_zero)(n, len(pairs))
    parts = [dask.delayed(_pair_block, pure=True)(src, np.asarray(pairs[a:a + block], np.int64), pointing,
                                                 min_pixels, nsigma, dilate_px, fwhm_px)
             for a in range(0, len(pairs), block)]
    return dask.delayed(_solve, pure=True)(n, np.asarray(pairs, np.int64), parts, footprints,
                                           None if groups is None else np.asarray(groups, np.int64))


def _zero(n, npairs):
    return {"offsets": np.zeros(n), "sigma": np.zeros(n), "component": np.full(n, -1), "pairs": npairs,
            "pairs_used": 0}
