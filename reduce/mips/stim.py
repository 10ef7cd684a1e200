"""Stim-flash responsivity tracking for the 70/160 um Ge:Ga arrays (plain-array kernels).

A stim DCE (STIMFLSH = 1) carries extra signal STIMAMP x responsivity(t)
(ICD §2).  Its background is the mean of the nearest non-stim DCEs before and
after it in time (same AOR); stim - background divided by STIMAMP is the
responsivity at the stim time.  A stim whose signal is <= 0 (per pixel, or
its array median) is invalid and not used (Handbook; INSTRUMENTS.md).  Every
DCE then takes the responsivity of the nearest valid stim in time, or a
linear interpolation between valid stims.

Arrays: ``slopes`` (ndce, ny, nx) in DN/s, ``stimflsh`` (ndce,) bool/int,
``times`` (ndce,) (MJD or seconds, any monotonic scale), ``stimamp`` (ny, nx)
in DN/s.  Nothing here mutates its inputs.
"""
from __future__ import annotations

import logging

import numpy as np

from reduce.errors import CalibrationError

log = logging.getLogger(__name__)


def stim_minus_background(slopes, stimflsh, times):
    """Stim signal of every stim DCE -> (stim_index (nstim,), signal (nstim, ny, nx)).

    Background of a stim = mean of the nearest non-stim DCE before and the
    nearest after it in time (just one where only one side exists).  All DCEs
    given are taken as one AOR.  Stims without any non-stim DCE get NaN.
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    stim = np.asarray(stimflsh).astype(bool)
    times = np.asarray(times, dtype=np.float64)
    idx_stim = np.flatnonzero(stim)
    idx_bg = np.flatnonzero(~stim)
    order = idx_bg[np.argsort(times[idx_bg], kind="stable")]
    tb = times[order]
    signal = np.full((idx_stim.size,) + slopes.shape[1:], np.nan)
    for n, i in enumerate(idx_stim):
        k = np.searchsorted(tb, times[i])
        neigh = [order[j] for j in (k - 1, k) if 0 <= j < order.size]
        if neigh:
            signal[n] = slopes[i] - slopes[neigh].mean(axis=0)
    return idx_stim, signal


def stim_validity(signal):
    """Boolean (nstim, ny, nx): pixel signal > 0 and the stim's array median > 0."""
    signal = np.asarray(signal, dtype=np.float64)
    finite = np.isfinite(signal)
    pix_ok = finite & (signal > 0)
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(s) if np.isfinite(s).any() else np.nan for s in signal])
    frame_ok = np.isfinite(med) & (med > 0)
    return pix_ok & frame_ok[:, None, None]


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


def track_responsivity(slopes, stimflsh, times, stimamp, *, aorkeys=None, method="nearest"):
    """Responsivity (ndce, ny, nx), relative to nominal, for every DCE.

    Works AOR by AOR (``aorkeys`` (ndce,), default: all one AOR): stim signal
    (``stim_minus_background``) / ``stimamp``, invalid stims dropped
    (``stim_validity``), then ``interpolate_responsivity``.  Raises
    CalibrationError naming the AOR when it has no valid stim at all.
    """
    slopes = np.asarray(slopes)
    stim = np.asarray(stimflsh).astype(bool)
    times = np.asarray(times, dtype=np.float64)
    amp = np.asarray(stimamp, dtype=np.float64)
    if slopes.ndim != 3 or stim.shape != (slopes.shape[0],) or times.shape != stim.shape:
        raise ValueError(f"need slopes (ndce, ny, nx) and stimflsh, times (ndce,); got "
                         f"{slopes.shape}, {stim.shape}, {times.shape}")
    aors = np.zeros(stim.shape, dtype=np.int64) if aorkeys is None else np.asarray(aorkeys)
    out = np.full(slopes.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for aor in np.unique(aors):
            sel = np.flatnonzero(aors == aor)
            idx, signal = stim_minus_background(slopes[sel], stim[sel], times[sel])
            resp = signal / np.where(amp > 0, amp, np.nan)
            valid = stim_validity(signal) & np.isfinite(resp)
            nvalid = int(valid.any(axis=(1, 2)).sum())
            if nvalid == 0:
                raise CalibrationError(
                    f"AOR {aor}: no valid stim flash ({idx.size} stim DCEs with STIMFLSH=1, "
                    "none with stim - background > 0); responsivity cannot be tracked")
            if nvalid < idx.size:
                log.info("AOR %s: %d of %d stim flashes invalid (stim - background <= 0)",
                         aor, idx.size - nvalid, idx.size)
            out[sel] = interpolate_responsivity(times[sel][idx], resp, valid, times[sel],
                                                method=method)
    return out
