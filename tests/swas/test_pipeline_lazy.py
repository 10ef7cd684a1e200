"""The SWAS pipeline builds graphs only; chunking does not change results; the run end to end."""

import json

import numpy as np
import pytest
import xarray as xr

from reduce.io.store import Store
from reduce.swas.ingest import ingest_swas
from reduce.swas.pipeline import build_level1, open_level1, plan_segments, reduce_swas
from reduce.swas.steps import calibrate, check, coadd, flag, pair


@pytest.fixture(scope="module")
def store(swas_raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("swas_lazy") / "swas.zarr"
    ingest_swas([swas_raw], path)
    return path


def test_whole_pipeline_assembles_without_computing(store, raise_if_dask_computes):
    ds = Store(store).open_group()
    plan = plan_segments(ds)  # eager by design: small metadata only
    assert plan.segs, "nothing planned"
    with raise_if_dask_computes():
        ds1 = check(ds, plan)
        pairs = flag(pair(ds1, plan), plan)
        co = coadd(pairs, plan)
        level1 = calibrate(co, pairs, plan)
    assert level1["ta"].chunks is not None
    assert level1.sizes["channel"] == 725
    # history records every step with its parameters
    hist = level1.attrs["history"]
    assert [h.split(":")[0] for h in hist] == ["check", "pair", "flag", "coadd", "calibrate"]
    assert "window_s=30.0" in hist[1]


def test_build_level1_is_lazy(store, raise_if_dask_computes):
    level1, reports = build_level1(store)  # the plan inside computes metadata; the data stay lazy
    with raise_if_dask_computes():
        ta = level1["ta"].data
        assert hasattr(ta, "dask")
        assert hasattr(level1["n_scans"].data, "dask")
    status = {r.segment: r.status for r in reports}
    assert status == {5001: "planned", 5002: "planned", 5003: "planned", 6001: "planned"}


def test_chunked_equals_unchunked(store):
    ds = Store(store).open_group()
    plan = plan_segments(ds)
    lazy = flag(pair(ds, plan), plan)
    small = flag(pair(ds.chunk({"time": 97}), plan), plan)
    eager = flag(pair(ds.load(), plan), plan)
    a, b, c = (x[["switched490", "switched550", "flag490", "flag550", "disp490", "profile550"]].compute()
               for x in (lazy, small, eager))
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(a, c)
    assert np.isfinite(a["switched490"].values).mean() > 0.99


def test_reduce_swas_end_to_end(store, tmp_path):
    lines = []
    summary = reduce_swas(store, tmp_path / "out", report=lines.append)
    assert summary.exit_code == 0, summary.text()
    assert summary.counts["coadds"] > 0
    text = summary.text()
    assert "segments: 4 reduced" in text
    log = (tmp_path / "out" / "reduction.log").read_text()
    for needle in ("check:", "pair:", "flag:", "coadd:", "calibrate:", "s0005001", "noise", "baseline"):
        assert needle in log
    for seg in (5001, 5002, 5003, 6001):                      # flag statistics of every segment
        assert f"s{seg} 490 GHz flags: noise " in log and f"s{seg} 550 GHz flags: noise " in log
    # the level-1 tables sit in the same store, which still opens and validates
    Store(store).open_group()
    co = open_level1(store)
    assert co.sizes["coadd"] == summary.counts["coadds"]
    assert set(np.unique(co["kind"].values)) == {"nominal", "total"}
    assert set(np.unique(co["band"].values)) == {"O2", "CI", "13CO", "H2O"}
    assert set(np.unique(co["segment"].values)) == {5001, 5002, 5003, 6001}
    pairs = open_level1(store, "pairs")
    assert {"flag490", "flag550", "flagstat490"} <= set(pairs.variables)
    assert json.loads(pairs.attrs["criteria"]) == ["noise", "spikes_fast", "baseline"]   # the default criteria
    # a re-run to another folder computes again: same content in the store
    summary2 = reduce_swas(store, tmp_path / "out2", report=lines.append)
    assert summary2.ran == 1
    co2 = open_level1(store)
    np.testing.assert_array_equal(co2["ta"].values, co["ta"].values)
    assert summary2.exit_code == 0
