"""Deployment of skyreduce on dask: ``connect()`` to a local cluster, a scheduler or a scheduler
file, or a cluster on a batch system (``backend`` slurm or pbs through dask-jobqueue, modules
``cluster.slurm``, ``cluster.pbs``, shared parts and TLS credentials in ``cluster.batch``;
slurm-allocation inside one ``srun``, ``cluster.allocation``).

Defaults live in ``skyreduce-cluster.yaml`` under the dask config namespace
``skyreduce.cluster`` (registered at import, never written to disk);
``cluster.options`` adds the matching command-line options.
"""
import logging

from cluster.connect import ClusterOptions, connect, resolve_options, tls_security
from cluster.options import add_cluster_arguments, connect_from_args

__all__ = ["ClusterOptions", "add_cluster_arguments", "connect", "connect_from_args",
           "resolve_options", "tls_security"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
