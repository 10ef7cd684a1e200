"""Illumination correction and per-row flux calibration of SED DCEs, lazy over chunks of DCEs
(kernel: ``reduce.sed.kernels.calibrate``)."""
from __future__ import annotations

import numpy as np

from ...mips.steps._graph import per_dce, record
from ..kernels import calibrate as K

YX = ("y", "x")


def calibrate(ds, cal):
    """``bcd``, ``unc`` (dce, y, x) float32 MJy/sr = ``rate``, ``unc`` (DN/s, dark-subtracted and
    divided by the responsivity) / ILLUM x FLUXCONV(y) of the DCE's calibration set (ICD 3:
    extended emission filling the slit comes out as its LSF-convolved surface brightness);
    drops ``rate``."""
    bcd, unc = per_dce(K.calibrate_block, [ds.rate, ds.unc, ds.calset],
                       cal={"illum": cal.image("illum"), "fluxconv_row": cal.rows("fluxconv_row")},
                       outputs=[(YX, np.float32)] * 2)
    ds = ds.assign(bcd=bcd, unc=unc).drop_vars("rate")
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "sed.calibrate", None, cal)
