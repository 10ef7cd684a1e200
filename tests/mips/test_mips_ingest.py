"""MIPS ingest: per-array groups, exact round trip (Ge ramps padded), calibration identity, bad input."""
import re
import shutil

import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256_tree

from reduce.io.fitsio import sha256_file
from reduce.io.store import Store
from reduce.mips.ingest import ingest_mips

GROUPS = {1: "mips24", 2: "mips70", 3: "mips160"}


def _ingest(inputs, store, **kw):
    lines = []
    return ingest_mips(inputs, store, report=lines.append, **kw), lines


def test_round_trip_per_array(tmp_path, mips_raw):
    store = tmp_path / "mips.zarr"
    summary, lines = _ingest([mips_raw / "aor1"], store)
    assert summary.exit_code == 0, lines
    files = sorted((mips_raw / "aor1").glob("SPITZER_M*_raw.fits"))
    assert len(summary.ingested) == len(files) == 15
    for chnl, group in GROUPS.items():
        ds = Store(store).open_group(group)
        mine = sorted(f for f in files if f.name.startswith(f"SPITZER_M{chnl}_"))
        assert list(ds.source_file.values) == [f.name for f in mine]
        for i, path in enumerate(mine):
            with fits.open(path) as hdul:
                h, data = hdul[0].header, hdul[0].data
                assert ds.aorkey.values[i] == h["AORKEY"] and ds.dcenum.values[i] == h["DCENUM"]
                assert ds.time.values[i] == h["MJD_OBS"] and ds.ra_ref.values[i] == h["RA_REF"]
                assert ds.nreads.values[i] == h["NREADS"]
                if chnl == 1:
                    np.testing.assert_array_equal(ds.raw[i].values, data)
                else:
                    assert ds.stimflsh.values[i] == h["STIMFLSH"]
                    n = h["NREADS"]
                    np.testing.assert_array_equal(ds.reads[i, :n].values, data)
                    assert (ds.reads[i, n:].values == 0).all()  # padding
        calsets = ds.attrs["calibration_sets"]
        assert len(calsets) == 1 and (ds.calset.values == 0).all()
        ident = calsets[0]
        band = {1: 24, 2: 70, 3: 160}[chnl]
        assert set(ident) == ({"DARK", "FLAT", "PMASK", "DISTORT", "CAL"} | ({"NONLIN"} if chnl > 1 else set()))
        cal_file = mips_raw / "aor1" / "cal" / f"mips{band}_dark.fits"
        assert ident["DARK"]["sha256"] == sha256_file(cal_file)[0]
        assert ident["DARK"]["calvers"] == fits.getheader(cal_file)["CALVERS"]


def test_append_another_aor_and_reingest_changes_nothing(tmp_path, mips_raw):
    store = tmp_path / "mips.zarr"
    _ingest([mips_raw / "aor1"], store)
    summary, _ = _ingest([mips_raw / "aor2"], store)
    assert len(summary.ingested) == 12
    ds = Store(store).open_group("mips70")
    assert ds.sizes["dce"] == 9 and sorted(set(ds.aorkey.values)) == [12345678, 12346000]
    assert sorted(set(ds.nreads.values)) == [24, 32]
    # aor2's cal folder is a second, identical-content copy: the same calibration set (paths aside)
    state = Store(store).read_state()
    summary, _ = _ingest([mips_raw], store)
    assert summary.ingested == [] and summary.exit_code == 0
    assert Store(store).read_state() == state


def _bad_copy(src, dst, how):
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    h = hdul[0].header
    if how == "wrong_shape":
        hdul[0].data = hdul[0].data[:, :16, :]
    elif how == "nreads_mismatch":
        h["NREADS"] = 32
    elif how == "missing_keyword":
        del h["PA_REF"]
    elif how == "nans":
        hdul[0].data[0, 3, 4] = np.nan
    elif how == "bad_aot":
        h["AOT_TYPE"] = "MipsSed"
    elif how == "time_backwards":
        h["DCENUM"] = h["DCENUM"] + 100
        h["MJD_OBS"] = h["MJD_OBS"] - 1.0
    hdul.writeto(dst, checksum=True)  # a writer that keeps CHECKSUM right: the content checks speak


def test_bad_dces_are_rejected_and_the_rest_ingested(tmp_path, mips_raw):
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw, ignore=shutil.ignore_patterns("mips_truth*"))
    m70 = sorted(raw.glob("SPITZER_M2_*_raw.fits"))
    m24 = sorted(raw.glob("SPITZER_M1_*_raw.fits"))
    cases = {"wrong_shape": (m70[0], r"data int16 \(\d+, 16, 32\), expected int16 \(\d+, 32, 32\)"),
             "nreads_mismatch": (m70[1], r"data int16 \(24, 32, 32\), expected int16 \(32, 32, 32\)"),
             "missing_keyword": (m70[2], r"HDU PRIMARY: keyword PA_REF missing"),
             "nans": (m24[0], r"HDU PRIMARY: 1 non-finite values"),
             "bad_aot": (m24[1], r"unknown AOT_TYPE 'MipsSed'"),
             "time_backwards": (m24[2], r"time runs backwards")}
    for how, (src, _) in cases.items():
        _bad_copy(src, raw / f"bad_{how}.fits", how)
    before = sha256_tree(raw)
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 1
    assert len(lines) == len(cases)
    for how, (_, pattern) in cases.items():
        line = [x for x in lines if f"bad_{how}.fits" in x]
        assert len(line) == 1 and re.search(pattern, line[0]), (how, lines)
    assert len(summary.ingested) == 15
    assert len(Store(tmp_path / "s.zarr").quarantine()) == len(cases)
    assert sha256_tree(raw) == before


@pytest.mark.parametrize("how", ["missing", "mismatched"])
def test_missing_or_mismatched_calibration(tmp_path, mips_raw, how):
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw)
    target = raw / "cal" / "mips70_flat.fits"
    if how == "missing":
        target.unlink()
        pattern = r"mips70_flat.fits: calibration file missing \(FLAT for channel 2\)"
    else:
        with fits.open(raw / "cal" / "mips160_flat.fits") as hdul:
            hdul.writeto(target, overwrite=True)
        pattern = r"mips70_flat.fits: calibration file has REFTYPE 'FLAT' CHNLNUM 3, expected 'FLAT' 2"
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 1
    assert len(lines) == 5 and all(re.search(pattern, x) and "SPITZER_M2_" in x for x in lines), lines
    assert len(summary.ingested) == 10  # 24 and 160 um untouched
