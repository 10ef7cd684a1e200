"""Declarative schemas (``schemas/*.yaml``): load them, validate level-0 FITS and stores.

Level-0 schemas describe a FITS format (HDUs, keywords, columns, images);
store schemas describe a zarr store (groups, dims, variables, dtypes, units,
chunks, flag values, required attributes). Every violation is reported with the
file/HDU/keyword or group/variable it concerns.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from .errors import BadInputError, SchemaError

# The top-level schemas/ folder, installed as the data package reduce._schemas (see setup.py).
SCHEMA_PACKAGE = "reduce._schemas"

_KEYWORD_TYPES = {
    "str": (str,),
    "int": (int, np.integer),
    "float": (float, int, np.floating, np.integer),
}
# FITS binary-table format letters by kind of value
_FORMAT_KINDS = {"D": "f", "E": "f", "J": "i", "I": "i", "K": "i", "B": "i", "A": "S", "L": "b"}


@functools.cache
def schema_dir():
    """The folder of the YAML schemas (an importlib.resources Traversable).

    Installed (wheel or editable): the package ``reduce._schemas``. Imported from a
    checkout that was never installed (or installed before that package existed):
    the checkout's ``schemas/`` folder.
    """
    try:
        return resources.files(SCHEMA_PACKAGE)
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[1] / "schemas"
        if checkout.is_dir():
            return checkout
        raise SchemaError(f"the schemas are not installed (no package {SCHEMA_PACKAGE}); "
                          "reinstall skyreduce") from None


@functools.cache
def load_schema(name: str) -> dict:
    """The schema ``schemas/<name>.yaml`` as a dict (cached; do not mutate)."""
    path = schema_dir() / f"{name}.yaml"
    if not path.is_file():
        raise SchemaError(f"no schema named {name!r} (looked for {path})")
    with path.open() as f:
        schema = yaml.safe_load(f)
    if schema.get("schema") != name:
        raise SchemaError(f"{path}: 'schema' is {schema.get('schema')!r}, expected {name!r}")
    return schema


# ---------------------------------------------------------------- level-0 FITS
def check_keywords(header, spec: dict, where: str, *, chnlnum=None, aot=None) -> list[str]:
    """Problems of ``header`` against a ``keywords`` mapping of a level-0 schema.

    A rule with ``channels`` (``aot``) applies only to those CHNLNUMs (AOT_TYPEs) when ``chnlnum``
    (``aot``) is given; without it, to every file.
    """
    problems = []
    for key, rule in spec.items():
        if chnlnum is not None and "channels" in rule and chnlnum not in rule["channels"]:
            continue
        if aot is not None and "aot" in rule and aot not in rule["aot"]:
            continue
        if key not in header:
            if not rule.get("optional"):
                problems.append(f"{where}: keyword {key} missing")
            continue
        value = header[key]
        kinds = _KEYWORD_TYPES.get(rule.get("type", "any"))
        if kinds and (not isinstance(value, kinds) or isinstance(value, bool)):
            problems.append(f"{where}: keyword {key} = {value!r} is not of type {rule['type']}")
            continue
        if "value" in rule and value != rule["value"]:
            problems.append(f"{where}: keyword {key} = {value!r}, expected {rule['value']!r}")
        if "enum" in rule and value not in rule["enum"]:
            problems.append(f"{where}: keyword {key} = {value!r}, expected one of {rule['enum']}")
        if isinstance(value, (int, float, np.number)):
            if not np.isfinite(value):
                problems.append(f"{where}: keyword {key} = {value!r} is not finite")
            elif "min" in rule and value < rule["min"]:
                problems.append(f"{where}: keyword {key} = {value!r} below {rule['min']}")
            elif "max" in rule and value > rule["max"]:
                problems.append(f"{where}: keyword {key} = {value!r} above {rule['max']}")
    return problems


def check_columns(hdu, spec: dict, where: str) -> list[str]:
    """Problems of a binary-table HDU against a ``columns`` mapping."""
    problems = []
    columns = {c.name.upper(): c for c in hdu.columns}
    for name, rule in spec.items():
        col = columns.get(name)
        if col is None:
            if not rule.get("optional"):
                problems.append(f"{where}: column {name} missing")
            continue
        match = re.fullmatch(r"(\d*)([A-Z])", str(col.format).strip())
        if match is None:
            problems.append(f"{where}: column {name} has unsupported format {col.format}")
            continue
        repeat, letter = int(match.group(1) or 1), match.group(2)
        want = rule["format"]
        if _FORMAT_KINDS.get(letter) != _FORMAT_KINDS.get(want):
            problems.append(f"{where}: column {name} has format {col.format}, expected {want}")
        elif want != "A" and repeat != rule.get("repeat", 1):
            problems.append(f"{where}: column {name} has {repeat} elements per row, expected {rule.get('repeat', 1)}")
    return problems


def validate_level0(hdul, schema: dict, path) -> None:
    """Check an open HDUList against a level-0 schema with ``hdus``.

    Raises BadInputError naming the file, HDU and keyword/column at the first
    problems found (all problems of the file in one line).
    """
    problems = []
    for spec in schema["hdus"]:
        name = spec["name"]
        try:
            hdu = hdul[spec["index"]] if "index" in spec else hdul[name]
        except (KeyError, IndexError):
            problems.append(f"HDU {name} missing")
            continue
        where = f"HDU {name}"
        problems += check_keywords(hdu.header, spec.get("keywords", {}), where)
        if spec["kind"] == "bintable":
            if not hasattr(hdu, "columns"):
                problems.append(f"{where} is not a binary table")
            else:
                problems += check_columns(hdu, spec["columns"], where)
        elif spec["kind"] == "image":
            shape = tuple(hdu.header.get(f"NAXIS{i}") for i in range(hdu.header.get("NAXIS", 0), 0, -1))
            if hdu.header.get("BITPIX") != -32 and spec["dtype"] == "float32":
                problems.append(f"{where}: BITPIX {hdu.header.get('BITPIX')}, expected -32 (float32)")
            want = tuple(hdul[0].header.get(s) if isinstance(s, str) else s for s in spec["shape"])
            if shape != want:
                problems.append(f"{where}: shape {shape}, expected {want}")
    if problems:
        raise BadInputError(path, "; ".join(problems))


# ---------------------------------------------------------------- stores
def group_spec(schema: dict, group: str) -> dict:
    """The spec of one group ('' for the root) of a store schema."""
    for spec in schema["groups"]:
        if spec["path"] == group:
            return spec
    raise SchemaError(f"schema {schema['schema']} has no group {group!r}")


def _dtype_matches(actual, expected: str) -> bool:
    actual = np.dtype(actual)
    if expected == "str":
        return actual.kind in "OUT"
    return actual == np.dtype(expected)


def validate_group(ds, schema: dict, group: str = "", *, check_chunks: bool = True) -> None:
    """Check an xarray Dataset (one store group) against the store schema.

    Raises SchemaError listing every problem, each naming the variable.
    """
    spec = group_spec(schema, group)
    where = f"store group {group or '/'}"
    problems = []
    required = schema.get("required_attrs", []) if group == "" else schema.get("group_required_attrs", [])
    for attr in required:
        if attr not in ds.attrs:
            problems.append(f"{where}: attribute {attr!r} missing")
    if group == "" and ds.attrs.get("schema_version", schema["version"]) != schema["version"]:
        problems.append(f"{where}: schema_version {ds.attrs.get('schema_version')}, expected {schema['version']}")
    for dim, size in spec["dims"].items():
        if size is not None and ds.sizes.get(dim, size) != size:
            problems.append(f"{where}: dimension {dim} has size {ds.sizes[dim]}, expected {size}")
    for name, var in spec["variables"].items():
        if name not in ds.variables:
            problems.append(f"{where}: variable {name} missing")
            continue
        have = ds.variables[name]
        if list(have.dims) != var["dims"]:
            problems.append(f"{where}: variable {name} has dims {list(have.dims)}, expected {var['dims']}")
        if not _dtype_matches(have.dtype, var["dtype"]):
            problems.append(f"{where}: variable {name} has dtype {have.dtype}, expected {var['dtype']}")
        if "units" in var and have.attrs.get("units") != var["units"]:
            problems.append(f"{where}: variable {name} has units {have.attrs.get('units')!r}, expected {var['units']!r}")
        for flag_attr in ("flag_values", "flag_masks", "flag_meanings"):
            if flag_attr in var and _as_list(have.attrs.get(flag_attr)) != _as_list(var[flag_attr]):
                problems.append(f"{where}: variable {name} has {flag_attr} {have.attrs.get(flag_attr)!r}, "
                                f"expected {var[flag_attr]!r}")
        chunks = have.encoding.get("chunks")
        if check_chunks and chunks is not None and tuple(chunks) != tuple(var["chunks"]):
            problems.append(f"{where}: variable {name} has chunks {tuple(chunks)}, expected {tuple(var['chunks'])}")
    if problems:
        raise SchemaError("; ".join(problems))


def _as_list(value):
    if isinstance(value, str):
        return value
    if value is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in np.atleast_1d(value)]


def flag_codes(schema: dict, group: str, variable: str) -> dict[str, int]:
    """Mapping meaning -> code of a flag-coded variable (flag_values or flag_masks)."""
    var = group_spec(schema, group)["variables"][variable]
    values = var.get("flag_values", var.get("flag_masks"))
    return dict(zip(var["flag_meanings"].split(), values))
