"""Step 5, flux calibration (seed §2.5), kernels: Y-factor Tsys from the continuum
detectors, passband gain profile from CAL (HOT vs sky OFF), conversion of switched
spectra to Ta* [K], and the per-batch task body of the lazy step
(:mod:`reduce.swas.steps.calibrate`).

Forward model (ICD §1): counts = Z + G (T_in + T_rx); OFF T_in = J(2.97 K), HOT
T_in = J(THOT), J at the receiver's LO frequency; Tsys = T_rx + J(T_bg) (DSB, one
per receiver, shared by USB and LSB). A segment without usable CAL raises
CalibrationError: it is never given a placeholder Tsys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from reduce.errors import CalibrationError
from reduce.swas.physics import EDGE_CHANNELS, N_CHAN, T_BG, planck_j

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalParams:
    """Calibration options: sky background [K], edge channels left out of normalisations."""

    t_bg: float = T_BG
    edge_channels: int = EDGE_CHANNELS
    min_pairs: int = 1


@dataclass(frozen=True)
class YFactor:
    """Y-factor results, arrays of the input's broadcast shape (e.g. (m, 2) for CONT pairs):
    y = (HOT-z)/(OFF-z), trx [K], tsys = trx + J(T_bg) [K], gain [counts/K]."""

    y: np.ndarray
    trx: np.ndarray
    tsys: np.ndarray
    gain: np.ndarray

    def mean_tsys(self, axis=0):
        """Mean Tsys over CAL pairs (finite values only) [K]."""
        return np.nanmean(self.tsys, axis=axis)


def _require(n, what, params):
    if n < params.min_pairs:
        raise CalibrationError(
            f"no usable CAL: {n} {what} (need >= {params.min_pairs}); the segment cannot be "
            "calibrated and must not be given a placeholder system temperature")


def yfactor_tsys(hot, off, zero, thot, lo, *, params=CalParams()):
    """DSB receiver and system temperature by the Y-factor method.

    hot, off: continuum (or channel) counts of paired HOT/OFF scans, (m, ...) e.g. (m, 2);
    zero: zero level, broadcastable; thot [K]: (m,) or broadcastable (a (m,) array is
    applied along the first axis); lo [Hz]: scalar or (2,) for the two receivers.
    T_rx = (J_hot - Y J_bg) / (Y - 1). Pairs with Y <= 1 give NaN; CalibrationError
    when there are no pairs or none is usable.
    """
    hot = np.asarray(hot, dtype=float)
    off = np.asarray(off, dtype=float)
    _require(hot.shape[0] if hot.ndim else 1, "HOT/OFF pairs", params)
    th = np.asarray(thot, dtype=float)
    if th.ndim == 1 and hot.ndim > 1 and th.shape[0] == hot.shape[0]:
        th = th.reshape(th.shape + (1,) * (hot.ndim - 1))
    j_hot = planck_j(th, lo)
    j_bg = planck_j(params.t_bg, lo)
    z = np.asarray(zero, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (hot - z) / (off - z)
        trx = (j_hot - y * j_bg) / (y - 1.0)
        gain = (hot - off) / (j_hot - j_bg)
    bad = ~(y > 1.0) | ~(off - z > 0)
    trx = np.where(bad, np.nan, trx)
    if not np.any(np.isfinite(trx)):
        raise CalibrationError("no usable CAL: Y-factor <= 1 or non-finite in every HOT/OFF pair")
    return YFactor(np.where(bad, np.nan, y), trx, trx + j_bg, np.where(bad, np.nan, gain))


def passband_gain(hot, off, thot, lo, *, params=CalParams()):
    """Passband gain G(c) [counts/K] from CAL pairs, and its profile normalised to mean 1.

    hot, off: (m, n_chan) counts of paired HOT/OFF scans; thot (m,) [K]; lo [Hz].
    G = mean over pairs of (HOT - OFF) / (J(THOT) - J(T_bg)); the profile's mean is taken
    over the channels inside the edges. Returns (gain (n_chan,), profile (n_chan,)).
    """
    hot = np.atleast_2d(np.asarray(hot, dtype=float))
    off = np.atleast_2d(np.asarray(off, dtype=float))
    _require(hot.shape[0], "HOT/OFF pairs", params)
    dj = planck_j(np.asarray(thot, dtype=float), lo) - planck_j(params.t_bg, lo)
    dj = np.broadcast_to(dj, hot.shape[:1])[:, None]
    g = np.nanmean((hot - off) / dj, axis=0)
    e = params.edge_channels
    norm = np.nanmean(g[e: g.size - e])
    if not np.isfinite(norm) or norm <= 0:
        raise CalibrationError("no usable CAL: HOT - OFF is not positive over the passband")
    return g, g / norm


def channel_tsys(off, zero, gain, lo, *, params=CalParams()):
    """Per-channel DSB Tsys(c) = (OFF - ZERO)(c) / G(c) [K] ( = T_rx + J(T_bg) ).

    off: (..., n_chan) counts of sky OFF scans, zero broadcastable, gain (n_chan,) counts/K.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.asarray(off, float) - np.asarray(zero, float)) / np.asarray(gain, float)
    return np.where(np.asarray(gain) > 0, t, np.nan)


def tsys_profile(tsys_c, *, params=CalParams()):
    """Tsys(c) normalised to mean 1 over the channels inside the edges, (n_chan,)."""
    t = np.asarray(tsys_c, dtype=float)
    e = params.edge_channels
    return t / np.nanmean(t[..., e: t.shape[-1] - e], axis=-1, keepdims=True)


def to_antenna_temperature(switched, tsys, profile=None):
    """Ta* [K] (DSB scale of the forward model) = switched x Tsys (x profile).

    switched: (..., n_chan) (ON-OFF)/(OFF-ZERO); tsys [K]: scalar, (...,) per spectrum
    or (..., n_chan); profile: optional (n_chan,) relative Tsys shape (mean 1).
    """
    s = np.asarray(switched, dtype=float)
    t = np.asarray(tsys, dtype=float)
    if t.ndim and t.shape[-1] != s.shape[-1]:
        t = t[..., None]
    if not np.all(np.isfinite(t)):
        raise CalibrationError("Tsys is not finite: refusing to calibrate (no placeholder values)")
    out = s * t
    return out if profile is None else out * np.asarray(profile, dtype=float)


def segment_tsys(cont_hot, cont_off, cont_zero, thot, lo, *, params=CalParams()):
    """One DSB Tsys per receiver [K] for a segment: mean of the Y-factor Tsys over CAL pairs.

    cont_*: (m, 2) CONT counts (zero broadcastable), lo (2,) [Hz]. Returns (tsys (2,), err (2,))
    with err the standard error of the mean (NaN for one pair).
    """
    yf = yfactor_tsys(cont_hot, cont_off, cont_zero, thot, lo, params=params)
    n = np.sum(np.isfinite(yf.tsys), axis=0)
    if np.any(n == 0):
        raise CalibrationError("no usable CAL for one receiver (all Y-factors invalid)")
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.nanstd(yf.tsys, axis=0, ddof=1) / np.sqrt(n)
    return yf.mean_tsys(axis=0), err


@dataclass(frozen=True)
class CalStepParams:
    """Calibration options: the kernel's CalParams (T_bg = 2.97 K, edges), whether to
    apply the CAL Tsys(c) profile."""

    kernel: CalParams = field(default_factory=CalParams)
    apply_profile: bool = True


def plan_tsys(cont, thot, hot, off, zero, lofreq, params=CalStepParams()):
    """DSB Tsys (2,) [K] and its standard error (2,) of one segment from CONT (n, 2)
    counts: HOT rows `hot`, paired sky OFF rows `off`, ZERO rows `zero` (local indices),
    thot (n,) [K], lofreq (2,) [Hz]. Raises CalibrationError with the reason."""
    if len(hot) == 0:
        raise CalibrationError("no usable CAL (no HOT/OFF pair): the segment cannot be calibrated")
    z = np.mean(cont[zero], axis=0)
    tsys, err = segment_tsys(cont[hot], cont[off], z, thot[hot], np.asarray(lofreq), params=params.kernel)
    if not np.all(np.isfinite(tsys)) or np.any(tsys <= 0):
        raise CalibrationError(f"no usable CAL: Y-factor Tsys {tsys} K is not positive and finite")
    return tsys, err


def calibrate_batch(spec, stats, profile, batch, half, params=CalStepParams(), shift_col=-1):
    """Task body: Ta* [K] (rows, n_chan) float32 of one batch and half's coadd rows.

    spec (rows, n_chan) switched coadds (dimensionless); stats[:, shift_col] the coadd's mean
    integer shift [channels], which carries the CAL profile (seg, n_chan) of the detector
    channels to the coadd's; Ta* = to_antenna_temperature(spec, Tsys, shifted profile).
    """
    rows = batch.rows[half]
    out = np.full((len(rows), N_CHAN), np.nan, np.float32)
    k = 0 if half == "490" else 1
    grid = np.arange(N_CHAN)
    for r, (j, _, _) in enumerate(rows):
        tsys = batch.segs[j].tsys[k]
        if not np.isfinite(tsys):
            raise CalibrationError(f"segment {batch.segs[j].segment}: Tsys not finite (refusing to calibrate)")
        s = np.asarray(spec[r], dtype=float)
        p = None
        if params.apply_profile and np.isfinite(stats[r, shift_col]):
            p = np.interp(grid - stats[r, shift_col], grid, np.asarray(profile[j], dtype=float))
        out[r] = to_antenna_temperature(s, tsys, p)
    return out
