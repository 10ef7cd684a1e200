"""MIPS raw -> level-1 BCD for the 24, 70 and 160 um arrays, and ``reduce_mips`` (the CLI entry).

``plan_bcd`` loads the small per-DCE metadata and checks the calibration sets
(SHA-256 against the store's record); ``assemble`` builds the lazy BCD Dataset
of notes/mips_bcd.md with the steps of ``si24`` / ``ge`` (+ ``responsivity``);
``build_bcd`` = both. ``reduce_mips`` computes each array's BCD into the group
``bcd24``/``bcd70``/``bcd160`` of the same store (under the store lock, the
whole group replaced atomically) and exports the FITS files when
``reduce.mips.bcd_export`` is available.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from .. import __version__
from ..io.store import Store, StoreWriter, _quiet_zarr
from ..schemas import group_spec, load_schema, validate_group
from . import ge, si24
from .calib import BAND
from .ge import DCE_CODES, GeParams
from .responsivity import background_pairs, stim_subset
from .si24 import SiParams
from .steps import BCD_SCHEMA, GROUPS, PIPELINE_VERSION, RAW_GROUPS, CalTable, mask_bits

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

    def line(self):
        return f"SKIPPED {self.source_file} (MIPS {BAND[self.chnlnum]} um DCE {self.aorkey}/{self.expid:04d}/" \
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


def plan_bcd(source, chnlnum, *, params: BcdParams = BcdParams()) -> Plan:
    """Load per-DCE metadata (eager, small) and check calibration; decide plan-time skips.

    ``source``: a MIPS store path or the raw group Dataset (e.g. from Store.open_group).
    """
    if chnlnum not in GROUPS:
        raise ValueError(f"CHNLNUM must be 1, 2 or 3, got {chnlnum!r}")
    ds, src = _open(source, chnlnum)
    data_var = "raw" if chnlnum == 1 else "reads"
    coords = [n for n in ds.coords if ds[n].dims == ("dce",)]
    meta = {n: ds[n].values for n in coords}      # tiny per-DCE metadata: the one eager load
    ds = ds.assign_coords({n: ("dce", v, ds[n].attrs) for n, v in meta.items()})
    n = ds.sizes["dce"]
    cal = CalTable.load(ds.attrs.get("calibration_sets", []), chnlnum)
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


def reports_of(chnlnum, status, ds) -> list[DceReport]:
    """DceReport for every DCE whose status is not 'ok' (``status`` numpy; coords of ``ds`` numpy)."""
    bad = np.flatnonzero(np.asarray(status).astype(object).astype(str) != "ok")
    return [DceReport(chnlnum, int(ds.aorkey.values[i]), int(ds.expid.values[i]), int(ds.dcenum.values[i]),
                      str(ds.source_file.values[i]), str(status[i])) for i in bad]


def assemble(plan: Plan, params: BcdParams = BcdParams()):
    """The lazy BCD Dataset of one array (nothing computed) and the plan-time DceReports."""
    ds = plan.ds
    if plan.chnlnum == 1:
        out = si24.pipeline(ds, plan, plan.cal, params.si)
        extra = ["slope", "difference", "replaced"]
    else:
        out = ge.pipeline(ds, plan, plan.cal, params.ge)
        extra = ["responsivity", "ncr"]
    return _finish(out, plan, params, extra), reports_of(plan.chnlnum, plan.status, plan.ds)


def build_bcd(store, chnlnum, *, params: BcdParams = BcdParams()):
    """(lazy BCD xr.Dataset of notes/mips_bcd.md, [DceReport] of DCEs skipped at plan time)."""
    return assemble(plan_bcd(store, chnlnum, params=params), params)


# ---------------------------------------------------------------- writing into the store
def _encoding(ds, spec):
    enc = {}
    for name in ds.variables:
        var = spec["variables"].get(name)
        if var is None:
            continue
        enc[name] = {"chunks": tuple(var["chunks"])}
        if var["dtype"] == "float32":
            enc[name]["fill_value"] = np.float32(np.nan)
    return enc


def write_bcd_group(store, bcd: xr.Dataset, *, wait: float = 0.0) -> int:
    """Compute ``bcd`` into the store group bcdNN (replacing it) under the store lock; return DCEs written.

    Written with xarray/zarr into a temporary group beside it, then swapped in
    with two renames and committed (state.json lengths ``bcdNN/dce``) with
    StoreWriter(store, "mips_store") holding the lock: the level-0 groups are
    untouched.
    """
    store = Path(store)
    chnl = int(bcd.attrs["chnlnum"])
    group = GROUPS[chnl]
    spec = group_spec(load_schema(BCD_SCHEMA), group)
    bcd = bcd.chunk({"dce": spec["variables"]["bcd"]["chunks"][0]}) if bcd.sizes["dce"] else bcd
    for name in bcd.variables:     # per-DCE coordinates: one zarr chunk, one dask chunk
        if bcd[name].dims == ("dce",) and name not in ("responsivity",):
            bcd[name] = bcd[name].chunk(-1) if bcd[name].chunks else bcd[name]
    bcd = bcd.assign_coords({n: bcd[n] for n in bcd.coords})
    with StoreWriter(store, "mips_store", wait=wait) as w:
        tmp_name = f"{group}_tmp_{uuid.uuid4().hex[:8]}"
        tmp, final = store / tmp_name, store / group
        try:
            with _quiet_zarr():
                bcd.to_zarr(store, group=tmp_name, mode="w", consolidated=False, zarr_format=3,
                            encoding=_encoding(bcd, spec), compute=True)
            w.check_token()
            old = store / f"{group}_old_{uuid.uuid4().hex[:8]}"
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        w.commit(lengths={f"{group}/dce": int(bcd.sizes["dce"])}, ledger=[], quarantine=[])
        w.record_run({"command": "reduce mips", "group": group, "dces": int(bcd.sizes["dce"]),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "software": PIPELINE_VERSION})
    return int(bcd.sizes["dce"])


def open_bcd(store, chnlnum) -> xr.Dataset:
    """The committed BCD group of one array, lazy and validated against schemas/mips_bcd.yaml."""
    return Store(store, BCD_SCHEMA).open_group(GROUPS[chnlnum])


# ---------------------------------------------------------------- reduce_mips
@dataclass
class Summary:
    """What reduce_mips did, per array."""

    arrays: dict = field(default_factory=dict)   # band -> {"dces", "ok", "skipped"}
    skipped: list = field(default_factory=list)  # DceReport
    files: list = field(default_factory=list)    # exported paths
    notes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.skipped else 0

    def text(self) -> str:
        lines = [f"reduce mips: {sum(a['ok'] for a in self.arrays.values())} BCDs made, "
                 f"{len(self.skipped)} DCEs skipped, {len(self.files)} files written in {self.seconds:.1f} s"]
        for band, a in sorted(self.arrays.items()):
            lines.append(f"  {band:>3} um: {a['dces']} DCEs, {a['ok']} ok, {a['skipped']} skipped")
        lines += [f"  {r.line()}" for r in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _exporter():
    try:
        return importlib.import_module("reduce.mips.bcd_export").write_bcd_files
    except ModuleNotFoundError as exc:
        if exc.name != "reduce.mips.bcd_export":
            raise
        return None


def reduce_mips(store, out, *, client=None, progress=False, report=print, params: BcdParams = BcdParams(),
                wait: float = 0.0, export=True) -> Summary:
    """Reduce every array of a MIPS store to BCDs: into the store (bcd24/70/160), then FITS in ``out``.

    Returns a Summary (``exit_code`` 0: all DCEs reduced; 1: some DCEs skipped, each
    reported with its reason through ``report``).
    """
    t0 = time.perf_counter()
    store, out = Path(store), Path(out)
    summary = Summary()
    write_files = _exporter() if export else None
    if export and write_files is None:
        summary.notes.append("reduce.mips.bcd_export not available: BCDs kept in the store only")
    sched = dask.config.set(scheduler=client) if client is not None else contextlib.nullcontext()
    raw = Store(store)
    with sched:
        for chnl in (1, 2, 3):
            try:
                n = raw.open_group(RAW_GROUPS[chnl]).sizes["dce"]
            except Exception as exc:  # noqa: BLE001 - a store without that group
                summary.notes.append(f"{RAW_GROUPS[chnl]}: {exc}")
                continue
            if n == 0:
                continue
            plan = plan_bcd(store, chnl, params=params)
            bcd, _ = assemble(plan, params)
            if progress:
                report(f"MIPS {BAND[chnl]} um: reducing {n} DCEs")
            write_bcd_group(store, bcd, wait=wait)
            done = open_bcd(store, chnl)
            status = done.status.values.astype(object).astype(str)
            reps = reports_of(chnl, status, done)
            for r in reps:
                report(r.line())
            summary.skipped += reps
            summary.arrays[BAND[chnl]] = {"dces": n, "ok": int((status == "ok").sum()), "skipped": len(reps)}
            if write_files is not None and (status == "ok").any():
                summary.files += _export(write_files, done, plan, out)
    summary.seconds = time.perf_counter() - t0
    return summary


def _export(write_files, done, plan, out):
    """Export the ok DCEs of one array, one call per calibration set."""
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
