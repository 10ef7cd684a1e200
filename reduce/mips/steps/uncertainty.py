"""Uncertainty of the 24 um slopes (read + Poisson noise), lazy over chunks of DCEs (kernels:
``reduce.mips.kernels.uncertainty``). The Ge uncertainties come out of the ramp fit."""
from __future__ import annotations

import numpy as np

from ..kernels import uncertainty as K
from ..kernels.si import SiParams
from ._graph import per_dce, record


def uncertainty(ds, cal, p: SiParams = SiParams()):
    """``unc`` (dce, y, x) float32 DN/s: read + Poisson noise of an NREADS-sample slope of the
    charge rate ``rate`` + dark (a two-sample slope where ``sat``: replaced pixels)."""
    unc = per_dce(K.uncertainty_block, [ds.rate, ds.sat, ds.nreads, ds.calset],
                  cal={"dark": cal.image("dark"), "gain": cal.scalar("gain"), "rdnoise": cal.scalar("rdnoise")},
                  outputs=[(("y", "x"), np.float32)], kwargs={"sample_time": p.sample_time})
    return record(ds.assign(unc=unc), "uncertainty.uncertainty", None, cal)
