"""Flux calibration to surface brightness with FLUXCONV, all three arrays, lazy over chunks of
DCEs (kernels: ``reduce.mips.kernels.fluxcal``)."""
from __future__ import annotations

import numpy as np

from ..kernels import fluxcal as K
from ._graph import per_dce, record


def to_surface_brightness(ds, cal):
    """``bcd``, ``unc`` (dce, y, x) float32 MJy/sr = ``rate``, ``unc`` (DN/s) x FLUXCONV[calset];
    drops ``rate``."""
    bcd, unc = per_dce(K.fluxcal_block, [ds.rate, ds.unc, ds.calset], cal={"fluxconv": cal.scalar("fluxconv")},
                       outputs=[(("y", "x"), np.float32)] * 2)
    ds = ds.assign(bcd=bcd, unc=unc).drop_vars("rate")
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "fluxcal.to_surface_brightness", None, cal)
