"""Calibration reference files (ICD §2): reading, validation, identity."""
import dataclasses
import hashlib
import os

import numpy as np
import pytest
from astropy.io import fits

from reduce.errors import BadInputError, CalibrationError
from reduce.mips import calib

SCAL = {1: dict(FLUXCONV=0.0447, GAIN=5.1, RDNOISE=9.0, SATLEVEL=600.0, DROOP=0.33, JAILBAR=1e-4),
        2: dict(FLUXCONV=702.0, GAIN=7.1, RDNOISE=20.0, SATLEVEL=32767.0),
        3: dict(FLUXCONV=41.7, GAIN=7.1, RDNOISE=20.0, SATLEVEL=32767.0)}


def _primary(chnl, reftype, data=None, calvers="S18.test"):
    h = fits.PrimaryHDU(data)
    h.header.update(TELESCOP="Spitzer", INSTRUME="MIPS", CHNLNUM=chnl, REFTYPE=reftype,
                    CALVERS=calvers)
    return h


def write_cal_set(folder, chnl, *, skip=(), calvers="S18.test"):
    """Write the reference files of one array as ICD §2 describes them."""
    band = calib.BAND[chnl]
    ny, nx = calib.SHAPE[chnl]
    rng = np.random.default_rng(chnl)
    files = {
        "dark": _primary(chnl, "DARK", rng.uniform(1, 2, (ny, nx)).astype(np.float32), calvers),
        "flat": _primary(chnl, "FLAT", rng.normal(1, 0.05, (ny, nx)).astype(np.float32), calvers),
        "pmask": _primary(chnl, "PMASK", (rng.random((ny, nx)) < 0.05).astype(np.int16), calvers),
    }
    if chnl in (2, 3):
        nl = np.zeros((3, ny, nx), np.float32)
        nl[0] = 1.0
        nl[1] = 1e-6
        files["nonlin"] = _primary(chnl, "NONLIN", nl, calvers)
    d = _primary(chnl, "DISTORT", None, calvers)
    scale = {1: (2.55, 2.55), 2: (9.85, 9.85), 3: (16.0, 18.0)}[chnl]
    d.header.update(WCSAXES=2, CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", CRVAL1=0.0,
                    CRVAL2=0.0, PXSCAL1=scale[0], PXSCAL2=scale[1], CRPIX1=(nx + 1) / 2,
                    CRPIX2=(ny + 1) / 2, A_ORDER=2, B_ORDER=2, A_2_0=1e-6, B_0_2=-2e-6)
    files["distortion"] = d
    cal = _primary(chnl, "CAL", None, calvers)
    cal.header.update(SCAL[chnl])
    hdus = [cal]
    if chnl in (2, 3):
        hdus.append(fits.ImageHDU(rng.uniform(100, 200, (ny, nx)).astype(np.float32),
                                  name="STIMAMP"))
    files["cal"] = fits.HDUList(hdus)
    paths = {}
    for suffix, hdu in files.items():
        if suffix in skip:
            continue
        path = folder / f"mips{band}_{suffix}.fits"
        (hdu if isinstance(hdu, fits.HDUList) else fits.HDUList([hdu])).writeto(path)
        paths[suffix] = path
    return paths


@pytest.mark.parametrize("chnl", [1, 2, 3])
def test_load_each_array(tmp_path, chnl):
    paths = write_cal_set(tmp_path, chnl)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths.values()}
    for p in paths.values():
        os.chmod(p, 0o444)                              # read-only files must open
    cs = calib.load_calibration(tmp_path, chnl)
    shape = calib.SHAPE[chnl]
    assert cs.chnlnum == chnl and cs.shape == shape and cs.band == calib.BAND[chnl]
    assert cs.dark.shape == cs.flat.shape == cs.pmask.shape == shape
    assert cs.dark.dtype == np.float32 and cs.pmask.dtype == np.int16
    np.testing.assert_array_equal(cs.dark, fits.getdata(paths["dark"]))
    for key, value in SCAL[chnl].items():
        assert getattr(cs, key.lower()) == value
    if chnl == 1:
        assert cs.nonlin is None and cs.stimamp is None and cs.jbthresh is None
    else:
        assert cs.nonlin.shape == (3,) + shape and cs.stimamp.shape == shape
        assert cs.droop is None and cs.jailbar is None
        np.testing.assert_array_equal(cs.stimamp, fits.getdata(paths["cal"], "STIMAMP"))
    assert cs.distortion["PXSCAL2"] == {1: 2.55, 2: 9.85, 3: 18.0}[chnl]
    names = {f.name: f for f in cs.files}
    assert set(names) == {p.name for p in paths.values()}
    for p in paths.values():
        assert names[p.name].sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
        assert names[p.name].calvers == "S18.test"
    assert cs.calvers == "S18.test"
    with pytest.raises(ValueError):
        cs.dark[0, 0] = 5.0                              # arrays are read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        cs.gain = 1.0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths.values()} == before
    cards = dict((k, v) for k, v, _ in cs.provenance_cards())
    assert cards["CFDARK"] == f"mips{calib.BAND[chnl]}_dark.fits"
    assert cards["CSDARK"] == names[cards["CFDARK"]].sha256
    hdr = fits.Header()
    for k, v, c in cs.provenance_cards():
        hdr[k] = (v, c)                                  # the cards fit FITS
    assert hdr["CSDISTOR"] == names[f"mips{calib.BAND[chnl]}_distortion.fits"].sha256


@pytest.mark.parametrize("suffix", ["dark", "flat", "pmask", "distortion", "cal", "nonlin"])
def test_missing_file(tmp_path, suffix):
    write_cal_set(tmp_path, 2, skip=(suffix,))
    with pytest.raises(CalibrationError, match=rf"mips70_{suffix}\.fits.*not found"):
        calib.load_calibration(tmp_path, 2)


def test_mismatched_chnlnum(tmp_path):
    write_cal_set(tmp_path, 2)
    with fits.open(tmp_path / "mips70_flat.fits") as h:
        h[0].header["CHNLNUM"] = 3
        h.writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", tmp_path / "mips70_flat.fits")
    with pytest.raises(BadInputError, match=r"mips70_flat\.fits: HDU 0: CHNLNUM = 3.*mismatched"):
        calib.load_calibration(tmp_path, 2)


def test_wrong_shape(tmp_path):
    write_cal_set(tmp_path, 3)
    fits.PrimaryHDU(np.ones((20, 2), np.float32), _primary(3, "DARK").header).writeto(
        tmp_path / "mips160_dark.fits", overwrite=True)
    with pytest.raises(BadInputError, match=r"mips160_dark\.fits: .*\(20, 2\), expected \(2, 20\)"):
        calib.load_calibration(tmp_path, 3)


@pytest.mark.parametrize("key", ["DROOP", "JAILBAR", "FLUXCONV", "GAIN"])
def test_missing_required_keyword(tmp_path, key):
    write_cal_set(tmp_path, 1)
    path = tmp_path / "mips24_cal.fits"
    with fits.open(path) as h:
        del h[0].header[key]
        h.writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", path)
    with pytest.raises(BadInputError, match=rf"mips24_cal\.fits: HDU 0 .*keyword {key} missing"):
        calib.load_calibration(tmp_path, 1)


def test_primary_keywords_checked(tmp_path):
    write_cal_set(tmp_path, 1)
    path = tmp_path / "mips24_pmask.fits"
    with fits.open(path) as h:
        h[0].header["REFTYPE"] = "FLAT"
        h.writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", path)
    with pytest.raises(BadInputError, match=r"mips24_pmask\.fits: HDU 0: REFTYPE = 'FLAT'"):
        calib.load_calibration(tmp_path, 1)
    (tmp_path / "b").mkdir()
    write_cal_set(tmp_path / "b", 1)
    path = tmp_path / "b" / "mips24_dark.fits"
    with fits.open(path) as h:
        del h[0].header["CALVERS"]
        h.writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", path)
    with pytest.raises(BadInputError, match=r"mips24_dark\.fits: .*CALVERS missing"):
        calib.load_calibration(tmp_path / "b", 1)


def test_missing_stimamp(tmp_path):
    write_cal_set(tmp_path, 2)
    path = tmp_path / "mips70_cal.fits"
    with fits.open(path) as h:
        fits.HDUList([h[0].copy()]).writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", path)
    with pytest.raises(BadInputError, match=r"mips70_cal\.fits: image extension STIMAMP missing"):
        calib.load_calibration(tmp_path, 2)


def test_optional_jbthresh(tmp_path):
    write_cal_set(tmp_path, 1)
    path = tmp_path / "mips24_cal.fits"
    with fits.open(path) as h:
        h[0].header["JBTHRESH"] = 200.0
        h.writeto(tmp_path / "x.fits")
    os.replace(tmp_path / "x.fits", path)
    assert calib.load_calibration(tmp_path, 1).jbthresh == 200.0
