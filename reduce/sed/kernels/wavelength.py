"""Wavelengths of the SED array (ICD section 3): pixel (y, x) has its centre at
``WAVE0 + DISP * y + TILT * (x - CENTCOL)`` um; rectified row r at ``WAVE0 + DISP * r`` in
every column. Rows and columns 0-based."""
from __future__ import annotations

import numpy as np

__all__ = ["pixel_wavelengths", "row_wavelengths", "row_shift"]


def pixel_wavelengths(wave0, disp, tilt, centcol, shape=(32, 32)):
    """Centre wavelength (um) of every detector pixel, float64 ``shape`` (ny, nx).

    ``wave0`` (um), ``disp`` (um/row), ``tilt`` (um/column), ``centcol`` (0-based column).
    """
    y, x = np.indices(shape, dtype=np.float64)
    return wave0 + disp * y + tilt * (x - centcol)


def row_wavelengths(wave0, disp, nrows=27):
    """Wavelength (um) of the rectified rows 0..nrows-1, float64 (nrows,)."""
    return wave0 + disp * np.arange(nrows, dtype=np.float64)


def row_shift(disp, tilt, centcol, ncols=16):
    """``s(x) = TILT * (x - CENTCOL) / DISP`` (rows), float64 (ncols,): detector row y of
    column x is centred on rectified (wavelength) coordinate ``y + s(x)``."""
    return tilt * (np.arange(ncols, dtype=np.float64) - centcol) / disp
