"""MIPS level-1 pipeline: assembling it computes nothing; chunking does not change the result;
the BCD groups written into the store match the schema and the lazy result."""
import dask
import numpy as np
import pytest
import xarray as xr

from reduce.io.store import Store
from reduce.mips.ingest import ingest_mips
from reduce.mips.pipeline import BcdParams, assemble, build_bcd, open_bcd, plan_bcd, reduce_mips, validate_bcd


@pytest.fixture(scope="module")
def store(tmp_path_factory, mips_raw):
    path = tmp_path_factory.mktemp("bcd_lazy") / "mips.zarr"
    summary = ingest_mips([mips_raw], path, report=lambda line: None)
    assert summary.exit_code == 0
    return path


@pytest.mark.parametrize("chnl", [1, 2, 3])
def test_assembling_computes_nothing(store, chnl, raise_if_dask_computes):
    plan = plan_bcd(store, chnl)              # the eager part: per-DCE metadata, calibration
    with raise_if_dask_computes():
        bcd, reports = assemble(plan)
        validate_bcd(bcd)
    assert reports == []
    for name in ("bcd", "unc", "mask"):
        assert isinstance(bcd[name].data, dask.array.Array)
        assert bcd[name].dims == ("dce", "y", "x")
    assert isinstance(bcd.status.data, dask.array.Array)
    steps = [eval_json(h)["step"] for h in bcd.attrs["history"]]
    assert steps[0] == ("si.replace_saturated" if chnl == 1 else "ramps.fit_ramps")
    assert steps[-1].endswith("make_mask")
    assert all(len(eval_json(h)["files"]) >= 5 for h in bcd.attrs["history"] if "files" in eval_json(h))


def eval_json(text):
    import json
    return json.loads(text)


@pytest.mark.parametrize("chnl", [1, 2, 3])
def test_chunked_equals_unchunked(store, chnl):
    with dask.config.set(scheduler="synchronous"):
        whole = build_bcd(store, chnl)[0].compute()
        parts = build_bcd(store, chnl, params=BcdParams(dce_chunk=2))[0].compute()
    xr.testing.assert_identical(whole, parts)
    assert (whole.status.values.astype(object) == "ok").all()
    finite = np.isfinite(whole.bcd.values)
    assert finite.mean() > 0.9
    assert np.array_equal(finite, np.isfinite(whole.unc.values))


def test_runner_tables_match_lazy_and_schema(tmp_path, store, mips_raw):
    import shutil
    path = tmp_path / "mips.zarr"
    shutil.copytree(store, path)
    before = Store(path).open_group("mips70").load()
    with dask.config.set(scheduler="synchronous"):
        lazy = build_bcd(path, 2)[0].compute()          # the whole array at once
    lines = []
    summary = reduce_mips(path, tmp_path / "out", report=lines.append)   # one unit per AOR and array
    assert summary.exit_code == 0, summary.text()
    assert summary.units == {"done": 6, "failed": 0, "excluded": 0}
    again = reduce_mips(path, tmp_path / "out", redo=True, report=lines.append)   # a re-run rewrites its slots
    assert again.ran == 6
    got = open_bcd(path, 2)                                  # validated against mips_bcd.yaml
    assert got.sizes["dce"] == lazy.sizes["dce"]
    xr.testing.assert_equal(got.load().drop_attrs(), lazy.drop_attrs())
    xr.testing.assert_identical(Store(path).open_group("mips70").load(), before)   # level 0 untouched
    for chnl in (1, 2, 3):
        assert (open_bcd(path, chnl).status.values.astype(object) == "ok").all()
    assert {f"{b} um BCDs" for b in (24, 70, 160)} <= set(summary.counts)
    assert summary.counts["70 um BCDs"] == lazy.sizes["dce"]
    assert "  70 um: 9 DCEs, 9 BCDs, 0 skipped" in summary.text()
