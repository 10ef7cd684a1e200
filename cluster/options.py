"""Command-line options of the dask cluster, shared by every skyreduce command.

Usage in a command::

    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    args = parser.parse_args()
    with connect_from_args(args) as client:
        ...

An option left out is ``None`` and falls back to the dask config
``skyreduce.cluster.*`` (see ``cluster.connect``).
"""
from __future__ import annotations

import argparse

from dask.utils import parse_bytes
from distributed import Client

from cluster.connect import connect

# argparse dest -> connect() keyword (the same names)
_KEYWORDS = ("scheduler", "scheduler_file", "n_workers", "threads_per_worker", "memory_limit",
             "tls_ca_file", "tls_cert", "tls_key", "dashboard", "backend", "tls", "jobs",
             "min_jobs", "max_jobs", "job_cores", "job_memory", "job_processes")
# argparse dest -> connect() keyword, where they differ (the job options are all --job-*, so
# that a command may keep --account, --partition, --time of its own, e.g. for an sbatch script)
_RENAMED = {"job_queue": "queue", "job_account": "account", "job_walltime": "walltime"}
BACKENDS = ("local", "slurm", "pbs", "slurm-allocation")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _memory(text):
    try:
        parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size like 4GiB or a number of bytes, got {text!r}") from None
    return text


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dask-cluster options (--scheduler, --workers, TLS, ...) to ``parser``."""
    g = parser.add_argument_group(
        "dask cluster", "default: a local cluster sized to this machine (skyreduce.cluster.* "
        "in the dask config, or DASK_SKYREDUCE__CLUSTER__* variables, change the defaults)")
    join = g.add_mutually_exclusive_group()
    join.add_argument("--scheduler", metavar="ADDR",
                      help="join the running scheduler at ADDR (tcp://host:8786 or tls://host:8786)")
    join.add_argument("--scheduler-file", metavar="F",
                      help="join the scheduler described by the JSON scheduler file F")
    g.add_argument("--workers", dest="n_workers", metavar="N", type=_positive_int,
                   help="local cluster: number of worker processes (default: CPU cores)")
    g.add_argument("--threads-per-worker", metavar="N", type=_positive_int,
                   help="local cluster: threads per worker (default: 1)")
    g.add_argument("--memory-limit", metavar="S", type=_memory,
                   help="local cluster: memory per worker, e.g. 4GiB (default: memory / workers)")
    g.add_argument("--tls-ca-file", metavar="F", help="TLS: CA certificate (PEM)")
    g.add_argument("--tls-cert", metavar="F", help="TLS: this client's certificate (PEM)")
    g.add_argument("--tls-key", metavar="F", help="TLS: this client's private key (PEM)")
    g.add_argument("--no-dashboard", dest="dashboard", action="store_const", const=False,
                   default=None, help="local cluster: start no dashboard")

    b = parser.add_argument_group(
        "batch system (dask-jobqueue)",
        "--backend slurm|pbs starts the dask scheduler here and the workers in batch jobs "
        "(defaults: skyreduce.cluster.slurm.* / .pbs.* in the dask config); workers leave "
        "before the walltime and new jobs replace them. These clusters use TLS with "
        "certificates written to a private folder under skyreduce.cluster.shared-directory "
        "(default ~/.skyreduce, which the compute nodes must see). --backend slurm-allocation: "
        "run the same command as every task of one srun (>= 3 tasks: scheduler, this "
        "command, workers), for sites where jobs may not submit jobs")
    b.add_argument("--backend", choices=BACKENDS,
                   help="where a new cluster runs (default: skyreduce.cluster.backend, local)")
    b.add_argument("--jobs", metavar="N", type=_positive_int,
                   help="a fixed number of worker jobs (instead of --min-jobs/--max-jobs)")
    b.add_argument("--min-jobs", metavar="N", type=_count,
                   help="adaptive scaling: keep at least N jobs (default 1)")
    b.add_argument("--max-jobs", metavar="N", type=_positive_int,
                   help="adaptive scaling: at most N jobs (default 4)")
    b.add_argument("--job-queue", metavar="Q",
                   help="SLURM partition (-p) or PBS queue (-q) of the worker jobs")
    b.add_argument("--job-account", metavar="A", help="account charged for the worker jobs (-A)")
    b.add_argument("--job-walltime", metavar="T",
                   help="walltime per worker job, e.g. 02:00:00 (default 01:00:00)")
    b.add_argument("--job-cores", metavar="N", type=_positive_int,
                   help="CPU cores per job (default 4)")
    b.add_argument("--job-memory", metavar="S", type=_memory,
                   help="memory per job, e.g. 16GiB (default 16GiB)")
    b.add_argument("--job-processes", metavar="N", type=_positive_int,
                   help="worker processes per job (default: one per core)")
    b.add_argument("--no-tls", dest="tls", action="store_const", const=False, default=None,
                   help="batch cluster without TLS (plain TCP: anyone who reaches the "
                        "scheduler can run code as you)")
    return parser


def connect_from_args(args: argparse.Namespace, **kw) -> Client:
    """``cluster.connect`` with the options parsed by :func:`add_cluster_arguments`."""
    options = {name: getattr(args, name, None) for name in _KEYWORDS}
    options.update({kw: getattr(args, dest, None) for dest, kw in _RENAMED.items()})
    return connect(**options, **kw)
