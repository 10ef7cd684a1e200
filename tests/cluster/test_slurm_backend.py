"""Backends slurm and slurm-allocation on a real one-node SLURM (fixture ``slurm_cluster``).

Marker ``slurm``: ``pytest -m slurm`` runs them. The fixture (tests/slurm_setup.py) starts
munged, slurmctld and slurmd, exports SLURM_CONF, skips locally when SLURM is not installed
and fails in CI; these tests skip only when the fixture itself is absent.
"""
import shutil
import sys
import textwrap
from pathlib import Path

import dask
import dask.array as da
import pytest
from distributed import Client

from cluster.connect import connect

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def slurm(request):
    try:
        cluster = request.getfixturevalue("slurm_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("fixture slurm_cluster not available")
    assert shutil.which("sbatch"), "the slurm_cluster fixture ran without sbatch on PATH"
    return cluster


@pytest.fixture
def batch_config(tmp_path, slurm):
    """Credentials and job logs in the test's folder; scheduler and workers on 127.0.0.1."""
    (tmp_path / "logs").mkdir()
    with dask.config.set({"skyreduce.cluster.shared-directory": str(tmp_path / "shared"),
                          "skyreduce.cluster.slurm.interface": "lo",
                          "skyreduce.cluster.slurm.log-directory": str(tmp_path / "logs")}):
        yield tmp_path


def _logs(folder, slurm):
    tails = [f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
             for p in sorted(Path(folder).glob("*"))]
    return "\n".join(tails) + "\n" + slurm.log_tail()


def test_slurm_backend_workers_in_jobs(slurm, batch_config):
    """connect(backend="slurm"): the job is submitted with the requested resources, its
    worker joins over TLS, computes, and the job ends when the client closes."""
    memory = f"{slurm.def_mem_per_cpu_mb}MiB"
    with connect(backend="slurm", jobs=1, job_cores=1, job_memory=memory,
                 walltime="00:10:00", queue=slurm.partition, dashboard=False) as client:
        folder = Path(client.cluster.tls_folder)
        addr = client.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        try:
            client.wait_for_workers(1, timeout=180)
        except TimeoutError:
            pytest.fail("no worker joined:\n" + _logs(batch_config / "logs", slurm))
        (job,) = client.cluster.workers.values()
        info = slurm.job(job.job_id)
        assert info["JobState"] == "RUNNING"
        assert (info["JobName"], info["Partition"], info["TimeLimit"], info["NumCPUs"]) == \
            ("skyreduce-worker", slurm.partition, "00:10:00", "1")
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["memory_limit"] == slurm.def_mem_per_cpu_mb * 2**20
        assert client.compute(da.arange(1000, chunks=100).sum()).result(timeout=60) == 499500
        with pytest.raises((TypeError, OSError, TimeoutError), match="(?i)tls|ssl|timed out"):
            Client(addr, timeout="3s").close()
    assert slurm.wait(job.job_id, timeout=60) in ("CANCELLED", "COMPLETED")
    assert not folder.exists()


ALLOCATION_TASK = """
import sys
from cluster import connect

if __name__ == "__main__":
    client = connect(backend="slurm-allocation", dashboard=False)
    nworkers = len(client.scheduler_info()["workers"])
    print("RESULT", client.scheduler.address, client.submit(sum, [1, 2, 3]).result(), nworkers,
          flush=True)
    client.close()
"""


def test_slurm_allocation_mode(slurm, tmp_path):
    """One sbatch job, one `srun` of 3 tasks: scheduler, client, worker; the step ends when
    the client closes and the job completes."""
    (tmp_path / "task.py").write_text(ALLOCATION_TASK)
    shared = tmp_path / "shared"
    script = textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH -n 3
        #SBATCH -t 00:05:00
        #SBATCH -o {tmp_path}/job.out
        export PYTHONPATH={REPO}
        export DASK_SKYREDUCE__CLUSTER__SHARED_DIRECTORY={shared}
        export DASK_SKYREDUCE__CLUSTER__SLURM__INTERFACE=lo
        srun {sys.executable} {tmp_path}/task.py
        """)
    job_id = slurm.submit(script, cwd=tmp_path)
    state = slurm.wait(job_id, timeout=240)
    out = (tmp_path / "job.out").read_text(errors="replace") if (tmp_path / "job.out").exists() else ""
    assert state == "COMPLETED", f"{state}\n{out[-4000:]}\n{slurm.log_tail()}"
    (line,) = [x for x in out.splitlines() if x.startswith("RESULT")]
    _, addr, total, nworkers = line.split()
    assert addr.startswith("tls://127.0.0.1:") and (total, nworkers) == ("6", "1")
    assert not any(p.name.startswith("slurm-") for p in shared.iterdir())
