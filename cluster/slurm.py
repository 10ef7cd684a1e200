"""backend ``slurm``: dask workers in SLURM jobs, through dask-jobqueue's ``SLURMCluster``.

The scheduler runs in this process (on the login node, or in the job that runs skyreduce);
each job runs ``processes`` workers. Settings: ``skyreduce.cluster.slurm.*`` (see
``skyreduce-cluster.yaml``) and the ``--queue/--account/--walltime/--job-*/--jobs`` options.
Inspect what would be submitted with ``make_cluster(opts).job_script()``.
"""
from __future__ import annotations

from cluster import batch


def make_cluster(opts, security=None, **kw):
    """A ``SLURMCluster`` from resolved options (``cluster.resolve_options(backend="slurm")``),
    its scheduler started, no job submitted yet; ``kw`` go to ``SLURMCluster``."""
    return batch.make_cluster("SLURMCluster", opts, security, **kw)


def connect(opts, security=None, kw=None):
    """Start the cluster, scale it (fixed or adaptive) and return a client that owns it."""
    return batch.start(make_cluster(opts, security, **(kw or {})), opts)
