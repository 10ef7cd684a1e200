"""Resilience on SLURM (issue 8, part 4): a worker job cancelled with ``scancel`` in the middle of
a reduction (``skyreduce reduce mips --backend slurm --jobs 2``) -> the run ends 0 with store
tables and products identical to an undisturbed run; the unit the job was computing runs again
on the other job's worker (dask-jobqueue submits a job in place of the lost one meanwhile).

The mission, the undisturbed run and the helpers are those of tests/test_resilience.py."""
import os
import signal
import subprocess
from pathlib import Path

import pytest
import test_resilience as base
from test_resilience import NAME, _assert_identical, _copy, _n_records, _reduce, _running_unit, _wait

from reduce.runner import read_records
from reduce.runner.core import records_dir

# the module fixtures of test_resilience (the undisturbed run is made on its scheduler-file cluster)
mips_store, dask_cluster, reference = base.mips_store, base.dask_cluster, base.reference


def _slurm_job_of(pid):
    """The SLURM job a process runs in (from its environment)."""
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"SLURM_JOB_ID="))


@pytest.mark.slurm
@pytest.mark.slow
def test_worker_job_cancelled_mid_run_the_run_ends_identical(slurm_cluster, mips_store, reference, tmp_path):
    store = _copy(mips_store, tmp_path / "mips.zarr")
    out = tmp_path / "out"
    (tmp_path / "logs").mkdir()
    env = {**os.environ, "DASK_SKYREDUCE__CLUSTER__SHARED_DIRECTORY": str(tmp_path / "shared"),
           "DASK_SKYREDUCE__CLUSTER__SLURM__INTERFACE": "lo",
           "DASK_SKYREDUCE__CLUSTER__SLURM__LOG_DIRECTORY": str(tmp_path / "logs")}
    cmd = _reduce(store, out, "--backend", "slurm", "--jobs", "2", "--job-cores", "1",
                  "--job-memory", f"{slurm_cluster.def_mem_per_cpu_mb * 2}MiB", "--job-walltime", "00:20:00",
                  "--job-queue", slurm_cluster.partition, "--no-dashboard")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        _wait("a first unit record and a unit running", lambda: (_n_records(store) >= 1 and _running_unit(store))
              or proc.poll() is not None, 300)
        assert proc.poll() is None, "the run ended before a job could be cancelled"
        key, pid = _running_unit(store)
        job = _slurm_job_of(pid)
        slurm_cluster.cancel(job)
        assert slurm_cluster.wait(job, timeout=60) == "CANCELLED"
        interrupted = not (records_dir(store, NAME) / f"{key}.json").exists()
        print(f"cancelled job {job} while its worker computed unit {key}; the unit was "
              f"{'interrupted' if interrupted else 'done before the worker ended'}")
        stdout, stderr = proc.communicate(timeout=400)
        # the command's cluster cancelled its jobs, the one submitted in place of the lost one too
        _wait("the worker jobs gone", lambda: not slurm_cluster.squeue(), 60, poll=0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        slurm_cluster.cancel_all()
    assert proc.returncode == 0, stdout + stderr
    assert "6 units: 6 done, 0 failed" in stdout, stdout
    if interrupted:                     # SIGTERM (scancel) ended the worker process in the unit: run again
        assert read_records(store, NAME)[key]["attempts"] == 2
    _assert_identical(store, out, reference)
