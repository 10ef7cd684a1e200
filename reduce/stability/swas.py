"""SWAS instrument stability over a store that may only have been ingested (issue 10): lazy
reductions per segment and per mission day, and :func:`study`, which computes them in one pass.

Everything is measured with the level-1 code itself, never a copy of it: per segment the
level-1 planning (:func:`reduce.swas.pipeline.plan_segments`: checking, pairing, stable ZEROs,
the CONT Y-factor Tsys) runs inside the task on the segment's rows, then the level-1 kernels
:func:`reduce.swas.kernels.pair.pair_segment` (switched spectra, COMB dispersion),
:func:`reduce.swas.kernels.flag.flag_segment` (noise / spike / baseline statistics) and
:func:`reduce.swas.kernels.comb.fit_comb` (each COMB set's lines), so the numbers are those
the level-1 reduction would compute on the same store. Where the store already holds level-1
results of a segment, done with the same inputs and parameters (the runner's unit records, as a
level-1 rerun checks them), its COMB dispersion and its pairs' flags and noise statistics are read
from the level-1 tables (one task per level-1 unit) instead of being computed again: the same numbers,
since the same kernels wrote them; the COMB sets, zero levels, gains and Allan variances, which level 1
does not keep, are still computed from the scans.

Graph: one read task per AOS store chunk and half and per metadata chunk; one task per TASK_ROWS
store rows (cut from those reads, plus MAX_SEGMENT_SCANS rows beyond) reduces the segments whose
first scan lies in its rows and in the window; housekeeping (LO and mixer temperatures) is summed
per segment by one task per HK chunk; one assembly task turns the results into the arrays of :func:`segment_dataset`.
Building the graph reads only the eager indexes (``time``, ``segment``, ``hk_time``).

Quantities per segment and receiver (490, 550 GHz): DSB Y-factor Tsys [K]; ON-OFF noise over the
radiometer-equation noise (median over pairs of the flagging step's 'noise' statistic); ZERO
level [counts] and OFF-ZERO [counts] (mean over the channels inside the edges) and the gain
(OFF-ZERO)/Tsys [counts/K]; the COMB dispersion F0 [Hz] (at the ON scans' mean TAOS), D1
[Hz/channel], D2 [Hz/channel^2], comb-line positions per COMB set [channel] with the set's TAOS
[deg C]; LO and mixer temperatures [K] (HK means); pairs tested and flagged for spikes and
baseline; Allan variances (total power and spectroscopic, reduce.stability.kernels.allan) of the
longest continuous OFF or ZERO run (>= MIN_ALLAN_SCANS scans) with their Allan times [s].
"""

from __future__ import annotations

import traceback
import uuid
from functools import partial

import dask
import numpy as np
import xarray as xr

from reduce.errors import CalibrationError
from reduce.stability.kernels import allan as K_allan
from reduce.stability.kernels import swas_series as K
from reduce.swas.kernels import comb as K_comb
from reduce.swas.kernels.flag import flag_segment
from reduce.swas.kernels.pair import pair_segment
from reduce.swas.physics import EDGE_CHANNELS, HALVES, N_CHAN
from reduce.swas.pipeline import META_VARS, SEG_VARS, Params, plan_segments
from reduce.swas.steps._graph import outputs, task

MAX_SEGMENT_SCANS = 4096  #: longest segment a task can read (ICD: up to ~1350 scans)
TASK_ROWS = 4096  #: store rows whose segments one task reduces
MIN_ALLAN_SCANS = 64  #: shortest continuous OFF/ZERO run given an Allan variance
N_LEVELS = 16  #: Allan block sizes m = 2**level scans
N_SETS = 8  #: COMB sets kept per segment
N_LINES = 16  #: comb lines kept per set
HK_VARS = ("tlo1", "tlo2", "tmix1", "tmix2")
RUN_KINDS = {-1: "", 1: "OFF", 2: "ZERO"}
INNER = slice(EDGE_CHANNELS, N_CHAN - EDGE_CHANNELS)

# name: (dims after 'segment', dtype, fill, attrs)
FIELDS = {
    "status": ((), "<U10", "outside", {"long_name": "ok | failed | excluded | outside (not in the window)"}),
    "reason": ((), "<U400", "", {"long_name": "why the segment could not be calibrated ('' = ok)"}),
    "object": ((), "<U80", "", {}),
    "obsmode": ((), "<U12", "", {}),
    "mjd": ((), "f8", np.nan, {"units": "d", "long_name": "MJD (UTC) of the first scan"}),
    "n_scans": ((), "i8", 0, {}),
    "tsys": (("receiver",), "f8", np.nan, {"units": "K", "long_name": "DSB Y-factor system temperature"}),
    "tsys_err": (("receiver",), "f8", np.nan, {"units": "K"}),
    "noise_ratio": (("receiver",), "f8", np.nan,
                    {"units": "1", "long_name": "ON-OFF channel noise / radiometer-equation noise (median)"}),
    "n_pairs": (("receiver",), "i8", 0, {}),
    "pairs_tested": (("receiver",), "i8", 0, {"long_name": "usable ON/OFF pairs judged by the flagging"}),
    "pairs_spikes": (("receiver",), "i8", 0, {"long_name": "pairs flagged for spikes"}),
    "pairs_baseline": (("receiver",), "i8", 0, {"long_name": "pairs flagged for baseline excursions"}),
    "zero": (("receiver",), "f8", np.nan, {"units": "count", "long_name": "AOS ZERO level (inner channels)"}),
    "off_zero": (("receiver",), "f8", np.nan, {"units": "count", "long_name": "AOS OFF - ZERO (inner channels)"}),
    "gain": (("receiver",), "f8", np.nan, {"units": "count/K", "long_name": "(OFF - ZERO) / Tsys"}),
    "disp": (("receiver", "coef"), "f8", np.nan,
             {"units": "Hz, Hz/channel, Hz/channel^2", "long_name": "F0 (at taos_ref), D1, D2"}),
    "comb_rms": (("receiver",), "f8", np.nan, {"units": "channel"}),
    "comb_nlines": (("receiver",), "i8", 0, {}),
    "taos_ref": ((), "f8", np.nan, {"units": "Celsius", "long_name": "mean TAOS of the ON scans"}),
    "thot": ((), "f8", np.nan, {"units": "K", "long_name": "mean hot-load temperature"}),
    "set_mjd": (("receiver", "comb_set"), "f8", np.nan, {"units": "d"}),
    "set_taos": (("receiver", "comb_set"), "f8", np.nan, {"units": "Celsius"}),
    "set_disp": (("receiver", "comb_set", "coef"), "f8", np.nan,
                 {"units": "Hz, Hz/channel, Hz/channel^2", "long_name": "COMB set's own fit (F0 at its TAOS)"}),
    "line_order": (("receiver", "comb_set", "comb_line"), "i8", -1, {"long_name": "comb order n (IF = n x 100 MHz)"}),
    "line_centre": (("receiver", "comb_set", "comb_line"), "f8", np.nan, {"units": "channel"}),
    "line_centre_err": (("receiver", "comb_set", "comb_line"), "f8", np.nan, {"units": "channel"}),
    "allan_run": ((), "<U4", "", {"long_name": "scan type of the Allan run (OFF, ZERO; '' none)"}),
    "allan_scans": ((), "i8", 0, {}),
    "allan_dt": ((), "f8", np.nan, {"units": "s", "long_name": "scan spacing of the Allan run"}),
    "allan_tp": (("receiver", "level"), "f8", np.nan, {"units": "1", "long_name": "total-power Allan variance"}),
    "allan_tp_err": (("receiver", "level"), "f8", np.nan, {"units": "1"}),
    "allan_spec": (("receiver", "level"), "f8", np.nan, {"units": "1", "long_name": "spectroscopic Allan variance"}),
    "allan_spec_err": (("receiver", "level"), "f8", np.nan, {"units": "1"}),
    "allan_time_tp": (("receiver",), "f8", np.nan, {"units": "s"}),
    "allan_time_spec": (("receiver",), "f8", np.nan, {"units": "s"}),
    "from_level1": ((), "?", False, {"long_name": "pairing, COMB dispersion and flagging read from the store's "
                                                  "level-1 results"}),
}
HK_FIELDS = {"t_lo": ("K", "LO temperature (HK mean)"), "t_mix": ("K", "mixer temperature (HK mean)")}
DIM_SIZE = {"receiver": 2, "coef": 3, "comb_set": N_SETS, "comb_line": N_LINES, "level": N_LEVELS}


def _shape(dims):
    return tuple(DIM_SIZE[d] for d in dims)


def _blank(n):
    return {k: np.full((n,) + _shape(d), f, dtype=dt) for k, (d, dt, f, _) in FIELDS.items()}


# ----------------------------------------------------------------------------- task bodies

def _comb_sets(x, sp, half, zero, params):
    """Each COMB set's own fit (reduce.swas.kernels.comb.fit_comb, F0 at the set's TAOS), a list of
    (mean TAOS [deg C], (f0 [Hz], d1 [Hz/ch], d2 [Hz/ch^2]), orders n, centres [ch], errors [ch], set rows)."""
    out = []
    for s in sp.comb_sets[:N_SETS]:
        spec, sat = K_comb.comb_spectrum(x[s], zero, quality=sp.quality[s], params=params.pair.comb)
        try:
            cf = K_comb.fit_comb(spec, sat, half=half, params=params.pair.comb)
        except CalibrationError:
            continue
        d = cf.dispersion
        u = np.flatnonzero(cf.used)[:N_LINES]
        out.append((float(np.mean(sp.taos[s])), (d.f0, d.d1, d.d2), cf.n[u], cf.centre[u], cf.centre_err[u], s))
    return out


def _allan(rec, j, x_by_half, st, usable, t, zero_by_half):
    """Allan variances of the longest continuous OFF/ZERO run of one segment (local rows)."""
    kind, a, b = K.longest_run(st, usable, t)
    if kind < 0 or b - a < MIN_ALLAN_SCANS:
        return
    dt = float(np.median(np.diff(t[a:b])) * 86400.0)
    m = K_allan.allan_levels(b - a, max_levels=N_LEVELS)
    tau = m * dt
    rec["allan_run"][j], rec["allan_scans"][j], rec["allan_dt"][j] = RUN_KINDS[kind], b - a, dt
    for k, half in enumerate(HALVES):
        x = x_by_half[half][a:b]
        zero = zero_by_half.get(half) if kind == 1 else None
        tp, tpe = K_allan.total_power_allan(x, m, zero=zero, channels=INNER)
        sp_, spe = K_allan.spectroscopic_allan(x, m, zero=zero, channels=INNER)
        n = m.size
        rec["allan_tp"][j, k, :n], rec["allan_tp_err"][j, k, :n] = tp, tpe
        rec["allan_spec"][j, k, :n], rec["allan_spec_err"][j, k, :n] = sp_, spe
        rec["allan_time_tp"][j, k] = K_allan.allan_time(tau, tp, tpe)
        rec["allan_time_spec"][j, k] = K_allan.allan_time(tau, sp_, spe)


def _pair_fields(rec, j, k, flags, noise_stat, crit):
    """n_pairs, noise_ratio and the flag counts of row j, receiver k, from the flagging step's
    flags (m,) and 'noise' statistic (m,) (None: no noise criterion)."""
    rec["n_pairs"][j, k] = len(flags)
    if noise_stat is not None:
        rec["noise_ratio"][j, k] = K.noise_ratio(noise_stat, flags)[0]
    tested, (spk, base) = K.flag_counts(flags, crit)
    rec["pairs_tested"][j, k], rec["pairs_spikes"][j, k], rec["pairs_baseline"][j, k] = tested, spk, base


def _segment(rec, j, sp, x_by_half, t, params, from_level1=False):
    """Fill row j of rec from one planned segment (SegmentPlan sp; x_by_half and t [MJD]: the rows
    of the task, local row indices as in sp). ``from_level1``: the store's level-1 results stand in
    for the pairing, COMB dispersion and flagging (filled in by :func:`_assemble`), not redone."""
    crit = params.flag.kernel.criteria
    i_noise = crit.index("noise") if "noise" in crit else None
    rec["tsys"][j], rec["tsys_err"][j] = sp.tsys, sp.tsys_err
    rec["taos_ref"][j], rec["thot"][j] = sp.taos_ref, float(np.mean(sp.thot))
    why = []
    for k, half in enumerate(HALVES):
        x = x_by_half[half][sp.r0: sp.r1].astype(np.float64)
        ts = t[sp.r0: sp.r1]
        zero = x[sp.zero].mean(axis=0)
        offs = np.unique(sp.off[sp.off >= 0])
        rec["zero"][j, k] = float(np.mean(zero[INNER]))
        rec["off_zero"][j, k] = float(np.mean(x[offs][:, INNER] - zero[INNER]))
        rec["gain"][j, k] = rec["off_zero"][j, k] / sp.tsys[k]
        if not from_level1:
            try:
                sw, disp, cres, _, _ = pair_segment(x, sp, half, params.pair)
            except CalibrationError as e:
                why.append(str(e))
                continue
            rec["disp"][j, k], rec["comb_rms"][j, k], rec["comb_nlines"][j, k] = disp, cres[0], int(cres[1])
            flags, stats = flag_segment(sw, sp.sigma, sp.dilate, params.flag)
            _pair_fields(rec, j, k, flags, stats[:, i_noise] if i_noise is not None else None, crit)
        for i, (taos, d, n, c, e, rows) in enumerate(_comb_sets(x, sp, half, zero, params)):
            rec["set_taos"][j, k, i], rec["set_disp"][j, k, i] = taos, d
            rec["set_mjd"][j, k, i] = float(np.mean(ts[rows]))
            rec["line_order"][j, k, i, :n.size], rec["line_centre"][j, k, i, :n.size] = n, c
            rec["line_centre_err"][j, k, i, :n.size] = e
    return "; ".join(why)


def _cut(blocks, first, lo, hi):
    """Rows [lo, hi) (store rows) cut out of consecutive blocks whose first row is ``first``."""
    out, pos = [], first
    for blk in blocks:
        n = blk.shape[0]
        a, b = max(lo - pos, 0), min(hi - pos, n)
        if b > a:
            out.append(np.asarray(blk[a:b]))
        pos += n
    return out[0] if len(out) == 1 else np.concatenate(out)


def _chunk_body(table, a490, a550, metas, *, aos_first, meta_first, rows, own, start, stop, cand, params,
                level1_ids=frozenset()):
    """Task body: the segments (candidate positions ``cand``) whose first scan lies in store rows
    ``own`` and in [start, stop), from the store rows ``rows`` = (own start, at most
    MAX_SEGMENT_SCANS past own's end). a490/a550: AOS blocks from row aos_first; metas: metadata
    blocks (META_VARS and ``time`` [MJD]) from row meta_first; level1_ids: segment ids whose
    pairing, COMB dispersion and flagging come from the store's level-1 results. Returns
    {"pos": index among the candidates (s,), field: (s, ...)} (see FIELDS). ``cand``: sorted store
    positions (segment dim) of the candidate segments."""
    fs, ns = np.asarray(table["first_scan"]), np.asarray(table["nscans"])
    cand = np.asarray(cand, np.int64)
    pos = cand[(fs[cand] >= own[0]) & (fs[cand] < own[1])] if fs.size else cand[:0]
    if pos.size == 0:
        rec = _blank(0)
        rec["pos"] = np.zeros(0, np.int64)
        return rec
    x = {"490": _cut(a490, aos_first, *rows), "550": _cut(a550, aos_first, *rows)}
    n_rows = x["490"].shape[0]
    meta = {v: _cut([m[v] for m in metas], meta_first, *rows) for v in metas[0]}
    time = meta["time"]
    aos_first = rows[0]   # from here on: local row = store row - rows[0]
    pos = [int(p) for p in pos if K.in_window(time[fs[p] - aos_first], start, stop)]
    rec = _blank(len(pos))
    rec["pos"] = np.searchsorted(cand, np.asarray(pos, np.int64))   # index among the candidates
    if not pos:
        return rec
    rows_ok = []
    for j, p in enumerate(pos):
        a = int(fs[p]) - aos_first
        rec["object"][j], rec["obsmode"][j] = str(table["object"][p]), str(table["obsmode"][p])
        rec["mjd"][j], rec["n_scans"][j] = time[a], int(ns[p])
        if a + int(ns[p]) > n_rows:
            rec["status"][j] = "failed"
            rec["reason"][j] = (f"segment has {int(ns[p])} scans, more than a stability task reads "
                                f"({MAX_SEGMENT_SCANS})")
        else:
            rows_ok.append(j)
    if not rows_ok:
        return rec
    coords = {"time": ("time", time)}
    dims = {"scvel": ("time", "xyz"), "cont": ("time", "receiver")}
    data = {v: (dims.get(v, ("time",)), meta[v]) for v in META_VARS if v != "time"}
    data["aos490"] = (("time", "channel"), x["490"])
    sel = [pos[j] for j in rows_ok]
    for v in SEG_VARS:
        data[v] = (("segment",), np.asarray(table[v])[sel])
    ds = xr.Dataset(data, coords=coords)
    plan = plan_segments(ds, params, row0=aos_first)
    by_seg = {sp.segment: sp for sp in plan.segs}
    seg_ids = np.asarray(table["segment"])
    st_all = meta["scantype"].astype(int)
    for j in rows_ok:
        p = pos[j]
        sid = int(seg_ids[p])
        a, b = int(fs[p]) - aos_first, int(fs[p]) - aos_first + int(ns[p])
        sp = by_seg.get(sid)
        try:
            if sp is None:
                rep = plan.reports.get(sid)
                rec["status"][j] = rep.status if rep is not None else "failed"
                rec["reason"][j] = rep.reason if rep is not None else "not planned"
                zero = {}
            else:
                why = _segment(rec, j, sp, x, time, params, from_level1=sid in level1_ids)
                rec["status"][j] = "failed" if why else "ok"
                rec["reason"][j] = why
                zero = {h: x[h][a:b][sp.zero].astype(float).mean(axis=0) for h in HALVES}
            usable = plan.scan_flags[a:b] == 0
            st = st_all[a:b]
            if not zero and np.any(usable & (st == K.SCAN_CODES["ZERO"])):
                z = usable & (st == K.SCAN_CODES["ZERO"])
                zero = {h: x[h][a:b][z].astype(float).mean(axis=0) for h in HALVES}
            _allan(rec, j, {h: x[h][a:b] for h in HALVES}, st, usable, time[a:b], zero)
        except Exception as e:  # noqa: BLE001 - one bad segment must not stop the others
            rec["status"][j] = "failed"
            rec["reason"][j] = f"{type(e).__name__}: {e} " + traceback.format_exc(limit=1)[-200:]
    return rec


def _hk_body(seg_id, *values, ids):
    """Task body: per-candidate sums and counts of the HK values (see K.segment_sums)."""
    return K.segment_sums(np.asarray(seg_id), np.stack([np.asarray(v, float) for v in values], axis=1), ids)


def _level1_body(store, pairs_slot, segments_slot, *, crit):
    """Task body: one level-1 unit's results per segment, read from its slots (start, rows) of the
    store's level-1 ``pairs`` and ``segments`` tables: {"segment": ids (s,), "reason_l1": (s, 2) str,
    "disp", "comb_rms", "comb_nlines", "n_pairs", "noise_ratio", "pairs_tested", "pairs_spikes",
    "pairs_baseline": (s, 2[, 3]) as in FIELDS}."""
    from reduce.runner import read_slot
    from reduce.swas.pipeline import TABLES
    spec = {t.name: t for t in TABLES}
    seg = read_slot(store, spec["segments"], *segments_slot)
    pairs = read_slot(store, spec["pairs"], *pairs_slot)
    ids = seg["seg_segment"].values.astype(np.int64)
    rec = _blank(ids.size)
    rec["segment"] = ids
    rec["reason_l1"] = np.full((ids.size, 2), "", dtype=object)
    i_noise = crit.index("noise") if "noise" in crit else None
    pseg = pairs["pair_segment"].values.astype(np.int64)
    for j, sid in enumerate(ids):
        rows = pseg == sid
        for k, h in enumerate(HALVES):
            why = str(seg[f"reason{h}"].values[j])
            if why:
                rec["reason_l1"][j, k] = why
                continue
            rec["disp"][j, k] = seg[f"disp{h}"].values[j]
            rec["comb_rms"][j, k] = seg[f"comb_rms{h}"].values[j]
            rec["comb_nlines"][j, k] = int(seg[f"comb_nlines{h}"].values[j])
            stat = pairs[f"flagstat{h}"].values[rows]
            _pair_fields(rec, j, k, pairs[f"flag{h}"].values[rows],
                         stat[:, i_noise] if i_noise is not None else None, crit)
    return rec


LEVEL1_FIELDS = ("disp", "comb_rms", "comb_nlines", "n_pairs", "noise_ratio", "pairs_tested", "pairs_spikes",
                 "pairs_baseline")


def _assemble(parts, hk_parts, level1_parts=(), *, n, seg_ids=None):
    """Task body: the per-candidate arrays (n, ...) of FIELDS and HK_FIELDS from the chunk results
    (and the level-1 units' results for the candidates with ids ``seg_ids`` (n,))."""
    rec = _blank(n)
    for part in parts:
        pos = part["pos"]
        if pos.size:
            for k in FIELDS:
                rec[k][pos] = part[k]
    where = {int(v): i for i, v in enumerate(seg_ids)} if level1_parts else {}
    for part in level1_parts:
        for j, sid in enumerate(part["segment"]):
            i = where.get(int(sid))
            if i is None or rec["status"][i] != "ok":
                continue
            for k in LEVEL1_FIELDS:
                rec[k][i] = part[k][j]
            rec["from_level1"][i] = True
            why = "; ".join(r for r in part["reason_l1"][j] if r)
            if why:
                rec["status"][i], rec["reason"][i] = "failed", why
    sums = np.sum(hk_parts, axis=0) if len(hk_parts) else np.zeros((n, 2 * len(HK_VARS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[:, : len(HK_VARS)] / sums[:, len(HK_VARS):]
    rec["t_lo"] = mean[:, 0:2]
    rec["t_mix"] = mean[:, 2:4]
    return rec


# ----------------------------------------------------------------------------- lazy graph

def _open(store):
    """(root group with its indexes, root group without (every variable lazy), hk group or None)."""
    from reduce.io.store import Store
    s = Store(store)
    ds = s.open_group()
    lazy = s.open_group(indexes=False, validate=False)
    try:
        hk = s.open_group("hk")
    except Exception:  # noqa: BLE001 - a store without HK still gives everything else
        hk = None
    return ds, lazy, hk


def _read_tasks(arr, name, token):
    """One read task per block along axis 0 (shared by every user) and the block row edges."""
    if not hasattr(arr, "dask"):
        arr = dask.array.from_array(np.asarray(arr), chunks=(max(arr.shape[0], 1),) + arr.shape[1:])
    if arr.ndim > 1 and arr.numblocks[1] != 1:
        arr = arr.rechunk({1: -1})
    edges = np.concatenate([[0], np.cumsum(arr.chunks[0])]).astype(np.int64)
    blocks = arr.to_delayed(optimize_graph=False).reshape(-1)
    return [task(np.asarray, f"{name}-read-{token}-{i}", b) for i, b in enumerate(blocks)], edges


def _bundle(*arrays, names):
    return dict(zip(names, (np.asarray(a) for a in arrays)))


def _concat_bundle(*lists, names):
    return {k: np.concatenate([np.asarray(a) for a in blocks]) for k, blocks in zip(names, lists)}


def level1_units(store, params):
    """The store's level-1 units whose results the study takes as they are: done, with the same
    inputs (segment files' SHA-256, rows) and the same parameters as the level-1 pipeline with
    ``params`` would have now. Returns ([(pairs slot (start, rows), segments slot (start, rows))
    per unit], their segment ids (int64), the store rows of those segments' first scans, [the
    segment ids of each unit]). Reads the runner's unit records and units group (one small row per
    unit) and the level-1 unit plan (per-segment ids, rows, SHA-256), as a level-1 rerun does."""
    from reduce.runner import open_units, read_records
    from reduce.swas.pipeline import TABLES, SwasLevel1
    none = ([], np.zeros(0, np.int64), np.zeros(0, np.int64), [])
    pipe = SwasLevel1(params)
    records = read_records(store, pipe.name)
    if not records:
        return none
    units = open_units(store, TABLES[0])
    if units is None:
        return none
    phash = pipe.params_hash()
    row = {str(k): i for i, k in enumerate(units["unit_key"].values)}
    seg_index = first = None
    slots, seg_out, first_out = [], [], []
    for unit in pipe.units(store):
        rec = records.get(unit.key)
        if (rec is None or rec.get("status") != "done" or rec.get("input_hash") != unit.input_hash
                or rec.get("params_hash") != phash or unit.key not in row):
            continue
        if seg_index is None:
            from reduce.io.store import Store
            root = Store(store).open_group(indexes=False)
            seg_index, first = (np.asarray(v) for v in dask.compute(root["segment"].data, root["first_scan"].data))
        sids = seg_index[unit.info["segments"]].astype(np.int64)
        i = row[unit.key]
        slot = lambda t: (int(units[f"{t}_start"].values[i]), int(units[f"{t}_count"].values[i]))
        if slot("segments")[1] == 0:
            continue
        slots.append((slot("pairs"), slot("segments")))
        seg_out.append(sids)
        first_out.append(first[unit.info["segments"]].astype(np.int64))
    if not slots:
        return none
    return slots, np.concatenate(seg_out), np.concatenate(first_out), seg_out


def _level1_subset(level1, ids):
    """:func:`level1_units`' (slots, segment ids, first rows) of the units holding one of ``ids``."""
    slots, sids, first, per_unit = level1
    units = [i for i, u in enumerate(per_unit) if np.isin(u, ids).any()]
    if not units:
        return [], sids[:0], first[:0]
    bounds = np.concatenate([[0], np.cumsum([len(u) for u in per_unit])])
    idx = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in units])
    return [slots[i] for i in units], sids[idx], first[idx]


def segment_dataset(store, *, start=None, stop=None, params=None, level1=None, opened=None):
    """Lazy per-segment stability quantities (dask), dims (segment, receiver, coef, comb_set,
    comb_line, level); variables FIELDS (+ t_lo, t_mix (segment, receiver) [K]), units in attrs.

    ``segment``: the store's segment ids whose mission day can hold a first scan in
    [start, stop) (MJD; None = open); ``status`` says for each which ones were reduced ('ok'),
    could not be ('failed', with ``reason``), are special modes ('excluded') or have their first
    scan outside the window ('outside'). ``store``: path of a SWAS store (only ingested is
    enough). Nothing is computed: the eager indexes time, segment and hk_time are read, and when the
    store has level-1 unit records, the per-segment variables of the level-1 unit plan (as a rerun of
    level 1 reads them: ids, first rows, SHA-256); ``level1``: :func:`level1_units` of the store,
    when the caller has it already (a study in batches reads the unit records once); ``opened``:
    :func:`_open` of the store, likewise (its eager indexes are read once)."""
    params = params or Params()
    ds, lazy, hk = opened if opened is not None else _open(store)
    token = uuid.uuid4().hex[:10]
    seg_ids = np.asarray(ds.indexes["segment"]) if "segment" in ds.indexes else None
    if seg_ids is None:
        raise ValueError("segment_dataset: the store must be opened with its indexes")
    cand = np.flatnonzero(K.day_candidates(seg_ids, start, stop))
    n = cand.size
    level1_slots, level1_ids, level1_first = _level1_subset(level1 if level1 is not None
                                                            else level1_units(store, params), seg_ids[cand])
    time = np.asarray(ds.indexes["time"]) if ds.sizes["time"] else np.zeros(0)   # eager: the window's rows
    aos = {h: _read_tasks(ds[f"aos{h}"].data, f"stab-aos{h}", token) for h in HALVES}
    edges = aos["490"][1]
    meta_names = [v for v in META_VARS if v != "time"] + ["time"]
    ref = ds[meta_names[0]].data
    rchunks = ref.chunks[0] if hasattr(ref, "chunks") and ref.chunks else (ds.sizes["time"],)
    meta_blocks = []
    for v in meta_names:
        a = lazy[v].data   # time too: lazy, so that no task carries a copy of the index
        if hasattr(a, "dask") and a.chunks[0] != rchunks:
            a = a.rechunk({0: rchunks})
        meta_blocks.append(_read_tasks(a, f"stab-{v}", token))
    medges = meta_blocks[0][1]
    metas = [task(partial(_bundle, names=meta_names), f"stab-meta-{token}-{i}", *[mb[0][i] for mb in meta_blocks])
             for i in range(len(medges) - 1)]
    table = task(partial(_concat_bundle, names=list(SEG_VARS)), f"stab-segtable-{token}",
                 *[_read_tasks(ds[v].data, f"stab-seg-{v}", token)[0] if ds.sizes["segment"] else [np.zeros(0)]
                   for v in SEG_VARS])
    # chunks holding rows in the window
    if time.size:
        inw = np.flatnonzero(K.in_window(time, start, stop))
    else:
        inw = np.zeros(0, np.int64)
    parts = []
    if inw.size and n:
        k0 = int(np.searchsorted(edges, inw[0], side="right") - 1)
        k1 = int(np.searchsorted(edges, inw[-1], side="right") - 1)
        a_lo = int(edges[k0]) + (int(inw[0]) - int(edges[k0])) // TASK_ROWS * TASK_ROWS
        for lo in range(a_lo, int(edges[k1 + 1]), TASK_ROWS):
            # one task per TASK_ROWS rows (several per store chunk: parallel, small); the chunk reads are shared
            hi = min(lo + TASK_ROWS, int(edges[-1]))
            rhi = min(hi + MAX_SEGMENT_SCANS, int(edges[-1]))
            ks = range(int(np.searchsorted(edges, lo, "right")) - 1, int(np.searchsorted(edges, rhi, "left")))
            mj = range(int(np.searchsorted(medges, lo, "right")) - 1, int(np.searchsorted(medges, rhi, "left")))
            fn = partial(_chunk_body, aos_first=int(edges[ks[0]]), meta_first=int(medges[mj[0]]), rows=(lo, rhi),
                         own=(lo, hi), start=start, stop=stop, cand=cand, params=params,
                         level1_ids=frozenset(int(v) for v in level1_ids[(level1_first >= lo) & (level1_first < hi)]))
            parts.append(task(fn, f"stab-swas-{token}-{lo}", table, [aos["490"][0][k] for k in ks],
                              [aos["550"][0][k] for k in ks], [metas[j] for j in mj]))
    hk_parts = []
    if hk is not None and hk.sizes.get("hk_time", 0) and n:
        ht = np.asarray(hk.indexes["hk_time"]) if "hk_time" in hk.indexes else None
        sid = hk["segment_id"].data
        blocks = [_read_tasks(hk[v].data.rechunk({0: sid.chunks[0]}) if hasattr(hk[v].data, "dask")
                              else hk[v].data, f"stab-hk-{v}", token) for v in ("segment_id",) + HK_VARS]
        hedges = blocks[0][1]
        for j in range(len(hedges) - 1):
            if ht is not None and (start is not None or stop is not None):
                tt = ht[hedges[j]: hedges[j + 1]]
                if not np.any(K.in_window(tt, None if start is None else start - 1.0,
                                          None if stop is None else stop + 1.0)):
                    continue
            hk_parts.append(task(partial(_hk_body, ids=seg_ids[cand]), f"stab-hk-{token}-{j}",
                                 *[b[0][j] for b in blocks]))
    asm = task(partial(_assemble, n=n, seg_ids=seg_ids[cand]), f"stab-swas-asm-{token}", parts, hk_parts,
               [task(partial(_level1_body, str(store), ps, ss, crit=tuple(params.flag.kernel.criteria)),
                     f"stab-swas-l1-{token}-{i}") for i, (ps, ss) in enumerate(level1_slots)])
    data = {}
    for k, (dims, dt, _, attrs) in FIELDS.items():
        arr = outputs([asm], k, [(n,) + _shape(dims)], dt, name="stab-swas")
        data[k] = (("segment",) + dims, arr, dict(attrs))
    for k, (units, long_name) in HK_FIELDS.items():
        data[k] = (("segment", "receiver"), outputs([asm], k, [(n, 2)], "f8", name="stab-swas"),
                   {"units": units, "long_name": long_name})
    out = xr.Dataset(data, coords={
        "segment": ("segment", seg_ids[cand].astype(np.int32)),
        "missday": ("segment", (seg_ids[cand] // 1000).astype(np.int32)),
        "receiver": ("receiver", np.array([490, 550], np.int16), {"units": "GHz"}),
        "level": ("level", np.arange(N_LEVELS), {"long_name": "Allan block size m = 2**level scans"}),
        "coef": ("coef", ["F0", "D1", "D2"])})
    out.attrs.update(instrument="SWAS", window=f"[{start}, {stop})", software_note=__doc__.split("\n")[0])
    return out


def daily_flag_rates(seg):
    """Lazy per-mission-day flag rates from :func:`segment_dataset`: pairs tested and flagged for
    spikes and baseline excursions per receiver, and their ratios (fraction of pairs), dims
    (missday, receiver); ``mjd`` the day's first scan [MJD]."""
    names = ["pairs_tested", "pairs_spikes", "pairs_baseline"]
    if seg.sizes["segment"] == 0:   # nothing in the window (xarray cannot group an empty dimension)
        empty = xr.Dataset({k: (("missday", "receiver"), np.zeros((0, 2), np.int64)) for k in names},
                           coords={"missday": np.zeros(0, np.int32), "receiver": seg["receiver"].values})
        return empty.assign(spike_rate=(("missday", "receiver"), np.zeros((0, 2)), {"units": "1"}),
                            baseline_rate=(("missday", "receiver"), np.zeros((0, 2)), {"units": "1"}),
                            mjd=("missday", np.zeros(0), {"units": "d"}))
    with xr.set_options(use_flox=False):   # flox's numba kernels take seconds to compile for a few sums
        counts = seg[names].groupby("missday").sum()
        mjd = seg["mjd"].groupby("missday").min()
    tested = counts["pairs_tested"].where(counts["pairs_tested"] > 0)
    return counts.assign(spike_rate=(counts["pairs_spikes"] / tested).assign_attrs(units="1"),
                         baseline_rate=(counts["pairs_baseline"] / tested).assign_attrs(units="1"),
                         mjd=mjd.assign_attrs(units="d"))


# ----------------------------------------------------------------------------- the study

SEGMENT_COLUMNS = ("segment", "object", "mjd", "tsys_490_K", "tsys_550_K", "noise_ratio_490", "noise_ratio_550")


def _tables(seg, day):
    """pandas tables from the computed Datasets (numpy)."""
    import pandas as pd

    ok = seg["status"].values == "ok"
    s = seg.isel(segment=np.flatnonzero(ok))
    col = {"segment": s["segment"].values.astype(np.int64), "object": s["object"].values.astype(str),
           "mjd": s["mjd"].values}
    for k, h in enumerate(HALVES):
        col[f"tsys_{h}_K"] = s["tsys"].values[:, k]
    for k, h in enumerate(HALVES):
        col[f"noise_ratio_{h}"] = s["noise_ratio"].values[:, k]
    col["obsmode"] = s["obsmode"].values.astype(str)
    col["missday"] = s["missday"].values.astype(np.int64)
    for k, h in enumerate(HALVES):
        col[f"tsys_err_{h}_K"] = s["tsys_err"].values[:, k]
        col[f"zero_{h}_counts"] = s["zero"].values[:, k]
        col[f"off_zero_{h}_counts"] = s["off_zero"].values[:, k]
        col[f"gain_{h}_counts_per_K"] = s["gain"].values[:, k]
        col[f"f0_{h}_Hz"] = s["disp"].values[:, k, 0]
        col[f"d1_{h}_Hz_per_ch"] = s["disp"].values[:, k, 1]
        col[f"d2_{h}_Hz_per_ch2"] = s["disp"].values[:, k, 2]
        col[f"comb_rms_{h}_ch"] = s["comb_rms"].values[:, k]
        col[f"comb_nlines_{h}"] = s["comb_nlines"].values[:, k]
        col[f"t_lo_{h}_K"] = s["t_lo"].values[:, k]
        col[f"t_mix_{h}_K"] = s["t_mix"].values[:, k]
        col[f"pairs_{h}"] = s["pairs_tested"].values[:, k]
        col[f"spikes_{h}"] = s["pairs_spikes"].values[:, k]
        col[f"baseline_{h}"] = s["pairs_baseline"].values[:, k]
        col[f"allan_time_tp_{h}_s"] = s["allan_time_tp"].values[:, k]
        col[f"allan_time_spec_{h}_s"] = s["allan_time_spec"].values[:, k]
    col["taos_C"] = s["taos_ref"].values
    col["thot_K"] = s["thot"].values
    col["allan_run"] = s["allan_run"].values.astype(str)
    col["allan_scans"] = s["allan_scans"].values
    col["from_level1"] = s["from_level1"].values.astype(bool)
    tables = {"swas_segments": pd.DataFrame(col)}
    # per-day flag rates
    d = {"missday": day["missday"].values.astype(np.int64), "mjd": day["mjd"].values}
    for k, h in enumerate(HALVES):
        d[f"pairs_{h}"] = day["pairs_tested"].values[:, k]
        d[f"spikes_{h}"] = day["pairs_spikes"].values[:, k]
        d[f"baseline_{h}"] = day["pairs_baseline"].values[:, k]
        d[f"spike_rate_{h}"] = day["spike_rate"].values[:, k]
        d[f"baseline_rate_{h}"] = day["baseline_rate"].values[:, k]
    daily = pd.DataFrame(d)
    tables["swas_flags_daily"] = daily[np.isfinite(daily["mjd"].values)].reset_index(drop=True)
    # COMB lines and sets
    rows, sets = [], []
    for i in np.flatnonzero(ok):
        for k, h in enumerate(HALVES):
            for si in range(N_SETS):
                dsp = seg["set_disp"].values[i, k, si]
                if not np.isfinite(dsp[0]):
                    continue
                taos = float(seg["set_taos"].values[i, k, si])
                sets.append((int(seg["segment"].values[i]), int(h), si, taos, *dsp))
                for li in range(N_LINES):
                    n = int(seg["line_order"].values[i, k, si, li])
                    if n < 0:
                        continue
                    rows.append((int(seg["segment"].values[i]), int(h), si, taos, n, n * 100e6,
                                 float(seg["line_centre"].values[i, k, si, li]),
                                 float(seg["line_centre_err"].values[i, k, si, li])))
    tables["swas_comb_lines"] = pd.DataFrame(rows, columns=["segment", "receiver", "comb_set", "taos_C", "order",
                                                            "if_Hz", "centre_ch", "centre_err_ch"])
    tables["swas_comb_sets"] = pd.DataFrame(sets, columns=["segment", "receiver", "comb_set", "taos_C", "f0_Hz",
                                                           "d1_Hz_per_ch", "d2_Hz_per_ch2"])
    # Allan curves
    al = []
    for i in np.flatnonzero(seg["allan_scans"].values > 0):
        dt = float(seg["allan_dt"].values[i])
        for k, h in enumerate(HALVES):
            for kind, v, e in (("total_power", "allan_tp", "allan_tp_err"),
                               ("spectroscopic", "allan_spec", "allan_spec_err")):
                for lv in range(N_LEVELS):
                    a = float(seg[v].values[i, k, lv])
                    if np.isfinite(a):
                        al.append((int(seg["segment"].values[i]), int(h), kind, str(seg["allan_run"].values[i]),
                                   int(seg["allan_scans"].values[i]), (2 ** lv) * dt, a,
                                   float(seg[e].values[i, k, lv])))
    tables["swas_allan"] = pd.DataFrame(al, columns=["segment", "receiver", "kind", "run", "run_scans", "tau_s",
                                                     "allan_variance", "allan_variance_err"])
    return tables


def _correlations(tables):
    """Correlations of the gain with the LO and mixer temperatures and of F0 with TAOS (between
    segments and within segments, from the COMB sets) over the whole study's tables."""
    t, cs_all = tables["swas_segments"], tables["swas_comb_sets"]
    cor = []
    for h in HALVES:
        gain = t[f"gain_{h}_counts_per_K"].values
        for q in ("t_lo", "t_mix"):
            r, nn, slope, err = K.correlation(t[f"{q}_{h}_K"].values, gain)
            cor.append((int(h), f"gain_vs_{q}", nn, r, slope, err, "count/K per K"))
        r, nn, slope, err = K.correlation(t["taos_C"].values, t[f"f0_{h}_Hz"].values)
        cor.append((int(h), "f0_vs_taos_between_segments", nn, r, slope, err, "Hz per Celsius"))
        cs = cs_all[cs_all["receiver"] == int(h)]
        slope, err, nn, _ = K.slope_within_groups(cs["taos_C"].values, cs["f0_Hz"].values, cs["segment"].values)
        cor.append((int(h), "f0_vs_taos_within_segments", nn, np.nan, slope, err, "Hz per Celsius"))
    import pandas as pd
    return pd.DataFrame(cor, columns=["receiver", "quantity", "n", "pearson_r", "slope", "slope_err", "slope_units"])


def _series(tables):
    from reduce.stability.study import Series

    t = tables["swas_segments"]
    out = []

    def grouped(name, label, units, stem, fit=True, err_stem=None):
        time = np.concatenate([t["mjd"].values for _ in HALVES])
        value = np.concatenate([t[stem.format(h=h)].values.astype(float) for h in HALVES])
        err = None if err_stem is None else np.concatenate([t[err_stem.format(h=h)].values.astype(float)
                                                            for h in HALVES])
        group = np.concatenate([np.full(len(t), f"{h} GHz") for h in HALVES])
        keep = np.isfinite(value)
        if keep.any():
            out.append(Series(name, label, units, time[keep], value[keep], None if err is None else err[keep],
                              group[keep], fit))

    grouped("tsys", "Tsys (DSB Y-factor)", "K", "tsys_{h}_K", err_stem="tsys_err_{h}_K")
    grouped("noise_ratio", "ON-OFF noise / radiometer equation", "1", "noise_ratio_{h}")
    grouped("zero_level", "AOS ZERO level", "count", "zero_{h}_counts")
    grouped("gain", "AOS gain (OFF-ZERO)/Tsys", "count/K", "gain_{h}_counts_per_K")
    grouped("dispersion_f0", "COMB F0 (at the segment's TAOS)", "Hz", "f0_{h}_Hz")
    grouped("dispersion_d1", "COMB D1", "Hz/channel", "d1_{h}_Hz_per_ch")
    grouped("dispersion_d2", "COMB D2", "Hz/channel^2", "d2_{h}_Hz_per_ch2")
    grouped("t_lo", "LO temperature", "K", "t_lo_{h}_K")
    grouped("t_mix", "mixer temperature", "K", "t_mix_{h}_K")
    grouped("allan_time_tp", "Allan time, total power", "s", "allan_time_tp_{h}_s", fit=False)
    grouped("allan_time_spec", "Allan time, spectroscopic", "s", "allan_time_spec_{h}_s", fit=False)
    if len(t) and np.isfinite(t["taos_C"].values).any():
        out.append(Series("taos", "AOS temperature TAOS", "Celsius", t["mjd"].values, t["taos_C"].values))
    d = tables["swas_flags_daily"]
    for kind in ("spike", "baseline"):
        time = np.concatenate([d["mjd"].values for _ in HALVES])
        value = np.concatenate([d[f"{kind}_rate_{h}"].values for h in HALVES])
        group = np.concatenate([np.full(len(d), f"{h} GHz") for h in HALVES])
        keep = np.isfinite(value)
        if keep.any():
            out.append(Series(f"{kind}_flag_rate", f"{kind} flags per pair (daily)", "1", time[keep], value[keep],
                              None, group[keep]))
    return out


def _summarise(seg, day):
    """Task body (on a worker): the computed per-segment Dataset and daily flag rates -> (tables
    (see :func:`_tables`), problem lines of the segments that could not be calibrated, notes of the
    excluded ones, counts {"excluded", "from_level1", "allan"})."""
    problems, notes = [], []
    for i in range(seg.sizes["segment"]):
        st = str(seg["status"].values[i])
        sid = int(seg["segment"].values[i])
        label = f"s{sid // 1000:04d}{sid % 1000:03d} {str(seg['object'].values[i])!r}"
        if st == "failed":
            problems.append(f"{label}: cannot be calibrated: {seg['reason'].values[i]}")
        elif st == "excluded":
            notes.append(f"{label}: excluded ({seg['reason'].values[i]})")
    counts = {"excluded": int(np.sum(seg["status"].values == "excluded")),
              "from_level1": int(seg["from_level1"].values.sum()),
              "allan": int(np.sum(seg["allan_scans"].values > 0))}
    return _tables(seg, day), problems, notes, counts


def level1_tsys(store):
    """The Tsys [K] (seg, receiver) and seg_segment of the store's level-1 segments table (lazy), or
    None when the store has no level-1 results (only ingested)."""
    from reduce.swas.pipeline import open_level1
    try:
        t = open_level1(store, "segments")
    except Exception:  # noqa: BLE001 - no level-1 group (zarr GroupNotFoundError) or an unreadable one
        return None
    if t.sizes.get("seg", 0) == 0 or "tsys" not in t:
        return None
    return t[["seg_segment", "tsys"]]


BATCH_DAYS = 30  #: mission days per graph of a study (the client's graph and scheduler state stay bounded)


def _batches(ds, start, stop, batch_days):
    """[start, stop) (MJD; None = open) cut at mission-day boundaries into windows of at most
    ``batch_days`` days that hold segments of the store whose root group (with its eager
    indexes) is ``ds``."""
    ids = np.asarray(ds.indexes["segment"])
    days = np.unique(ids[K.day_candidates(ids, start, stop)] // 1000)
    out = []
    for first in range(0, len(days), batch_days) if days.size else []:
        lo, hi = float(K.day_mjd(days[first])), float(K.day_mjd(days[min(first + batch_days, len(days)) - 1]) + 1.0)
        out.append((lo if start is None else max(lo, start), hi if stop is None else min(hi, stop)))
    return out or [(start, stop)]


def study(store, *, start=None, stop=None, client=None, batch_days=BATCH_DAYS):
    """The SWAS stability study of ``store`` over first scans in [start, stop) (MJD; None =
    open), computed in one pass (``client``: a dask.distributed Client; None: the current
    scheduler), one graph per ``batch_days`` mission days. Returns a reduce.stability.study.Study
    with tables swas_segments (one row per segment calibrated; leading columns SEGMENT_COLUMNS),
    swas_flags_daily, swas_comb_lines, swas_comb_sets, swas_allan, swas_correlations, the Series of
    each quantity, and one problem line per segment that could not be calibrated. When the store
    holds level-1 results, their Tsys is read from the level-1 segments table and set beside ours
    (tsys_level1_490_K, tsys_level1_550_K).

    Client memory: per batch the graph (and, with a LocalCluster, the scheduler's state); the
    tables of every batch, the study's result (~6 kB per segment as pandas holds them), are
    collected (benchmarks/bench_trend.py)."""
    import pandas as pd

    from reduce.stability.study import Study

    sched = {"scheduler": client} if client is not None else {}
    level1 = level1_units(store, Params())     # the unit records, read once
    opened = _open(store)                      # the eager indexes, read once
    parts = []
    for a, b in _batches(opened[0], start, stop, batch_days):
        seg = segment_dataset(store, start=a, stop=b, level1=level1, opened=opened)
        day = daily_flag_rates(seg)
        # one pass; the graph is already coarse (one task per store chunk), and dask's optimisation
        # of the two collections together loses a key of the groupby (dask 2026.8). The per-segment
        # arrays (~10 kB a segment, line and Allan arrays included) become the tables on a worker:
        # the client receives the tables and the problem lines only
        parts.append(dask.compute(dask.delayed(_summarise, pure=True)(seg, day), optimize_graph=False, **sched)[0])
    tables = {name: pd.concat([p[0][name] for p in parts], ignore_index=True) for name in parts[0][0]}
    tables["swas_correlations"] = _correlations(tables)
    problems = [line for p in parts for line in p[1]]
    notes = [line for p in parts for line in p[2]]
    counts = {k: sum(p[3][k] for p in parts) for k in parts[0][3]}
    del parts
    lv1 = level1_tsys(store)
    if lv1 is not None:
        (lv1,) = dask.compute(lv1, **sched)
    if lv1 is not None:
        t = tables["swas_segments"]
        ids = {int(v): i for i, v in enumerate(lv1["seg_segment"].values)}
        at = [ids.get(int(v), -1) for v in t["segment"]]
        for k, h in enumerate(HALVES):
            vals = np.array([lv1["tsys"].values[i, k] if i >= 0 else np.nan for i in at])
            t.insert(t.columns.get_loc(f"tsys_err_{h}_K"), f"tsys_level1_{h}_K", vals)
        both = np.array([i >= 0 for i in at])
        if both.any():
            ours = t[[f"tsys_{h}_K" for h in HALVES]].values[both]
            theirs = t[[f"tsys_level1_{h}_K" for h in HALVES]].values[both]
            notes.insert(0, f"level-1 results in the store for {int(both.sum())} of {len(t)} segments: Tsys "
                            f"agrees within {np.nanmax(np.abs(ours / theirs - 1)):.1e} (relative)")
    n_ok = len(tables["swas_segments"])
    notes.insert(0, f"SWAS: {n_ok} segments calibrated, {len(problems)} could not be, "
                    f"{counts['excluded']} special-mode segments excluded")
    if counts["from_level1"]:
        notes.append(f"pairing, COMB dispersion and flagging of {counts['from_level1']} segments taken from the "
                     "store's level-1 results (same inputs and parameters), not redone")
    notes.append(f"Allan variances from {counts['allan']} continuous OFF/ZERO runs of >= {MIN_ALLAN_SCANS} scans")
    mj = tables["swas_segments"]["mjd"].values
    span = (start if start is not None else (float(mj.min()) if mj.size else None),
            stop if stop is not None else (float(mj.max()) if mj.size else None))
    return Study(instrument="swas", tables=tables, series=_series(tables), problems=problems, notes=notes,
                 span=span)
