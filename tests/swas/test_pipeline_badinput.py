"""Bad input to the SWAS pipeline: each bad segment gets one clear reason and no product,
the others are reduced."""

import shutil

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from reduce.io.store import Store
from reduce.simulate.swas import simulate_swas
from reduce.simulate.swas_plan import make_spec
from reduce.swas.ingest import ingest_swas
from reduce.swas.pipeline import compute_level1, open_level1, reduce_swas


def _edit(path, fn):
    with fits.open(path) as h:
        h = fits.HDUList([x.copy() for x in h])
    fn(h)
    h.writeto(path, overwrite=True, checksum=True)   # fresh sums: the edit is what is bad, not the sums


@pytest.fixture(scope="module")
def bad_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("swas_bad")
    specs = [make_spec(8, 1, "W3(OH)", "NOD", 300, start_s=300.0),
             make_spec(8, 2, "SGRA", "NOD", 300, start_s=1500.0, with_cal=False),
             make_spec(8, 3, "OMC-1", "NOD", 300, start_s=2500.0, with_comb=False),
             make_spec(8, 4, "IC443B", "NOD", 300, start_s=3500.0),
             make_spec(8, 5, "W3(OH)", "CHOP", 300, start_s=4500.0),
             make_spec(8, 6, "OMC-1", "NOD", 300, start_s=5500.0, with_zero=False)]
    simulate_swas(root / "raw", specs=specs, seed=5)

    def only_off(h):
        st = np.char.strip(h["SCANS"].data["SCANTYPE"].astype(str))
        h["SCANS"].data["SCANTYPE"] = np.where(st == "ON", "OFF", st)

    def all_flagged(h):
        h["SCANS"].data["QUALITY"] = h["SCANS"].data["QUALITY"] | 1

    _edit(root / "raw" / "swas_lh_0008_004.fits", only_off)
    _edit(root / "raw" / "swas_lh_0008_005.fits", all_flagged)
    ingest_swas([root / "raw"], root / "swas.zarr")
    return root / "swas.zarr"


EXPECT = {8002: "CAL", 8003: "COMB", 8004: "no usable ON", 8005: "every scan flagged", 8006: "ZERO"}


def test_bad_segments_reported_rest_reduced(bad_store, tmp_path):
    lines = []
    summary = reduce_swas(bad_store, tmp_path / "out", report=lines.append)
    assert summary.exit_code == 1
    assert summary.counts["segments reduced"] == 1 and summary.counts["coadds"] > 0
    for seg, word in EXPECT.items():
        name = f"s{seg // 1000:04d}{seg % 1000:03d}"
        problem = [p for p in summary.problems if p.startswith(name)]
        assert len(problem) == 1 and ": failed: " in problem[0] and word in problem[0], summary.problems
        assert any(name in x and word in x for x in lines), lines      # reported as the run goes
    log = (tmp_path / "out" / "reduction.log").read_text()
    assert "9999" not in log
    assert "packet_fill 300" in [p for p in summary.problems if p.startswith("s0008005")][0]
    co = open_level1(bad_store)
    assert set(np.unique(co["segment"].values)) == {8001}
    assert np.all(co["tsys"].values < 5000)
    text = summary.text()
    assert "5 not reduced" in text and "COMB" in text


def test_corrupt_chunk_fails_only_its_segments(swas_raw, tmp_path):
    ingest_swas([swas_raw], tmp_path / "swas.zarr")
    ds = Store(tmp_path / "swas.zarr").open_group()
    first = ds["first_scan"].values
    chunk = int(sorted(first)[2])  # chunk 1 starts at the third segment
    copy = ds.chunk({"time": chunk})
    for v in copy.variables.values():
        v.encoding = {}
    copy.to_zarr(tmp_path / "copy.zarr", mode="w", consolidated=True)
    target = tmp_path / "copy.zarr" / "aos550" / "c" / "1" / "0"
    assert target.is_file()
    target.write_bytes(b"garbage, not a zstd frame" * 100)
    broken = xr.open_zarr(tmp_path / "copy.zarr", consolidated=True)
    out, inter, reports = compute_level1(broken)
    rep = {r.segment: r for r in reports}
    seg = ds["segment"].values
    hit = {int(s) for s, f, n in zip(seg, first, ds["nscans"].values) if f + n > chunk}
    assert hit and len(hit) < len(seg)
    for s in seg:
        s = int(s)
        if s in hit:
            assert rep[s].status == "failed" and "could not be read" in rep[s].reason, rep[s].line()
        else:
            assert rep[s].status == "ok", rep[s].line()
    assert set(np.unique(out["segment"].values)) == {int(s) for s in seg} - hit
    shutil.rmtree(tmp_path / "copy.zarr")
