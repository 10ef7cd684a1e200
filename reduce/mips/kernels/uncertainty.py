"""Per-pixel uncertainty of the 24 um slopes (read + Poisson noise): kernels of
``reduce.mips.steps.uncertainty``. (The Ge uncertainties come out of the ramp fit,
``reduce.mips.kernels.ramps``.) Rates in DN/s."""
from __future__ import annotations

import numpy as np

from .arrays import as_float
from .si import SAMPLE_TIME


def slope_uncertainty(rate, *, gain, rdnoise, nsamp, sample_time=SAMPLE_TIME, replaced=None):
    """1-sigma uncertainty (DN/s) of a sample-up-the-ramp slope.

    Read noise ``rdnoise`` (DN per sample) and Poisson noise (``gain`` e-/DN)
    of a least-squares slope through ``nsamp`` equally spaced samples:
    var = 12 rn^2 / (N (N^2-1) dt^2) + 6 (N^2+1) / (5 N (N^2-1)) * rate / (gain dt).
    Pixels flagged in ``replaced`` have a two-sample slope (first difference):
    var = 2 rn^2 / dt^2 + rate / (gain dt).  Negative rates add no Poisson term.
    ``rate`` is the charge rate (sky + dark, DN/s): droop and jailbar are
    noiseless electronic offsets, so pass the rate after removing them.
    """
    rate = as_float(rate)
    n = float(nsamp)
    if n < 2:
        raise ValueError(f"nsamp must be >= 2, got {nsamp}")
    dt = float(sample_time)
    pois = np.clip(rate, 0, None) / (gain * dt)
    var = (12 * rdnoise**2 / (n * (n * n - 1) * dt * dt)
           + 6 * (n * n + 1) / (5 * n * (n * n - 1)) * pois)
    if replaced is not None:
        var2 = 2 * rdnoise**2 / (dt * dt) + pois
        var = np.where(np.asarray(replaced, bool), var2, var)
    return np.sqrt(var)


def uncertainty_block(rate, sat, nreads, calset, *, dark, gain, rdnoise, sample_time):
    """Task body of step ``uncertainty.uncertainty``: 1-sigma (n, y, x) float32 DN/s of the
    NREADS-sample slopes (charge rate = rate + dark), NaN where NREADS < 2."""
    out = np.full(rate.shape, np.nan, np.float32)
    for k in np.unique(calset):
        for ns in np.unique(nreads[calset == k]):
            sel = (calset == k) & (nreads == ns)
            if ns < 2:
                continue
            out[sel] = slope_uncertainty(rate[sel] + dark[k], gain=float(gain[k]), rdnoise=float(rdnoise[k]),
                                         nsamp=int(ns), sample_time=sample_time, replaced=sat[sel])
    return out
