"""Step: background matching. Robust level differences of overlapping frame pairs (pairs from
the footprints' spatial index, sources masked), computed per block of pairs in parallel; one
task solves the additive offsets, per frame or per group of frames (scan legs), over the
overlap graph (sparse, sum zero).

The source masks are made once per frame (``SourceMasks``: by the pointing step's tasks, which
load every frame anyway) and kept in the mosaic's zarr group (``srcmask``): a frame is in
several pair blocks, on any worker."""
from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np

from ..kernels import background as K
from . import frames as F
from . import images


@dataclass(frozen=True)
class SourceMasks:
    """Writes the source masks (``kernels.background.source_mask``) of a block of loaded frames
    into the array ``srcmask`` of the unit's zarr group (uint8 (frame, y, x), 1 = source);
    ``fwhm_px``: the PSF FWHM in pixels, for the masks of narrow frames."""

    store: str
    key: str
    nsigma: float = 3.0
    dilate_px: float = 2
    fwhm_px: float | None = None

    def __call__(self, frames, positions):
        """``frames``: loaded frames at the unit frame ``positions`` (one chunk of ``srcmask``)."""
        if not frames:
            return
        masks = np.zeros((len(positions),) + frames[0].shape, np.uint8)
        for j, f in enumerate(frames):
            if f.wcs is not None and f.good.any():
                masks[j] = K.source_mask(f.image, f.unc, f.good, nsigma=self.nsigma, dilate_px=self.dilate_px,
                                         fwhm_px=self.fwhm_px)
        images.write_frames(self.store, self.key, "srcmask", positions, masks)


def _pair_block(src, store, key, pairs, pointing, min_pixels):
    pairs = [(int(i), int(j)) for i, j in pairs]      # (m, 2) array: not a list, which dask would walk
    need = sorted({p for pair in pairs for p in pair})
    frames = {f.meta["position"]: f for f in F.load(src, need, pointing)}
    stored = images.read_frames(store, key, "srcmask", need).astype(bool)
    masks = {p: stored[k] for k, p in enumerate(need) if frames[p].wcs is not None and frames[p].good.any()}
    var = {p: K.pixel_variance(frames[p].unc) for p in masks}     # once per frame, not per pair
    out = np.full((len(pairs), 3), np.nan)
    for k, (i, j) in enumerate(pairs):
        if i in masks and j in masks:
            out[k] = K.pair_difference(frames[i], frames[j], mask_i=masks[i], mask_j=masks[j],
                                       min_pixels=min_pixels, var_i=var[i], var_j=var[j])
    return out


def _solve(n, pairs, parts, corr, groups=None):
    res = np.concatenate(parts) if parts else np.zeros((0, 3))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    offsets, sigma, component = K.solve_offsets(n, pairs, res[:, 0], res[:, 1], corr=corr, groups=groups)
    used = np.isfinite(res[:, 0]).sum() if len(res) else 0
    return {"offsets": offsets, "sigma": sigma, "component": component, "pairs": len(pairs), "pairs_used": int(used)}


def match(src, store, key, pairs, n, pointing, footprints, *, enabled=True, block=256, min_pixels=20,
          groups=None):
    """Lazy {offsets (n,) MJy/sr, sigma, component, pairs, pairs_used}; ``enabled`` False: zeros.
    ``pairs``: (m, 2) frame indices of overlapping frames; ``footprints``: (n, 4, 2) deg (the
    correlation of pair differences that share a frame, for the offsets' sigmas). The frames'
    source masks are read from ``store`` (``SourceMasks``, written before ``pointing`` is known);
    ``min_pixels``: pixels a pair difference needs (fewer for small frames: ``pair_difference``'s
    ``min_frac``); ``groups``: (n,) int labels of frames sharing one offset
    (``kernels.background.leg_groups``), None: one offset per frame."""
    if not enabled or len(pairs) == 0:
        return dask.delayed(_zero)(n, len(pairs))
    parts = [dask.delayed(_pair_block, pure=True)(src, store, key, np.asarray(pairs[a:a + block], np.int64),
                                                 pointing, min_pixels)
             for a in range(0, len(pairs), block)]
    pairs = np.asarray(pairs, np.int64)
    # honest sigmas (pair differences that share a frame are correlated): a task of its own, from
    # the geometry alone, so that it runs beside the pair blocks and not after them
    corr = dask.delayed(K.pair_correlation, pure=True)(footprints, pairs) if n <= 2000 else None
    return dask.delayed(_solve, pure=True)(n, pairs, parts, corr, None if groups is None else np.asarray(groups, np.int64))


def _zero(n, npairs):
    return {"offsets": np.zeros(n), "sigma": np.zeros(n), "component": np.full(n, -1), "pairs": npairs,
            "pairs_used": 0}
