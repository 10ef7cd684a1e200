"""Every ingested store opens as one xarray DataTree (issue 7, point 6).

``xr.open_datatree(STORE, engine="zarr")`` requires every group to align with the
coordinates it inherits from its ancestors; the rule the store schemas follow is in
reduce/io/datatree.py (checked statically below for every store schema).
"""
import dataclasses

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from reduce.io.datatree import datatree_problems
from reduce.io.store import Store, StoreWriter
from reduce.mips.ingest import ingest_mips
from reduce.schemas import load_schema, validate_group
from reduce.simulate.mips import simulate_mips
from reduce.simulate.mips_sed import plan_sed
from reduce.swas.ingest import ingest_swas

STORE_SCHEMAS = ["swas_store", "mips_store"]


@pytest.mark.parametrize("name", STORE_SCHEMAS)
def test_store_schemas_follow_the_datatree_rule(name):
    assert datatree_problems(load_schema(name)) == []


def test_the_rule_checker_finds_the_old_swas_layout():
    old = {"groups": [
        {"path": "", "growing": ["time"], "dims": {"time": None, "receiver": 2, "xyz": 3},
         "variables": {"time": {"dims": ["time"]}, "receiver": {"dims": ["receiver"]},
                       "scpos": {"dims": ["time", "xyz"]}}},
        {"path": "hk", "growing": ["time"], "dims": {"time": None},
         "variables": {"time": {"dims": ["time"]}, "tmix1": {"dims": ["time"]}}},
    ]}
    products = {"groups": [  # groups of another schema kept in the same store
        {"path": "level1", "growing": [], "dims": {"xyz": 3}, "variables": {"v": {"dims": ["xyz"]}}},
        {"path": "level1/coadds", "growing": [], "dims": {"coadd": None, "receiver": 3},
         "variables": {"receiver": {"dims": ["coadd"]}, "v": {"dims": ["coadd"]}}},
        {"path": "level1/segments", "growing": [], "dims": {"seg": None, "receiver": None, "xyz": 3},
         "variables": {"tsys": {"dims": ["seg", "receiver"]}, "p": {"dims": ["seg", "xyz"]}}},
    ]}
    assert datatree_problems(old, products) == [
        "group 'hk' (ancestor '/'): reuses the growing dimension 'time'",
        "group 'hk' (ancestor '/'): variable 'time' is named like the ancestor's coordinate",
        "group 'level1/coadds' (ancestor '/'): dimension 'receiver' has size 3, ancestor 2",
        "group 'level1/coadds' (ancestor '/'): variable 'receiver' is named like the ancestor's coordinate",
        "group 'level1/segments' (ancestor '/'): dimension 'receiver' has no fixed size, ancestor 2",
    ]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, swas_raw, mips_raw):
    root = tmp_path_factory.mktemp("datatree")
    assert ingest_swas([swas_raw], root / "swas.zarr", report=print).exit_code == 0
    # one small SED AOR too, so that every group of the MIPS store has rows
    simulate_mips(root / "sed", seed=2, specs=[],
                  sed_specs=[dataclasses.replace(plan_sed(1, seed=2)[0], n_cycles=1, exptime=3.0)])
    assert ingest_mips([mips_raw, root / "sed"], root / "mips.zarr", report=print).exit_code == 0
    return {"swas_store": root / "swas.zarr", "mips_store": root / "mips.zarr"}


def _dtype_ok(dtype, expected):
    dtype = np.dtype(dtype)
    return dtype.kind in "OUT" if expected == "str" else dtype == np.dtype(expected)


@pytest.mark.parametrize("name", STORE_SCHEMAS)
def test_ingested_store_opens_as_a_datatree(stores, name):
    path = stores[name]
    schema = load_schema(name)
    tree = xr.open_datatree(path, engine="zarr")
    assert set(tree.groups) == {"/" + spec["path"] for spec in schema["groups"]}
    store = Store(path)
    for spec in schema["groups"]:
        node = tree[spec["path"]] if spec["path"] else tree
        ds = node.to_dataset(inherit=False)  # the group's own variables
        assert set(ds.variables) == set(spec["variables"]), spec["path"]
        coords = set(spec["variables"]) - set(spec.get("data_variables", []))
        assert set(ds.coords) == coords and set(ds.data_vars) == set(spec.get("data_variables", []))
        for var_name, var in spec["variables"].items():
            assert list(ds[var_name].dims) == var["dims"], (spec["path"], var_name)
            assert _dtype_ok(ds[var_name].dtype, var["dtype"]), (spec["path"], var_name, ds[var_name].dtype)
            if var["dims"] == [var_name]:
                assert var_name in ds.indexes  # a dimension coordinate
        for dim, size in spec["dims"].items():
            assert ds.sizes[dim] > 0 if size is None else ds.sizes[dim] == size
        validate_group(ds, schema, spec["path"])  # units, flags, chunks as well
        if spec["variables"]:
            xr.testing.assert_identical(ds, store.open_group(spec["path"]).load())
            xr.testing.assert_identical(ds, xr.open_zarr(path, group=spec["path"] or None).load())
        node.dataset  # the view with the inherited coordinates builds
        node.to_dataset(inherit="all_coords")


def test_swas_datatree_values(stores, swas_raw):
    tree = xr.open_datatree(stores["swas_store"], engine="zarr")
    store = Store(stores["swas_store"])
    root, hk = store.open_group(""), store.open_group("hk")
    for name in ("aos490", "time", "scantype", "object", "first_scan"):
        np.testing.assert_array_equal(tree[name].values, root[name].values)
    for name in ("hk_time", "segment_id", "tmix1", "ibias2"):
        np.testing.assert_array_equal(tree["hk"][name].values, hk[name].values)
    files = sorted(swas_raw.rglob("swas_lh_*.fits"))
    np.testing.assert_array_equal(tree["hk/hk_time"].values,
                                  np.concatenate([fits.getdata(f, "HK")["TIME"] for f in files]))
    # the housekeeping node sees the scans' index coordinates and its own time axis
    view = tree["hk"].dataset
    assert view.sizes["hk_time"] == hk.sizes["hk_time"] and view.sizes["time"] == root.sizes["time"]
    assert hk.sizes["hk_time"] != root.sizes["time"]
    np.testing.assert_array_equal(view["time"].values, root.time.values)
    # housekeeping values at the scans' times, within one xarray object
    seg = int(root.segment[0])
    t = tree["hk"].sel(hk_time=slice(*tree.time.where(tree.segment_id == seg, drop=True).values[[0, -1]]))
    assert (t.segment_id.values == seg).all() and t.sizes["hk_time"] > 0


def test_mips_datatree_values(stores):
    tree = xr.open_datatree(stores["mips_store"], engine="zarr")
    store = Store(stores["mips_store"])
    for group, bulk in (("mips24", "raw"), ("mips70", "reads"), ("mips160", "reads")):
        ds = store.open_group(group)
        for name in (bulk, "time", "dceid", "object", "calset"):
            np.testing.assert_array_equal(tree[group][name].values, ds[name].values)
        assert tree[group].attrs["calibration_sets"] == ds.attrs["calibration_sets"]
        assert tree[group].attrs["chnlnum"] == ds.attrs["chnlnum"]


@pytest.mark.parametrize("name", STORE_SCHEMAS)
def test_new_empty_store_opens_as_a_datatree(tmp_path, name):
    with StoreWriter(tmp_path / "s.zarr", name):
        pass
    tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr")
    schema = load_schema(name)
    assert set(tree.groups) == {"/" + spec["path"] for spec in schema["groups"]}
