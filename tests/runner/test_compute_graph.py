"""reduce.runner.compute_graph: a unit's own graph runs on every worker of the cluster when the
unit runs on a dask worker (a mosaic of thousands of BCDs is not held to one core), and in the
calling process without one."""
import os
import time

import dask
import pytest

from reduce.runner import compute_graph


def _where(i):
    """(i, the address of the worker running this, or the process id without one)."""
    time.sleep(0.3)
    try:
        from distributed import get_worker
        return i, get_worker().address
    except ValueError:
        return i, os.getpid()


def _unit(n):
    """What a unit's compute does: build a graph of ``n`` tasks and compute it with compute_graph."""
    parts = [dask.delayed(_where)(i) for i in range(n)]
    total = dask.delayed(sum)([dask.delayed(lambda p: p[0])(p) for p in parts])
    where, s = compute_graph(parts, total)
    return where, s


def test_without_a_worker_computes_here():
    where, s = _unit(4)
    assert [w[0] for w in where] == [0, 1, 2, 3] and s == 6
    assert {w[1] for w in where} == {os.getpid()}


def test_on_a_worker_spreads_over_the_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        # the unit's task holds the only thread of its worker: it must secede, or its graph deadlocks
        where, s = client.submit(_unit, 8, pure=False).result(timeout=120)
        workers = set(client.scheduler_info()["workers"])
    assert [w[0] for w in where] == list(range(8)) and s == 28
    assert {w[1] for w in where} == workers and len(workers) == 2
