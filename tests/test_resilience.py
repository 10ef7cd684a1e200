"""Resilience of ``skyreduce reduce`` on a dask cluster (issue 8, part 4): each promise is a test.

The cluster is joined with ``--scheduler-file``: a ``dask scheduler`` and ``dask worker``
processes (each worker a nanny and its worker process) that the tests start themselves,
each in a session of its own, as on a site where the cluster outlives the commands. The
mission is 2 MIPS AORs (6 units of a few seconds each); every disturbed run is compared
with one undisturbed run on the same cluster: store tables byte for byte, FITS products
card for card (DATE and checksums aside).

- a worker process SIGKILLed while it runs a unit -> the run ends 0 and identical, the
  unit ran twice, no unit is half-written or there twice (this scheduler gives up on the
  task at once, allowed-failures 0: the runner submits the unit again);
- the scheduler SIGKILLed -> the command exits 2 at once with one clear line, the
  records of the finished units are kept, a rerun against another scheduler resumes and
  ends identical;
- a corrupted store chunk -> the units that read it fail (reason: the decompression
  error) after one attempt each, the others are done, exit code 1;
- a unit that kills every worker it runs on -> that unit fails, "lost with its worker N
  times" with N = allowed-failures + 1, and the rest is done (also: the setting reaches
  the scheduler skyreduce starts).

The same through SLURM (a worker job cancelled): tests/test_resilience_slurm.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from conftest import fits_products

from reduce.mips.pipeline import MipsBcd
from reduce.runner import read_records
from reduce.runner.core import records_dir, unit_starts

BIN = Path(sys.executable).parent
SKYREDUCE = str(BIN / "skyreduce")
NAME = "mips_bcd"
GROUPS = ["bcd24", "bcd70", "bcd160", "bcd_units"]
TABLES = ["bcd24", "bcd70", "bcd160"]


def _popen(cmd, log=None, **kw):
    out = subprocess.DEVNULL if log is None else open(log, "w")
    try:
        return subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    finally:
        if log is not None:
            out.close()


def _kill_group(proc):
    """SIGKILL the session that ``proc`` leads (a scheduler, or a nanny and its worker), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _wait(what, ok, timeout, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class DaskCluster:
    """``dask scheduler --scheduler-file F`` and ``dask worker --scheduler-file F`` processes."""

    def __init__(self, root, workers=2, allowed_failures=None):
        self.env = dict(os.environ)
        if allowed_failures is not None:       # the scheduler's own setting (skyreduce does not set it)
            self.env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = self.root / "scheduler.json"
        self.n = workers
        self.scheduler = None
        self.workers = []

    def start(self, timeout=120):
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()                        # never leave a process behind
            raise

    def _start(self, timeout):
        self.file.unlink(missing_ok=True)
        self.scheduler = _popen([BIN / "dask", "scheduler", "--scheduler-file", self.file, "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard"], self.root / "scheduler.log", cwd=self.root, env=self.env)
        _wait("the scheduler file", self._address, timeout)
        for i in range(self.n):
            self.workers.append(_popen(
                [BIN / "dask", "worker", "--scheduler-file", self.file, "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--death-timeout", "20", "--name", f"w{i}"],
                self.root / f"worker{i}.log", cwd=self.root))
        self.wait_for_workers(timeout)
        return self

    def _address(self):
        try:
            return json.loads(self.file.read_text())["address"]
        except (FileNotFoundError, ValueError):   # not yet there, or not yet whole
            return None

    @property
    def address(self):
        return self._address()

    def wait_for_workers(self, timeout=120):
        """Until every worker is connected (a nanny restarts a killed worker in a few seconds)."""
        from distributed import Client
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(self.n, timeout=timeout)

    def stop(self):
        for proc in self.workers + [self.scheduler]:
            if proc is not None:
                _kill_group(proc)
        self.workers, self.scheduler = [], None


def _reduce(store, out, *cluster_args):
    return [SKYREDUCE, "reduce", "mips", "--level", "1", "--store", store, "--out", out, *cluster_args, "-q"]


def _run(cmd, timeout=300, env=None):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          start_new_session=True, env=env)


def _group_files(store):
    """{relative path: bytes} of every file of the runner's store groups."""
    return {str(p.relative_to(store)): p.read_bytes()
            for prefix in GROUPS for p in sorted((Path(store) / prefix).rglob("*")) if p.is_file()}


def _differing(a, b):
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _copy(src, dest):
    shutil.copytree(src, dest)
    return dest


def _assert_no_half_or_duplicate_unit(store):
    """The units group lists each unit once, its rows as recorded, and nothing is left in flight."""
    units = xr.open_zarr(store, group="bcd_units", consolidated=False).load()
    records = read_records(store, NAME)
    keys = [str(k) for k in units["unit_key"].values]
    assert sorted(keys) == sorted(records) and len(set(keys)) == len(keys)
    for i, key in enumerate(keys):
        assert str(units["status"].values[i]) == records[key]["status"]
        for table in TABLES:
            assert int(units[f"{table}_count"].values[i]) == records[key]["rows"].get(table, 0), (key, table)
    assert not list(records_dir(store, NAME).glob("*.starts")), "a unit's count of starts left behind"


def _running_unit(store):
    """(key, pid) of a unit a worker is computing now (a start noted, no record yet), or None."""
    folder = records_dir(store, NAME)
    for path in sorted(folder.glob("*.starts")) if folder.is_dir() else []:
        key = path.name[:-len(".starts")]
        starts = unit_starts(store, NAME, key)
        if starts and not (folder / f"{key}.json").exists():
            return key, starts[-1]["pid"]
    return None


def _n_records(store):
    folder = records_dir(store, NAME)
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def mips_store(tmp_path_factory):
    """An ingested MIPS store: 2 AORs x 3 arrays = 6 units."""
    from reduce.mips.ingest import ingest_mips
    from reduce.simulate.mips import simulate_mips
    root = tmp_path_factory.mktemp("resilience")
    simulate_mips(root / "raw", aors=2, seed=0)
    assert ingest_mips([root / "raw"], root / "mips.zarr", report=print).exit_code == 0
    return root / "mips.zarr"


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and 2 workers to join. The scheduler gives up on a task at the first worker that
    dies running it (distributed.scheduler.allowed-failures 0, the strictest a site may set): the
    runner, counting the unit's own starts, submits the unit again."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask-cluster"), allowed_failures=0).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def reference(mips_store, dask_cluster, tmp_path_factory):
    """(store, products) of an undisturbed run on the cluster."""
    root = tmp_path_factory.mktemp("reference")
    store = _copy(mips_store, root / "mips.zarr")
    r = _run(_reduce(store, root / "out", "--scheduler-file", dask_cluster.file))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 units: 6 done, 0 failed" in r.stdout, r.stdout
    return store, root / "out"


def _assert_identical(store, out, reference):
    ref_store, ref_out = reference
    assert _differing(_group_files(store), _group_files(ref_store)) == [], "store tables differ from the reference"
    assert fits_products(out) == fits_products(ref_out)
    assert not list(Path(out).rglob("*.skyreduce-tmp")), "temporary files left behind"
    _assert_no_half_or_duplicate_unit(store)


@pytest.mark.slow
def test_worker_sigkilled_mid_unit_the_run_ends_identical(mips_store, dask_cluster, reference, tmp_path):
    """SIGKILL of the worker process (not its nanny: the kernel's OOM killer or a crash takes the
    worker, and the nanny starts a new one) while it computes a unit. This scheduler gives up on
    the task at once (allowed-failures 0, KilledWorker); the unit, lost once, is within
    skyreduce.cluster.allowed-failures (3), so the runner submits it again: it runs from its
    lineage (the store) on the other worker or the new one. (Where the scheduler itself runs the
    task again, see the SLURM test and test_a_unit_that_kills_every_worker_fails_alone.)"""
    dask_cluster.wait_for_workers()
    store = _copy(mips_store, tmp_path / "mips.zarr")
    out = tmp_path / "out"
    proc = subprocess.Popen([str(c) for c in _reduce(store, out, "--scheduler-file", dask_cluster.file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait("a first unit record", lambda: _n_records(store) >= 1 or proc.poll() is not None, 120)
        killed = None
        for _ in range(3):                 # a unit may finish between the look and the kill: take another
            key, pid = _wait("a unit running on a worker", lambda: _running_unit(store) or proc.poll() is not None, 60)
            assert proc.poll() is None, "the run ended before a worker could be killed"
            os.kill(pid, signal.SIGKILL)
            _wait(f"worker process {pid} gone", lambda: not Path(f"/proc/{pid}").exists()
                  or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3], 30)
            if not (records_dir(store, NAME) / f"{key}.json").exists():
                killed = key
                break
        assert killed, "no worker could be killed in the middle of a unit"
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert "6 units: 6 done, 0 failed" in stdout, stdout
    assert read_records(store, NAME)[killed]["attempts"] == 2     # the start the kill ended, and the rerun
    assert "marked as failed because 1 workers died" in (dask_cluster.root / "scheduler.log").read_text()
    _assert_identical(store, out, reference)


@pytest.mark.slow
def test_scheduler_killed_exits_2_at_once_and_the_rerun_resumes(mips_store, dask_cluster, reference, tmp_path):
    """SIGKILL of the scheduler mid-run: its tasks are gone with it, so the command stops at once
    (not after the client's reconnect attempts), exit code 2, one line; what was done is kept."""
    store = _copy(mips_store, tmp_path / "mips.zarr")
    out = tmp_path / "out"
    doomed = DaskCluster(tmp_path / "doomed", workers=1).start()
    cmd = _reduce(store, out, "--scheduler-file", doomed.file)
    proc = None
    try:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        _wait("a first unit record and a unit running", lambda: (_n_records(store) >= 1 and _running_unit(store))
              or proc.poll() is not None, 120)
        assert proc.poll() is None, "the run ended before the scheduler could be killed"
        address = doomed.address
        done_at_kill = set(read_records(store, NAME))
        os.kill(doomed.scheduler.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - killed_at
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        doomed.stop()                           # its worker, still computing for a scheduler that is gone
    print(f"the command exited {proc.returncode} {took:.1f} s after the scheduler was killed")
    assert proc.returncode == 2, stdout + stderr
    assert took < 20, f"the command took {took:.1f} s to give up (skyreduce.cluster.timeout is 30 s)"
    kept = read_records(store, NAME)
    assert done_at_kill <= set(kept) and all(rec["status"] == "done" for rec in kept.values())
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"skyreduce: error: lost the dask scheduler at {address} in the middle of the mips_bcd run; "
        f"units done and recorded in {store}: {len(kept)} (kept); rerun the same command to resume"], stderr

    dask_cluster.wait_for_workers()
    r = _run(_reduce(store, out, "--scheduler-file", dask_cluster.file))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({6 - len(kept)} run now, {len(kept)} done before)" in r.stdout, r.stdout
    _assert_identical(store, out, reference)


def _corrupt(store):
    """Truncate the one chunk of the 160 um reads (blosc-compressed): both 160 um units read it."""
    chunks = [p for p in (store / "mips160" / "reads" / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 1
    with open(chunks[0], "r+b") as fh:
        fh.truncate(1000)


def _products(out, arrays):
    """fits_products of the products of some arrays (file names SPITZER_M<n>_...)."""
    return {k: v for k, v in fits_products(out).items() if any(f"SPITZER_M{n}_" in k for n in arrays)}


@pytest.mark.slow
def test_corrupted_chunk_fails_its_units_once_and_the_others_are_done(mips_store, dask_cluster, reference, tmp_path):
    dask_cluster.wait_for_workers()
    store = _copy(mips_store, tmp_path / "mips.zarr")
    _corrupt(store)
    out = tmp_path / "out"
    r = _run(_reduce(store, out, "--scheduler-file", dask_cluster.file))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "6 units: 4 done, 2 failed" in r.stdout, r.stdout
    records = read_records(store, NAME)
    failed = {k: rec for k, rec in records.items() if rec["status"] == "failed"}
    assert sorted(failed) == sorted(k for k in records if k.startswith("m160-"))
    for key, rec in failed.items():
        assert rec["reason"] == "compute: RuntimeError: error during blosc decompression: -1", rec["reason"]
        assert rec["attempts"] == 1                    # an exception is not a lost worker: never run again
        assert f"FAILED mips_bcd unit {key}: compute: RuntimeError: error during blosc decompression" in r.stderr
    assert all(rec["attempts"] == 1 for rec in records.values())
    assert _products(out, (1, 2)) == _products(reference[1], (1, 2))
    assert not _products(out, (3,))
    _assert_no_half_or_duplicate_unit(store)


@pytest.mark.slow
def test_a_unit_that_kills_every_worker_fails_alone(mips_store, reference, tmp_path):
    """The unit's task kills its worker process each time it starts (fault point, this process
    only); on the local cluster the command starts, with allowed-failures = 1: the scheduler gives
    up after 2 deaths (KilledWorker), the unit is recorded failed, the others are done; units that
    only waited on a dying worker are run again."""
    store = _copy(mips_store, tmp_path / "mips.zarr")
    out = tmp_path / "out"
    poison = MipsBcd().units(store)[0].key           # the first submitted: it dies while the others run
    env = {**os.environ, "SKYREDUCE_FAULT": f"unit_started:{poison}", "SKYREDUCE_FAULT_SCOPE": "process",
           "DASK_SKYREDUCE__CLUSTER__ALLOWED_FAILURES": "1"}
    r = _run(_reduce(store, out, "--workers", "2", "--threads-per-worker", "1", "--no-dashboard"), env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "6 units: 5 done, 1 failed" in r.stdout, r.stdout
    rec = read_records(store, NAME)[poison]
    reason = ("lost with its worker 2 times (the worker process died while the unit ran: killed, out of memory "
              "or crashed; skyreduce.cluster.allowed-failures = 1)")
    assert (rec["status"], rec["reason"]) == ("failed", reason)
    # 2 starts: the scheduler gave up on the task itself (a scheduler with dask's default of 3 would
    # have started it a 3rd time, and the unit would have refused to run: 3 starts)
    assert rec["attempts"] == 2
    assert f"FAILED mips_bcd unit {poison}: {reason}" in r.stderr
    array, aor = poison.split("-", 1)                 # m24-<AOR key>: products SPITZER_M1_<AOR key>_...
    lost = "SPITZER_M%d_%s_" % ({"m24": 1, "m70": 2, "m160": 3}[array], aor)
    ref = fits_products(reference[1])
    want = {k: v for k, v in ref.items() if not k.startswith(lost)}
    assert fits_products(out) == want and 0 < len(want) < len(ref)
    _assert_no_half_or_duplicate_unit(store)

