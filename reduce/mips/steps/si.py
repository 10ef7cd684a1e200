"""24 um (Si:As) steps of the BCD pipeline (seed: Handbook Fig. 5.1), lazy over chunks of DCEs:
the slope, difference and replaced images, jailbar, droop and single-frame cosmic-ray flags
(kernels: ``reduce.mips.kernels.si``). ``pipeline`` runs every 24 um step in order, those the
arrays share from their own step modules::

    ds = replace_saturated(ds, cal, p)   # raw planes -> slope, difference, replaced (DN/s), sat map
    ds = subtract_dark(ds, cal, source="replaced")   # rate = replaced - dark
    ds = correct_jailbar(ds, cal, p)     # readout-4 column offsets
    ds = correct_droop(ds, cal)          # array-wide droop (R x mean signal)
    ds = uncertainty(ds, cal, p)         # read + Poisson noise of the ramp slope (DN/s)
    ds = flat_field(ds, cal)             # rate, unc / flat
    ds = flag_cosmic_rays(ds, p)         # single-frame CR flag (flagged, not removed)
    ds = to_surface_brightness(ds, cal)  # x FLUXCONV -> bcd, unc (MJy/sr)
    ds = make_mask(ds, cal)              # mask bits, NaN for skipped DCEs

Variables: ``raw`` (dce, plane, y, x) in; ``slope``, ``difference``, ``replaced`` (DN/s, kept:
the seed's slope, difference and replaced images); working ``rate``/``unc`` (DN/s),
``sat`` and ``crflag`` (bool); ``dce_code`` (dce,) int16; ``skip`` (dce,) from the plan.
"""
from __future__ import annotations

import numpy as np

from ..kernels import si as K
from ..kernels.si import SiParams
from ._graph import per_dce, record
from .dark import subtract_dark
from .flat import flat_field
from .fluxcal import to_surface_brightness
from .mask import make_mask
from .uncertainty import uncertainty

YX = ("y", "x")


def replace_saturated(ds, cal, p: SiParams = SiParams()):
    """raw (dce, plane=2, y, x) -> ``slope``, ``difference``, ``replaced`` (dce, y, x) float32 DN/s,
    ``sat`` (dce, y, x) bool (replaced pixels) and ``dce_code`` (dce,) int16; drops ``raw``."""
    slope, diff, rep, sat, code = per_dce(
        K.replace_saturated_block, [ds.raw, ds.skip],
        outputs=[(YX, np.float32)] * 3 + [(YX, bool), ((), np.int16)],
        kwargs={"sample_time": p.sample_time})
    ds = ds.assign(slope=slope, difference=diff, replaced=rep, sat=sat, dce_code=code).drop_vars("raw")
    for name in ("slope", "difference", "replaced"):
        ds[name].attrs["units"] = "DN/s"
    return record(ds, "si.replace_saturated", p)


def correct_jailbar(ds, cal, p: SiParams = SiParams()):
    """Remove the readout-4 ("jailbar") column offsets from ``rate`` (dce, y, x) DN/s (model
    JAILBAR x bright signal above JBTHRESH, or estimated from the data: ``p.jailbar``)."""
    if p.jailbar not in ("auto", "model", "data"):
        raise ValueError(f"SiParams.jailbar must be 'auto', 'model' or 'data', got {p.jailbar!r}")
    rate = per_dce(K.jailbar_block, [ds.rate, ds.calset],
                   cal={"coeff": cal.scalar("jailbar"), "thresh": cal.scalar("jbthresh"), "flat": cal.image("flat")},
                   outputs=[(YX, np.float32)], kwargs={"mode": p.jailbar})
    return record(ds.assign(rate=rate), "si.correct_jailbar", p, cal)


def correct_droop(ds, cal):
    """Invert the droop in ``rate`` (dce, y, x) DN/s: every pixel gained DROOP x mean(sky + dark)
    over the array."""
    rate = per_dce(K.droop_block, [ds.rate, ds.calset],
                   cal={"droop": cal.scalar("droop"), "dark": cal.image("dark")}, outputs=[(YX, np.float32)])
    return record(ds.assign(rate=rate), "si.correct_droop", None, cal)


def flag_cosmic_rays(ds, p: SiParams = SiParams()):
    """``crflag`` (dce, y, x) bool: single-pixel hits above cr_threshold sigma of ``unc``, sharper
    than a star (flagged, not removed)."""
    cr = per_dce(K.cosmic_ray_block, [ds.rate, ds.unc], outputs=[(YX, bool)], kwargs={"p": p})
    return record(ds.assign(crflag=cr), "si.flag_cosmic_rays", p)


def pipeline(ds, plan, cal, p: SiParams):
    """All 24 um steps in order (lazy): raw group -> ``bcd``, ``unc`` (MJy/sr), ``mask`` (dce, y, x)."""
    ds = replace_saturated(ds, cal, p)
    ds = subtract_dark(ds, cal, source="replaced")
    ds = correct_jailbar(ds, cal, p)
    ds = correct_droop(ds, cal)
    ds = uncertainty(ds, cal, p)
    ds = flat_field(ds, cal)
    ds = flag_cosmic_rays(ds, p)
    ds = to_surface_brightness(ds, cal)
    return make_mask(ds, cal)
