"""Step 2, ON/OFF pairing and subtraction (seed §2.2), COMB frequency calibration and the
CAL passband, lazy: one task per batch of segments and receiver half on the AOS counts.

The index plans (which rows pair with which, ZERO, CAL and COMB scans) come from
:func:`reduce.swas.kernels.pair.plan_pairs` on small metadata; :func:`pair` builds the
tasks, each running :func:`reduce.swas.kernels.pair.pair_batch` (what it returns is
described there) on whole store chunks.
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np
import xarray as xr

from reduce.swas.kernels.pair import N_LINE_MAX, pair_batch
from reduce.swas.physics import HALVES, N_CHAN
from reduce.swas.steps._graph import outputs, task


def _pair_blocks(*blocks, first, batch, half, params):
    """pair_batch on the rows [batch.r0, batch.r1) cut out of whole store chunks starting at row `first`."""
    a, b = batch.r0 - first, batch.r1 - first
    rows, pos = [], 0
    for blk in blocks:
        n = blk.shape[0]
        lo, hi = max(a - pos, 0), min(b - pos, n)
        if hi > lo:
            rows.append(np.asarray(blk[lo:hi]))
        pos += n
    return pair_batch(rows[0] if len(rows) == 1 else np.concatenate(rows), batch, half, params)


def pair(ds, plan, params=None):
    """Step 2: the pairs Dataset (lazy). ds: the store's root group (with or without the
    checking step's scan_flag); plan: from plan_segments. dims pair, channel, seg, coef, line.
    Variables per half h (490, 550): switched{h} (pair, channel) float32, (ON-OFF)/(OFF-ZERO)
    (dimensionless); disp{h} (seg, coef) dispersion F0, D1, D2 [Hz, Hz/channel, Hz/channel^2];
    comb_rms{h} [channel], comb_nlines{h} (seg); comb_resid{h} (seg, line) [channel];
    profile{h} (seg, channel) relative Tsys(c) (mean 1); reason{h} (seg) str ('' = ok).
    Per-pair and per-segment coordinates come from the plan (numpy)."""
    params = params or plan.params.pair
    out = {}
    for half in HALVES:
        src = ds[f"aos{half}"].data
        src = src if isinstance(src, da.Array) else da.from_array(np.asarray(src), chunks=(-1, -1))
        edges = np.concatenate([[0], np.cumsum(src.chunks[0])])
        chunk_tasks = {}
        if src.numblocks[1] != 1:
            src = src.rechunk({1: -1})
        tasks = []
        for b in plan.batches:
            # whole store chunks go in (their read is shared by the batches of one chunk; a sliced
            # read would decode the whole chunk once per batch), the task cuts its rows out
            ks = [k for k in range(len(edges) - 1) if edges[k] < b.r1 and edges[k + 1] > b.r0]
            fn = partial(_pair_blocks, first=int(edges[ks[0]]), batch=b, half=half, params=params)
            for k in ks:  # one read task per store chunk (dask would otherwise inline the read per user)
                if k not in chunk_tasks:
                    chunk_tasks[k] = task(np.asarray, f"aos{half}-chunk-{plan.token}-{k}", src.blocks[k])
            tasks.append(task(fn, f"pair{half}-{plan.token}-{b.index}", *[chunk_tasks[k] for k in ks]))
        mshape = [(b.p1 - b.p0,) for b in plan.batches]
        sshape = [(len(b.segs),) for b in plan.batches]
        nm = f"pair{half}"
        cat = {"switched": outputs(tasks, "switched", [s + (N_CHAN,) for s in mshape], np.float32, name=nm),
               "disp": outputs(tasks, "disp", [s + (3,) for s in sshape], np.float64, name=nm),
               "comb_res": outputs(tasks, "comb_res", [s + (2,) for s in sshape], np.float64, name=nm),
               "comb_resid": outputs(tasks, "comb_resid", [s + (N_LINE_MAX,) for s in sshape], np.float64, name=nm),
               "profile": outputs(tasks, "profile", [s + (N_CHAN,) for s in sshape], np.float32, name=nm),
               "reason": outputs(tasks, "reason", sshape, np.dtype("<U300"), name=nm)}
        out[f"switched{half}"] = (("pair", "channel"), cat["switched"],
                                  {"units": "1", "long_name": f"(ON-OFF)/(OFF-ZERO), {half} GHz receiver"})
        out[f"disp{half}"] = (("seg", "coef"), cat["disp"],
                              {"long_name": "dispersion f_IF = F0 + D1 (c-362) + D2 (c-362)^2 at taos_ref",
                               "units": "Hz, Hz/channel, Hz/channel^2"})
        out[f"comb_rms{half}"] = (("seg",), cat["comb_res"][:, 0], {"units": "channel",
                                                                      "long_name": "rms comb-line residual"})
        out[f"comb_nlines{half}"] = (("seg",), cat["comb_res"][:, 1], {"long_name": "comb lines used"})
        out[f"comb_resid{half}"] = (("seg", "line"), cat["comb_resid"],
                                    {"units": "channel", "long_name": "comb-line residuals (measured - fit)"})
        out[f"profile{half}"] = (("seg", "channel"), cat["profile"],
                                 {"long_name": "relative Tsys(c) from CAL (mean 1 inside the edges)"})
        out[f"reason{half}"] = (("seg",), cat["reason"], {"long_name": "why the segment failed ('' = ok)"})
    coords = plan.pair_coords()
    res = xr.Dataset(out, coords=coords)
    res.attrs["history"] = list(ds.attrs.get("history", [])) + [plan.provenance["pair"]]
    return res
