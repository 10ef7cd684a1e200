"""Step 2, ON/OFF pairing and subtraction (seed §2.2), COMB frequency calibration and the
CAL passband, as lazy per-batch tasks on the AOS counts.

The index plans (which rows pair with which, ZERO, CAL and COMB scans) come from
:func:`plan_pairs` on small metadata; :func:`pair` then builds one task per batch of
segments and receiver half that reads the segments' rows and returns

- ``switched`` (pair, channel): (ON - mean OFF) / (OFF - ZERO), dimensionless;
- per segment: the dispersion (F0 [Hz] at the segment's reference TAOS, D1 [Hz/chan],
  D2 [Hz/chan^2]) averaged over the COMB sets, the rms and count of the comb-line
  residuals [channel], and the relative Tsys(c) profile from CAL (mean 1).

A segment whose COMB or CAL cannot be used gets a reason string and NaN data; the
others in the batch go on.
"""

from __future__ import annotations

import traceback
from functools import partial
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter1d

from reduce.errors import CalibrationError
from reduce.swas import calibrate as K_cal
from reduce.swas import comb as K_comb
from reduce.swas import pairing as K_pair
from reduce.swas.physics import N_CHAN, Dispersion
from reduce.swas.steps import outputs

HALVES = ("490", "550")
N_LINE_MAX = 16  #: comb-line residuals kept per segment and half


@dataclass(frozen=True)
class PairStepParams:
    """Pairing options (window [s], MAP OFFs per ON, COMB fit, profile smoothing [channels],
    F0 drift with TAOS [Hz per deg C] used to refer COMB sets to one TAOS)."""

    pairing: K_pair.PairParams = field(default_factory=K_pair.PairParams)
    comb: K_comb.CombParams = field(default_factory=K_comb.CombParams)
    comb_max_gap_s: float = 10.0
    df0_dtaos_hz: float = 0.3e6
    profile_smooth: int = 15
    zero_nsigma: float = 5.0


def plan_pairs(time, stype, usable, mode, *, comb_usable=None, params=PairStepParams()):
    """Index plan of one segment (local row indices).

    time [MJD] (n,), stype str (n,), usable bool (n,) (check flags == 0), mode str.
    Returns dict on (m,), off (m, k) padded with -1, n_off (m,), cal_hot, cal_off,
    comb_sets (list). Raises CalibrationError (with the reason) when the segment has no
    ON/OFF pair, no usable CAL or no usable COMB scan.
    """
    p = params.pairing
    n_on = int(K_pair.scan_mask(stype, "ON", usable).sum())
    n_off = int(K_pair.scan_mask(stype, "OFF", usable).sum())
    if n_on == 0:
        raise CalibrationError(f"no usable ON scan ({int(K_pair.scan_mask(stype, 'ON').sum())} ON scans "
                               f"in the segment, {n_off} usable OFF): nothing to reduce")
    if mode == "MAP":
        on, off, noff = K_pair.pair_map(time, stype, usable=usable, params=p)
    else:
        on, off1 = K_pair.pair_on_off(time, stype, usable=usable, params=p)
        off, noff = off1[:, None], np.ones(on.size, np.intp)
    if on.size == 0:
        raise CalibrationError(f"no ON/OFF pair within {p.window_s} s ({n_on} usable ON, {n_off} usable OFF)")
    hot, cal_off = K_pair.pair_cal(time, stype, usable=usable, params=p)
    cu = usable if comb_usable is None else comb_usable
    sets = K_comb.comb_sets(time, K_pair.scan_mask(stype, "COMB", cu), max_gap_s=params.comb_max_gap_s)
    if not sets:
        raise CalibrationError("no usable COMB scan: the frequency scale cannot be calibrated")
    return {"on": on, "off": off, "n_off": noff, "cal_hot": hot, "cal_off": cal_off, "comb_sets": sets}


def _smooth(profile, width):
    if width and width > 1:
        good = np.isfinite(profile)
        num = uniform_filter1d(np.where(good, profile, 0.0), width, mode="nearest")
        den = uniform_filter1d(good.astype(float), width, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)
    return profile


def pair_segment(rows, sp, half, params=PairStepParams()):
    """Switched spectra, dispersion and CAL profile of one segment and half (plain numpy).

    rows: (n, 725) counts of the segment's scans; sp: the SegmentPlan. Returns
    (switched (m, 725) float32, disp (3,), comb_res (2,) [rms channel, n lines],
    residuals (N_LINE_MAX,), profile (725,)). Raises CalibrationError.
    """
    x = np.asarray(rows, dtype=np.float64)
    k = 0 if half == "490" else 1
    lo = sp.lofreq[k]
    if not np.all(np.isfinite(x[np.concatenate([sp.on, sp.off[sp.off >= 0], sp.zero])])):
        raise CalibrationError(f"AOS{half}: non-finite counts in the scans used")
    zero = x[sp.zero].mean(axis=0)
    off = K_pair.mean_rows(x, sp.off)
    sw = K_pair.switched_spectrum(x[sp.on], off, zero).astype(np.float32)
    # CAL: passband gain from HOT vs sky, Tsys(c) shape from the CAL OFFs
    try:
        gain, _ = K_cal.passband_gain(x[sp.cal_hot], x[sp.cal_off], sp.thot[sp.cal_hot], lo)
        tsys_c = K_cal.channel_tsys(x[sp.cal_off].mean(axis=0), zero, gain, lo)
        profile = _smooth(K_cal.tsys_profile(tsys_c), params.profile_smooth)
    except CalibrationError as e:
        raise CalibrationError(f"CAL of the {half} GHz receiver: {e}") from None
    if not np.all(np.isfinite(profile[25:-25])) or np.any(profile[25:-25] <= 0):
        raise CalibrationError(f"CAL of the {half} GHz receiver: Tsys profile not positive and finite")
    # COMB: one fit per set, F0 referred to the segment's reference TAOS, then averaged
    fits, resid = [], []
    errors = []
    for s in sp.comb_sets:
        spec, sat = K_comb.comb_spectrum(x[s], zero, quality=sp.quality[s], params=params.comb)
        try:
            cf = K_comb.fit_comb(spec, sat, half=half, params=params.comb)
        except CalibrationError as e:
            errors.append(str(e))
            continue
        d = cf.dispersion
        f0 = d.f0 - params.df0_dtaos_hz * (float(np.mean(sp.taos[s])) - sp.taos_ref)
        fits.append((Dispersion(f0, d.d1, d.d2), cf.cov))
        resid.extend(cf.residual[cf.used].tolist())
    if not fits:
        raise CalibrationError(f"COMB of the {half} GHz receiver: no usable COMB set ({'; '.join(errors)})")
    disp, _ = K_comb.average_dispersions(fits)
    r = np.full(N_LINE_MAX, np.nan)
    r[: min(len(resid), N_LINE_MAX)] = resid[:N_LINE_MAX]
    rms = float(np.sqrt(np.mean(np.square(resid))))
    return sw, np.array([disp.f0, disp.d1, disp.d2]), np.array([rms, len(resid)]), r, profile


def pair_batch(rows, batch, half, params=PairStepParams()):
    """Task body: every segment of one batch and half. rows: (batch rows, 725) counts
    starting at store row batch.r0. Returns a dict of arrays (see module doc) with a
    reason per segment ('' when fine); failed segments carry NaN."""
    m = batch.p1 - batch.p0
    ns = len(batch.segs)
    out = {"switched": np.full((m, N_CHAN), np.nan, np.float32),
           "disp": np.full((ns, 3), np.nan), "comb_res": np.full((ns, 2), np.nan),
           "comb_resid": np.full((ns, N_LINE_MAX), np.nan),
           "profile": np.full((ns, N_CHAN), np.nan, np.float32),
           "reason": np.full(ns, "", dtype="<U300")}
    for j, sp in enumerate(batch.segs):
        try:
            sw, d, cr, r, prof = pair_segment(rows[sp.r0 - batch.r0: sp.r1 - batch.r0], sp, half, params)
        except CalibrationError as e:
            out["reason"][j] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - one bad segment must not stop the batch
            out["reason"][j] = f"AOS{half}: {type(e).__name__}: {e} " + traceback.format_exc(limit=1)[-200:]
            continue
        a = sp.p0 - batch.p0
        out["switched"][a: a + sw.shape[0]] = sw
        out["disp"][j], out["comb_res"][j], out["comb_resid"][j], out["profile"][j] = d, cr, r, prof
    return out


def _pair_blocks(*blocks, first, batch, half, params):
    """pair_batch on the rows [batch.r0, batch.r1) cut out of whole store chunks starting at row `first`."""
    a, b = batch.r0 - first, batch.r1 - first
    rows, pos = [], 0
    for blk in blocks:
        n = blk.shape[0]
        lo, hi = max(a - pos, 0), min(b - pos, n)
        if hi > lo:
            rows.append(np.asarray(blk[lo:hi]))
        pos += n
    return pair_batch(rows[0] if len(rows) == 1 else np.concatenate(rows), batch, half, params)


def _piece(dobj, key, shape, dtype):
    """A dask array from one entry of a delayed dict."""
    return da.from_delayed(dobj[key], shape=shape, dtype=dtype)


def pair(ds, plan, params=None):
    """Step 2: the pairs Dataset (lazy). ds: the store's root group (with or without the
    checking step's scan_flag); plan: from plan_segments. dims pair, channel, seg, line.
    Variables per half h: switched{h} (pair, channel) float32, disp{h} (seg, 3),
    comb_rms{h}, comb_nlines{h} (seg), comb_resid{h} (seg, line), profile{h} (seg, channel),
    reason{h} (seg) str. Per pair coordinates come from the plan (numpy)."""
    params = params or plan.params.pair
    out = {}
    for half in HALVES:
        src = ds[f"aos{half}"].data
        src = src if isinstance(src, da.Array) else da.from_array(np.asarray(src), chunks=(-1, -1))
        edges = np.concatenate([[0], np.cumsum(src.chunks[0])])
        chunk_tasks = {}
        if src.numblocks[1] != 1:
            src = src.rechunk({1: -1})
        tasks = []
        for b in plan.batches:
            # whole store chunks go in (their read is shared by the batches of one chunk; a sliced
            # read would decode the whole chunk once per batch), the task cuts its rows out
            ks = [k for k in range(len(edges) - 1) if edges[k] < b.r1 and edges[k + 1] > b.r0]
            fn = partial(_pair_blocks, first=int(edges[ks[0]]), batch=b, half=half, params=params)
            for k in ks:  # one read task per store chunk (dask would otherwise inline the read per user)
                if k not in chunk_tasks:
                    chunk_tasks[k] = dask.delayed(np.asarray, pure=True)(
                        src.blocks[k], dask_key_name=f"aos{half}-chunk-{plan.token}-{k}")
            tasks.append(dask.delayed(fn, pure=True)(*[chunk_tasks[k] for k in ks],
                                                     dask_key_name=f"pair{half}-{plan.token}-{b.index}"))
        mshape = [(b.p1 - b.p0,) for b in plan.batches]
        sshape = [(len(b.segs),) for b in plan.batches]
        nm = f"pair{half}"
        cat = {"switched": outputs(tasks, "switched", [s + (N_CHAN,) for s in mshape], np.float32, name=nm),
               "disp": outputs(tasks, "disp", [s + (3,) for s in sshape], np.float64, name=nm),
               "comb_res": outputs(tasks, "comb_res", [s + (2,) for s in sshape], np.float64, name=nm),
               "comb_resid": outputs(tasks, "comb_resid", [s + (N_LINE_MAX,) for s in sshape], np.float64, name=nm),
               "profile": outputs(tasks, "profile", [s + (N_CHAN,) for s in sshape], np.float32, name=nm),
               "reason": outputs(tasks, "reason", sshape, np.dtype("<U300"), name=nm)}
        out[f"switched{half}"] = (("pair", "channel"), cat["switched"],
                                  {"units": "1", "long_name": f"(ON-OFF)/(OFF-ZERO), {half} GHz receiver"})
        out[f"disp{half}"] = (("seg", "coef"), cat["disp"],
                              {"long_name": "dispersion f_IF = F0 + D1 (c-362) + D2 (c-362)^2 at taos_ref",
                               "units": "Hz, Hz/channel, Hz/channel^2"})
        out[f"comb_rms{half}"] = (("seg",), cat["comb_res"][:, 0], {"units": "channel",
                                                                      "long_name": "rms comb-line residual"})
        out[f"comb_nlines{half}"] = (("seg",), cat["comb_res"][:, 1], {"long_name": "comb lines used"})
        out[f"comb_resid{half}"] = (("seg", "line"), cat["comb_resid"],
                                    {"units": "channel", "long_name": "comb-line residuals (measured - fit)"})
        out[f"profile{half}"] = (("seg", "channel"), cat["profile"],
                                 {"long_name": "relative Tsys(c) from CAL (mean 1 inside the edges)"})
        out[f"reason{half}"] = (("seg",), cat["reason"], {"long_name": "why the segment failed ('' = ok)"})
    coords = plan.pair_coords()
    res = xr.Dataset(out, coords=coords)
    res.attrs["history"] = list(ds.attrs.get("history", [])) + [plan.provenance["pair"]]
    return res
