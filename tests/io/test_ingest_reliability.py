"""Ingest under real failures: a process killed at any moment, and two ingests on one store.

These run the real ``skyreduce`` command in its own session (so a SIGKILL takes the
command and its local workers, as a batch system does) and compare the stores
field by field with an uninterrupted run.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_stores_identical, sha256_tree

from reduce.io.store import StoreWriter

SKYREDUCE = str(Path(sys.executable).with_name("skyreduce"))
BATCH = "700000"  # raw bytes per commit: several commits per run


def _cmd(instrument, raw, store, *extra):
    return [SKYREDUCE, "ingest", instrument, str(raw), "--store", str(store), "--workers", "2",
            "--threads-per-worker", "1", "--no-dashboard", "-q", *extra]


def _env(**extra):
    env = {**os.environ, "SKYREDUCE_INGEST_BATCH_BYTES": BATCH, **extra}
    env.pop("SKYREDUCE_TEST_KILL_AT", None) if "SKYREDUCE_TEST_KILL_AT" not in extra else None
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
@pytest.mark.parametrize("point", ["after_resize", "mid_write", "before_commit", "after_commit"])
def test_killed_at_a_point_then_rerun_equals_uninterrupted(tmp_path, reference, mips_raw, swas_raw, instrument, point):
    raw = mips_raw if instrument == "mips" else swas_raw
    before = sha256_tree(raw)
    store = tmp_path / "s.zarr"
    r = _run(_cmd(instrument, raw, store), _env(SKYREDUCE_TEST_KILL_AT=point))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    r = _run(_cmd(instrument, raw, store), _env())
    assert r.returncode == 0, r.stderr
    assert_stores_identical(store, reference / f"{instrument}.zarr")
    assert sha256_tree(raw) == before


@pytest.mark.slow
def test_killed_at_random_moments_then_rerun_equals_uninterrupted(tmp_path, reference, swas_raw):
    store = tmp_path / "s.zarr"
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(_cmd("swas", swas_raw, store), env=_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2  # the run is long enough for the kills to land inside it
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
