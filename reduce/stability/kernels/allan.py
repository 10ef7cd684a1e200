"""Allan variance of radiometer time series (plain numpy), after Schieder & Kramer (2001, A&A 373, 746).

For a series x of n samples spaced dt, averaged over blocks of m samples (integration time
T = m dt), the Allan variance is half the mean squared difference of consecutive block means,
``sigma_A^2(T) = < (xbar_{k+1} - xbar_k)^2 > / 2`` (overlapping estimator: every start sample).
White noise of variance s^2 gives s^2 / m (slope -1 in log-log); drifts (1/f^alpha noise,
alpha > 1) give b T^(alpha-1). Schieder & Kramer model ``sigma_A^2 = a / T + b T^beta``; its
minimum lies at the Allan time ``T_A = (a / (beta b))^(1 / (beta + 1))``, the longest useful
integration.

- total power: x(t) = mean over the chosen channels of (counts - zero), normalised to mean 1;
- spectroscopic: the difference of two channels' normalised signals (channel c and c + delta),
  which removes the gain fluctuations common to the band; averaged over the channel pairs.

Units: x dimensionless (normalised), T in the units of dt (s for SWAS scans).
"""

from __future__ import annotations

import numpy as np


def allan_levels(n, *, min_blocks=4, max_levels=None):
    """Block sizes m = 1, 2, 4, ... with at least ``min_blocks`` blocks in n samples (int array)."""
    m = []
    k = 1
    while n // k >= min_blocks and (max_levels is None or len(m) < max_levels):
        m.append(k)
        k *= 2
    return np.array(m, dtype=np.int64)


def allan_variance(x, m, *, overlapping=True):
    """Allan variance of x (n,) or (n, k) for block sizes m (int (j,)): (avar (j,), err (j,)).

    A 2-d x gives the mean over its k columns. The overlapping estimator uses every start
    sample; err is an approximate 1-sigma error, avar / sqrt(number of independent block
    differences x k). Non-finite samples make the result NaN; levels with fewer than 2 blocks
    are NaN."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, k = x.shape
    m = np.atleast_1d(np.asarray(m, dtype=np.int64))
    avar = np.full(m.size, np.nan)
    err = np.full(m.size, np.nan)
    cs = np.concatenate([np.zeros((1, k)), np.cumsum(x, axis=0)], axis=0)
    for i, mi in enumerate(m):
        if mi < 1 or n < 2 * mi:
            continue
        step = 1 if overlapping else mi
        mean = (cs[mi:] - cs[:-mi]) / mi          # running means, start j = 0..n-m
        starts = np.arange(0, n - 2 * mi + 1, step)
        d = mean[starts + mi] - mean[starts]
        avar[i] = 0.5 * np.mean(d * d)
        n_indep = max(n // mi - 1, 1)
        err[i] = avar[i] / np.sqrt(n_indep * k)
    return avar, err


def normalised(counts, zero=None):
    """(counts - zero) / its mean over time, per column: (n, c) -> (n, c) (dimensionless).
    Columns whose mean is not positive are NaN."""
    x = np.asarray(counts, dtype=float)
    if zero is not None:
        x = x - np.asarray(zero, dtype=float)
    mu = np.mean(x, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mu > 0, x / mu, np.nan)


def total_power_allan(counts, m, *, zero=None, channels=slice(None)):
    """Total-power Allan variance of counts (n, c): the mean over ``channels`` of counts - zero,
    normalised to mean 1. Returns (avar (j,), err (j,))."""
    x = np.asarray(counts, dtype=float)[:, channels]
    if zero is not None:
        x = x - np.asarray(zero, dtype=float)[channels]
    tp = x.mean(axis=1)
    mu = tp.mean()
    if not mu > 0:
        return np.full(len(m), np.nan), np.full(len(m), np.nan)
    return allan_variance(tp / mu, m)


def spectroscopic_allan(counts, m, *, zero=None, channels=slice(None), delta=None):
    """Spectroscopic Allan variance (Schieder & Kramer 2001) of counts (n, c): of the difference
    of the normalised signals of channels i and i + delta (``channels`` selected first;
    delta default half of them), averaged over the pairs. Returns (avar (j,), err (j,)).
    For radiometer (white) noise of relative variance 1/(B t) per channel, avar(m) = 2/(B t m)."""
    x = np.asarray(counts, dtype=float)[:, channels]
    z = None if zero is None else np.asarray(zero, dtype=float)[channels]
    y = normalised(x, z)
    c = y.shape[1]
    delta = c // 2 if delta is None else int(delta)
    if delta < 1 or delta >= c:
        raise ValueError(f"spectroscopic_allan: channel offset {delta} outside 1..{c - 1}")
    d = y[:, : c - delta] - y[:, delta:]
    d = d[:, np.all(np.isfinite(d), axis=0)]
    if d.shape[1] == 0:
        return np.full(len(m), np.nan), np.full(len(m), np.nan)
    return allan_variance(d, m)


def fit_allan(tau, avar, err=None, *, betas=np.arange(0.1, 3.01, 0.05)):
    """Fit sigma_A^2 = a / T + b T^beta (a, b >= 0; beta on the grid ``betas``) by weighted least
    squares on the finite points. Returns (a, b, beta, chi2); b = 0 when no rise is seen
    (beta then NaN)."""
    tau = np.asarray(tau, dtype=float)
    y = np.asarray(avar, dtype=float)
    e = np.asarray(err, dtype=float) if err is not None else y * 0.1
    ok = np.isfinite(tau) & np.isfinite(y) & np.isfinite(e) & (e > 0) & (tau > 0)
    if ok.sum() < 3:
        return np.nan, np.nan, np.nan, np.nan
    tau, y, w = tau[ok], y[ok], 1.0 / e[ok]
    a0 = np.sum(y / tau * w * w) / np.sum((w / tau) ** 2)     # white only
    best = (a0, 0.0, np.nan, float(np.sum(((a0 / tau - y) * w) ** 2)))
    for beta in betas:
        basis = np.stack([1.0 / tau, tau ** beta], axis=1) * w[:, None]
        coef, *_ = np.linalg.lstsq(basis, y * w, rcond=None)
        if np.any(coef < 0):
            continue
        chi2 = float(np.sum((basis @ coef - y * w) ** 2))
        if chi2 < best[3]:
            best = (float(coef[0]), float(coef[1]), float(beta), chi2)
    return best


def allan_time(tau, avar, err=None):
    """Allan time [units of tau]: the minimum of the fitted a / T + b T^beta (see fit_allan).
    NaN when the curve shows no rise, or when the minimum lies outside the measured T range
    (the Allan time is then longer than the data can tell)."""
    a, b, beta, _ = fit_allan(tau, avar, err)
    if not (np.isfinite(a) and np.isfinite(b) and b > 0 and a > 0 and np.isfinite(beta)):
        return np.nan
    t_a = (a / (beta * b)) ** (1.0 / (beta + 1.0))
    tau = np.asarray(tau, dtype=float)
    good = tau[np.isfinite(np.asarray(avar, dtype=float))]
    if good.size == 0 or not (good.min() <= t_a <= good.max()):
        return np.nan
    return float(t_a)
