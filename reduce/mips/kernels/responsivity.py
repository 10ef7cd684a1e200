"""Stim-flash responsivity tracking for the 70/160 um Ge:Ga arrays (plain-array kernels of
``reduce.mips.steps.responsivity``).

A stim DCE (STIMFLSH = 1) carries extra signal STIMAMP x responsivity(t)
(ICD §2).  Its background comes from non-stim DCEs of the same AOR
(``background_pairs``: the two nearest in time at the same pointing, else the
nearest before and after); stim - background divided by STIMAMP is the
responsivity at the stim time (``per_stim_responsivity``: the median over the
valid pixels, 1 = nominal, with its error from the pixels' spread).  A stim
whose signal is <= 0 (per pixel, or its array median) is invalid and not used
(``stim_validity``; Handbook; INSTRUMENTS.md).

Responsivity of every DCE (``responsivity_block``, ``GeParams.resp_method``):

* ``'gp'`` (default): a smooth model of the drift over the AOR fitted to its valid
  stims (``fit_drift``): Gaussian-process regression, r(t) = 1 + c + f(t),
  constant c ~ N(0, ``GP_OFFSET``^2), f a squared-exponential process of rms
  ``amp`` (``GeParams.resp_amp``, "several % per hour", ICD §2) and time scale
  ``scale_s`` (``GeParams.resp_timescale_s``) plus a linear and a quadratic trend
  (first and second derivative of rms ``amp`` per ``scale_s`` and ``scale_s``^2, so that
  extrapolation continues the measured trend and its curvature), each stim measured with its own
  error (pixels' spread, and how much its two backgrounds disagree) plus an extra stim-to-stim
  scatter.  The amplitude and the
  extra scatter are chosen by the data (maximum marginal likelihood, with a
  log-normal prior of width ``AMP_PRIOR_DEX`` around ``amp``).  The prediction
  and its 1-sigma uncertainty at every DCE time come from the GP posterior: the
  uncertainty is smallest at the stims, grows between them (interpolation) and
  most outside the first/last stim (extrapolation).  The stim backgrounds are
  re-scaled to the stim's responsivity with the model (a background taken at another
  responsivity biases stim - background by (r_stim - r_bg) x sky / STIMAMP), the stims
  measured again and the model refitted, to convergence (damped fixed-point passes).
* ``'linear'`` / ``'nearest'`` (the former models, kept for comparison): linear
  interpolation between the bracketing valid stims (constant outside) or the
  nearest valid stim (``interpolate_responsivity``); they carry no uncertainty.

``apply_responsivity_block`` divides the rates by the responsivity, removes the stim
signal, and adds the responsivity uncertainty to ``unc`` in quadrature: a DCE whose
fractional responsivity error is s_r gets unc^2 = (unc_noise / r)^2 + (s_r x rate / r)^2,
a term common to all pixels of the DCE (frame-to-frame calibration error), so
that BCD pulls against the true sky have unit width inside and outside the stims.

Arrays: rates (ndce, ny, nx) in DN/s, ``stimflsh`` (ndce,) bool/int,
``times`` (ndce,) (MJD in the pipeline: ``time_unit_s`` = 86400 s; any monotonic scale
for 'linear'/'nearest'), ``stimamp`` (ny, nx) in DN/s.  Nothing here mutates its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize

from .arrays import take

METHODS = ("gp", "linear", "nearest")
GP_OFFSET = 0.5          # prior rms of the responsivity's constant offset from 1 (broad)
AMP_PRIOR_DEX = 0.5      # width (log10) of the prior on the drift amplitude around GeParams.resp_amp
AMP_BOUNDS = (0.03, 30.0)  # drift amplitude searched within these factors of GeParams.resp_amp
EXTRA_MAX = 0.05         # largest extra stim-to-stim scatter considered (fraction)
SIGMA_FLOOR = 1e-4       # smallest per-stim error (fraction): rounding, STIMAMP precision
SIGMA_ONE_PIXEL = 0.02   # error of a stim measured on fewer than 3 valid pixels
BG_ITERATIONS = 8        # most passes of the stim-background rescaling ('gp')


def stim_validity(signal):
    """Boolean (nstim, ny, nx): pixel signal > 0 and the stim's array median > 0."""
    signal = np.asarray(signal, dtype=np.float64)
    finite = np.isfinite(signal)
    pix_ok = finite & (signal > 0)
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(s) if np.isfinite(s).any() else np.nan for s in signal])
    frame_ok = np.isfinite(med) & (med > 0)
    return pix_ok & frame_ok[:, None, None]


@dataclass(frozen=True)
class DriftModel:
    """Gaussian-process model of the responsivity of one AOR (``fit_drift``); times in s."""

    t: np.ndarray          # stim times (s, from ``t0``)
    t0: float              # mid-time of the stims (s)
    alpha: np.ndarray      # K^-1 (y - 1)
    chol: tuple            # scipy.linalg.cho_factor of K
    amp: float             # drift amplitude (fraction) chosen by the data
    extra: float           # extra stim-to-stim scatter (fraction) chosen by the data
    scale_s: float

    def predict(self, t_s):
        """(responsivity, 1-sigma uncertainty) at times ``t_s`` (s, same origin as the fit)."""
        u = np.asarray(t_s, np.float64) - self.t0
        ks = _kernel(u, self.t, self.amp, self.scale_s)
        mean = 1.0 + ks @ self.alpha
        prior = _kernel_diag(u, self.amp, self.scale_s)
        var = prior - np.einsum("ij,ji->i", ks, linalg.cho_solve(self.chol, ks.T))
        return mean, np.sqrt(np.clip(var, 0.0, None))


def _kernel(t1, t2, amp, scale_s):
    """Prior covariance of r(t1), r(t2) (t in s from the AOR's mid-stim time, u = t / scale_s):
    a constant offset, r'(0) and r''(0) of rms ``amp`` per ``scale_s`` and ``scale_s``^2 (the
    trend terms u u' and (u u')^2 / 4) and a squared-exponential drift of rms ``amp``."""
    u1, u2 = t1[:, None] / scale_s, t2[None, :] / scale_s
    uu = u1 * u2
    return GP_OFFSET ** 2 + amp ** 2 * (uu + uu * uu / 4 + np.exp(-0.5 * (u1 - u2) ** 2))


def _kernel_diag(t, amp, scale_s):
    """The diagonal of ``_kernel(t, t)``."""
    u2 = (t / scale_s) ** 2
    return GP_OFFSET ** 2 + amp ** 2 * (u2 + u2 * u2 / 4 + 1.0)


def _gp_parts(t, y, sigma, amp, extra, scale_s):
    k = _kernel(t, t, amp, scale_s) + np.diag(sigma ** 2 + extra ** 2)
    chol = linalg.cho_factor(k, lower=True)
    return chol, linalg.cho_solve(chol, y - 1.0)


def fit_drift(t_s, resp, sigma, *, amp, scale_s):
    """Fit the responsivity drift of one AOR to its valid stims: a ``DriftModel``.

    ``t_s`` (nstim,) stim times in s, ``resp`` their responsivities, ``sigma`` their
    1-sigma measurement errors.  GP regression (module docstring): prior mean 1, a
    constant offset of rms ``GP_OFFSET``, linear and quadratic trends and a squared-
    exponential drift, all of rms ``amp`` (per time scale ``scale_s``), white noise sigma^2 + extra^2.  The drift amplitude
    and the extra scatter maximise the marginal likelihood (scipy L-BFGS-B) times a
    log-normal prior on the amplitude (``AMP_PRIOR_DEX`` around ``amp``): the data
    choose how wiggly the drift is and how much the stims scatter beyond their
    pixel errors; with one or two stims the prior (ICD: several % per hour) rules.
    """
    t_s = np.asarray(t_s, np.float64)
    y = np.asarray(resp, np.float64)
    sig = np.maximum(np.nan_to_num(np.asarray(sigma, np.float64), nan=SIGMA_ONE_PIXEL), SIGMA_FLOOR)
    order = np.argsort(t_s, kind="stable")
    t_s, y, sig = t_s[order], y[order], sig[order]
    t0 = float(0.5 * (t_s[0] + t_s[-1]))
    t = t_s - t0
    la0 = np.log(amp)

    def nll(theta):
        a, x = np.exp(theta)
        try:
            chol, alpha = _gp_parts(t, y, sig, a, x, scale_s)
        except linalg.LinAlgError:
            return 1e30
        prior = 0.5 * ((theta[0] - la0) / (AMP_PRIOR_DEX * np.log(10))) ** 2
        return float(0.5 * (y - 1.0) @ alpha + np.log(np.diag(chol[0])).sum() + prior)

    bounds = [(la0 + np.log(AMP_BOUNDS[0]), la0 + np.log(AMP_BOUNDS[1])),
              (np.log(SIGMA_FLOOR / 10), np.log(EXTRA_MAX))]
    best = None
    for x0 in (SIGMA_FLOOR, 3e-3):      # the extra scatter's likelihood can have two optima
        r = optimize.minimize(nll, np.array([la0, np.log(x0)]), method="L-BFGS-B", bounds=bounds)
        if best is None or r.fun < best.fun:
            best = r
    a, x = (float(v) for v in np.exp(best.x))
    chol, alpha = _gp_parts(t, y, sig, a, x, scale_s)
    return DriftModel(t, t0, alpha, chol, a, x, float(scale_s))


def interpolate_responsivity(stim_times, resp, valid, times, *, method="nearest"):
    """Responsivity (ndce, ny, nx) at ``times`` from per-stim values, pixel by pixel.

    ``resp`` (nstim, ny, nx), ``valid`` same shape (bool).  ``method``:
    'nearest' (nearest valid stim in time; ties take the earlier) or 'linear'
    (linear in time between the valid stims bracketing the DCE, the nearest
    one outside them).  NaN for pixels with no valid stim.
    """
    if method not in ("nearest", "linear"):
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    st = np.asarray(stim_times, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    valid = np.asarray(valid, bool) & np.isfinite(resp)
    times = np.asarray(times, dtype=np.float64)
    order = np.argsort(st, kind="stable")
    st, resp, valid = st[order], resp[order], valid[order]
    ny, nx = resp.shape[1:]
    out = np.full((times.size, ny, nx), np.nan)
    flat_r = resp.reshape(len(st), -1)
    flat_v = valid.reshape(len(st), -1)
    flat_o = out.reshape(times.size, -1)
    # group pixels by their pattern of valid stims: usually one or two patterns
    patterns, inverse = np.unique(flat_v.T, axis=0, return_inverse=True)
    for p, pat in enumerate(patterns):
        if not pat.any():
            continue
        pix = np.flatnonzero(inverse.ravel() == p)
        ts, rs = st[pat], flat_r[pat][:, pix]
        if method == "nearest":
            k = np.abs(times[:, None] - ts[None, :]).argmin(axis=1)
            flat_o[:, pix] = rs[k]
            continue
        # linear: bracketing stims k0 <= t < k1, constant outside the first/last stim
        k1 = np.clip(np.searchsorted(ts, times, side="right"), 1, max(ts.size - 1, 1))
        k0 = k1 - 1 if ts.size > 1 else np.zeros_like(k1)
        k1 = np.minimum(k1, ts.size - 1)
        span = ts[k1] - ts[k0]
        w = np.clip(np.divide(times - ts[k0], span, out=np.zeros_like(times), where=span > 0),
                    0.0, 1.0)
        flat_o[:, pix] = rs[k0] * (1 - w[:, None]) + rs[k1] * w[:, None]
    return out


def _sep_arcsec(ra1, dec1, ra2, dec2):
    """Angular separation (arcsec) of (ra1, dec1) from arrays (ra2, dec2), deg; haversine."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0


def background_pairs(stimflsh, times, aorkeys, ra, dec, usable, *, same_pointing_arcsec):
    """Background DCEs of every stim DCE: {stim index: [up to 2 background indices]}.

    Same AOR, not a stim, usable. Preferred: the (up to) two DCEs nearest in time
    among those pointed within ``same_pointing_arcsec`` of the stim (a dither
    cycle revisits each position, so the sky is the same); else the nearest
    before and after in time (scan maps, where the sky changes about
    linearly between them), keeping only the closer
    one in pointing where the other is more than twice as far (the end of a scan leg).
    """
    stim = np.asarray(stimflsh).astype(bool) & usable
    out = {}
    for aor in np.unique(aorkeys[stim]):
        sel = np.flatnonzero((aorkeys == aor) & usable)
        bg = sel[~stim[sel]]
        bg = bg[np.argsort(times[bg], kind="stable")]
        for i in sel[stim[sel]]:
            near = bg[_sep_arcsec(ra[i], dec[i], ra[bg], dec[bg]) <= same_pointing_arcsec]
            if near.size:
                pick = near[np.argsort(np.abs(times[near] - times[i]), kind="stable")[:2]]
            else:
                k = np.searchsorted(times[bg], times[i])
                pick = np.array([bg[j] for j in (k - 1, k) if 0 <= j < bg.size], dtype=np.int64)
                if pick.size == 2:  # a turn-around (end of a scan leg): keep the one on the stim's side
                    sep = _sep_arcsec(ra[i], dec[i], ra[pick], dec[pick])
                    if sep.max() > 2 * max(sep.min(), same_pointing_arcsec):
                        pick = pick[[int(np.argmin(sep))]]
            out[int(i)] = sorted(int(j) for j in pick)
    return out


def stim_subset(pairs):
    """(sorted indices of the stims and their backgrounds, (nstim, 3) [stim, bg1, bg2] positions in it, -1 = none)."""
    idx = np.array(sorted(set(pairs) | {j for v in pairs.values() for j in v}), dtype=np.int64)
    pos = {int(g): n for n, g in enumerate(idx)}
    table = np.full((len(pairs), 3), -1, dtype=np.int64)
    for n, (i, bgs) in enumerate(sorted(pairs.items())):
        table[n, 0] = pos[i]
        for m, j in enumerate(bgs[:2]):
            table[n, 1 + m] = pos[j]
    return idx, table


def _measure_stims(rates, table, calset, stimamp, bg_scale):
    """(nstim, 3) [responsivity, valid, error] with backgrounds multiplied by ``bg_scale`` (nstim, 2)."""
    out = np.zeros((table.shape[0], 3))
    with np.errstate(all="ignore"):
        for n, (i, b1, b2) in enumerate(table):
            bgs = [(b, bg_scale[n, m]) for m, b in enumerate((b1, b2)) if b >= 0]
            if not bgs:
                out[n] = (np.nan, 0.0, np.nan)
                continue
            signal = rates[i] - np.mean([rates[b] * f for b, f in bgs], axis=0)
            amp = np.asarray(stimamp[max(int(calset[i]), 0)], dtype=np.float64)
            resp = signal / np.where(amp > 0, amp, np.nan)
            v = stim_validity(signal[None])[0] & np.isfinite(resp)
            if len(bgs) == 2 and v.any():
                spread = np.abs(rates[b1] - rates[b2])
                if np.isfinite(spread[v]).any():
                    v = v & (spread <= np.nanmedian(spread[v]))
            if not v.any():
                out[n] = (np.nan, 0.0, np.nan)
                continue
            med = np.median(resp[v])
            nv = int(v.sum())
            # error of a median: sqrt(pi/2) x (1.4826 MAD) / sqrt(n) (independent pixel noise) ...
            err = (1.2533 * 1.4826 * np.median(np.abs(resp[v] - med)) / np.sqrt(nv)
                   if nv >= 3 else SIGMA_ONE_PIXEL)
            if len(bgs) == 2:
                # ... and the sky the backgrounds do not share with the stim DCE (dither/scan offsets,
                # pointing errors): as much as the two backgrounds disagree, in the same statistic
                err = np.hypot(err, np.median(((rates[b1] - rates[b2]) / 2 / amp)[v]))
            out[n] = (med, 1.0, max(err, SIGMA_FLOOR))
    return out


def per_stim_responsivity(rates, *, table, calset, stimamp, times=None, aorkeys=None, method="linear",
                          amp=0.05, scale_s=3600.0, time_unit_s=86400.0):
    """(nstim, 3) float64: [responsivity, valid (0/1), 1-sigma error] of every stim in ``table`` order.

    ``rates`` (n, ny, nx) dark-subtracted DN/s of the subset; ``table`` (nstim, 3) positions
    [stim, bg1, bg2] (-1 none); ``calset`` (n,); ``stimamp`` (cset, ny, nx). Per pixel
    (stim - mean background) / STIMAMP; ``stim_validity`` rejects pixels (and the whole
    stim) with signal <= 0. The stim's value is the median over its valid pixels where the
    two backgrounds agree (difference no more than its median over the array: steady sky);
    its error is that of a median from the pixels' spread (MAD), plus in quadrature the median
    over the same pixels of (bg1 - bg2) / 2 / STIMAMP: the sky that differs between DCEs.

    ``method`` 'gp' with the subset's ``times`` and ``aorkeys`` (n,): each background is first
    brought to the responsivity of its stim with the AOR's drift model fitted to these
    values (``fit_drift``; ``amp``, ``scale_s``; times x ``time_unit_s`` = s), then the stims
    are measured again.
    """
    table = np.asarray(table)
    out = _measure_stims(rates, table, calset, stimamp, np.ones((table.shape[0], 2)))
    if method != "gp" or times is None or aorkeys is None or not table.shape[0]:
        return out
    times = np.asarray(times, np.float64) * time_unit_s
    stim_aor = np.asarray(aorkeys)[table[:, 0]]
    new = out
    for _ in range(BG_ITERATIONS):     # the model from biased stims corrects part of the bias: iterate
        scale = np.ones((table.shape[0], 2))
        for aor in np.unique(stim_aor):
            mine = (stim_aor == aor) & (out[:, 1] > 0)
            if not mine.any():
                continue
            model = fit_drift(times[table[mine, 0]], out[mine, 0], out[mine, 2], amp=amp, scale_s=scale_s)
            at = model.predict(times[np.where(table >= 0, table, table[:, :1])].ravel())[0].reshape(table.shape)
            sel = np.flatnonzero(stim_aor == aor)
            scale[sel] = at[sel, :1] / at[sel, 1:]
        new = _measure_stims(rates, table, calset, stimamp, scale)
        if np.nanmax(np.abs(new[:, 0] - out[:, 0]), initial=0.0) < 1e-5:
            break
        # damped fixed-point step: the bias left by a model fitted to biased stims alternates in sign
        out = np.where(np.arange(3) == 0, 0.5 * (out + new), new)
    return new


def responsivity_block(times, aorkeys, skip, *, stims, stim_times, stim_aors, method, amp=0.05,
                       scale_s=3600.0, time_unit_s=86400.0, with_unc=False):
    """Task body of step ``responsivity.track_responsivity``: responsivity (n,) float32 of each DCE
    (array median, 1 = nominal) from the valid stims of its AOR (``stims`` (nstim, 2 or 3) from
    ``per_stim_responsivity``, their times and AORKEYs); NaN for skipped DCEs and AORs without a
    valid stim. ``method`` 'gp': the AOR's drift model (``fit_drift``; ``amp``, ``scale_s``,
    times x ``time_unit_s`` = s) at each DCE time; 'linear'/'nearest': ``interpolate_responsivity``.
    ``with_unc``: also its fractional 1-sigma uncertainty (n,) float32 (0 for 'linear'/'nearest',
    which do not estimate one)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    out = np.full(times.shape, np.nan, np.float32)
    unc = np.full(times.shape, np.nan, np.float32)
    stims = np.asarray(stims, np.float64)
    sig = stims[:, 2] if stims.shape[1] > 2 else np.full(stims.shape[0], np.nan)
    for aor in np.unique(aorkeys):
        sel = np.flatnonzero((aorkeys == aor) & ~skip)
        mine = (stim_aors == aor) & (stims[:, 1] > 0)
        if not sel.size or not mine.any():
            continue
        if method == "gp":
            model = fit_drift(np.asarray(stim_times, np.float64)[mine] * time_unit_s, stims[mine, 0], sig[mine],
                              amp=amp, scale_s=scale_s)
            r, s = model.predict(np.asarray(times, np.float64)[sel] * time_unit_s)
            out[sel], unc[sel] = r, s / r
            continue
        r = interpolate_responsivity(stim_times[mine], stims[mine, 0][:, None, None],
                                     np.ones((int(mine.sum()), 1, 1), bool), times[sel], method=method)
        out[sel], unc[sel] = r[:, 0, 0], 0.0
    return (out, unc) if with_unc else out


def apply_responsivity_block(rate, unc, resp, stim, calset, resp_unc=None, *, stimamp):
    """Task body of step ``responsivity.apply_responsivity``: rate / responsivity minus STIMAMP
    [calset] in stim-flash DCEs (stim (n,) > 0), unc / responsivity; (n, y, x) float32 DN/s.
    ``resp_unc`` (n,): fractional 1-sigma error of the responsivity, added in quadrature:
    unc^2 = (unc / r)^2 + (resp_unc x rate / r)^2 (rate / r before the stim signal is removed:
    the stim signal is scaled by the same wrong responsivity)."""
    r = resp[:, None, None]
    stimsig = np.where(stim[:, None, None] > 0, take(stimamp, calset), 0.0)
    out, err = rate / r, unc / r
    if resp_unc is not None:
        err = np.hypot(err, np.asarray(resp_unc, np.float64)[:, None, None] * out)
    return (out - stimsig).astype(np.float32), err.astype(np.float32)
