"""Step 4, Doppler shift-and-coadd and the LSRK frequency/velocity axis (seed §2.4), kernels:
coadd grouping, integer-channel shift-and-add and the task body of the lazy step
(:mod:`reduce.swas.steps.coadd`).

Per pair and band the spacecraft's line-of-sight velocity (from SCVEL and the target)
and the AOS F0 drift with TAOS give a fractional channel offset of the band's rest line;
its negative, rounded, is the integer shift (opposite for USB and LSB). Nominal coadds
hold <= ``max_on_time_s`` of ON time (grouping planned on the pairs; flagged pairs just
drop out); 'total' coadds hold every pair of a band, position and segment. MAP coadds are
grouped by pointing offset. CHOP_NOD: pairs are averaged first, then shifted once.

Axis: after the integer shifts a coadd channel c sees geocentric sky frequency
LO +- f_IF(c - r), r the mean fractional residual of the shifts. The coadd is resampled
once (linear interpolation) onto a linear LSRK-frame frequency grid that equals the
quadratic dispersion exactly at the reference channel (the channel of the band's line at
VSOURCE); the quadratic term is thereby absorbed (the grid is exact everywhere to the
interpolation). FITS convention: crpix is 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reduce.swas.kernels.doppler import geo_lsrk_velocity
from reduce.swas.physics import BANDS, C_KMS, N_CHAN, Dispersion


@dataclass(frozen=True)
class CoaddParams:
    """Coadd options: max ON time per coadd [s], time gap that always starts a new coadd [s]."""

    max_on_time_s: float = 180.0
    max_gap_s: float = 600.0


def shift_and_add(spectra, shifts, weights=None):
    """Integer-channel shift and weighted coadd, no wrap-around.

    spectra (m, n_chan); shifts (m,) int: out[c] takes spectra[i, c - shifts[i]];
    weights (m,) (default 1). NaN inputs count as missing. Returns (coadd (n_chan,),
    weight_sum (n_chan,), coverage (n_chan,) int = number of spectra that contributed,
    full (n_chan,) bool = every spectrum contributed). Channels with no coverage are NaN.
    """
    x = np.asarray(spectra, dtype=float)
    m, n = x.shape
    s = np.asarray(shifts).astype(np.int64).reshape(m)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float).reshape(m)
    src = np.arange(n)[None, :] - s[:, None]
    inside = (src >= 0) & (src < n)
    g = np.take_along_axis(x, np.clip(src, 0, n - 1), axis=1)
    ok = inside & np.isfinite(g)
    wg = np.where(ok, w[:, None], 0.0)
    wsum = wg.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        coadd = np.where(wsum > 0, np.sum(np.where(ok, g, 0.0) * wg, axis=0) / wsum, np.nan)
    coverage = ok.sum(axis=0)
    return coadd, wsum, coverage, coverage == m


def group_coadds(time_mjd, inttime, *, use=None, keys=None, params=CoaddParams()):
    """Coadd group id (n,) for pairs/scans in time order: a new group starts when the summed
    ON time would exceed max_on_time_s, after a gap > max_gap_s, or when `keys` changes
    between consecutive members of a key (keys: (n,) int labels, e.g. map positions; each
    key is grouped separately). Unused entries (use False) get -1. Ids are 0.. in order
    of each group's first time."""
    t = np.asarray(time_mjd, dtype=float) * 86400.0
    tint = np.asarray(inttime, dtype=float)
    n = t.size
    use = np.ones(n, bool) if use is None else np.asarray(use, dtype=bool)
    keys = np.zeros(n, np.int64) if keys is None else np.asarray(keys)
    gid = np.full(n, -1, np.int64)
    starts = []
    for key in np.unique(keys[use]):
        idx = np.flatnonzero(use & (keys == key))
        idx = idx[np.argsort(t[idx], kind="stable")]
        acc, last, cur = 0.0, None, []
        for i in idx:
            if cur and (acc + tint[i] > params.max_on_time_s + 1e-9 or t[i] - last > params.max_gap_s):
                starts.append(cur)
                cur, acc = [], 0.0
            cur.append(i)
            acc += tint[i]
            last = t[i]
        if cur:
            starts.append(cur)
    for g, members in enumerate(sorted(starts, key=lambda mem: t[mem[0]])):
        gid[members] = g
    return gid


def position_keys(dlam, dbet, *, tol_arcmin=0.5):
    """Integer label (n,) per MAP pointing offset: offsets rounded to a tol_arcmin grid."""
    q = np.stack([np.rint(np.asarray(dlam, float) / tol_arcmin),
                  np.rint(np.asarray(dbet, float) / tol_arcmin)], axis=1)
    _, labels = np.unique(q, axis=0, return_inverse=True)
    return labels.reshape(-1)


HALF_BANDS = {h: tuple(b for b in sorted(BANDS, key=lambda b: b.sideband != "LSB") if b.half == h)
              for h in ("490", "550")}
STATS = ("n_scans", "on_time", "time_start", "time_mid", "time_end", "roll", "dlam", "dbet", "crpix",
         "freq_ref", "cdelt_freq", "vlsr_ref", "cdelt_vel", "imagfreq", "max_shift", "mean_shift")


@dataclass(frozen=True)
class CoaddStepParams:
    """Coadd options: the kernel's CoaddParams (max ON time [s], gap [s]), MAP position
    tolerance [arcmin], whether to make the 'total' coadds."""

    kernel: CoaddParams = field(default_factory=CoaddParams)
    position_tol_arcmin: float = 0.5
    totals: bool = True


def plan_groups(t_on, int_on, dlam, dbet, mode, params=CoaddStepParams()):
    """Coadd groups of one segment's pairs (eager, metadata only).

    Returns (pos (m,) position index, groups: list of (kind, position, member index array)),
    nominal groups first in time order, then one 'total' per position."""
    pos = (position_keys(dlam, dbet, tol_arcmin=params.position_tol_arcmin) if mode == "MAP"
           else np.zeros(t_on.size, np.int64))
    gid = group_coadds(t_on, int_on, keys=pos, params=params.kernel)
    groups = [("nominal", int(pos[gid == g][0]), np.flatnonzero(gid == g)) for g in range(gid.max() + 1)]
    if params.totals:
        groups += [("total", int(p), np.flatnonzero(pos == p)) for p in np.unique(pos)]
    return pos, groups


def band_offsets(sp, disp, band):
    """Fractional channel offsets (m,) of the band's rest line for every pair of segment sp
    (spacecraft Doppler + F0 drift with TAOS), relative to the reference dispersion disp (3,)
    (F0 [Hz], D1 [Hz/chan], D2 [Hz/chan^2]). Opposite signs for USB and LSB; the shift that
    undoes it is -round(offset)."""
    sgn = 1.0 if band.sideband == "USB" else -1.0
    lo = sp.lofreq[0 if band.half == "490" else 1]
    d_ref = Dispersion(*disp)
    f0_i = disp[0] + sp.df0_dtaos * (sp.taos_on - sp.taos_ref)
    d_i = Dispersion(f0_i, disp[1], disp[2])
    nu = band.rest_freq * (1.0 - sp.v_sc / C_KMS)
    return d_i.channel(sgn * (nu - lo)) - d_ref.channel(sgn * (band.rest_freq - lo))


def lsrk_axis(sp, disp, band, rbar, v_geo):
    """Linear LSRK axis of one coadd of segment sp: (c_ref, the 0-based reference channel;
    freq_ref [Hz], the LSRK frequency there; cdelt [Hz/channel]) and the fractional coadd
    channel (n_chan,) of every grid channel. disp (3,): the dispersion (F0, D1, D2) at the
    reference TAOS; rbar: mean fractional residual of the integer shifts [channel]; v_geo:
    geocentre velocity relative to the LSRK [km/s]."""
    sgn = 1.0 if band.sideband == "USB" else -1.0
    lo = sp.lofreq[0 if band.half == "490" else 1]
    d = Dispersion(*disp)
    nu0 = band.rest_freq
    dnu = nu0 * v_geo / C_KMS  # f_lsrk = nu_geo + dnu
    nu_line = nu0 * (1.0 - (sp.vsource + v_geo) / C_KMS)
    c_line = float(d.channel(sgn * (nu_line - lo))) + rbar
    c_ref = int(np.clip(np.rint(c_line), 0, N_CHAN - 1))
    f_ref = lo + sgn * float(d.if_freq(c_ref - rbar)) + dnu
    cdelt = sgn * float(d.slope(c_ref - rbar))
    k = np.arange(N_CHAN)
    nu_g = f_ref + cdelt * (k - c_ref) - dnu
    c_out = d.channel(sgn * (nu_g - lo)) + rbar
    return c_ref, f_ref, cdelt, c_out


def coadd_group(sw, w, off, mode):
    """Shift-and-add of one group's used pairs: sw (m, n_chan), weights w (m,), fractional
    offsets (m,). Returns (coadd, weight sum, coverage, shifts (m,), rbar). CHOP_NOD averages first."""
    if mode == "CHOP_NOD":
        ok = np.isfinite(sw)
        ww = np.where(ok, w[:, None], 0.0)
        ws = ww.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(ws > 0, np.sum(np.where(ok, sw, 0.0) * ww, axis=0) / ws, np.nan)
        mo = float(np.average(off, weights=w))
        s = int(-np.rint(mo))
        c, _, cov, _ = shift_and_add(avg[None, :], np.array([s]))
        src = np.clip(np.arange(N_CHAN) - s, 0, N_CHAN - 1)
        cov = cov * ok.sum(axis=0)[src]
        return c, np.where(cov > 0, ws[src], 0.0), cov.astype(float), np.full(off.size, s), mo + s
    s = -np.rint(off).astype(np.int64)
    c, wsum, cov, _ = shift_and_add(sw, s, w)
    return c, wsum, cov.astype(float), s, float(np.average(off + s, weights=w))


def coadd_batch(switched, flags, disp, reason, batch, half, params=CoaddStepParams()):
    """Task body: every coadd row of one batch and half (plain numpy).

    Returns {'spec' (rows, n_chan) float32 (switched units, LSRK grid), 'weight' (rows, n_chan)
    float32 (ON scans per channel), 'stats' (rows, len(STATS)) float64}."""
    rows = batch.rows[half]
    spec = np.full((len(rows), N_CHAN), np.nan, np.float32)
    weight = np.zeros((len(rows), N_CHAN), np.float32)
    stats = np.full((len(rows), len(STATS)), np.nan)
    stats[:, 0] = 0
    sw_all = np.asarray(switched)
    fl_all = np.asarray(flags)
    cache, sums = {}, {}
    total_of = {(j, sp.groups[g][1]): g for j, sp in enumerate(batch.segs)
                for g in range(len(sp.groups)) if sp.groups[g][0] == "total"}
    for r, (j, g, bname) in enumerate(rows):
        sp = batch.segs[j]
        if reason[j]:
            continue
        band = next(b for b in BANDS if b.name == bname)
        kind, _, members = sp.groups[g]
        a = sp.p0 - batch.p0
        used = members[fl_all[a + members] == 0]
        if used.size == 0:
            continue
        key = (j, bname)
        if key not in cache:
            cache[key] = band_offsets(sp, disp[j], band)
        off = cache[key][used]
        w = 1.0 / sp.sigma[used] ** 2
        if kind == "total" and sp.obsmode != "CHOP_NOD" and (j, bname, g) in sums:
            # the total is the weighted sum of its nominal coadds (same per-pair shifts)
            num, wsum, cov, rw, wtot, smax, sw_ = sums[(j, bname, g)]
            with np.errstate(invalid="ignore", divide="ignore"):
                c = np.where(wsum > 0, num / wsum, np.nan)
            rbar, smean = rw / wtot, sw_ / wtot
        else:
            c, wsum, cov, s, rbar = coadd_group(sw_all[a + used], w, off, sp.obsmode)
            smax, smean = float(np.max(np.abs(s))), float(np.average(s, weights=w))
            tg = total_of.get((j, sp.groups[g][1])) if kind == "nominal" and sp.obsmode != "CHOP_NOD" else None
            if tg is not None:
                acc = sums.setdefault((j, bname, tg), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
                acc[0] = acc[0] + np.nan_to_num(c) * wsum
                acc[1] = acc[1] + wsum
                acc[2] = acc[2] + cov
                acc[3] += float(np.sum((off + s) * w))
                acc[4] += float(np.sum(w))
                acc[5] = max(acc[5], smax)
                acc[6] += float(np.sum(s * w))
        t_mid = float(np.mean(sp.t_on[used]))
        v_geo = (float(np.interp(t_mid, sp.vgeo_t, sp.vgeo_v)) if sp.vgeo_t is not None
                 else float(geo_lsrk_velocity(t_mid, sp.ra, sp.dec)))
        c_ref, f_ref, cdelt, c_out = lsrk_axis(sp, disp[j], band, rbar, v_geo)
        grid = np.arange(N_CHAN)
        spec[r] = np.interp(c_out, grid, c, left=np.nan, right=np.nan)
        weight[r] = np.nan_to_num(np.interp(c_out, grid, cov, left=0.0, right=0.0))
        nu0 = band.rest_freq
        lo = sp.lofreq[0 if half == "490" else 1]
        nu_g_ref = f_ref - nu0 * v_geo / C_KMS
        vlsr_ref = C_KMS * (1.0 - f_ref / nu0)
        imag = (2.0 * lo - nu_g_ref) / (1.0 - (vlsr_ref + v_geo) / C_KMS)
        half_t = sp.int_on[used] / 2.0 / 86400.0
        stats[r] = (used.size, float(np.sum(sp.int_on[used])), float(np.min(sp.t_on[used] - half_t)), t_mid,
                    float(np.max(sp.t_on[used] + half_t)), _mean_angle(sp.roll_on[used]),
                    float(np.mean(sp.dlam_on[used])), float(np.mean(sp.dbet_on[used])), c_ref + 1.0, f_ref,
                    cdelt, vlsr_ref, -C_KMS * cdelt / nu0, imag, smax, smean)
    return {"spec": spec, "weight": weight, "stats": stats}


def _mean_angle(deg):
    a = np.radians(deg)
    return float(np.degrees(np.arctan2(np.mean(np.sin(a)), np.mean(np.cos(a)))) % 360.0)
