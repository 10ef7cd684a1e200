"""Step 1, checking (seed §2.1), lazy: the per-scan checking flags as a Dataset variable.

The flags themselves are computed at planning time on the small per-scan metadata by
:func:`reduce.swas.kernels.check.check_segment` (no AOS pixels are read).
"""

from __future__ import annotations

import xarray as xr

from reduce.swas.kernels.check import SCAN_FLAGS


def check(ds, plan):
    """Step 1 as a Dataset -> Dataset step: adds ``scan_flag`` (time,) int32, flag-coded
    (reasons in flag_masks / flag_meanings), from the plan's checking (metadata only, no
    pixel access; nothing is computed)."""
    var = xr.DataArray(plan.scan_flags, dims=("time",), attrs={
        "long_name": "checking-step reasons a scan is excluded (0 = good)",
        "flag_masks": list(SCAN_FLAGS.values()), "flag_meanings": " ".join(SCAN_FLAGS)})
    out = ds.assign(scan_flag=var)
    return out.assign_attrs(history=list(ds.attrs.get("history", [])) + [plan.provenance["check"]])
