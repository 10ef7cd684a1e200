"""The one runner (reduce.runner) with both pipelines: units, slots, records, resume, failures.

The real ``skyreduce reduce`` command is SIGKILLed (whole process group: the command and
its local workers) at a random moment after some units were recorded; the rerun must do
only the units not yet done and end with store groups and products identical (apart from
DATE and the FITS checksum cards) to an uninterrupted run.
"""
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import fits_products

from reduce.mips.pipeline import MipsBcd, open_bcd, reduce_mips
from reduce.runner import read_records
from reduce.runner.core import records_dir
from reduce.swas.pipeline import Params, SwasLevel1, open_level1, reduce_swas

SKYREDUCE = str(Path(sys.executable).with_name("skyreduce"))


LEVEL = {"swas": [], "mips": ["--level", "1"]}   # the runner's own tests: level 1 (BCDs) only


def _cli(*args):
    return [SKYREDUCE, *map(str, args), "--workers", "2", "--threads-per-worker", "1", "--no-dashboard", "-q"]


def _run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True, **kw)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Ingested stores with several units each: 2 SWAS days (24 segments), 2 MIPS AORs (3 arrays)."""
    root = tmp_path_factory.mktemp("runner")
    for instrument, opt in (("swas", ["--days", "2"]), ("mips", ["--aors", "2"])):
        r = _run(_cli("simulate", instrument, root / "raw" / instrument, *opt))
        assert r.returncode == 0, r.stderr
        r = _run(_cli("ingest", instrument, root / "raw" / instrument, "--store", root / f"{instrument}.zarr"))
        assert r.returncode == 0, r.stderr
    return root


def _copy(stores, instrument, dest):
    path = dest / f"{instrument}.zarr"
    shutil.copytree(stores / f"{instrument}.zarr", path)
    return path


def _group_files(store, prefixes):
    """{relative path: bytes} of every file of the runner's store groups."""
    out = {}
    for prefix in prefixes:
        for p in sorted((store / prefix).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(store))] = p.read_bytes()
    return out


def _differing(a, b):
    """Paths whose bytes differ, or that only one of two {path: bytes} holds (short failure messages)."""
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


GROUPS = {"swas": ["level1"], "mips": ["bcd24", "bcd70", "bcd160", "bcd_units"]}


@pytest.fixture(scope="module")
def uninterrupted(stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    out = {}
    for instrument in ("swas", "mips"):
        store = _copy(stores, instrument, root)
        r = _run(_cli("reduce", instrument, *LEVEL[instrument], "--store", store, "--out", root / f"out-{instrument}"))
        assert r.returncode == 0, r.stdout + r.stderr
        out[instrument] = (store, root / f"out-{instrument}", r.stdout)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("instrument", ["swas", "mips"])
def test_killed_at_random_moment_then_rerun_equals_uninterrupted(stores, uninterrupted, tmp_path, instrument):
    ref_store, ref_out, _ = uninterrupted[instrument]
    n_units = len(read_records(ref_store, {"swas": "swas_level1", "mips": "mips_bcd"}[instrument]))
    assert n_units >= 4
    store = _copy(stores, instrument, tmp_path)
    out = tmp_path / "out"
    name = {"swas": "swas_level1", "mips": "mips_bcd"}[instrument]
    rng = random.Random(instrument)
    want = rng.randint(1, n_units - 2)          # kill after this many units were recorded
    proc = subprocess.Popen(_cli("reduce", instrument, *LEVEL[instrument], "--store", store, "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        folder = records_dir(store, name)
        if folder.is_dir() and len(list(folder.glob("*.json"))) >= want:
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.5))
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_records(store, name))
    assert 0 < done_before < n_units
    r = _run(_cli("reduce", instrument, *LEVEL[instrument], "--store", store, "--out", out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({n_units - done_before} run now, {done_before} done before)" in r.stdout, r.stdout
    got, want_files = _group_files(store, GROUPS[instrument]), _group_files(ref_store, GROUPS[instrument])
    assert _differing(got, want_files) == [], "store files differ from the uninterrupted run"
    assert fits_products(out) == fits_products(ref_out)
    assert not list(Path(out).rglob(".*.tmp")), "temporary files left behind"


def test_rerun_skips_done_units_and_redo_recomputes(stores, tmp_path):
    store = _copy(stores, "mips", tmp_path)
    first = reduce_mips(store, tmp_path / "out", report=print)
    n = sum(first.units.values())
    assert first.exit_code == 0 and first.ran == n and n == 6    # 2 AORs x 3 arrays
    again = reduce_mips(store, tmp_path / "out", report=print)
    assert (again.ran, again.skipped) == (0, n)
    assert again.counts == first.counts and again.files == first.files
    redo = reduce_mips(store, tmp_path / "out", redo=True, report=print)
    assert redo.ran == n


def test_changed_parameters_recompute_every_unit(stores, tmp_path):
    store = _copy(stores, "swas", tmp_path)
    first = reduce_swas(store, tmp_path / "out", report=print)
    n = sum(first.units.values())
    assert first.exit_code == 0, first.text()
    assert n >= 4
    p = Params()
    changed = dataclasses.replace(p, coadd=dataclasses.replace(p.coadd, position_tol_arcmin=0.6))
    assert SwasLevel1(changed).params_hash() != SwasLevel1(p).params_hash()
    second = reduce_swas(store, tmp_path / "out", params=changed, report=print)
    assert second.ran == n


@pytest.mark.parametrize("damage", ["partly", "gone"])
def test_units_group_lost_in_a_crash_is_rebuilt_from_the_records(uninterrupted, tmp_path, damage):
    """A run killed while it rewrote the units group (it is replaced whole, at the start and at the
    end of every run) leaves it partly written or absent: the rerun takes every unit's slot from
    its record, recomputes nothing and ends with the same store tables as the uninterrupted run."""
    ref_store, ref_out, _ = uninterrupted["mips"]
    store = tmp_path / "mips.zarr"
    shutil.copytree(ref_store, store)
    shutil.copytree(ref_out, tmp_path / "out")
    for rec in records_dir(store, "mips_bcd").glob("*.json"):     # the products' folder moved with them
        rec.write_text(rec.read_text().replace(json.dumps(str(ref_out)), json.dumps(str(tmp_path / "out"))))
    units = store / "bcd_units"
    if damage == "partly":
        for name in ("unit_key", "bcd24_start", "bcd160_capacity"):
            shutil.rmtree(units / name)
    else:
        shutil.rmtree(units)
    r = _run(_cli("reduce", "mips", *LEVEL["mips"], "--store", store, "--out", tmp_path / "out"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(0 run now, 6 done before)" in r.stdout, r.stdout
    got, want = _group_files(store, GROUPS["mips"]), _group_files(ref_store, GROUPS["mips"])
    assert _differing(got, want) == []


def test_slots_are_whole_chunks_and_never_overlap(uninterrupted):
    for instrument, pipeline in (("swas", SwasLevel1()), ("mips", MipsBcd())):
        store = uninterrupted[instrument][0]
        for table in pipeline.tables():
            units = xr.open_zarr(store, group={"swas": "level1/units", "mips": "bcd_units"}[instrument],
                                 consolidated=False).load()
            start, cap = units[f"{table.name}_start"].values, units[f"{table.name}_capacity"].values
            count = units[f"{table.name}_count"].values
            used = cap > 0
            assert (start[used] % table.chunk == 0).all() and (cap[used] % table.chunk == 0).all()
            assert (count <= cap).all()
            order = np.argsort(start[used])
            s, c = start[used][order], cap[used][order]
            assert (s[1:] >= s[:-1] + c[:-1]).all(), f"{table.path}: two units share rows"


def test_tables_hold_every_unit_rows_and_open_with_datatree(uninterrupted):
    store, _, stdout = uninterrupted["swas"]
    co = open_level1(store, "coadds")
    recs = read_records(store, "swas_level1")
    assert co.sizes["coadd"] == sum(r["counts"]["coadds"] for r in recs.values())
    assert (co["n_scans"].values > 0).all()
    assert np.isfinite(co["tsys"].values).all()
    scans = open_level1(store, "scans")
    np.testing.assert_array_equal(np.sort(scans["scan_row"].values), np.arange(scans.sizes["scan"]))
    tree = xr.open_datatree(store, engine="zarr")
    assert tree["level1/coadds"].ds.sizes["channel"] == 725
    mstore = uninterrupted["mips"][0]
    tree = xr.open_datatree(mstore, engine="zarr")
    assert "bcd70" in tree.children
    for chnl in (1, 2, 3):
        b = open_bcd(mstore, chnl)
        assert (b.status.values.astype(object) == "ok").all()
        assert b.sizes["dce"] == xr.open_zarr(mstore, group={1: "mips24", 2: "mips70", 3: "mips160"}[chnl],
                                              consolidated=False).sizes["dce"]


def test_export_failure_is_one_reported_failure_and_the_rest_is_written(stores, tmp_path):
    store = _copy(stores, "swas", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "omc-1").write_text("a file where the OMC-1 target folder should be\n")
    summary = reduce_swas(store, out, report=print)
    assert summary.exit_code == 1
    bad = [p for p in summary.problems if "OMC-1" in p and "export failed" in p]
    assert bad, summary.problems
    assert summary.units["failed"] >= 1                    # the unit(s) holding OMC-1: --redo-failed retries them
    assert all("OMC-1" in p or "export: " in p for p in summary.problems), summary.problems
    others = [d for d in out.iterdir() if d.is_dir()]
    assert len(others) >= 2 and all(list((d / "class").glob("*.fits")) for d in others)
    assert (out / "targets.tsv").is_file() and "omc-1" not in (out / "targets.tsv").read_text().split()
    assert "export failed" in (out / "reduction.log").read_text()
    (out / "omc-1").unlink()                               # the obstacle removed: only the failed units again
    fixed = reduce_swas(store, out, redo_failed=True, report=print)
    assert fixed.exit_code == 0 and fixed.ran == summary.units["failed"]
    assert list((out / "omc-1" / "class").glob("*.fits"))


def test_store_write_failure_reaches_the_exit_code(stores, tmp_path, monkeypatch):
    from reduce.runner import core as run_module
    store = _copy(stores, "mips", tmp_path)
    real = run_module.write_slot

    def failing(store_, table, start, capacity, rows):
        if table.name == "bcd70":
            raise OSError("disk full (injected)")
        return real(store_, table, start, capacity, rows)

    monkeypatch.setattr(run_module, "write_slot", failing)
    summary = reduce_mips(store, tmp_path / "out", report=print)
    assert summary.exit_code == 1
    assert summary.units["failed"] == 2
    assert all("store write: OSError: disk full (injected)" in p for p in summary.problems), summary.problems
    assert summary.counts["24 um BCDs"] > 0 and list((tmp_path / "out").glob("SPITZER_M1_*_bcd.fits"))
    assert not list((tmp_path / "out").glob("SPITZER_M2_*"))
    monkeypatch.setattr(run_module, "write_slot", real)
    again = reduce_mips(store, tmp_path / "out", report=print)
    assert again.exit_code == 1 and again.ran == 0          # failed units are not retried by default
    fixed = reduce_mips(store, tmp_path / "out", redo_failed=True, report=print)
    assert fixed.exit_code == 0 and fixed.ran == 2
    assert list((tmp_path / "out").glob("SPITZER_M2_*_bcd.fits"))


def test_appended_day_recomputes_only_units_whose_inputs_changed(swas_raw, tmp_path):
    """Day 6 appended to a store reduced with day 5: its segments join the last unit (same
    store chunk), whose input hash changes: that unit is redone, into a larger slot."""
    from reduce.swas.ingest import ingest_swas
    store = tmp_path / "swas.zarr"
    ingest_swas([swas_raw / "day5"], store)
    first = reduce_swas(store, tmp_path / "out", report=print)
    assert first.exit_code == 0 and first.counts["segments reduced"] == 3
    key = next(iter(read_records(store, "swas_level1")))
    h5 = read_records(store, "swas_level1")[key]["input_hash"]
    again = reduce_swas(store, tmp_path / "out", report=print)
    assert again.ran == 0
    ingest_swas([swas_raw / "day6"], store)
    third = reduce_swas(store, tmp_path / "out", report=print)
    assert third.ran == 1 and third.exit_code == 0
    assert read_records(store, "swas_level1")[key]["input_hash"] != h5
    co = open_level1(store)
    assert set(np.unique(co["segment"].values)) == {5001, 5002, 5003, 6001}
    assert co.sizes["coadd"] == third.counts["coadds"]


def test_a_unit_whose_sizing_raises_is_one_failure_on_a_cluster(stores, tmp_path, monkeypatch):
    """A task that raises on a worker (here: planning a unit) fails that unit only, with its reason."""
    import cluster
    store = _copy(stores, "swas", tmp_path)
    units = SwasLevel1().units(store)
    bad = units[1].key

    class Broken(SwasLevel1):
        def size_unit(self, store_, unit):
            if unit.key == bad:
                raise ValueError("metadata unreadable (injected)")
            return super().size_unit(store_, unit)

    from reduce.runner import run
    with cluster.connect(n_workers=1, threads_per_worker=1, processes=False, dashboard=False) as client:
        summary = run(Broken(), store, tmp_path / "out", client=client, report=print)
    assert summary.exit_code == 1 and summary.units["failed"] == 1
    assert summary.problems == [f"unit {units[1].label}: sizing: ValueError: metadata unreadable (injected)"]
    assert summary.units["done"] == len(units) - 1
    rec = read_records(store, "swas_level1")[bad]
    assert rec["status"] == "failed" and "injected" in rec["reason"]
