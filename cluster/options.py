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
             "tls_ca_file", "tls_cert", "tls_key", "dashboard")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
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
    return parser


def connect_from_args(args: argparse.Namespace, **kw) -> Client:
    """``cluster.connect`` with the options parsed by :func:`add_cluster_arguments`."""
    options = {name: getattr(args, name, None) for name in _KEYWORDS}
    return connect(**options, **kw)
