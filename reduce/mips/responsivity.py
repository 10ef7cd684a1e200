"""Ge responsivity from the stim-flash DCEs, as a small lazy reduction broadcast back to every DCE.

The plan (pipeline.plan_bcd) picks, per AOR, the stim DCEs (STIMFLSH = 1) and
their background neighbours (nearest non-stim DCE before and after in time);
only those rates (a few % of the DCEs) enter one small task that applies
``reduce.mips.stim``: stim - background, divided by STIMAMP, per pixel; a
stim whose signal is <= 0 (per pixel, or its array median) is invalid. The
responsivity of a stim is the median over its valid pixels (1 = nominal).
Each DCE chunk then interpolates the valid stims of its AOR in time
(``GeParams.resp_method``: 'linear' between the bracketing stims, 'nearest'
outside; or 'nearest'). An AOR without a valid stim gives NaN (no_responsivity).
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from . import stim as stimk
from .steps import per_dce, record


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
    before and after in time (the rule of ``stim.stim_minus_background``; scan
    maps, where the sky changes about linearly between them), keeping only the closer
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
    (stim - mean background) / STIMAMP; ``stim.stim_validity`` rejects pixels (and the whole
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
            v = stimk.stim_validity(signal[None])[0] & np.isfinite(resp)
            if len(bgs) == 2 and v.any():
                spread = np.abs(rates[b1] - rates[b2])
                if np.isfinite(spread[v]).any():
                    v = v & (spread <= np.nanmedian(spread[v]))
            out[n] = (np.median(resp[v]), 1.0) if v.any() else (np.nan, 0.0)
    return out


def _interp_block(times, aorkeys, skip, *, stims, stim_times, stim_aors, method):
    out = np.full(times.shape, np.nan, np.float32)
    for aor in np.unique(aorkeys):
        sel = np.flatnonzero((aorkeys == aor) & ~skip)
        mine = (stim_aors == aor) & (stims[:, 1] > 0)
        if not sel.size or not mine.any():
            continue
        r = stimk.interpolate_responsivity(stim_times[mine], stims[mine, 0][:, None, None],
                                           np.ones((int(mine.sum()), 1, 1), bool), times[sel],
                                           method=method)
        out[sel] = r[:, 0, 0]
    return out


def track(ds, plan, cal, p):
    """Add ``responsivity`` (dce,) float32 (lazy) and set dce_code no_responsivity where NaN."""
    from .ge import DCE_CODES

    idx, table = plan.stim_subset
    if idx.size:
        sub = ds.rate.isel(dce=idx).data.rechunk((idx.size, -1, -1))
        # one small task on the gathered stim/background rates (a pure array graph, so the
        # ramp fits it needs are shared with the main path, not recomputed)
        stims = sub.map_blocks(per_stim_responsivity, table=table, calset=plan.calset[idx],
                               stimamp=cal.image("stimamp").values, chunks=((table.shape[0],), (2,)),
                               drop_axis=2, dtype=np.float64)
    else:
        stims = da.zeros((0, 2), dtype=np.float64, chunks=((0,), (2,)))
    stim_global = idx[table[:, 0]] if idx.size else np.zeros(0, np.int64)
    stims = xr.DataArray(stims, dims=("stim", "two"))
    resp = per_dce(_interp_block, [ds.time, ds.aorkey, ds.skip],
                   cal={"stims": stims},
                   outputs=[((), np.float32)],
                   kwargs={"stim_times": plan.times[stim_global], "stim_aors": plan.aorkeys[stim_global],
                           "method": p.resp_method})
    code = ds.dce_code | xr.where(np.isnan(resp) & ~ds.skip, DCE_CODES["no_responsivity"], 0).astype(np.int16)
    ds = ds.assign(responsivity=resp, dce_code=code)
    ds["responsivity"].attrs["long_name"] = "responsivity, array median (1 = nominal)"
    ds = ds.assign_attrs(stim_responsivity_method=p.resp_method)
    return record(ds, "ge.responsivity", p, cal)
