"""Plain-array (numpy) kernels of the SWAS reduction steps: ``kernels/<step>.py`` for each
``steps/<step>.py`` (check, pair, flag, coadd, calibrate), plus helpers shared by several steps
(``comb``: COMB frequency calibration, ``doppler``: line-of-sight velocities). Kernels never
import xarray, dask or a step module.
"""
