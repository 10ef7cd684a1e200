"""Mosaic kernels on plain numpy arrays and astropy WCS objects (no dask, no xarray)."""
