"""Output tables of a pipeline in its store: one zarr group per table, rows owned by units.

A *table* is a zarr group whose variables share a leading row dimension (``coadd``,
``pair``, ``dce`` ...). Every unit of work owns a contiguous run of **whole chunks** of
that dimension (its *slot*: ``capacity`` rows, a multiple of the table's row chunk),
allocated by the client in unit order before any worker writes. A worker writes its
unit's rows padded with fill values to the slot's end, so no two writers ever touch one
chunk, and a re-run of a unit rewrites exactly the same chunks.

The allocation lives in the pipeline's *units group* (dim ``unit``): ``unit_key``,
``input_hash``, ``params_hash``, and per table ``<table>_start``, ``<table>_capacity``,
``<table>_count`` (rows written; padding beyond). ``open_table`` returns the written
rows only, lazily.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
import zarr

from ..io.store import _compressors, _quiet_zarr
from ..schemas import group_spec, load_schema

STR_FILL = ""


@dataclass(frozen=True)
class TableSpec:
    """One output table: zarr group ``path`` with row dimension ``row_dim`` (from a store schema)."""

    name: str         # short name used in the units group (``coadds`` -> ``coadds_start``)
    schema: str       # schema file (schemas/<schema>.yaml)
    path: str         # group path in the store

    @property
    def spec(self) -> dict:
        return group_spec(load_schema(self.schema), self.path)

    @property
    def row_dim(self) -> str:
        return self.spec["row_dim"]

    @property
    def chunk(self) -> int:
        return int(self.spec["row_chunk"])

    def variables(self):
        """(name, var spec) of every variable (those along row_dim first)."""
        return list(self.spec["variables"].items())

    def capacity(self, n_rows: int) -> int:
        """Rows of the slot for a unit with ``n_rows`` rows (whole chunks, at least one)."""
        return max(1, math.ceil(n_rows / self.chunk)) * self.chunk


def _fill(var):
    if var["dtype"] == "str":
        return STR_FILL
    if "fill_value" in var:
        return var["fill_value"]
    return float("nan") if var["dtype"].startswith("float") else (-1 if var["dtype"].startswith("int") else 0)


def _shape(table: TableSpec, var, n_rows):
    dims = table.spec["dims"]
    return tuple(n_rows if d == table.row_dim else dims[d] for d in var["dims"])


def ensure_table(store, table: TableSpec, n_rows: int, attrs: dict | None = None) -> None:
    """Create the table's arrays (empty) if absent, and grow them to ``n_rows`` rows."""
    with _quiet_zarr():
        group = zarr.open_group(store, path=table.path, mode="a", use_consolidated=False)
        spec = table.spec
        coords = [n for n, v in spec["variables"].items() if n not in spec.get("data_variables", [])]
        new_attrs = {"title": spec.get("title", ""), "row_dim": table.row_dim, **(attrs or {})}
        if coords and spec.get("data_variables"):
            new_attrs["coordinates"] = " ".join(coords)
        group.attrs.update(new_attrs)
        for name, var in table.variables():
            along = table.row_dim in var["dims"]
            shape = _shape(table, var, n_rows if along else 0)
            if name in group:
                arr = group[name]
                if along and arr.shape[0] < n_rows:
                    arr.resize((n_rows,) + arr.shape[1:])
                continue
            chunks = tuple(table.chunk if d == table.row_dim else table.spec["dims"][d] for d in var["dims"])
            attrs_v = {k: var[k] for k in ("units", "long_name", "flag_values", "flag_masks", "flag_meanings")
                       if k in var}
            group.create_array(name, shape=shape, chunks=chunks, dtype=str if var["dtype"] == "str" else var["dtype"],
                               fill_value=_fill(var), dimension_names=var["dims"],
                               compressors=_compressors(var.get("compressor", "auto")), attributes=attrs_v)


def write_slot(store, table: TableSpec, start: int, capacity: int, rows: dict) -> int:
    """Write one unit's ``rows`` ({variable: array along row_dim}) at [start, start+capacity), padded.

    Returns the number of rows written (the rest of the slot holds fill values). Every
    variable of the table along ``row_dim`` must be given, with the same length.
    """
    spec = table.spec
    along = {n: v for n, v in spec["variables"].items() if v["dims"] and v["dims"][0] == table.row_dim}
    missing = sorted(set(along) - set(rows))
    if missing:
        raise ValueError(f"table {table.path}: rows lack {missing}")
    lengths = {len(np.asarray(rows[n])) for n in along}
    if len(lengths) != 1:
        raise ValueError(f"table {table.path}: variables have different lengths {sorted(lengths)}")
    n = lengths.pop()
    if n > capacity:
        raise ValueError(f"table {table.path}: {n} rows do not fit the unit's slot of {capacity}")
    with _quiet_zarr():
        group = zarr.open_group(store, path=table.path, mode="r+", use_consolidated=False)
        for name, var in along.items():
            values = _padded(np.asarray(rows[name]), var, capacity, _shape(table, var, capacity))
            group[name][start:start + capacity] = values
    return n


def _padded(values, var, capacity, shape):
    if var["dtype"] == "str":
        out = np.full(shape, STR_FILL, dtype=object)
        out[:len(values)] = [str(v) for v in values]
        return out
    out = np.full(shape, _fill(var), dtype=var["dtype"])
    out[:len(values)] = values
    return out


def open_table(store, table: TableSpec, units: xr.Dataset | None = None) -> xr.Dataset:
    """The written rows of a table (padding left out), lazily, in unit order.

    ``units``: the units group (``open_units``), read when not given.
    """
    with _quiet_zarr():
        ds = xr.open_zarr(store, group=table.path, consolidated=False, chunks={})
    if units is None:
        units = open_units(store, table)
    if units is None or units.sizes.get("unit", 0) == 0:
        return ds.isel({table.row_dim: slice(0, 0)})
    start = units[f"{table.name}_start"].values
    count = units[f"{table.name}_count"].values
    index = np.concatenate([np.arange(s, s + c) for s, c in zip(start, count) if c > 0] or
                           [np.zeros(0, np.int64)])
    return ds.isel({table.row_dim: index})


def read_slot(store, table: TableSpec, start: int, n_rows: int) -> xr.Dataset:
    """The first ``n_rows`` rows of a unit's slot starting at ``start``, loaded (numpy)."""
    with _quiet_zarr():
        ds = xr.open_zarr(store, group=table.path, consolidated=False, chunks=None)
    return ds.isel({table.row_dim: slice(start, start + n_rows)}).load()


def units_path(table: TableSpec) -> str:
    return load_schema(table.schema)["units_group"]


def open_units(store, table: TableSpec) -> xr.Dataset | None:
    """The units group of the pipeline that owns ``table`` (numpy-backed), or None when there is
    none or it cannot be read whole (a run killed while it rewrote the group: the next run
    rewrites it from the units' records)."""
    path = units_path(table)
    try:
        with _quiet_zarr():
            ds = xr.open_zarr(store, group=path, consolidated=False).load()
    except (OSError, KeyError, ValueError, RuntimeError, zarr.errors.GroupNotFoundError):
        return None
    want = ["unit_key"] + [f"{table.name}_{c}" for c in ("start", "capacity", "count")]
    return ds if all(name in ds for name in want) else None
