"""Step 5, flux calibration (seed §2.5), lazy: DSB Tsys per receiver from the continuum
detectors' Y-factor (2.97 K background; USB and LSB share it), the CAL passband
profile, and Ta* [K] of the coadds.

The Tsys is planned eagerly from the CONT metadata
(:func:`reduce.swas.kernels.calibrate.plan_tsys`); a segment without usable CAL raises
CalibrationError there and gets no product (never a placeholder Tsys). :func:`calibrate`
multiplies the coadds lazily (task body :func:`reduce.swas.kernels.calibrate.calibrate_batch`):
Ta*(k) = S(k) x Tsys x p(k - mean shift), S the switched coadd and p the relative
Tsys(c) profile of the CAL (detector channels; the mean integer shift carries it to
the coadd's channels, the sub-channel warp of the axis is neglected on the smoothed
profile).
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np

from reduce.swas.kernels.calibrate import calibrate_batch
from reduce.swas.physics import N_CHAN
from reduce.swas.steps._graph import one_output, task


def calibrate(coadds, pairs, plan, params=None):
    """Step 5 (lazy): adds ``ta`` (coadd, channel) float32, the antenna temperature Ta* [K]
    (DSB scale), to the coadd Dataset of step 4 (whose ``spec`` it replaces); the coadds' eager
    ``tsys`` coordinate [K] comes from the plan. pairs: step 2/3's Dataset (CAL profiles)."""
    params = params or plan.params.cal
    schunks = tuple(len(b.segs) for b in plan.batches)
    rchunks = tuple(len(b.rows[h]) for b in plan.batches for h in ("490", "550"))

    def blocks(x, chunks, ndim):
        x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x))
        return x.rechunk((chunks,) + (-1,) * (ndim - 1)).to_delayed(optimize_graph=False).ravel()

    spec = blocks(coadds["spec"].data, rchunks, 2)
    shift = da.stack([da.asarray(coadds["mean_shift"].data)], axis=1)
    stats = blocks(shift, rchunks, 2)
    prof = {h: blocks(pairs[f"profile{h}"].data, schunks, 2) for h in ("490", "550")}
    out, shapes = [], []
    i = 0
    for bi, b in enumerate(plan.batches):
        for half in ("490", "550"):
            fn = partial(calibrate_batch, batch=b, half=half, params=params, shift_col=0)
            res = task(fn, f"cal{half}-{plan.token}-{b.index}", spec[i], stats[i], prof[half][bi])
            out.append(res)
            shapes.append((len(b.rows[half]), N_CHAN))
            i += 1
    ds = coadds.assign(ta=(("coadd", "channel"), one_output(out, shapes, np.float32, name="ta"),
                           {"units": "K", "long_name": "antenna temperature Ta* (DSB scale)"}))
    ds = ds.drop_vars("spec")
    ds.attrs["history"] = list(coadds.attrs.get("history", [])) + [plan.provenance["calibrate"]]
    return ds
