"""Flat fielding, all three arrays: kernels of ``reduce.mips.steps.flat``."""
from __future__ import annotations

import numpy as np

from .arrays import as_float, take


def flat_field(rate, flat):
    """Divide by the flat (relative response, mean 1); NaN where flat <= 0 or not finite."""
    rate = as_float(rate)
    flat = np.asarray(flat, dtype=rate.dtype)
    good = np.isfinite(flat) & (flat > 0)
    return rate / np.where(good, flat, np.nan)


def flat_field_block(rate, unc, calset, *, flat):
    """Task body of step ``flat.flat_field``: rate, unc (n, y, x) / flat[calset], float32."""
    f = take(flat, calset)
    return flat_field(rate, f).astype(np.float32), flat_field(unc, f).astype(np.float32)
