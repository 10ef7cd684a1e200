"""Flat fielding, all three arrays, lazy over chunks of DCEs (kernels: ``reduce.mips.kernels.flat``)."""
from __future__ import annotations

import numpy as np

from ..kernels import flat as K
from ._graph import per_dce, record


def flat_field(ds, cal):
    """``rate``, ``unc`` (dce, y, x) float32 DN/s / flat[calset] (NaN where flat <= 0)."""
    rate, unc = per_dce(K.flat_field_block, [ds.rate, ds.unc, ds.calset], cal={"flat": cal.image("flat")},
                        outputs=[(("y", "x"), np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "flat.flat_field", None, cal)
