"""The one-node SLURM that the test setup starts (tests/slurm_setup.py) really runs jobs."""

import os
import sys
import time

import pytest

from slurm_setup import pid_alive

pytestmark = pytest.mark.slurm


def _mib(size):
    """A SLURM memory size ("1024M", "1G") in MiB."""
    return int(float(size[:-1]) * {"M": 1, "G": 1024, "T": 1024 ** 2}[size[-1]])


def test_cluster_is_sized_for_several_jobs(slurm_cluster):
    c = slurm_cluster
    assert os.environ["SLURM_CONF"] == str(c.conf)
    assert c.cpus >= 2 and c.cpus * c.def_mem_per_cpu_mb <= c.real_memory_mb
    conf = c.conf.read_text()
    for line in ("SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU_Memory",
                 f"DefMemPerCPU={c.def_mem_per_cpu_mb}", f"PartitionName={c.partition} "):
        assert line in conf
    partitions = c.command("sinfo", "--noheader", "--format=%P|%D|%c|%m").stdout.split()
    assert partitions == [f"{c.partition}*|1|{c.cpus}|{c.real_memory_mb}"]


def test_sbatch_wrap_runs_and_writes_its_output(slurm_cluster, tmp_path):
    c = slurm_cluster
    out = tmp_path / "hello.out"
    job = c.submit(wrap='echo "hello from job $SLURM_JOB_ID in $SLURM_JOB_PARTITION"',
                   options=["-o", out, "--job-name=hello"], cwd=tmp_path)
    assert c.wait(job, timeout=60) == "COMPLETED"
    assert out.read_text() == f"hello from job {job} in {c.partition}\n"
    info = c.job(job)
    assert info["ExitCode"] == "0:0" and info["Partition"] == c.partition and info["NodeList"] == c.nodename


def test_two_jobs_run_at_the_same_time(slurm_cluster, tmp_path):
    """Each job waits (up to 30 s) until both have started: only passes if they overlap."""
    c = slurm_cluster
    script = """#!/bin/sh
touch "started.$SLURM_JOB_ID"
i=0
while [ "$(ls started.* | wc -l)" -lt 2 ]; do
    i=$((i + 1)); [ "$i" -gt 150 ] && { echo alone; exit 1; }
    sleep 0.2
done
echo together
"""
    jobs = [c.submit(script, options=["-o", f"pair{k}.out"], cwd=tmp_path) for k in range(2)]
    assert [c.wait(j, timeout=60) for j in jobs] == ["COMPLETED", "COMPLETED"]
    assert [(tmp_path / f"pair{k}.out").read_text() for k in range(2)] == ["together\n"] * 2
    for j in jobs:                      # no --mem given: DefMemPerCPU applies, so both fit
        assert _mib(c.job(j)["MinMemoryCPU"]) == c.def_mem_per_cpu_mb


def test_scancel_ends_a_running_job(slurm_cluster, tmp_path):
    c = slurm_cluster
    job = c.submit(wrap="echo $$ > job.pid; exec sleep 300", options=["-o", "sleep.out"], cwd=tmp_path)
    c.wait(job, "RUNNING", timeout=60)
    pid_file = tmp_path / "job.pid"
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the job did not write its pid"
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    c.cancel(job)
    assert c.wait(job, timeout=30) == "CANCELLED"
    assert not c.squeue("--jobs", job)
    deadline = time.monotonic() + 15
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} of the cancelled job still runs"
        time.sleep(0.2)


def test_dask_worker_in_a_job_joins_the_scheduler(slurm_cluster, tmp_path):
    from distributed import Client, LocalCluster

    c = slurm_cluster
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None, protocol="tcp") as lc, \
            Client(lc) as client:
        job = c.submit(wrap=f"exec {sys.executable} -m distributed.cli.dask_worker {lc.scheduler_address} "
                            "--nthreads 1 --memory-limit 0 --no-dashboard --death-timeout 60 --name slurm-$SLURM_JOB_ID",
                       options=["-o", "worker.out"], cwd=tmp_path)
        try:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda x: x * 2 + 1, 20).result(timeout=30) == 41
            ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            assert list(ids.values()) == [job]
            assert list(client.scheduler_info()["workers"].values())[0]["name"] == f"slurm-{job}"
        except Exception:
            print((tmp_path / "worker.out").read_text() if (tmp_path / "worker.out").exists() else "no worker.out")
            raise
        finally:
            c.cancel(job)
        assert c.wait(job, timeout=30) == "CANCELLED"
