"""Step 4, Doppler shift-and-coadd and the LSRK frequency/velocity axis (seed §2.4), lazy: one
task per batch of segments and receiver half, each running
:func:`reduce.swas.kernels.coadd.coadd_batch` (shifts, grouping and the axis are described in
:mod:`reduce.swas.kernels.coadd`).
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np
import xarray as xr

from reduce.swas.kernels.coadd import STATS, coadd_batch
from reduce.swas.physics import N_CHAN
from reduce.swas.steps._graph import outputs, task


def coadd(pairs, plan, params=None):
    """Step 4 (lazy): the coadd Dataset, dims (coadd, channel), from the flagged pairs of step 3:
    ``spec`` float32 switched coadd (dimensionless) on the linear LSRK frequency grid,
    ``weight`` float32 ON scans per channel, per-coadd lazy coordinates STATS (n_scans, on_time
    [s], time_start/mid/end [MJD], roll [deg], dlam/dbet [arcmin], crpix (1-based), freq_ref and
    cdelt_freq [Hz], vlsr_ref and cdelt_vel [km/s], imagfreq [Hz], max_shift and mean_shift
    [channels]) and the plan's eager ones (segment, band, kind, position, tsys [K], ...)."""
    params = params or plan.params.coadd
    pchunks = tuple(b.p1 - b.p0 for b in plan.batches)
    schunks = tuple(len(b.segs) for b in plan.batches)

    def blocks(name, chunks, ndim):
        x = pairs[name].data
        x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x))
        return x.rechunk((chunks,) + (-1,) * (ndim - 1)).to_delayed(optimize_graph=False).ravel()

    inp = {half: [blocks(f"switched{half}", pchunks, 2), blocks(f"flag{half}", pchunks, 1),
                  blocks(f"disp{half}", schunks, 2), blocks(f"reason{half}", schunks, 1)]
           for half in ("490", "550")}
    tasks, shapes = [], []
    for i, b in enumerate(plan.batches):
        for half in ("490", "550"):
            fn = partial(coadd_batch, batch=b, half=half, params=params)
            tasks.append(task(fn, f"coadd{half}-{plan.token}-{b.index}", *(x[i] for x in inp[half])))
            shapes.append((len(b.rows[half]),))
    spec = outputs(tasks, "spec", [s + (N_CHAN,) for s in shapes], np.float32, name="coadd")
    weight = outputs(tasks, "weight", [s + (N_CHAN,) for s in shapes], np.float32, name="coadd")
    st = outputs(tasks, "stats", [s + (len(STATS),) for s in shapes], np.float64, name="coadd")
    # plan order of rows: for batch, for half (matches plan.coadd_rows())
    coords = plan.coadd_coords()
    for k, name in enumerate(STATS):
        coords[name] = ("coadd", st[:, k].astype(np.int32) if name == "n_scans" else st[:, k])
    ds = xr.Dataset({"spec": (("coadd", "channel"), spec), "weight": (("coadd", "channel"), weight)},
                    coords=coords)
    ds.attrs["history"] = list(pairs.attrs.get("history", [])) + [plan.provenance["coadd"]]
    return ds
