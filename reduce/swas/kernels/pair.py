"""Step 2, ON/OFF pairing and subtraction (seed §2.2), kernels: pairing on per-scan
metadata, the switched spectrum, and the per-segment task body of the lazy step
(:mod:`reduce.swas.steps.pair`) with the COMB frequency calibration and the CAL passband.

Pairing works on small per-scan arrays (time, scan type, usable) and returns index
arrays (:func:`plan_pairs`, eager, at planning time); :func:`pair_batch` then applies
them to the AOS counts of one batch of segments. Times are MJD (UTC), windows in
seconds. Seed §2.2: one-to-one ON/OFF pairs within 30 s for NOD and CHOP; each MAP ON
with the mean of a few nearby OFFs; CAL = HOT vs sky OFF.

Per segment and receiver half the task body returns

- ``switched`` (pair, channel): (ON - mean OFF) / (OFF - ZERO), dimensionless;
- the dispersion (F0 [Hz] at the segment's reference TAOS, D1 [Hz/chan], D2 [Hz/chan^2])
  averaged over the COMB sets, the rms and count of the comb-line residuals [channel],
  and the relative Tsys(c) profile from CAL (mean 1).

A segment whose COMB or CAL cannot be used gets a reason string and NaN data; the
others in the batch go on.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.optimize import linear_sum_assignment

from reduce.errors import CalibrationError
from reduce.swas.kernels import calibrate as K_cal
from reduce.swas.kernels import comb as K_comb
from reduce.swas.physics import N_CHAN, Dispersion

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PairParams:
    """Pairing options: window [s], k OFFs per MAP ON (which scans are usable is the
    checking step's business: ``usable`` = check flags == 0)."""

    window_s: float = 30.0
    map_k: int = 3


def scan_mask(scantype, kind, usable=None):
    """Bool (n,): scans of type `kind` ('ON', 'OFF', 'ZERO', 'HOT', 'COMB'), blanks stripped."""
    m = np.char.strip(np.asarray(scantype).astype(str)) == kind
    return m if usable is None else m & np.asarray(usable, dtype=bool)


def pair_one_to_one(time_mjd, is_a, is_b, *, window_s=PairParams.window_s):
    """One-to-one pairs (A, B) with |t_A - t_B| <= window_s; no scan used twice.

    Among all assignments it takes the largest number of pairs, then the smallest sum
    of squared time differences (scipy linear_sum_assignment), so pairs follow the
    scan order and each pair is as close in time as the others allow.
    Returns (a_idx, b_idx) int arrays, sorted by the A scan's time.
    """
    t = np.asarray(time_mjd, dtype=float) * 86400.0
    ia = np.flatnonzero(np.asarray(is_a, dtype=bool))
    ib = np.flatnonzero(np.asarray(is_b, dtype=bool))
    if ia.size == 0 or ib.size == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    dt = np.abs(t[ia][:, None] - t[ib][None, :])
    ok = dt <= window_s
    big = window_s**2 * (min(ia.size, ib.size) + 1) + 1.0  # beats any sum of allowed costs
    cost = np.where(ok, dt * dt, big)
    r, c = linear_sum_assignment(cost)
    keep = ok[r, c]
    a, b = ia[r[keep]], ib[c[keep]]
    order = np.argsort(t[a], kind="stable")
    return a[order], b[order]


def pair_on_off(time_mjd, scantype, *, usable=None, params=PairParams()):
    """NOD/CHOP/CHOP_NOD pairs: (on_idx, off_idx), one-to-one within params.window_s."""
    return pair_one_to_one(time_mjd, scan_mask(scantype, "ON", usable),
                           scan_mask(scantype, "OFF", usable), window_s=params.window_s)


def pair_cal(time_mjd, scantype, *, usable=None, params=PairParams()):
    """CAL pairs (hot_idx, off_idx): HOT vs blank-sky OFF, one-to-one within the window.

    Raises CalibrationError when no HOT/OFF pair exists (the segment cannot be calibrated).
    """
    hot, off = pair_one_to_one(time_mjd, scan_mask(scantype, "HOT", usable),
                               scan_mask(scantype, "OFF", usable), window_s=params.window_s)
    if hot.size == 0:
        raise CalibrationError(
            f"no usable CAL pair: SCANTYPE has {int(scan_mask(scantype, 'HOT', usable).sum())} "
            f"usable HOT scans and no OFF within {params.window_s} s of them")
    return hot, off


def pair_map(time_mjd, scantype, *, usable=None, params=PairParams()):
    """MAP pairs: each ON with its nearest <= params.map_k OFFs within the window.

    OFFs may serve several ONs. Returns (on_idx (m,), off_idx (m, k) padded with -1,
    n_off (m,)); ONs with no OFF in the window are left out. Use mean_rows() to
    average the OFF counts.
    """
    t = np.asarray(time_mjd, dtype=float) * 86400.0
    ion = np.flatnonzero(scan_mask(scantype, "ON", usable))
    ioff = np.flatnonzero(scan_mask(scantype, "OFF", usable))
    k = params.map_k
    if ion.size == 0 or ioff.size == 0:
        return np.empty(0, np.intp), np.empty((0, k), np.intp), np.empty(0, np.intp)
    dt = np.abs(t[ion][:, None] - t[ioff][None, :])
    near = np.argsort(dt, axis=1, kind="stable")[:, :k]
    ok = np.take_along_axis(dt, near, axis=1) <= params.window_s
    idx = np.where(ok, ioff[near], -1)
    if idx.shape[1] < k:
        idx = np.pad(idx, ((0, 0), (0, k - idx.shape[1])), constant_values=-1)
    n_off = ok.sum(axis=1)
    have = n_off > 0
    order = np.argsort(t[ion[have]], kind="stable")
    return ion[have][order], idx[have][order], n_off[have][order]


def mean_rows(data, idx):
    """Mean of rows of `data` (n, ...) over padded indices idx (m, k), -1 = absent -> (m, ...)."""
    data = np.asarray(data)
    idx = np.asarray(idx)
    ok = idx >= 0
    rows = data[np.where(ok, idx, 0)]
    w = ok.reshape(ok.shape + (1,) * (data.ndim - 1)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(rows * w, axis=1) / np.sum(w, axis=1)


def stable_zeros(levels, is_zero, *, usable=None, nsigma=5.0):
    """Bool (n,): ZERO scans whose level (e.g. mean counts or CONT) is within nsigma
    robust sigmas (1.4826 MAD) of the median ZERO level; their average is the ZERO.
    levels: (n,) per-scan level. Raises CalibrationError when none is left."""
    lv = np.asarray(levels, dtype=float)
    z = np.asarray(is_zero, dtype=bool) & np.isfinite(lv)
    if usable is not None:
        z = z & np.asarray(usable, dtype=bool)
    if not z.any():
        raise CalibrationError("no usable ZERO scan (SCANTYPE 'ZERO') in the segment")
    med = np.median(lv[z])
    mad = 1.4826 * np.median(np.abs(lv[z] - med))
    if mad == 0:  # more than half identical: keep those
        return z & (lv == med)
    return z & (np.abs(lv - med) <= nsigma * mad)


def switched_spectrum(on, off, zero):
    """(ON - OFF) / (OFF - ZERO), dimensionless, per channel (or continuum detector).

    on, off: (m, n_chan) (paired rows); zero: broadcastable ((n_chan,) or (m, n_chan)).
    Channels with OFF - ZERO <= 0 or non-finite give NaN. Works for CONT (m, 2) too.
    """
    on = np.asarray(on, dtype=float)
    off = np.asarray(off, dtype=float)
    den = off - np.asarray(zero, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (on - off) / den
    return np.where(den > 0, s, np.nan)


N_LINE_MAX = 16  #: comb-line residuals kept per segment and half


@dataclass(frozen=True)
class PairStepParams:
    """Pairing options (window [s], MAP OFFs per ON, COMB fit, profile smoothing [channels],
    F0 drift with TAOS [Hz per deg C] used to refer COMB sets to one TAOS)."""

    pairing: PairParams = field(default_factory=PairParams)
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
    n_on = int(scan_mask(stype, "ON", usable).sum())
    n_off = int(scan_mask(stype, "OFF", usable).sum())
    if n_on == 0:
        raise CalibrationError(f"no usable ON scan ({int(scan_mask(stype, 'ON').sum())} ON scans "
                               f"in the segment, {n_off} usable OFF): nothing to reduce")
    if mode == "MAP":
        on, off, noff = pair_map(time, stype, usable=usable, params=p)
    else:
        on, off1 = pair_on_off(time, stype, usable=usable, params=p)
        off, noff = off1[:, None], np.ones(on.size, np.intp)
    if on.size == 0:
        raise CalibrationError(f"no ON/OFF pair within {p.window_s} s ({n_on} usable ON, {n_off} usable OFF)")
    hot, cal_off = pair_cal(time, stype, usable=usable, params=p)
    cu = usable if comb_usable is None else comb_usable
    sets = K_comb.comb_sets(time, scan_mask(stype, "COMB", cu), max_gap_s=params.comb_max_gap_s)
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
    off = mean_rows(x, sp.off)
    sw = switched_spectrum(x[sp.on], off, zero).astype(np.float32)
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
