"""Stim-flash responsivity of the Ge:Ga arrays (70, 160 um), lazy: a small reduction over the
stim-flash DCEs broadcast back to every DCE, and its application to the rates (kernels:
``reduce.mips.kernels.responsivity``).

The plan (pipeline.plan_bcd, with ``kernels.responsivity.background_pairs``) picks, per AOR,
the stim DCEs (STIMFLSH = 1) and their background neighbours; only those rates (a few % of
the DCEs) enter one small task (``per_stim_responsivity``): stim - background, divided by
STIMAMP, per pixel; a stim whose signal is <= 0 (per pixel, or its array median) is invalid.
The responsivity of a stim is the median over its valid pixels (1 = nominal), with its error
from the pixels' spread. Each DCE chunk then evaluates the responsivity of its AOR at the DCE
time (``GeParams.resp_method``): 'gp' (default) a smooth drift model fitted to the AOR's valid
stims (Gaussian-process regression, ``kernels.responsivity.fit_drift``; the stim backgrounds
are first brought to the stim's responsivity), which also gives ``responsivity_unc``, the
fractional 1-sigma error of each DCE's responsivity (smallest at the stims, growing between
them and most before the first / after the last stim); or the former 'linear' (between the
bracketing stims, constant outside) / 'nearest' (``responsivity_unc`` 0). An AOR without a
valid stim gives NaN (no_responsivity). ``apply_responsivity`` adds responsivity_unc x |rate|
to ``unc`` in quadrature, so the BCD uncertainty (``_bunc``) includes the frame-to-frame
calibration error, and mosaic weights built from it do too.
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
TIME_UNIT_S = 86400.0   # the ``time`` coordinate is MJD (days)


def track_responsivity(ds, plan, cal, p: GeParams = GeParams()):
    """Add ``responsivity`` (dce,) float32 (lazy; array median, 1 = nominal) and its fractional
    1-sigma error ``responsivity_unc`` from the dark-subtracted ``rate`` (dce, y, x) DN/s of the
    plan's stim DCEs and their backgrounds (``plan.stim_subset``), modelled in time per AOR
    (``p.resp_method``); set dce_code no_responsivity where it is NaN."""
    idx, table = plan.stim_subset
    gp = {"method": p.resp_method, "amp": p.resp_amp, "scale_s": p.resp_timescale_s,
          "time_unit_s": TIME_UNIT_S}
    if idx.size:
        sub = ds.rate.isel(dce=idx).data.rechunk((idx.size, -1, -1))
        # one small task on the gathered stim/background rates (a pure array graph, so the
        # ramp fits it needs are shared with the main path, not recomputed)
        stims = sub.map_blocks(K.per_stim_responsivity, table=table, calset=plan.calset[idx],
                               stimamp=cal.image("stimamp").values, times=plan.times[idx],
                               aorkeys=plan.aorkeys[idx], **gp, chunks=((table.shape[0],), (3,)),
                               drop_axis=2, dtype=np.float64)
    else:
        stims = da.zeros((0, 3), dtype=np.float64, chunks=((0,), (3,)))
    stim_global = idx[table[:, 0]] if idx.size else np.zeros(0, np.int64)
    stims = xr.DataArray(stims, dims=("stim", "two"))
    resp, runc = per_dce(K.responsivity_block, [ds.time, ds.aorkey, ds.skip],
                         cal={"stims": stims},
                         outputs=[((), np.float32)] * 2,
                         kwargs={"stim_times": plan.times[stim_global], "stim_aors": plan.aorkeys[stim_global],
                                 "with_unc": True, **gp})
    code = ds.dce_code | xr.where(np.isnan(resp) & ~ds.skip, DCE_CODES["no_responsivity"], 0).astype(np.int16)
    ds = ds.assign(responsivity=resp, responsivity_unc=runc, dce_code=code)
    ds["responsivity"].attrs["long_name"] = "responsivity, array median (1 = nominal)"
    ds["responsivity_unc"].attrs["long_name"] = "fractional 1-sigma error of the responsivity"
    ds = ds.assign_attrs(stim_responsivity_method=p.resp_method)
    return record(ds, "responsivity.track_responsivity", p, cal)


def apply_responsivity(ds, cal):
    """``rate`` (dce, y, x) DN/s / responsivity (per DCE), minus STIMAMP in stim-flash DCEs;
    ``unc`` / responsivity, plus ``responsivity_unc`` x rate / responsivity in quadrature (the
    calibration error of the DCE, common to its pixels), when present."""
    data = [ds.rate, ds.unc, ds.responsivity, ds.stimflsh, ds.calset]
    if "responsivity_unc" in ds:
        data.append(ds.responsivity_unc)
    rate, unc = per_dce(K.apply_responsivity_block, data,
                        cal={"stimamp": cal.image("stimamp")},
                        outputs=[(YX, np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "responsivity.apply_responsivity", None, cal)
