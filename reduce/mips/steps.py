"""Shared machinery of the MIPS level-1 steps: mask bits, calibration table, provenance, dispatch.

A step is ``step(ds, cal, params) -> ds``: it only builds dask graphs. Per-DCE
work runs in ``per_dce`` (``xr.apply_ufunc(..., dask="parallelized")`` over
chunks of DCEs); the calibration of each DCE comes from the ``CalTable``
(one ``CalibrationSet`` per entry of the store's ``calibration_sets``),
indexed per DCE by the ``calset`` coordinate inside the kernel.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .. import __version__
from ..errors import BadInputError, CalibrationError
from ..io.fitsio import sha256_file
from ..schemas import load_schema
from .calib import BAND, SHAPE, load_calibration

log = logging.getLogger(__name__)

PIPELINE_VERSION = f"skyreduce {__version__}"
BCD_SCHEMA = "mips_bcd"
GROUPS = {1: "bcd24", 2: "bcd70", 3: "bcd160"}
RAW_GROUPS = {1: "mips24", 2: "mips70", 3: "mips160"}


def mask_bits() -> dict[str, int]:
    """BCD mask bits name -> value (schemas/mips_bcd.yaml ``mask_bits``)."""
    return dict(load_schema(BCD_SCHEMA)["mask_bits"])


# ---------------------------------------------------------------- calibration table
def check_calset(identity: dict, chnlnum: int):
    """Load one calibration set recorded at ingest -> (CalibrationSet or None, reason).

    ``identity``: {REFTYPE: {name, path, sha256, calvers}} from the group attribute
    ``calibration_sets``. Every file must exist and have the recorded SHA-256.
    """
    folders = set()
    for reftype, entry in sorted(identity.items()):
        path = Path(entry.get("path", entry["name"]))
        folders.add(path.parent)
        if not path.is_file():
            return None, f"calibration file {path} ({reftype}) is missing"
        sha = sha256_file(path)[0]
        if sha != entry["sha256"]:
            return None, (f"calibration file {path} ({reftype}) has SHA-256 {sha[:16]}..., not the "
                          f"{entry['sha256'][:16]}... recorded at ingest (file changed)")
    if len(folders) != 1:
        return None, f"calibration files of one set lie in several folders: {sorted(map(str, folders))}"
    folder = folders.pop()
    try:
        cs = load_calibration(folder, chnlnum)
    except (CalibrationError, BadInputError) as exc:
        return None, f"calibration set in {folder}: {exc}"
    recorded = {e["name"]: e["sha256"] for e in identity.values()}
    for f in cs.files:
        if recorded.get(f.name) != f.sha256:
            return None, f"calibration file {folder / f.name}: SHA-256 differs from the one recorded at ingest"
    bad = [k for k in ("gain", "rdnoise", "fluxconv", "satlevel") if not np.isfinite(getattr(cs, k))
           or getattr(cs, k) <= 0]
    if bad:
        return None, f"calibration set in {folder}: {', '.join(k.upper() for k in bad)} not finite and > 0"
    return cs, ""


@dataclass(frozen=True)
class CalTable:
    """The calibration sets of one array, indexed like the store's ``calibration_sets``.

    ``sets[k]`` is a CalibrationSet or None (then ``reasons[k]`` says why);
    ``identities[k]`` the recorded {REFTYPE: {name, sha256, calvers}}.
    """

    chnlnum: int
    sets: tuple
    reasons: tuple
    identities: tuple

    @classmethod
    def load(cls, calibration_sets, chnlnum):
        sets, reasons, idents = [], [], []
        for identity in calibration_sets:
            cs, reason = check_calset(identity, chnlnum)
            if reason:
                log.warning("MIPS %d um: %s", BAND[chnlnum], reason)
            sets.append(cs)
            reasons.append(reason)
            idents.append({k: {f: v[f] for f in ("name", "sha256", "calvers")} for k, v in identity.items()})
        return cls(chnlnum, tuple(sets), tuple(reasons), tuple(idents))

    @property
    def shape(self):
        return SHAPE[self.chnlnum]

    def image(self, name, *, fill=np.nan, dtype=np.float32) -> xr.DataArray:
        """(cset, y, x) stack of one image attribute ('nonlin': (cset, k, y, x), zero-padded in k);
        ``fill`` where a set is unusable."""
        arrays = [None if cs is None else np.asarray(getattr(cs, name)) for cs in self.sets]
        shape, dims = self.shape, ("cset", "y", "x")
        if name == "nonlin":
            k = max((a.shape[0] for a in arrays if a is not None), default=1)
            shape, dims = (k,) + self.shape, ("cset", "k", "y", "x")
        out = np.full((max(len(arrays), 1),) + shape, fill, dtype=dtype)
        for i, a in enumerate(arrays):
            if a is not None:
                out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
        return xr.DataArray(out, dims=dims)

    def scalar(self, name, *, fill=np.nan) -> xr.DataArray:
        """(cset,) float64 of one scalar attribute (fill where unusable or None)."""
        vals = [fill if cs is None or getattr(cs, name) is None else float(getattr(cs, name)) for cs in self.sets]
        return xr.DataArray(np.array(vals or [fill], dtype=np.float64), dims=("cset",))

    def checksums(self) -> list[str]:
        """['NAME sha256', ...] of every usable file (provenance)."""
        out = []
        for cs in self.sets:
            if cs is not None:
                out += [f"{f.name} {f.sha256}" for f in cs.files]
        return sorted(set(out))

    def main(self, calset_counts) -> int | None:
        """Index of the usable set used by most DCEs (None: none usable)."""
        usable = [k for k, cs in enumerate(self.sets) if cs is not None]
        if not usable:
            return None
        return max(usable, key=lambda k: calset_counts.get(k, 0))


# ---------------------------------------------------------------- provenance and dispatch
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


def per_dce(func, data, cal=None, outputs=(((), np.float32),), kwargs=None):
    """Map ``func`` over chunks of DCEs (lazy).

    ``data``: DataArrays whose first dim is ``dce`` (all other dims are core
    dims, passed whole); ``cal``: {name: DataArray (cset, ...)} passed whole as
    keyword arguments; ``outputs``: [(core dims, dtype)], each output (dce, *core).
    ``func(*arrays, **cal, **kwargs)`` returns one array or a tuple.
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
        dask_gufunc_kwargs={"allow_rechunk": False}, keep_attrs=False)
    return res


def take(table, calset):
    """Per-DCE rows of a (cset, ...) table for a chunk's ``calset`` (n,) (negative -> row 0, caller masks)."""
    return np.asarray(table)[np.clip(np.asarray(calset, dtype=np.int64), 0, None)]
