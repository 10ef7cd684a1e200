"""Illumination correction and per-row flux calibration of SED frames: DN/s -> MJy/sr.

``bcd(y, x) = rate(y, x) / ILLUM(y, x) * FLUXCONV(y)`` (ICD section 3: a BCD in MJy/sr is
``(rate - dark) / resp / ILLUM * FLUXCONV`` for emission that fills the slit); the
uncertainty is scaled by the same factor. NaN where ILLUM <= 0 or is not finite (dead
pixels, ``no_flat``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["calibrate", "calibrate_block"]


def _take(table, calset):
    """Rows ``table[calset]`` of a (cset, ...) table (negative calset -> row 0, caller masks)."""
    return np.asarray(table)[np.clip(np.asarray(calset, dtype=np.int64), 0, None)]


def calibrate(rate, illum, fluxconv_row):
    """DN/s -> MJy/sr, float64: ``rate / illum * fluxconv_row[..., :, None]``.

    ``rate`` (..., ny, nx) DN/s (after dark and responsivity); ``illum`` (..., ny, nx)
    (mean 1); ``fluxconv_row`` (..., ny) MJy/sr per DN/s of each row. NaN where ``illum``
    <= 0 or not finite.
    """
    illum = np.asarray(illum, dtype=np.float64)
    good = np.isfinite(illum) & (illum > 0)
    factor = np.asarray(fluxconv_row, dtype=np.float64)[..., :, None] / np.where(good, illum, np.nan)
    return np.asarray(rate, dtype=np.float64) * factor


def calibrate_block(rate, unc, calset, *, illum, fluxconv_row):
    """Task body of the SED calibration step: (bcd, unc), float32 (n, ny, nx) MJy/sr.

    ``rate``, ``unc`` (n, ny, nx) DN/s; ``calset`` (n,) int index of each frame's calibration
    set; ``illum`` (cset, ny, nx); ``fluxconv_row`` (cset, ny) MJy/sr per DN/s. Each frame
    depends on its own set only, so any split of the frames gives the same numbers.
    """
    il = _take(illum, calset)
    fc = _take(fluxconv_row, calset)
    return (calibrate(rate, il, fc).astype(np.float32),
            calibrate(unc, il, fc).astype(np.float32))
