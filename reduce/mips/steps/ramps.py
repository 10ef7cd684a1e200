"""Ge:Ga (70, 160 um) ramp fitting of the BCD pipeline (seed: Handbook Fig. 5.6), lazy over
chunks of DCEs: nonlinearity, saturation, cosmic-ray jumps and segment-fused slopes
(kernels: ``reduce.mips.kernels.ramps``). ``pipeline`` runs every Ge step in order, those
the arrays share from their own step modules::

    ds = fit_ramps(ds, cal, p)           # reads -> rate, unc (DN/s): nonlinearity, saturation,
                                         #   CR jumps, segments >= min_reads fused
    ds = subtract_dark(ds, cal)          # rate - dark
    ds = track_responsivity(ds, plan, cal, p)   # per-DCE responsivity from the stim flashes
    ds = apply_responsivity(ds, cal)     # / responsivity, stim signal removed in stim DCEs
    ds = flat_field(ds, cal)             # / flat
    ds = to_surface_brightness(ds, cal)  # x FLUXCONV -> bcd, unc in MJy/sr
    ds = make_mask(ds, cal)              # mask bits, NaN for skipped DCEs

Dataset variables: ``reads`` (dce, read, y, x) int16 in; ``rate``/``unc`` (dce, y, x) float32
working rate and 1-sigma error (DN/s); ``rmask`` uint16 ramp bits; ``ncr`` int16;
``dce_code`` (dce,) int16 (bits of ``reduce.mips.bcd.DCE_CODES``: why a DCE yields nothing).
``skip`` (dce,) bool marks DCEs the plan already rejected (never computed).
"""
from __future__ import annotations

import numpy as np

from ..bcd import mask_bits
from ..kernels import ramps as K
from ..kernels.ramps import GeParams
from ._graph import per_dce, record
from .dark import subtract_dark
from .flat import flat_field
from .fluxcal import to_surface_brightness
from .mask import make_mask
from .responsivity import apply_responsivity, track_responsivity


def fit_ramps(ds, cal, p: GeParams = GeParams()):
    """reads (dce, read, y, x) int16 raw DN -> ``rate`` (dce, y, x) float32 linear DN/s and its
    1-sigma ``unc``, ``rmask`` uint16 ramp mask bits, ``ncr`` int16 jumps per pixel, ``dce_code``
    (dce,) int16 [and ``cr_reads`` (dce, read, y, x) bool with ``p.keep_cr_reads``] (lazy)."""
    bits = mask_bits()
    outs = [(("y", "x"), np.float32), (("y", "x"), np.float32), (("y", "x"), np.uint16),
            (("y", "x"), np.int16), ((), np.int16), (("read", "y", "x"), bool)]
    res = per_dce(K.fit_ramps_block, [ds.reads, ds.nreads, ds.calset, ds.skip],
                  cal={"nonlin": cal.image("nonlin", fill=0.0), "satlevel": cal.scalar("satlevel"),
                       "rdnoise": cal.scalar("rdnoise"), "gain": cal.scalar("gain")},
                  outputs=outs if p.keep_cr_reads else outs[:5], kwargs={"p": p, "bits": bits})
    new = {"rate": res[0], "unc": res[1], "rmask": res[2], "ncr": res[3], "dce_code": res[4]}
    if p.keep_cr_reads:
        new["cr_reads"] = res[5]
    ds = ds.assign(new)
    ds["rate"].attrs["units"] = "DN/s"
    return record(ds, "ramps.fit_ramps", p, cal)


def pipeline(ds, plan, cal, p: GeParams):
    """All Ge steps in order (lazy): raw group -> ``bcd``, ``unc`` (MJy/sr), ``mask`` (dce, y, x),
    ``responsivity`` (dce,), ``ncr``."""
    ds = fit_ramps(ds, cal, p)
    ds = subtract_dark(ds, cal)
    ds = track_responsivity(ds, plan, cal, p)
    ds = apply_responsivity(ds, cal)
    ds = flat_field(ds, cal)
    ds = to_surface_brightness(ds, cal)
    return make_mask(ds, cal)
