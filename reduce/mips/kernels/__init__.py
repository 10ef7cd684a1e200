"""Plain-array (numpy, numba) kernels of the MIPS level-1 steps: ``kernels/<step>.py`` for each
``steps/<step>.py`` (si, ramps, dark, responsivity, uncertainty, flat, fluxcal, mask), plus
helpers named for what they are (``ramps_numba``: the ramp fit's numba loops, ``arrays``:
shared array helpers, ``wcs``: the DCE's TAN-SIP WCS header for the export). Kernels never
import xarray, dask or a step module.
"""
