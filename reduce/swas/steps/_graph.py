"""Helpers shared by the SWAS steps: dask arrays cut from per-batch task results.

``da.from_delayed(res[key])`` inlines the task that makes ``res`` into every array made
from it (so a task with several outputs would run once per output). :func:`outputs`
instead builds the arrays on the task's own key: every batch task runs exactly once.
"""

from __future__ import annotations

import operator

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph


def task(fn, key, *args):
    """One task ``fn(*args)`` on the key ``key`` (a Delayed). The function is named by ``key`` too:
    left unnamed, dask tokenizes it, and a step's function is a partial holding its batch plan
    (per-segment numpy arrays): that hashing was ~40 % of building a SWAS unit's graph."""
    return dask.delayed(fn, name=key, pure=True)(*args, dask_key_name=key)


def outputs(tasks, key, shapes, dtype, *, name):
    """Concatenate output `key` of each Delayed in `tasks` (one block each) along axis 0.

    shapes: the block shapes (same ndim). Returns a dask array with one chunk per task."""
    dtype = np.dtype(dtype)
    nm = f"{name}-{key}-{tokenize(*[t.key for t in tasks], key)}"
    ndim = len(shapes[0]) if shapes else 1
    layer = {(nm, i) + (0,) * (ndim - 1): (operator.getitem, t.key, key) for i, t in enumerate(tasks)}
    graph = HighLevelGraph.from_collections(nm, layer, dependencies=list(tasks))
    chunks = (tuple(s[0] for s in shapes),) + tuple((s,) for s in (shapes[0][1:] if shapes else ()))
    if not shapes:
        return da.zeros((0,), dtype=dtype)
    return da.Array(graph, nm, chunks, dtype=dtype)


def one_output(tasks, shapes, dtype, *, name):
    """Like :func:`outputs` for tasks that return one array each."""
    dtype = np.dtype(dtype)
    nm = f"{name}-{tokenize(*[t.key for t in tasks])}"
    ndim = len(shapes[0])
    layer = {(nm, i) + (0,) * (ndim - 1): (operator.getitem, t.key, slice(None)) for i, t in enumerate(tasks)}
    graph = HighLevelGraph.from_collections(nm, layer, dependencies=list(tasks))
    chunks = (tuple(s[0] for s in shapes),) + tuple((s,) for s in shapes[0][1:])
    return da.Array(graph, nm, chunks, dtype=dtype)
