"""The instrument-independent ingest engine: level-0 files -> an append to a zarr store.

An instrument supplies an *adapter* (see ``reduce.swas.ingest``, ``reduce.mips.ingest``):

- ``schema_name``: the store schema;
- ``find_inputs(paths) -> (files, problems)``: expand files and folders;
- ``inspect(path, *, sha256, hdul) -> FileRecord``: read and validate one file completely
  (runs on a worker; ``hdul``: the file open with CFITSIO, integrity already checked, see
  ``reduce.io.fitsio.open_level0``), raising BadInputError with the reason when it is bad;
- ``read_bulk(path, group, name, where) -> ndarray``: the file's rows of a bulk variable
  (``where``: the FileRecord's ``extra["where"]``, where the data lie in the file);
- ``resolve(records, state) -> (records, rejections, group_attrs)``: cross-file checks
  and values that depend on other files (client side);
- ``finalize(record, starts)``: fill row values that depend on the store position.

Two phases run on the cluster: (A) inspect files in groups of tens of MB,
returning small metadata; (B) write the bulk arrays, one task per zarr chunk
(never two writers in a chunk). The client writes the small per-row
variables, then commits (see ``reduce.io.store``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ..errors import BadInputError
from ..faults import fault_point
from ..progress import Progress, track
from ..schemas import group_spec
from .fitsio import open_level0
from .store import StoreWriter, array_path, check_lock_token, chunk_ranges, to_numpy_dtype

log = logging.getLogger(__name__)

TASK_BYTES = 64 << 20  # phase-A task size (raw bytes)
BATCH_BYTES = 4 << 30  # raw bytes per commit


@dataclass
class FileRecord:
    """What phase A learns about one good file (small; travels to the client)."""
    path: str
    sha256: str
    size: int
    key: str  # identity of the content unit (segment, DCE): one per store
    sort_key: tuple
    rows: dict  # dim key -> {variable: values with len = rows of this file}
    bulk: dict  # dim key -> [bulk variables read in phase B]
    extra: dict = field(default_factory=dict)

    def nrows(self, key):
        first = next(iter(self.rows[key].values()), None)
        return 0 if first is None else len(first)


@dataclass
class Rejection:
    path: str
    reason: str
    sha256: str | None = None

    def line(self):
        return f"REJECTED {self.path}: {self.reason}"


@dataclass
class Known:
    path: str
    sha256: str


@dataclass
class IngestSummary:
    store: str
    ingested: list = field(default_factory=list)  # FileRecord.path
    already: list = field(default_factory=list)  # paths whose content is in the store
    rejected: list = field(default_factory=list)  # Rejection
    rows: dict = field(default_factory=dict)  # dim key -> rows appended
    raw_bytes: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self):
        return 1 if self.rejected else 0


def inspect_group(adapter, paths, known):
    """Phase-A task: inspect several files; return FileRecord / Known / Rejection each.

    Each file is read once for its SHA-256 and the ASCII check of its headers; CFITSIO opens it
    (reading it again, from the page cache) for the rest of the ICD integrity checks
    (``open_level0``: layout, CHECKSUM/DATASUM) and the headers; the adapter reads it from there.
    """
    out = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except OSError as exc:
            out.append(Rejection(str(path), f"unreadable ({exc.strerror or exc})"))
            continue
        sha = hashlib.sha256(buf).hexdigest()
        if sha in known:
            out.append(Known(str(path), sha))
            continue
        try:
            with open_level0(path, buf) as hdul:
                out.append(adapter.inspect(path, sha256=sha, hdul=hdul))
        except BadInputError as exc:
            out.append(Rejection(str(path), exc.reason, sha))
        except Exception as exc:  # a reader bug must not stop the run: report it for this file
            log.exception("unexpected error reading %s", path)
            out.append(Rejection(str(path), f"unexpected error while reading: {type(exc).__name__}: {exc}", sha))
    return out


def write_chunk(adapter, store_path, token, group, names, start, stop, pieces):
    """Phase-B task: assemble rows [start, stop) of bulk variables and write them (one chunk)."""
    check_lock_token(store_path, token)
    nbytes = 0
    for name in names:
        arr = zarr.open_array(Path(store_path) / array_path(group, name), mode="r+")
        block = np.full((stop - start,) + arr.shape[1:], arr.fill_value, dtype=arr.dtype)
        for path, file_lo, file_hi, dest, where in pieces:
            data = adapter.read_bulk(path, group, name, where)[file_lo:file_hi]
            target = (slice(dest - start, dest - start + len(data)),) + tuple(slice(0, s) for s in data.shape[1:])
            block[target] = data
        arr[start:stop] = block
        nbytes += block.nbytes
    fault_point("mid_write")
    return nbytes


def _map(client, fn, items, *, progress, label):
    """Run fn(*item) for every item on the cluster (or in-process), in order."""
    if client is None:
        return [fn(*item) for item in items]
    futures = client.map(fn, *zip(*items), pure=False) if items else []
    if progress and futures:
        with Progress(label, len(futures), unit="tasks") as bar:
            for _ in track(futures, bar):
                pass
    return client.gather(futures)


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported when read


def _task_groups(files, limit=TASK_BYTES, max_files=512):
    """Consecutive groups of ``files`` of about ``limit`` raw bytes, at most ``max_files`` each."""
    groups, current, size = [], [], 0
    for f in files:
        current.append(f)
        size += _size(f)
        if size >= limit or len(current) >= max_files:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def _batches(files, limit):
    return _task_groups(files, limit, max_files=float("inf"))


def ingest(adapter, inputs, store, *, client=None, wait=0.0, progress=False, report=print,
           batch_bytes=None) -> IngestSummary:
    """Ingest files and folders ``inputs`` into ``store`` with ``adapter``.

    ``report`` receives one line per rejected input. Files are committed in
    batches of ``batch_bytes`` raw bytes (default 4 GiB, or the environment
    variable SKYREDUCE_INGEST_BATCH_BYTES). Returns an IngestSummary.
    """
    if batch_bytes is None:
        batch_bytes = int(os.environ.get("SKYREDUCE_INGEST_BATCH_BYTES", BATCH_BYTES))
    t0 = time.perf_counter()
    summary = IngestSummary(store=str(store))
    files, problems = adapter.find_inputs([Path(p) for p in inputs])
    for rej in problems:
        summary.rejected.append(rej)
        report(rej.line())
    with StoreWriter(store, adapter.schema_name, wait=wait) as writer:
        for batch in _batches(files, batch_bytes):
            _ingest_batch(adapter, batch, writer, summary, client=client, progress=progress, report=report)
        for spec in writer.schema["groups"]:  # what was written follows the schema
            if spec["variables"]:
                writer.open_group(spec["path"])
        writer.record_run({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "ingested": len(summary.ingested), "already": len(summary.already),
                           "rejected": len(summary.rejected), "rows": summary.rows})
    summary.seconds = time.perf_counter() - t0
    return summary


def _ingest_batch(adapter, files, writer, summary, *, client, progress, report):
    ledger = writer.ledger()
    known = {e["sha256"]: e for e in ledger}
    known_keys = {e["key"]: e for e in ledger}
    quarantined = {(q.get("sha256"), q["reason"]) for q in writer.quarantine()}
    t0 = time.perf_counter()
    items = [(adapter, group, set(known)) for group in _task_groups(files)]
    results = [r for group in _map(client, inspect_group, items, progress=progress,
                                   label=f"checking {len(files)} files") for r in group]
    t_check = time.perf_counter() - t0
    records, rejections = [], []
    for res in results:
        if isinstance(res, Known):
            summary.already.append(res.path)
            log.info("%s: already in the store as %s", res.path, known[res.sha256]["name"])
        elif isinstance(res, Rejection):
            rejections.append(res)
        else:
            records.append(res)
    # the same content twice in this batch, or a content unit already present with other bytes
    unique, seen = [], {}
    for rec in sorted(records, key=lambda r: (r.sort_key, r.path)):
        if rec.sha256 in seen:
            summary.already.append(rec.path)
            continue
        clash = known_keys.get(rec.key) or seen.get(rec.key)
        if clash is not None:
            other = clash["name"] if isinstance(clash, dict) else Path(clash.path).name
            rejections.append(Rejection(rec.path, f"duplicate: {rec.key} is already in the store "
                                                  f"from {other} with different content", rec.sha256))
            continue
        seen[rec.sha256] = rec
        seen[rec.key] = rec
        unique.append(rec)
    state = writer.read_state()
    records, more, group_attrs = adapter.resolve(unique, state)
    rejections += more
    for rej in rejections:
        summary.rejected.append(rej)
        report(rej.line())
    new_quarantine = []
    for rej in rejections:
        if (rej.sha256, rej.reason) not in quarantined:
            quarantined.add((rej.sha256, rej.reason))
            new_quarantine.append({"path": str(Path(rej.path).resolve()), "name": Path(rej.path).name,
                                   "sha256": rej.sha256, "reason": rej.reason})
    if not records:
        if new_quarantine or group_attrs:
            writer.commit(lengths={}, ledger=[], quarantine=new_quarantine, group_attrs=group_attrs)
        return
    lengths = dict(state["lengths"])
    starts = []
    for rec in records:
        start = {}
        for key in rec.rows:
            start[key] = lengths[key]
            lengths[key] += rec.nrows(key)
        adapter.finalize(rec, start)
        starts.append(start)
    grown = {k: v for k, v in lengths.items() if v != state["lengths"][k]}
    t1 = time.perf_counter()
    writer.resize(grown)
    fault_point("after_resize")
    _write_small(writer, records, starts)
    t2 = time.perf_counter()
    jobs = _chunk_jobs(adapter, writer, records, starts)
    written = _map(client, write_chunk, jobs, progress=progress, label=f"writing {len(records)} files")
    t3 = time.perf_counter()
    ledger_lines = [{"name": Path(r.path).name, "path": str(Path(r.path).resolve()), "sha256": r.sha256,
                     "bytes": r.size, "key": r.key, "rows": {k: [s[k], r.nrows(k)] for k in r.rows}}
                    for r, s in zip(records, starts)]
    writer.commit(lengths=grown, ledger=ledger_lines, quarantine=new_quarantine, group_attrs=group_attrs)
    summary.ingested += [r.path for r in records]
    summary.raw_bytes += sum(r.size for r in records)
    for k, v in grown.items():
        summary.rows[k] = summary.rows.get(k, 0) + v - state["lengths"][k]
    log.info("committed %d files, %d bytes written; check %.2f s, client %.2f s, %d write tasks %.2f s, "
             "commit %.2f s", len(records), sum(written), t_check, (t1 - t0 - t_check) + (t2 - t1),
             len(jobs), t3 - t2, time.perf_counter() - t3)


def _by_key(records, starts, attr):
    """Group (record, start) pairs by dim key, in store order."""
    out = {}
    for rec, start in zip(records, starts):
        for key in getattr(rec, attr):
            out.setdefault(key, []).append((rec, start[key]))
    return out


def _split_key(key):
    return key.rsplit("/", 1) if "/" in key else ("", key)


def _write_small(writer, records, starts):
    """Client-side writes of every per-row (non-bulk) variable: one writer per array."""
    items = []
    for key, pairs in _by_key(records, starts, "rows").items():
        group, _ = _split_key(key)
        spec = group_spec(writer.schema, group)["variables"]
        for name in pairs[0][0].rows[key]:
            values = np.concatenate([to_numpy_dtype(r.rows[key][name], spec[name]["dtype"]) for r, _ in pairs])
            items.append((group, name, pairs[0][1], values))
    writer.write_many(items)


def _chunk_jobs(adapter, writer, records, starts):
    """Phase-B jobs: for every zarr chunk touched, the file pieces that fall in it."""
    jobs = []
    for key, pairs in _by_key(records, starts, "bulk").items():
        group, _ = _split_key(key)
        names = pairs[0][0].bulk[key]
        chunk = group_spec(writer.schema, group)["variables"][names[0]]["chunks"][0]
        spans = [(r, s, s + r.nrows(key)) for r, s in pairs]
        for a, b in chunk_ranges(spans[0][1], spans[-1][2], chunk):
            pieces = [(r.path, max(a, s) - s, min(b, e) - s, max(a, s), r.extra.get("where"))
                      for r, s, e in spans if s < b and e > a]
            jobs.append((adapter, str(writer.path), writer.token, group, names, a, b, pieces))
    return jobs


def expand_inputs(paths, pattern, exclude_dirs=()):
    """Files given, plus every file matching ``pattern`` under the folders given (sorted).

    Returns (files, rejections for paths that do not exist).
    """
    files, problems = [], []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob(pattern)
                           if f.is_file() and not any(part in exclude_dirs for part in f.relative_to(p).parts[:-1]))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Rejection(str(p), "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique, problems
