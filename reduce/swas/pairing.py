"""ON/OFF, HOT/OFF and ZERO pairing on per-scan metadata, and the switched spectrum.

Pairing works on small per-scan arrays (time, scan type, quality) and returns
index arrays; the lead applies them lazily to the counts. Times are MJD (UTC),
windows in seconds. Seed §2.2: one-to-one ON/OFF pairs within 30 s for NOD and
CHOP; each MAP ON with the mean of a few nearby OFFs; CAL = HOT vs sky OFF.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from reduce.errors import CalibrationError

log = logging.getLogger(__name__)

QUALITY_PACKET_FILL = 1
QUALITY_AOS_OVERFLOW = 2
QUALITY_NOT_SETTLED = 4


@dataclass(frozen=True)
class PairParams:
    """Pairing options: window [s], k OFFs per MAP ON, QUALITY bits that exclude a scan."""

    window_s: float = 30.0
    map_k: int = 3
    bad_bits: int = QUALITY_PACKET_FILL | QUALITY_AOS_OVERFLOW | QUALITY_NOT_SETTLED


def usable_scans(quality, *, bad_bits=PairParams.bad_bits, extra=None):
    """Bool (n,): scans with none of `bad_bits` set (and `extra` True where given)."""
    ok = (np.asarray(quality).astype(np.int64) & int(bad_bits)) == 0
    return ok if extra is None else ok & np.asarray(extra, dtype=bool)


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


def nearest_zero(time_mjd, is_zero, *, usable=None):
    """Index (n,) of the ZERO scan nearest in time to every scan.

    Raises CalibrationError when there is no usable ZERO scan.
    """
    t = np.asarray(time_mjd, dtype=float)
    z = np.asarray(is_zero, dtype=bool)
    if usable is not None:
        z = z & np.asarray(usable, dtype=bool)
    iz = np.flatnonzero(z)
    if iz.size == 0:
        raise CalibrationError("no usable ZERO scan (SCANTYPE 'ZERO') in the segment")
    iz = iz[np.argsort(t[iz], kind="stable")]
    tz = t[iz]
    j = np.clip(np.searchsorted(tz, t), 1, max(tz.size - 1, 1))
    if tz.size == 1:
        return np.full(t.shape, iz[0])
    left_closer = np.abs(t - tz[j - 1]) <= np.abs(tz[j] - t)
    return np.where(left_closer, iz[j - 1], iz[j])


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


switched_continuum = switched_spectrum
