"""Plain-numpy kernels of the MIPS SED steps (issue 11): ``calibrate`` (illumination correction
and per-row FLUXCONV to MJy/sr), ``wavelength`` (pixel and row wavelengths with the tilt),
``rectify`` (flux-conserving resampling onto rows of one wavelength), ``coadd`` (dither
alignment along the slit, outlier rejection across frames, weighted mean) and ``extract``
(source column and the 5-column APCORR extraction). Kernels never import xarray, dask or a
step module.
"""
