"""Reading real Spitzer BCDs (IRAC subarray cube, IRS peak-up coadd) and their companions."""
import subprocess
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from conftest import require_tool
from reduce.errors import BadInputError
from reduce.mips import bcd_reader as br

IRAC = "spitzer/irac-hd209458/SPITZER_I1_41629440_0000_0000_1_bcd.fits"
IRS = "spitzer/irs/irs_coadd_img.fits"


def _raw_wcs(header, naxis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=naxis)


@pytest.mark.parametrize("name,shape,unit", [(IRAC, (64, 32, 32), u.MJy / u.sr),
                                             (IRS, (128, 128), u.electron / u.s)])
def test_real_bcd_data_units_and_wcs(reference_dir, name, shape, unit):
    path = reference_dir / name
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # quirks handled, nothing leaks
        data, header, w = br.read_bcd(path)
    raw = fits.getdata(path)
    assert data.shape == shape and data.dtype == np.float32
    np.testing.assert_array_equal(data, raw.astype(np.float32))
    assert br.parse_bunit(header["BUNIT"]) == unit
    assert w.naxis == 2 and w.has_celestial and w.sip is not None
    assert w.sip.a_order == 3 and w.sip.b_order == 3
    # the reference pixel maps to CRVAL (CRPIX is 1-based)
    c = w.pixel_to_world(header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    assert c.separation(SkyCoord(header["CRVAL1"], header["CRVAL2"], unit="deg")).arcsec < 1e-6
    # and every pixel agrees with astropy on the untouched header
    ny, nx = shape[-2:]
    y, x = np.mgrid[0:ny:5, 0:nx:5]
    ours = w.all_pix2world(x.ravel(), y.ravel(), 0)
    raw_h = fits.getheader(path)
    if len(shape) == 3:                 # the quirk: SIP on a cube needs the 2-axis selection
        with pytest.raises(ValueError, match="SIP"):
            _raw_wcs(raw_h, None)
    theirs = _raw_wcs(raw_h, 2).all_pix2world(x.ravel(), y.ravel(), 0)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=0, atol=1e-10)
    # the SIP terms are applied: dropping them moves the corner pixel measurably
    nosip = w.deepcopy()
    nosip.sip = None
    assert w.pixel_to_world(0, 0).separation(nosip.pixel_to_world(0, 0)).arcsec > 0.01


def test_irac_companions(reference_dir):
    path = reference_dir / IRAC
    b = br.read_bcd_products(path)
    assert b.unit == u.MJy / u.sr
    assert b.uncertainty.shape == b.mask.shape == b.data.shape == (64, 32, 32)
    np.testing.assert_array_equal(b.uncertainty,
                                  fits.getdata(str(path).replace("_bcd", "_bunc")))
    assert b.mask.dtype == np.int16 and b.mask.dtype.isnative
    assert len(b.mask_bits) == 15
    assert b.mask_bits[0] == "Overall data quality of imask pixel"
    assert b.mask_bits[9] == "Set if pixel contains radhit"
    assert b.mask_bits[14] == "Set if data is bad or missing"
    legend = sum(2**k for k in b.mask_bits)
    assert np.all((b.mask.astype(np.int64) & ~legend) == 0)   # only documented bits are set
    unc_ok = np.isfinite(b.uncertainty) & np.isfinite(b.data)
    assert unc_ok.mean() > 0.9 and np.all(b.uncertainty[unc_ok] >= 0)


def test_irs_has_no_companions(reference_dir):
    b = br.read_bcd_products(reference_dir / IRS)
    assert b.uncertainty is None and b.mask is None and b.mask_bits is None
    assert b.unit == u.electron / u.s


def test_quirky_synthetic_bcd(tmp_path):
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=3.0, CRPIX2=4.0, CRVAL1=10.0,
             CRVAL2=-20.0, CD1_1=-1e-3, CD1_2=0.0, CD2_1=0.0, CD2_2=1e-3, BUNIT="MJy/sr  ",
             DATE_OBS="2005-03-04T05:06:07.000", MJD_OBS=53433.2126)
    path = tmp_path / "SPITZER_M1_1_0000_0000_1_bcd.fits"
    fits.PrimaryHDU(np.arange(35, dtype=">f4").reshape(5, 7), h).writeto(path)
    data, header, w = br.read_bcd(path)
    assert data.dtype == np.float32 and data.dtype.isnative and data[4, 6] == 34
    assert w.wcs.dateobs.startswith("2005-03-04T05:06:07")
    assert "DATE-OBS" not in header                       # the caller's header is untouched
    c = w.pixel_to_world(2, 3)
    assert (c.ra.deg, c.dec.deg) == pytest.approx((10.0, -20.0))
    assert br.companion_paths(path) == (None, None)
    del h["BUNIT"]
    fits.PrimaryHDU(np.zeros((5, 7), np.float32), h).writeto(tmp_path / "nobunit.fits")
    with pytest.raises(BadInputError, match=r"nobunit\.fits: HDU 0: keyword BUNIT missing"):
        br.read_bcd(tmp_path / "nobunit.fits")
    fits.PrimaryHDU(np.zeros((5, 7), np.float32), fits.Header({"BUNIT": "MJy/sr"})).writeto(
        tmp_path / "nowcs.fits")
    with pytest.raises(BadInputError, match=r"nowcs\.fits: HDU 0: no celestial WCS"):
        br.read_bcd(tmp_path / "nowcs.fits")


@pytest.mark.parametrize("text,unit", [("MJy/sr", u.MJy / u.sr), ("e-/sec", u.electron / u.s),
                                       ("DN/s", u.adu / u.s), ("electrons/sec", None)])
def test_parse_bunit(text, unit):
    if unit is None:
        with pytest.raises(ValueError, match="BUNIT"):
            br.parse_bunit(text)
    else:
        assert br.parse_bunit(text) == unit


@pytest.mark.tools
@pytest.mark.parametrize("name", [IRAC, IRS])
def test_wcs_agrees_with_wcstools(reference_dir, name):
    xy2sky = require_tool("xy2sky")
    path = reference_dir / name
    data, _, w = br.read_bcd(path)
    ny, nx = data.shape[-2:]
    pix = [(1, 1), (nx, ny), (1, ny), (nx, 1), (nx / 2, ny / 5)]
    out = subprocess.run([xy2sky, "-d", "-n", "9", str(path)] + [f"{v}" for p in pix for v in p],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [r.split() for r in out if r.strip()]
    theirs = SkyCoord([float(r[0]) for r in rows], [float(r[1]) for r in rows], unit="deg")
    xs, ys = np.array(pix, float).T
    assert w.pixel_to_world(xs - 1, ys - 1).separation(theirs).arcsec.max() < 0.01
