"""Graph machinery shared by the MIPS level-1 steps: provenance and per-DCE dispatch.

A step is ``step(ds, cal, params) -> ds``: it only builds dask graphs. Per-DCE
work runs in ``per_dce`` (``xr.apply_ufunc(..., dask="parallelized")`` over
chunks of DCEs) on a kernel of ``reduce.mips.kernels``; the calibration of each DCE
comes from the ``reduce.mips.calib.CalTable`` (one ``CalibrationSet`` per entry of the
store's ``calibration_sets``), indexed per DCE by the ``calset`` coordinate inside the kernel.
"""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import xarray as xr

from ..bcd import PIPELINE_VERSION
from ..calib import CalTable


def record(ds: xr.Dataset, name: str, params=None, cal: CalTable | None = None, files=()) -> xr.Dataset:
    """Append one provenance line (JSON: step, version, parameters, reference files) to attrs history."""
    entry = {"step": name, "version": PIPELINE_VERSION}
    if params is not None:
        entry["params"] = dataclasses.asdict(params)
    if files:
        entry["files"] = list(files)
    elif cal is not None:
        entry["files"] = cal.checksums()
    ds = ds.copy()
    ds.attrs["history"] = list(ds.attrs.get("history", [])) + [json.dumps(entry, sort_keys=True)]
    return ds


def per_dce(func, data, cal=None, outputs=(((), np.float32),), kwargs=None, sizes=None):
    """Map ``func`` over chunks of DCEs (lazy).

    ``data``: DataArrays whose first dim is ``dce`` (all other dims are core
    dims, passed whole); ``cal``: {name: DataArray (cset, ...)} passed whole as
    keyword arguments; ``outputs``: [(core dims, dtype)], each output (dce, *core).
    ``func(*arrays, **cal, **kwargs)`` returns one array or a tuple. ``sizes``: {dim: length}
    of output core dims that no input has (e.g. the rectified rows of an SED BCD).
    """
    cal = dict(cal or {})
    names = list(cal)
    nd = len(data)

    def wrapped(*arrays, **kw):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return func(*arrays[:nd], **dict(zip(names, arrays[nd:])), **kw)

    for d in data:
        if d.dims[0] != "dce":
            raise ValueError(f"per_dce: {d.name} has dims {d.dims}, expected dce first")
    data = [d.drop_vars(list(d.coords)) for d in data]    # per-DCE coordinates stay on the Dataset
    chunks = next((d.chunks[0] for d in data if d.chunks is not None), None)
    if chunks is not None:   # per-DCE numpy inputs (plan metadata) follow the data's DCE chunks
        data = [d if d.chunks is not None and d.chunks[0] == chunks else d.chunk({"dce": chunks}) for d in data]
    core_in = [list(d.dims[1:]) for d in data] + [list(c.dims) for c in cal.values()]
    res = xr.apply_ufunc(
        wrapped, *data, *cal.values(), input_core_dims=core_in,
        output_core_dims=[list(o[0]) for o in outputs], dask="parallelized",
        output_dtypes=[o[1] for o in outputs], kwargs=kwargs or {},
        dask_gufunc_kwargs={"allow_rechunk": False, **({"output_sizes": dict(sizes)} if sizes else {})}, keep_attrs=False)
    return res

