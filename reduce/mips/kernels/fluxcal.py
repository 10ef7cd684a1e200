"""Flux calibration to surface brightness (MJy/sr) with FLUXCONV, all three arrays:
kernels of ``reduce.mips.steps.fluxcal``."""
from __future__ import annotations

import numpy as np

from .arrays import take


def to_surface_brightness(rate, fluxconv):
    """DN/s (flat-fielded) -> MJy/sr, float32: rate x FLUXCONV (MJy/sr per DN/s).

    ``rate`` (ndce, ny, nx) or (ny, nx); ``fluxconv`` a scalar or one value per DCE (ndce,).
    The product is formed in float64 and rounded once to float32.
    """
    fc = np.asarray(fluxconv, dtype=np.float64)
    return (np.asarray(rate) * fc.reshape(fc.shape + (1, 1))).astype(np.float32)


def fluxcal_block(rate, unc, calset, *, fluxconv):
    """Task body of step ``fluxcal.to_surface_brightness``: bcd, unc (n, y, x) float32 MJy/sr."""
    fc = take(fluxconv, calset)
    return to_surface_brightness(rate, fc), to_surface_brightness(unc, fc)
