"""BCD mask and blanking of invalid pixels, all three arrays, lazy over chunks of DCEs
(kernels: ``reduce.mips.kernels.mask``)."""
from __future__ import annotations

import numpy as np

from ..bcd import mask_bits
from ..kernels import mask as K
from ._graph import per_dce, record

YX = ("y", "x")


def make_mask(ds, cal):
    """``mask`` (dce, y, x) uint16 (schema bits); ``bcd``, ``unc`` (MJy/sr) NaN wherever invalid
    (and in skipped DCEs). The flags come from what the earlier steps left: Ge (``rmask`` present):
    the ramp bits, pmask, no_responsivity (``responsivity`` NaN), stim (``stimflsh``), invalid;
    24 um: pmask, saturated (``sat``), cosmic_ray (``crflag``), invalid. Drops those flags."""
    pmask = {"pmask": cal.image("pmask", fill=0, dtype=np.int16)}
    outputs = [(YX, np.float32)] * 2 + [(YX, np.uint16)]
    if "rmask" in ds:
        data, block, used = [ds.rmask, ds.responsivity, ds.stimflsh], K.mask_block_ge, ["rmask"]
    else:
        data, block, used = [ds.sat, ds.crflag], K.mask_block_si, ["sat", "crflag"]
    bcd, unc, mask = per_dce(block, [ds.bcd, ds.unc, *data, ds.skip, ds.calset], cal=pmask, outputs=outputs,
                             kwargs={"bits": mask_bits()})
    ds = ds.assign(bcd=bcd, unc=unc, mask=mask).drop_vars(used)
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "mask.make_mask", None, cal)
