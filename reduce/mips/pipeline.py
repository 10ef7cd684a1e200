"""MIPS raw -> level-1 BCD for the 24, 70 and 160 um arrays, on the runner (``reduce_mips``, the CLI entry).

``plan_bcd`` loads the small per-DCE metadata of a raw group (or a cut-out of it) and
checks the calibration sets (SHA-256 against the store's record); ``assemble`` builds
the lazy BCD Dataset with the steps of ``reduce.mips.steps`` (``si.pipeline`` for 24 um,
``ramps.pipeline`` for 70/160 um); ``build_bcd`` = both. ``MipsBcd`` is the pipeline on
the runner (``reduce.runner``): one unit per AOR and array, computed on a worker, its
BCDs written into its whole chunks of the store group ``bcd24``/``bcd70``/``bcd160`` and
exported as SSC-style FITS from there; ``open_bcd`` reads a group back.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from .. import __version__
from ..io.store import Store, open_committed
from ..runner import Pipeline, TableSpec, Unit, UnitResult, hash_strings, open_table, read_slot, run
from ..schemas import group_spec, load_schema, validate_group
from .bcd import BCD_SCHEMA, DCE_CODES, GROUPS, PIPELINE_VERSION, RAW_GROUPS, mask_bits
from .calib import BAND, CalTable
from .kernels.ramps import GeParams
from .kernels.responsivity import background_pairs, stim_subset
from .kernels.si import SiParams
from .steps import ramps as ramp_steps
from .steps import si as si_steps

log = logging.getLogger(__name__)

STR = np.dtypes.StringDType()


@dataclass(frozen=True)
class BcdParams:
    """Parameters of the level-1 pipeline (mission defaults)."""

    si: SiParams = SiParams()
    ge: GeParams = GeParams()
    dce_chunk: int | None = None   # DCEs per task (None: the store's chunks)


@dataclass(frozen=True)
class DceReport:
    """One DCE that was skipped (status = the reason)."""

    chnlnum: int
    aorkey: int
    expid: int
    dcenum: int
    source_file: str
    status: str
    array: str = ""     # how the line names the array ('' : "<band> um"; the SED mode: "SED")

    def line(self):
        array = self.array or f"{BAND[self.chnlnum]} um"
        return f"SKIPPED {self.source_file} (MIPS {array} DCE {self.aorkey}/{self.expid:04d}/" \
               f"{self.dcenum:04d}): {self.status}"


@dataclass
class Plan:
    """Eagerly loaded per-DCE metadata of one array (small) and its calibration table."""

    chnlnum: int
    ds: xr.Dataset           # raw group, per-DCE coordinates as numpy, plus ``skip``
    cal: CalTable
    status: np.ndarray       # str (ndce,): 'ok' or the plan-time reason
    aorkeys: np.ndarray
    times: np.ndarray
    calset: np.ndarray
    stimflsh: np.ndarray
    stim_subset: tuple       # (indices of stim DCEs and their backgrounds, (nstim, 3) table) (Ge)
    source: str = ""


# ---------------------------------------------------------------- plan
def _open(source, chnlnum):
    if isinstance(source, xr.Dataset):
        return source, ""
    return Store(source).open_group(RAW_GROUPS[chnlnum]), str(source)


def plan_bcd(source, chnlnum, *, params: BcdParams = BcdParams(), cal_table=CalTable) -> Plan:
    """Load per-DCE metadata (eager, small) and check calibration; decide plan-time skips.

    ``source``: a MIPS store path or the raw group Dataset (e.g. from Store.open_group);
    ``cal_table``: the class whose ``load`` checks the recorded calibration sets (CalTable; the
    SED mode's reduce.sed.calib.SedCalTable).
    """
    if chnlnum not in GROUPS:
        raise ValueError(f"CHNLNUM must be 1, 2 or 3, got {chnlnum!r}")
    ds, src = _open(source, chnlnum)
    data_var = "raw" if chnlnum == 1 else "reads"
    coords = [n for n in ds.coords if ds[n].dims == ("dce",)]
    meta = dict(zip(coords, map(np.asarray, dask.compute(*[ds[n].data for n in coords]))))  # the one eager load
    ds = ds.assign_coords({n: ("dce", v, ds[n].attrs) for n, v in meta.items()})
    n = ds.sizes["dce"]
    cal = cal_table.load(ds.attrs.get("calibration_sets", []), chnlnum)
    calset = meta["calset"].astype(np.int64)
    status = np.full(n, "ok", dtype=object)

    def mark(sel, reason):
        status[sel & (status == "ok")] = reason

    for k, reason in enumerate(cal.reasons):
        if reason:
            mark(calset == k, reason)
    mark((calset < 0) | (calset >= len(cal.sets)), "no calibration set recorded for this DCE (calset out of range)")
    nreads = meta["nreads"].astype(np.int64)
    if chnlnum == 1:
        for ns in np.unique(nreads[nreads < 2]):
            mark(nreads == ns, f"NREADS = {ns}: a slope needs at least 2 samples")
    else:
        p = params.ge
        for ns in np.unique(nreads[nreads < p.min_reads]):
            mark(nreads == ns, f"NREADS = {ns}: fewer reads than the {p.min_reads} a ramp segment needs")
        over = nreads > ds.sizes["read"]
        mark(over, f"NREADS larger than the {ds.sizes['read']} reads stored")
        samp = meta["samptime"].astype(np.float64)
        mark(np.abs(samp - p.dt) > 1e-6, f"SAMPTIME is not the Ge read interval {p.dt} s")
    stimflsh = meta.get("stimflsh", np.zeros(n, np.int8)).astype(np.int8)
    aorkeys, times = meta["aorkey"].astype(np.int64), meta["time"].astype(np.float64)
    if chnlnum > 1:
        for aor in np.unique(aorkeys):
            sel = aorkeys == aor
            if not stimflsh[sel].any():
                mark(sel, f"AOR {aor} has no stim-flash DCE (STIMFLSH=1): responsivity cannot be calibrated")
    skip = status != "ok"
    pairs = {}
    if chnlnum > 1:
        scale = min(float(cs.distortion["PXSCAL1"]) for cs in cal.sets if cs is not None) if any(
            cs is not None for cs in cal.sets) else 1.0
        pairs = background_pairs(stimflsh, times, aorkeys, meta["ra_ref"], meta["dec_ref"], ~skip,
                                 same_pointing_arcsec=params.ge.same_pointing_px * scale)
    sub = stim_subset(pairs)
    ds = ds.assign(skip=("dce", skip))
    if data_var not in ds:
        raise ValueError(f"raw group of CHNLNUM {chnlnum} lacks variable {data_var!r}")
    if params.dce_chunk:
        ds = ds.chunk({"dce": params.dce_chunk})
    return Plan(chnlnum, ds, cal, status.astype(object).astype(str), aorkeys, times, calset, stimflsh, sub, src)


# ---------------------------------------------------------------- assemble (lazy)
def _reason_block(codes, *, aorkeys, status):
    out = np.array(status, dtype=object)
    for i in np.flatnonzero(codes):
        c, why = int(codes[i]), []
        if c & DCE_CODES["all_saturated"]:
            why.append("every read saturated in every pixel (first read at or above SATLEVEL): no slope")
        elif c & DCE_CODES["no_valid_pixel"]:
            why.append("no pixel has a valid slope")
        if c & DCE_CODES["no_responsivity"]:
            why.append(f"AOR {aorkeys[i]}: no valid stim flash (stim - background <= 0 in every stim DCE); "
                       "responsivity cannot be calibrated")
        if out[i] == "ok":
            out[i] = "; ".join(why)
    return out.astype(STR)


def _finish(ds, plan: Plan, params: BcdParams, extra_vars):
    """Keep the BCD variables, add the lazy ``status`` and the attrs of notes/mips_bcd.md."""
    chnl = plan.chnlnum
    codes = ds.dce_code.data.rechunk(-1)
    status = codes.map_blocks(_reason_block, aorkeys=plan.aorkeys, status=plan.status, dtype=STR)
    keep = ["bcd", "unc", "mask"] + extra_vars
    out = ds[keep].assign_coords(status=("dce", status))
    spec = group_spec(load_schema(BCD_SCHEMA), GROUPS[chnl])
    out = out.drop_vars([c for c in out.coords if c not in spec["variables"]])
    for name in list(out.variables):
        var = spec["variables"].get(name, {})
        out[name].attrs = {k: var[k] for k in ("units", "long_name") if k in var}
    counts = {int(k): int(v) for k, v in zip(*np.unique(plan.calset[plan.status == "ok"], return_counts=True))}
    main = plan.cal.main(counts)
    cs = None if main is None else plan.cal.sets[main]
    out.attrs = {
        "chnlnum": chnl, "band_um": BAND[chnl],
        "calibration": json.dumps(plan.cal.identities[main] if main is not None else {}, sort_keys=True),
        "calibration_sets": json.dumps([{"files": ident, "usable": not reason, "reason": reason}
                                        for ident, reason in zip(plan.cal.identities, plan.cal.reasons)],
                                       sort_keys=True),
        "fluxconv": float(cs.fluxconv) if cs is not None else float("nan"),
        "pipeline_version": PIPELINE_VERSION,
        "history": list(ds.attrs.get("history", [])),
        "distortion": json.dumps({k: cs.distortion[k] for k in _distortion_keys(cs.distortion)} if cs else {}),
        "mask_bits": json.dumps(mask_bits()),
        "store": plan.source,
    }
    if chnl > 1:
        out.attrs["responsivity_method"] = params.ge.resp_method
    return out


def _distortion_keys(h):
    keys = ["PXSCAL1", "PXSCAL2", "CRPIX1", "CRPIX2", "A_ORDER", "B_ORDER"]
    keys += [k for k in h if k[:2] in ("A_", "B_") and k[2:3].isdigit()]
    keys += [k for k in h if k[:3] in ("AP_", "BP_") and k[3:4].isdigit()] + \
        [k for k in ("AP_ORDER", "BP_ORDER") if k in h]
    return [k for k in dict.fromkeys(keys) if k in h]


def reports_of(chnlnum, status, ds, array="") -> list[DceReport]:
    """DceReport for every DCE whose status is not 'ok' (``status`` numpy; coords of ``ds`` numpy);
    ``array``: the name its line gives the array (default: the band)."""
    bad = np.flatnonzero(np.asarray(status).astype(object).astype(str) != "ok")
    return [DceReport(chnlnum, int(ds.aorkey.values[i]), int(ds.expid.values[i]), int(ds.dcenum.values[i]),
                      str(ds.source_file.values[i]), str(status[i]), array) for i in bad]


def assemble(plan: Plan, params: BcdParams = BcdParams()):
    """The lazy BCD Dataset of one array (nothing computed) and the plan-time DceReports."""
    ds = plan.ds
    if plan.chnlnum == 1:
        out = si_steps.pipeline(ds, plan, plan.cal, params.si)
        extra = ["slope", "difference", "replaced"]
    else:
        out = ramp_steps.pipeline(ds, plan, plan.cal, params.ge)
        extra = ["responsivity", "responsivity_unc", "ncr"]
    return _finish(out, plan, params, extra), reports_of(plan.chnlnum, plan.status, plan.ds)


def build_bcd(store, chnlnum, *, params: BcdParams = BcdParams()):
    """(lazy BCD xr.Dataset of notes/mips_bcd.md, [DceReport] of DCEs skipped at plan time)."""
    return assemble(plan_bcd(store, chnlnum, params=params), params)


# ---------------------------------------------------------------- on the runner
TABLES = {chnl: TableSpec(GROUPS[chnl], BCD_SCHEMA, GROUPS[chnl]) for chnl in (1, 2, 3)}
UNIT_COORDS = ("aorkey", "dceid", "source_file", "calset")


def _aor_runs(offset, aorkey, dceid, source_file, calset):
    """[(aorkey, start, stop, hash, calibration sets used)] of the runs of equal AORKEY in one block
    of per-DCE coordinates."""
    aorkey = np.asarray(aorkey)
    if aorkey.size == 0:
        return []
    edges = np.flatnonzero(np.diff(aorkey)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [aorkey.size]])
    src = np.asarray(source_file).astype(object).astype(str)
    return [(int(aorkey[a]), offset + int(a), offset + int(b),
             hash_strings(f"{int(dceid[i])}:{src[i]}:{int(calset[i])}" for i in range(a, b)),
             sorted({int(k) for k in np.asarray(calset)[a:b]}))
            for a, b in zip(starts, stops)]


def aor_units(ds, client=None):
    """[(aorkey, rows [[start, stop], ...], DCEs, input hash)] of the AORs of a raw group, in store
    order, from its per-DCE coordinates (one small task per chunk). The hash covers the unit's
    input: its DCEs and the calibration sets they use."""
    cols = [ds[k].data for k in UNIT_COORDS]
    edges = np.cumsum((0,) + tuple(cols[0].chunks[0]))
    blocks = [[c.blocks[i] for c in cols] for i in range(len(edges) - 1)]
    tasks = [dask.delayed(_aor_runs)(int(edges[i]), *blk) for i, blk in enumerate(blocks)]
    runs = [r for part in dask.compute(*tasks, scheduler=client or "sync") for r in part]
    sets = ds.attrs.get("calibration_sets", [])
    by_aor = {}
    for aor, a, b, h, used in runs:
        by_aor.setdefault(aor, []).append((a, b, h, used))
    out = []
    for aor, parts in sorted(by_aor.items(), key=lambda kv: kv[1][0][0]):
        used = sorted({k for p in parts for k in p[3]})
        cal = [json.dumps(sets[k] if 0 <= k < len(sets) else None, sort_keys=True) for k in used]
        out.append((aor, [[p[0], p[1]] for p in parts], sum(p[1] - p[0] for p in parts),
                    hash_strings([p[2] for p in parts] + cal)))
    return out


def dce_rows(done) -> dict:
    """{variable: numpy array} of every variable along ``dce`` of a computed Dataset (strings as str):
    a unit's rows for its store table."""
    rows = {}
    for name, v in done.variables.items():
        if v.dims and v.dims[0] == "dce":
            values = np.asarray(v.values)
            rows[name] = values.astype(object).astype(str) if values.dtype.kind in "OUT" else values
    return rows


@dataclass(frozen=True)
class MipsBcd(Pipeline):
    """MIPS raw -> level-1 BCDs on the runner: a unit is one AOR of one array; its BCDs go to
    the store group bcd24 / bcd70 / bcd160 and its SSC-style FITS files to OUT."""

    params: BcdParams = BcdParams()
    name = "mips_bcd"
    store_schema = "mips_store"

    def tables(self):
        return list(TABLES.values())

    def table_attrs(self, store):
        out = {}
        for chnl, t in TABLES.items():
            try:
                sets = open_committed(store, RAW_GROUPS[chnl]).attrs.get("calibration_sets", [])
            except Exception:  # noqa: BLE001 - a store without that array
                sets = []
            out[t.name] = {"chnlnum": chnl, "band_um": BAND[chnl], "pipeline_version": PIPELINE_VERSION,
                           "mask_bits": json.dumps(mask_bits()), "calibration_sets": json.dumps(sets, sort_keys=True),
                           "store_schema": BCD_SCHEMA}
        return out

    def units(self, store, client=None):
        units = []
        for chnl in (1, 2, 3):
            try:
                ds = open_committed(store, RAW_GROUPS[chnl])
            except Exception:  # noqa: BLE001 - a store without that group
                continue
            if ds.sizes["dce"] == 0:
                continue
            for aor, rows, n, h in aor_units(ds, client):
                units.append(Unit(f"m{BAND[chnl]}-{aor}", f"MIPS {BAND[chnl]} um AOR {aor}", h,
                                  {"chnlnum": chnl, "aorkey": aor, "rows": rows}, sizes={TABLES[chnl].name: n}))
        return units

    def _plan(self, store, unit):
        chnl = unit.info["chnlnum"]
        idx = np.concatenate([np.arange(a, b) for a, b in unit.info["rows"]])
        plan = plan_bcd(open_committed(store, RAW_GROUPS[chnl]).isel(dce=idx), chnl, params=self.params)
        plan.source = str(store)
        return plan

    def build_unit(self, store, unit):
        """The lazy graph ``compute_unit`` computes for ``unit``, built and not computed: [BCD Dataset]."""
        return [self._build(store, unit)[1]]

    def _build(self, store, unit):
        plan = self._plan(store, unit)
        return plan, assemble(plan, self.params)[0]

    def compute_unit(self, store, unit):
        chnl = unit.info["chnlnum"]
        plan, bcd = self._build(store, unit)
        done = bcd.compute()
        rows = dce_rows(done)
        status = rows["status"]
        reps = reports_of(chnl, status, done)
        ok = int((status == "ok").sum())
        counts = {f"{BAND[chnl]} um DCEs": int(status.size), f"{BAND[chnl]} um BCDs": ok,
                  f"{BAND[chnl]} um skipped": len(reps)}
        return UnitResult(rows={TABLES[chnl].name: rows}, counts=counts, problems=[r.line() for r in reps],
                          context={"attrs": dict(done.attrs), "plan": plan})

    def export_unit(self, store, out, unit, result, slots):
        from .bcd_export import write_bcd_files
        chnl = unit.info["chnlnum"]
        table = TABLES[chnl]
        n = sum(b - a for a, b in unit.info["rows"])
        done = read_slot(store, table, slots[table.name][0], n)
        done.attrs = dict(result.context["attrs"])
        if not (done.status.values.astype(object).astype(str) == "ok").any():
            return 0, []
        files = _export(write_bcd_files, done, result.context["plan"], Path(out))
        return len(files), []

    def describe(self, summary):
        c = summary.counts
        lines = []
        for band in (24, 70, 160):
            if f"{band} um DCEs" in c:
                lines.append(f"  {band:>3} um: {c[f'{band} um DCEs']} DCEs, {c[f'{band} um BCDs']} BCDs, "
                             f"{c[f'{band} um skipped']} skipped")
        return lines


def open_store(store, chnlnum) -> xr.Dataset:
    """The raw group of one array (CHNLNUM 1: mips24, 2: mips70, 3: mips160): lazy, cut to the last
    commit, validated against schemas/mips_store.yaml."""
    return Store(store).open_group(RAW_GROUPS[chnlnum])


def open_bcd(store, chnlnum) -> xr.Dataset:
    """The BCDs of one array kept in the store (written rows only, in unit order), lazy, validated."""
    ds = open_table(store, TABLES[chnlnum])
    validate_group(ds, load_schema(BCD_SCHEMA), GROUPS[chnlnum], check_chunks=False)
    return ds


def reduce_mips(store, out, *, client=None, progress=False, report=print, params: BcdParams = BcdParams(),
                wait: float = 0.0, redo=False, redo_failed=False):
    """Reduce every array of a MIPS store to BCDs on the runner (see reduce.runner): a RunSummary.

    Units (one AOR of one array) already done for this store, with the same inputs, parameters and
    ``out`` folder, are skipped (``redo``: do every unit again; ``redo_failed``: retry the failed
    ones); the BCDs are kept in the store (``open_bcd``), the FITS files written to ``out``.
    ``client``: a dask distributed Client (None: every unit in this process, one after the other)."""
    return run(MipsBcd(params), store, out, client=client, progress=progress, report=report, redo=redo,
               redo_failed=redo_failed, wait=wait)


def _export(write_files, done, plan, out):
    """Export the ok DCEs of one unit, one call per calibration set."""
    files = []
    out.mkdir(parents=True, exist_ok=True)
    status = done.status.values.astype(object).astype(str)
    calset = done.calset.values.astype(int)
    for k, cs in enumerate(plan.cal.sets):
        sel = np.flatnonzero((status == "ok") & (calset == k))
        if cs is None or not sel.size:
            continue
        part = done.isel(dce=sel)
        part.attrs = dict(done.attrs, calibration=json.dumps(plan.cal.identities[k], sort_keys=True),
                          fluxconv=float(cs.fluxconv))
        files += list(write_files(part, out, calibration=cs, version=__version__))
    return files


def validate_bcd(bcd: xr.Dataset) -> None:
    """Check a (lazy) BCD Dataset against schemas/mips_bcd.yaml (dims, dtypes, units)."""
    validate_group(bcd, load_schema(BCD_SCHEMA), GROUPS[int(bcd.attrs["chnlnum"])], check_chunks=False)


__all__ = ["BcdParams", "DceReport", "MipsBcd", "open_store", "plan_bcd", "assemble", "build_bcd", "reduce_mips",
           "open_bcd", "validate_bcd"]
