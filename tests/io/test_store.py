"""The store: creation from the schema, validation, lock, commit and recovery."""
import json

import numpy as np
import pytest
import zarr

from reduce.errors import SchemaError, StoreLockedError
from reduce.io.store import Store, StoreWriter, chunk_ranges
from reduce.schemas import group_spec, load_schema, validate_group

CHUNK = group_spec(load_schema("swas_store"), "")["variables"]["aos490"]["chunks"][0]


def test_chunk_ranges_split_at_chunk_boundaries():
    assert chunk_ranges(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_ranges(5, 13, 4) == [(5, 8), (8, 12), (12, 13)]
    assert chunk_ranges(4, 8, 4) == [(4, 8)]
    assert chunk_ranges(3, 3, 4) == []


@pytest.mark.parametrize("schema", ["swas_store", "mips_store"])
def test_new_store_follows_its_schema(tmp_path, schema):
    with StoreWriter(tmp_path / "s.zarr", schema):
        pass
    store = Store(tmp_path / "s.zarr")
    for spec in store.schema["groups"]:
        if spec["variables"]:
            ds = store.open_group(spec["path"])  # validates
            for dim in spec["growing"]:
                assert ds.sizes[dim] == 0
    assert store.ledger() == [] and store.quarantine() == []


def test_fixed_coordinates_are_written(tmp_path):
    with StoreWriter(tmp_path / "s.zarr", "swas_store"):
        pass
    ds = Store(tmp_path / "s.zarr").open_group("")
    np.testing.assert_array_equal(ds.channel.values, np.arange(725))
    np.testing.assert_array_equal(ds.receiver.values, [490, 550])


def test_swas_housekeeping_has_its_own_time_axis(tmp_path):
    with StoreWriter(tmp_path / "s.zarr", "swas_store"):
        pass
    hk = Store(tmp_path / "s.zarr").open_group("hk")
    assert dict(hk.sizes) == {"hk_time": 0} and "hk_time" in hk.indexes and "time" not in hk.variables
    assert Store(tmp_path / "s.zarr").read_state()["lengths"] == {"time": 0, "segment": 0, "hk/hk_time": 0}


@pytest.mark.parametrize("version, message", [
    (1, r"s.zarr is a swas_store store of schema version 1; this skyreduce \S+ reads version 2 "
        r"\(version 2: group hk: dimension and coordinate 'time' renamed 'hk_time' .*\): "
        r"ingest the raw files again into a new store$"),
    (3, r"s.zarr is a swas_store store of schema version 3, newer than the version 2 this skyreduce \S+ "
        r"reads: upgrade skyreduce$"),
])
def test_store_of_another_schema_version_is_refused_readably(tmp_path, version, message):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, "swas_store"):
        pass
    state = json.loads((path / ".skyreduce" / "state.json").read_text())
    (path / ".skyreduce" / "state.json").write_text(json.dumps({**state, "schema_version": version}))
    for group in ("", "hk"):
        with pytest.raises(SchemaError, match=message):
            Store(path).open_group(group)
    with pytest.raises(SchemaError, match=message):
        StoreWriter(path, "swas_store").__enter__()
    Store(path).open_group("hk", validate=False)  # raw access stays possible


def test_validation_names_the_variable_and_problem(tmp_path):
    with StoreWriter(tmp_path / "s.zarr", "swas_store"):
        pass
    ds = Store(tmp_path / "s.zarr").open_group("")
    schema = load_schema("swas_store")
    with pytest.raises(SchemaError, match=r"variable aos490 missing"):
        validate_group(ds.drop_vars("aos490"), schema, "")
    bad = ds.assign(inttime=ds.inttime.astype("float64"))
    with pytest.raises(SchemaError, match=r"variable inttime has dtype float64, expected float32"):
        validate_group(bad, schema, "")
    bad = ds.copy()
    bad["time"].attrs["units"] = "s"
    with pytest.raises(SchemaError, match=r"variable time has units 's', expected 'd'"):
        validate_group(bad, schema, "")


def test_opening_a_store_validates_it(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, "swas_store"):
        pass
    zarr.open_array(path / "inttime", mode="r+").attrs["units"] = "min"
    zarr.consolidate_metadata(path)
    with pytest.raises(SchemaError, match="inttime has units 'min'"):
        Store(path).open_group("")


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, "swas_store"):
        with pytest.raises(StoreLockedError, match=r"being written by another skyreduce process \(pid \d+ on "):
            StoreWriter(path, "swas_store").__enter__()
    with StoreWriter(path, "swas_store"):  # free again
        pass


def test_uncommitted_append_is_cut_back(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, "swas_store") as w:
        w.resize({"time": 20000})
        w.write_rows("", "inttime", 0, np.full(20000, 2.0, np.float32))
        w.commit(lengths={"time": 20000}, ledger=[{"name": "a", "sha256": "1", "key": "a"}], quarantine=[])
    with StoreWriter(path, "swas_store") as w:  # a "killed" append: arrays and ledger grown, no commit
        w.resize({"time": 3 * CHUNK})
        w.write_rows("", "inttime", 20000, np.full(20000, 1.0, np.float32))
        w.write_rows("", "aos490", 0, np.ones((3 * CHUNK, 725), np.float32))
        with open(w.meta / "ledger.jsonl", "a") as f:
            f.write(json.dumps({"name": "b", "sha256": "2", "key": "b"}) + "\n")
    store = Store(path)
    assert store.open_group("").sizes["time"] == 20000  # readers see the committed state
    with StoreWriter(path, "swas_store"):  # the next writer recovers
        pass
    assert zarr.open_array(path / "inttime").shape == (20000,)
    assert zarr.open_array(path / "aos490").shape == (20000, 725)
    # chunks wholly beyond the commit (20000 rows) are gone; the one holding row 19999 stays
    kept = [str(i) for i in range(-(-20000 // CHUNK))]
    assert sorted(p.name for p in (path / "aos490" / "c").iterdir()) == kept
    assert [e["name"] for e in Store(path).ledger()] == ["a"]


def test_not_a_store(tmp_path):
    with pytest.raises(SchemaError, match="not a skyreduce store"):
        Store(tmp_path)
