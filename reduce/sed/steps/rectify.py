"""Rectification ("dispersion correction") of SED BCDs, lazy over chunks of DCEs (kernel:
``reduce.sed.kernels.rectify``), and ``bcd_pipeline``: every level-1 SED step in order."""
from __future__ import annotations

import numpy as np

from ...mips.bcd import mask_bits
from ...mips.kernels.ramps import GeParams
from ...mips.steps._graph import per_dce, record
from ...mips.steps.dark import subtract_dark
from ...mips.steps.mask import make_mask
from ...mips.steps.ramps import fit_ramps
from ...mips.steps.responsivity import apply_responsivity, track_responsivity
from ..kernels import rectify as K
from .calibrate import calibrate

NROWS, NCOLS = 27, 16
"""The calibrated window (ICD 3): rows 0..26 (first order), columns 0..15 (along the slit)."""
FATAL = ("dead", "hot", "noisy", "no_flat", "invalid", "too_few_reads", "no_responsivity")
"""Mask bits of detector pixels left out of the rectified values (the others are OR-ed in).
'noisy' (PMASK) is among them: with their read noise above the array's, the ramp fit's jump
test takes noise for cosmic rays and the fused slopes come out biased low (by 5-20 sigma in
the simulation); the level-2 extraction fills such pixels from the other dithers."""
RC = ("row", "col")


def sed_mask_bits() -> dict:
    """The SED BCD mask bits: the imaging BCD's (schemas/mips_bcd.yaml) plus 'partial'."""
    return {**mask_bits(), "partial": K.PARTIAL}


def rectify(ds, cal, calset):
    """``bcd``, ``unc`` (MJy/sr) and ``mask`` (dce, y, x) of the 32 x 32 detector -> (dce, row, col)
    27 x 16: row r at wavelength WAVE0 + DISP r in every column (flux-conserving overlap
    resampling along the rows of each column, shifted by TILT (x - CENTCOL) / DISP rows);
    adds per-DCE ``wave0``, ``disp`` (um) of the DCE's calibration set (``calset``: the plan's
    per-DCE set indices, numpy)."""
    bits = sed_mask_bits()
    fatal = sum(int(bits[b]) for b in FATAL)
    bcd, unc, mask = per_dce(
        K.rectify_block, [ds.bcd, ds.unc, ds.mask, ds.calset],
        cal={"disp": cal.scalar("disp"), "tilt": cal.scalar("tilt"), "centcol": cal.scalar("centcol")},
        outputs=[(RC, np.float32), (RC, np.float32), (RC, np.uint16)],
        kwargs={"nrows": NROWS, "ncols": NCOLS, "bits": bits, "fatal": fatal}, sizes={"row": NROWS, "col": NCOLS})
    calset = np.clip(np.asarray(calset).astype(np.int64), 0, cal.scalar("disp").size - 1)
    wave0 = cal.scalar("wave0").values[calset]
    disp = cal.scalar("disp").values[calset]
    ds = ds.drop_vars(["bcd", "unc", "mask"]).assign(bcd=bcd, unc=unc, mask=mask)
    ds = ds.assign_coords(wave0=("dce", wave0), disp=("dce", disp))
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "sed.rectify", None, cal)


def count_flags(ds):
    """``ncr`` (dce,) int32: cosmic-ray jumps found in the calibrated window's ramps; ``nsat``
    (dce,) int32: pixels of the window with reads at the A/D limit (mask bit 'saturated')."""
    window = {"y": slice(0, NROWS), "x": slice(0, NCOLS)}
    ncr = ds.ncr.isel(window).sum(("y", "x")).astype(np.int32)
    nsat = ((ds.mask.isel(window) & np.uint16(mask_bits()["saturated"])) > 0).sum(("y", "x")).astype(np.int32)
    return ds.drop_vars("ncr").assign(ncr=ncr, nsat=nsat)


def bcd_pipeline(ds, plan, cal, p: GeParams = GeParams()):
    """Every level-1 SED step in order (lazy): raw group -> ``bcd``, ``unc`` (MJy/sr), ``mask``
    (dce, row, col), ``responsivity``, ``responsivity_unc``, ``ncr``, ``nsat`` (dce,)."""
    ds = fit_ramps(ds, cal, p)
    ds = subtract_dark(ds, cal)
    ds = track_responsivity(ds, plan, cal, p)
    ds = apply_responsivity(ds, cal)
    ds = calibrate(ds, cal)
    ds = make_mask(ds, cal)
    ds = count_flags(ds)
    return rectify(ds, cal, plan.calset)
