"""A small mission (2 SWAS days, 2 MIPS AORs) through `sbatch` of the documented job script on the
one-node SLURM of the test setup: the products and the status table equal a LocalCluster run's."""
import textwrap

import pytest
from conftest import fits_products

from reduce.batch import render_sbatch, run_batch


def _mission(folder, swas_raw, mips_raw):
    folder.mkdir(parents=True)
    path = folder / "mission.yaml"
    path.write_text(textwrap.dedent(f"""\
        output: out
        swas:
          raw: [{swas_raw / 'day5'}, {swas_raw / 'day6'}]
          store: swas.zarr
        mips:
          raw: [{mips_raw}]
          store: mips.zarr
        """))
    return path


@pytest.fixture(scope="module")
def local_run(swas_raw, mips_raw, tmp_path_factory):
    """The output root of the same mission run in this process, without a cluster: the reference."""
    local = _mission(tmp_path_factory.mktemp("local") / "m", swas_raw, mips_raw)
    assert run_batch(local, report=print).exit_code == 0
    return local.parent / "out"


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_of_the_documented_script_equals_a_local_run(slurm_cluster, swas_raw, mips_raw, tmp_path, local_run):
    batch = _mission(tmp_path / "slurm", swas_raw, mips_raw)
    script = render_sbatch(batch, partition=slurm_cluster.partition, cpus=2, mem="6G", time="00:20:00")
    (tmp_path / "slurm" / "out" / "logs").mkdir(parents=True)
    job = slurm_cluster.submit(script, cwd=tmp_path / "slurm")
    assert slurm_cluster.wait(job, timeout=600) == "COMPLETED", slurm_cluster.job(job)
    assert slurm_cluster.job(job)["ExitCode"] == "0:0"
    log = (tmp_path / "slurm" / "out" / "logs" / f"skyreduce-batch-{job}.log").read_text()
    assert f"job {job}" in log and "2 workers" in log and "exit status 0" in log, log
    assert fits_products(tmp_path / "slurm" / "out") == fits_products(local_run)
    assert len(fits_products(local_run)) > 100
    assert (tmp_path / "slurm" / "out" / "status.tsv").read_text() == (local_run / "status.tsv").read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_backend_slurm_from_the_client_equals_a_local_run(slurm_cluster, swas_raw, mips_raw, tmp_path, local_run):
    """The same mission with the workers in SLURM jobs (dask-jobqueue, TLS) started by the client."""
    import dask

    from cluster.connect import connect
    remote = _mission(tmp_path / "remote", swas_raw, mips_raw)
    (tmp_path / "logs").mkdir()
    with dask.config.set({"skyreduce.cluster.shared-directory": str(tmp_path / "shared"),
                          "skyreduce.cluster.slurm.interface": "lo",
                          "skyreduce.cluster.slurm.log-directory": str(tmp_path / "logs")}):
        with connect(backend="slurm", jobs=2, job_cores=1, job_memory=f"{slurm_cluster.def_mem_per_cpu_mb * 2}MiB",
                     walltime="00:20:00", queue=slurm_cluster.partition, dashboard=False) as client:
            client.wait_for_workers(2, timeout=180)
            jobs = [job.job_id for job in client.cluster.workers.values()]
            assert all(slurm_cluster.state(j) == "RUNNING" for j in jobs)
            result = run_batch(remote, client=client, report=print)
    assert result.exit_code == 0, result.text()
    assert fits_products(tmp_path / "remote" / "out") == fits_products(local_run)
    assert (tmp_path / "remote" / "out" / "status.tsv").read_text() == (local_run / "status.tsv").read_text()
