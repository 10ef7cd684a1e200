"""``skyreduce batch``: reprocess a whole mission from a manifest, in one command a batch job can run.

A manifest (YAML, or TOML when its name ends in ``.toml``) names, per instrument, the raw
folders, the store and the levels to run, the output root, and optionally the dask cluster
(keys of the ``skyreduce.cluster`` dask config) and the ``#SBATCH`` directives of the job
script. Relative paths are relative to the manifest's folder::

    name: swas-mission                # optional, shown in the status table
    output: products                  # products go to products/swas/ and products/mips/
    swas:
      raw: [raw/swas/day0005, raw/swas/day0006]
      store: stores/swas.zarr
      levels: [ingest, level1]        # default: ingest, level1 (MIPS also: level2)
    mips:
      raw: [raw/mips]
      cal: raw/mips/cal               # optional (default: cal/ beside the raw files)
      store: stores/mips.zarr
      levels: [ingest, level1, level2]   # level1: BCDs (imaging and SED); level2: mosaics and SED spectra
    cluster:                          # optional: skyreduce.cluster.* (CLI options win)
      n-workers: 8
      memory-limit: 6GiB
    sbatch:                           # optional: directives of --print-sbatch (CLI options win)
      partition: long
      time: "12:00:00"
      cpus: 8
      mem: 64G

:func:`run_batch` ingests what is new (ingest is incremental and idempotent), reduces every
unit not yet done (the runner skips done units; ``redo_failed`` retries the failed ones, ``redo``
everything), and writes the status table to the output root: ``status.tsv`` (one row per unit:
instrument, unit, label, status, reason) and ``status.json`` (the table and the run's summaries),
both atomically. Running it again resumes. On a dask cluster the run's dask performance report
(``distributed.performance_report``: task stream, worker profiles, bandwidth) is written beside
them as ``performance-report.html``, one per run, under its final name only once the run is over;
without a distributed client there is none, and ``status.json`` says so. :func:`render_sbatch`
renders the SLURM job script (``cluster/skyreduce-batch.sbatch.in``) that runs
``skyreduce batch MANIFEST`` in one allocation.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import ReduceError
from .io.atomic import atomic_path, atomic_write_text
from .runner.core import SchedulerLost

INSTRUMENTS = ("swas", "mips")
LEVELS = ("ingest", "level1", "level2")
DEFAULT_LEVELS = ("ingest", "level1")
INSTRUMENT_LEVELS = {"swas": ("ingest", "level1"), "mips": LEVELS}
TOP_KEYS = ("name", "output", "cluster", "sbatch") + INSTRUMENTS
INSTRUMENT_KEYS = {"swas": ("raw", "store", "levels"), "mips": ("raw", "cal", "store", "levels")}
SBATCH_KEYS = ("partition", "account", "time", "cpus", "mem", "job-name", "extra")
SBATCH_DEFAULTS = {"time": "24:00:00", "cpus": 8, "mem": "32G", "job-name": "skyreduce-batch"}
# cluster keys that name files or folders (resolved against the manifest's folder)
_CLUSTER_PATHS = ("scheduler-file", "tls-ca-file", "tls-cert", "tls-key", "local-directory")
PIPELINES = {("swas", "level1"): ("swas_level1",), ("mips", "level1"): ("mips_bcd", "mips_sed_bcd"),
             ("mips", "level2"): ("mips_mosaic", "mips_sed")}
"""The runner pipelines of each instrument and level, run in this order."""
TEMPLATE = "skyreduce-batch.sbatch.in"
PERFORMANCE_REPORT = "performance-report.html"


class ManifestError(ReduceError):
    """A manifest that cannot be run; ``problems``: one line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------- manifest
@dataclass(frozen=True)
class InstrumentSpec:
    name: str
    raw: tuple            # Paths (folders or files)
    store: Path
    levels: tuple
    products: Path        # <output>/<instrument>
    cal: Path | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    output: Path
    instruments: dict     # {"swas": InstrumentSpec, ...} in INSTRUMENTS order
    cluster: dict = field(default_factory=dict)   # flat {"skyreduce.cluster.<key>": value}
    sbatch: dict = field(default_factory=dict)

    def to_dict(self):
        return {"path": str(self.path), "name": self.name, "output": str(self.output),
                "instruments": {k: {"raw": [str(p) for p in v.raw], "store": str(v.store),
                                    "levels": list(v.levels), "products": str(v.products),
                                    "cal": None if v.cal is None else str(v.cal)}
                                for k, v in self.instruments.items()},
                "cluster": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.cluster.items()},
                "sbatch": dict(self.sbatch)}


def _read(path: Path):
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError([f"manifest {path}: cannot be read ({exc.strerror or exc})"]) from None
    if path.suffix.lower() == ".toml":
        import tomllib
        try:
            return tomllib.loads(data.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError([f"manifest {path}: not valid TOML: {exc}"]) from None
    import yaml
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ManifestError([f"manifest {path}: not valid YAML: {text}"]) from None


def _paths(value):
    """A path or a list of paths -> list (None for anything else)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _cluster_keys() -> dict:
    import dask

    import cluster  # noqa: F401 - registers the skyreduce.cluster defaults
    return dict(dask.config.get("skyreduce.cluster", default={}) or {})


def _flatten(prefix, value, defaults):
    """Dotted dask-config keys: a mapping given where the default is a mapping is merged key by key."""
    if isinstance(value, dict) and isinstance(defaults, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v, defaults.get(k)))
        return out
    return {prefix: value}


def load_manifest(path) -> Manifest:
    """Read and validate a manifest; raises ManifestError with one line per problem."""
    path = Path(path).absolute()
    data = _read(path)
    where = f"manifest {path}"
    if not isinstance(data, dict):
        raise ManifestError([f"{where}: expected a mapping of keys ({', '.join(TOP_KEYS)}), "
                             f"got {type(data).__name__}"])
    base = path.parent
    problems = []
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")

    def resolve(p):
        return (base / Path(p).expanduser()).resolve()

    output = data.get("output")
    if not isinstance(output, str) or not output:
        problems.append(f"{where}: 'output' (the folder for products and the status table) is missing")
        output = None
    else:
        output = resolve(output)
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        problems.append(f"{where}: 'name' must be a string")
        name = path.stem

    instruments, stores = {}, {}
    for inst in INSTRUMENTS:
        if inst not in data:
            continue
        sec = data[inst]
        if not isinstance(sec, dict):
            problems.append(f"{where}: '{inst}' must be a mapping with keys {', '.join(INSTRUMENT_KEYS[inst])}")
            continue
        for key in sec:
            if key not in INSTRUMENT_KEYS[inst]:
                problems.append(f"{where}: {inst}: unknown key {key!r} (allowed: {', '.join(INSTRUMENT_KEYS[inst])})")
        allowed = INSTRUMENT_LEVELS[inst]
        levels = sec.get("levels", list(DEFAULT_LEVELS))
        if isinstance(levels, str):
            levels = [levels]
        if not isinstance(levels, list) or not levels or not all(isinstance(v, str) for v in levels):
            problems.append(f"{where}: {inst}.levels: expected a list of levels (allowed: {', '.join(allowed)})")
            levels = []
        bad = [v for v in levels if v not in allowed]
        if bad:
            problems.append(f"{where}: {inst}.levels: unknown level {', '.join(map(repr, bad))} "
                            f"(allowed: {', '.join(allowed)})")
        levels = tuple(v for v in allowed if v in levels)
        store = sec.get("store")
        if not isinstance(store, str) or not store:
            problems.append(f"{where}: {inst}: 'store' (the zarr store of {inst.upper()}) is missing")
            store = None
        else:
            store = resolve(store)
            if store in stores:
                problems.append(f"{where}: {inst}.store: {store} is also the store of {stores[store]}")
            stores[store] = inst
            if "ingest" not in levels and levels and not store.exists():
                problems.append(f"{where}: {inst}.store: {store} does not exist (and the level 'ingest' "
                                "is not run)")
        raw = _paths(sec.get("raw", []))
        if raw is None:
            problems.append(f"{where}: {inst}.raw: expected a folder or a list of folders")
            raw = []
        raw = [resolve(p) for p in raw]
        for p in raw:
            if not p.exists():
                problems.append(f"{where}: {inst}.raw: no such folder: {p}")
        if "ingest" in levels and not raw:
            problems.append(f"{where}: {inst}.raw: the level 'ingest' needs raw folders")
        cal = sec.get("cal")
        if cal is not None:
            if not isinstance(cal, str):
                problems.append(f"{where}: {inst}.cal: expected a folder")
                cal = None
            else:
                cal = resolve(cal)
                if not cal.is_dir():
                    problems.append(f"{where}: {inst}.cal: no such folder: {cal}")
        if store is not None and output is not None:
            instruments[inst] = InstrumentSpec(inst, tuple(raw), store, levels, output / inst, cal)
    if not any(inst in data for inst in INSTRUMENTS):
        problems.append(f"{where}: names no instrument (give at least one of: {', '.join(INSTRUMENTS)})")

    cluster = {}
    section = data.get("cluster", {}) or {}
    if not isinstance(section, dict):
        problems.append(f"{where}: 'cluster' must be a mapping of skyreduce.cluster keys")
        section = {}
    known = _cluster_keys()
    for key, value in section.items():
        canon = str(key).replace("_", "-")
        if canon not in known:
            problems.append(f"{where}: cluster: unknown key {key!r} (skyreduce.cluster keys: "
                            f"{', '.join(sorted(known))})")
            continue
        if canon in _CLUSTER_PATHS and isinstance(value, str):
            value = str(resolve(value))
        cluster.update(_flatten(f"skyreduce.cluster.{canon}", value, known[canon]))

    sbatch = data.get("sbatch", {}) or {}
    if not isinstance(sbatch, dict):
        problems.append(f"{where}: 'sbatch' must be a mapping ({', '.join(SBATCH_KEYS)})")
        sbatch = {}
    for key in sbatch:
        if key not in SBATCH_KEYS:
            problems.append(f"{where}: sbatch: unknown key {key!r} (allowed: {', '.join(SBATCH_KEYS)})")
    sbatch = {k: v for k, v in sbatch.items() if k in SBATCH_KEYS}
    if problems:
        raise ManifestError(problems)
    return Manifest(path, name, output, instruments, cluster, sbatch)


# ---------------------------------------------------------------- running
@dataclass
class InstrumentResult:
    name: str
    store: str
    products: str
    levels: list
    ingest: dict | None = None      # new / already / rejected / rejected_files / rows / seconds
    summary: object = None          # the RunSummary of the levels run (merged over their pipelines)
    units: list = field(default_factory=list)   # rows: key, label, status, reason
    fatal: str = ""

    def exit_code(self) -> int:
        if self.fatal:
            return 2
        codes = [0]
        if self.ingest is not None:
            codes.append(1 if self.ingest["rejected"] else 0)
        if self.summary is not None:
            codes.append(self.summary.exit_code)
        return max(codes)

    def to_dict(self):
        s = self.summary
        return {"store": self.store, "products": self.products, "levels": self.levels, "ingest": self.ingest,
                "units": dict(s.units) if s is not None else None,
                "ran": s.ran if s is not None else 0,
                "level1": asdict(s) if s is not None else None,   # (the levels run, merged)
                "unit_rows": self.units, "fatal": self.fatal, "exit_code": self.exit_code()}


@dataclass
class BatchResult:
    manifest: Manifest
    instruments: dict = field(default_factory=dict)
    seconds: float = 0.0
    time: str = ""
    performance_report: dict = field(default_factory=lambda: {"path": None, "reason": "not started"})

    @property
    def exit_code(self) -> int:
        return max([0] + [r.exit_code() for r in self.instruments.values()])

    @property
    def ran(self) -> int:
        """Units computed in this run."""
        return sum(r.summary.ran for r in self.instruments.values() if r.summary is not None)

    @property
    def new_files(self) -> int:
        return sum(r.ingest["new"] for r in self.instruments.values() if r.ingest is not None)

    @property
    def nothing_new(self) -> bool:
        return self.ran == 0 and self.new_files == 0 and not any(r.fatal for r in self.instruments.values())

    def rows(self):
        """One row per unit: (instrument, unit key, label, status, reason)."""
        for inst, r in self.instruments.items():
            for u in r.units:
                yield inst, u["key"], u["label"], u["status"], u["reason"]

    def to_dict(self):
        return {"software": f"skyreduce {__version__}", "time": self.time, "seconds": round(self.seconds, 3),
                "manifest": self.manifest.to_dict(), "exit_code": self.exit_code, "units_run": self.ran,
                "new_files": self.new_files, "nothing_new": self.nothing_new,
                "performance_report": dict(self.performance_report),
                "instruments": {k: v.to_dict() for k, v in self.instruments.items()},
                "units": [dict(zip(("instrument", "unit", "label", "status", "reason"), row))
                          for row in self.rows()]}

    def text(self) -> str:
        out = self.manifest.output
        lines = [f"skyreduce batch {self.manifest.name} ({self.manifest.path}) -> {out}; {self.seconds:.1f} s"]
        head = ("instrument", "ingest new", "already", "rejected", "units", "done", "failed", "excluded", "run now")
        table = [head]
        for inst, r in self.instruments.items():
            ing = r.ingest or {}
            u = r.summary.units if r.summary is not None else {}
            table.append((inst, *(str(ing[k]) if ing else "-" for k in ("new", "already", "rejected")),
                          str(sum(u.values())) if u else "-",
                          *(str(u.get(k, 0)) if u else "-" for k in ("done", "failed", "excluded")),
                          str(r.summary.ran) if r.summary is not None else "-"))
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                  for row in table]
        for inst, r in self.instruments.items():
            if r.fatal:
                lines.append(f"  {inst}: FATAL: {r.fatal}")
            for u in r.units:
                if u["status"] != "done" or u["reason"]:
                    name = u["key"] if u["label"] == u["key"] else f"{u['key']} ({u['label']})"
                    lines.append(f"  {inst} unit {name}: {u['status']}: {u['reason']}")
            for rej in (r.ingest or {}).get("rejected_files", []):
                lines.append(f"  {inst} rejected {rej['path']}: {rej['reason']}")
        lines.append(f"  status table: {out / 'status.tsv'}, {out / 'status.json'}")
        perf = self.performance_report
        lines.append(f"  dask performance report: {perf['path']}" if perf["path"]
                     else f"  dask performance report: none ({perf['reason']})")
        if self.nothing_new:
            lines.append("  nothing new: every input was already ingested and every unit already recorded"
                         + (" (failed units are retried with --redo-failed)"
                            if any(r.summary is not None and r.summary.units["failed"]
                                   for r in self.instruments.values()) else ""))
        return "\n".join(lines)


def _clean(text) -> str:
    return " ".join(str(text).split())


def _pipeline(name):
    """The runner pipeline of that name (its default parameters, as the CLI runs it)."""
    if name == "swas_level1":
        from .swas.pipeline import SwasLevel1
        return SwasLevel1()
    if name == "mips_bcd":
        from .mips.pipeline import MipsBcd
        return MipsBcd()
    if name == "mips_mosaic":
        from .mosaic.pipeline import MipsMosaic
        return MipsMosaic()
    from .sed.pipeline import SedBcd, SedSpectrum
    return {"mips_sed_bcd": SedBcd, "mips_sed": SedSpectrum}[name]()


def merge_summaries(summaries):
    """One RunSummary of several pipelines' runs on one store (units, counts, problems, files and
    times added up; ``pipeline``: the names of those that had units, joined by '+')."""
    from .runner.core import RunSummary
    first = summaries[0]
    used = [s.pipeline for s in summaries if sum(s.units.values())] or [first.pipeline]
    out = RunSummary("+".join(used), first.store, first.out)
    for s in summaries:
        for k, v in s.units.items():
            out.units[k] = out.units.get(k, 0) + v
        for k, v in s.counts.items():
            out.counts[k] = out.counts.get(k, 0) + v
        out.problems += s.problems
        out.failed_units += s.failed_units
        out.notes += s.notes
        out.lines += s.lines
        out.files += s.files
        out.ran += s.ran
        out.skipped += s.skipped
        out.seconds += s.seconds
    return out


def _unit_rows(store, name, summary) -> list[dict]:
    """The units of the run's plan (the runner's units group, in unit order) with their records."""
    from .runner import open_units, read_records
    table = _pipeline(name).tables()[0]
    records = read_records(store, name)
    keys, labels = [], {}
    try:
        group = open_units(store, table)
    except Exception:  # noqa: BLE001 - no units group yet
        group = None
    if group is not None and "unit_key" in group:
        for key, label in zip(group["unit_key"].values, group["label"].values):
            keys.append(str(key))
            labels[str(key)] = str(label)
    for key in summary.failed_units:         # failed before a slot was given (sizing)
        if key not in labels:
            keys.append(key)
    rows = []
    for key in keys:
        rec = records.get(key) or {"status": "failed",
                                   "reason": "no record of this unit after the run (its task was lost)"}
        reason = rec.get("reason", "")
        if rec.get("problems"):
            reason = "; ".join(([reason] if reason else []) + ["problems: " + "; ".join(rec["problems"])])
        rows.append({"key": key, "label": rec.get("label", labels.get(key, key)), "status": rec["status"],
                     "reason": _clean(reason)})
    return rows


def _ingest(spec: InstrumentSpec, *, client, progress, report, wait):
    if spec.name == "swas":
        from .swas.ingest import ingest_swas
        s = ingest_swas(list(spec.raw), spec.store, client=client, progress=progress, report=report, wait=wait)
    else:
        from .mips.ingest import ingest_mips
        s = ingest_mips(list(spec.raw), spec.store, cal_dir=spec.cal, client=client, progress=progress,
                        report=report, wait=wait)
    return {"new": len(s.ingested), "already": len(s.already), "rejected": len(s.rejected),
            "rejected_files": [{"path": str(r.path), "reason": r.reason} for r in s.rejected],
            "rows": dict(s.rows), "raw_bytes": int(s.raw_bytes), "seconds": round(s.seconds, 3)}


def _reduce(spec: InstrumentSpec, level, *, client, progress, report, wait, redo, redo_failed):
    """[(pipeline name, RunSummary)] of one level's pipelines, in order."""
    from .runner import run
    return [(name, run(_pipeline(name), spec.store, spec.products, client=client, progress=progress, report=report,
                       wait=wait, redo=redo, redo_failed=redo_failed))
            for name in PIPELINES[(spec.name, level)]]


def run_batch(manifest, *, client=None, redo=False, redo_failed=False, progress=False, report=None,
              wait=0.0) -> BatchResult:
    """Ingest what is new and reduce every unit not yet done, for each instrument of ``manifest``
    (a path or a :class:`Manifest`); write ``status.tsv`` and ``status.json`` to the output root.

    ``client``: a dask distributed Client (None: everything in this process). ``report``: receives
    one line per rejected input, failed unit or problem (default: standard error). An error that
    stops one instrument (its store locked by another writer, a store of the wrong kind) is recorded
    as fatal for it (exit code 2); the other instruments still run."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    if report is None:
        report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    result = BatchResult(manifest, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.output.mkdir(parents=True, exist_ok=True)
    try:
        with _performance_report(client, manifest.output / PERFORMANCE_REPORT, result.performance_report):
            _run_instruments(manifest, result, client=client, redo=redo, redo_failed=redo_failed,
                             progress=progress, report=report, wait=wait)
    except SchedulerLost:            # the status so far (what is recorded stays done), then exit 2
        result.seconds = time.perf_counter() - t0
        write_status(result)
        raise
    result.seconds = time.perf_counter() - t0
    write_status(result)
    return result


def _run_instruments(manifest, result, *, client, redo, redo_failed, progress, report, wait):
    for inst, spec in manifest.instruments.items():
        r = result.instruments[inst] = InstrumentResult(inst, str(spec.store), str(spec.products), list(spec.levels))
        try:
            if "ingest" in spec.levels:
                r.ingest = _ingest(spec, client=client, progress=progress, report=report, wait=wait)
            runs = []
            for level in ("level1", "level2"):
                if level not in spec.levels:
                    continue
                if not spec.store.exists():
                    raise ReduceError(f"{spec.store}: no store to reduce (nothing ingested yet)")
                runs += _reduce(spec, level, client=client, progress=progress, report=report, wait=wait,
                                redo=redo, redo_failed=redo_failed)
            if runs:
                r.summary = merge_summaries([s for _, s in runs])
                r.units = [row for name, s in runs if sum(s.units.values()) or name == runs[0][0]
                           for row in _unit_rows(spec.store, name, s)]
        except SchedulerLost as exc:       # the cluster is gone: the other instruments cannot run either
            r.fatal = _clean(exc)
            report(f"FATAL {inst}: {r.fatal}")
            raise
        except ReduceError as exc:
            r.fatal = _clean(exc)
            report(f"FATAL {inst}: {r.fatal}")
        except OSError as exc:              # e.g. a file where the products folder should be
            r.fatal = _clean(f"{type(exc).__name__}: {exc}")
            report(f"FATAL {inst}: {r.fatal}")


@contextlib.contextmanager
def _performance_report(client, path: Path, status: dict):
    """dask's performance report of what runs inside, written to ``path`` when it ends (under a
    temporary name until then, so a run killed half-way leaves none). ``status`` gets ``path`` (None
    when none was written) and ``reason``: no distributed client (the batch ran in this process), or
    why dask could not write it. An exception of the run itself leaves no report and goes on up."""
    status.update(path=None, reason="")
    if client is None:
        status["reason"] = "the batch ran without a dask distributed client (in this process)"
        yield
        return
    from distributed import performance_report
    stack = contextlib.ExitStack()
    try:
        tmp = stack.enter_context(atomic_path(path))
        stack.enter_context(client.as_current())
        stack.enter_context(performance_report(filename=str(tmp)))
    except Exception as exc:  # noqa: BLE001 - no report is no reason not to run the batch
        stack.close()
        status["reason"] = _clean(f"dask could not start it: {type(exc).__name__}: {exc}")
        yield
        return
    with stack:                  # the run's own exception: the temporary is removed, no report
        yield
        try:
            stack.close()        # dask writes the report, then it is renamed to its final name
        except Exception as exc:  # noqa: BLE001
            status["reason"] = _clean(f"dask could not write it: {type(exc).__name__}: {exc}")
            return
    status["path"] = str(path)


def write_status(result: BatchResult) -> tuple[Path, Path]:
    """``status.tsv`` and ``status.json`` in the output root, each written atomically."""
    out = result.manifest.output
    lines = ["\t".join(("instrument", "unit", "label", "status", "reason"))]
    lines += ["\t".join(_clean(c) for c in row) for row in result.rows()]
    tsv = atomic_write_text(out / "status.tsv", "\n".join(lines) + "\n")
    js = atomic_write_text(out / "status.json", json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    return tsv, js


def cluster_config(manifest: Manifest) -> dict:
    """The manifest's ``cluster:`` section as dotted dask-config keys, for ``dask.config.set``."""
    return dict(manifest.cluster)


# ---------------------------------------------------------------- sbatch script
def _template() -> str:
    from importlib import resources
    return resources.files("cluster").joinpath(TEMPLATE).read_text()


def _skyreduce_command() -> str:
    """The skyreduce executable of this installation (beside the interpreter), else ``skyreduce``."""
    here = Path(sys.executable).parent / "skyreduce"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("skyreduce") or "skyreduce"


def render_sbatch(manifest, *, partition=None, time=None, cpus=None, mem=None, account=None, job_name=None,
                  extra=(), options=(), skyreduce=None) -> str:
    """The SLURM job script that runs ``skyreduce batch MANIFEST`` inside one allocation.

    The dask cluster is a LocalCluster of the allocation's cores: one single-threaded worker per
    CPU of the task (``--workers $SLURM_CPUS_PER_TASK``), the job's memory split between them.
    Directives: the arguments, else the manifest's ``sbatch:`` section, else ``SBATCH_DEFAULTS``
    (partition and account are left out unless given). ``extra``: more ``#SBATCH`` options
    (``--qos=long``); ``options``: more options of ``skyreduce batch`` (``--redo-failed``).
    The log is ``<output>/logs/skyreduce-batch-<jobid>.log``; that folder must exist when the job
    starts (``skyreduce batch --print-sbatch`` creates it)."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    backend = manifest.cluster.get("skyreduce.cluster.backend", "local")
    if backend != "local":
        raise ReduceError(f"{manifest.path}: cluster backend {backend!r}: the job script runs a LocalCluster "
                          "inside its own allocation; with a batch backend run `skyreduce batch` on the login "
                          "node instead (it submits the worker jobs itself)")
    conf = {**SBATCH_DEFAULTS, **manifest.sbatch}
    given = {"partition": partition, "account": account, "time": time, "cpus": cpus, "mem": mem,
             "job-name": job_name}
    conf.update({k: v for k, v in given.items() if v is not None})
    extra = list(conf.get("extra") or []) + list(extra)
    try:
        cpus = int(conf["cpus"])
    except (TypeError, ValueError):
        cpus = 0
    if cpus < 1:
        raise ReduceError(f"sbatch cpus: expected a positive integer, got {conf['cpus']!r}")
    for key in ("partition", "account", "time", "mem", "job-name"):
        if conf.get(key) is not None and any(c in str(conf[key]) for c in "\n\r \t"):
            raise ReduceError(f"sbatch {key}: no spaces or line breaks allowed, got {conf[key]!r}")
    log = manifest.output / "logs" / "skyreduce-batch-%j.log"
    directives = [f"--job-name={conf['job-name']}", "--nodes=1", "--ntasks=1", f"--cpus-per-task={cpus}",
                  f"--mem={conf['mem']}", f"--time={conf['time']}"]
    for key in ("partition", "account"):
        if conf.get(key):
            directives.append(f"--{key}={conf[key]}")
    directives += [f"--output={log}", "--open-mode=append"]
    directives += [str(e) if str(e).startswith("-") else f"--{e}" for e in extra]
    values = {
        "DIRECTIVES": "\n".join(f"#SBATCH {d}" for d in directives),
        "MANIFEST": shlex.quote(str(manifest.path)),
        "SKYREDUCE": shlex.quote(skyreduce or _skyreduce_command()),
        "OPTIONS": " ".join(shlex.quote(o) for o in options),
        "LOG": str(log),
        "OUTPUT": str(manifest.output),
        "VERSION": __version__,
    }
    text = _template()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise AssertionError(f"unfilled placeholder in {TEMPLATE}: {text[text.index('{{'):][:40]}")
    return text


__all__ = ["Manifest", "InstrumentSpec", "ManifestError", "BatchResult", "load_manifest", "run_batch",
           "write_status", "render_sbatch", "cluster_config", "LEVELS", "INSTRUMENTS"]
