"""Step: flux-conserving coaddition. Every output tile drizzles the frames that overlap it
(pointing corrected, background matched, outliers rejected; inverse-variance weights) and
writes its sci / unc / cov to the mosaic's zarr group, in parallel over tiles. ``filtered``:
the same from the filtered frames (``steps.filtering``: the group's ``filtered`` /
``filtered_unc``, no background offset, the same rejected pixels) into fsci / func / fcov."""
from __future__ import annotations

import dask
import numpy as np

from ..kernels import coadd as K
from . import frames as F
from . import images


def _filtered(frames, store, key):
    """``frames`` with their image, unc and good replaced by the filtered ones."""
    pos = [f.meta["position"] for f in frames]
    image, unc = (images.read_frames(store, key, n, pos) if pos else [] for n in ("filtered", "filtered_unc"))
    for j, f in enumerate(frames):
        f.image = image[j].astype(np.float64)
        f.unc = unc[j].astype(np.float64)
        f.good = np.asarray(f.good, bool) & np.isfinite(f.image) & np.isfinite(f.unc) & (f.unc > 0)
    return frames


def _tile(src, store, key, members, bound, grid, pointing, background, pixfrac, rejected_ready, filtered=False):
    y0, y1, x0, x1 = bound
    if filtered:
        frames = F.usable(_filtered(F.load(src, members, pointing), store, key))
    else:
        frames = F.usable(F.load(src, members, pointing, background))
    rejects = list(images.read_frames(store, key, "rejected", [f.meta["position"] for f in frames]).astype(bool)
                   if frames else [])
    if frames:
        sci, unc, cov = K.coadd_tile(grid.tile(y0, y1, x0, x1), frames, None, rejects, pixfrac=pixfrac)
    else:
        shape = (y1 - y0, x1 - x0)
        sci, unc, cov = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape)
    region = (slice(y0, y1), slice(x0, x1))
    names = ("fsci", "func", "fcov") if filtered else ("sci", "unc", "cov")
    for name, v in zip(names, (sci, unc, cov)):
        images.write(store, key, name, region, v)
    return int(np.isfinite(sci).sum())


def coadd(src, store, key, grid, bounds, members, pointing, background, *, pixfrac, ready, filtered=False):
    """Lazy list of the pixels with data per tile (the tiles themselves go to zarr);
    ``filtered``: the filtered mosaic (``background`` not used)."""
    return [dask.delayed(_tile, pure=True)(src, store, key, np.asarray(members[t], np.int64), bounds[t], grid, pointing,
                                           None if filtered else background, pixfrac, ready, filtered)
            for t in range(len(bounds))]
