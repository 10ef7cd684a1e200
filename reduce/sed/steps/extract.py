"""Point-source extraction of one SED AOR from its ON - OFF coadd, lazy (kernels:
``reduce.sed.kernels.extract``): the source column from the flux summed over rows 1..19 (the
SSC's rows 2-20), then a 5-column aperture centred on it, times APCORR x Omega x 1e6 -> Jy,
extracted from every aligned ON - OFF frame and combined row by row (``kernels.extract.extract_block``)."""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..kernels import extract as K


def extract_spectrum(coadd, *, wavelength, apcorr, omega_sr, width=5, source_rows=(1, 20), nsigma=4.0, min_depth=3):
    """Lazy Dataset (row,) of ``flux_density`` and ``error`` (Jy), ``apcorr``, coordinate
    ``wavelength`` (um), and scalars ``column``/``column_err`` (the source column in the coadd,
    0-based, and its 1-sigma error). ``coadd``: ``coadd_aor``'s Dataset; ``wavelength``,
    ``apcorr`` float [nrows]; ``omega_sr`` one pixel's solid angle (sr). Also ``nframes`` (frames
    used per row), ``background`` (the residual background subtracted per row, MJy/sr) and
    ``error_scale`` (the factor applied to the frames' combined error: their scatter over it)."""
    nrow = coadd.sizes["row"]
    task = dask.delayed(K.extract_block, nout=7, pure=True)(
        coadd.onoff.data, coadd.onoff_unc.data, coadd.frames.data, coadd.frames_unc.data, apcorr=np.asarray(apcorr, np.float64), omega_sr=float(omega_sr),
        width=int(width), rows=tuple(source_rows), nsigma=float(nsigma),
        min_depth=int(min_depth))
    flux = da.from_delayed(task[0], (nrow,), dtype=np.float64)
    err = da.from_delayed(task[1], (nrow,), dtype=np.float64)
    nframes = da.from_delayed(task[2], (nrow,), dtype=np.int16)
    col = da.from_delayed(task[3], (), dtype=np.float64)
    col_err = da.from_delayed(task[4], (), dtype=np.float64)
    background = da.from_delayed(task[5], (nrow,), dtype=np.float64)
    scale = da.from_delayed(task[6], (), dtype=np.float64)
    return xr.Dataset({"flux_density": ("row", flux, {"units": "Jy"}), "error": ("row", err, {"units": "Jy"}),
                       "apcorr": ("row", np.asarray(apcorr, np.float64)), "nframes": ("row", nframes),
                       "background": ("row", background, {"units": "MJy/sr"}),
                       "column": ((), col), "error_scale": ((), scale),
                       "column_err": ((), col_err)},
                      coords={"row": np.arange(nrow),
                              "wavelength": ("row", np.asarray(wavelength, np.float64), {"units": "um"})})
