"""Step: flux-conserving coaddition. Every output tile drizzles the frames that overlap it
(pointing corrected, background matched, outliers rejected; inverse-variance weights) and
writes its sci / unc / cov to the mosaic's zarr group, in parallel over tiles."""
from __future__ import annotations

import dask
import numpy as np

from ..kernels import coadd as K
from . import frames as F
from . import images


def _tile(src, store, key, members, bound, grid, pointing, background, pixfrac, rejected_ready):
    y0, y1, x0, x1 = bound
    frames = F.usable(F.load(src, members, pointing, background))
    rejects = [images.read(store, key, "rejected", (f.meta["position"],)).astype(bool) for f in frames]
    if frames:
        sci, unc, cov = K.coadd_tile(grid.tile(y0, y1, x0, x1), frames, None, rejects, pixfrac=pixfrac)
    else:
        shape = (y1 - y0, x1 - x0)
        sci, unc, cov = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape)
    region = (slice(y0, y1), slice(x0, x1))
    for name, v in (("sci", sci), ("unc", unc), ("cov", cov)):
        images.write(store, key, name, region, v)
    return int(np.isfinite(sci).sum())


def coadd(src, store, key, grid, bounds, members, pointing, background, *, pixfrac, ready):
    """Lazy list of the pixels with data per tile (the tiles themselves go to zarr)."""
    return [dask.delayed(_tile, pure=True)(src, store, key, list(map(int, members[t])), bounds[t], grid, pointing,
                                           background, pixfrac, ready)
            for t in range(len(bounds))]
