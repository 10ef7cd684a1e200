"""Array helpers shared by the MIPS kernels: float promotion and per-DCE rows of the stacked
calibration tables."""
from __future__ import annotations

import numpy as np


def as_float(a):
    """``a`` as an array of at least float32 precision (float32 stays float32, ints become float64...)."""
    return np.asarray(a, dtype=np.result_type(np.asarray(a).dtype, np.float32))


def take(table, calset):
    """Per-DCE rows of a (cset, ...) table for a chunk's ``calset`` (n,) (negative -> row 0, caller masks)."""
    return np.asarray(table)[np.clip(np.asarray(calset, dtype=np.int64), 0, None)]
