"""Dark subtraction (seed: "dark current subtraction"), all three arrays: kernels of
``reduce.mips.steps.dark``. Rates in DN/s."""
from __future__ import annotations

import numpy as np

from .arrays import as_float, take


def subtract_dark(rate, dark):
    """Rate minus the dark rate (DN/s); ``dark`` is (ny, nx), broadcast over DCEs."""
    return as_float(rate) - np.asarray(dark)


def subtract_dark_block(rate, calset, *, dark):
    """Task body of step ``dark.subtract_dark``: rate (n, y, x) DN/s minus dark[calset], float32."""
    return subtract_dark(rate, take(dark, calset)).astype(np.float32)
