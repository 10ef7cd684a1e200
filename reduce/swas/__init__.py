"""SWAS (Submillimeter Wave Astronomy Satellite): ingest, level-1 reduction and export.

The public API, for notebooks and scripts::

    import reduce.swas as swas
    ds = swas.open_store("swas.zarr")            # level-0.5 store: lazy, validated xarray.Dataset
    plan = swas.plan(ds)                         # eager, small per-scan metadata only
    ds1 = swas.steps.check(ds, plan)             # each step builds a dask graph, nothing computed
    pairs = swas.steps.flag(swas.steps.pair(ds1, plan), plan)
    level1 = swas.steps.calibrate(swas.steps.coadd(pairs, plan), pairs, plan)
    summary = swas.run("swas.zarr", "products/")  # the whole job on the runner (store + FITS)
    coadds = swas.open_level1("swas.zarr")       # the level-1 coadds kept in the store

``steps`` holds the lazy reduction steps of the seed (check, pair, flag, coadd, calibrate),
``kernels`` their plain-array kernels, ``physics`` the constants, bands and dispersion;
``pipeline`` plans and composes them and is the runner's SWAS pipeline; ``export`` and
``targets`` write the level-1 FITS products; ``ingest`` loads level-0.5 files into the store.
Submodules are imported on first use.
"""
from reduce._lazy import lazy_getattr

_MODULES = ["steps", "kernels", "physics", "pipeline", "export", "targets", "ingest"]
_FUNCTIONS = {"open_store": ("reduce.swas.pipeline", "open_store"),
              "plan": ("reduce.swas.pipeline", "plan_segments"),
              "Params": ("reduce.swas.pipeline", "Params"),
              "build_level1": ("reduce.swas.pipeline", "build_level1"),
              "compute_level1": ("reduce.swas.pipeline", "compute_level1"),
              "run": ("reduce.swas.pipeline", "reduce_swas"),
              "open_level1": ("reduce.swas.pipeline", "open_level1")}
__all__ = _MODULES + list(_FUNCTIONS)


__getattr__ = lazy_getattr(__name__, _MODULES, _FUNCTIONS)
