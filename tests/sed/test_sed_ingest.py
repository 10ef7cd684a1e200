"""Ingest of MIPS SED DCEs (ICD section 3): the mips70sed group, its coordinates, the SED calibration
set's identity, every bad-input rule, and imaging + SED DCEs in one ingest."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256_tree

from reduce.io.store import Store
from reduce.mips.ingest import ingest_mips
from reduce.sed.calib import SED_RAW_GROUP, SedCalTable

from .test_sed_calib import NAMES, write_sed_aor, write_sed_cal_set, write_sed_dce

AOR = 40123456


def _ingest(inputs, store, **kw):
    lines = []
    return ingest_mips(inputs, store, report=lines.append, **kw), lines


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _identity(cal_dir):
    return {r: {"name": n, "path": str((cal_dir / n).resolve()), "sha256": _sha(cal_dir / n), "calvers": "S18.test"}
            for r, n in NAMES.items()}


@pytest.fixture
def sed_raw(tmp_path):
    """raw/: one SED AOR of 2 cycles (10 DCEs; cycle 1 of 10 s DCEs) and the SED cal files in raw/cal/."""
    raw = tmp_path / "raw"
    files = write_sed_aor(raw, AOR, chopthrw=-60.0, pa_slit=212.5)
    files += write_sed_aor(raw, AOR, first=1, nreads=80, chopthrw=-60.0, pa_slit=212.5)
    write_sed_cal_set(raw / "cal")
    return raw, files


def test_sed_dces_go_to_their_group(tmp_path, sed_raw):
    raw, files = sed_raw
    before = sha256_tree(raw)
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 0 and lines == []
    assert sorted(summary.ingested) == sorted(map(str, files)) and len(files) == 10
    store = Store(tmp_path / "s.zarr")
    ds = store.open_group(SED_RAW_GROUP)                     # validated against schemas/mips_store.yaml
    assert ds.sizes["dce"] == 10 and store.open_group("mips70").sizes["dce"] == 0
    assert ds.attrs["chnlnum"] == 2
    assert list(ds.source_file.values) == [f.name for f in files]
    assert list(ds.choppos.values) == ["ON", "ON", "OFF", "ON", "OFF"] * 2
    assert list(ds.expid.values) == [0] * 5 + [1] * 5 and list(ds.dcenum.values) == list(range(5)) * 2
    assert list(ds.stimflsh.values) == [1, 0, 0, 0, 0] * 2
    assert list(ds.nreads.values) == [24] * 5 + [80] * 5
    assert ds.chopthrw.dtype == np.float32 and (ds.chopthrw.values == -60.0).all()
    assert ds.chopthrw.attrs["units"] == "arcsec" and ds.pa_slit.attrs["units"] == "deg"
    assert ds.pa_slit.dtype == np.float64 and (ds.pa_slit.values == 212.5).all()
    assert (ds.aot_type.values == "MipsSed").all() and (ds.aorkey.values == AOR).all()
    for i, path in enumerate(files):
        with fits.open(path) as hdul:
            h, data = hdul[0].header, hdul[0].data
        assert ds.pa_ref.values[i] == h["PA_REF"] == 122.5 and ds.ra_ref.values[i] == h["RA_REF"]
        assert ds.time.values[i] == h["MJD_OBS"] and ds.dceid.values[i] == h["DCEID"]
        n = h["NREADS"]
        np.testing.assert_array_equal(ds.reads[i, :n].values, data)
        assert (ds.reads[i, n:].values == 0).all()           # padding
    # the calibration set: the six SED files, by name, path, SHA-256 and CALVERS
    assert ds.attrs["calibration_sets"] == [_identity(raw / "cal")] and (ds.calset.values == 0).all()
    table = SedCalTable.load(ds.attrs["calibration_sets"], 2)
    assert table.reasons == ("",) and table.sets[0].disp == 1.7
    assert len(store.ledger()) == 10 and store.quarantine() == []
    assert sha256_tree(raw) == before                        # raw files untouched
    # again: nothing new; a second AOR with its own cal copy (same content, other path): a new set
    state = store.read_state()
    summary, _ = _ingest([raw], tmp_path / "s.zarr")
    assert summary.ingested == [] and len(summary.already) == 10 and store.read_state() == state
    other = tmp_path / "other"
    write_sed_aor(other, AOR + 1, mjd0=53501.0)
    shutil.copytree(raw / "cal", other / "cal")
    summary, _ = _ingest([other], tmp_path / "s.zarr")
    ds = store.open_group(SED_RAW_GROUP)
    assert len(summary.ingested) == 5 and ds.sizes["dce"] == 15
    assert ds.attrs["calibration_sets"] == [_identity(raw / "cal"), _identity(other / "cal")]
    assert list(ds.calset.values) == [0] * 10 + [1] * 5


def test_imaging_and_sed_in_one_ingest(tmp_path, mips_raw):
    """raw/img: the imaging AOR aor1 with its cal/ (no SED files); raw/sed: a SED AOR with its cal/."""
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw / "img", ignore=shutil.ignore_patterns("mips_truth*", "mips70sed_*"))
    imaging = sorted((raw / "img").glob("SPITZER_M*_raw.fits"))
    write_sed_cal_set(raw / "sed" / "cal")
    sed = write_sed_aor(raw / "sed", AOR)
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 0 and lines == []
    assert sorted(summary.ingested) == sorted(map(str, imaging + sed)) and len(imaging) == 15
    store = Store(tmp_path / "s.zarr")
    m70 = store.open_group("mips70")
    assert m70.sizes["dce"] == 5 and set(m70.aot_type.values) == {"MipsPhot"}
    assert set(m70.attrs["calibration_sets"][0]) == {"DARK", "FLAT", "NONLIN", "PMASK", "DISTORT", "CAL"}
    assert m70.attrs["calibration_sets"][0]["FLAT"]["sha256"] == _sha(raw / "img" / "cal" / "mips70_flat.fits")
    ds = store.open_group(SED_RAW_GROUP)
    assert list(ds.source_file.values) == [p.name for p in sed]
    assert ds.attrs["calibration_sets"] == [_identity(raw / "sed" / "cal")]
    for group, n in (("mips24", 5), ("mips160", 5)):
        assert store.open_group(group).sizes["dce"] == n


@pytest.fixture
def mixed(tmp_path, mips_raw):
    """raw/: the imaging AOR aor1 (its cal/ without SED files) and a SED AOR, its files in raw/cal/ too."""
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw, ignore=shutil.ignore_patterns("mips_truth*", "mips70sed_*"))
    write_sed_cal_set(raw / "cal")
    return raw, sorted(raw.glob("SPITZER_M*_raw.fits")), write_sed_aor(raw, AOR)


def test_imaging_and_sed_share_a_folder(tmp_path, mixed):
    raw, imaging, sed = mixed
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 0 and len(summary.ingested) == 20
    store = Store(tmp_path / "s.zarr")
    ds, m70 = store.open_group(SED_RAW_GROUP), store.open_group("mips70")
    assert ds.sizes["dce"] == 5 and m70.sizes["dce"] == 5 and "MipsSed" not in set(m70.aot_type.values)
    assert ds.attrs["calibration_sets"] == [_identity(raw / "cal")]
    assert "ILLUM" not in m70.attrs["calibration_sets"][0] and "FLAT" not in ds.attrs["calibration_sets"][0]


@pytest.mark.parametrize("reftype", ["ILLUM", "WAVE"])
def test_missing_sed_cal_file_rejects_only_the_sed_dces(tmp_path, mixed, reftype):
    raw, imaging, sed = mixed
    missing = (raw / "cal" / NAMES[reftype]).resolve()
    missing.unlink()
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 1
    assert lines == [f"REJECTED {p}: {missing}: calibration file missing ({reftype} for the 70 um SED mode)"
                     for p in sed]
    assert sorted(summary.ingested) == sorted(map(str, imaging))
    assert Store(tmp_path / "s.zarr").open_group(SED_RAW_GROUP).sizes["dce"] == 0
    assert len(Store(tmp_path / "s.zarr").quarantine()) == 5


def test_wrong_sed_cal_file_rejects_only_the_sed_dces(tmp_path, mixed):
    raw, imaging, sed = mixed
    wave = raw / "cal" / NAMES["WAVE"]
    shutil.copyfile(raw / "cal" / NAMES["CAL"], wave)
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert lines == [f"REJECTED {p}: {wave.resolve()}: calibration file has REFTYPE 'CAL' CHNLNUM 2, "
                     f"expected 'WAVE' 2" for p in sed]
    assert len(summary.ingested) == 15


def test_folder_with_only_sed_cal_files(tmp_path, mixed):
    raw, imaging, sed = mixed
    for p in (raw / "cal").glob("mips70_*.fits"):
        p.unlink()
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    m70 = [p for p in imaging if p.name.startswith("SPITZER_M2_")]
    assert lines == [f"REJECTED {p}: {(raw / 'cal' / 'mips70_dark.fits').resolve()}: calibration file missing "
                     f"(DARK for channel 2)" for p in m70]
    assert len(summary.ingested) == 15
    store = Store(tmp_path / "s.zarr")
    assert store.open_group(SED_RAW_GROUP).sizes["dce"] == 5 and store.open_group("mips70").sizes["dce"] == 0
    # and the other way round: only imaging files for the 70 um array, no SED ones
    raw2 = tmp_path / "raw2"
    write_sed_aor(raw2, AOR + 7)
    (raw2 / "cal").mkdir()
    summary, lines = _ingest([raw2], tmp_path / "s2.zarr")
    assert lines == [f"REJECTED {p}: {(raw2 / 'cal' / NAMES['DARK']).resolve()}: calibration file missing "
                     f"(DARK for the 70 um SED mode)" for p in sorted(raw2.glob("*.fits"))]


def test_bad_sed_dces_are_rejected_with_their_reason(tmp_path, sed_raw):
    raw, files = sed_raw
    bad = raw / "bad"
    bad.mkdir()
    cases = {  # name: (write_sed_dce keywords, reason)
        "chnl1": (dict(chnl=1),
                  "HDU PRIMARY: AOT_TYPE 'MipsSed' needs CHNLNUM 2 (the 70 um array), got 1 "
                  "(unknown AOT_TYPE 'MipsSed' for the 24 um array)"),
        "chnl3": (dict(chnl=3),
                  "HDU PRIMARY: AOT_TYPE 'MipsSed' needs CHNLNUM 2 (the 70 um array), got 3 "
                  "(unknown AOT_TYPE 'MipsSed' for the 160 um array)"),
        "no_choppos": (dict(drop=("CHOPPOS",)), "HDU PRIMARY: keyword CHOPPOS missing"),
        "no_chopthrw_pa": (dict(drop=("CHOPTHRW", "PA_SLIT")),
                           "HDU PRIMARY: keyword CHOPTHRW missing; HDU PRIMARY: keyword PA_SLIT missing"),
        "choppos_mid": (dict(choppos="MID"), "HDU PRIMARY: keyword CHOPPOS = 'MID', expected one of ['ON', 'OFF']"),
        "chopthrw_text": (dict(chopthrw="sixty"), "HDU PRIMARY: keyword CHOPTHRW = 'sixty' is not of type float"),
        "nreads_32": (dict(nreads=32), "HDU PRIMARY: NREADS = 32, expected one of [24, 80] for AOT_TYPE 'MipsSed'"),
        "nreads_header": (dict(change={"NREADS": 80}),
                          "HDU PRIMARY: data int16 (24, 32, 32), expected int16 (80, 32, 32)"),
        "no_stimflsh": (dict(drop=("STIMFLSH",)), "HDU PRIMARY: keyword STIMFLSH missing"),
    }
    paths = {}
    for i, (name, (kw, _)) in enumerate(cases.items()):
        paths[name] = write_sed_dce(bad, AOR + 100 + i, 0, 0, mjd=53502.0, name=f"bad_{name}.fits", **kw)
    paths["backwards"] = write_sed_dce(bad, AOR, 1, 7, mjd=53500.0, name="bad_backwards.fits")
    cases["backwards"] = (None, f"MJD_OBS {53500.0:.8f} is not after that of the previous DCE of AOR {AOR} "
                                f"({files[-1].name}): time runs backwards")
    shutil.copytree(raw / "cal", bad / "cal")
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.exit_code == 1
    assert sorted(lines) == sorted(f"REJECTED {paths[n]}: {reason}" for n, (_, reason) in cases.items())
    assert sorted(summary.ingested) == sorted(map(str, files))
    quarantine = Store(tmp_path / "s.zarr").quarantine()
    assert sorted(q["reason"] for q in quarantine) == sorted(reason for _, reason in cases.values())


def test_imaging_dces_need_no_sed_keywords_and_keep_their_checks(tmp_path, mips_raw):
    """A MipsPhot DCE of the 70 um array carrying a bad CHOPPOS still ingests (SED keywords are not
    checked for it); a MipsSed DCE of the same array with it is rejected."""
    raw = tmp_path / "raw"
    src = sorted((mips_raw / "aor1").glob("SPITZER_M2_*_raw.fits"))[0]
    raw.mkdir()
    shutil.copytree(mips_raw / "aor1" / "cal", raw / "cal")
    write_sed_cal_set(raw / "cal")
    with fits.open(src) as h:
        hdul = fits.HDUList([x.copy() for x in h])
    hdul[0].header["CHOPPOS"] = "MID"
    hdul.writeto(raw / src.name, checksum=True)
    sed = write_sed_dce(raw, AOR, 0, 0, mjd=53502.0, change={"CHOPPOS": "MID"})
    summary, lines = _ingest([raw], tmp_path / "s.zarr")
    assert summary.ingested == [str(raw / src.name)]
    assert lines == [f"REJECTED {sed}: HDU PRIMARY: keyword CHOPPOS = 'MID', expected one of ['ON', 'OFF']"]


def test_simulator_output_ingests(tmp_path):
    """The SED simulator's files (reduce.simulate.mips_sed via simulate_mips) follow what ingest checks."""
    import dataclasses
    import json

    from reduce.simulate.mips import simulate_mips
    from reduce.simulate.mips_sed import plan_sed

    spec = dataclasses.replace(plan_sed(1, seed=5)[0], n_cycles=2, exptime=3.0, chopthrw=-60.0)
    out = simulate_mips(tmp_path / "raw", seed=5, specs=[], sed_specs=[spec], sed_tilt=0.2)
    summary, lines = _ingest([tmp_path / "raw"], tmp_path / "s.zarr")
    assert summary.exit_code == 0 and lines == [] and len(summary.ingested) == len(out["files"]) == 10
    truth = {d["file"]: d for d in json.loads(Path(out["truth"]).read_text())["dces"] if d.get("mode") == "sed"}
    store = Store(tmp_path / "s.zarr")
    ds = store.open_group(SED_RAW_GROUP)
    assert store.open_group("mips70").sizes["dce"] == 0
    assert sorted(ds.source_file.values) == sorted(truth) and ds.sizes["dce"] == 10
    for i, name in enumerate(ds.source_file.values):
        t = truth[name]
        assert (ds.choppos.values[i], int(ds.stimflsh.values[i]), int(ds.nreads.values[i])) == (
            t["choppos"], int(t["stim"]), 24)
        assert ds.chopthrw.values[i] == -60.0 and ds.pa_slit.values[i] == spec.pa_slit
    assert list(ds.choppos.values) == ["ON", "ON", "OFF", "ON", "OFF"] * 2
    (ident,) = ds.attrs["calibration_sets"]
    assert {r: e["sha256"] for r, e in ident.items()} == {
        r: _sha(tmp_path / "raw" / "cal" / n) for r, n in NAMES.items()}
    table = SedCalTable.load(ds.attrs["calibration_sets"], 2)
    assert table.reasons == ("",) and table.sets[0].tilt == 0.2 and table.sets[0].calvers == "sim-1"
