"""The MIPS SED-mode steps (ICD section 3), lazy: each builds dask graphs only; their plain-array
kernels are in ``reduce.sed.kernels.<step>``. Level 1 (per DCE, after the Ge ramp steps of
``reduce.mips.steps``: fit_ramps, subtract_dark, track_responsivity, apply_responsivity)::

    calibrate   rate / ILLUM x FLUXCONV(row) -> bcd, unc in MJy/sr (32 x 32 detector frame)
    rectify     flux-conserving resampling onto rows of one wavelength (27 rows x 16 columns)

Level 2 (per AOR, on the rectified BCDs)::

    coadd       ON, OFF and ON - OFF coadds, dithers aligned along the slit, outliers rejected
    extract     source column from the data, 5-column extraction with APCORR -> Jy

``bcd_pipeline`` runs the level-1 steps in order.
"""
from .calibrate import calibrate
from .coadd import coadd_aor
from .extract import extract_spectrum
from .rectify import bcd_pipeline, rectify

__all__ = ["calibrate", "rectify", "bcd_pipeline", "coadd_aor", "extract_spectrum"]
