"""BCD mask images (uint16 bits) and the blanking of invalid pixels, all three arrays:
kernels of ``reduce.mips.steps.mask``.

The mask of a DCE is the OR of the permanent mask (PMASK bits re-mapped to the BCD bits
of the same name), the per-pixel bits an earlier step left (Ge: the ramp fit's), and
boolean flags by bit name (24 um: saturated, cosmic_ray; Ge: no_responsivity, stim; all:
invalid). Pixels that are invalid (no finite value, or a skipped DCE) become NaN in the
BCD and its uncertainty.
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .arrays import take

DEFAULT_MASK_BITS = MappingProxyType({
    "dead": 1, "hot": 2, "noisy": 4, "no_flat": 8,      # permanent (pmask, ICD §2)
    "saturated": 16,       # 24 um: slope replaced by the first difference; Ge: reads at/after the A/D limit
    "cosmic_ray": 32,      # 24 um: single-frame cosmic-ray flag; Ge: jump(s) found
    "invalid": 64,         # no finite value (bad input, flat <= 0, ...)
    "too_few_reads": 128, "no_good_segment": 256,        # Ge ramp fit
    "no_responsivity": 512, "stim": 1024,                # Ge stim flashes
})
"""Mask bit values (those of schemas/mips_bcd.yaml); the steps pass the schema's mapping in."""

PMASK_BITS = MappingProxyType({"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8})
"""Bit values of the permanent-mask calibration file (ICD §2)."""


def make_mask(pmask, flags=None, *, base=None, shape=None, bits=DEFAULT_MASK_BITS, pmask_bits=PMASK_BITS):
    """Build the uint16 mask image from the permanent mask, earlier bits and boolean flags.

    ``pmask`` (ny, nx) or (ndce, ny, nx) carries ICD bits ``pmask_bits``; each of its bits is
    re-mapped to ``bits`` under the same name. ``flags``: {bit name: boolean array,
    broadcastable} (None values are skipped), e.g. {"saturated": replaced, "cosmic_ray": cr,
    "invalid": bad}. ``base``: mask bits already set (e.g. the Ge ramp fit's), OR-ed in.
    ``shape`` defaults to the broadcast shape of the inputs.
    """
    pmask = np.asarray(pmask).astype(np.int64)
    flags = {name: value for name, value in (flags or {}).items() if value is not None}
    shapes = [pmask.shape] + [np.shape(v) for v in flags.values()] + ([np.shape(base)] if base is not None else [])
    shape = shape or np.broadcast_shapes(*shapes)
    mask = np.zeros(shape, dtype=np.uint16)
    if base is not None:
        mask |= np.asarray(base).astype(np.uint16)
    for name, value in pmask_bits.items():
        if name in bits:
            mask |= np.where(pmask & value, np.uint16(bits[name]), np.uint16(0))
    for name, value in flags.items():
        mask |= np.where(np.asarray(value, bool), np.uint16(bits[name]), np.uint16(0))
    return mask


def _blank(bcd, unc, skip):
    """(invalid (n, y, x) bool, bcd, unc with NaN there): no finite value, or a skipped DCE."""
    bad = skip[:, None, None] | ~np.isfinite(bcd) | ~np.isfinite(unc)
    nan = np.float32(np.nan)
    return bad, np.where(bad, nan, bcd), np.where(bad, nan, unc)


def mask_block_si(bcd, unc, sat, crflag, skip, calset, *, pmask, bits):
    """Task body of step ``mask.make_mask`` for 24 um DCEs: bcd, unc (n, y, x) float32 MJy/sr
    (NaN where invalid) and the mask (n, y, x) uint16 (pmask, saturated, cosmic_ray, invalid)."""
    bad, bcd, unc = _blank(bcd, unc, skip)
    m = make_mask(take(pmask, calset), {"saturated": sat, "cosmic_ray": crflag, "invalid": bad}, bits=bits)
    return bcd, unc, m


def mask_block_ge(bcd, unc, rmask, resp, stim, skip, calset, *, pmask, bits):
    """Task body of step ``mask.make_mask`` for Ge DCEs: bcd, unc (n, y, x) float32 MJy/sr (NaN
    where invalid) and the mask (n, y, x) uint16: the ramp bits ``rmask``, pmask, no_responsivity
    (responsivity (n,) NaN), stim (STIMFLSH (n,) > 0), invalid."""
    bad, bcd, unc = _blank(bcd, unc, skip)
    flags = {"no_responsivity": ~np.isfinite(resp)[:, None, None], "stim": (stim > 0)[:, None, None],
             "invalid": bad}
    return bcd, unc, make_mask(take(pmask, calset), flags, base=rmask, bits=bits)
