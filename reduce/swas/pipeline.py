"""The SWAS level-0.5 -> level-1 pipeline (seed §2, issue 3 steps 1-5) on the SWAS store.

``plan_segments(ds)`` loads the small per-scan metadata (a few MB) and plans, per
segment, the checking flags, the pair/ZERO/CAL/COMB indices, the Tsys (CONT Y-factor),
the Doppler velocities and the coadd groups. The steps

    check -> pair -> flag -> coadd -> calibrate

then only build dask graphs (one task per batch of segments and receiver half).
``build_level1(store_or_ds)`` composes them into the lazy level-1 coadd Dataset
(see notes/swas_level1.md); ``reduce_swas(store, out)`` computes it once (a failing
batch is retried segment by segment so one corrupt chunk or bad segment does not stop
the rest), keeps the intermediate products in the store (group ``level1``), exports the
FITS products (reduce.swas.export, when present) and writes ``OUT/reduction.log``.
"""

from __future__ import annotations

import json
import logging
import time as _time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from reduce import __version__
from reduce.errors import CalibrationError
from reduce.swas.kernels import check as S_check
from reduce.swas.kernels import coadd as S_coadd
from reduce.swas.kernels import pair as K_pair
from reduce.swas.kernels.calibrate import CalStepParams, plan_tsys
from reduce.swas.kernels.check import SCANTYPES, CheckParams, check_segment, describe_flags
from reduce.swas.kernels.coadd import HALF_BANDS, CoaddStepParams, plan_groups
from reduce.swas.kernels.doppler import sc_los_velocity
from reduce.swas.kernels.flag import FlagStepParams, expected_sigma, flag_statistics
from reduce.swas.kernels.pair import PairStepParams, plan_pairs
from reduce.swas.physics import BANDS_BY_NAME, C_KMS, EDGE_CHANNELS
from reduce.swas.steps import calibrate, check, coadd, flag, pair

from reduce.io.store import open_committed
from reduce.runner import Pipeline, TableSpec, Unit, UnitResult, hash_strings, open_table, read_slot, run

log = logging.getLogger(__name__)

MODES = ("NOD", "CHOP", "MAP", "CHOP_NOD", "PLANCAL", "MATRIX", "SKYDIP")  # store flag order
META_VARS = ("scan", "segment_id", "scantype", "mode", "inttime", "dlam", "dbet", "roll", "scvel",
             "thot", "taos", "cont", "quality")
SEG_VARS = ("segment", "missday", "segment_number", "obsmode", "object", "target_ra", "target_dec",
            "vsource", "lofreq1", "lofreq2", "first_scan", "nscans")


@dataclass(frozen=True)
class Params:
    """All step parameters (mission defaults) and the batch size [scans per task]."""

    check: CheckParams = field(default_factory=CheckParams)
    pair: PairStepParams = field(default_factory=PairStepParams)
    flag: FlagStepParams = field(default_factory=FlagStepParams)
    coadd: CoaddStepParams = field(default_factory=CoaddStepParams)
    cal: CalStepParams = field(default_factory=CalStepParams)
    batch_scans: int = 4096


@dataclass
class SegmentReport:
    """Outcome of one segment: status 'ok', 'failed' or 'excluded' (special mode)."""

    segment: int
    object: str
    status: str
    reason: str = ""
    obsmode: str = ""
    n_coadds: int = 0
    n_pairs: int = 0
    scan_flags: str = ""
    note: str = ""

    def line(self):
        s = f"s{self.segment // 1000:04d}{self.segment % 1000:03d} {self.object!r} {self.obsmode}: {self.status}"
        if self.status == "ok":
            s += f", {self.n_coadds} coadds from {self.n_pairs} pairs"
        if self.reason:
            s += f": {self.reason}"
        if self.note:
            s += f" (note: {self.note})"
        return s


@dataclass
class SegmentPlan:
    """Everything the tasks need about one segment (local row indices within [r0, r1))."""

    index: int
    segment: int
    missday: int
    segment_number: int
    object: str
    obsmode: str
    ra: float
    dec: float
    vsource: float
    lofreq: np.ndarray
    r0: int
    r1: int
    on: np.ndarray
    off: np.ndarray
    n_off: np.ndarray
    zero: np.ndarray
    cal_hot: np.ndarray
    cal_off: np.ndarray
    comb_sets: list
    quality: np.ndarray
    taos: np.ndarray
    thot: np.ndarray
    taos_ref: float
    df0_dtaos: float
    t_on: np.ndarray
    int_on: np.ndarray
    v_sc: np.ndarray
    taos_on: np.ndarray
    roll_on: np.ndarray
    dlam_on: np.ndarray
    dbet_on: np.ndarray
    sigma: np.ndarray
    dilate: int
    pos: np.ndarray
    groups: list
    tsys: np.ndarray
    tsys_err: np.ndarray
    scan_flag_text: str = ""
    note: str = ""
    vgeo_t: np.ndarray | None = None
    vgeo_v: np.ndarray | None = None
    p0: int = 0
    p1: int = 0


@dataclass
class Batch:
    """Segments processed by one task per half: store rows [r0, r1), pairs [p0, p1),
    coadd rows per half: (segment position in segs, group index, band name)."""

    index: int
    r0: int
    r1: int
    p0: int
    p1: int
    segs: list
    rows: dict


@dataclass
class Plan:
    params: Params
    token: str
    segs: list
    batches: list
    reports: dict
    scan_flags: np.ndarray
    provenance: dict
    store: str = ""
    scantype: np.ndarray | None = None

    def pair_coords(self):
        """Per-pair and per-segment coordinates (numpy) of the pairs Dataset."""
        cat = lambda f: np.concatenate([f(sp) for sp in self.segs]) if self.segs else np.zeros(0)  # noqa: E731
        kmax = max([sp.off.shape[1] for sp in self.segs] + [1])
        off = [np.where(sp.off >= 0, sp.off + sp.r0, -1) for sp in self.segs]
        off = np.concatenate([np.pad(o, ((0, 0), (0, kmax - o.shape[1])), constant_values=-1) for o in off]) \
            if off else np.zeros((0, kmax), np.int64)
        return {
            "pair_segment": ("pair", cat(lambda sp: np.full(sp.on.size, sp.segment, np.int32)).astype(np.int32)),
            "on_index": ("pair", cat(lambda sp: sp.on + sp.r0).astype(np.int64)),
            "off_index": (("pair", "k"), off.astype(np.int64)),
            "pair_time": ("pair", cat(lambda sp: sp.t_on).astype(np.float64)),
            "v_sc": ("pair", cat(lambda sp: sp.v_sc).astype(np.float64)),
            "sigma": ("pair", cat(lambda sp: sp.sigma).astype(np.float64)),
            "pair_position": ("pair", cat(lambda sp: sp.pos).astype(np.int16)),
            "seg_segment": ("seg", np.array([sp.segment for sp in self.segs], np.int32)),
            "seg_object": ("seg", np.array([sp.object for sp in self.segs], dtype=str)),
            "tsys": (("seg", "receiver"), np.array([sp.tsys for sp in self.segs]).reshape(-1, 2), {"units": "K"}),
            "tsys_err": (("seg", "receiver"), np.array([sp.tsys_err for sp in self.segs]).reshape(-1, 2)),
            "taos_ref": ("seg", np.array([sp.taos_ref for sp in self.segs], np.float64), {"units": "Celsius"}),
            "receiver": ("receiver", np.array([490, 550], np.int16)),
        }

    def coadd_rows(self):
        """[(SegmentPlan, group index, Band)] in the coadd order (for batch, for half)."""
        return [(b.segs[j], g, BANDS_BY_NAME[name]) for b in self.batches for h in ("490", "550")
                for (j, g, name) in b.rows[h]]

    def coadd_coords(self):
        """Eager per-coadd coordinates (numpy) of the level-1 Dataset."""
        rows = self.coadd_rows()
        col = lambda f, dt: ("coadd", np.array([f(sp, g, b) for sp, g, b in rows], dtype=dt))  # noqa: E731
        k = lambda b: 0 if b.half == "490" else 1  # noqa: E731
        return {
            "segment": col(lambda sp, g, b: sp.segment, np.int32),
            "missday": col(lambda sp, g, b: sp.missday, np.int32),
            "segment_number": col(lambda sp, g, b: sp.segment_number, np.int32),
            "object": col(lambda sp, g, b: sp.object, str),
            "obsmode": col(lambda sp, g, b: sp.obsmode, str),
            "band": col(lambda sp, g, b: b.name, str),
            "receiver": col(lambda sp, g, b: int(b.half), np.int16),
            "sideband": col(lambda sp, g, b: b.sideband, str),
            "kind": col(lambda sp, g, b: sp.groups[g][0], str),
            "position": col(lambda sp, g, b: sp.groups[g][1], np.int16),
            "tsys": col(lambda sp, g, b: sp.tsys[k(b)], np.float32),
            "ra": col(lambda sp, g, b: sp.ra, np.float64),
            "dec": col(lambda sp, g, b: sp.dec, np.float64),
            "vsource": col(lambda sp, g, b: sp.vsource, np.float32),
            "restfreq": col(lambda sp, g, b: b.rest_freq, np.float64),
            "lofreq": col(lambda sp, g, b: sp.lofreq[k(b)], np.float64),
        }


COADD_UNITS = {"dlam": "arcmin", "dbet": "arcmin", "on_time": "s", "time_start": "d", "time_mid": "d",
               "time_end": "d", "tsys": "K", "roll": "deg", "ra": "deg", "dec": "deg", "vsource": "km/s",
               "restfreq": "Hz", "imagfreq": "Hz", "lofreq": "Hz", "freq_ref": "Hz", "cdelt_freq": "Hz",
               "vlsr_ref": "km/s", "cdelt_vel": "km/s"}


def provenance(params):
    """{step: 'step: skyreduce VERSION reduce.swas.steps.step PARAMS'} of the five steps, in seed order."""
    steps = (("check", params.check), ("pair", params.pair), ("flag", params.flag), ("coadd", params.coadd),
             ("calibrate", params.cal))
    return {step: f"{step}: skyreduce {__version__} reduce.swas.steps.{step} {p!r}" for step, p in steps}


def load_metadata(ds):
    """The small per-scan and per-segment metadata as numpy (dict), in one compute."""
    names = [v for v in META_VARS] + list(SEG_VARS)
    vals = dask.compute(*[ds[v].data for v in names])
    out = dict(zip(names, (np.asarray(v) for v in vals)))
    out["time"] = np.asarray(ds["time"].values)
    return out


def _batches(segs, chunk, batch_scans):
    """Group segments (store order) into batches within one store chunk, <= batch_scans each."""
    out, cur = [], []
    for sp in sorted(segs, key=lambda s: s.r0):
        if cur and (sp.r0 // chunk != cur[0].r0 // chunk or sp.r1 - cur[0].r0 > batch_scans):
            out.append(cur)
            cur = []
        cur.append(sp)
    if cur:
        out.append(cur)
    batches, p = [], 0
    for i, group in enumerate(out):
        p0 = p
        for sp in group:
            sp.p0, sp.p1 = p, p + sp.on.size
            p = sp.p1
        rows = {h: [(j, g, b.name) for j, sp in enumerate(group) for g in range(len(sp.groups))
                    for b in HALF_BANDS[h]] for h in ("490", "550")}
        batches.append(Batch(i, group[0].r0, group[-1].r1, p0, p, group, rows))
    return batches


def plan_segments(ds, params=Params(), *, only=None, row0=0):
    """Plan every segment of the store Dataset `ds` (eager, metadata only).

    Returns a Plan: the reducible segments with their index plans, batches, the
    per-scan checking flags (time,) and a SegmentReport for each segment excluded
    (special mode) or failed at planning (bad header, no ON, no CAL, no COMB, no ZERO,
    every scan flagged). `only`: optional set of segment ids to plan. `row0`: the store row of
    ds's first scan when `ds` is a cut-out of the store (one unit of work); the plan's rows are
    relative to `ds`.
    """
    m = load_metadata(ds)
    n_time = m["time"].size
    scan_flags = np.zeros(n_time, np.int32)
    segs, reports = [], {}
    for i in range(m["segment"].size):
        seg = int(m["segment"][i])
        if only is not None and seg not in only:
            continue
        obj, mode = str(m["object"][i]), str(m["obsmode"][i])
        r0 = int(m["first_scan"][i]) - row0
        r1 = r0 + int(m["nscans"][i])
        fail = lambda why, st="failed": reports.__setitem__(  # noqa: E731
            seg, SegmentReport(seg, obj, st, why, mode))
        if r1 > n_time or r0 < 0 or np.any(m["segment_id"][r0:r1] != seg):
            fail(f"store rows {r0}..{r1} do not hold segment {seg} (segment_id mismatch)")
            continue
        loc = {k: m[k][r0:r1] for k in META_VARS + ("time",)}
        header = {"obsmode": mode, "mode_code": MODES.index(mode) if mode in MODES else -1,
                  "lofreq": (float(m["lofreq1"][i]), float(m["lofreq2"][i])),
                  "target_ra": float(m["target_ra"][i]), "target_dec": float(m["target_dec"][i]),
                  "vsource": float(m["vsource"][i])}
        flags, reason, _ = check_segment(loc, header, params.check)
        scan_flags[r0:r1] = flags
        if reason:
            fail(reason, "excluded" if mode not in S_check.NORMAL_MODES else "failed")
            continue
        usable = flags == 0
        if not usable.any():
            fail(f"every scan flagged by the checking step ({describe_flags(flags)})")
            continue
        stype = np.array(SCANTYPES)[np.clip(loc["scantype"].astype(int), 0, len(SCANTYPES) - 1)]
        try:
            note = ""
            zusable = usable
            if not np.any(usable & (stype == "ZERO")):
                # ZERO levels are stable (seed 2.2): when the only ZERO scans follow a ground-support
                # gap, use them rather than lose the segment, and say so
                zusable = (flags & ~S_check.SCAN_FLAGS["after_gap"]) == 0
                if np.any(zusable & (stype == "ZERO")):
                    note = "the only ZERO scans lie within the post-gap window; used them for the zero level"
            zero = np.flatnonzero(K_pair.stable_zeros(loc["cont"].mean(axis=1), stype == "ZERO", usable=zusable,
                                                      nsigma=params.pair.zero_nsigma))
            idx = plan_pairs(loc["time"], stype, usable, mode, params=params.pair)
            tsys, tsys_err = plan_tsys(loc["cont"].astype(float), loc["thot"].astype(float), idx["cal_hot"],
                                       idx["cal_off"], zero, header["lofreq"], params.cal)
        except CalibrationError as e:
            fail(str(e))
            continue
        on, off, noff = idx["on"], idx["off"], idx["n_off"]
        int_on = loc["inttime"][on].astype(float)
        int_off = np.array([loc["inttime"][o[o >= 0]].mean() for o in off]) if on.size else np.zeros(0)
        v_sc = sc_los_velocity(loc["scvel"][on], header["target_ra"], header["target_dec"])
        t_on = loc["time"][on].astype(float)
        pos, groups = plan_groups(t_on, int_on, loc["dlam"][on].astype(float), loc["dbet"][on].astype(float),
                                  mode, params.coadd)
        ch_per_kms = 560e9 / C_KMS / 1.0e6  # upper bound of channels per km/s (550 GHz, D1 ~ 1 MHz)
        dil = int(np.ceil(np.ptp(v_sc) * ch_per_kms / 2.0)) + 3 if v_sc.size else 3
        taos = loc["taos"].astype(float)
        segs.append(SegmentPlan(
            index=len(segs), segment=seg, missday=int(m["missday"][i]), segment_number=int(m["segment_number"][i]),
            object=obj, obsmode=mode, ra=header["target_ra"], dec=header["target_dec"], vsource=header["vsource"],
            lofreq=np.array(header["lofreq"]), r0=r0, r1=r1, on=on, off=off, n_off=noff, zero=zero,
            cal_hot=idx["cal_hot"], cal_off=idx["cal_off"], comb_sets=idx["comb_sets"],
            quality=loc["quality"].astype(np.int64), taos=taos, thot=loc["thot"].astype(float),
            taos_ref=float(taos[on].mean()), df0_dtaos=params.pair.df0_dtaos_hz, t_on=t_on, int_on=int_on,
            v_sc=v_sc, taos_on=taos[on], roll_on=loc["roll"][on].astype(float),
            dlam_on=loc["dlam"][on].astype(float), dbet_on=loc["dbet"][on].astype(float),
            sigma=expected_sigma(int_on, int_off, n_off=noff, bandwidth_hz=params.flag.kernel.bandwidth_hz),
            dilate=dil, pos=pos, groups=groups, tsys=tsys, tsys_err=tsys_err,
            scan_flag_text=describe_flags(flags), note=note))
    if segs:  # v_geo (astropy ephemeris) at the start and end of every segment, one vectorised call
        from reduce.swas.kernels.doppler import geo_lsrk_velocity
        tt = np.array([[sp.t_on.min(), sp.t_on.max() + 1e-3] for sp in segs])
        vv = geo_lsrk_velocity(tt.ravel(), np.repeat([sp.ra for sp in segs], 2),
                               np.repeat([sp.dec for sp in segs], 2)).reshape(-1, 2)
        for sp, t2, v2 in zip(segs, tt, vv):
            sp.vgeo_t, sp.vgeo_v = t2, v2
    chunks = getattr(ds["aos490"].data, "chunks", None)
    chunk = chunks[0][0] if chunks else max(n_time, 1)
    batches = _batches(segs, chunk, params.batch_scans)
    segs = [sp for b in batches for sp in b.segs]
    return Plan(params, uuid.uuid4().hex[:10], segs, batches, reports, scan_flags, provenance(params),
                scantype=m["scantype"].astype(np.int8))


def _open(store_or_ds):
    if isinstance(store_or_ds, xr.Dataset):
        return store_or_ds, str(store_or_ds.attrs.get("store", ""))
    from reduce.io.store import Store
    return Store(store_or_ds).open_group(), str(store_or_ds)


def _build(ds, params, only=None, row0=0):
    plan = plan_segments(ds, params, only=only, row0=row0)
    ds1 = check(ds, plan)
    pairs = flag(pair(ds1, plan), plan)
    co = coadd(pairs, plan)
    level1 = calibrate(co, pairs, plan)
    ms = level1["max_shift"].data
    edge = (EDGE_CHANNELS + dask.array.nan_to_num(ms) + 3).astype(np.int16) if hasattr(ms, "dask") \
        else (EDGE_CHANNELS + np.nan_to_num(ms) + 3).astype(np.int16)
    level1 = level1.assign_coords(edge_channels=("coadd", edge))
    for name, unit in COADD_UNITS.items():
        level1[name].attrs["units"] = unit
    for name, dt in (("dlam", np.float32), ("dbet", np.float32), ("on_time", np.float32),
                     ("roll", np.float32)):
        level1 = level1.assign_coords({name: level1[name].astype(dt)})
        level1[name].attrs["units"] = COADD_UNITS[name]
    level1.attrs.update(software=f"skyreduce {__version__}", store=plan.store,
                        edge_note="edge_channels = 25 + largest integer shift + 3 (axis resampling warp)",
                        axis_note=S_coadd.__doc__.split("Axis:")[1].strip().replace("\n", " "))
    return plan, ds1, pairs, level1


def build_level1(store_or_ds, *, params=None):
    """The lazy level-1 coadd Dataset and one SegmentReport per segment.

    Segments planned into the graph have status 'planned' (reduce_swas turns them into
    'ok' or 'failed' after computing); the others are 'failed' or 'excluded' with reasons."""
    ds, path = _open(store_or_ds)
    plan, _, _, level1 = _build(ds, params or Params())
    level1.attrs["store"] = path
    reports = list(plan.reports.values()) + [SegmentReport(sp.segment, sp.object, "planned", obsmode=sp.obsmode,
                                                           n_pairs=int(sp.on.size)) for sp in plan.segs]
    return level1, sorted(reports, key=lambda r: r.segment)


# ----------------------------------------------------------------------------- computing

PAIR_OUT = ("flag490", "flag550", "flagstat490", "flagstat550", "off_index", "on_index", "pair_time", "v_sc",
            "sigma", "pair_position")
SEG_OUT = ("reason490", "reason550", "disp490", "disp550", "comb_rms490", "comb_rms550", "comb_nlines490",
           "comb_nlines550", "comb_resid490", "comb_resid550", "profile490", "profile550",
           "tsys", "tsys_err", "taos_ref", "seg_object")
MAX_OFFS = 4   # OFF scans averaged per ON at most (MAP: the nearest 3)


def _batch_views(plan, pairs, level1):
    """Per batch: (level1 rows, pair variables, segment variables), lazily sliced."""
    views, r = [], 0
    si = 0
    for b in plan.batches:
        n = len(b.rows["490"]) + len(b.rows["550"])
        ns = len(b.segs)
        views.append((level1.isel(coadd=slice(r, r + n)),
                      pairs[list(PAIR_OUT)].isel(pair=slice(b.p0, b.p1)),
                      pairs[list(SEG_OUT)].isel(seg=slice(si, si + ns))))
        r += n
        si += ns
    return views


def _graph(ds, params, row0=0):
    """The lazy graph of compute_level1 (of one unit on the runner): (plan, pairs, level1, batch views)."""
    plan, _, pairs, level1 = _build(ds, params, row0=row0)
    return plan, pairs, level1, _batch_views(plan, pairs, level1)


def _compute_views(views):
    """Compute each batch's views (current dask scheduler); list of (result or None, error text)."""
    try:
        return [(list(r), "") for r in dask.compute(*[list(v) for v in views])]
    except Exception:  # noqa: BLE001 - find which batches fail
        out = []
        for v in views:
            try:
                out.append((list(dask.compute(*v)), ""))
            except Exception as e:  # noqa: BLE001
                out.append((None, f"{type(e).__name__}: {e}"))
        return out


def compute_level1(store_or_ds, *, params=None, row0=0):
    """Compute the level-1 steps over `store_or_ds` with failure isolation (in memory).

    This is what the runner does for each unit of work (a cut-out of the store, `row0` its
    first store row); on a whole small store it is the notebook way to look at everything.
    Returns (level1 Dataset (numpy, failed or empty coadds removed), intermediate products
    {"pairs", "segments", "scan_flag", "scantype", "plan", "flag_statistics"}, reports).
    A batch that fails (e.g. an unreadable chunk) is recomputed segment by segment; a
    segment that still fails is reported with the error."""
    params = params or Params()
    ds, path = _open(store_or_ds)
    plan, pairs, level1, views = _graph(ds, params, row0=row0)
    results = _compute_views(views)
    pieces, reports = [], dict(plan.reports)
    for b, (res, err) in zip(plan.batches, results):
        if res is not None:
            pieces.append((b, res))
            continue
        if len(b.segs) == 1:
            sp = b.segs[0]
            reports[sp.segment] = SegmentReport(sp.segment, sp.object, "failed",
                                                f"AOS data could not be read or reduced: {err}", sp.obsmode)
            continue
        for sp in b.segs:  # retry alone
            p1, _, pr1, l1 = _build(ds, params, only={sp.segment}, row0=row0)
            (res1, err1), = _compute_views(_batch_views(p1, pr1, l1)) or [(None, "not planned")]
            if res1 is None:
                reports[sp.segment] = SegmentReport(sp.segment, sp.object, "failed",
                                                    f"AOS data could not be read or reduced: {err1}", sp.obsmode)
            else:
                pieces.append((p1.batches[0], res1))
    keep_l1, keep_pairs, keep_seg = [], [], []
    crit = params.flag.kernel.criteria
    for b, (l1, pv, sv) in pieces:
        for j, sp in enumerate(b.segs):
            why = "; ".join(str(sv[f"reason{h}"].values[j]) for h in ("490", "550") if str(sv[f"reason{h}"].values[j]))
            sel = np.flatnonzero(l1["segment"].values == sp.segment)
            good = sel[l1["n_scans"].values[sel] > 0]
            a, z = sp.p0 - b.p0, sp.p1 - b.p0
            if not why and good.size == 0:
                fl = {h: pv[f"flag{h}"].values[a:z] for h in ("490", "550")}
                st = flag_statistics(fl, np.full(z - a, sp.segment), crit)[sp.segment]
                why = "every pair flagged: " + "; ".join(
                    f"{h} GHz " + ", ".join(f"{c} {st[h][c][1]}/{st[h][c][0]}" for c in crit) for h in st)
            if why:
                reports[sp.segment] = SegmentReport(sp.segment, sp.object, "failed", why, sp.obsmode,
                                                    n_pairs=int(sp.on.size), scan_flags=sp.scan_flag_text)
                continue
            reports[sp.segment] = SegmentReport(sp.segment, sp.object, "ok", "", sp.obsmode, int(good.size),
                                                int(sp.on.size), sp.scan_flag_text, sp.note)
            keep_l1.append(l1.isel(coadd=good))
            keep_pairs.append(pv.isel(pair=slice(a, z)).assign_coords(
                pair_segment=("pair", np.full(z - a, sp.segment, np.int32))))
            keep_seg.append(sv.isel(seg=[j]).assign_coords(seg_segment=("seg", [np.int32(sp.segment)])))
    if keep_l1:
        out = xr.concat(keep_l1, dim="coadd", coords="different", compat="equals", combine_attrs="override")
    else:
        out = level1.isel(coadd=slice(0, 0)).compute()
    out.attrs.update(level1.attrs)
    out.attrs["store"] = path
    fl = {h: np.concatenate([p[f"flag{h}"].values for p in keep_pairs]) if keep_pairs else np.zeros(0, np.int16)
          for h in ("490", "550")}
    seg_of = np.concatenate([p["pair_segment"].values for p in keep_pairs]) if keep_pairs else np.zeros(0)
    stats = flag_statistics(fl, seg_of, crit)
    out.attrs["flag_statistics"] = json.dumps({str(k): v for k, v in stats.items()}, sort_keys=True)
    out.attrs["history"] = list(level1.attrs.get("history", []))
    inter = {"pairs": xr.concat(keep_pairs, dim="pair") if keep_pairs else None,
             "segments": xr.concat(keep_seg, dim="seg") if keep_seg else None,
             "scan_flag": plan.scan_flags, "scantype": plan.scantype, "plan": plan,
             "flag_statistics": stats}
    return out, inter, sorted(reports.values(), key=lambda r: r.segment)


# ----------------------------------------------------------------------------- on the runner

TABLES = (TableSpec("coadds", "swas_level1", "level1/coadds"),
          TableSpec("pairs", "swas_level1", "level1/pairs"),
          TableSpec("segments", "swas_level1", "level1/segments"),
          TableSpec("scans", "swas_level1", "level1/scans"))
UNIT_SEG_VARS = ("segment", "first_scan", "nscans", "sha256", "object", "obsmode")


def _columns(ds, names=None):
    """{variable: numpy} of a computed Dataset (dims as stored, strings as str)."""
    out = {}
    for name in names or ds.variables:
        if name not in ds.variables:
            continue
        v = ds[name]
        values = np.asarray(v.values)
        if values.dtype.kind in ("U", "O", "T"):
            values = values.astype(object).astype(str)
        out[name] = values
    return out


def _pairs_rows(pairs, row0):
    if pairs is None:
        return None
    rows = _columns(pairs, PAIR_OUT + ("pair_segment",))
    on = rows["on_index"].astype(np.int64)
    rows["on_index"] = on + row0
    off = rows["off_index"].astype(np.int64)
    if off.shape[1] > MAX_OFFS:
        raise ValueError(f"{off.shape[1]} OFF scans per ON pair; the store layout holds {MAX_OFFS}")
    off = np.where(off >= 0, off + row0, -1)
    rows["off_index"] = np.pad(off, ((0, 0), (0, MAX_OFFS - off.shape[1])), constant_values=-1)
    return rows


@dataclass(frozen=True)
class SwasLevel1(Pipeline):
    """SWAS level-0.5 -> level-1 on the runner: a unit is a batch of segments (<= Params.batch_scans
    scans) starting in one store chunk; its coadds, pairs, segment calibration and scan flags go to
    the store group ``level1`` and its FITS products under OUT/<target>/."""

    params: Params = Params()
    name = "swas_level1"
    store_schema = "swas_store"

    def tables(self):
        return list(TABLES)

    def table_attrs(self, store):
        common = {"software": f"skyreduce {__version__}",
                  "history": json.dumps(list(provenance(self.params).values()))}
        return {"coadds": {**common, "edge_note": "edge_channels = 25 + largest integer shift + 3",
                           "axis_note": S_coadd.__doc__.split("Axis:")[1].strip().replace("\n", " ")},
                "pairs": {**common, "criteria": json.dumps(list(self.params.flag.kernel.criteria))},
                "segments": common,
                "scans": {**common, "flag_meanings": " ".join(S_check.SCAN_FLAGS)}}

    def units(self, store, client=None):
        from reduce.io.store import Store
        root = Store(store).open_group(indexes=False)     # nothing per scan is loaded
        seg = {k: np.asarray(v) for k, v in zip(UNIT_SEG_VARS, dask.compute(*[root[k].data for k in UNIT_SEG_VARS]))}
        chunk = int(root["aos490"].data.chunks[0][0]) if root.sizes["time"] else 1
        order = np.argsort(seg["first_scan"], kind="stable")
        groups, cur = [], []
        for i in order:
            a, n = int(seg["first_scan"][i]), int(seg["nscans"][i])
            if cur:
                a0 = int(seg["first_scan"][cur[0]])
                if a // chunk != a0 // chunk or a + n - a0 > self.params.batch_scans:
                    groups.append(cur)
                    cur = []
            cur.append(int(i))
        if cur:
            groups.append(cur)
        units = []
        for g in groups:
            a = int(min(seg["first_scan"][i] for i in g))
            b = int(max(seg["first_scan"][i] + seg["nscans"][i] for i in g))
            ids = [int(seg["segment"][i]) for i in g]
            h = hash_strings([f"{int(seg['segment'][i])}:{int(seg['first_scan'][i])}:{int(seg['nscans'][i])}:"
                              f"{seg['sha256'][i]}" for i in g])
            label = f"s{ids[0]:07d}" + (f"..s{ids[-1]:07d}" if len(ids) > 1 else "")
            units.append(Unit(f"s{ids[0]:07d}", label, h, {"rows": [a, b], "segments": g}))
        return units

    def _cut(self, store, unit):
        a, b = unit.info["rows"]
        return open_committed(store).isel(time=slice(a, b), segment=unit.info["segments"]), a, b

    def size_unit(self, store, unit):
        ds, a, b = self._cut(store, unit)
        plan = plan_segments(ds, self.params, row0=a)
        return {"coadds": len(plan.coadd_rows()), "pairs": int(sum(sp.on.size for sp in plan.segs)),
                "segments": len(plan.segs), "scans": b - a}

    def build_unit(self, store, unit):
        """The lazy graph ``compute_unit`` computes for ``unit``, built and not computed: the dask
        collections (per batch: coadds, pairs, segments) that ``compute_level1`` hands to dask."""
        ds, a, _ = self._cut(store, unit)
        return [x for view in _graph(ds, self.params, row0=a)[3] for x in view]

    def compute_unit(self, store, unit):
        ds, a, b = self._cut(store, unit)
        level1, inter, reports = compute_level1(ds, params=self.params, row0=a)
        if "ta" in level1:
            level1 = level1.transpose("coadd", "channel", ...)
        rows = {"coadds": _columns(level1),
                "scans": {"scan_flag": inter["scan_flag"].astype(np.int32), "scan_row": np.arange(a, b, dtype=np.int64)}}
        if inter["pairs"] is not None:
            rows["pairs"] = _pairs_rows(inter["pairs"], a)
            rows["segments"] = _columns(inter["segments"], SEG_OUT + ("seg_segment",))
        status = {r.status for r in reports}
        counts = {"segments reduced": sum(r.status == "ok" for r in reports),
                  "segments failed": sum(r.status == "failed" for r in reports),
                  "segments excluded": sum(r.status == "excluded" for r in reports),
                  "coadds": int(level1.sizes["coadd"]), "scans": b - a}
        log_lines = [r.line() + (f" [scan flags: {r.scan_flags}]" if r.scan_flags else "") for r in reports]
        for seg, halves in sorted(inter["flag_statistics"].items()):
            for h, d in halves.items():
                log_lines.append(f"  s{seg} {h} GHz flags: " + ", ".join(f"{c} {v[1]}/{v[0]}" for c, v in d.items()))
        attrs = {k: v for k, v in level1.attrs.items()}
        attrs["store"] = str(store)
        result = UnitResult(status="excluded" if status == {"excluded"} else "done",
                            reason="; ".join(r.reason for r in reports) if status == {"excluded"} else "",
                            rows=rows, counts=counts, problems=[r.line() for r in reports if r.status == "failed"],
                            log=log_lines, context={"attrs": attrs})
        return result

    def export_unit(self, store, out, unit, result, slots):
        from reduce.swas.export import write_products
        n = int(result.counts["coadds"])
        if n == 0:
            return 0, []
        co = read_slot(store, TABLES[0], slots["coadds"][0], n)
        co.attrs = dict(result.context["attrs"])
        failures = []
        files = write_products(co, out, log=log, failures=failures, top_index=False)
        return len(files), [f"s{seg}: export failed: {why}" for seg, why in failures]

    def describe(self, summary):
        c = summary.counts
        return [f"  segments: {c.get('segments reduced', 0)} reduced, {c.get('segments excluded', 0)} excluded "
                f"(special modes), {c.get('segments failed', 0)} not reduced",
                f"  coadds: {c.get('coadds', 0)}; targets: {c.get('targets', 0)}; product files: {summary.files}"]

    def finish(self, store, out, records, summary):
        from reduce.swas.targets import read_target_index, write_top_index
        if read_target_index(out):
            write_top_index(out)
        summary.counts["targets"] = len(read_target_index(out))
        summary.lines = self.describe(summary)
        lines = [f"skyreduce {__version__} SWAS level-0.5 -> level-1 reduction", f"store: {store}",
                 f"output: {out}", f"run: {_time.strftime('%Y-%m-%dT%H:%M:%SZ', _time.gmtime())}", "",
                 "steps and parameters:"]
        lines += [f"  {h}" for h in provenance(self.params).values()]
        lines += ["", "units (segments, flag statistics: pairs flagged / tested per criterion and receiver):"]
        for rec in records:
            lines.append(f"unit {rec['label']}: {rec['status']}" + (f": {rec['reason']}" if rec["reason"] else ""))
            lines += [f"  {x}" for x in rec.get("log", [])]
        lines += ["", summary.text(max_problems=10 ** 9), ""]
        from reduce.io.store import atomic_write_text
        atomic_write_text(Path(out) / "reduction.log", "\n".join(lines))


def open_store(store):
    """The SWAS level-0.5 store's root group: lazy (dask), cut to the last commit, validated."""
    from reduce.io.store import Store
    return Store(store).open_group()


def open_level1(store, table="coadds"):
    """A level-1 table of the store (``coadds``, ``pairs``, ``segments``, ``scans``), written rows only, lazy."""
    spec = {t.name: t for t in TABLES}[table]
    return open_table(store, spec)


def reduce_swas(store, out, *, client=None, progress=False, report=print, params=None, redo=False,
                redo_failed=False, wait=0.0):
    """Reduce a SWAS store to level 1 on the runner (see reduce.runner): returns a RunSummary.

    Units already done for this store, with the same inputs, parameters and ``out`` folder, are
    skipped (``redo``: do every unit again; ``redo_failed``: retry the failed ones); the level-1
    tables are kept in the store (``open_level1``), the FITS products and reduction.log in ``out``.
    ``client``: a dask distributed Client (None: every unit in this process, one after the other)."""
    return run(SwasLevel1(params or Params()), store, out, client=client, progress=progress, report=report,
               redo=redo, redo_failed=redo_failed, wait=wait)


__all__ = ["Params", "SegmentReport", "SwasLevel1", "open_store", "plan_segments", "build_level1",
           "compute_level1", "reduce_swas", "open_level1"]
