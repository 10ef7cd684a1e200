"""backend ``pbs``: dask workers in PBS jobs, through dask-jobqueue's ``PBSCluster``.

The scheduler runs in this process; each job runs ``processes`` workers. Settings:
``skyreduce.cluster.pbs.*`` (see ``skyreduce-cluster.yaml``; ``resource-spec`` replaces the
default ``select=1:ncpus=<cores>:mem=<memory>``) and the ``--queue/--account/--walltime/
--job-*/--jobs`` options. Inspect what would be submitted with ``make_cluster(opts).job_script()``.
"""
from __future__ import annotations

from cluster import batch


def make_cluster(opts, security=None, **kw):
    """A ``PBSCluster`` from resolved options (``cluster.resolve_options(backend="pbs")``),
    its scheduler started, no job submitted yet; ``kw`` go to ``PBSCluster``."""
    return batch.make_cluster("PBSCluster", opts, security, **kw)


def connect(opts, security=None, kw=None):
    """Start the cluster, scale it (fixed or adaptive) and return a client that owns it."""
    return batch.start(make_cluster(opts, security, **(kw or {})), opts)
