"""Plain-array kernels of the stability studies (numpy / scipy only: no xarray, dask or I/O)."""
