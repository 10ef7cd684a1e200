"""The rule that lets a store open as one ``xarray.open_datatree(STORE, engine="zarr")``.

A DataTree child group inherits the dimension (index) coordinates of its ancestors, and
xarray aligns each group with them exactly (``xr.align(child, ancestors, join="exact")``,
which also compares the sizes of dimensions without coordinates). So, in every store:

1. a group uses a dimension name that an ancestor group uses (in any variable, with or
   without a coordinate) only with the same fixed length: never an ancestor's growing
   dimension (size null; groups grow in separate commits), never another fixed size.
   A group with its own row count gets its own dimension name (SWAS housekeeping:
   ``hk_time``, not the root's ``time``);
2. where a group holds a coordinate of such a shared dimension, its values equal the
   ancestor's (better: do not write it, it is inherited);
3. no variable of a group (coordinate or data) is named like a dimension coordinate of
   an ancestor (SWAS root: ``time``, ``segment``, ``channel``, ``receiver``). xarray opens
   such a tree without complaint, but the group's Dataset then carries the ancestor's
   index on the group's variable (``sel`` on it fails). Shadowing an ancestor's
   non-index coordinate (SWAS ``hk/segment_id`` over the root's ``segment_id``) is
   allowed: only indexed coordinates are inherited by default, and with
   ``inherit="all_coords"`` the group's own variable wins.

:func:`datatree_problems` checks rules 1 and 3 on store schemas (rule 2 depends on values).
"""
from __future__ import annotations


def _ancestors(path: str) -> list[str]:
    parts = path.split("/") if path else []
    return ["/".join(parts[:i]) for i in range(len(parts))]


def datatree_problems(*schemas: dict) -> list[str]:
    """Where the groups of one store break the DataTree rule (empty list: none).

    Pass every schema whose groups live in the same store, e.g.
    ``datatree_problems(load_schema("swas_store"), load_schema("swas_level1"))``.
    """
    specs = {}
    for schema in schemas:
        for spec in schema["groups"]:
            specs.setdefault(spec["path"], spec)
    problems = []
    for path, spec in specs.items():
        used = {d for var in spec["variables"].values() for d in var["dims"]} | set(spec["dims"])
        for anc_path in _ancestors(path):
            anc = specs.get(anc_path)
            if anc is None:
                continue
            anc_dims = dict(anc["dims"])
            for var in anc["variables"].values():
                for d in var["dims"]:
                    anc_dims.setdefault(d, None)
            index_coords = {n for n, v in anc["variables"].items() if v["dims"] == [n]}
            where = f"group {path!r} (ancestor {anc_path or '/'!r})"
            for dim in sorted(used & set(anc_dims)):
                size = spec["dims"].get(dim)
                if anc_dims[dim] is None:
                    problems.append(f"{where}: reuses the growing dimension {dim!r}")
                elif size is None or dim in spec.get("growing", []):
                    problems.append(f"{where}: dimension {dim!r} has no fixed size, ancestor {anc_dims[dim]}")
                elif size != anc_dims[dim]:
                    problems.append(f"{where}: dimension {dim!r} has size {size}, ancestor {anc_dims[dim]}")
            for name in sorted(set(spec["variables"]) & index_coords):
                problems.append(f"{where}: variable {name!r} is named like the ancestor's coordinate")
    return problems
