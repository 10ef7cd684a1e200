"""The SWAS level-0.5 -> level-1 reduction steps (seed §2), lazy: each builds dask graphs only.

In seed order, each step module ``reduce.swas.steps.<step>`` holds the xarray/dask wrapper;
its numerical work (plain numpy, task bodies included) is in ``reduce.swas.kernels.<step>``::

    plan = reduce.swas.pipeline.plan_segments(ds)   # eager, small per-scan metadata only
    ds1 = check(ds, plan)                           # 1: scan_flag (time,)
    pairs = flag(pair(ds1, plan), plan)             # 2: switched spectra; 3: flags
    co = coadd(pairs, plan)                         # 4: Doppler shift-and-coadd, LSRK axis
    level1 = calibrate(co, pairs, plan)             # 5: Ta* [K]

(``reduce.swas.pipeline`` composes them and computes.)
"""

from reduce.swas.steps.calibrate import calibrate
from reduce.swas.steps.check import check
from reduce.swas.steps.coadd import coadd
from reduce.swas.steps.flag import flag
from reduce.swas.steps.pair import pair

__all__ = ["check", "pair", "flag", "coadd", "calibrate"]
