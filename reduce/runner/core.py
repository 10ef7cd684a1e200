"""The one pipeline runner: plan units on the client, compute, write and export them on workers.

A pipeline (SWAS level 1, MIPS BCDs, later mosaics and trends) is a ``Pipeline``
subclass that says

- ``units(store, client)``: its units of work (``Unit``: key, input hash, small info),
  from per-unit metadata only (the client never loads per-scan or per-pixel data);
- ``tables()``: its output tables in the store (``runner.tables``), each unit owning
  whole chunks of them;
- ``size_unit(store, unit)``: rows per table (run on a worker when ``Unit.sizes`` is None);
- ``compute_unit(store, unit)``: build the unit's lazy graph from the steps and compute
  it (on the worker that runs the task) -> ``UnitResult`` (rows per table, counts,
  problem lines);
- ``export_unit(store, out, unit, result, slots)``: write the unit's FITS products from
  what is now in the store;
- ``finish(store, out, records)``: small indexes and the run log on the client.

``run(pipeline, store, out, client=...)`` does the rest the same way for every
pipeline: holds the store's write lock, skips units already done with the same
input and parameter hashes (``redo``/``redo_failed`` to override), allocates slots,
runs at most a few units per worker at a time, records each unit's outcome in
``STORE/.skyreduce/units/<pipeline>/<key>.json`` (written last by the worker: a
unit killed half-way is simply done again), and returns one ``RunSummary`` whose
exit code counts every failure (compute, store write, export).

Failures on a cluster (settings in ``cluster/skyreduce-cluster.yaml``):

- a unit that raises (a corrupted chunk, a bad calibration) fails deterministically: its
  task catches the error and records the unit as failed with the reason, so dask never
  retries it (``skyreduce.cluster.retries``, 0, is also what the runner's tasks are
  submitted with); ``--redo-failed`` retries it in a later run;
- a unit whose worker dies while it runs (killed, out of memory, node or job lost) is run
  again on another worker; its task notes each start in
  ``STORE/.skyreduce/units/<pipeline>/<key>.starts`` before it computes, so the unit itself
  counts how often it was lost: after ``skyreduce.cluster.allowed-failures`` + 1 losses
  it is recorded as failed ("lost with its worker N times") and the run goes on. The count
  is the unit's own, not the scheduler's (which blames every task queued on a dead worker,
  and whose ``distributed.scheduler.allowed-failures`` may differ on a scheduler you join):
  a task the scheduler gives up on (``KilledWorker``) while its unit is below the limit is
  submitted again (at most allowed-failures + 1 times);
- the scheduler lost (killed, its node gone): its tasks are gone with it, so the run stops
  at once with ``SchedulerLost`` (the command exits 2 with "lost the dask scheduler at
  ADDRESS ...; rerun the same command to resume") instead of waiting for the client to
  reconnect; records of finished units stay and the rerun does the rest.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from .. import __version__
from ..errors import ReduceError
from ..faults import fault_point
from ..io.atomic import atomic_write_text, remove_stale_temporaries
from ..io.store import META, StoreWriter, _quiet_zarr, check_lock_token
from ..progress import Progress
from .tables import TableSpec, ensure_table, open_units, units_path, write_slot

log = logging.getLogger(__name__)

STATUSES = ("done", "failed", "excluded")
LOST = "task lost with its worker"     # start of the error text of a task that dask gave up on


class SchedulerLost(ReduceError):
    """The client lost its dask scheduler in the middle of a run (the run stops; rerun to resume)."""


@dataclass(frozen=True)
class Unit:
    """One unit of work. ``key``: stable and file-name safe; ``info``: small, JSON-able."""

    key: str
    label: str
    input_hash: str
    info: dict
    sizes: dict | None = None     # rows per table when known without computing


@dataclass
class UnitResult:
    """What a unit's computation gives: status 'done' or 'excluded' (with reason), rows per
    table (numpy, along the table's row dim), counts (summed over units in the summary),
    problems (one line each: an item that could not be reduced), log lines, and small
    ``context`` the export needs (attrs, per-item statistics)."""

    status: str = "done"
    reason: str = ""
    rows: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    log: list = field(default_factory=list)
    context: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)     # lines for the user that are not problems


class Pipeline:
    """Base class of the runner's pipelines (see the module docstring)."""

    name = "pipeline"
    store_schema = ""       # schema of the store it reads (for the write lock)
    title = ""

    def params_hash(self) -> str:
        return hashlib.sha256(repr(self.params).encode()).hexdigest()[:16]

    def tables(self) -> list[TableSpec]:
        raise NotImplementedError

    def table_attrs(self, store) -> dict:
        """{table name: group attrs} written when the tables are created."""
        return {}

    def units(self, store, client=None) -> list[Unit]:
        raise NotImplementedError

    def size_unit(self, store, unit: Unit) -> dict:
        raise NotImplementedError

    def build_unit(self, store, unit: Unit) -> list:
        """The lazy dask collections that ``compute_unit`` computes for ``unit``, built, not computed
        (benchmarks/bench_scale.py counts their tasks at mission scale)."""
        raise NotImplementedError

    def compute_unit(self, store, unit: Unit) -> UnitResult:
        raise NotImplementedError

    def export_unit(self, store, out, unit: Unit, result: UnitResult, slots: dict) -> tuple[int, list]:
        """Write the products of one unit; returns (files written, problem lines)."""
        return 0, []

    def finish(self, store, out, records: list[dict], summary: "RunSummary") -> None:
        pass

    def describe(self, summary: "RunSummary") -> list[str]:
        """Lines of the summary table (counts of items)."""
        return [f"  {k}: {v}" for k, v in sorted(summary.counts.items())]


# ---------------------------------------------------------------- unit records
def records_dir(store, name) -> Path:
    return Path(store) / META / "units" / name


def read_records(store, name) -> dict[str, dict]:
    """{unit key: record} of every unit recorded in the store for pipeline ``name``."""
    out = {}
    folder = records_dir(store, name)
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            rec = _load_record(path)
            if rec is not None:
                out[rec["key"]] = rec
    return out


def _load_record(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None                          # a torn record is no record: the unit is redone


def _read_record(store, name, key):
    """The record of one unit, or None."""
    return _load_record(records_dir(store, name) / f"{key}.json")


def _write_record(store, name, record):
    folder = records_dir(store, name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{record['key']}.json", json.dumps(record, sort_keys=True, indent=1))
    with contextlib.suppress(OSError):         # the unit's starts: the record holds their number
        (folder / f"{record['key']}.starts").unlink()


def _remove_record(store, name, key):
    """Forget a unit's record and its count of starts (before it is run again)."""
    for suffix in (".json", ".starts"):
        try:
            (records_dir(store, name) / f"{key}{suffix}").unlink()
        except FileNotFoundError:
            pass


def _note_start(store, name, key) -> int:
    """Append one line (pid, worker, time) to the unit's ``.starts`` file; returns the starts so far,
    this one included. Every earlier start of this run died with its worker: one that ended wrote
    the unit's record, and a task that finds the record returns it instead of starting again."""
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    line = json.dumps({"pid": os.getpid(), "worker": worker, "time": time.time()}) + "\n"
    path = records_dir(store, name) / f"{key}.starts"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())          # one small O_APPEND write: lines never interleave
    finally:
        os.close(fd)
    return len(unit_starts(store, name, key))


def unit_starts(store, name, key) -> list[dict]:
    """The starts of a unit noted since it was last scheduled: one {pid, worker, time} each."""
    try:
        text = (records_dir(store, name) / f"{key}.starts").read_text()
    except FileNotFoundError:
        return []
    return [_start(line) for line in text.splitlines() if line.strip()]


def _start(line):
    try:
        return json.loads(line)
    except ValueError:                       # torn (a shared file system): a start all the same
        return {}


def _lost_reason(times, allowed):
    return (f"lost with its worker {times} times (the worker process died while the unit ran: killed, "
            f"out of memory or crashed; skyreduce.cluster.allowed-failures = {allowed})")


# ---------------------------------------------------------------- summary
@dataclass
class RunSummary:
    """Outcome of a run over every unit of the store (done earlier or now)."""

    pipeline: str
    store: str
    out: str
    units: dict = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    counts: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)   # failed units' reasons and items' problems
    failed_units: list = field(default_factory=list)
    files: int = 0
    ran: int = 0             # units computed in this run
    skipped: int = 0         # units already done
    seconds: float = 0.0
    lines: list = field(default_factory=list)     # pipeline's table
    notes: list = field(default_factory=list)     # units' notes (not problems: the exit code ignores them)

    @property
    def exit_code(self) -> int:
        return 1 if (self.units["failed"] or self.problems) else 0

    def add(self, rec):
        self.units[rec["status"]] = self.units.get(rec["status"], 0) + 1
        for k, v in rec.get("counts", {}).items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.files += int(rec.get("files", 0))
        if rec["status"] == "failed":
            self.failed_units.append(rec["key"])
            self.problems.append(f"unit {rec['label']}: {rec['reason']}")
        self.problems += rec.get("problems", [])
        self.notes += rec.get("notes", [])

    def text(self, max_problems: int = 50) -> str:
        u = self.units
        head = (f"{self.pipeline} on {self.store}: {sum(u.values())} units: {u['done']} done, "
                f"{u['failed']} failed, {u['excluded']} excluded ({self.ran} run now, {self.skipped} done "
                f"before); {self.files} product files in {self.out}; {self.seconds:.1f} s")
        lines = [head] + self.lines
        if self.notes:
            lines.append(f"  notes ({len(self.notes)}):")
            lines += [f"    {n}" for n in self.notes[:max_problems]]
        if self.problems:
            lines.append(f"  problems ({len(self.problems)}):")
            lines += [f"    {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"    ... {len(self.problems) - max_problems} more in the run log")
        return "\n".join(lines)


# ---------------------------------------------------------------- worker side
_SUMMARY_KEYS = ("key", "status", "reason", "files", "problems")


def _run_unit(pipeline: Pipeline, store, out, unit: Unit, slots: dict, token: str, allowed_failures: int) -> dict:
    """Compute, write and export one unit; record and return its outcome (small dict).

    A unit started again after its worker died (dask reschedules the task) first looks for its
    record: a start that got that far has done the unit. It fails without computing once its
    worker died more than ``allowed_failures`` times while it ran."""
    t0 = time.perf_counter()
    done = _read_record(store, pipeline.name, unit.key)
    if done is not None:
        return {k: done[k] for k in _SUMMARY_KEYS}
    starts = _note_start(store, pipeline.name, unit.key)
    fault_point(f"unit_started:{unit.key}")
    rec = {"key": unit.key, "label": unit.label, "input_hash": unit.input_hash, "out": str(out),
           "params_hash": pipeline.params_hash(), "software": f"skyreduce {__version__}",
           "status": "failed", "reason": "", "counts": {}, "problems": [], "log": [], "files": 0, "rows": {},
           "attempts": starts, "slots": {name: list(slot) for name, slot in slots.items()}}
    stage = "compute"
    try:
        if starts - 1 > allowed_failures:
            raise _Lost(_lost_reason(starts - 1, allowed_failures))
        with dask.config.set(scheduler="sync"):
            result = pipeline.compute_unit(store, unit)
            rec.update(status=result.status, reason=result.reason, counts=result.counts,
                       problems=list(result.problems), log=list(result.log), notes=list(result.notes))
            stage = "store write"
            check_lock_token(store, token)
            for table in pipeline.tables():
                if table.name in result.rows:
                    start, capacity = slots[table.name]
                    rec["rows"][table.name] = write_slot(store, table, start, capacity, result.rows[table.name])
            fault_point("unit_written")
            if result.status == "done":
                stage = "export"
                files, problems = pipeline.export_unit(store, out, unit, result, slots)
                rec["files"] = files
                rec["problems"] += problems
                if problems:                   # products missing: a failure that --redo-failed retries
                    rec.update(status="failed", reason=f"export: {len(problems)} problem(s), the rest written")
    except _Lost as exc:
        rec.update(status="failed", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one unit's failure is reported, the run goes on
        rec.update(status="failed", reason=f"{stage}: {type(exc).__name__}: {exc}")
        rec["log"].append(traceback.format_exc(limit=8))
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    try:
        check_lock_token(store, token)
        _write_record(store, pipeline.name, rec)
    except Exception as exc:  # noqa: BLE001
        rec.update(status="failed", reason=f"unit record not written: {type(exc).__name__}: {exc}")
    return {k: rec[k] for k in _SUMMARY_KEYS}


def compute_graph(*graphs):
    """Compute a unit's own lazy graph(s) from inside ``Pipeline.compute_unit``: a tuple of results.

    On a dask worker (a run with a client) the graph's tasks go to the whole cluster, and the
    unit's task secedes from its worker's thread pool while it waits (``worker_client``): a unit
    bigger than one core, such as a mosaic of thousands of BCDs, uses every worker. Without a
    worker (a run without a client, tests) it is computed here, synchronously."""
    try:
        from distributed import get_worker, worker_client
        get_worker()
    except (ImportError, ValueError):
        with dask.config.set(scheduler="sync"):
            return dask.compute(*graphs)
    with worker_client() as client:
        return tuple(client.gather(client.compute(list(graphs))))


class _Lost(Exception):
    """A unit whose worker died too often: failed without computing."""


def _size_unit(pipeline, store, unit):
    with dask.config.set(scheduler="sync"):
        return unit.key, pipeline.size_unit(store, unit)


# ---------------------------------------------------------------- client side
def _scheduler_lost(client, exc=None) -> bool:
    """True when ``client`` has lost its scheduler (``exc``: the error a call or a future gave)."""
    if client is None:
        return False
    if getattr(exc, "reason", None) == "scheduler-connection-lost":    # FutureCancelledError
        return True
    return client.status in ("connecting", "closing", "closed")


def _map(client, fn, items, *, progress: Progress, window, again=None):
    """Yield (item, fn(*item) or None, error text) as tasks finish, at most ``window()`` in flight on
    the cluster (in this process, one after the other, without one). A task that raises or is lost
    with its worker gives its error text; the others go on. ``again(item)``: whether a task lost
    with its worker (``KilledWorker``) is submitted once more. Losing the scheduler raises (its
    tasks are gone with it)."""
    if client is None:
        for item in items:
            try:
                result, err = fn(*item), ""
            except Exception as exc:  # noqa: BLE001
                result, err = None, f"{type(exc).__name__}: {exc}"
            progress.advance()
            yield item, result, err
        return
    from distributed import KilledWorker, as_completed
    items = iter(items)
    pending, of = as_completed(), {}
    retries = int(dask.config.get("skyreduce.cluster.retries", 0))

    def submit(item):
        fut = client.submit(fn, *item, pure=False, retries=retries)
        of[fut.key] = item
        pending.add(fut)

    for item in items:
        submit(item)
        if pending.count() >= window():
            break
    for fut in pending:
        item = of.pop(fut.key)
        try:
            result, err = fut.result(), ""
        except Exception as exc:  # noqa: BLE001
            if _scheduler_lost(client, exc):
                raise
            if isinstance(exc, KilledWorker) and again is not None and again(item):
                fut.release()
                submit(item)
                continue
            result = None
            err = f"{LOST} ({exc})" if isinstance(exc, KilledWorker) else f"{type(exc).__name__}: {exc}"
        fut.release()
        progress.advance()
        while pending.count() < window():
            nxt = next(items, None)
            if nxt is None:
                break
            submit(nxt)
        yield item, result, err


def _failed_record(pipeline, unit, out, reason, attempts=0):
    """The record of a unit whose task never wrote one (written by the client)."""
    return {"key": unit.key, "label": unit.label, "input_hash": unit.input_hash, "out": str(out),
            "params_hash": pipeline.params_hash(), "software": f"skyreduce {__version__}", "status": "failed",
            "reason": reason, "counts": {}, "problems": [], "log": [], "files": 0, "rows": {},
            "attempts": attempts}


def _kept_slots(store, pipeline, records) -> dict:
    """Slots {key: {table: (start, capacity)}} already given to units: from the units group, and
    from the units' records (written last and atomically by each unit's task, so they win and
    they survive a run killed while it rewrote the units group)."""
    tables = pipeline.tables()
    kept = {}
    old = open_units(store, tables[0])
    columns = [f"{t.name}_{c}" for t in tables for c in ("start", "capacity")]
    if old is not None and all(c in old for c in ["unit_key"] + columns):
        for i, key in enumerate(_strings(old["unit_key"].values)):
            kept[key] = {t.name: (int(old[f"{t.name}_start"].values[i]), int(old[f"{t.name}_capacity"].values[i]))
                         for t in tables}
    for key, rec in records.items():
        if rec.get("slots"):
            kept[key] = {t.name: tuple(rec["slots"].get(t.name, (0, 0))) for t in tables}
    return kept


def _allocation(pipeline, units, sizes, kept):
    """Slots {key: {table: (start, capacity)}} in unit order; ``kept`` (``_kept_slots``) where a
    unit's slot still fits, new slots at the end of the tables otherwise."""
    tables = pipeline.tables()
    ends = {t.name: max([s[t.name][0] + s[t.name][1] for s in kept.values()], default=0) for t in tables}
    slots = {}
    for u in units:
        need = sizes.get(u.key)
        old_slot = kept.get(u.key)
        if need is None:          # done before and unchanged: keep its slot as it is
            slots[u.key] = old_slot
            continue
        slot = {}
        for t in tables:
            cap = t.capacity(int(need.get(t.name, 0))) if need.get(t.name, 0) else 0
            if old_slot is not None and old_slot[t.name][1] >= cap:
                slot[t.name] = old_slot[t.name]
            else:
                slot[t.name] = (ends[t.name], cap)
                ends[t.name] += cap
        slots[u.key] = slot
    return slots, ends


def _strings(values) -> list[str]:
    return [str(v) for v in values]


def _write_units_group(store, pipeline, units, slots, records):
    """The units group (client; one small row per unit): allocation, hashes, status, rows written."""
    tables = pipeline.tables()
    keys = [u.key for u in units if slots.get(u.key)]
    by_key = {u.key: u for u in units}
    data = {"unit_key": ("unit", np.array(keys, dtype=object)),
            "label": ("unit", np.array([by_key[k].label for k in keys], dtype=object)),
            "input_hash": ("unit", np.array([by_key[k].input_hash for k in keys], dtype=object)),
            "status": ("unit", np.array([records.get(k, {}).get("status", "pending") for k in keys],
                                        dtype=object)),
            "reason": ("unit", np.array([records.get(k, {}).get("reason", "") for k in keys],
                                        dtype=object))}
    for t in tables:
        data[f"{t.name}_start"] = ("unit", np.array([slots[k][t.name][0] for k in keys], np.int64))
        data[f"{t.name}_capacity"] = ("unit", np.array([slots[k][t.name][1] for k in keys], np.int64))
        data[f"{t.name}_count"] = ("unit", np.array([records.get(k, {}).get("rows", {}).get(t.name, 0)
                                                     for k in keys], np.int64))
    ds = xr.Dataset(data, attrs={"pipeline": pipeline.name, "title": f"units of work of {pipeline.name}"})
    with _quiet_zarr():
        ds.to_zarr(store, group=units_path(tables[0]), mode="w", consolidated=False, zarr_format=3)


def _stale(rec, unit, phash, out, redo_failed):
    """A unit is done again when never recorded, when its input, parameters or output folder
    changed, or (``redo_failed``) when it failed."""
    if rec is None:
        return True
    if rec.get("input_hash") != unit.input_hash or rec.get("params_hash") != phash or rec.get("out") != out:
        return True
    return redo_failed and rec.get("status") == "failed"


def window_size(n_workers, per_worker=2, floor=8) -> int:
    """Units in flight at most: ``per_worker`` for each worker there now (a batch cluster's workers
    come and go), at least ``floor`` so that an adaptive cluster sees work to scale up for."""
    return max(floor, per_worker * n_workers)


def _window(client, per_worker, floor=8):
    """``window_size`` for the workers of ``client`` now (asked at most once a second)."""
    if client is None:
        return lambda: 1
    seen = {"at": -1.0, "n": 0}

    def window():
        now = time.monotonic()
        # ask the scheduler at most once a second, and not while the client reconnects (the call
        # would wait for the reconnection)
        if now - seen["at"] > 1.0 and client.status == "running":
            seen.update(at=now, n=len(client.scheduler_info(n_workers=-1)["workers"]))
        return window_size(seen["n"], per_worker, floor)
    return window


def _allowed_failures() -> int:
    """How often a unit may be lost with its worker and still run again (``skyreduce.cluster.allowed-failures``,
    else dask's ``distributed.scheduler.allowed-failures``)."""
    value = dask.config.get("skyreduce.cluster.allowed-failures", None)
    if value is None:
        value = dask.config.get("distributed.scheduler.allowed-failures", 3)
    return int(value)


def _scheduler_address(client) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return "(address unknown)"


def run(pipeline: Pipeline, store, out, *, client=None, redo=False, redo_failed=False, progress=False,
        report=print, wait=0.0, window_per_worker=2) -> RunSummary:
    """Run ``pipeline`` over every unit of ``store`` not yet done; products under ``out``.

    Raises ``SchedulerLost`` when ``client`` loses its scheduler: the records of the units done
    so far stay in the store and the same call again resumes."""
    t0 = time.perf_counter()
    store, out = Path(store), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    summary = RunSummary(pipeline.name, str(store), str(out))
    address = None if client is None else _scheduler_address(client)
    try:
        with StoreWriter(store, pipeline.store_schema, wait=wait) as writer:
            _run_all(pipeline, store, out, client, writer, summary, t0, redo=redo, redo_failed=redo_failed,
                     progress=progress, report=report, window=_window(client, window_per_worker))
    except Exception as exc:
        if not _scheduler_lost(client, exc):
            raise
        done = sum(r.get("status") == "done" for r in read_records(store, pipeline.name).values())
        raise SchedulerLost(f"lost the dask scheduler at {address} in the middle of the {pipeline.name} run; "
                            f"units done and recorded in {store}: {done} (kept); rerun the same command "
                            "to resume") from exc
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_all(pipeline, store, out, client, writer, summary, t0, *, redo, redo_failed, progress, report, window):
    """The body of :func:`run`, with the store's write lock held by ``writer``."""
    units = pipeline.units(store, client)
    records = read_records(store, pipeline.name)
    phash = pipeline.params_hash()
    todo = [u for u in units if redo or _stale(records.get(u.key), u, phash, str(out), redo_failed)]
    kept = _kept_slots(store, pipeline, records)
    stale = {u.key for u in todo}
    lost = {u.key for u in units if u.key not in stale and u.key not in kept      # done, but where its
            and records[u.key].get("status") == "done"}                           # rows are is not known
    todo = [u for u in units if u.key in stale or u.key in lost]
    summary.skipped = len(units) - len(todo)
    sizes = {}
    need = []
    for u in todo:
        if u.sizes is not None:
            sizes[u.key] = u.sizes
        else:
            need.append(u)
    if need:
        with Progress(f"{pipeline.name}: sizing units", len(need), unit="units", enabled=progress) as bar:
            for item, res, err in _map(client, _size_unit, [(pipeline, str(store), u) for u in need],
                                       progress=bar, window=window):
                if res is not None:
                    sizes[res[0]] = res[1]
                    continue
                unit = item[2]             # no slot: recorded as failed, the others go on
                report(f"FAILED {pipeline.name} unit {unit.key}: sizing: {err}")
                _write_record(store, pipeline.name, _failed_record(pipeline, unit, out, f"sizing: {err}"))
                todo = [u for u in todo if u.key != unit.key]
    slots, ends = _allocation(pipeline, units, sizes, kept)
    attrs = pipeline.table_attrs(store)
    for t in pipeline.tables():
        ensure_table(store, t, ends[t.name], attrs.get(t.name))
    for u in todo:
        _remove_record(store, pipeline.name, u.key)
        records.pop(u.key, None)
    todo = [u for u in todo if slots.get(u.key)]
    _write_units_group(store, pipeline, units, slots, records)
    writer.consolidate()
    fault_point("units_allocated")
    allowed = _allowed_failures()
    resubmitted = dict.fromkeys((u.key for u in todo), 0)

    def again(item):
        """A unit's task the scheduler gave up on (KilledWorker): a new task while the unit itself
        was lost at most ``allowed`` times, at most ``allowed`` + 1 new tasks (a task that kills its
        worker before it notes its start must not be resubmitted for ever)."""
        key = item[3].key
        resubmitted[key] += 1
        return resubmitted[key] <= allowed + 1 and len(unit_starts(store, pipeline.name, key)) <= allowed

    items = [(pipeline, str(store), str(out), u, slots[u.key], writer.token, allowed) for u in todo]
    with Progress(f"{pipeline.name}: units", len(items), unit="units", enabled=progress) as bar:
        for item, res, err in _map(client, _run_unit, items, progress=bar, window=window, again=again):
            summary.ran += 1
            if res is None:
                res = _unanswered(pipeline, store, out, item[3], err, allowed)
            if res["status"] == "failed":
                report(f"FAILED {pipeline.name} unit {res['key']}: {res['reason']}")
            for line in res["problems"]:
                report(line)
    if client is not None:
        remove_stale_temporaries(out)      # of workers that died while they wrote a product
    records = read_records(store, pipeline.name)
    for u in units:
        rec = records.get(u.key)
        if rec is None:
            rec = {"key": u.key, "label": u.label, "status": "failed",
                   "reason": "no record of this unit after the run (its task was lost)"}
        summary.add(rec)
    _write_units_group(store, pipeline, units, slots, records)
    writer.consolidate()
    summary.seconds = time.perf_counter() - t0
    summary.lines = pipeline.describe(summary)
    pipeline.finish(store, out, [records.get(u.key) for u in units if u.key in records], summary)
    writer.record_run({"command": pipeline.name, "units": len(units), "ran": summary.ran,
                       "failed": summary.units["failed"], "software": f"skyreduce {__version__}",
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid()})


def _unanswered(pipeline, store, out, unit, err, allowed) -> dict:
    """The outcome of a unit whose task gave no answer: its record when it got that far (the answer
    was lost with the worker), else a failed record written here."""
    rec = _read_record(store, pipeline.name, unit.key)
    if rec is None:
        starts = len(unit_starts(store, pipeline.name, unit.key))
        reason = _lost_reason(starts, allowed) if err.startswith(LOST) and starts > allowed else err
        rec = _failed_record(pipeline, unit, out, reason, starts)
        _write_record(store, pipeline.name, rec)
    return {k: rec[k] for k in _SUMMARY_KEYS}


def hash_strings(parts) -> str:
    """SHA-256 (hex, 16 characters) of an iterable of strings, in order."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
