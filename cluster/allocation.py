"""backend ``slurm-allocation``: scheduler, client and workers inside one SLURM allocation.

For sites that forbid jobs that submit jobs. Every task of one ``srun`` runs the same
skyreduce command (at least 3 tasks)::

    #SBATCH --ntasks=6 --cpus-per-task=2 --mem-per-cpu=4G --time=12:00:00
    srun skyreduce reduce swas --store swas.zarr --out level1 --backend slurm-allocation

Through dask-jobqueue's ``SLURMRunner``: task 0 runs the dask scheduler, task 1 goes on with
the command (the client), the others run one worker each (a nanny and a worker of
``SLURM_CPUS_PER_TASK`` threads; memory limit from ``SLURM_MEM_PER_CPU``, else
``SLURM_MEM_PER_NODE`` / ``SLURM_NTASKS_PER_NODE``, else dask's share of the node). When the
command ends it shuts the scheduler down, which stops the workers: every task exits and the
step ends. Tasks other than the client leave ``connect()`` with ``SystemExit(0)``.

The scheduler file and the TLS credentials (TLS unless ``skyreduce.cluster.tls`` is false)
live in a private folder (0700) ``slurm-<job>.<step>`` under
``skyreduce.cluster.shared-directory``: task 0 writes the credentials, the others wait for
them (``skyreduce.cluster.timeout``); task 0 removes the folder when the scheduler stops.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import dask
from distributed import Client
from distributed.core import Status

from cluster import batch
from reduce.errors import ReduceError

log = logging.getLogger(__name__)

SCHEDULER, CLIENT = 0, 1  # SLURM_PROCID of the scheduler and of the client


def slurm_task():
    """(job, step, procid, ntasks) of this task, from the environment of ``srun``."""
    env = os.environ
    try:
        job, procid, ntasks = env["SLURM_JOB_ID"], int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    except (KeyError, ValueError):
        raise ReduceError("backend slurm-allocation runs as the tasks of one srun (SLURM_JOB_ID, "
                          "SLURM_PROCID and SLURM_NTASKS are not all set); outside an allocation "
                          "use backend slurm or local") from None
    step = env.get("SLURM_STEP_ID", "0")
    restart = env.get("SLURM_RESTART_COUNT", "0")
    if ntasks < 3:
        raise ReduceError(f"backend slurm-allocation needs at least 3 tasks (scheduler, client, "
                          f"workers), this srun has {ntasks}")
    return f"{job}.{step}" + (f".r{restart}" if restart not in ("", "0") else ""), procid, ntasks


def worker_resources():
    """(threads, memory limit) of one worker task from the SLURM environment."""
    env = os.environ
    threads = int(env.get("SLURM_CPUS_PER_TASK") or 1)
    if env.get("SLURM_MEM_PER_CPU"):
        return threads, int(env["SLURM_MEM_PER_CPU"]) * threads * 2**20
    if env.get("SLURM_MEM_PER_NODE") and env.get("SLURM_NTASKS_PER_NODE"):
        return threads, int(env["SLURM_MEM_PER_NODE"]) * 2**20 // int(env["SLURM_NTASKS_PER_NODE"])
    return threads, "auto"


def _job_folder(opts, tag):
    parent = Path(os.path.expandvars(os.path.expanduser(opts.shared_directory))).absolute()
    folder = parent / f"slurm-{tag}"
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ReduceError(f"skyreduce.cluster.shared-directory: cannot create {folder}: {exc}") from exc
    batch.check_private(folder)
    return folder


def _shared_credentials(folder, procid, timeout):
    """(ca, cert, key) in ``folder/tls``: written by the scheduler task, awaited by the others."""
    final = folder / "tls"
    if procid == SCHEDULER:
        if final.exists():  # left by a step that died: start afresh
            shutil.rmtree(final)
        tmp = batch.private_folder(folder, ".tls-")
        batch.write_credentials(tmp)
        os.rename(tmp, final)
    else:
        deadline = time.monotonic() + timeout
        while not final.is_dir():
            if time.monotonic() > deadline:
                raise ReduceError(f"{final}: the scheduler task wrote no TLS credentials "
                                  f"within {timeout:g} s")
            time.sleep(0.2)
    batch.check_private(final)
    return tuple(str(final / name) for name in batch.CREDENTIAL_FILES)


class AllocationClient(Client):
    """The client task's Client: closing it shuts the scheduler down, which ends every task."""

    def close(self, *args, **kwargs):
        if self.status not in ("closing", "closed"):
            try:
                self.shutdown()
                return None
            except Exception as exc:  # the scheduler may be gone already
                log.debug("shutting the scheduler down: %s", exc)
        return super().close(*args, **kwargs)


def connect(opts, security=None, kw=None):
    """Play this task's part: scheduler and workers run until the client ends (then SystemExit)."""
    from cluster.connect import tls_security

    kw = dict(kw or {})
    tag, procid, ntasks = slurm_task()
    folder = _job_folder(opts, tag)
    b = opts.batch
    files = (opts.tls_ca_file, opts.tls_cert, opts.tls_key)
    if security is not None and any(
            isinstance(v, str) and "\n" in v
            for role in ("client", "scheduler", "worker")
            for v in security.get_tls_config_for_role(role).values()):
        raise ReduceError("backend slurm-allocation: every task needs the same credentials; give "
                          "TLS files, not in-memory ones (or let skyreduce write them)")
    if security is None and any(files):
        security = tls_security(*files, roles=("client", "scheduler", "worker"))
    elif security is None and opts.tls:
        security = tls_security(*_shared_credentials(folder, procid, opts.timeout),
                                roles=("client", "scheduler", "worker"))
    elif security is None:
        log.warning("TLS is off: anyone who can reach the dask scheduler can run code as you")
    protocol = "tls://" if security is not None else "tcp://"
    threads, memory = worker_resources()
    scheduler_file = folder / "scheduler.json"
    if procid == SCHEDULER and scheduler_file.exists():
        scheduler_file.unlink()
    scheduler_options = {"protocol": protocol, "security": security, "interface": b.interface,
                         "dashboard": opts.dashboard, "dashboard_address": opts.dashboard_address}
    worker_options = {"protocol": protocol, "security": security, "interface": b.interface,
                      "nthreads": threads, "memory_limit": memory,
                      "local_directory": b.local_directory, "death_timeout": 60}
    runner_cls = batch.jobqueue().slurm.SLURMRunner
    main = threading.current_thread() is threading.main_thread()
    if procid != CLIENT and main:
        # the runner ends the scheduler and worker tasks with SIGINT once their part is over
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        with dask.config.set(batch.worker_spawn_config()):
            runner = runner_cls(
                scheduler_file=str(scheduler_file).replace("{", "{{").replace("}", "}}"),
                scheduler_options=scheduler_options, worker_options=worker_options,
                worker_class="distributed.Nanny")
    finally:
        if procid == SCHEDULER:
            shutil.rmtree(folder, ignore_errors=True)
    if procid != CLIENT:
        raise SystemExit(0)
    # the runner's own rpc to the scheduler has no credentials: the client shuts down instead
    runner.scheduler_comm = None
    runner.status = Status.closed
    client = AllocationClient(runner.scheduler_address, security=security, timeout=opts.timeout,
                              **kw)
    client._skyreduce_runner = runner
    try:
        client.wait_for_workers(ntasks - 2, timeout=opts.timeout)
    except TimeoutError:
        log.warning("only %d of %d workers joined within %g s; going on",
                    len(client.scheduler_info()["workers"]), ntasks - 2, opts.timeout)
    log.info("dask cluster inside allocation %s: scheduler at %s, %d workers x %d threads",
             tag, runner.scheduler_address, ntasks - 2, threads)
    return client
