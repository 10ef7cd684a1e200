"""Frequency calibration from COMB scans: comb-line centres -> quadratic dispersion.

The comb generator puts Gaussian lines (~1.5 MHz FWHM) at IF = n x 100 MHz
exactly (ICD §1). For one COMB set of one AOS half: average the scans (minus
ZERO), find the lines, drop saturated ones and those too near the band edges,
fit each centre with a Gaussian on a linear baseline, then fit
``f_IF = F0 + D1 (c-362) + D2 (c-362)^2`` by weighted least squares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import find_peaks

from reduce.errors import CalibrationError
from reduce.swas.physics import C_REF, COMB_SPACING, NOMINAL_DISPERSION, Dispersion

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class CombParams:
    """Options of the COMB fit (channel units unless stated)."""

    saturation_level: float = 65535.0  # counts; a channel at or above it is saturated
    half_window: int = 6  # channels each side of a line used in its Gaussian fit
    edge_margin: int = 8  # a fit window must lie inside [edge_margin, n-1-edge_margin]
    baseline_width: int = 31  # running-median width that removes the passband before peak search
    min_snr: float = 10.0  # peak height over robust noise for detection
    max_assign_offset: float = 0.25  # |f_IF(peak)/100 MHz - n| allowed with the guess dispersion
    min_lines: int = 3  # fewer usable lines than this -> CalibrationError
    fwhm_guess: float = 1.5  # channels
    fwhm_range: tuple = (0.7, 3.5)  # channels; a fitted width outside it is not a comb line


@dataclass(frozen=True)
class CombFit:
    """Result of one COMB fit. Per-line arrays have one entry per candidate line.

    ``centre``/``centre_err`` [channel], ``if_freq`` [Hz] (= n x 100 MHz),
    ``residual`` [channel] = measured - model centre (NaN if unused),
    ``residual_hz`` = n x 100 MHz - f_IF(measured centre), ``used`` bool,
    ``reason`` why a line was rejected ('' if used). ``cov`` is the 3x3 covariance
    of (f0, d1, d2) in Hz units, scaled by max(1, reduced chi^2).
    """

    dispersion: Dispersion
    cov: np.ndarray
    n: np.ndarray
    if_freq: np.ndarray
    centre: np.ndarray
    centre_err: np.ndarray
    amplitude: np.ndarray
    fwhm: np.ndarray
    residual: np.ndarray
    residual_hz: np.ndarray
    used: np.ndarray
    reason: np.ndarray
    chi2_red: float = field(default=np.nan)

    @property
    def sigma(self):
        """1-sigma uncertainties of (f0, d1, d2) [Hz, Hz/chan, Hz/chan^2]."""
        return np.sqrt(np.diag(self.cov))


def comb_sets(time_mjd, is_comb, *, max_gap_s=10.0):
    """Split COMB scans into sets of consecutive scans: list of index arrays (time order)."""
    idx = np.flatnonzero(np.asarray(is_comb, dtype=bool))
    if idx.size == 0:
        return []
    idx = idx[np.argsort(np.asarray(time_mjd)[idx], kind="stable")]
    dt = np.diff(np.asarray(time_mjd, dtype=float)[idx]) * 86400.0
    breaks = np.flatnonzero(dt > max_gap_s) + 1
    return np.split(idx, breaks)


def comb_spectrum(comb_counts, zero, *, saturated=None, quality=None, params=CombParams()):
    """Mean of COMB scans minus ZERO and a per-channel saturation mask.

    comb_counts: (n_scan, n_chan) or (n_chan,) counts; zero: (n_chan,) or same shape;
    saturated: optional bool mask broadcastable to comb_counts; quality: optional (n_scan,)
    QUALITY bits: in a scan with bit 2 (AOS overflow) the channels at that scan's maximum
    count are saturated too. Channels at or above params.saturation_level always are.
    Returns (spectrum (n_chan,), saturated (n_chan,) bool: saturated in any scan).
    """
    counts = np.atleast_2d(np.asarray(comb_counts, dtype=float))
    sat = counts >= params.saturation_level
    if quality is not None:
        over = (np.atleast_1d(np.asarray(quality)).astype(np.int64) & 2) != 0
        sat |= over[:, None] & (counts >= counts.max(axis=1, keepdims=True))
    if saturated is not None:
        sat = sat | np.broadcast_to(np.asarray(saturated, dtype=bool), counts.shape)
    spec = np.mean(counts - np.asarray(zero, dtype=float), axis=0)
    return spec, np.any(sat, axis=0)


def gauss_lin(x, p):
    """Gaussian on a linear baseline a exp(-((x-mu)/s)^2/2) + b0 + b1 (x-mu) of k windows: x (k, n)
    [channel], p (k, 5) = (a, mu, s, b0, b1) -> (k, n)."""
    a, mu, s, b0, b1 = (p[:, i:i + 1] for i in range(5))
    u = (x - mu) / s
    return a * np.exp(-0.5 * u * u) + b0 + b1 * (x - mu)


def _jac(x, p):
    """d gauss_lin / d p, (k, n, 5)."""
    a, mu, s, b0, b1 = (p[:, i:i + 1] for i in range(5))
    d = x - mu
    u = d / s
    e = np.exp(-0.5 * u * u)
    return np.stack([e, a * e * u / s - b1, a * e * u * u / s, np.ones_like(x), d], axis=-1)


def fit_gauss_lin(x, y, p0, *, max_iter=300, tol=1e-10):
    """Levenberg-Marquardt least squares of k independent Gaussian + linear fits at once (all the
    comb lines of a spectrum in a few vectorised steps; the same minimum as scipy's curve_fit, which
    did them one by one at ~0.35 ms each).

    x, y (k, n); p0 (k, 5) = (amplitude, centre, sigma, b0, b1). Returns (p (k, 5), cov (k, 5, 5),
    converged (k,) bool: no step improves it or it stopped moving); cov as scipy's curve_fit without sigma: inv(J^T J) x SSR / (n - 5)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    p = np.array(p0, float)
    k, n = y.shape
    lam = np.full(k, 1e-3)
    r = y - gauss_lin(x, p)
    ssr = np.sum(r * r, axis=1)
    done = np.zeros(k, bool)
    eye = np.eye(5)
    for _ in range(max_iter):
        J = _jac(x, p)
        A = np.einsum("kni,knj->kij", J, J)
        g = np.einsum("kni,kn->ki", J, r)
        M = A + A * eye * lam[:, None, None] + eye * 1e-30
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(M, g[..., None])[..., 0]
            except np.linalg.LinAlgError:   # a degenerate window (e.g. amplitude 0)
                step = (np.linalg.pinv(M) @ g[..., None])[..., 0]
            pn = p + step
            rn = y - gauss_lin(x, pn)
            sn = np.sum(rn * rn, axis=1)
        better = ~done & np.isfinite(sn) & (sn <= ssr)
        small = np.all(np.abs(step) <= tol * (np.abs(pn) + tol), axis=1) | (ssr - sn <= tol * ssr)
        p[better], r[better], ssr[better] = pn[better], rn[better], sn[better]
        lam = np.where(better, np.maximum(lam / 10, 1e-12), np.where(done, lam, lam * 10))
        done |= (better & small) | (lam > 1e10)
        if done.all():
            break
    J = _jac(x, p)
    A = np.einsum("kni,knj->kij", J, J)
    cov = np.full((k, 5, 5), np.inf)
    for i in range(k):
        try:
            cov[i] = np.linalg.inv(A[i]) * ssr[i] / max(n - 5, 1)
        except np.linalg.LinAlgError:
            pass
    return p, cov, done


def _fit_lines(x, y, mu0, params):
    """Gaussian + linear fits of k line windows x, y (k, n) from the centre guesses mu0 (k,):
    (mu, mu_err, amplitude, fwhm) arrays (k,), NaN where a fit failed (not converged, a
    non-finite error, a negative amplitude or a centre more than 2 channels from the guess)."""
    s0 = params.fwhm_guess * FWHM_TO_SIGMA
    b0 = 0.5 * (y[:, 0] + y[:, -1])
    p0 = np.stack([y.max(axis=1) - b0, mu0, np.full_like(mu0, s0), b0, np.zeros_like(mu0)], axis=1)
    p, cov, ok = fit_gauss_lin(x, y, p0)
    with np.errstate(invalid="ignore"):
        err = np.sqrt(np.einsum("kii->ki", cov))
        ok &= np.isfinite(err).all(axis=1) & (p[:, 0] > 0) & (np.abs(p[:, 1] - mu0) <= 2.0)
    nan = np.full(len(mu0), np.nan)
    return (np.where(ok, p[:, 1], nan), np.where(ok, err[:, 1], nan), np.where(ok, p[:, 0], nan),
            np.where(ok, np.abs(p[:, 2]) / FWHM_TO_SIGMA, nan))


def robust_noise(spectrum):
    """Channel noise of a spectrum from the MAD of first differences (baseline-insensitive)."""
    return 1.4826 * np.median(np.abs(np.diff(np.asarray(spectrum, dtype=float)))) / np.sqrt(2.0)


def find_comb_lines(spectrum, *, guess, params=CombParams()):
    """Detect peaks and assign comb orders n with the guess dispersion.

    Returns (peak channels int (k,), orders n int (k,)), sorted by channel; a peak
    whose IF is not within max_assign_offset x 100 MHz of a comb line, or that shares
    its order with a brighter peak, is dropped.
    """
    spec = np.asarray(spectrum, dtype=float)
    resid = spec - median_filter(spec, size=params.baseline_width, mode="nearest")
    noise = robust_noise(resid)
    peaks, props = find_peaks(resid, height=params.min_snr * max(noise, 1e-30), distance=20)
    order = guess.if_freq(peaks) / COMB_SPACING
    n = np.rint(order).astype(int)
    ok = np.abs(order - n) <= params.max_assign_offset
    peaks, n, h = peaks[ok], n[ok], props["peak_heights"][ok]
    keep = np.ones(peaks.size, dtype=bool)
    for k in np.unique(n):
        same = np.flatnonzero(n == k)
        keep[same[np.argsort(h[same])[:-1]]] = False
    return peaks[keep], n[keep]


def fit_dispersion(centre, centre_err, if_freq, *, guess):
    """Weighted quadratic fit f_IF = F0 + D1 x + D2 x^2 (x = centre - 362).

    Errors are in channels; they are mapped to Hz with the local slope of the guess.
    Returns (Dispersion, cov (3, 3) in Hz units scaled by max(1, chi2_red), chi2_red).
    """
    x = np.asarray(centre, dtype=float) - C_REF
    sig_f = np.asarray(centre_err, dtype=float) * np.abs(guess.slope(centre))
    a = np.stack([np.ones_like(x), x, x * x], axis=1)
    w = 1.0 / sig_f
    coef, *_ = np.linalg.lstsq(a * w[:, None], np.asarray(if_freq) * w, rcond=None)
    cov = np.linalg.inv((a * w[:, None] ** 2).T @ a)
    dof = x.size - 3
    chi2 = float(np.sum(((a @ coef - if_freq) * w) ** 2))
    chi2_red = chi2 / dof if dof > 0 else np.nan
    if dof > 0 and chi2_red > 1.0:
        cov = cov * chi2_red
    return Dispersion(*coef), cov, chi2_red


def fit_comb(spectrum, saturated=None, *, half, guess=None, params=CombParams()):
    """Fit the dispersion of one AOS half from one COMB spectrum (COMB minus ZERO).

    spectrum: (n_chan,) counts; saturated: (n_chan,) bool or None; half: '490'/'550'
    (for the nominal guess); guess: a Dispersion to identify the comb orders.
    Raises CalibrationError when fewer than params.min_lines lines are usable.
    """
    spec = np.asarray(spectrum, dtype=float)
    nch = spec.size
    sat = np.zeros(nch, bool) if saturated is None else np.asarray(saturated, dtype=bool)
    guess = NOMINAL_DISPERSION[half] if guess is None else guess
    peaks, n = find_comb_lines(np.where(sat, np.nanmax(spec), spec), guess=guess, params=params)
    k = peaks.size
    cen, err, amp, fwhm = (np.full(k, np.nan) for _ in range(4))
    reason = np.full(k, "", dtype=object)
    hw = params.half_window
    noise = robust_noise(spec)
    fit = []
    for i, p in enumerate(peaks):
        lo, hi = p - hw, p + hw + 1
        if lo < params.edge_margin or hi > nch - params.edge_margin:
            reason[i] = "edge"
        elif np.any(sat[lo:hi]):
            reason[i] = "saturated"
        else:
            fit.append(i)
    if fit:
        x = peaks[fit, None] + np.arange(-hw, hw + 1)[None, :].astype(float)
        y = spec[x.astype(int)]
        denom = y[:, hw - 1] - 2 * y[:, hw] + y[:, hw + 1]
        mu0 = peaks[fit] + 0.5 * (y[:, hw - 1] - y[:, hw + 1]) / np.where(denom == 0, 1.0, denom)
        cen[fit], err[fit], amp[fit], fwhm[fit] = _fit_lines(x, y, mu0, params)
        for i in fit:
            if not np.isfinite(cen[i]):
                reason[i] = "fit failed"
            elif not params.fwhm_range[0] <= fwhm[i] <= params.fwhm_range[1]:
                reason[i] = "width"
            elif amp[i] < params.min_snr * noise:
                reason[i] = "faint"
    used = reason == ""
    f_n = n * COMB_SPACING
    if used.sum() < params.min_lines:
        raise CalibrationError(
            f"COMB fit of the {half} GHz half: {int(used.sum())} usable comb lines "
            f"(of {k} found; rejected: {sorted(set(reason[~used]))}), need >= {params.min_lines}"
        )
    disp, cov, chi2_red = fit_dispersion(cen[used], err[used], f_n[used], guess=guess)
    residual = np.where(used, cen - disp.channel(f_n), np.nan)
    residual_hz = np.where(used, f_n - disp.if_freq(cen), np.nan)
    log.debug("COMB %s: %d/%d lines used, chi2_red %.2f", half, used.sum(), k, chi2_red)
    return CombFit(disp, cov, n, f_n, cen, err, amp, fwhm, residual, residual_hz, used,
                   reason.astype(str), chi2_red)


def average_dispersions(fits):
    """Combine several COMB fits (or (Dispersion, cov) pairs) of one segment and half.

    Inverse-covariance weighted mean of (f0, d1, d2); the covariance is scaled by the
    Birge ratio (chi^2 / dof of the sets about the mean) when that exceeds 1, so sets
    that disagree (F0 drifts with TAOS) widen the uncertainty. Returns (Dispersion, cov).
    """
    items = [(f.dispersion, f.cov) if isinstance(f, CombFit) else f for f in fits]
    if not items:
        raise CalibrationError("no COMB fit to average (segment has no usable COMB set)")
    p = np.array([[d.f0, d.d1, d.d2] for d, _ in items])
    winv = [np.linalg.inv(c) for _, c in items]
    cov = np.linalg.inv(np.sum(winv, axis=0))
    mean = cov @ np.sum([w @ pi for w, pi in zip(winv, p)], axis=0)
    if len(items) > 1:
        chi2 = sum(float((pi - mean) @ w @ (pi - mean)) for w, pi in zip(winv, p))
        birge = chi2 / (3 * (len(items) - 1))
        cov = cov * max(1.0, birge)
    return Dispersion(*mean), cov
