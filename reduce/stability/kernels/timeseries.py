"""Time-series kernels on plain numpy arrays (numpy, scipy, astropy; no xarray, no dask).

- :func:`periodogram`: Lomb-Scargle power with the false-alarm probability of its peak
  (``astropy.timeseries.LombScargle``, Baluev 2008 bound).
- :func:`drift_and_oscillation`: a low-order polynomial (the slow drift) plus one sinusoid (the
  oscillation) fitted together, started at the periodogram peak; period, amplitude and drift
  rate with errors (covariance scaled by the reduced chi^2 and by the red-noise factor beta).
- :func:`red_noise_beta`: the time-averaging factor beta of Winn et al. (2008): how much worse
  than 1/sqrt(N) the residual rms bins down.
- :func:`decorrelate`: intrapixel regression of the fractional flux on the centroid offsets
  (dx, dy, dx^2, dy^2, dx dy, optionally a linear time term); the fractional flux change per
  0.1 pixel in x and in y at the mean position, with errors.
- :func:`binned_rms`: rms of bin means against bin size, with the white-noise expectation.
- :func:`plane_offsets`: how each plane of a cube differs from the rest of its cube (the IRAC
  first-frame effect), with standard errors and significances.
"""
from __future__ import annotations

import numpy as np
from astropy.timeseries import LombScargle
from scipy.optimize import curve_fit


def periodogram(t, y, dy=None, *, min_period, max_period, samples_per_peak=20):
    """Lomb-Scargle periodogram of y(t) between ``min_period`` and ``max_period`` (units of t).

    ``t``, ``y``, ``dy``: (n,), non-finite samples dropped.  Returns a dict: ``frequency``,
    ``power`` (arrays), ``period`` (of the highest peak), ``power_peak``, ``fap`` (Baluev
    false-alarm probability of that peak for white noise; a red-noise series makes it
    optimistic), and ``period_err`` (half width at half maximum of the peak, in period).
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    good = np.isfinite(t) & np.isfinite(y)
    if dy is not None:
        dy = np.asarray(dy, float)
        good &= np.isfinite(dy) & (dy > 0)
        dy = dy[good]
    t, y = t[good], y[good]
    ls = LombScargle(t, y, dy)
    freq = ls.autofrequency(samples_per_peak=samples_per_peak, minimum_frequency=1.0 / max_period,
                            maximum_frequency=1.0 / min_period)
    power = ls.power(freq)
    k = int(np.argmax(power))
    fap = float(ls.false_alarm_probability(power[k], minimum_frequency=freq[0], maximum_frequency=freq[-1],
                                           method="baluev"))
    half = power >= power[k] / 2
    lo = k
    while lo > 0 and half[lo - 1]:
        lo -= 1
    hi = k
    while hi < len(freq) - 1 and half[hi + 1]:
        hi += 1
    period_err = 0.5 * (1.0 / freq[lo] - 1.0 / freq[hi])
    return {"frequency": freq, "power": power, "period": float(1.0 / freq[k]),
            "power_peak": float(power[k]), "fap": fap, "period_err": float(period_err)}


def red_noise_beta(resid, max_bin=None):
    """Winn et al. (2008) beta: mean over bin sizes m of rms(bin means) / (rms / sqrt(m) *
    sqrt(M / (M - 1))) (M bins), for m up to ``max_bin`` (default n // 10); at least 1."""
    r = np.asarray(resid, float)
    r = r[np.isfinite(r)]
    n = r.size
    max_bin = max(2, n // 10) if max_bin is None else max_bin
    s1 = np.std(r)
    ratios = []
    for m in np.unique(np.geomspace(2, max_bin, 12).astype(int)):
        nb = n // m
        if nb < 4:
            continue
        means = r[:nb * m].reshape(nb, m).mean(1)
        expect = s1 / np.sqrt(m) * np.sqrt(nb / (nb - 1))
        ratios.append(np.std(means) / expect)
    return max(1.0, float(np.mean(ratios))) if ratios else 1.0


def drift_and_oscillation(t, y, dy=None, *, period0, degree=1, t0=None, period_bounds=None):
    """Fit ``poly(t - t0; degree) + A sin(2 pi (t - t0) / P + phi)`` by least squares.

    ``t``, ``y``, ``dy``: (n,); ``period0``: starting period (units of t, e.g. the periodogram
    peak); ``period_bounds``: (low, high) limits of the period (default period0 / 2 .. 2 period0:
    a period much longer than the span trades off against the polynomial).  Parameter errors: the covariance scaled by the reduced chi^2 and by beta^2
    (:func:`red_noise_beta` of the residuals), so correlated residuals widen them.  Returns a
    dict: ``period``, ``period_err``, ``amplitude`` (semi-amplitude, >= 0), ``amplitude_err``,
    ``phase``, ``poly`` (coefficients, lowest order first, per unit of t), ``poly_err``,
    ``drift`` and ``drift_err`` (the linear coefficient: the slow drift rate at t0, units of y
    per unit of t), ``t0``, ``rms`` (residual), ``beta``, ``model`` (n,) and ``trend`` (n,, the
    polynomial alone), ``at_bound`` (True when the period ended on a limit: its error is then
    not a measurement).
    """
    t, y = np.asarray(t, float), np.asarray(y, float)
    t0 = float(np.nanmean(t)) if t0 is None else t0
    good = np.isfinite(t) & np.isfinite(y)
    sigma = None
    if dy is not None:
        dy = np.asarray(dy, float)
        good &= np.isfinite(dy) & (dy > 0)
    tt, yy = t[good] - t0, y[good]
    if dy is not None:
        sigma = dy[good]
    pc = np.polyfit(tt, yy, degree)[::-1]
    resid = yy - np.polynomial.polynomial.polyval(tt, pc)
    amp0 = np.sqrt(2) * np.std(resid)
    w0 = 2 * np.pi / period0
    s, c = np.sin(w0 * tt), np.cos(w0 * tt)
    a, b = np.linalg.lstsq(np.stack([s, c], 1), resid, rcond=None)[0]
    amp0, ph0 = np.hypot(a, b), np.arctan2(b, a)

    def f(x, *p):
        return (np.polynomial.polynomial.polyval(x, p[:degree + 1])
                + p[degree + 1] * np.sin(2 * np.pi * x / p[degree + 2] + p[degree + 3]))

    lo, hi = period_bounds if period_bounds is not None else (period0 / 2, period0 * 2)
    lo, hi = min(lo, period0), max(hi, period0)
    big = 10 * np.ptp(yy) + 1e-30
    p0 = list(pc) + [min(amp0 if amp0 > 0 else np.std(resid), big / 2), period0, ph0]
    lower = [-np.inf] * (degree + 1) + [0.0, lo, -np.inf]
    upper = [np.inf] * (degree + 1) + [big, hi, np.inf]
    p, cov = curve_fit(f, tt, yy, p0=p0, sigma=sigma, absolute_sigma=False, bounds=(lower, upper),
                       max_nfev=20000)
    res = yy - f(tt, *p)
    beta = red_noise_beta(res)
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) * beta
    if p[degree + 1] < 0:
        p[degree + 1], p[degree + 3] = -p[degree + 1], p[degree + 3] + np.pi
    model = np.full(t.shape, np.nan)
    trend = np.full(t.shape, np.nan)
    model[good] = f(tt, *p)
    trend[good] = np.polynomial.polynomial.polyval(tt, p[:degree + 1])
    return {"period": float(p[degree + 2]), "period_err": float(err[degree + 2]),
            "amplitude": float(p[degree + 1]), "amplitude_err": float(err[degree + 1]),
            "phase": float(np.mod(p[degree + 3], 2 * np.pi)),
            "poly": p[:degree + 1].copy(), "poly_err": err[:degree + 1].copy(),
            "drift": float(p[1]) if degree >= 1 else 0.0,
            "drift_err": float(err[1]) if degree >= 1 else 0.0,
            "t0": t0, "rms": float(np.std(res)), "beta": beta, "model": model, "trend": trend,
            "at_bound": bool(np.isclose(p[degree + 2], lo, rtol=1e-3) or np.isclose(p[degree + 2], hi, rtol=1e-3))}


def decorrelate(flux, x, y, *, flux_err=None, t=None, step=0.1):
    """Regress the fractional flux on the centroid: ``f/median - 1 = c0 + cx dx + cy dy +
    cxx dx^2 + cyy dy^2 + cxy dx dy (+ ct (t - tmean))`` with dx = x - mean(x), dy = y - mean(y).

    ``flux``, ``x``, ``y`` (and ``flux_err``, ``t``): (n,); non-finite rows are left out of the
    fit.  The intrapixel sensitivity at the mean position is the gradient: the fractional
    change per ``step`` pixel is ``cx * step`` in x and ``cy * step`` in y.  Errors from the
    least-squares covariance scaled by the reduced chi^2 and by beta^2 of the residuals
    (:func:`red_noise_beta`).  Returns a dict: ``coef`` and ``coef_err`` (dicts by term),
    ``dfdx`` / ``dfdx_err``, ``dfdy`` / ``dfdy_err`` (per ``step`` px, fractional),
    ``corrected`` (n,: flux divided by the fitted centroid model, same units as flux; the time
    term is kept), ``model`` (n,, fractional), ``beta``, ``x_mean``, ``y_mean``.
    """
    flux, x, y = (np.asarray(v, float) for v in (flux, x, y))
    good = np.isfinite(flux) & np.isfinite(x) & np.isfinite(y)
    names = ["c0", "cx", "cy", "cxx", "cyy", "cxy"]
    if t is not None:
        t = np.asarray(t, float)
        good &= np.isfinite(t)
        names.append("ct")
    w = np.ones_like(flux)
    if flux_err is not None:
        fe = np.asarray(flux_err, float)
        good &= np.isfinite(fe) & (fe > 0)
        w = np.where(good, 1.0 / np.where(fe > 0, fe, 1.0), 0.0)
    norm = np.median(flux[good])
    xm, ym = x[good].mean(), y[good].mean()
    dx, dy = x - xm, y - ym
    cols = [np.ones_like(dx), dx, dy, dx * dx, dy * dy, dx * dy]
    if t is not None:
        cols.append(t - t[good].mean())
    a = np.stack(cols, 1)
    rel = flux / norm - 1
    wn = w * norm   # weights of the fractional values
    coef, *_ = np.linalg.lstsq(a[good] * wn[good, None], rel[good] * wn[good], rcond=None)
    fit = a @ coef
    res = rel - fit
    chi2 = np.sum((res[good] * wn[good]) ** 2)
    dof = max(good.sum() - len(names), 1)
    beta = red_noise_beta(res[good])
    cov = np.linalg.inv((a[good] * wn[good, None]).T @ (a[good] * wn[good, None])) * chi2 / dof
    err = np.sqrt(np.diag(cov)) * beta
    centroid_part = a[:, 1:6] @ coef[1:6]
    corrected = flux / (1 + centroid_part)
    return {"coef": dict(zip(names, coef)), "coef_err": dict(zip(names, err)),
            "dfdx": float(coef[1] * step), "dfdx_err": float(err[1] * step),
            "dfdy": float(coef[2] * step), "dfdy_err": float(err[2] * step),
            "corrected": corrected, "model": fit, "beta": beta, "x_mean": float(xm),
            "y_mean": float(ym), "norm": float(norm)}


def binned_rms(values, sizes):
    """rms of the means of consecutive bins of each size in ``sizes``, for a (n,) series.

    Returns ``(sizes, rms, white)``: (k,) arrays, ``white = rms_1 / sqrt(size) * sqrt(M/(M-1))``
    the expectation for white noise (M bins)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    s1 = np.std(v)
    out_sizes, rms, white = [], [], []
    for m in sizes:
        nb = v.size // int(m)
        if nb < 3:
            continue
        means = v[:nb * m].reshape(nb, m).mean(1)
        out_sizes.append(int(m))
        rms.append(np.std(means))
        white.append(s1 / np.sqrt(m) * np.sqrt(nb / (nb - 1)))
    return np.array(out_sizes), np.array(rms), np.array(white)


def plane_offsets(q, *, reference=slice(8, None)):
    """How each plane of a cube differs from the reference planes of the same cube.

    ``q``: (ncubes, nplanes), a per-frame quantity (NaN allowed).  For each plane k,
    ``d[c, k] = q[c, k] - mean(q[c, reference])``; returned as a dict of (nplanes,) arrays:
    ``offset`` (mean over cubes of d), ``offset_err`` (its standard error, std / sqrt(ncubes)),
    ``significance`` (offset / offset_err), and ``per_cube`` (ncubes, nplanes) = d.  The
    standard error over cubes takes the cube-to-cube scatter as it is (robust to slow drifts,
    which cancel within a cube)."""
    q = np.asarray(q, float)
    ref = np.nanmean(q[:, reference], axis=1)
    d = q - ref[:, None]
    n = np.sum(np.isfinite(d), axis=0)
    with np.errstate(all="ignore"):
        off = np.nanmean(d, axis=0)
        err = np.nanstd(d, axis=0, ddof=1) / np.sqrt(n)
    return {"offset": off, "offset_err": err, "significance": off / err, "per_cube": d}
