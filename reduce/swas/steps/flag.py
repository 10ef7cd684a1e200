"""Step 3, flagging of the switched spectra on derived quantities (seed §2.3), lazy: one
task per batch of segments and receiver half, each running
:func:`reduce.swas.kernels.flag.flag_batch` (criteria, line mask and flag bits are described
in :mod:`reduce.swas.kernels.flag`).

Output per pair and half: ``flag{h}`` (pair,) int16 bits (bit i = criterion i of
``criteria``, bit 15 = not usable: NaN or segment failed) and ``flagstat{h}`` (pair, criterion)
float32 statistics, both lazy.
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np

from reduce.swas.kernels.flag import flag_batch
from reduce.swas.physics import HALVES
from reduce.swas.steps._graph import outputs, task


def flag(pairs, plan, params=None):
    """Step 3 (lazy): adds ``flag490/550`` (pair,) int16 flag bits (0 = good) and
    ``flagstat490/550`` (pair, criterion) float32 criterion statistics (in units of the
    expected radiometer noise) to the pairs Dataset, and the ``criterion`` coordinate.
    Works on dask- or numpy-backed pairs (rechunked to the plan's batches)."""
    params = params or plan.params.flag
    chunks = tuple(b.p1 - b.p0 for b in plan.batches)
    new = {}
    crit = params.kernel.criteria
    for half in HALVES:
        x = pairs[f"switched{half}"].data
        x = (x if isinstance(x, da.Array) else da.from_array(np.asarray(x))).rechunk((chunks, -1))
        blocks = x.to_delayed(optimize_graph=False).ravel()
        tasks = []
        for b, blk in zip(plan.batches, blocks):
            fn = partial(flag_batch, batch=b, params=params)
            tasks.append(task(fn, f"flag{half}-{plan.token}-{b.index}", blk))
        shapes = [(b.p1 - b.p0,) for b in plan.batches]
        fl = outputs(tasks, "flags", shapes, np.int16, name=f"flag{half}")
        st = outputs(tasks, "stats", [s + (len(crit),) for s in shapes], np.float32, name=f"flag{half}")
        masks = [1 << i for i in range(len(crit))] + [-32768]
        new[f"flag{half}"] = (("pair",), fl, {
            "long_name": f"flagging-step reasons, {half} GHz (0 = good)", "flag_masks": masks,
            "flag_meanings": " ".join(list(crit) + ["unusable"])})
        new[f"flagstat{half}"] = (("pair", "criterion"), st,
                                  {"long_name": "criterion statistic (see reduce.swas.kernels.flag)"})
    out = pairs.assign(new).assign_coords(criterion=list(crit))
    out.attrs["history"] = list(pairs.attrs.get("history", [])) + [plan.provenance["flag"]]
    return out
