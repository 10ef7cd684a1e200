"""Step: filtered Ge images (the SSC's filtered BCDs, 70 and 160 um). For every block of frames
(the frame chunks of the mosaic's zarr arrays) the frames of its AOR within ``margin(window)``
DCEs on either side in time are loaded too (so that blocks give the numbers of the whole); per
pixel the running time median of the good, not rejected, not source values is subtracted
(``kernels.filtering``), and the filtered images and their uncertainties are written to the
group's ``filtered`` / ``filtered_unc`` arrays
(frame, fy, fx). The filtered mosaic is then coadded from them (``steps.coadd``, ``filtered``).

The frames are filtered as the BCDs are: no pointing correction (not needed per pixel) and no
background offset (the filter removes every slow level; subtracting the offsets, which are
noisy estimates, would only add their frame-to-frame noise). Sources left out of the medians:
``kernels.filtering.compact_source_mask`` of each frame (``MosaicParams.filter_mask_nsigma``
sigma above the frame's own 5 x 5 running median, grown by one pixel)."""
from __future__ import annotations

import dask
import numpy as np

from ..kernels import filtering as K
from . import frames as F
from . import images

FILTER_NAME = "time-median high-pass"     # the FILTER keyword of the products


def wanted(instrument, chnlnum, params) -> bool:
    """Whether a mosaic gets filtered products: the MIPS Ge arrays (70, 160 um) when
    ``params.filtered``."""
    return bool(getattr(params, "filtered", False)) and instrument == "MIPS" and int(chnlnum) in (2, 3)


def sequences(infos, positions) -> list[list[int]]:
    """``positions`` grouped by AOR, each group in time order (frames without a finite time
    keep their order in the unit)."""
    groups = {}
    for p in positions:
        groups.setdefault(int(infos[p].aorkey), []).append(int(p))
    out = []
    for _aor, ps in sorted(groups.items()):
        t = np.array([infos[p].time for p in ps], float)
        if np.all(np.isfinite(t)):
            ps = [ps[k] for k in np.argsort(t, kind="stable")]
        out.append(ps)
    return out


def _plan_block(targets, seqs, where, half):
    """The runs of consecutive frames (positions, in time order) to load for ``targets``: per
    sequence (AOR) the targets' span plus ``half`` frames on either side."""
    runs = {}
    for p in targets:
        s, k = where[p]
        lo, hi = runs.get(s, (k, k))
        runs[s] = (min(lo, k), max(hi, k))
    out = []
    for s, (lo, hi) in sorted(runs.items()):
        a, b = max(lo - half, 0), min(hi + half + 1, len(seqs[s]))
        out.append(seqs[s][a:b])
    return out


def _filter_block(src, store, key, targets, runs, window, min_values, max_window, mask_nsigma, ready):
    targets = set(int(p) for p in targets)
    done = {}
    for run in runs:
        frames = F.load(src, run)
        rejected = images.read_frames(store, key, "rejected", run)
        stack = np.stack([f.image for f in frames])
        good = np.stack([np.asarray(f.good, bool) & ~r.astype(bool) & np.isfinite(f.image) for f, r in
                         zip(frames, rejected)])
        masks = np.stack([K.compact_source_mask(f.image, f.unc, g, nsigma=mask_nsigma, dilate_px=1)
                          for f, g in zip(frames, good)])
        base, n_used, own = K.running_median(stack, good, window, source_mask=masks, min_values=min_values,
                                             max_window=max_window)
        for j, (p, f) in enumerate(zip(run, frames)):
            if p not in targets or p in done:
                continue
            ok = np.asarray(f.good, bool) & np.isfinite(f.image) & np.isfinite(base[j])
            filt = np.where(ok, f.image - base[j], np.nan).astype(np.float32)
            unc = np.where(ok, K.filtered_uncertainty(f.unc, n_used[j], own[j]), np.nan).astype(np.float32)
            images.write(store, key, "filtered", (p,), filt)
            images.write(store, key, "filtered_unc", (p,), unc)
            done[p] = int(ok.sum())
    return done


def margin(window) -> int:
    """Frames on either side of a frame that its filtered value depends on: half the widest
    median (``kernels.filtering.default_max_window``)."""
    return K.default_max_window(K.odd_window(window)) // 2


def highpass(src, store, key, infos, positions, params, *, block, ready):
    """Lazy {frame position: filtered pixels} (the images go to the group's ``filtered`` and
    ``filtered_unc``); ``positions``: the frames with a WCS; ``ready``: what must be done
    first (the group created, the outliers rejected)."""
    window = K.odd_window(params.filter_window)
    min_values = K.default_min_values(window)
    max_window = K.default_max_window(window)
    seqs = sequences(infos, positions)
    where = {p: (s, k) for s, seq in enumerate(seqs) for k, p in enumerate(seq)}
    parts = []
    for targets in F.chunk_blocks(positions, block):
        runs = _plan_block(targets, seqs, where, margin(window))
        parts.append(dask.delayed(_filter_block, pure=True)(src, store, key, targets, runs, window, min_values,
                                                            max_window, float(params.filter_mask_nsigma), ready))
    return dask.delayed(F.merge, pure=True)(parts)
