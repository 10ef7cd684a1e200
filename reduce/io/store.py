"""Zarr stores with a write lock, a commit record, a content-hash ledger and a quarantine.

Layout of a store folder ``STORE``::

    STORE/zarr.json, STORE/<group>/<variable>/...   the zarr v3 hierarchy (open it with xarray)
    STORE/.skyreduce/state.json        commit record: committed length of every growing
                                       dimension, committed bytes of the two logs, group attrs
    STORE/.skyreduce/ledger.jsonl      one line per ingested file: name, sha256, key, rows
    STORE/.skyreduce/quarantine.jsonl  one line per rejected file: path, sha256, reason
    STORE/.skyreduce/lock, lock.info   the write lock (flock) and who holds it
    STORE/.skyreduce/runs.jsonl        history of runs (informational)

An append writes the arrays first (grown beyond the committed length), then
replaces ``state.json`` atomically: that is the commit. A writer that finds the
arrays or logs longer than ``state.json`` says (a killed run) cuts them back
before it starts, so an interrupted ingest run again ends exactly as an
uninterrupted one.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .. import __version__
from ..errors import SchemaError, StoreLockedError
from ..faults import fault_point
from ..schemas import group_spec, load_schema, validate_group
from .atomic import atomic_write_text


log = logging.getLogger(__name__)

META = ".skyreduce"


def _compressors(name):
    if name == "none":
        return None
    if name == "blosc":
        return [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]
    return "auto"


@contextlib.contextmanager
def _quiet_zarr():
    """Silence zarr's notes about our .skyreduce folder and consolidated metadata in v3."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently not part.*")
        yield


def growing_arrays(schema: dict):
    """Yield (group, dim, variable name, variable spec) for every growing variable."""
    for spec in schema["groups"]:
        for name, var in spec["variables"].items():
            if var["dims"] and var["dims"][0] in spec["growing"]:
                yield spec["path"], var["dims"][0], name, var


def dim_key(group: str, dim: str) -> str:
    return f"{group}/{dim}" if group else dim


def array_path(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


class Store:
    """A schema-checked store on disk: reading side (no lock needed)."""

    def __init__(self, path, schema_name: str | None = None):
        self.path = Path(path)
        self.meta = self.path / META
        if schema_name is None:
            schema_name = self.read_state().get("schema")
            if schema_name is None:
                raise SchemaError(f"{self.path} is not a skyreduce store (no {META}/state.json)")
        self.schema = load_schema(schema_name)

    # -- commit record and logs
    def read_state(self) -> dict:
        try:
            return json.loads((self.meta / "state.json").read_text())
        except FileNotFoundError:
            return {}

    def _read_log(self, name: str, committed_bytes: int | None = None) -> list[dict]:
        path = self.meta / name
        if not path.exists():
            return []
        data = path.read_bytes()
        if committed_bytes is None:
            committed_bytes = self.read_state().get("log_bytes", {}).get(name, 0)
        return [json.loads(line) for line in data[:committed_bytes].splitlines() if line.strip()]

    def ledger(self) -> list[dict]:
        """Committed ledger: one dict per ingested file."""
        return self._read_log("ledger.jsonl")

    def quarantine(self) -> list[dict]:
        """Committed quarantine record: one dict per rejected input."""
        return self._read_log("quarantine.jsonl")

    def check_version(self, state: dict | None = None) -> None:
        """Refuse a store written with another version of its schema, saying what changed."""
        state = self.read_state() if state is None else state
        have, want = state.get("schema_version"), self.schema["version"]
        if have is None or have == want:
            return
        name = self.schema["schema"]
        if have > want:
            raise SchemaError(f"{self.path} is a {name} store of schema version {have}, newer than the version "
                              f"{want} this skyreduce {__version__} reads: upgrade skyreduce")
        changes = self.schema.get("changes", {})
        what = "; ".join(f"version {v}: {changes[v]}" for v in sorted(changes) if have < v <= want)
        raise SchemaError(f"{self.path} is a {name} store of schema version {have}; this skyreduce {__version__} "
                          f"reads version {want}" + (f" ({what})" if what else "")
                          + ": ingest the raw files again into a new store")

    # -- datasets
    def open_group(self, group: str = "", *, validate: bool = True, indexes: bool = True) -> xr.Dataset:
        """Open one group lazily (dask-backed), cut to its committed length and validated.

        ``indexes=False``: no pandas index for the dimension coordinates (e.g. ``time``), which
        would be loaded into memory whole; they stay lazy like every other variable (the runner's
        planning on a mission-sized store)."""
        state = self.read_state()
        if not state:
            raise SchemaError(f"{self.path} is not a skyreduce store (no {META}/state.json)")
        if validate:
            self.check_version(state)
        with _quiet_zarr():
            ds = xr.open_zarr(self.path, group=group or None, consolidated=True, chunks={},
                              create_default_indexes=indexes)
        spec = group_spec(self.schema, group)
        cut = {}
        for dim in spec["growing"]:
            committed = state["lengths"].get(dim_key(group, dim), 0)
            if ds.sizes.get(dim, 0) > committed:
                cut[dim] = slice(0, committed)
        if cut:  # an append was interrupted: show the committed state only
            ds = ds.isel(cut)
        if validate:
            validate_group(ds, self.schema, group)
        return ds


class StoreWriter(Store):
    """The writing side: holds the lock, recovers, appends, commits.

    Use as a context manager: ``with StoreWriter(path, "swas_store") as w: ...``.
    ``wait`` is how many seconds to wait for another writer's lock (0: refuse at once).
    """

    def __init__(self, path, schema_name: str, *, wait: float = 0.0):
        super().__init__(path, schema_name)
        self.wait = wait
        self.token = uuid.uuid4().hex
        self._lock_file = None

    # -- lock
    def __enter__(self):
        self.meta.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self._create_or_recover()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc):
        self._release()

    def _acquire(self):
        f = open(self.meta / "lock", "a+")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.close()
                    holder = self.lock_holder()
                    raise StoreLockedError(
                        f"store {self.path} is being written by another skyreduce process ({holder}); "
                        "try again when it has finished, or pass --wait SECONDS") from None
                time.sleep(0.2)
        self._lock_file = f
        info = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_text(self.meta / "lock.info", json.dumps(info))

    def lock_holder(self) -> str:
        try:
            info = json.loads((self.meta / "lock.info").read_text())
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def _release(self):
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                (self.meta / "lock.info").unlink()
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- creation and recovery
    def _create_or_recover(self):
        state = self.read_state()
        if not state or state.get("schema") != self.schema["schema"]:
            if state:
                raise SchemaError(f"{self.path} holds a {state.get('schema')} store, not {self.schema['schema']}")
            self._create()
        else:
            self.check_version(state)
            self._recover(state)

    def _create(self):
        """Make every group and array of the schema, empty along growing dims."""
        schema = self.schema
        with _quiet_zarr():
            for spec in schema["groups"]:
                attrs = {"title": spec.get("title", "")}
                if spec["path"] == "":
                    attrs.update(schema=schema["schema"], schema_version=schema["version"],
                                 instrument=schema["instrument"], level=schema["level"],
                                 software=f"skyreduce {__version__}")
                if "chnlnum" in spec:
                    attrs.update(chnlnum=spec["chnlnum"], calibration_sets=[])
                coords = [n for n in spec["variables"] if n not in spec.get("data_variables", [])]
                if coords and spec.get("data_variables"):
                    attrs["coordinates"] = " ".join(coords)  # CF: xarray opens these as coordinates
                group = zarr.open_group(self.path, path=spec["path"], mode="a", use_consolidated=False)
                group.attrs.update(attrs)
                for name, var in spec["variables"].items():
                    shape = tuple(0 if d in spec["growing"] else spec["dims"][d] for d in var["dims"])
                    dtype = str if var["dtype"] == "str" else var["dtype"]
                    var_attrs = {k: var[k] for k in ("units", "long_name", "flag_values", "flag_masks",
                                                     "flag_meanings") if k in var}
                    fill = var.get("fill_value", "" if var["dtype"] == "str" else 0)
                    group.create_array(name, shape=shape, chunks=tuple(var["chunks"]), dtype=dtype,
                                       fill_value=fill, dimension_names=var["dims"],
                                       compressors=_compressors(var.get("compressor")),
                                       attributes=var_attrs, overwrite=True)
                    if "values" in var:
                        values = var["values"]
                        values = np.arange(values["arange"]) if isinstance(values, dict) else values
                        group[name][...] = to_numpy_dtype(values, var["dtype"])
        lengths = {dim_key(s["path"], d): 0 for s in schema["groups"] for d in s["growing"]}
        state = {"schema": schema["schema"], "schema_version": schema["version"], "lengths": lengths,
                 "log_bytes": {"ledger.jsonl": 0, "quarantine.jsonl": 0}, "group_attrs": {}}
        self.consolidate()
        self._commit_state(state)
        log.info("created store %s (%s)", self.path, schema["schema"])

    def _recover(self, state):
        """Cut arrays and logs back to the committed state after a killed run."""
        recovered = []
        with _quiet_zarr():
            root = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            for group, dim, name, var in growing_arrays(self.schema):
                arr = root[array_path(group, name)]
                committed = state["lengths"][dim_key(group, dim)]
                if arr.shape[0] != committed:
                    arr.resize((committed,) + arr.shape[1:])
                    recovered.append(array_path(group, name))
                self._delete_chunks_beyond(arr, committed, var)
        for name, size in state["log_bytes"].items():
            path = self.meta / name
            if path.exists() and path.stat().st_size != size:
                with open(path, "r+b") as f:
                    f.truncate(size)
                recovered.append(name)
        if recovered:
            log.warning("%s: an earlier write was interrupted; cut back to the last commit (%s)",
                        self.path, ", ".join(recovered))
            self._sync_attrs(state)
            self.consolidate()

    def _delete_chunks_beyond(self, arr, length, var):
        """Remove chunk files wholly beyond ``length`` along the first axis."""
        chunk = var["chunks"][0]
        first_unused = -(-length // chunk)
        folder = self.path / arr.path / "c"
        if not folder.is_dir():
            return
        for entry in folder.iterdir():
            if entry.name.isdigit() and int(entry.name) >= first_unused:
                if entry.is_dir():
                    for sub in sorted(entry.rglob("*"), reverse=True):
                        sub.unlink() if sub.is_file() else sub.rmdir()
                    entry.rmdir()
                else:
                    entry.unlink()

    # -- appending
    def resize(self, new_lengths: dict[str, int]) -> None:
        """Grow every array of each growing dim to its new (uncommitted) length (concurrently)."""
        jobs = []
        for group, dim, name, _ in growing_arrays(self.schema):
            key = dim_key(group, dim)
            if key in new_lengths:
                jobs.append((array_path(group, name), new_lengths[key]))
        _run_async(self._resize_all(jobs))

    async def _resize_all(self, jobs):
        async def one(path, length):
            arr = await zarr.api.asynchronous.open_array(store=str(self.path), path=path, mode="r+")
            await arr.resize((length,) + arr.shape[1:])
        await asyncio.gather(*(one(p, n) for p, n in jobs))

    def write_rows(self, group: str, name: str, start: int, values) -> None:
        """Write ``values`` at rows [start, start+len) of one array (a single writer)."""
        self.write_many([(group, name, start, values)])

    def write_many(self, items) -> None:
        """Write several (group, name, start, values) row blocks concurrently."""
        async def one(group, name, start, values):
            arr = await zarr.api.asynchronous.open_array(store=str(self.path), path=array_path(group, name),
                                                         mode="r+")
            await arr.setitem(slice(start, start + len(values)), values)
        async def all_items():
            await asyncio.gather(*(one(*item) for item in items if len(item[3])))
        _run_async(all_items())

    def set_fixed(self, group: str, name: str, values) -> None:
        """Write a whole fixed-size array (e.g. a dimension coordinate)."""
        arr = zarr.open_array(self.path / group / name if group else self.path / name, mode="r+")
        arr[...] = values

    def commit(self, *, lengths: dict[str, int], ledger: list[dict], quarantine: list[dict],
               group_attrs: dict | None = None) -> dict:
        """Append the log lines, then atomically replace state.json: the commit point."""
        state = self.read_state()
        state["lengths"] = {**state["lengths"], **lengths}
        for name, entries in (("ledger.jsonl", ledger), ("quarantine.jsonl", quarantine)):
            path = self.meta / name
            if entries:
                with open(path, "ab") as f:
                    f.truncate(state["log_bytes"][name])
                    for entry in entries:
                        f.write((json.dumps(entry, sort_keys=True) + "\n").encode())
                    f.flush()
                    os.fsync(f.fileno())
                state["log_bytes"][name] = path.stat().st_size
        if group_attrs:
            state["group_attrs"] = {**state.get("group_attrs", {}), **group_attrs}
        fault_point("before_commit")
        self._commit_state(state)
        fault_point("after_commit")
        self._sync_attrs(state)
        self.consolidate()
        return state

    def _commit_state(self, state):
        atomic_write_text(self.meta / "state.json", json.dumps(state, sort_keys=True, indent=1))

    def _sync_attrs(self, state):
        with _quiet_zarr():
            for group, attrs in state.get("group_attrs", {}).items():
                zarr.open_group(self.path, path=group, mode="r+", use_consolidated=False).attrs.update(attrs)

    def consolidate(self):
        with _quiet_zarr():
            zarr.consolidate_metadata(self.path)

    def record_run(self, summary: dict) -> None:
        with open(self.meta / "runs.jsonl", "a") as f:
            f.write(json.dumps(summary, sort_keys=True) + "\n")

    def check_token(self) -> None:
        """Raise when this writer no longer holds the lock (fencing for remote workers)."""
        check_lock_token(self.path, self.token)


_OPENED: dict = {}


def open_committed(path, group: str = "") -> xr.Dataset:
    """``Store(path).open_group(group, indexes=False)``, opened once per process and commit.

    For the runner's tasks: a worker that runs many units of one store opens each group once;
    a new commit (``state.json`` rewritten) opens it again. No pandas index is built, so nothing
    per scan or per DCE is held in memory."""
    state = (Path(path) / META / "state.json").stat().st_mtime_ns
    key = (str(path), group, state)
    if key not in _OPENED:
        if len(_OPENED) > 8:
            _OPENED.clear()
        _OPENED[key] = Store(path).open_group(group, indexes=False)
    return _OPENED[key]


def _run_async(coro):
    """Run a coroutine on zarr's event loop (as zarr's own synchronous API does)."""
    from zarr.core.sync import sync
    return sync(coro)


def check_lock_token(path, token: str) -> None:
    try:
        info = json.loads((Path(path) / META / "lock.info").read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("token") != token:
        raise StoreLockedError(f"store {path}: this writer no longer holds the lock; not writing")


def chunk_ranges(start: int, stop: int, chunk: int):
    """Split rows [start, stop) at multiples of ``chunk``: each piece lies in one zarr chunk."""
    edges = [start] + list(range((start // chunk + 1) * chunk, stop, chunk)) + [stop]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def to_numpy_dtype(values, dtype: str):
    if dtype == "str":
        return np.asarray(values, dtype=object).astype(str)
    return np.asarray(values).astype(dtype)
