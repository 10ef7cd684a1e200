"""SWAS ingest: exact round trip, incremental appends, idempotence, bad input, read-only raw files."""
import shutil

import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256_tree

from reduce.io.store import Store
from reduce.swas.ingest import ingest_swas

SCANTYPES = ["ON", "OFF", "ZERO", "HOT", "COMB"]


def _ingest(inputs, store, **kw):
    lines = []
    summary = ingest_swas(inputs, store, report=lines.append, **kw)
    return summary, lines


def test_round_trip_is_exact(tmp_path, swas_raw):
    store = tmp_path / "swas.zarr"
    summary, lines = _ingest([swas_raw / "day5"], store)
    assert summary.exit_code == 0 and lines == []
    ds = Store(store).open_group("")
    files = sorted((swas_raw / "day5").glob("swas_lh_*.fits"))
    assert list(ds.source_file.values) == [f.name for f in files]
    assert ds.sizes["segment"] == 3
    for i, path in enumerate(files):
        with fits.open(path) as hdul:
            first, n = int(ds.first_scan[i]), int(ds.nscans[i])
            rows = slice(first, first + n)
            assert n == hdul[0].header["NSCANS"]
            np.testing.assert_array_equal(ds.aos490[rows].values, hdul["AOS490"].data)
            np.testing.assert_array_equal(ds.aos550[rows].values, hdul["AOS550"].data)
            scans = hdul["SCANS"].data
            np.testing.assert_array_equal(ds.time[rows].values, scans["TIME"])
            np.testing.assert_array_equal(ds.scvel[rows].values, scans["SCVEL"])
            np.testing.assert_array_equal(ds.cont[rows].values, scans["CONT"])
            np.testing.assert_array_equal(ds.quality[rows].values, scans["QUALITY"])
            assert [SCANTYPES[c] for c in ds.scantype[rows].values] == [s.strip() for s in scans["SCANTYPE"]]
            h = hdul[0].header
            assert ds.object.values[i] == h["OBJECT"]
            assert ds.obsmode.values[i] == h["OBSMODE"]
            assert ds.lofreq1.values[i] == h["LOFREQ1"] and ds.vsource.values[i] == h["VSOURCE"]
            assert ds.segment.values[i] == h["MISSDAY"] * 1000 + h["SEGMENT"]
            assert (ds.segment_id[rows].values == ds.segment.values[i]).all()
    hk = Store(store).open_group("hk")  # its own time axis hk_time (see schemas/swas_store.yaml)
    tables = [fits.getdata(f, "HK") for f in files]
    assert hk.sizes["hk_time"] == sum(len(t) for t in tables) and "time" not in hk.dims
    np.testing.assert_array_equal(hk.hk_time.values, np.concatenate([t["TIME"] for t in tables]))
    for name in ("tmix1", "tmix2", "tlo1", "tlo2", "ibias1", "ibias2"):
        np.testing.assert_array_equal(hk[name].values, np.concatenate([t[name.upper()] for t in tables]))
    np.testing.assert_array_equal(hk.segment_id.values,
                                  np.repeat(ds.segment.values, [len(t) for t in tables]))
    assert set(Store(store).ledger()[0]) >= {"name", "sha256", "bytes", "key", "rows"}
    assert set(Store(store).ledger()[0]["rows"]) == {"time", "segment", "hk/hk_time"}


def test_append_and_idempotent_reingest(tmp_path, swas_raw):
    store = tmp_path / "swas.zarr"
    before = sha256_tree(swas_raw)
    _ingest([swas_raw / "day5"], store)
    n5 = Store(store).open_group("").sizes["time"]
    summary, _ = _ingest([swas_raw / "day6"], store)
    assert len(summary.ingested) == 1
    ds = Store(store).open_group("")
    assert ds.sizes["segment"] == 4 and ds.sizes["time"] > n5
    assert ds.first_scan.values[3] == n5
    snapshot = (Store(store).read_state(), Store(store).ledger(), ds.load())
    summary, lines = _ingest([swas_raw], store)  # everything again: nothing changes
    assert summary.ingested == [] and len(summary.already) == 4 and summary.exit_code == 0
    assert Store(store).read_state() == snapshot[0]
    assert Store(store).ledger() == snapshot[1]
    snapshot[2].identical(Store(store).open_group("").load())
    assert sha256_tree(swas_raw) == before  # raw files never modified


def _corrupt(src, dst, how):
    """Write a corrupted copy of a good LH file (the original is untouched)."""
    if how == "truncated":
        data = src.read_bytes()
        dst.write_bytes(data[: len(data) * 2 // 3])
        return
    if how == "not_fits":
        dst.write_text("SIMPLE? no: this is a text file that someone named .fits\n")
        return
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    scans = hdul["SCANS"].data
    if how == "missing_hdu":
        del hdul["HK"]
    elif how == "missing_keyword":
        del hdul[0].header["OBSMODE"]
    elif how == "missing_column":
        cols = [c for c in hdul["SCANS"].columns if c.name != "THOT"]
        hdul["SCANS"] = fits.BinTableHDU.from_columns(cols, name="SCANS")
    elif how == "wrong_shape":
        hdul["AOS490"].data = hdul["AOS490"].data[:, :700].copy()
    elif how == "nans":
        hdul["AOS550"].data[5, 100] = np.nan
    elif how == "time_backwards":
        scans["TIME"][10] = scans["TIME"][8]-1e-5
    elif how == "duplicated_scans":
        scans["SCAN"][11] = scans["SCAN"][10]
    elif how == "unknown_mode":
        hdul[0].header["OBSMODE"] = "WOBBLE"
    hdul.writeto(dst, checksum=True)  # a writer that keeps CHECKSUM right: the content checks speak


BAD = {
    "truncated": r"truncated: HDU \d .* needs \d+ bytes, file has \d+",
    "not_fits": r"not a readable FITS file",
    "missing_hdu": r"HDU HK missing",
    "missing_keyword": r"HDU PRIMARY: keyword OBSMODE missing",
    "missing_column": r"HDU SCANS: column THOT missing",
    "wrong_shape": r"HDU AOS490: shape \(\d+, 700\), expected \(\d+, 725\)",
    "nans": r"HDU AOS550: 1 non-finite values \(first at scan row 5, channel 100\)",
    "time_backwards": r"HDU SCANS: TIME runs backwards at row 10",
    "duplicated_scans": r"HDU SCANS: duplicated scans \(SCAN \d+ appears 2 times\)",
    "unknown_mode": r"HDU PRIMARY: unknown OBSMODE 'WOBBLE'",
}


def test_bad_input_is_reported_quarantined_and_the_rest_ingested(tmp_path, swas_raw):
    good = sorted((swas_raw / "day5").glob("*.fits"))
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in good[:2]:
        shutil.copy(f, raw / f.name)
    for i, how in enumerate(BAD):
        _corrupt(good[2], raw / f"swas_lh_0099_{i:03d}_{how}.fits", how)
    before = sha256_tree(raw)
    store = tmp_path / "swas.zarr"
    summary, lines = _ingest([raw], store)
    assert summary.exit_code == 1
    assert sorted(summary.ingested) == sorted(str(raw / f.name) for f in good[:2])
    assert len(lines) == len(BAD)
    import re
    for how, pattern in BAD.items():
        line = [line for line in lines if f"_{how}.fits" in line]
        assert len(line) == 1, how
        assert line[0].startswith(f"REJECTED {raw}/swas_lh_0099_"), line[0]
        assert re.search(pattern, line[0]), (how, line[0])
    quarantine = Store(store).quarantine()
    assert sorted(q["name"] for q in quarantine) == sorted(f"swas_lh_0099_{i:03d}_{h}.fits" for i, h in enumerate(BAD))
    assert all(q["reason"] for q in quarantine)
    assert sha256_tree(raw) == before
    # again: the same rejections, no duplicate quarantine lines, nothing else changes
    summary, lines = _ingest([raw], store)
    assert summary.exit_code == 1 and len(lines) == len(BAD)
    assert Store(store).quarantine() == quarantine


def test_same_segment_with_other_content_is_refused(tmp_path, swas_raw):
    src = sorted((swas_raw / "day5").glob("*.fits"))[0]
    raw = tmp_path / "raw"
    raw.mkdir()
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
        hdul["AOS490"].data[0, 0] += 1.0
        hdul.writeto(raw / "copy.fits", checksum=True)
    store = tmp_path / "s.zarr"
    _ingest([src], store)
    summary, lines = _ingest([raw / "copy.fits"], store)
    assert summary.exit_code == 1
    assert "duplicate: segment 0005/001 is already in the store from" in lines[0]


def test_special_mode_is_accepted(tmp_path):
    from reduce.simulate.swas import simulate_swas
    from reduce.simulate.swas_plan import make_spec

    simulate_swas(tmp_path / "raw", specs=[make_spec(7, 1, "JUPITER", "PLANCAL", 120, start_s=300.0)], seed=3)
    summary, lines = _ingest([tmp_path / "raw"], tmp_path / "s.zarr")
    assert summary.exit_code == 0, lines
    assert list(Store(tmp_path / "s.zarr").open_group("").obsmode.values) == ["PLANCAL"]


@pytest.mark.parametrize("chunk", [64])
def test_chunk_aligned_parallel_writes(tmp_path, swas_raw, monkeypatch, chunk):
    """With small chunks, a parallel ingest writes every chunk once and equals a serial one."""
    import distributed

    from reduce.io import ingest as engine
    from reduce.schemas import group_spec, load_schema

    schema = load_schema("swas_store")
    for name in ("aos490", "aos550"):
        monkeypatch.setitem(group_spec(schema, "")["variables"][name], "chunks", [chunk, 725])
    jobs_seen = []
    real = engine._chunk_jobs

    def spy(*args):
        jobs = real(*args)
        jobs_seen.extend((j[1], j[5], j[6]) for j in jobs)
        return jobs

    monkeypatch.setattr(engine, "_chunk_jobs", spy)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        _ingest([swas_raw / "day5"], tmp_path / "par.zarr", client=client)
        _ingest([swas_raw / "day6"], tmp_path / "par.zarr", client=client)
    _ingest([swas_raw / "day5"], tmp_path / "ser.zarr")
    _ingest([swas_raw / "day6"], tmp_path / "ser.zarr")
    for store in ("par.zarr", "ser.zarr"):
        jobs = [(a, b) for path, a, b in jobs_seen if path.endswith(store)]
        assert len(jobs) > 4
        for a, b in jobs:  # every job lies within one chunk ...
            assert a // chunk == (b - 1) // chunk
        chunk_ids = [a // chunk for a, _ in jobs]
        # ... and no two jobs of one ingest share a chunk; day 6 re-opens the last chunk of day 5
        assert len(chunk_ids) == len(set(chunk_ids)) + 1
    from conftest import assert_stores_identical
    assert_stores_identical(tmp_path / "par.zarr", tmp_path / "ser.zarr")
