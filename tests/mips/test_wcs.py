"""TAN-SIP WCS of a MIPS DCE (ICD §2 orientation), checked against astropy and wcstools."""
import subprocess

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from conftest import require_tool
from reduce.mips.kernels import wcs as mwcs

ARRAYS = {  # (ny, nx), (PXSCAL1, PXSCAL2)
    24: ((128, 128), (2.55, 2.55)),
    70: ((32, 32), (9.85, 9.85)),
    160: ((2, 20), (16.0, 18.0)),
}


def distortion(band, sip=True):
    (ny, nx), (s1, s2) = ARRAYS[band]
    h = fits.Header()
    h.update(WCSAXES=2, CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", CRVAL1=0.0, CRVAL2=0.0,
             PXSCAL1=s1, PXSCAL2=s2, CRPIX1=(nx + 1) / 2, CRPIX2=(ny + 1) / 2)
    if sip:
        # strong enough to move corners by ~1 pixel, so a reader ignoring SIP fails
        k = 64.0 / max(nx, ny)
        h.update(A_ORDER=2, B_ORDER=2, A_2_0=1e-4 * k**2, A_1_1=-5e-5 * k**2, A_0_2=2e-5 * k**2,
                 B_2_0=-3e-5 * k**2, B_1_1=4e-5 * k**2, B_0_2=8e-5 * k**2)
    return h


POINTINGS = [(150.1, 2.2, 33.0), (0.01, -75.3, 250.0), (271.0, 66.5, 0.0), (359.999, 10.0, 123.4)]


def make_wcs(d, ra, dec, pa):
    """The WCS object of the header cards the BCD export writes."""
    return WCS(mwcs.wcs_header(d, ra, dec, pa), relax=True)


def position_angle_of_y(w, x, y, *, step=1.0):
    """Position angle (deg E of N) of the local +y direction at 0-based pixel (x, y)."""
    p0 = w.pixel_to_world(x, y)
    return p0.position_angle(w.pixel_to_world(x, y + step)).deg


def test_cd_matrix_formula():
    cd = mwcs.cd_matrix(16.0, 18.0, 30.0)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    np.testing.assert_allclose(cd * 3600, [[-16 * c, 18 * s], [16 * s, 18 * c]])
    assert np.linalg.det(cd) < 0                            # east to the left


@pytest.mark.parametrize("band", [24, 70, 160])
@pytest.mark.parametrize("ra,dec,pa", POINTINGS)
def test_orientation_scale_and_reference(band, ra, dec, pa):
    d = distortion(band)
    w = make_wcs(d, ra, dec, pa)
    assert w.has_celestial and w.sip is not None
    assert list(w.wcs.ctype) == ["RA---TAN-SIP", "DEC--TAN-SIP"]
    x0, y0 = d["CRPIX1"] - 1, d["CRPIX2"] - 1                # 0-based reference pixel
    c0 = w.pixel_to_world(x0, y0)
    assert c0.separation(SkyCoord(ra, dec, unit="deg")).arcsec < 1e-6
    # offsets along +y go to PA (E of N); +x goes to PA - 90 (east to the left); local
    # directions (tiny steps), with and without the (second-order) SIP terms
    tan = make_wcs(distortion(band, sip=False), ra, dec, pa)
    for ww in (tan, w):
        for step in (1e-3, -1e-3):
            flip = 180 if step < 0 else 0
            pa_y = c0.position_angle(ww.pixel_to_world(x0, y0 + step)).deg - flip
            pa_x = c0.position_angle(ww.pixel_to_world(x0 + step, y0)).deg - flip
            assert abs((pa_y - pa + 180) % 360 - 180) < 1e-4
            assert abs((pa_x - (pa - 90) + 180) % 360 - 180) < 1e-4
    sy = c0.separation(w.pixel_to_world(x0, y0 + 1e-3)).arcsec / 1e-3
    sx = c0.separation(w.pixel_to_world(x0 + 1e-3, y0)).arcsec / 1e-3
    assert sy == pytest.approx(d["PXSCAL2"], rel=1e-4)
    assert sx == pytest.approx(d["PXSCAL1"], rel=1e-4)
    got = position_angle_of_y(w, x0, y0, step=1e-3)
    assert abs((got - pa + 180) % 360 - 180) < 1e-4


@pytest.mark.parametrize("band", [24, 70, 160])
def test_round_trip(band):
    d = distortion(band)
    (ny, nx), _ = ARRAYS[band]
    w = make_wcs(d, 83.8, -5.4, 71.0)
    y, x = np.mgrid[-0.5:ny - 0.5:7j, -0.5:nx - 0.5:9j]
    sky = w.pixel_to_world(x, y)
    x2, y2 = w.world_to_pixel(sky)
    assert np.max(np.hypot(x2 - x, y2 - y)) < 1e-5


def test_header_cards():
    d = distortion(160)
    h = mwcs.wcs_header(d, 10.0, 20.0, 45.0)
    assert h["CTYPE1"] == "RA---TAN-SIP" and h["CTYPE2"] == "DEC--TAN-SIP"
    assert (h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"]) == (10.0, 20.0, 10.5, 1.5)
    assert h["A_ORDER"] == 2 and h["B_0_2"] == d["B_0_2"] and h["A_2_0"] == d["A_2_0"]
    assert h["RADESYS"] == "ICRS" and h["WCSAXES"] == 2
    assert h["PA_REF"] == 45.0 and h["PXSCAL2"] == 18.0
    np.testing.assert_allclose([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]],
                               mwcs.cd_matrix(16, 18, 45.0))
    nosip = mwcs.wcs_header(distortion(24, sip=False), 10.0, 20.0, 45.0)
    assert nosip["CTYPE1"] == "RA---TAN" and "A_ORDER" not in nosip
    # astropy reads back the same transformation
    w1, w2 = WCS(h), make_wcs(d, 10.0, 20.0, 45.0)
    np.testing.assert_allclose(w1.all_pix2world([[0, 0], [19, 1]], 0),
                               w2.all_pix2world([[0, 0], [19, 1]], 0), rtol=0, atol=1e-12)


@pytest.mark.tools
@pytest.mark.parametrize("band", [24, 160])
@pytest.mark.parametrize("ra,dec,pa", POINTINGS[:2])
def test_agrees_with_wcstools_xy2sky(tmp_path, band, ra, dec, pa):
    xy2sky = require_tool("xy2sky")
    d = distortion(band)
    (ny, nx), _ = ARRAYS[band]
    h = mwcs.wcs_header(d, ra, dec, pa)
    path = tmp_path / "dce.fits"
    fits.PrimaryHDU(np.zeros((ny, nx), np.float32), h).writeto(path)
    pix = [(1, 1), (nx, ny), (1, ny), (nx, 1), (d["CRPIX1"], d["CRPIX2"]), (nx / 3, ny / 2)]
    args = [f"{v:.4f}" for p in pix for v in p]
    out = subprocess.run([xy2sky, "-d", "-n", "9", str(path), *args], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    assert len(rows) == len(pix)
    theirs = SkyCoord([float(r[0]) for r in rows], [float(r[1]) for r in rows], unit="deg")
    w = make_wcs(d, ra, dec, pa)
    xs, ys = np.array(pix, float).T
    ours = w.pixel_to_world(xs - 1, ys - 1)                 # xy2sky pixels are 1-based
    assert ours.separation(theirs).arcsec.max() < 0.01
    # and the SIP terms matter at this level: a pure TAN WCS would disagree
    if band == 24:
        tan = WCS(mwcs.wcs_header(distortion(band, sip=False), ra, dec, pa))
        assert tan.pixel_to_world(xs - 1, ys - 1).separation(theirs).arcsec.max() > 0.1
