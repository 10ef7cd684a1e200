"""Spitzer MIPS (24, 70, 160 um): ingest, level-1 (BCD) reduction and export.

The public API, for notebooks and scripts::

    import reduce.mips as mips
    raw70 = mips.open_store("mips.zarr", 2)        # raw group of one array (CHNLNUM 1, 2, 3): lazy
    plan = mips.plan(raw70, 2)                      # eager per-DCE metadata + calibration checks
    slopes = mips.steps.fit_ramps(plan.ds, plan.cal, mips.BcdParams().ge)   # one lazy step
    bcd, skipped = mips.assemble(plan)              # every step: the lazy BCD Dataset
    summary = mips.run("mips.zarr", "products/")     # the whole job on the runner (store + FITS)
    b70 = mips.open_bcd("mips.zarr", 2)             # the BCDs kept in the store

``steps`` holds the lazy BCD steps of the seed (si, ramps, dark, responsivity, uncertainty,
flat, fluxcal, mask), ``kernels`` their plain-array kernels; ``bcd`` the product's shared
definitions (groups, mask bits, DCE codes); ``calib`` reads and checks the calibration
files; ``pipeline`` plans and composes the steps and is the runner's MIPS pipeline;
``bcd_export`` / ``bcd_reader`` write and read the FITS products; ``ingest`` loads raw files
into the store. Submodules are imported on first use.
"""
from reduce._lazy import lazy_getattr

_MODULES = ["steps", "kernels", "bcd", "calib", "pipeline", "bcd_export", "bcd_reader", "ingest"]
_FUNCTIONS = {"open_store": ("reduce.mips.pipeline", "open_store"),
              "plan": ("reduce.mips.pipeline", "plan_bcd"),
              "BcdParams": ("reduce.mips.pipeline", "BcdParams"),
              "assemble": ("reduce.mips.pipeline", "assemble"),
              "build_bcd": ("reduce.mips.pipeline", "build_bcd"),
              "run": ("reduce.mips.pipeline", "reduce_mips"),
              "open_bcd": ("reduce.mips.pipeline", "open_bcd")}
__all__ = _MODULES + list(_FUNCTIONS)


__getattr__ = lazy_getattr(__name__, _MODULES, _FUNCTIONS)
