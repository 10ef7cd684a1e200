"""Level 2: mosaics of BCD frames (MIPS post-BCD products; any BCD set with ``skyreduce mosaic``).

Kernels on plain arrays in ``reduce.mosaic.kernels`` (one module per step: grid, pointing,
background, outliers, coadd), their dask wrappers in ``reduce.mosaic.steps``, the pipeline on
the runner in ``reduce.mosaic.pipeline``.
"""
