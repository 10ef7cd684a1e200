"""Small plain-numpy helpers of the SWAS stability study (reduce.stability.swas): which segments
fall in a window, per-segment summaries of the level-1 kernels' outputs, continuous OFF/ZERO
runs for the Allan variance, housekeeping sums per segment, correlations.

Times are MJD (UTC), durations s, temperatures K (TAOS deg C), counts as stored.
"""

from __future__ import annotations

import numpy as np

MISSION_DAY1_MJD = 51118.0  #: MJD of mission day 1 = 1998-11-01 00:00 UTC (ICD §1)
SCAN_CODES = {"ON": 0, "OFF": 1, "ZERO": 2, "HOT": 3, "COMB": 4}  #: store scantype codes


def day_mjd(missday):
    """MJD (UTC) at 00:00 of mission day(s)."""
    return MISSION_DAY1_MJD + np.asarray(missday, dtype=float) - 1.0


def day_candidates(segment_ids, start=None, stop=None):
    """Bool (s,): segments (ids = day x 1000 + number) whose mission day can hold a first scan in
    [start, stop) (MJD; None = open); the exact test on the first scan's time is made later."""
    d0 = day_mjd(np.asarray(segment_ids) // 1000)
    ok = np.ones(d0.shape, bool)
    if start is not None:
        ok &= d0 + 1.0 > start
    if stop is not None:
        ok &= d0 < stop
    return ok


def in_window(t, start=None, stop=None):
    """Bool: start <= t < stop (MJD; None = open)."""
    t = np.asarray(t, dtype=float)
    ok = np.isfinite(t)
    if start is not None:
        ok &= t >= start
    if stop is not None:
        ok &= t < stop
    return ok


def noise_ratio(noise_stat, flags):
    """Median over the usable pairs (flag bit 15 clear, finite) of the flagging step's 'noise'
    statistic (measured channel noise / radiometer-equation noise): (ratio, n pairs used)."""
    st = np.asarray(noise_stat, dtype=float)
    ok = ((np.asarray(flags).astype(np.int32) & 0x8000) == 0) & np.isfinite(st)
    if not ok.any():
        return np.nan, 0
    return float(np.median(st[ok])), int(ok.sum())


def flag_counts(flags, criteria, names=("spikes", "baseline")):
    """(tested, [flagged by each criterion whose name starts with one of ``names``]) of one
    segment and receiver; flags (m,) int16 bits as in reduce.swas.kernels.flag."""
    f = np.asarray(flags).astype(np.int32) & 0xFFFF
    usable = (f & 0x8000) == 0
    out = []
    for name in names:
        bits = [1 << i for i, c in enumerate(criteria) if c.startswith(name)]
        bit = int(np.bitwise_or.reduce(bits)) if bits else 0
        out.append(int(np.count_nonzero(f[usable] & bit)))
    return int(usable.sum()), out


def longest_run(scantype, usable, time_mjd, *, kinds=("OFF", "ZERO"), max_gap_s=5.0):
    """Longest run of consecutive usable scans of one type in ``kinds`` with no time step above
    ``max_gap_s``: (kind code, first row, end row) or (-1, 0, 0). scantype int codes (n,)."""
    st = np.asarray(scantype).astype(int)
    use = np.asarray(usable, dtype=bool)
    t = np.asarray(time_mjd, dtype=float) * 86400.0
    best = (-1, 0, 0)
    for kind in kinds:
        code = SCAN_CODES[kind]
        ok = (st == code) & use
        if not ok.any():
            continue
        brk = np.ones(st.size + 1, bool)
        brk[1:-1] = ~(ok[1:] & ok[:-1]) | (np.diff(t) > max_gap_s)
        starts = np.flatnonzero(brk[:-1] & ok)
        for s in starts:
            e = s + 1
            while e < st.size and not brk[e]:
                e += 1
            if e - s > best[2] - best[1]:
                best = (code, int(s), int(e))
    return best


def segment_sums(segment_id, values, ids):
    """Per-segment sums of ``values`` (n, v) over the rows whose segment_id (n,) is one of ``ids``
    (s,): (s, 2 v), the sums of the finite values then their counts, per column (rows of other
    segments and non-finite values are left out)."""
    seg = np.asarray(segment_id)
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    ids = np.asarray(ids)
    out = np.zeros((ids.size, 2 * v.shape[1]))
    if ids.size == 0 or seg.size == 0:
        return out
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], seg)
    pos = np.clip(pos, 0, ids.size - 1)
    hit = ids[order][pos] == seg
    idx = order[pos[hit]]
    vv = v[hit]
    fin = np.isfinite(vv)
    for j in range(v.shape[1]):
        out[:, j] = np.bincount(idx, np.where(fin[:, j], vv[:, j], 0.0), minlength=ids.size)
        out[:, v.shape[1] + j] = np.bincount(idx, fin[:, j].astype(float), minlength=ids.size)
    return out


def correlation(x, y):
    """Pearson r, number of finite pairs, least-squares slope dy/dx and its 1-sigma error."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return np.nan, n, np.nan, np.nan
    x, y = x[ok], y[ok]
    r = float(np.corrcoef(x, y)[0, 1])
    p, cov = np.polyfit(x, y, 1, cov=True) if n > 3 else (np.polyfit(x, y, 1), np.full((2, 2), np.nan))
    return r, n, float(p[0]), float(np.sqrt(cov[0, 0]))


def slope_within_groups(x, y, groups):
    """Common slope dy/dx with a free offset per group (e.g. F0 of the COMB sets against TAOS,
    one offset per segment): (slope, 1-sigma error from the scatter, points used, groups used)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    g = np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    xs, ys, keep = [], [], 0
    for k in np.unique(g):
        sel = g == k
        if sel.sum() < 2:
            continue
        xs.append(x[sel] - x[sel].mean())
        ys.append(y[sel] - y[sel].mean())
        keep += 1
    if not xs:
        return np.nan, np.nan, 0, 0
    xc, yc = np.concatenate(xs), np.concatenate(ys)
    sxx = float(np.sum(xc * xc))
    if sxx == 0:
        return np.nan, np.nan, xc.size, keep
    slope = float(np.sum(xc * yc) / sxx)
    dof = xc.size - keep - 1
    resid = yc - slope * xc
    err = float(np.sqrt(np.sum(resid * resid) / dof / sxx)) if dof > 0 else np.nan
    return slope, err, int(xc.size), keep
