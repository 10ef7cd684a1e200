"""SED calibration reference files (ICD section 3): reading, validation, identity, SedCalTable.

``write_sed_cal_set`` and ``write_sed_dce`` write the files of ICD section 3 with astropy (they do
not use the simulator); tests/sed/test_sed_ingest.py uses them too.
"""
import dataclasses
import hashlib
import os

import numpy as np
import pytest
from astropy.io import fits

from reduce.errors import BadInputError, CalibrationError
from reduce.mips.calib import CalTable
from reduce.sed import calib
from reduce.simulate.mips_cal import atomic_writeto

WAVE = dict(WAVE0=53.65, DISP=1.7, TILT=0.02, CENTCOL=7.0, PXSCALE=9.98, SLITW=19.96)
SCAL = dict(GAIN=7.1, RDNOISE=20.0, SATLEVEL=32767.0)
NAMES = {"DARK": "mips70sed_dark.fits", "ILLUM": "mips70sed_illum.fits", "NONLIN": "mips70sed_nonlin.fits",
         "PMASK": "mips70sed_pmask.fits", "CAL": "mips70sed_cal.fits", "WAVE": "mips70sed_wave.fits"}


def _primary(reftype, data=None, calvers="S18.test", chnl=2):
    h = fits.PrimaryHDU(data)
    h.header.update(TELESCOP="Spitzer", INSTRUME="MIPS", CHNLNUM=chnl, REFTYPE=reftype, CALVERS=calvers)
    return h


def sed_cal_hdus(*, calvers="S18.test", tilt=0.02, seed=0):
    """{REFTYPE: HDUList} of the six SED reference files as ICD section 3 and the design describe."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:32, 0:32]
    outside = (rows >= 27) | (cols >= 16)
    dark = _primary("DARK", rng.uniform(1, 2, (32, 32)).astype(np.float32), calvers)
    dark.header["BUNIT"] = "DN/s"
    illum = rng.normal(1, 0.05, (32, 32))
    illum /= illum[~outside].mean()
    illum[3, 4] = 0.0                                     # a dead pixel
    nl = np.zeros((3, 32, 32), np.float32)
    nl[0], nl[1] = 1.0, 1e-6
    pmask = np.where(outside, 16, 0).astype(np.int16)
    pmask[3, 4] |= 1 | 8
    pmask[10, 2] |= 2
    cal = _primary("CAL", None, calvers)
    cal.header.update(SCAL)
    fluxconv = (40.0 + 0.5 * np.arange(32)).astype(np.float32)
    stim = rng.uniform(100, 200, (32, 32)).astype(np.float32)
    wave = _primary("WAVE", None, calvers)
    wave.header.update(dict(WAVE, TILT=tilt))
    r = np.arange(27)
    table = fits.BinTableHDU.from_columns([
        fits.Column("ROW", "I", array=r.astype(np.int16)),
        fits.Column("WAVE", "E", unit="um", array=(WAVE["WAVE0"] + WAVE["DISP"] * r).astype(np.float32)),
        fits.Column("APCORR", "E", array=(1.2 + 0.01 * r).astype(np.float32))], name="APCORR")
    return {"DARK": fits.HDUList([dark]),
            "ILLUM": fits.HDUList([_primary("ILLUM", illum.astype(np.float32), calvers)]),
            "NONLIN": fits.HDUList([_primary("NONLIN", nl, calvers)]),
            "PMASK": fits.HDUList([_primary("PMASK", pmask, calvers)]),
            "CAL": fits.HDUList([cal, fits.ImageHDU(fluxconv, name="FLUXCONV"), fits.ImageHDU(stim, name="STIMAMP")]),
            "WAVE": fits.HDUList([wave, table])}


def write_sed_cal_set(folder, *, skip=(), **kw):
    """Write the SED reference files into ``folder`` (CHECKSUM/DATASUM as the simulator) -> {REFTYPE: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for reftype, hdul in sed_cal_hdus(**kw).items():
        if reftype not in skip:
            paths[reftype] = folder / NAMES[reftype]
            atomic_writeto(hdul, paths[reftype])
    return paths


def write_sed_dce(folder, aorkey, expid, dcenum, *, mjd, choppos="ON", chopthrw=60.0, pa_slit=30.0, nreads=24,
                  stim=0, chnl=2, aot="MipsSed", calvers="S18.test", drop=(), change=None, name=None, seed=0):
    """One raw SED DCE file (ICD sections 2 and 3), int16 [NREADS, 32, 32] -> path. ``drop``: keywords
    to leave out; ``change``: keywords to set after the rest (bad input)."""
    rng = np.random.default_rng([seed, aorkey, expid, dcenum])
    ramp = np.cumsum(rng.integers(0, 40, (nreads, 32, 32)), axis=0) + 1000
    h = fits.PrimaryHDU(ramp.astype(np.int16)).header
    cards = dict(TELESCOP="Spitzer", INSTRUME="MIPS", CHNLNUM=chnl, AORKEY=aorkey, EXPID=expid, DCENUM=dcenum,
                 DCEID=aorkey * 100 + expid * 5 + dcenum, AOT_TYPE=aot, OBJECT="NGC 7027", PROGID=40,
                 EXPTIME=nreads * 0.131072, SAMPTIME=0.131072, NREADS=nreads, MJD_OBS=mjd,
                 SCLK_OBS=8.0e8 + (mjd - 53500.0) * 86400.0, RA_RQST=316.75 + 1e-4 * expid, DEC_RQST=42.24,
                 RA_REF=316.7501 + 1e-4 * expid, DEC_REF=42.2401, PA_REF=(pa_slit - 90.0) % 360.0,
                 STIMFLSH=stim, CHOPPOS=choppos, CHOPTHRW=chopthrw, PA_SLIT=pa_slit, CALVERS=calvers)
    cards.update(change or {})
    for key, value in cards.items():
        if key not in drop:
            h[key] = value
    path = folder / (name or f"SPITZER_M{chnl}_{aorkey}_{expid:04d}_{dcenum:04d}_raw.fits")
    atomic_writeto(fits.HDUList([fits.PrimaryHDU(ramp.astype(np.int16), header=h)]), path)
    return path


def write_sed_aor(folder, aorkey, *, cycles=1, first=0, mjd0=53500.5, nreads=24, **kw):
    """A SED AOR as ICD section 3 sequences it: per cycle (EXPID k = first .. first + cycles - 1) stim ON,
    ON, OFF, ON, OFF, 20 s apart from ``mjd0`` at cycle 0 -> [paths]."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(first, first + cycles):
        for d, pos in enumerate(("ON", "ON", "OFF", "ON", "OFF")):
            out.append(write_sed_dce(folder, aorkey, k, d, mjd=mjd0 + (5 * k + d) * 20 / 86400, choppos=pos,
                                     stim=int(d == 0), nreads=nreads, **kw))
    return out


def _rewrite(path, edit):
    """Apply ``edit(hdul)`` to a copy of the file and put it in place (no checksums: the loader reads it)."""
    with fits.open(path) as h:
        hdul = fits.HDUList([x.copy() for x in h])
    hdul = edit(hdul) or hdul
    hdul.writeto(path.with_suffix(".tmp"), overwrite=True)
    os.replace(path.with_suffix(".tmp"), path)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- load
def test_constants_follow_the_design():
    assert calib.SED_FILES == NAMES and list(calib.SED_FILES) == list(NAMES)
    assert calib.SED_RAW_GROUP == "mips70sed"
    assert calib.PMASK_BITS == {"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8, "outside": 16}


def test_load_reads_every_file(tmp_path):
    paths = write_sed_cal_set(tmp_path, tilt=-0.03)
    before = {p: p.read_bytes() for p in paths.values()}
    for p in paths.values():
        os.chmod(p, 0o444)                                    # read-only files must open
    cs = calib.load_sed_calibration(tmp_path)
    src = sed_cal_hdus(tilt=-0.03)
    assert cs.chnlnum == 2 and cs.band == 70 and cs.shape == (32, 32)
    for name, hdul, ext in (("dark", "DARK", 0), ("illum", "ILLUM", 0), ("nonlin", "NONLIN", 0),
                            ("pmask", "PMASK", 0), ("stimamp", "CAL", "STIMAMP"), ("fluxconv_row", "CAL", "FLUXCONV")):
        a = getattr(cs, name)
        np.testing.assert_array_equal(a, src[hdul][ext].data)
        assert a.dtype == (np.int16 if name == "pmask" else np.float32) and a.dtype.isnative
        with pytest.raises(ValueError):
            a.flat[0] = 1                                     # read-only
    assert cs.nonlin.shape == (3, 32, 32) and cs.fluxconv_row.shape == (32,)
    assert (cs.gain, cs.rdnoise, cs.satlevel) == (7.1, 20.0, 32767.0)
    assert (cs.wave0, cs.disp, cs.tilt, cs.centcol, cs.pxscale, cs.slitw) == (53.65, 1.7, -0.03, 7.0, 9.98, 19.96)
    np.testing.assert_array_equal(cs.apcorr_row, np.arange(27))
    np.testing.assert_allclose(cs.apcorr_wave, 53.65 + 1.7 * np.arange(27), rtol=1e-7)
    np.testing.assert_allclose(cs.apcorr, 1.2 + 0.01 * np.arange(27), rtol=1e-7)
    assert cs.flat is cs.illum and np.isnan(cs.fluxconv)
    assert cs.distortion == {"PXSCAL1": 9.98, "PXSCAL2": 9.98}
    assert cs.omega_sr == pytest.approx(19.96 * 9.98 / 206264.806 ** 2, rel=1e-8)
    assert [f.reftype for f in cs.files] == list(NAMES)
    for f in cs.files:
        assert f.name == NAMES[f.reftype] and f.sha256 == _sha(paths[f.reftype]) and f.calvers == "S18.test"
    assert cs.calvers == "S18.test"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cs.disp = 1.0
    hdr = fits.Header()
    for k, v, c in cs.provenance_cards():
        hdr[k] = (v, c)                                       # the cards fit FITS
    assert [k for k in hdr if k.startswith("CF")] == ["CFDARK", "CFILLUM", "CFNONLIN", "CFPMASK", "CFCAL", "CFWAVE"]
    assert hdr["CFWAVE"] == "mips70sed_wave.fits" and hdr["CSWAVE"] == _sha(paths["WAVE"])
    assert hdr["CSNONLIN"] == _sha(paths["NONLIN"])
    assert {p: p.read_bytes() for p in paths.values()} == before


def test_differing_calvers_are_named(tmp_path, caplog):
    write_sed_cal_set(tmp_path)
    _rewrite(tmp_path / NAMES["WAVE"], lambda h: h[0].header.set("CALVERS", "S18.other"))
    cs = calib.load_sed_calibration(tmp_path)
    assert cs.calvers == "S18.other+S18.test"
    assert "different CALVERS" in caplog.text and "mips70sed_wave.fits" in caplog.text


@pytest.mark.parametrize("reftype", list(NAMES))
def test_missing_file(tmp_path, reftype):
    write_sed_cal_set(tmp_path, skip=(reftype,))
    with pytest.raises(CalibrationError) as exc:
        calib.load_sed_calibration(tmp_path)
    assert str(exc.value) == f"{tmp_path / NAMES[reftype]}: {reftype} calibration file of the 70 um SED mode not found"


def _set(key, value, hdu=0):
    def edit(h):
        h[hdu].header[key] = value
    return edit


def _delete(key, hdu=0):
    def edit(h):
        del h[hdu].header[key]
    return edit


def _data(value, hdu=0):
    def edit(h):
        h[hdu].data = value
    return edit


def _drop_hdu(name):
    return lambda h: fits.HDUList([x for x in h if x.name != name])


def _table(**columns):
    """Replace columns of the APCORR table (None: leave a column out)."""
    def edit(h):
        t = h["APCORR"].data
        cols = []
        for name, fmt in (("ROW", "I"), ("WAVE", "E"), ("APCORR", "E")):
            value = columns.get(name, t[name])
            if value is not None:
                cols.append(fits.Column(name, fmt, array=np.asarray(value)))
        return fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="APCORR")])
    return edit


def _fluxconv_nan(h):
    d = h["FLUXCONV"].data.copy()
    d[5] = np.nan
    d[30] = np.nan                                            # an uncalibrated row: allowed
    h["FLUXCONV"].data = d


BAD = {  # case: (REFTYPE, edit, reason)
    "chnlnum": ("ILLUM", _set("CHNLNUM", 3),
                "HDU 0: CHNLNUM = 3 does not match the requested channel 2 (mismatched calibration file)"),
    "reftype": ("DARK", _set("REFTYPE", "FLAT"), "HDU 0: REFTYPE = 'FLAT', expected 'DARK'"),
    "calvers": ("PMASK", _delete("CALVERS"), "HDU 0 (PRIMARY): required keyword CALVERS missing"),
    "dark_shape": ("DARK", _data(np.ones((31, 32), np.float32)),
                   "HDU 0 (PRIMARY): data float32 (31, 32), expected float32 (32, 32)"),
    "illum_dtype": ("ILLUM", _data(np.ones((32, 32), np.float64)),
                    "HDU 0 (PRIMARY): data float64 (32, 32), expected float32 (32, 32)"),
    "pmask_dtype": ("PMASK", _data(np.zeros((32, 32), np.float32)),
                    "HDU 0 (PRIMARY): data float32 (32, 32), expected int16 (32, 32)"),
    "nonlin_2d": ("NONLIN", _data(np.ones((32, 32), np.float32)),
                  "HDU 0 (PRIMARY): data float32 (32, 32), expected float32 (K, 32, 32)"),
    "no_data": ("DARK", _data(None), "HDU 0 (PRIMARY): no data, expected float32 (32, 32)"),
    "gain": ("CAL", _delete("GAIN"), "HDU 0 (PRIMARY): required keyword GAIN missing"),
    "rdnoise": ("CAL", _delete("RDNOISE"), "HDU 0 (PRIMARY): required keyword RDNOISE missing"),
    "satlevel_text": ("CAL", _set("SATLEVEL", "high"), "HDU 0 (PRIMARY): keyword SATLEVEL = 'high' is not a number"),
    "fluxconv_missing": ("CAL", _drop_hdu("FLUXCONV"), "extension FLUXCONV missing"),
    "fluxconv_shape": ("CAL", _data(np.ones(27, np.float32), "FLUXCONV"),
                       "HDU FLUXCONV: data float32 (27,), expected float32 (32,)"),
    "fluxconv_nan": ("CAL", _fluxconv_nan, "HDU FLUXCONV: not finite and > 0 in calibrated rows [5]"),
    "stimamp_missing": ("CAL", _drop_hdu("STIMAMP"), "extension STIMAMP missing"),
    "stimamp_shape": ("CAL", _data(np.ones((2, 20), np.float32), "STIMAMP"),
                      "HDU STIMAMP: data float32 (2, 20), expected float32 (32, 32)"),
    "wave0": ("WAVE", _delete("WAVE0"), "HDU 0 (PRIMARY): required keyword WAVE0 missing"),
    "disp": ("WAVE", _delete("DISP"), "HDU 0 (PRIMARY): required keyword DISP missing"),
    "tilt": ("WAVE", _delete("TILT"), "HDU 0 (PRIMARY): required keyword TILT missing"),
    "centcol": ("WAVE", _delete("CENTCOL"), "HDU 0 (PRIMARY): required keyword CENTCOL missing"),
    "pxscale": ("WAVE", _delete("PXSCALE"), "HDU 0 (PRIMARY): required keyword PXSCALE missing"),
    "slitw": ("WAVE", _delete("SLITW"), "HDU 0 (PRIMARY): required keyword SLITW missing"),
    "apcorr_missing": ("WAVE", _drop_hdu("APCORR"), "extension APCORR missing"),
    "apcorr_image": ("WAVE", lambda h: fits.HDUList([h[0], fits.ImageHDU(np.ones(27, np.float32), name="APCORR")]),
                     "HDU APCORR is not a binary table"),
    "apcorr_column": ("WAVE", _table(APCORR=None), "HDU APCORR: column APCORR missing"),
    "apcorr_rows": ("WAVE", _table(ROW=np.r_[0:26, 28].astype(np.int16)),
                    "HDU APCORR: column ROW holds [" + ", ".join(map(str, list(range(26)) + [28]))
                    + "], expected each of rows 0..26 once"),
    "apcorr_wave": ("WAVE", _table(WAVE=(53.65 + 1.7 * np.arange(27) + 0.5 * (np.arange(27) == 4)).astype(np.float32)),
                    "HDU APCORR: WAVE = 60.9500 um at ROW 4, expected WAVE0 + DISP*ROW = 60.4500 um"),
    "apcorr_value": ("WAVE", _table(APCORR=np.where(np.arange(27) == 9, -1.0, 1.2).astype(np.float32)),
                     "HDU APCORR: APCORR not finite and > 0 at ROW [9]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_names_file_and_hdu(tmp_path, case):
    reftype, edit, reason = BAD[case]
    paths = write_sed_cal_set(tmp_path)
    _rewrite(paths[reftype], edit)
    with pytest.raises(BadInputError) as exc:
        calib.load_sed_calibration(tmp_path)
    assert exc.value.path == str(paths[reftype])
    assert exc.value.reason == reason


# ---------------------------------------------------------------- recorded sets and the table
def _identity(paths):
    return {r: {"name": p.name, "path": str(p.resolve()), "sha256": _sha(p), "calvers": "S18.test"}
            for r, p in paths.items()}


def test_check_sed_calset(tmp_path):
    paths = write_sed_cal_set(tmp_path / "a")
    ident = _identity(paths)
    cs, reason = calib.check_sed_calset(ident)
    assert reason == "" and isinstance(cs, calib.SedCalibrationSet)
    assert {f.name: f.sha256 for f in cs.files} == {e["name"]: e["sha256"] for e in ident.values()}
    _rewrite(paths["ILLUM"], _set("COMMENT", "edited"))
    cs, reason = calib.check_sed_calset(ident)
    assert cs is None and reason.startswith(f"calibration file {paths['ILLUM'].resolve()} (ILLUM) has SHA-256 ")
    assert reason.endswith(f"not the {ident['ILLUM']['sha256'][:16]}... recorded at ingest (file changed)")
    paths = write_sed_cal_set(tmp_path / "b")
    paths["WAVE"].unlink()
    assert calib.check_sed_calset(_identity({k: v for k, v in paths.items() if k != "WAVE"})) == (
        None, f"SED calibration set in {paths['DARK'].parent.resolve()}: {paths['WAVE'].resolve()}: WAVE "
              f"calibration file of the 70 um SED mode not found")
    paths = write_sed_cal_set(tmp_path / "c")
    _rewrite(paths["WAVE"], _set("DISP", -1.7))
    _rewrite(paths["WAVE"], _table(WAVE=(53.65 - 1.7 * np.arange(27)).astype(np.float32)))
    assert calib.check_sed_calset(_identity(paths)) == (
        None, f"SED calibration set in {paths['DARK'].parent.resolve()}: DISP not > 0")


def test_sed_cal_table(tmp_path, caplog):
    good = write_sed_cal_set(tmp_path / "a", tilt=0.05)
    other = write_sed_cal_set(tmp_path / "b", seed=1, tilt=-0.02)
    idents = [_identity(good), _identity(other)]
    _rewrite(other["CAL"], _set("GAIN", 6.0))                 # changed after ingest: set 1 unusable
    table = calib.SedCalTable.load(idents)
    assert isinstance(table, CalTable) and table.chnlnum == 2 and table.shape == (32, 32)
    assert table.sets[0] is not None and table.sets[1] is None
    assert table.reasons[0] == "" and "(CAL) has SHA-256" in table.reasons[1] and "MIPS 70 um SED" in caplog.text
    assert table.identities[0]["WAVE"] == {k: idents[0]["WAVE"][k] for k in ("name", "sha256", "calvers")}
    cs = calib.load_sed_calibration(tmp_path / "a")
    dark = table.image("dark")
    assert dark.dims == ("cset", "y", "x") and dark.shape == (2, 32, 32)
    np.testing.assert_array_equal(dark[0], cs.dark)
    assert np.isnan(dark[1]).all()
    np.testing.assert_array_equal(table.image("flat")[0], cs.illum)
    np.testing.assert_array_equal(table.image("illum")[0], cs.illum)
    np.testing.assert_array_equal(table.image("stimamp")[0], cs.stimamp)
    nl = table.image("nonlin", fill=0.0)
    assert nl.dims == ("cset", "k", "y", "x") and nl.shape == (2, 3, 32, 32) and (nl[1] == 0).all()
    pm = table.image("pmask", fill=0, dtype=np.int16)
    assert pm.dtype == np.int16 and (pm[0] == cs.pmask).all() and int(pm[0, 30, 3]) == 16
    for name, value in (("gain", 7.1), ("rdnoise", 20.0), ("satlevel", 32767.0), ("tilt", 0.05), ("disp", 1.7),
                        ("wave0", 53.65), ("centcol", 7.0), ("pxscale", 9.98), ("slitw", 19.96)):
        s = table.scalar(name)
        assert s.dims == ("cset",) and s.values[0] == value and np.isnan(s.values[1])
    assert np.isnan(table.scalar("fluxconv").values).all()
    rows = table.rows("fluxconv_row")
    assert rows.dims == ("cset", "y") and rows.shape == (2, 32) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], cs.fluxconv_row)
    assert np.isnan(rows[1]).all()
    w = table.wave(0)
    assert {k: w[k] for k in ("wave0", "disp", "tilt", "centcol", "pxscale", "slitw")} == dict(
        wave0=53.65, disp=1.7, tilt=0.05, centcol=7.0, pxscale=9.98, slitw=19.96)
    np.testing.assert_array_equal(w["apcorr"], cs.apcorr)
    np.testing.assert_array_equal(w["apcorr_row"], np.arange(27))
    with pytest.raises(CalibrationError, match=r"SED calibration set 1 is not usable: calibration file .*\(CAL\)"):
        table.wave(1)
    assert table.checksums() == sorted(f"{p.name} {_sha(p)}" for p in good.values())
    assert table.main({0: 3, 1: 10}) == 0                    # the only usable set
    with pytest.raises(ValueError, match="the SED mode uses CHNLNUM 2, got 1"):
        calib.SedCalTable.load(idents, 1)
    empty = calib.SedCalTable.load([])
    assert empty.sets == () and empty.main({}) is None and empty.image("dark").shape == (1, 32, 32)


def test_package_import_is_light():
    import subprocess
    import sys
    code = "import sys, reduce.sed; print(sorted(m for m in ('xarray', 'dask', 'astropy', 'zarr') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
