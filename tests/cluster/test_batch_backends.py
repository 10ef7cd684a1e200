"""Backends slurm, pbs and slurm-allocation (cluster.batch, cluster.slurm, cluster.pbs,
cluster.allocation) without a batch system: job scripts as text, options from config and CLI,
adaptive scaling, TLS credentials and their folder, clients without them refused.

A fake ``sbatch``/``scancel`` pair (shell scripts first on PATH) records each submitted
script and, when asked, runs it in the background like a one-node batch system; the
allocation mode runs as three local processes with the variables of an ``srun``.
"""
import argparse
import gc
import importlib
import logging
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import dask.array as da
import pytest
from distributed import Client, LocalCluster, Security

from cluster import batch, pbs, resolve_options, slurm
from cluster.batch import worker_environ
from cluster.connect import connect
from cluster.options import add_cluster_arguments, connect_from_args
from reduce.errors import ReduceError
from worker_probes import WORKER_MALLOC_TRIM, WORKER_PROFILING

co = importlib.import_module("cluster.options")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = "3s"


@pytest.fixture
def shared(tmp_path):
    """skyreduce.cluster.shared-directory in the test's folder (never ~/.skyreduce)."""
    folder = tmp_path / "shared"
    with dask.config.set({"skyreduce.cluster.shared-directory": str(folder)}):
        yield folder


def _section(name, values):
    """Dotted dask-config keys (a mapping set at the section would replace the whole section)."""
    return {f"skyreduce.cluster.{name}.{k}": v for k, v in values.items()}


def _script(backend="slurm", *, security=None, **kw):
    """The job script of a cluster of ``backend`` built from resolve_options(**kw)."""
    module = {"slurm": slurm, "pbs": pbs}[backend]
    with module.make_cluster(resolve_options(backend=backend, dashboard=False, **kw),
                             security) as cluster:
        return cluster.job_script(), cluster.tls_folder


def _worker_line(script):
    (line,) = [x for x in script.splitlines() if "distributed.cli.dask_worker" in x]
    return line


def _flag(line, name):
    """The value after ``name`` in a command line."""
    words = line.split()
    return words[words.index(name) + 1]


def _sum_on(client):
    return client.compute(da.arange(1000, chunks=100).sum()).result(timeout=60)


# ---------------------------------------------------------------- job scripts as text


def test_slurm_job_script(shared):
    script, folder = _script(queue="long", account="swas-ops", walltime="02:00:00",
                             job_cores=8, job_memory="32GiB", job_processes=2)
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("#SBATCH -J skyreduce-worker", "#SBATCH -p long", "#SBATCH -A swas-ops",
                      "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                      "#SBATCH -t 02:00:00"):
        assert directive in lines
    worker = _worker_line(script)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tls://")
    assert lines.index(worker_environ()) < lines.index(worker)
    assert worker_environ().endswith("""'{"MALLOC_TRIM_THRESHOLD_": None}' DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False""")
    with dask.config.set({"skyreduce.cluster.worker-malloc-trim-threshold": 65536, "skyreduce.cluster.worker-profile": True}):
        assert worker_environ().endswith("""'{"MALLOC_TRIM_THRESHOLD_": 65536}' DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True""")
    assert (_flag(worker, "--nworkers"), _flag(worker, "--nthreads")) == ("2", "4")
    assert _flag(worker, "--memory-limit") == "16.00GiB"        # 32 GiB / 2 processes
    assert "--nanny" in worker.split()
    # lifetime: 90 % of 7200 s minus the stagger (5 % of the walltime, at most 300 s)
    assert (_flag(worker, "--lifetime"), _flag(worker, "--lifetime-stagger")) == ("6180s", "300s")
    assert "--no-lifetime-restart" in worker.split()
    assert _flag(worker, "--protocol") == "tls://"
    assert [_flag(worker, f"--tls-{k}") for k in ("ca-file", "cert", "key")] == \
        [str(folder / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    assert Path(folder).parent == shared and not Path(folder).exists()  # removed on close


def test_slurm_job_script_config_sections(shared, tmp_path):
    logs = tmp_path / "logs"
    with dask.config.set(_section("slurm", {
            "job-extra-directives": ["--qos=long", "--constraint=haswell"],
            "job-script-prologue": ["module load python/3.11", "export OMP_NUM_THREADS=1"],
            "local-directory": "$TMPDIR", "log-directory": str(logs),
            "lifetime": "50m", "lifetime-stagger": "4m", "lifetime-restart": True})):
        script, _ = _script()
    lines = script.splitlines()
    assert lines.index("#SBATCH --qos=long") > lines.index("#SBATCH -t 01:00:00")
    assert "#SBATCH --constraint=haswell" in lines
    assert f"#SBATCH -e {logs}/skyreduce-worker-%J.err" in lines
    assert f"#SBATCH -o {logs}/skyreduce-worker-%J.out" in lines
    prologue = lines.index("module load python/3.11")
    assert lines[prologue + 1] == "export OMP_NUM_THREADS=1"
    assert prologue < lines.index(_worker_line(script))
    worker = _worker_line(script)
    assert _flag(worker, "--local-directory") == "$TMPDIR"
    assert (_flag(worker, "--lifetime"), _flag(worker, "--lifetime-stagger")) == ("3000s", "240s")
    assert "--lifetime-restart" in worker.split()
    # defaults of the one YAML: 4 cores, one single-threaded worker per core, 16 GiB
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH --mem=16G" in lines
    assert (_flag(worker, "--nworkers"), _flag(worker, "--nthreads"),
            _flag(worker, "--memory-limit")) == ("4", "1", "4.00GiB")


def test_pbs_job_script(shared):
    script, folder = _script("pbs", queue="workq", account="swas", walltime="04:00:00",
                             job_cores=4, job_memory="16GiB")
    lines = script.splitlines()
    for directive in ("#PBS -N skyreduce-worker", "#PBS -q workq", "#PBS -A swas",
                      "#PBS -l select=1:ncpus=4:mem=16GB", "#PBS -l walltime=04:00:00"):
        assert directive in lines
    worker = _worker_line(script)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tls://")
    assert (_flag(worker, "--nworkers"), _flag(worker, "--memory-limit")) == ("4", "4.00GiB")
    assert (_flag(worker, "--lifetime"), _flag(worker, "--lifetime-stagger")) == ("12660s", "300s")
    assert _flag(worker, "--tls-ca-file") == str(folder / "ca.pem")
    assert _flag(worker, "--tls-key") == str(folder / "key.pem")


def test_pbs_resource_spec_and_walltime_in_seconds(shared):
    with dask.config.set({"skyreduce.cluster.pbs.resource-spec": "select=2:ncpus=8:mem=60gb",
                          "skyreduce.cluster.pbs.job-extra-directives": ["-j oe"]}):
        script, _ = _script("pbs", walltime="3600")  # PBS: a bare number is seconds
    lines = script.splitlines()
    assert "#PBS -l select=2:ncpus=8:mem=60gb" in lines and "#PBS -j oe" in lines
    assert not any("select=1" in x for x in lines)
    assert _flag(_worker_line(script), "--lifetime") == "3060s"   # 0.9 h - 180 s


def test_no_tls_script_and_files_given(shared, tmp_path):
    script, folder = _script(tls=False)
    worker = _worker_line(script)
    assert folder is None and " tcp://" in worker and "--tls" not in worker
    assert not shared.exists()  # nothing written
    # credentials given as files: used as they are, no folder written
    ca, cert, key = batch.write_credentials(batch.private_folder(tmp_path / "own", "pki-"))
    script, folder = _script(tls_ca_file=ca, tls_cert=cert, tls_key=key)
    assert folder is None and _flag(_worker_line(script), "--tls-cert") == cert
    with pytest.raises(ReduceError, match="TLS switched off .* but TLS credentials given"):
        _script(tls=False, tls_ca_file=ca, tls_cert=cert, tls_key=key)


def test_in_memory_security_dumped_into_private_folder(shared):
    script, folder = _script(security=Security.temporary())
    ca = _flag(_worker_line(script), "--tls-ca-file")
    assert Path(ca).parent == folder and Path(folder).parent == shared


# ---------------------------------------------------------------- options: config, arguments


def test_yaml_defaults():
    opts = resolve_options(backend="slurm")
    b = opts.batch
    assert (b.cores, b.processes, b.threads, b.memory, b.walltime) == (4, 4, 1, 16 * 2**30, "01:00:00")
    assert (b.jobs, b.min_jobs, b.max_jobs, b.job_range) == (None, 1, 4, (1, 4))
    assert (b.lifetime, b.lifetime_stagger, b.lifetime_restart) == (3060.0, 180.0, False)
    assert (b.queue, b.account, b.local_directory, b.log_directory) == (None, None, None, None)
    assert opts.tls is True and opts.shared_directory == "~/.skyreduce"
    assert resolve_options(backend="pbs").batch.section == "pbs"
    assert resolve_options(backend="slurm-allocation").batch.section == "slurm"
    assert resolve_options().batch is None  # local


def test_config_overrides_and_explicit_arguments():
    with dask.config.set({"skyreduce.cluster.backend": "slurm", "skyreduce.cluster.tls": False,
                          **_section("slurm", {"queue": "short", "cores": 8, "processes": 2,
                                               "memory": "64GiB", "jobs": 3,
                                               "walltime": "1-00:00:00"})}):
        b = resolve_options().batch
        assert (b.queue, b.cores, b.processes, b.threads, b.memory) == ("short", 8, 2, 4, 64 * 2**30)
        assert (b.jobs, b.job_range, b.walltime_s) == (3, (3, 3), 86400.0)
        assert resolve_options().tls is False
        e = resolve_options(queue="long", job_cores=16, job_memory="128GiB", walltime="12:00:00",
                            job_processes=4, tls=True).batch
        assert (e.queue, e.cores, e.processes, e.threads, e.memory, e.walltime_s) == \
            ("long", 16, 4, 4, 128 * 2**30, 43200.0)
        assert resolve_options(tls=True).tls is True
        # an explicit adaptive range replaces the configured fixed number of jobs
        a = resolve_options(max_jobs=10).batch
        assert (a.jobs, a.job_range) == (None, (1, 10))
        assert resolve_options(min_jobs=0, max_jobs=2).batch.job_range == (0, 2)
        assert resolve_options(jobs=5).batch.job_range == (5, 5)
        # PBS reads its own section
        assert resolve_options(backend="pbs").batch.queue is None


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("DASK_SKYREDUCE__CLUSTER__SLURM__QUEUE", "gpu")
    monkeypatch.setenv("DASK_SKYREDUCE__CLUSTER__SLURM__MAX_JOBS", "12")
    try:
        dask.config.refresh()
        b = resolve_options(backend="slurm").batch
        assert (b.queue, b.max_jobs, b.cores) == ("gpu", 12, 4)
    finally:
        monkeypatch.delenv("DASK_SKYREDUCE__CLUSTER__SLURM__QUEUE")
        monkeypatch.delenv("DASK_SKYREDUCE__CLUSTER__SLURM__MAX_JOBS")
        dask.config.refresh()
    assert resolve_options(backend="slurm").batch.queue is None


@pytest.mark.parametrize("text, system, seconds", [
    ("01:00:00", "slurm", 3600), ("90", "slurm", 5400), ("30:00", "slurm", 1800),
    ("2-12", "slurm", 216000), ("1-02:30", "slurm", 95400), ("1-00:00:10", "slurm", 86410),
    ("01:00:00", "pbs", 3600), ("90", "pbs", 90), ("10:30", "pbs", 630),
])
def test_walltime_seconds(text, system, seconds):
    assert batch.walltime_seconds(text, system) == seconds


@pytest.mark.parametrize("kwargs, config, match", [
    ({"jobs": 2, "max_jobs": 3}, {}, "either a fixed number of jobs"),
    ({"jobs": 0}, {}, "slurm.jobs: expected an integer >= 1"),
    ({"min_jobs": 5, "max_jobs": 2}, {}, "max-jobs: 2 is below min-jobs 5"),
    ({"job_cores": 6, "job_processes": 4}, {}, "4 worker processes do not divide 6 cores"),
    ({"job_memory": "lots"}, {}, "slurm.memory: expected a size"),
    ({"walltime": "1h"}, {}, "slurm.walltime: not a walltime: '1h'"),
    ({}, {"walltime": 3600}, "quote it"),
    ({}, {"walltime": None}, "walltime: required"),
    ({"walltime": "01:00:00"}, {"lifetime": "59m", "lifetime-stagger": "2m"},
     "must leave before its job's walltime"),
    ({}, {"lifetime": "soon"}, "slurm.lifetime: expected a duration"),
    ({}, {"job-extra-directives": "--qos=long"}, "expected a list of strings"),
])
def test_bad_batch_options(kwargs, config, match):
    with dask.config.set({f"skyreduce.cluster.slurm.{k}": v for k, v in config.items()}):
        with pytest.raises(ReduceError, match=match):
            resolve_options(backend="slurm", **kwargs)


def test_lifetime_off():
    with dask.config.set({"skyreduce.cluster.slurm.lifetime": False}):
        b = resolve_options(backend="slurm").batch
    assert b.lifetime is None and b.worker_args() == []


def test_options_that_do_not_apply():
    with pytest.raises(ReduceError, match="jobs, queue only apply to a cluster started on a "
                                          "batch system .*not to backend 'local'"):
        resolve_options(jobs=2, queue="long")
    with pytest.raises(ReduceError, match="not to the scheduler you join"):
        resolve_options(scheduler="tls://head:8786", job_cores=4)
    with pytest.raises(ReduceError, match="n_workers, memory_limit only apply to a local cluster"):
        connect(backend="slurm", n_workers=2, memory_limit="1GiB")


def _parser():
    return add_cluster_arguments(argparse.ArgumentParser(prog="skyreduce-test"))


def test_cli_batch_options(monkeypatch):
    calls = []
    monkeypatch.setattr(co, "connect", lambda **kw: calls.append(kw))
    connect_from_args(_parser().parse_args(
        ["--backend", "slurm", "--jobs", "4", "--job-queue", "long", "--job-account", "swas",
         "--job-walltime", "08:00:00", "--job-cores", "16", "--job-memory", "64GiB",
         "--job-processes", "4", "--no-tls"]))
    connect_from_args(_parser().parse_args(["--backend", "pbs", "--min-jobs", "0",
                                            "--max-jobs", "20"]))
    first, second = calls
    assert {k: v for k, v in first.items() if v is not None} == dict(
        backend="slurm", jobs=4, queue="long", account="swas", walltime="08:00:00",
        job_cores=16, job_memory="64GiB", job_processes=4, tls=False)
    assert {k: v for k, v in second.items() if v is not None} == dict(
        backend="pbs", min_jobs=0, max_jobs=20)


def test_cli_into_resolved_options(monkeypatch):
    """The parsed options reach resolve_options (the CLI wins over the config)."""
    seen = []
    monkeypatch.setattr(co, "connect", lambda **kw: seen.append(resolve_options(**kw)))
    with dask.config.set({"skyreduce.cluster.slurm.queue": "short"}):
        connect_from_args(_parser().parse_args(["--backend", "slurm", "--job-queue", "long",
                                                "--max-jobs", "8", "--job-walltime", "30"]))
    (opts,) = seen
    assert (opts.backend, opts.batch.queue, opts.batch.job_range, opts.batch.walltime_s) == \
        ("slurm", "long", (1, 8), 1800.0)


@pytest.mark.parametrize("argv", [["--backend", "lsf"], ["--jobs", "0"], ["--min-jobs", "-1"],
                                  ["--job-memory", "lots"], ["--job-cores", "x"]])
def test_cli_rejects_batch_options(argv, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_cli_jobs_and_range_refused():
    with pytest.raises(ReduceError, match="either a fixed number of jobs"):
        connect_from_args(_parser().parse_args(["--backend", "slurm", "--jobs", "2",
                                                "--max-jobs", "4"]))


def test_import_keeps_sigint_handler():
    """dask-jobqueue sets SIGINT -> sys.exit() when imported; cluster.batch.jobqueue() undoes it."""
    code = textwrap.dedent("""
        import signal
        # as in an interactive command (a batch job or `nohup` may start Python with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from cluster import batch
        before = signal.getsignal(signal.SIGINT)
        batch.jobqueue()
        assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)
        assert before is signal.default_int_handler
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# ---------------------------------------------------------------- TLS credentials


def test_tls_folder_permissions(tmp_path):
    shared = tmp_path / "deep" / "shared"
    folder = batch.private_folder(shared, "tls-")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and folder.parent == shared
    paths = batch.write_credentials(folder)
    assert sorted(os.listdir(folder)) == ["ca.pem", "cert.pem", "key.pem"]  # no CA key
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert b"PRIVATE KEY" in Path(paths[2]).read_bytes()
    assert not any(b"PRIVATE KEY" in Path(p).read_bytes() for p in paths[:2])
    # a folder that others may enter is refused
    os.chmod(folder, 0o750)
    with pytest.raises(ReduceError, match="mode 0700"):
        batch.write_credentials(folder)
    with pytest.raises(ReduceError, match="white space"):
        batch.private_folder(tmp_path / "with space", "tls-")


def test_tls_folder_under_shared_directory_and_removed(shared):
    opts = resolve_options(backend="slurm", dashboard=False)
    with slurm.make_cluster(opts) as cluster:
        folder = Path(cluster.tls_folder)
        assert folder.parent == shared and folder.name.startswith("tls-")
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert {stat.S_IMODE(os.stat(p).st_mode) for p in folder.iterdir()} == {0o600}
        assert cluster.scheduler_address.startswith("tls://")
        assert cluster.security.require_encryption
    assert not folder.exists()


@pytest.fixture(scope="module")
def batch_tls(tmp_path_factory):
    """A LocalCluster secured with credentials exactly as a batch cluster writes them."""
    root = tmp_path_factory.mktemp("batch-tls")
    with dask.config.set({"skyreduce.cluster.shared-directory": str(root)}):
        sec, folder = batch.batch_security(resolve_options(backend="slurm"), None)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://",
                      host="127.0.0.1", security=sec, dashboard_address=None,
                      silence_logs=logging.WARNING,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as lc:
        yield lc, sec, folder


def _refused_without_certificate(addr, ca_file):
    """Every way in without this cluster's certificate fails."""
    # plain distributed, no security: cannot even open a TLS comm
    with pytest.raises((TypeError, OSError, TimeoutError), match="(?i)tls|ssl|timed out"):
        Client(addr, timeout=TIMEOUT).close()
    # a certificate from another CA (dask's own temporary credentials): handshake refused
    with pytest.raises((OSError, TimeoutError)):
        Client(addr, security=Security.temporary(), timeout=TIMEOUT).close()
    # a Client that failed in __init__ closes itself when collected: do it here, not in the
    # thread of the next cluster's event loop (where it blocks that loop's start for 10 s)
    gc.collect()
    # skyreduce's connect with nothing: refused before any connection
    with pytest.raises(ReduceError, match="uses TLS: give tls_ca_file"):
        connect(scheduler=addr)
    # a raw TLS client that trusts the CA but shows no certificate: the server ends it
    host, port = addr.removeprefix("tls://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 8)
                if tls.recv(1) == b"":
                    raise ConnectionError("closed by the scheduler")


def test_batch_credentials_admit_holder_refuse_others(batch_tls):
    lc, sec, folder = batch_tls
    addr = lc.scheduler_address
    assert addr.startswith("tls://127.0.0.1:")
    ca, cert, key = (str(folder / n) for n in ("ca.pem", "cert.pem", "key.pem"))
    with connect(scheduler=addr, tls_ca_file=ca, tls_cert=cert, tls_key=key) as client:
        assert _sum_on(client) == 499500
    _refused_without_certificate(addr, ca)


# ---------------------------------------------------------------- a fake batch system

FAKE_SBATCH = """#!/bin/bash
# fake sbatch: keep the script; run it in the background when FAKE_BATCH_RUN=1
set -e
id=$$
cp "$1" "{dir}/$id.sh"
if [ "${{FAKE_BATCH_RUN:-0}}" = 1 ]; then
    setsid bash "{dir}/$id.sh" > "{dir}/$id.log" 2>&1 < /dev/null &
    echo $! > "{dir}/$id.pid"
fi
echo "Submitted batch job $id"
"""
FAKE_SCANCEL = """#!/bin/bash
# fake scancel: record, stop the job's process group
for id in "$@"; do
    echo "$id" >> "{dir}/cancelled"
    if [ -f "{dir}/$id.pid" ]; then kill -TERM -- "-$(cat "{dir}/$id.pid")" 2>/dev/null || true; fi
done
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A fake sbatch/scancel (and qsub/qdel) first on PATH; returns the folder of the scripts."""
    bin_dir, jobs = tmp_path / "fake-bin", tmp_path / "fake-jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL),
                       ("qsub", FAKE_SBATCH), ("qdel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text.format(dir=jobs))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield jobs
    for pid_file in jobs.glob("*.pid"):  # never leave a worker behind
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_adaptive_range_submits_minimum_jobs(fake_slurm, shared, caplog):
    """min-jobs jobs are submitted at once, the range is in workers (jobs x processes); the
    jobs are cancelled when the client closes."""
    caplog.set_level(logging.INFO, logger="cluster")
    with connect(backend="slurm", min_jobs=2, max_jobs=3, job_cores=2, job_memory="2GiB",
                 dashboard=False) as client:
        cluster = client.cluster
        assert (cluster._adaptive.minimum, cluster._adaptive.maximum) == (4, 6)  # 2 processes/job
        _wait_for(lambda: len(list(fake_slurm.glob("*.sh"))) == 2, 30, "2 submitted jobs")
        time.sleep(1.5)  # no more than the minimum while nothing runs
        scripts = sorted(fake_slurm.glob("*.sh"))
        assert len(scripts) == 2
        assert "#SBATCH --cpus-per-task=2" in scripts[0].read_text()
        assert cluster.scheduler_address in scripts[0].read_text()
    cancelled = (fake_slurm / "cancelled").read_text().split()
    assert sorted(cancelled) == sorted(p.stem for p in scripts)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "cluster.batch"]
    assert message.startswith("SLURM cluster: scheduler at tls://")
    assert "adaptive, 2 to 3 jobs of 2 cores, 2.00 GiB, 01:00:00 (2 workers x 1 threads per " \
        "job); workers leave after 3060 +- 180 s; TLS credentials in " in message


def test_fixed_jobs_is_adaptive_min_equals_max(fake_slurm, shared):
    with connect(backend="pbs", jobs=3, job_cores=1, job_memory="1GiB",
                 dashboard=False) as client:
        assert (client.cluster._adaptive.minimum, client.cluster._adaptive.maximum) == (3, 3)
        assert "#PBS -l select=1:ncpus=1:mem=1024MB" in client.cluster.job_script()
        _wait_for(lambda: len(list(fake_slurm.glob("*.sh"))) == 3, 30, "3 submitted jobs")
    assert len((fake_slurm / "cancelled").read_text().split()) == 3


def test_batch_scheduler_gets_allowed_failures(fake_slurm, shared):
    """The scheduler of a batch cluster (in this process) gets skyreduce.cluster.allowed-failures."""
    with dask.config.set({"skyreduce.cluster.allowed-failures": 2}):
        with connect(backend="slurm", jobs=1, job_cores=1, job_memory="1GiB", dashboard=False) as client:
            assert client.cluster.scheduler.allowed_failures == 2
    assert dask.config.get("distributed.scheduler.allowed-failures") == 3


def test_slurm_backend_end_to_end_with_fake_sbatch(fake_slurm, shared, monkeypatch):
    """connect(backend="slurm") -> sbatch runs the job script -> a worker joins over TLS with
    the files of the private folder; clients without them are refused; close cancels the job
    and removes the folder."""
    monkeypatch.setenv("FAKE_BATCH_RUN", "1")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with dask.config.set({"skyreduce.cluster.slurm.interface": "lo"}):
        with connect(backend="slurm", jobs=1, job_cores=1, job_memory="1GiB",
                     walltime="00:10:00", dashboard=False) as client:
            folder = Path(client.cluster.tls_folder)
            addr = client.scheduler.address
            assert addr.startswith("tls://127.0.0.1:")
            try:
                client.wait_for_workers(1, timeout=120)
            except TimeoutError:
                logs = "\n".join(p.read_text()[-3000:] for p in fake_slurm.glob("*.log"))
                pytest.fail(f"no worker joined; job logs:\n{logs}")
            ((worker_addr, worker),) = client.scheduler_info()["workers"].items()
            assert worker_addr.startswith("tls://127.0.0.1:")
            assert worker["memory_limit"] == 2**30 and worker["nthreads"] == 1
            assert _sum_on(client) == 499500
            # the job's nanny (no skyreduce import) spawned it without MALLOC_TRIM_THRESHOLD_ (batch.worker_environ)
            assert client.run(WORKER_MALLOC_TRIM) == {worker_addr: None}
            # nor distributed's statistical profiler (DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED)
            assert client.run(WORKER_PROFILING) == {worker_addr: False}
            (script,) = fake_slurm.glob("*.sh")
            line = _worker_line(script.read_text())
            assert _flag(line, "--tls-cert") == str(folder / "cert.pem")
            assert (_flag(line, "--lifetime"), _flag(line, "--lifetime-stagger")) == ("510s", "30s")
            _refused_without_certificate(addr, str(folder / "ca.pem"))
            pid = int((fake_slurm / f"{script.stem}.pid").read_text())
    assert not folder.exists()
    assert (fake_slurm / "cancelled").read_text().split() == [script.stem]
    _wait_for(lambda: not _alive(pid), 30, "the job to stop")


def _alive(pid):
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- inside one allocation

ALLOCATION_TASK = """
import sys
from cluster import connect

if __name__ == "__main__":
    client = connect(backend="slurm-allocation", dashboard=False)
    info = client.scheduler_info()["workers"]
    total = client.submit(sum, [1, 2, 3]).result()
    print("RESULT", client.scheduler.address, total, len(info),
          sorted(w["nthreads"] for w in info.values()), flush=True)
    # the worker's own profiler and environment (cluster.batch.worker_spawn_config)
    spawn = client.run(lambda dask_worker: ("profile" in dask_worker.periodic_callbacks,
                                            __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")))
    print("WORKERS", sorted(spawn.values()), flush=True)
    client.close()
"""


def test_allocation_mode_three_tasks(tmp_path):
    """Three processes with the variables of one `srun -n 3 -c 2`: scheduler, client, worker."""
    script = tmp_path / "task.py"
    script.write_text(ALLOCATION_TASK)
    shared = tmp_path / "shared"
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "3",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_CPU": "512",
           "DASK_SKYREDUCE__CLUSTER__SHARED_DIRECTORY": str(shared),
           "DASK_SKYREDUCE__CLUSTER__SLURM__INTERFACE": "lo",
           "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, text=True,
                              env={**env, "SLURM_PROCID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for i in range(3)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0], "\n".join(o[-3000:] for o in outputs)
    (line,) = [x for x in outputs[1].splitlines() if x.startswith("RESULT")]
    _, addr, total, nworkers, threads = line.split(maxsplit=4)
    assert addr.startswith("tls://127.0.0.1:") and (total, nworkers, threads) == ("6", "1", "[2]")
    # its worker started without distributed's profiler and MALLOC_TRIM_THRESHOLD_
    assert "WORKERS [(False, None)]" in outputs[1].splitlines()
    assert not any("RESULT" in o for o in (outputs[0], outputs[2]))  # only the client goes on
    assert not (shared / "slurm-4242.0").exists()  # removed by the scheduler task


def test_allocation_mode_needs_srun(monkeypatch, shared):
    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ReduceError, match="runs as the tasks of one srun"):
        connect(backend="slurm-allocation")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(ReduceError, match="at least 3 tasks"):
        connect(backend="slurm-allocation")
    with pytest.raises(ReduceError, match="jobs only apply to a cluster started on a batch"):
        connect(backend="slurm-allocation", jobs=2)


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_CPUS_PER_TASK": "4", "SLURM_MEM_PER_CPU": "1000"}, (4, 4000 * 2**20)),
    ({"SLURM_MEM_PER_NODE": "8000", "SLURM_NTASKS_PER_NODE": "4"}, (1, 2000 * 2**20)),
    ({}, (1, "auto")),
])
def test_allocation_worker_resources(monkeypatch, env, expected):
    from cluster import allocation

    for name in ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_CPU", "SLURM_MEM_PER_NODE",
                 "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert allocation.worker_resources() == expected


def test_worker_lifetime_job_replaced(fake_slurm, shared, monkeypatch):
    """A worker leaves at its lifetime (before the walltime); the adaptive scaling (fixed
    jobs = min = max) submits a new job whose worker takes over."""
    monkeypatch.setenv("FAKE_BATCH_RUN", "1")
    with dask.config.set({"skyreduce.cluster.slurm.interface": "lo",
                          "skyreduce.cluster.slurm.lifetime": "4s",
                          "skyreduce.cluster.slurm.lifetime-stagger": "1s",
                          "distributed.deploy.lost-worker-timeout": "0.5s"}):
        with connect(backend="slurm", jobs=1, job_cores=1, job_memory="1GiB",
                     walltime="00:10:00", dashboard=False, tls=False) as client:
            client.wait_for_workers(1, timeout=120)
            first = set(client.scheduler_info()["workers"])
            _wait_for(lambda: len(list(fake_slurm.glob("*.sh"))) >= 2, 120, "a second job")
            _wait_for(lambda: set(client.scheduler_info()["workers"]) - first, 120,
                      "the new job's worker")
            assert _sum_on(client) == 499500
            line = _worker_line(sorted(fake_slurm.glob("*.sh"))[0].read_text())
            assert (_flag(line, "--lifetime"), _flag(line, "--lifetime-stagger")) == ("4s", "1s")
