"""Step 5, flux calibration (seed §2.5): DSB Tsys per receiver from the continuum
detectors' Y-factor (2.97 K background; USB and LSB share it), the CAL passband
profile, and Ta* [K] of the coadds.

The Tsys is planned eagerly from the CONT metadata (:func:`plan_tsys`); a segment
without usable CAL raises CalibrationError there and gets no product (never a
placeholder Tsys). :func:`calibrate` multiplies the coadds lazily:
Ta*(k) = S(k) x Tsys x p(k - mean shift), S the switched coadd and p the relative
Tsys(c) profile of the CAL (detector channels; the mean integer shift carries it to
the coadd's channels, the sub-channel warp of the axis is neglected on the smoothed
profile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import dask
import dask.array as da
import numpy as np

from reduce.errors import CalibrationError
from reduce.swas import calibrate as K_cal
from reduce.swas.physics import N_CHAN
from reduce.swas.steps import one_output


@dataclass(frozen=True)
class CalStepParams:
    """Calibration options: the kernel's CalParams (T_bg = 2.97 K, edges), whether to
    apply the CAL Tsys(c) profile."""

    kernel: K_cal.CalParams = field(default_factory=K_cal.CalParams)
    apply_profile: bool = True


def plan_tsys(cont, thot, hot, off, zero, lofreq, params=CalStepParams()):
    """DSB Tsys (2,) [K] and its standard error (2,) of one segment from CONT (n, 2)
    counts: HOT rows `hot`, paired sky OFF rows `off`, ZERO rows `zero` (local indices),
    thot (n,) [K], lofreq (2,) [Hz]. Raises CalibrationError with the reason."""
    if len(hot) == 0:
        raise CalibrationError("no usable CAL (no HOT/OFF pair): the segment cannot be calibrated")
    z = np.mean(cont[zero], axis=0)
    tsys, err = K_cal.segment_tsys(cont[hot], cont[off], z, thot[hot], np.asarray(lofreq),
                                   params=params.kernel)
    if not np.all(np.isfinite(tsys)) or np.any(tsys <= 0):
        raise CalibrationError(f"no usable CAL: Y-factor Tsys {tsys} K is not positive and finite")
    return tsys, err


def calibrate_batch(spec, stats, profile, batch, half, params=CalStepParams(), shift_col=-1):
    """Task body: Ta* (rows, n_chan) float32 of one batch and half's coadd rows."""
    rows = batch.rows[half]
    out = np.full((len(rows), N_CHAN), np.nan, np.float32)
    k = 0 if half == "490" else 1
    grid = np.arange(N_CHAN)
    for r, (j, _, _) in enumerate(rows):
        tsys = batch.segs[j].tsys[k]
        if not np.isfinite(tsys):
            raise CalibrationError(f"segment {batch.segs[j].segment}: Tsys not finite (refusing to calibrate)")
        s = np.asarray(spec[r], dtype=float)
        if params.apply_profile and np.isfinite(stats[r, shift_col]):
            p = np.interp(grid - stats[r, shift_col], grid, np.asarray(profile[j], dtype=float))
            out[r] = s * tsys * p
        else:
            out[r] = s * tsys
    return out


def calibrate(coadds, pairs, plan, params=None):
    """Step 5 (lazy): adds ``ta`` (coadd, channel) float32 [K] and the eager ``tsys``
    coordinate [K] to the coadd Dataset."""
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
            res = dask.delayed(fn, pure=True)(spec[i], stats[i], prof[half][bi],
                                              dask_key_name=f"cal{half}-{plan.token}-{b.index}")
            out.append(res)
            shapes.append((len(b.rows[half]), N_CHAN))
            i += 1
    ds = coadds.assign(ta=(("coadd", "channel"), one_output(out, shapes, np.float32, name="ta"),
                           {"units": "K", "long_name": "antenna temperature Ta* (DSB scale)"}))
    ds = ds.drop_vars("spec")
    ds.attrs["history"] = list(coadds.attrs.get("history", [])) + [plan.provenance["calibrate"]]
    return ds
