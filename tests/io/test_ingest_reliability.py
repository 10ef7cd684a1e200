"""Ingest under real failures: a process killed at any moment, and two ingests on one store.

These run the real ``skyreduce`` command in its own session (so a SIGKILL takes the
command and its local workers, as a batch system does) and compare the stores
field by field with an uninterrupted run. The command is killed either by the test
(``os.killpg``) at moments found by polling the store, or, where the moment lies between
two statements, by the command itself at a named fault point (``SKYREDUCE_FAULT``, see
``reduce.faults``).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_stores_identical, sha256_tree

from reduce.faults import ENV as FAULT_ENV
from reduce.io.store import META, Store, StoreWriter, array_path, dim_key, growing_arrays

SKYREDUCE = str(Path(sys.executable).with_name("skyreduce"))
BATCH = "700000"  # raw bytes per commit: several commits per run


def _cmd(instrument, raw, store, *extra):
    return [SKYREDUCE, "ingest", instrument, str(raw), "--store", str(store), "--workers", "2",
            "--threads-per-worker", "1", "--no-dashboard", "-q", *extra]


def _env(fault=None):
    env = {**os.environ, "SKYREDUCE_INGEST_BATCH_BYTES": BATCH}
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = fault
    return env


def _run(cmd, env, timeout=240):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mips_raw, swas_raw):
    """Stores made by uninterrupted runs."""
    root = tmp_path_factory.mktemp("reference")
    for instrument, raw in (("mips", mips_raw), ("swas", swas_raw)):
        r = _run(_cmd(instrument, raw, root / f"{instrument}.zarr"), _env())
        assert r.returncode == 0, r.stderr
    return root


@pytest.mark.slow
@pytest.mark.parametrize("instrument", ["mips", "swas"])
# first batch: nothing committed yet; "@2": the second batch, after a commit (several batches per run)
@pytest.mark.parametrize("point", ["after_resize", "mid_write", "before_commit@2", "after_commit"])
def test_killed_at_a_point_then_rerun_equals_uninterrupted(tmp_path, reference, mips_raw, swas_raw, instrument, point):
    raw = mips_raw if instrument == "mips" else swas_raw
    before = sha256_tree(raw)
    store = tmp_path / "s.zarr"
    r = _run(_cmd(instrument, raw, store), _env(fault=point))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert f"killing the process group at {point.split('@')[0]}" in r.stderr
    r = _run(_cmd(instrument, raw, store), _env())
    assert r.returncode == 0, r.stderr
    assert_stores_identical(store, reference / f"{instrument}.zarr")
    assert sha256_tree(raw) == before


def _holds_lock(store, pid) -> bool:
    try:
        return json.loads((store / META / "lock.info").read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def _committed_files(store) -> int:
    return len(Store(store, "swas_store").ledger())


def _uncommitted_rows(store) -> bool:
    """Some growing array is longer than its committed length."""
    s = Store(store, "swas_store")
    lengths = s.read_state().get("lengths", {})
    for group, dim, name, _ in growing_arrays(s.schema):
        try:
            shape = json.loads((store / array_path(group, name) / "zarr.json").read_text())["shape"]
            if shape[0] > lengths[dim_key(group, dim)]:
                return True
        except (OSError, ValueError, KeyError):
            continue
    return False


def _after_lock(store, pid, delay):
    """Condition: ``delay`` seconds after the command took the write lock."""
    seen = []

    def condition():
        if not seen and _holds_lock(store, pid):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() >= seen[0] + delay
    return condition


def _writing_a_batch(store, pid):
    """Condition: the command has grown arrays past the commit record (a batch is being
    written); rows left by an earlier killed run count only once it has cut them back."""
    clean = []

    def condition():
        if not _holds_lock(store, pid):
            return False
        if not _uncommitted_rows(store):
            clean.append(True)
            return False
        return bool(clean)
    return condition


def _after_a_commit(store):
    """Condition: one more file is committed than when the command started."""
    before = _committed_files(store)
    return lambda: _committed_files(store) > before


def _kill_when(proc, condition, timeout=180) -> bool:
    """SIGKILL the command's process group as soon as condition() holds; False if it ended first."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.wait()
    return False


@pytest.mark.slow
def test_killed_at_moments_found_by_polling_then_rerun_equals_uninterrupted(tmp_path, reference, swas_raw):
    """Killed (the whole process group, from outside) while a batch is written, right after a
    commit, at a random moment after taking the lock, and while a later batch is written."""
    store = tmp_path / "s.zarr"
    rng = random.Random(7)
    moments = {
        "while the first batch is written": lambda pid: _writing_a_batch(store, pid),
        "right after a commit": lambda pid: _after_a_commit(store),
        "soon after taking the lock": lambda pid: _after_lock(store, pid, rng.uniform(0.0, 1.0)),
        "while a later batch is written": lambda pid: _writing_a_batch(store, pid),
    }
    for what, make_condition in moments.items():
        proc = subprocess.Popen(_cmd("swas", swas_raw, store), env=_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _kill_when(proc, make_condition(proc.pid)), f"the run ended before it was killed {what}"
    r = _run(_cmd("swas", swas_raw, store), _env())
    assert r.returncode == 0, r.stderr
    assert_stores_identical(store, reference / "swas.zarr")


def test_second_ingest_refused_while_the_store_is_locked(tmp_path, mips_raw):
    store = tmp_path / "s.zarr"
    with StoreWriter(store, "mips_store"):
        r = _run(_cmd("mips", mips_raw / "aor1", store), _env())
    assert r.returncode == 2
    assert f"store {store} is being written by another skyreduce process (pid {os.getpid()}" in r.stderr


@pytest.mark.slow
def test_two_ingests_at_once_with_wait_end_as_one(tmp_path, reference, mips_raw):
    store = tmp_path / "s.zarr"
    procs = [subprocess.Popen(_cmd("mips", mips_raw, store, "--wait", "200"), env=_env(), start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_stores_identical(store, reference / "mips.zarr")
    news = sorted(int(out.split(" new files")[0].rsplit(" ", 1)[1]) for out, _ in outs)
    assert news == [0, 27]  # one ingested everything, the other found it all there
