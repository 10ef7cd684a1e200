"""Dark subtraction (seed: "dark current subtraction"), all three arrays, lazy over chunks of
DCEs (kernels: ``reduce.mips.kernels.dark``)."""
from __future__ import annotations

import numpy as np

from ..kernels import dark as K
from ._graph import per_dce, record


def subtract_dark(ds, cal, source="rate"):
    """``rate`` (dce, y, x) float32 DN/s = ds[source] - dark[calset]: the ramp fit's ``rate``
    (Ge) or the ``replaced`` image (24 um: ``source="replaced"``)."""
    rate = per_dce(K.subtract_dark_block, [ds[source], ds.calset], cal={"dark": cal.image("dark")},
                   outputs=[(("y", "x"), np.float32)])
    return record(ds.assign(rate=rate), "dark.subtract_dark", None, cal)
