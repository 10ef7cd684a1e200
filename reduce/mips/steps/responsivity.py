"""Stim-flash responsivity of the Ge:Ga arrays (70, 160 um), lazy: a small reduction over the
stim-flash DCEs broadcast back to every DCE, and its application to the rates (kernels:
``reduce.mips.kernels.responsivity``).

The plan (pipeline.plan_bcd, with ``kernels.responsivity.background_pairs``) picks, per AOR,
the stim DCEs (STIMFLSH = 1) and their background neighbours; only those rates (a few % of
the DCEs) enter one small task (``per_stim_responsivity``): stim - background, divided by
STIMAMP, per pixel; a stim whose signal is <= 0 (per pixel, or its array median) is invalid.
The responsivity of a stim is the median over its valid pixels (1 = nominal). Each DCE chunk
then interpolates the valid stims of its AOR in time (``GeParams.resp_method``: 'linear'
between the bracketing stims, 'nearest' outside; or 'nearest'). An AOR without a valid stim
gives NaN (no_responsivity).
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..bcd import DCE_CODES
from ..kernels import responsivity as K
from ..kernels.ramps import GeParams
from ._graph import per_dce, record

YX = ("y", "x")


def track_responsivity(ds, plan, cal, p: GeParams = GeParams()):
    """Add ``responsivity`` (dce,) float32 (lazy; array median, 1 = nominal) from the dark-
    subtracted ``rate`` (dce, y, x) DN/s of the plan's stim DCEs and their backgrounds
    (``plan.stim_subset``), interpolated in time per AOR (``p.resp_method``); set dce_code
    no_responsivity where it is NaN."""
    idx, table = plan.stim_subset
    if idx.size:
        sub = ds.rate.isel(dce=idx).data.rechunk((idx.size, -1, -1))
        # one small task on the gathered stim/background rates (a pure array graph, so the
        # ramp fits it needs are shared with the main path, not recomputed)
        stims = sub.map_blocks(K.per_stim_responsivity, table=table, calset=plan.calset[idx],
                               stimamp=cal.image("stimamp").values, chunks=((table.shape[0],), (2,)),
                               drop_axis=2, dtype=np.float64)
    else:
        stims = da.zeros((0, 2), dtype=np.float64, chunks=((0,), (2,)))
    stim_global = idx[table[:, 0]] if idx.size else np.zeros(0, np.int64)
    stims = xr.DataArray(stims, dims=("stim", "two"))
    resp = per_dce(K.responsivity_block, [ds.time, ds.aorkey, ds.skip],
                   cal={"stims": stims},
                   outputs=[((), np.float32)],
                   kwargs={"stim_times": plan.times[stim_global], "stim_aors": plan.aorkeys[stim_global],
                           "method": p.resp_method})
    code = ds.dce_code | xr.where(np.isnan(resp) & ~ds.skip, DCE_CODES["no_responsivity"], 0).astype(np.int16)
    ds = ds.assign(responsivity=resp, dce_code=code)
    ds["responsivity"].attrs["long_name"] = "responsivity, array median (1 = nominal)"
    ds = ds.assign_attrs(stim_responsivity_method=p.resp_method)
    return record(ds, "responsivity.track_responsivity", p, cal)


def apply_responsivity(ds, cal):
    """``rate`` (dce, y, x) DN/s / responsivity (per DCE), minus STIMAMP in stim-flash DCEs;
    ``unc`` / responsivity."""
    rate, unc = per_dce(K.apply_responsivity_block, [ds.rate, ds.unc, ds.responsivity, ds.stimflsh, ds.calset],
                        cal={"stimamp": cal.image("stimamp")},
                        outputs=[(YX, np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "responsivity.apply_responsivity", None, cal)
