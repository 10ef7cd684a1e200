"""Trend, step and outlier kernels for instrument-stability time series (plain numpy, no xarray/dask).

A series is ``t`` (n,) MJD (days, float64), ``y`` (n,) values in any unit and optionally ``err``
(n,) their 1-sigma errors (same unit). Every function ignores non-finite samples.

* ``fit_trend``: weighted least squares of y = a + b (t - t0) + sum_P [c_P cos(2 pi t / P) +
  s_P sin(2 pi t / P)] + sum_j d_j H(t - T_j): a linear drift, seasonal / orbital sinusoids of
  periods P (days; a period is only fitted when the data span at least ``MIN_CYCLES`` of it, else
  it would be degenerate with the drift) and known steps at T_j. Parameter errors are the formal WLS
  errors scaled by the noise the data show (``sigma``: the robust scale of the weighted residuals
  from their first differences, which a step or a slow drift does not inflate; at least the
  formal chi^2 scale when the model fits worse than that).
* ``find_steps``: a robust step (change-point) detector: forward selection over every possible
  split with the drift and sinusoids fitted jointly; the significance of a step at sample k is
  z_k = d_k / sigma(d_k) of the joint fit (computed for all k at once from cumulative sums, O(n p^2)),
  the best split with |z| >= ``threshold`` is added to the model and the scan repeated. Samples
  flagged as outliers (robust z-score of the residuals >= ``outlier_z``) are left out of the scan.
* ``analyse``: outliers -> steps -> final fit: a ``Trend``.
* ``robust_z``, ``daily_medians``, ``outlier_days``: robust z-scores (median / 1.4826 MAD), the
  median of each UTC day (floor of the MJD) and the days whose median residual is an outlier.

Units: slopes per day (``slope``) and per year (``slope_per_year`` = 365.25 x slope); sinusoid
amplitudes in the unit of y; step sizes in the unit of y; times MJD.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

YEAR_D = 365.25
MAD_TO_SIGMA = 1.4826
DEFAULT_THRESHOLD = 5.0   # |z| of a step (5 sigma: ~1e-3 false steps per series of 1000 samples)
DEFAULT_OUTLIER_Z = 5.0
MIN_CYCLES = 0.75         # a sinusoid is fitted when the data span this many of its periods


@dataclass(frozen=True)
class Step:
    """One step found: the level changes by ``size`` +- ``size_err`` (unit of y) between
    ``mjd_before`` (last sample at the old level) and ``mjd`` (first sample at the new one)."""

    index: int          # index (into the series as given) of the first sample at the new level
    mjd: float
    mjd_before: float
    size: float
    size_err: float
    z: float            # size / size_err at detection


@dataclass
class Trend:
    """A fitted trend: ``coef``/``cov`` in the order of ``names`` ('offset', 'slope' [per day],
    'cos_P', 'sin_P' per fitted period P [days], 'step_j'); times relative to ``t0`` (MJD)."""

    t0: float
    names: list
    coef: np.ndarray
    cov: np.ndarray
    periods: tuple                 # periods (days) actually fitted
    n: int                         # samples used
    sigma: float                   # noise scale of the weighted residuals (1 when err is right)
    chi2_dof: float
    span: tuple = (np.nan, np.nan)
    steps: list = field(default_factory=list)
    outliers: np.ndarray | None = None   # bool (n_input,) samples left out as outliers

    def _get(self, name):
        if name not in self.names:
            return np.nan, np.nan
        i = self.names.index(name)
        return float(self.coef[i]), float(np.sqrt(max(self.cov[i, i], 0.0)))

    @property
    def slope(self):
        """(slope, 1-sigma error) per day."""
        return self._get("slope")

    @property
    def slope_per_year(self):
        s, e = self.slope
        return s * YEAR_D, e * YEAR_D

    def amplitude(self, period):
        """(amplitude, 1-sigma error) of the sinusoid of ``period`` days (NaN if not fitted)."""
        if period not in self.periods:
            return np.nan, np.nan
        i, j = self.names.index(f"cos_{period:g}"), self.names.index(f"sin_{period:g}")
        c, s = self.coef[i], self.coef[j]
        amp = float(np.hypot(c, s))
        g = np.array([c, s]) / amp if amp > 0 else np.array([1.0, 0.0]) / np.sqrt(2)
        sub = self.cov[np.ix_([i, j], [i, j])]
        return amp, float(np.sqrt(max(g @ sub @ g, 0.0)))

    def predict(self, t):
        """The model (offset, drift, sinusoids and steps) at times ``t`` (MJD)."""
        t = np.asarray(t, np.float64)
        return design(t, self.t0, self.periods, [s.mjd for s in self.steps]) @ self.coef


def design(t, t0, periods=(), steps=()):
    """(n, 2 + 2 len(periods) + len(steps)) design matrix: 1, t - t0, cos/sin(2 pi t / P),
    H(t - T) (1 from the step time T on)."""
    t = np.asarray(t, np.float64)
    cols = [np.ones_like(t), t - t0]
    for p in periods:
        cols += [np.cos(2 * np.pi * t / p), np.sin(2 * np.pi * t / p)]
    cols += [(t >= s).astype(np.float64) for s in steps]
    return np.column_stack(cols) if t.size else np.zeros((0, len(cols)))


def _names(periods, steps):
    return ["offset", "slope"] + [f"{k}_{p:g}" for p in periods for k in ("cos", "sin")] + \
        [f"step_{j}" for j in range(len(steps))]


def _clean(t, y, err):
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(f"t and y must be 1-d of one length, got {t.shape} and {y.shape}")
    if err is None:
        w = np.ones_like(y)
    else:
        e = np.asarray(err, np.float64)
        w = np.where(np.isfinite(e) & (e > 0), 1.0 / np.where(e > 0, e, 1.0) ** 2, 0.0)
    ok = np.isfinite(t) & np.isfinite(y) & (w > 0)
    return t, y, w, ok


def usable_periods(t, periods):
    """The periods (days) of which the span of ``t`` covers at least ``MIN_CYCLES``."""
    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t)]
    span = float(t.max() - t.min()) if t.size else 0.0
    return tuple(float(p) for p in periods if p > 0 and span >= MIN_CYCLES * p)


def robust_sigma(x):
    """1.4826 x MAD of the finite values of ``x`` (NaN when none)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return np.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def _noise_scale(r):
    """Noise scale of standardised residuals ``r`` (time order): 1.4826 MAD of their first
    differences / sqrt(2) (insensitive to steps and slow drifts); their rms / sqrt(2) where the
    values are quantised (that MAD under a tenth of it); else their MAD."""
    r = r[np.isfinite(r)]
    if r.size >= 3:
        d = np.diff(r)
        s = robust_sigma(d) / np.sqrt(2.0)
        rms = float(np.sqrt(np.mean(d * d) / 2.0))
        if np.isfinite(s) and s > 0.1 * rms:
            return s
        if rms > 0:          # quantised values (most differences 0): the plain rms
            return rms
    s = robust_sigma(r)
    return s if np.isfinite(s) and s > 0 else 1.0


def _wls(tt, yy, ww, t0, periods, steps):
    """(coef, formal cov (unit weight scale), standardised residuals, chi2) of one WLS fit."""
    x = design(tt, t0, periods, steps)
    sw = np.sqrt(ww)
    xs, ys = x * sw[:, None], yy * sw
    coef, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    cov = np.linalg.pinv(xs.T @ xs)
    r = ys - xs @ coef
    return coef, cov, r, float(r @ r)


def fit_trend(t, y, err=None, *, periods=(YEAR_D,), steps=(), t0=None):
    """WLS fit of drift + sinusoids (+ known steps at MJDs ``steps``): a ``Trend`` (module docstring).

    ``periods`` (days) the span does not cover are dropped; with fewer than 3 usable samples the
    coefficients are NaN."""
    t, y, w, ok = _clean(t, y, err)
    tt, yy, ww = t[ok], y[ok], w[ok]
    order = np.argsort(tt, kind="stable")
    tt, yy, ww = tt[order], yy[order], ww[order]
    per = usable_periods(tt, periods)
    step_t = [float(s.mjd) if isinstance(s, Step) else float(s) for s in steps]
    names = _names(per, step_t)
    npar = len(names)
    if t0 is None:
        t0 = float(np.round(np.median(tt), 3)) if tt.size else 0.0
    span = (float(tt.min()), float(tt.max())) if tt.size else (np.nan, np.nan)
    if tt.size < max(3, npar + 1):
        fit = Trend(t0, names, np.full(npar, np.nan), np.full((npar, npar), np.nan), per, int(tt.size),
                    np.nan, np.nan, span)
        fit.steps = [_step_of(s, fit, j) for j, s in enumerate(steps)]
        return fit
    coef, cov, r, chi2 = _wls(tt, yy, ww, t0, per, step_t)
    dof = max(tt.size - npar, 1)
    chi2_dof = chi2 / dof
    sigma = _noise_scale(r)
    # errors: the noise the residuals show (robust), at least the formal chi^2 scale when the
    # model misses structure (then the differences underestimate the scatter about the model)
    fit = Trend(t0, names, coef, cov * max(sigma ** 2, chi2_dof), per, int(tt.size), float(sigma),
                float(chi2_dof), span)
    fit.steps = [_step_of(s, fit, j) for j, s in enumerate(steps)]
    return fit


def _step_of(s, fit, j):
    d, e = fit._get(f"step_{j}")
    if isinstance(s, Step):
        return Step(s.index, s.mjd, s.mjd_before, d, e, s.z)
    return Step(-1, float(s), np.nan, d, e, d / e if e > 0 else np.inf)


def _scan(tt, yy, ww, t0, periods, steps, min_size, allowed):
    """z_k and size d_k of a step at every sample k (first sample at the new level), given the
    model with ``steps``; NaN where not allowed."""
    x = design(tt, t0, periods, steps)
    sw = np.sqrt(ww)
    xs, ys = x * sw[:, None], yy * sw
    q, _ = np.linalg.qr(xs)
    r = ys - q @ (q.T @ ys)
    sigma = _noise_scale(r)
    # h_k = sw * 1[i >= k]: numerator h_k . r and the part of h_k outside span(X)
    num = np.cumsum((sw * r)[::-1])[::-1]
    qh = np.cumsum((sw[:, None] * q)[::-1], axis=0)[::-1]
    den = np.cumsum(ww[::-1])[::-1] - np.einsum("ij,ij->i", qh, qh)
    n = tt.size
    k = np.arange(n)
    ok = allowed & (k >= min_size) & (k <= n - min_size) & (den > 1e-9 * np.cumsum(ww[::-1])[::-1])
    with np.errstate(all="ignore"):
        z = np.where(ok, num / np.sqrt(np.where(den > 0, den, np.nan)) / sigma, np.nan)
        d = np.where(ok, num / den, np.nan)
    return z, d


def find_steps(t, y, err=None, *, periods=(YEAR_D,), threshold=DEFAULT_THRESHOLD, min_size=3, max_steps=5,
               exclude=None):
    """Steps in the series (module docstring): a list of ``Step`` in time order.

    ``threshold``: the |z| a step must reach; ``min_size``: fewest samples on each side of a step
    (and between two steps); ``exclude`` (n,) bool: samples to leave out (outliers)."""
    t, y, w, ok = _clean(t, y, err)
    if exclude is not None:
        ok &= ~np.asarray(exclude, bool)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(t[idx], kind="stable")]
    tt, yy, ww = t[idx], y[idx], w[idx]
    per = usable_periods(tt, periods)
    n = tt.size
    if n < 2 * min_size + len(per) * 2 + 2:
        return []
    t0 = float(np.median(tt))
    found = []   # positions (into tt) of the first sample after each step
    allowed = np.ones(n, bool)
    # equal times cannot be split
    allowed[1:] &= np.diff(tt) > 0
    allowed[0] = False
    for _ in range(max_steps):
        z, _ = _scan(tt, yy, ww, t0, per, [tt[k] for k in found], min_size, allowed)
        if not np.isfinite(z).any():
            break
        k = int(np.nanargmax(np.abs(z)))
        if abs(z[k]) < threshold:
            break
        found.append(k)
        allowed[max(k - min_size + 1, 0):k + min_size] = False
    if not found:
        return []
    found.sort()
    cand = [Step(int(idx[k]), float(tt[k]), float(tt[k - 1]), np.nan, np.nan, np.nan) for k in found]
    fit = fit_trend(tt, yy, None if err is None else 1.0 / np.sqrt(ww), periods=per, steps=cand, t0=t0)
    return [Step(s.index, s.mjd, s.mjd_before, s.size, s.size_err, s.size / s.size_err if s.size_err > 0 else np.inf)
            for s in fit.steps]


def robust_z(x):
    """(x - median) / (1.4826 MAD) over the finite values (NaN where x is not finite)."""
    x = np.asarray(x, np.float64)
    s = robust_sigma(x)
    med = np.nanmedian(x) if np.isfinite(x).any() else np.nan
    with np.errstate(all="ignore"):
        return (x - med) / (s if s > 0 else np.nan)


def daily_medians(t, y):
    """(days (MJD of 0h UTC), median of y that day, number of samples) of every day with data."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    day = np.floor(t[ok])
    days, inv, counts = np.unique(day, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    yy = y[ok][order]
    edges = np.concatenate([[0], np.cumsum(counts)])
    med = np.array([np.median(yy[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    return days, med, counts


def outlier_days(t, y, *, z=DEFAULT_OUTLIER_Z, min_days=5):
    """Days whose median of ``y`` (e.g. the residuals from a trend) is an outlier: robust z-score
    of the daily medians >= ``z``. Returns (days MJD, their median, their z) (empty with fewer than
    ``min_days`` days)."""
    days, med, _ = daily_medians(t, y)
    if days.size < min_days:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    zz = robust_z(med)
    bad = np.isfinite(zz) & (np.abs(zz) >= z)
    return days[bad], med[bad], zz[bad]


def running_outliers(t, y, err=None, *, z=DEFAULT_OUTLIER_Z, width=7):
    """(n,) bool: samples whose deviation from the running median of ``width`` neighbours in time,
    in units of their error and the robust scale of all such deviations, is >= ``z`` (robust to
    steps and drifts, which a running median follows)."""
    t, y, w, ok = _clean(t, y, err)
    out = np.zeros(t.size, bool)
    idx = np.flatnonzero(ok)
    if idx.size < width:
        return out
    idx = idx[np.argsort(t[idx], kind="stable")]
    yy = y[idx]
    h = width // 2
    pad = np.concatenate([yy[h:0:-1], yy, yy[-2:-h - 2:-1]])
    med = np.median(np.lib.stride_tricks.sliding_window_view(pad, width), axis=1)
    dev = (yy - med) * np.sqrt(w[idx])
    zz = robust_z(dev)
    out[idx] = np.isfinite(zz) & (np.abs(zz) >= z)
    return out


def analyse(t, y, err=None, *, periods=(YEAR_D,), threshold=DEFAULT_THRESHOLD, outlier_z=DEFAULT_OUTLIER_Z,
            min_size=3, max_steps=5, find=True):
    """Outliers, steps and the final fit of one series: a ``Trend`` with ``steps`` and ``outliers``
    ((n,) bool over the input samples: ``running_outliers`` at ``outlier_z``, left out of the step
    search and the fit); ``find`` False: no step search."""
    t, y, w, ok = _clean(t, y, err)
    e = None if err is None else np.asarray(err, np.float64)
    out = running_outliers(t, y, e, z=outlier_z) & ok
    steps = find_steps(t, y, e, periods=periods, threshold=threshold, min_size=min_size, max_steps=max_steps,
                       exclude=out) if find else []
    use = ok & ~out
    fit = fit_trend(t[use], y[use], None if e is None else e[use], periods=periods, steps=steps)
    fit.outliers = out
    return fit
