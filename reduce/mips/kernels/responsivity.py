"""Stim-flash responsivity tracking for the 70/160 um Ge:Ga arrays (plain-array kernels of
``reduce.mips.steps.responsivity``).

A stim DCE (STIMFLSH = 1) carries extra signal STIMAMP x responsivity(t)
(ICD §2).  Its background comes from non-stim DCEs of the same AOR
(``background_pairs``: the two nearest in time at the same pointing, else the
nearest before and after); stim - background divided by STIMAMP is the
responsivity at the stim time (``per_stim_responsivity``: the median over the
valid pixels, 1 = nominal).  A stim whose signal is <= 0 (per pixel, or its
array median) is invalid and not used (``stim_validity``; Handbook;
INSTRUMENTS.md).  Every DCE then takes the responsivity of the nearest valid
stim in time, or a linear interpolation between valid stims
(``interpolate_responsivity``, ``responsivity_block``); ``apply_responsivity_block``
divides the rates by it and removes the stim signal.

Arrays: rates (ndce, ny, nx) in DN/s, ``stimflsh`` (ndce,) bool/int,
``times`` (ndce,) (MJD or seconds, any monotonic scale), ``stimamp`` (ny, nx)
in DN/s.  Nothing here mutates its inputs.
"""
from __future__ import annotations

import numpy as np

from .arrays import take


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


def per_stim_responsivity(rates, *, table, calset, stimamp):
    """(nstim, 2) float64: [responsivity, valid (0/1)] of every stim in ``table`` order.

    ``rates`` (n, ny, nx) dark-subtracted DN/s of the subset; ``table`` (nstim, 3) positions
    [stim, bg1, bg2] (-1 none); ``calset`` (n,); ``stimamp`` (cset, ny, nx). Per pixel
    (stim - mean background) / STIMAMP; ``stim_validity`` rejects pixels (and the whole
    stim) with signal <= 0. The stim's value is the median over its valid pixels where the
    two backgrounds agree (difference no more than its median over the array: steady sky).
    """
    out = np.zeros((table.shape[0], 2))
    with np.errstate(all="ignore"):
        for n, (i, b1, b2) in enumerate(table):
            bgs = [b for b in (b1, b2) if b >= 0]
            if not bgs:
                out[n] = (np.nan, 0.0)
                continue
            signal = rates[i] - rates[bgs].mean(axis=0)
            amp = np.asarray(stimamp[max(int(calset[i]), 0)], dtype=np.float64)
            resp = signal / np.where(amp > 0, amp, np.nan)
            v = stim_validity(signal[None])[0] & np.isfinite(resp)
            if len(bgs) == 2 and v.any():
                spread = np.abs(rates[b1] - rates[b2])
                if np.isfinite(spread[v]).any():
                    v = v & (spread <= np.nanmedian(spread[v]))
            out[n] = (np.median(resp[v]), 1.0) if v.any() else (np.nan, 0.0)
    return out


def responsivity_block(times, aorkeys, skip, *, stims, stim_times, stim_aors, method):
    """Task body of step ``responsivity.track_responsivity``: responsivity (n,) float32 of each DCE
    (array median, 1 = nominal), interpolated in time between the valid stims of its AOR
    (``interpolate_responsivity``; ``stims`` (nstim, 2) from ``per_stim_responsivity``, their
    times and AORKEYs); NaN for skipped DCEs and AORs without a valid stim."""
    out = np.full(times.shape, np.nan, np.float32)
    for aor in np.unique(aorkeys):
        sel = np.flatnonzero((aorkeys == aor) & ~skip)
        mine = (stim_aors == aor) & (stims[:, 1] > 0)
        if not sel.size or not mine.any():
            continue
        r = interpolate_responsivity(stim_times[mine], stims[mine, 0][:, None, None],
                                           np.ones((int(mine.sum()), 1, 1), bool), times[sel],
                                           method=method)
        out[sel] = r[:, 0, 0]
    return out


def apply_responsivity_block(rate, unc, resp, stim, calset, *, stimamp):
    """Task body of step ``responsivity.apply_responsivity``: rate / responsivity minus STIMAMP
    [calset] in stim-flash DCEs (stim (n,) > 0), unc / responsivity; (n, y, x) float32 DN/s."""
    r = resp[:, None, None]
    stimsig = np.where(stim[:, None, None] > 0, take(stimamp, calset), 0.0)
    return (rate / r - stimsig).astype(np.float32), (unc / r).astype(np.float32)
