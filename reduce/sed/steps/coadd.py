"""ON, OFF and ON - OFF coadds of one SED AOR, lazy (one task over the AOR's rectified BCDs;
kernel: ``reduce.sed.kernels.coadd.coadd_aor_block``).

Each ON frame minus its OFF (same cycle, nearest in time) removes the extended background up to
the OFF position's difference; the differences, the ON and the OFF frames are shifted by whole
columns so that the dithers along the slit line up (shifts from RA_REF/DEC_REF projected on the
slit, ``reduce.sed.pipeline.plan_spectrum``), outliers are rejected across frames and the rest
combined with per-frame inverse-variance weights.
"""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..kernels import coadd as K
from .rectify import FATAL, sed_mask_bits

IMAGES = ("onoff", "onoff_unc", "on", "on_unc", "off", "off_unc", "depth")


def coadd_aor(ds, plan, *, nsigma=4.0, min_depth=3):
    """Lazy Dataset (row, ccol) of the AOR's coadds in MJy/sr: ``onoff``/``onoff_unc`` (ON - OFF),
    ``on``/``on_unc``, ``off``/``off_unc``, ``depth`` (frames per pixel of ``onoff``), the aligned
    ON - OFF ``frames``/``frames_unc`` (frame, row, ccol) with the pixels rejected across frames
    NaN, scalar ``rejected`` (pixels rejected across frames); attrs ``col0``: the column of the first ON
    frame that coadd column 0 holds. ``ds``: the AOR's rows of bcd70sed (lazy)."""
    bits = sed_mask_bits()
    fatal = sum(int(bits[b]) for b in FATAL)
    lo = int(min(plan.shift.min(), plan.off_shift.min()))
    hi = int(max(plan.shift.max(), plan.off_shift.max()))
    nrow, ncol = ds.sizes["row"], ds.sizes["col"] + hi - lo
    arrays = [ds[v].data.rechunk(-1) for v in ("bcd", "unc", "mask")]
    task = dask.delayed(K.coadd_aor_block, nout=len(IMAGES) + 3, pure=True)(
        *arrays, on=plan.on, off=plan.off, shift=plan.shift - lo, off_only=plan.off_only,
        off_shift=plan.off_shift - lo, ncol=ncol, nsigma=nsigma, min_depth=min_depth, fatal=fatal)
    out = {}
    for k, name in enumerate(IMAGES):
        part = task[k]
        dtype = np.int16 if name == "depth" else np.float32
        out[name] = (("row", "ccol"), da.from_delayed(part, (nrow, ncol), dtype=dtype))
    m = len(plan.on)
    out["frames"] = (("frame", "row", "ccol"), da.from_delayed(task[len(IMAGES)], (m, nrow, ncol), dtype=np.float32))
    out["frames_unc"] = (("frame", "row", "ccol"),
                         da.from_delayed(task[len(IMAGES) + 1], (m, nrow, ncol), dtype=np.float32))
    out["rejected"] = ((), da.from_delayed(task[len(IMAGES) + 2], (), dtype=np.int64))
    res = xr.Dataset(out, attrs={"col0": lo, "nsigma": nsigma, "min_depth": min_depth})
    for name in IMAGES[:-1]:
        res[name].attrs["units"] = "MJy/sr"
    return res
