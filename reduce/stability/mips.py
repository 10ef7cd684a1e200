"""MIPS instrument stability over a store that may only have been ingested (any time span).

``plan(store, start=, stop=)`` reads the small per-DCE metadata of each array in the window
(``reduce.mips.pipeline.plan_bcd``: calibration sets checked, stim flashes paired with their
backgrounds); ``reductions(plan)`` builds the lazy graphs (nothing computed) with the level-1
steps and kernels of ``reduce.mips``; ``study(store, ...)`` computes them in one ``dask.compute``
and returns a ``reduce.stability.study.Study``.

Measured (per array: 24 = CHNLNUM 1, 70 = 2, 160 = 3):

* ``mips_responsivity`` (70, 160 um), one row per stim flash (STIMFLSH = 1) in the window:
  ``array, aorkey, dceid, mjd, responsivity, responsivity_err`` (+ valid, n_background,
  source_file, status). ``responsivity`` = (stim DCE - mean of its background DCEs) / STIMAMP,
  dark-subtracted linear DN/s, the median over the valid pixels: a dimensionless number, 1 =
  nominal (the STIMAMP of the calibration file); ``responsivity_err`` its 1-sigma error (pixels'
  spread and background disagreement), both from ``reduce.mips.kernels.responsivity.
  per_stim_responsivity`` with the pipeline's ``GeParams`` (method 'gp': each background first
  brought to its stim's responsivity with the AOR's drift model). The ramps come from the Ge ramp
  fit of the BCD pipeline (``reduce.mips.steps.ramps.fit_ramps``); no BCD is made.
* ``mips_responsivity_groups``: the same per pixel group (``pixel_group``: the halves x 0-15 and
  x 16-31 of the 70 um array, the rows y0 and y1 of the 160 um array), the median over the
  group's valid pixels, plain stim - background (method 'linear': backgrounds not rescaled by the
  drift model, a second-order difference for backgrounds on both sides of the stim).
* ``mips_dce``, one row per DCE: ``array, aorkey, dceid, mjd, exptime, stimflsh``,
  ``zero_level_DN`` (Ge: array median of the first read, raw DN), ``read_noise_DN`` (Ge: raw DN
  per read, from the ramp residuals, ``reduce.stability.kernels.mips``), ``saturated_fraction``
  (pixels with a saturated read; 24 um: pixels replaced by the first difference), ``cr_hits``
  (Ge: jumps found by the ramp fit; 24 um: single-frame cosmic-ray flags of the 24 um steps, a
  lower limit: only hits above 5 sigma and sharper than a star), ``pixels`` (with a value).
  24 um has no reads in the store (on-board slopes), so no zero level or read noise; instead
  (24 um only, NaN for Ge) the droop and jailbar measured from each frame before their corrections
  (``reduce.stability.kernels.mips.si_droop_jailbar``; not the calibration file's values):
  ``droop_coeff`` (+ ``_err``; DN/s per DN/s of mean array signal, from the dead pixels),
  ``droop_DN_s``, ``jailbar_DN_s`` (+ ``_err``; the readout-4 column offset),
  ``jailbar_bright_DN_s`` (the bright signal that drives it) and ``jailbar_amplitude`` (+ ``_err``;
  offset per DN/s of bright signal; NaN without bright signal).
* ``mips_cr_daily``, one row per array and UTC day: ``array, day, mjd, dces, hits,
  pixel_seconds, cr_rate`` (hits per pixel per second) and ``cr_rate_err`` (Poisson).

Series (plots, trends): responsivity, zero level, read noise, the 24 um droop coefficient and
jailbar amplitude, saturated fraction (per DCE) and the daily cosmic-ray rate, one line per array.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import pandas as pd

from ..mips.bcd import RAW_GROUPS, mask_bits
from ..mips.calib import BAND, SHAPE
from ..mips.kernels import responsivity as RK
from ..mips.kernels.mask import PMASK_BITS
from ..mips.kernels.si import SiParams
from ..mips.pipeline import BcdParams, open_store, plan_bcd
from ..mips.steps import ramps as ramp_steps
from ..mips.steps import si as si_steps
from ..mips.steps._graph import per_dce
from ..mips.steps.dark import subtract_dark
from ..mips.steps.flat import flat_field
from ..mips.steps.uncertainty import uncertainty
from .kernels import mips as K
from .study import Series, Study

log = logging.getLogger(__name__)

RESP_COLUMNS = ["array", "aorkey", "dceid", "mjd", "responsivity", "responsivity_err"]
NO_STIM = "no stim-flash DCE (STIMFLSH=1)"
TIME_UNIT_S = 86400.0
GROUP_METHOD = "linear"   # pixel groups: plain stim - background (no drift-model rescaling: cheap)


@dataclass
class MipsPlan:
    """Per array (CHNLNUM) the ``reduce.mips.pipeline.Plan`` of the DCEs in [start, stop]."""

    store: str
    start: float | None
    stop: float | None
    arrays: dict = field(default_factory=dict)       # chnlnum -> Plan
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def _window(ds, start, stop):
    """Indices of the DCEs with start <= time <= stop (the eager load of the time coordinate)."""
    t = np.asarray(ds.time.values, np.float64)
    sel = np.isfinite(t)
    if start is not None:
        sel &= t >= start
    if stop is not None:
        sel &= t <= stop
    return np.flatnonzero(sel)


def plan(store, *, start=None, stop=None, params: BcdParams = BcdParams()) -> MipsPlan:
    """Load the per-DCE metadata of every array in the window (eager, small) and check the
    calibration: a ``MipsPlan``. DCEs the BCD pipeline would skip only because their AOR has no
    stim flash stay in (they have a zero level, read noise and cosmic rays, no responsivity)."""
    out = MipsPlan(str(store), start, stop)
    for chnl in (1, 2, 3):
        try:
            raw = open_store(store, chnl)
        except Exception as exc:  # noqa: BLE001 - a store without that array
            out.notes.append(f"MIPS {BAND[chnl]} um: no group {RAW_GROUPS[chnl]} in {store} ({exc})")
            continue
        if raw.sizes.get("dce", 0) == 0:
            out.notes.append(f"MIPS {BAND[chnl]} um: no DCEs in the store")
            continue
        idx = _window(raw, start, stop)
        if not idx.size:
            out.notes.append(f"MIPS {BAND[chnl]} um: no DCEs in the time window")
            continue
        p = plan_bcd(raw.isel(dce=idx), chnl, params=params)
        p.source = str(store)
        status = p.status.astype(object).astype(str)
        no_stim = np.char.find(status.astype(str), NO_STIM) >= 0
        usable = (status == "ok") | no_stim
        p.ds = p.ds.assign(skip=("dce", ~usable))
        for aor in np.unique(p.aorkeys[no_stim]):
            out.notes.append(f"MIPS {BAND[chnl]} um AOR {aor}: no stim flash, no responsivity")
        for reason in np.unique(status[~usable]):
            sel = np.flatnonzero(status == reason)
            files = p.ds.source_file.values[sel].astype(object).astype(str)
            out.problems.append(f"MIPS {BAND[chnl]} um: {len(sel)} DCE(s) not analysed ({files[0]}"
                                f"{' and others' if len(sel) > 1 else ''}): {reason}")
        out.arrays[chnl] = p
    return out


def pixel_groups(chnlnum):
    """{name: (ny, nx) bool} pixel groups of a Ge array whose responsivity is also tracked: the two
    halves of the 70 um array (x 0-15, x 16-31), the two rows of the 160 um array."""
    ny, nx = SHAPE[chnlnum]
    yy, xx = np.mgrid[0:ny, 0:nx]
    if chnlnum == 2:
        return {"x0-15": xx < nx // 2, "x16-31": xx >= nx // 2}
    return {"y0": yy == 0, "y1": yy == 1}


def _ge(p, params: BcdParams):
    """Lazy (per-DCE stats tuple of 5 (n,) arrays, per-stim (nstim, 3) array or None, {pixel group:
    per-stim (nstim, 3)})."""
    ds = ramp_steps.fit_ramps(p.ds, p.cal, params.ge)
    ds = subtract_dark(ds, p.cal)
    stats = per_dce(K.ge_dce_stats, [ds.reads, ds.nreads, ds.skip, ds.rate, ds.rmask, ds.ncr],
                    outputs=[((), np.float64)] * 5, kwargs={"sat_bit": mask_bits()["saturated"]})
    idx, table = p.stim_subset
    stims, groups = None, {}
    if idx.size:
        g = params.ge
        sub = ds.rate.isel(dce=idx).data.rechunk((idx.size, -1, -1))

        def measure(rates, method=g.resp_method):
            return rates.map_blocks(RK.per_stim_responsivity, table=table, calset=p.calset[idx],
                                    stimamp=p.cal.image("stimamp").values, times=p.times[idx],
                                    aorkeys=p.aorkeys[idx], method=method, amp=g.resp_amp,
                                    scale_s=g.resp_timescale_s, time_unit_s=TIME_UNIT_S,
                                    chunks=((table.shape[0],), (3,)), drop_axis=2, dtype=np.float64)

        stims = measure(sub)
        for name, mask in pixel_groups(p.chnlnum).items():     # the other pixels NaN: not valid
            groups[name] = measure(da.where(mask[None], sub, np.nan), GROUP_METHOD)
    return tuple(s.data for s in stats), stims, groups


def _si(p, si: SiParams):
    """Lazy per-DCE stats (saturated fraction, CR flags, pixels, then the ``K.SI_DROOP_FIELDS``:
    droop and jailbar measured before their corrections) of 24 um from the 24 um steps."""
    ds = si_steps.replace_saturated(p.ds, p.cal, si)
    ds = subtract_dark(ds, p.cal, source="replaced")
    dead = (p.cal.image("pmask", fill=0, dtype=np.int16) & PMASK_BITS["dead"]) > 0
    droop = per_dce(K.si_droop_jailbar, [ds.rate, ds.skip, ds.calset],
                    cal={"dead": dead, "flat": p.cal.image("flat"), "dark": p.cal.image("dark"),
                         "thresh": p.cal.scalar("jbthresh")},
                    outputs=[((), np.float64)] * len(K.SI_DROOP_FIELDS))
    ds = si_steps.correct_jailbar(ds, p.cal, si)
    ds = si_steps.correct_droop(ds, p.cal)
    ds = uncertainty(ds, p.cal, si)
    ds = flat_field(ds, p.cal)
    ds = si_steps.flag_cosmic_rays(ds, si)
    stats = per_dce(K.si_dce_stats, [ds.skip, ds.rate, ds.sat, ds.crflag], outputs=[((), np.float64)] * 3)
    return tuple(s.data for s in stats) + tuple(d.data for d in droop)


def reductions(mp: MipsPlan, params: BcdParams = BcdParams()) -> dict:
    """The lazy reductions of a ``MipsPlan`` (dask arrays, nothing computed):
    {chnlnum: {"stats": (arrays (n,)), "stims": (nstim, 3) or None, "groups": {pixel group: (nstim, 3)}}};
    Ge stats: zero level, read noise, saturated fraction, jumps, pixels; 24 um: saturated fraction, CR
    flags, pixels and the ``K.SI_DROOP_FIELDS``; stims: [responsivity, valid, error] per stim of
    ``Plan.stim_subset``."""
    out = {}
    for chnl, p in mp.arrays.items():
        if chnl == 1:
            out[chnl] = {"stats": _si(p, params.si), "stims": None, "groups": {}}
        else:
            stats, stims, groups = _ge(p, params)
            out[chnl] = {"stats": stats, "stims": stims, "groups": groups}
    return out


def _meta(p, name):
    return np.asarray(p.ds[name].values)


def _dce_table(chnl, p, stats):
    n = p.ds.sizes["dce"]
    nan = np.full(n, np.nan)
    if chnl == 1:
        satf, hits, pix = stats[:3]
        droop = dict(zip(K.SI_DROOP_FIELDS, stats[3:]))
        zero, rdn = nan, nan
    else:
        zero, rdn, satf, hits, pix = stats
        droop = dict.fromkeys(K.SI_DROOP_FIELDS, nan)
    exptime = _meta(p, "exptime").astype(np.float64)
    with np.errstate(all="ignore"):
        rate = hits / (pix * exptime)
    return pd.DataFrame({
        "array": BAND[chnl], "aorkey": p.aorkeys, "dceid": _meta(p, "dceid").astype(np.int64), "mjd": p.times,
        "exptime": exptime, "stimflsh": p.stimflsh.astype(np.int64), "zero_level_DN": zero,
        "read_noise_DN": rdn, "saturated_fraction": satf, "cr_hits": hits, "pixels": pix,
        "cr_rate_per_pixel_s": rate, **droop,
        "source_file": _meta(p, "source_file").astype(object).astype(str)})


def _resp_table(chnl, p, stims):
    """One row per stim flash of the window; NaN where it could not be measured."""
    stim_rows = np.flatnonzero(p.stimflsh > 0)
    idx, table = p.stim_subset
    resp = np.full(stim_rows.size, np.nan)
    err = np.full(stim_rows.size, np.nan)
    valid = np.zeros(stim_rows.size, bool)
    nbg = np.zeros(stim_rows.size, np.int64)
    status = np.array(["not analysed (DCE skipped)"] * stim_rows.size, dtype=object)
    if stims is not None and table.shape[0]:
        where = {int(g): k for k, g in enumerate(idx[table[:, 0]])}
        for j, i in enumerate(stim_rows):
            k = where.get(int(i))
            if k is None:
                status[j] = "no background DCE" if not p.ds.skip.values[i] else status[j]
                continue
            nbg[j] = int((table[k, 1:] >= 0).sum())
            valid[j] = stims[k, 1] > 0
            resp[j], err[j] = (stims[k, 0], stims[k, 2]) if valid[j] else (np.nan, np.nan)
            status[j] = "ok" if valid[j] else "invalid (stim - background <= 0)"
    return pd.DataFrame({
        "array": BAND[chnl], "aorkey": p.aorkeys[stim_rows], "dceid": _meta(p, "dceid")[stim_rows].astype(np.int64),
        "mjd": p.times[stim_rows], "responsivity": resp, "responsivity_err": err, "valid": valid,
        "n_background": nbg, "source_file": _meta(p, "source_file")[stim_rows].astype(object).astype(str),
        "status": status.astype(str)})


def _daily(dce):
    rows = []
    d = dce.dropna(subset=["cr_hits", "pixels"])
    d = d.assign(day=np.floor(d["mjd"].to_numpy(np.float64)))
    for (band, day), g in d.groupby(["array", "day"]):
        ps = float((g["pixels"] * g["exptime"]).sum())
        hits = float(g["cr_hits"].sum())
        rows.append({"array": int(band), "day": int(day), "mjd": float(g["mjd"].mean()), "dces": len(g),
                     "hits": hits, "pixel_seconds": ps, "cr_rate": hits / ps if ps > 0 else np.nan,
                     "cr_rate_err": np.sqrt(max(hits, 1.0)) / ps if ps > 0 else np.nan})
    cols = ["array", "day", "mjd", "dces", "hits", "pixel_seconds", "cr_rate", "cr_rate_err"]
    return pd.DataFrame(rows, columns=cols).astype({"cr_rate": float, "cr_rate_err": float, "mjd": float})


def _series(resp, dce, daily, groups):
    lab = lambda a: np.array([f"{int(v)} um" for v in a])  # noqa: E731
    out = []
    if len(resp):
        ok = np.isfinite(resp["responsivity"].to_numpy(np.float64))
        r = resp[ok]
        out.append(Series("mips_responsivity", "stim responsivity (stim - bg) / STIMAMP",
                          "1 = nominal", r["mjd"].to_numpy(), r["responsivity"].to_numpy(),
                          r["responsivity_err"].to_numpy(), lab(r["array"])))
    if len(groups):
        r = groups[np.isfinite(groups["responsivity"].to_numpy(np.float64))]
        out.append(Series("mips_responsivity_groups", "stim responsivity per pixel group", "1 = nominal",
                          r["mjd"].to_numpy(), r["responsivity"].to_numpy(), r["responsivity_err"].to_numpy(),
                          np.array([f"{int(a)} um {g}" for a, g in zip(r["array"], r["pixel_group"])])))
    ge = dce[dce["array"] > 24]
    ge = ge[np.isfinite(ge["zero_level_DN"].to_numpy())]
    if len(ge):
        out.append(Series("mips_zero_level", "zero level (first-read offset)", "DN", ge["mjd"].to_numpy(),
                          ge["zero_level_DN"].to_numpy(), None, lab(ge["array"])))
        g2 = ge[np.isfinite(ge["read_noise_DN"].to_numpy())]
        out.append(Series("mips_read_noise", "read noise (ramp residuals)", "DN per read", g2["mjd"].to_numpy(),
                          g2["read_noise_DN"].to_numpy(), None, lab(g2["array"])))
    si = dce[dce["array"] == 24]
    for name, col, label, units in (
            ("mips_droop", "droop_coeff", "24 um droop coefficient (dead pixels)", "DN/s per DN/s of mean signal"),
            ("mips_jailbar", "jailbar_amplitude", "24 um jailbar amplitude (readout 4)",
             "DN/s per DN/s of bright signal")):
        d = si[np.isfinite(si[col].to_numpy(np.float64))]
        if len(d):
            out.append(Series(name, label, units, d["mjd"].to_numpy(), d[col].to_numpy(np.float64),
                              d[f"{col}_err"].to_numpy(np.float64), lab(d["array"])))
    s = dce[np.isfinite(dce["saturated_fraction"].to_numpy())]
    if len(s):
        out.append(Series("mips_saturated_fraction", "saturated pixels", "fraction of the array",
                          s["mjd"].to_numpy(), s["saturated_fraction"].to_numpy(), None, lab(s["array"])))
    d = daily[np.isfinite(daily["cr_rate"].to_numpy())]
    if len(d):
        out.append(Series("mips_cr_rate", "cosmic-ray rate per day",
                          "hits / pixel / s", d["mjd"].to_numpy(), d["cr_rate"].to_numpy(),
                          d["cr_rate_err"].to_numpy(), lab(d["array"])))
    return out


def study(store, *, start=None, stop=None, client=None, params: BcdParams = BcdParams()) -> Study:
    """The MIPS stability study of ``store`` between MJD ``start`` and ``stop`` (None: open end):
    plan (metadata), the lazy reductions, one ``dask.compute`` (on ``client`` when given), tables
    and series (module docstring)."""
    mp = plan(store, start=start, stop=stop, params=params)
    lazy = reductions(mp, params)
    keys = sorted(lazy)
    flat = ([lazy[c]["stats"] for c in keys], [lazy[c]["stims"] for c in keys], [lazy[c]["groups"] for c in keys])
    kw = {"scheduler": client} if client is not None else {}
    stats, stims, groups = dask.compute(*flat, **kw)          # the one pass over the store
    resp_tables, dce_tables, group_tables = [], [], []
    problems = list(mp.problems)
    for c, st, sm, gr in zip(keys, stats, stims, groups):
        p = mp.arrays[c]
        dce_tables.append(_dce_table(c, p, [np.asarray(a) for a in st]))
        if c > 1:
            rt = _resp_table(c, p, None if sm is None else np.asarray(sm))
            resp_tables.append(rt)
            for name, g in gr.items():
                t = _resp_table(c, p, np.asarray(g))
                t.insert(1, "pixel_group", name)
                group_tables.append(t[t["status"] != "not analysed (DCE skipped)"])
            for _, row in rt[(rt["status"] != "ok") & (rt["status"] != "not analysed (DCE skipped)")].iterrows():
                problems.append(f"{row['source_file']} (MIPS {BAND[c]} um stim flash, AOR {row['aorkey']}): "
                                f"no responsivity: {row['status']}")
    resp = pd.concat(resp_tables, ignore_index=True) if resp_tables else pd.DataFrame(
        columns=RESP_COLUMNS + ["valid", "n_background", "source_file", "status"])
    resp = resp.sort_values(["mjd", "array"], kind="stable").reset_index(drop=True)
    dce = pd.concat(dce_tables, ignore_index=True) if dce_tables else pd.DataFrame(
        columns=["array", "aorkey", "dceid", "mjd", "exptime", "stimflsh", "zero_level_DN", "read_noise_DN",
                 "saturated_fraction", "cr_hits", "pixels", "cr_rate_per_pixel_s", *K.SI_DROOP_FIELDS,
                 "source_file"])
    dce = dce.sort_values(["mjd", "array"], kind="stable").reset_index(drop=True)
    daily = _daily(dce)
    groups_t = pd.concat(group_tables, ignore_index=True) if group_tables else pd.DataFrame(
        columns=["array", "pixel_group"] + RESP_COLUMNS[1:] + ["valid", "n_background", "source_file", "status"])
    groups_t = groups_t.sort_values(["mjd", "array", "pixel_group"], kind="stable").reset_index(drop=True)
    notes = list(mp.notes)
    if 1 in mp.arrays:
        notes.append("MIPS 24 um: no zero level or read noise (the store holds on-board slopes, not reads); "
                     "its cosmic-ray rate counts single-frame flags above 5 sigma (a lower limit)")
    notes.append("MIPS 24 um has no stim flash: no responsivity series")
    times = dce["mjd"].to_numpy(np.float64) if len(dce) else np.zeros(0)
    span = (float(times.min()), float(times.max())) if times.size else (start, stop)
    return Study("mips", {"mips_responsivity": resp, "mips_responsivity_groups": groups_t, "mips_dce": dce,
                          "mips_cr_daily": daily}, _series(resp, dce, daily, groups_t), problems, notes, span)
