"""Source extraction, pointing refinement and reference-catalogue reading
(reduce.mosaic.kernels.pointing, reduce.mosaic.kernels.refcat)."""
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from photutils.psf import CircularGaussianPRF
from scipy.spatial import cKDTree

from reduce.errors import BadInputError
from reduce.mips.kernels.wcs import wcs_header
from reduce.mosaic.kernels.frames import frame_centre, shift_wcs
from reduce.mosaic.kernels.pointing import RHO, _basis, _unit, extract_sources, refine_pointing
from reduce.mosaic.kernels.refcat import read_refcat
from reduce.simulate.mips_cal import distortion_header

PX = 2.55  # arcsec, 24 um pixel
FWHM = 6.0  # arcsec, 24 um PSF
FWHM_PX = FWHM / PX


def _render(shape, x, y, flux, rng, sky=20.0, noise=0.05):
    """Image (MJy/sr) of pixel-integrated Gaussian PSFs at 0-based (x, y) plus sky and noise."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, sky)
    for xi, yi, fi in zip(x, y, flux):
        if -10 < xi < shape[1] + 10 and -10 < yi < shape[0] + 10:
            img += CircularGaussianPRF(flux=fi, x_0=xi, y_0=yi, fwhm=FWHM_PX)(xx, yy)
    return img + rng.normal(0.0, noise, shape), np.full(shape, noise)


# --------------------------------------------------------------------------- extract_sources

def test_extract_centroids_subpixel_and_bad_pixels():
    rng = np.random.default_rng(11)
    shape = (96, 96)
    g = np.arange(12.0, 90.0, 16.0)
    gx, gy = np.meshgrid(g, g)
    x = gx.ravel() + np.tile([0.0, 0.25, 0.5, 0.75, -0.3], 5)[: gx.size]
    y = gy.ravel() + np.repeat([0.0, 0.2, 0.45, -0.35, 0.6], 5)[: gx.size]
    flux = np.full(x.size, 30.0)  # peak ~5 MJy/sr over 0.05 noise: S/N ~ 200
    img, unc = _render(shape, x, y, flux, rng)
    good = np.ones(shape, bool)
    # a bad pixel 2 px from source 0, a source at the edge
    good[int(round(y[0])), int(round(x[0])) + 2] = False
    img[int(round(y[0])), int(round(x[0])) + 2] = np.nan
    xe, ye = np.array([1.2]), np.array([50.3])
    img += _render(shape, xe, ye, [30.0], rng, sky=0.0, noise=0.0)[0]
    cat = extract_sources(img, unc, good, FWHM_PX)
    assert set(cat) >= {"x", "y", "flux", "snr"}
    d, i = cKDTree(np.column_stack([x, y])).query(np.column_stack([cat["x"], cat["y"]]))
    assert np.all(d < 0.1)
    assert 0 not in i, "the source touching a bad pixel must be dropped"
    assert len(cat["x"]) == x.size - 1, "all other sources, not the edge one"
    err = np.hypot(cat["x"] - x[i], cat["y"] - y[i])
    assert np.sqrt(np.mean(err ** 2)) < 0.02  # px; measured ~0.006
    assert np.all(np.abs(cat["flux"] / 30.0 - 1) < 0.03)
    assert np.all(cat["snr"] > 50)
    assert np.all(np.diff(cat["flux"]) <= 0), "brightest first"
    # max_sources and an empty frame
    assert len(extract_sources(img, unc, good, FWHM_PX, max_sources=5)["x"]) == 5
    blank, bunc = _render(shape, [], [], [], rng)
    assert len(extract_sources(blank, bunc, np.ones(shape, bool), FWHM_PX)["x"]) == 0


# --------------------------------------------------------------------------- 24 um frames

def _field(seed, n_src=40, n_frames=12, dec0=42.0, ra0=150.0):
    """Dithered 24 um frames with known pointing errors; catalogues from extract_sources."""
    rng = np.random.default_rng(seed)
    half = 210.0 / 3600.0
    sdec = dec0 + rng.uniform(-half, half, n_src)
    sra = ra0 + rng.uniform(-half, half, n_src) / np.cos(np.radians(dec0))
    sflux = rng.uniform(4.0, 40.0, n_src)  # S/N ~ 25-250
    dist = distortion_header(1)
    err = rng.normal(0.0, 1.4 / np.sqrt(2.0), (n_frames + 1, 2))  # 1.4" radial 1-sigma
    catalogs, centres, wcs_bad, pos = [], [], [], []
    for f in range(n_frames + 1):
        if f < n_frames:
            dra, ddec = rng.uniform(-70.0, 70.0, 2) / 3600.0
            cra, cdec, pa = ra0 + dra / np.cos(np.radians(dec0)), dec0 + ddec, rng.uniform(0, 40)
        else:  # a blank frame, far from every source
            cra, cdec, pa = ra0 + 1.0, dec0 + 0.5, 0.0
        w_true = WCS(wcs_header(dist, cra, cdec, pa), relax=True)
        x, y = w_true.all_world2pix(sra, sdec, 0)
        img, unc = _render((128, 128), x, y, sflux, rng)
        w_bad = shift_wcs(w_true, -err[f, 0], -err[f, 1])  # the frame's WCS is off by -err
        cat = extract_sources(img, unc, np.ones(img.shape, bool), FWHM_PX)
        ra, dec = w_bad.all_pix2world(cat["x"], cat["y"], 0)
        sigma = np.hypot(PX * 0.5 * (cat["x_err"] + cat["y_err"]), 0.01)  # arcsec, small floor
        catalogs.append({"ra": ra, "dec": dec, "sigma": sigma})
        centres.append(frame_centre(w_bad, img.shape))
        wcs_bad.append(w_bad)
        pos.append((cat["x"], cat["y"]))
    return dict(catalogs=catalogs, centres=np.array(centres), err=err, truth=(sra, sdec),
                wcs=wcs_bad, pos=pos)


@pytest.fixture(scope="module")
def field():
    return _field(5)


def _recovered(res, err, sel, relative):
    d = np.column_stack([res["d_east"], res["d_north"]])[sel] - err[sel]
    if relative:
        d -= d.mean(axis=0)
    sig = np.column_stack([res["sigma_east"], res["sigma_north"]])[sel]
    return float(np.sqrt(np.mean(np.sum(d ** 2, axis=1)))), d / sig


def test_relative_mode_recovers_pointing_errors(field):
    res = refine_pointing(field["catalogs"], field["centres"], match_radius_arcsec=6.0)
    assert res["mode"] == "relative" and res["n_ref_matches"] == 0
    sel = res["nmatch"] >= 5
    assert sel[:12].sum() == 12
    assert not res["refined"][12] and res["d_east"][12] == 0 and res["d_north"][12] == 0
    rms, pull = _recovered(res, field["err"], sel, relative=True)
    assert rms < 0.3, rms  # radial rms, arcsec; measured ~0.02
    assert rms < 0.1 * np.sqrt(np.mean(np.sum(field["err"][sel] ** 2, axis=1))), "corrects >90%"
    assert 0.5 < np.std(pull) < 2.0, np.std(pull)
    # gauge: the weighted mean offset is zero, the unweighted one close to it
    assert abs(np.mean(res["d_east"][sel])) < 0.1 and abs(np.mean(res["d_north"][sel])) < 0.1
    assert 0.005 < res["rms"] < 0.2


def test_absolute_mode_and_corrected_wcs(field):
    # the reference is the exact truth here: weight it so (default 0.1", 2MASS-like)
    res = refine_pointing(field["catalogs"], field["centres"], refcat=field["truth"],
                          match_radius_arcsec=6.0, ref_sigma_arcsec=0.01)
    assert res["mode"] == "absolute" and res["n_ref_matches"] >= 20
    sel = res["refined"]
    assert sel.sum() == 12 and not sel[12]
    rms, pull = _recovered(res, field["err"], sel, relative=False)
    assert rms < 0.3, rms  # measured ~0.02
    assert 0.5 < np.std(pull) < 2.0 and abs(np.mean(pull)) < 1.0, (np.std(pull), np.mean(pull))
    # the convention end to end: shift_wcs(wcs, d_east, d_north) puts the sources on the truth
    tree = cKDTree(_unit(*field["truth"]))
    sep, sep0 = [], []
    for f in np.flatnonzero(sel):
        w = shift_wcs(field["wcs"][f], res["d_east"][f], res["d_north"][f])
        sep.append(tree.query(_unit(*w.all_pix2world(*field["pos"][f], 0)))[0] * RHO)
        sep0.append(tree.query(_unit(*field["wcs"][f].all_pix2world(*field["pos"][f], 0)))[0] * RHO)
    sep, sep0 = np.concatenate(sep), np.concatenate(sep0)
    assert np.median(sep) < 0.15 < 0.5 < np.median(sep0), (np.median(sep), np.median(sep0))


def test_refcat_matching_nothing_falls_back_to_relative(field):
    sra, sdec = field["truth"]
    far = (sra + 2.0, sdec - 1.0)
    res = refine_pointing(field["catalogs"], field["centres"], refcat=far, match_radius_arcsec=6.0)
    ref = refine_pointing(field["catalogs"], field["centres"], match_radius_arcsec=6.0)
    assert res["mode"] == "relative" and res["n_ref_matches"] == 0
    np.testing.assert_allclose(res["d_east"], ref["d_east"], atol=1e-9)
    np.testing.assert_allclose(res["d_north"], ref["d_north"], atol=1e-9)
    empty = refine_pointing(field["catalogs"], field["centres"], refcat=(np.zeros(0), np.zeros(0)),
                            match_radius_arcsec=6.0)
    assert empty["mode"] == "relative"


# --------------------------------------------------------------------------- synthetic catalogues

def _synthetic(nfx, nfy, rng, density=40, sig=0.15, pe=1.4, dec0=30.0, step=200.0):
    """Catalogues of a nfx x nfy grid of frames (circular, 160" radius, ``step`` arcsec
    apart), ``density`` sources per 320" x 320", errors ``pe`` radial, ``sig`` per axis."""
    step /= 3600.0
    jj, ii = np.meshgrid(np.arange(nfy), np.arange(nfx))
    cdec = dec0 + (jj.ravel() - nfy / 2) * step
    cra = 150.0 + (ii.ravel() - nfx / 2) * step / np.cos(np.radians(cdec))
    ns = int(density * (nfx + 2) * (nfy + 2) * step ** 2 / (320.0 / 3600.0) ** 2)
    sdec = rng.uniform(dec0 - (nfy / 2 + 1) * step, dec0 + (nfy / 2 + 1) * step, ns)
    sra = 150.0 + rng.uniform(-(nfx / 2 + 1) * step, (nfx / 2 + 1) * step, ns) / np.cos(np.radians(sdec))
    sv = _unit(sra, sdec)
    err = rng.normal(0, pe / np.sqrt(2), (cra.size, 2))
    fv = _unit(cra, cdec)
    fe, fn = _basis(fv)
    members = cKDTree(sv).query_ball_point(fv, 160.0 / RHO)
    cats = []
    for f, idx in enumerate(members):
        e, n = _basis(sv[idx])
        v = sv[idx] - (err[f, 0] * fe[f] + err[f, 1] * fn[f]) / RHO
        v += (rng.normal(0, sig, (len(idx), 1)) * e + rng.normal(0, sig, (len(idx), 1)) * n) / RHO
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cats.append({"ra": np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0,
                     "dec": np.degrees(np.arcsin(v[:, 2])), "sigma": np.full(len(idx), sig)})
    return cats, np.column_stack([cra, cdec]), err, (sra, sdec)


def test_min_matches_and_outliers():
    rng = np.random.default_rng(2)
    cats, centres, err, truth = _synthetic(3, 2, rng)
    # an extra frame sharing exactly two sources with frame 0
    two = {k: cats[0][k][:2].copy() for k in ("ra", "dec", "sigma")}
    cats.append(two)
    centres = np.vstack([centres, [two["ra"].mean(), two["dec"].mean()]])
    err = np.vstack([err, [0.0, 0.0]])
    # a gross outlier: one source of frame 1 displaced by 3" (matched, then downweighted)
    cats[1]["ra"][5] += 3.0 / 3600.0 / np.cos(np.radians(cats[1]["dec"][5]))
    res = refine_pointing(cats, centres, match_radius_arcsec=5.0, min_matches=3)
    assert res["nmatch"][6] == 2 and not res["refined"][6]
    assert res["d_east"][6] == 0 and res["d_north"][6] == 0 and np.isnan(res["sigma_east"][6])
    assert res["refined"][:6].all()
    rms, _ = _recovered(res, err, res["refined"], relative=True)
    assert rms < 0.1, rms
    res2 = refine_pointing(cats, centres, match_radius_arcsec=5.0, min_matches=2)
    assert res2["refined"][6] and res2["nmatch"][6] == 2
    res3 = refine_pointing(cats, centres, match_radius_arcsec=5.0, min_matches=10 ** 6)
    assert not res3["refined"].any() and np.all(res3["d_east"] == 0)
    none = refine_pointing([{"ra": [], "dec": [], "sigma": []}] * 2, [[0, 0], [1, 1]],
                           match_radius_arcsec=5.0)
    assert not none["refined"].any() and none["nmatch"].tolist() == [0, 0]


def test_scale_2000_frames():
    rng = np.random.default_rng(9)
    cats, centres, err, truth = _synthetic(50, 40, rng, density=20)
    t0 = time.perf_counter()
    res = refine_pointing(cats, centres, refcat=truth, match_radius_arcsec=5.0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20.0, elapsed  # measured ~2 s (one 2-core machine)
    assert res["refined"].all()
    rms, pull = _recovered(res, err, res["refined"], relative=False)
    assert rms < 0.1, rms
    assert 0.5 < np.std(pull) < 2.0


# --------------------------------------------------------------------------- read_refcat

def test_read_refcat_round_trips(tmp_path):
    ra = np.array([10.5, 359.9, 0.0, 200.123456789])
    dec = np.array([-89.5, 45.0, 0.0, 12.3456789])
    csv = tmp_path / "ref.csv"
    csv.write_text("RA,Dec,mag\n" + "".join(f"{float(r)!r},{float(d)!r},12.0\n" for r, d in zip(ra, dec)))
    r, d = read_refcat(csv)
    assert r.dtype == np.float64 and d.dtype == np.float64
    np.testing.assert_array_equal(r, ra)
    np.testing.assert_array_equal(d, dec)
    fit = tmp_path / "ref.fits"
    Table({"ra": ra, "DEC": dec, "id": np.arange(4)}).write(fit)
    r, d = read_refcat(fit)
    np.testing.assert_array_equal(r, ra)
    np.testing.assert_array_equal(d, dec)
    noext = tmp_path / "ref_table"  # FITS recognised by content
    fits.BinTableHDU(Table({"RA": ra, "DEC": dec})).writeto(noext)
    np.testing.assert_array_equal(read_refcat(noext)[1], dec)


@pytest.mark.parametrize("name, content, words", [
    ("nodec.csv", "ra,mag\n1.0,2.0\n", "dec"),
    ("empty.csv", "", "empty"),
    ("header_only.csv", "ra,dec\n", "no rows"),
    ("garbage.csv", b"\x00\x01\xff\xfe garbage \x89PNG\r\n", "readable"),
    ("dec.csv", "ra,dec\n10.0,95.0\n", "dec out of range"),
    ("ra.csv", "ra,dec\n-1.0,5.0\n", "ra out of range"),
    ("nan.csv", "ra,dec\n10.0,nan\n", "non-finite"),
    ("text.csv", "ra,dec\n10.0,abc\n", "not numeric"),
])
def test_read_refcat_bad_input(tmp_path, name, content, words):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(BadInputError) as info:
        read_refcat(path)
    assert info.value.path == str(path)
    assert words in info.value.reason.lower(), info.value.reason
    assert "\n" not in info.value.reason
    with pytest.raises(BadInputError, match="not found"):
        read_refcat(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- 160 um strips

FWHM160 = (40.0 / 16.0, 40.0 / 18.0)   # px along x and y: 40" PSF on 16" x 18" pixels


def _strip(rng, x0=None, y0=None, flux=0.0, shape=(2, 20), noise=0.54, cloud=None):
    """A 160 um-like strip (MJy/sr): 25 MJy/sr + a linear gradient + optional Gaussian cloud
    (amp, centre px, sigma px, along x) + a pixel-integrated elliptical Gaussian source of total
    ``flux`` (MJy/sr px) at (x0, y0) + noise (``unc`` = noise)."""
    from scipy.special import erf
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    img = 25.0 + 0.05 * (xx - nx / 2) + rng.normal(0.0, noise, shape)
    if cloud is not None:
        amp, cx, cs = cloud
        img += amp * np.exp(-0.5 * ((xx - cx) / cs) ** 2)
    if flux:
        def frac(c, m, f):
            s = f / 2.3548200450309493
            return 0.5 * (erf((c - m + 0.5) / (np.sqrt(2) * s)) - erf((c - m - 0.5) / (np.sqrt(2) * s)))
        img += flux * frac(xx, x0, FWHM160[0]) * frac(yy, y0, FWHM160[1])
    return img, np.full(shape, noise)


def test_extract_narrow_strip_centroids_within_their_errors():
    """2 x 20 strips (16" x 18" pixels, FWHM 2.5 x 2.2 px: too small for the 7-px fit box): a source
    anywhere within 1 px of the strip, on a gradient (and on cirrus in half the frames), is found
    and its centroid lies within its stated error (pulls of unit width); sources whose centre is
    farther off the strip, and clouds without a source, give nothing."""
    rng = np.random.default_rng(160)
    pulls, found, n = [], 0, 300
    for k in range(n):
        x0, y0 = rng.uniform(2.0, 17.0), rng.uniform(-0.9, 1.9)
        cloud = (rng.uniform(15, 40), rng.uniform(0, 19), rng.uniform(3.75, 11.0)) if k % 2 else None
        img, unc = _strip(rng, x0, y0, flux=rng.uniform(60.0, 400.0), cloud=cloud)   # 0.4-2.7 Jy
        cat = extract_sources(img, unc, np.ones(img.shape, bool), 40.0 / 17.0, fwhm_xy=FWHM160)
        assert len(cat["x"]) <= 1
        if len(cat["x"]):
            found += 1
            pulls.append([(cat["x"][0] - x0) / cat["x_err"][0], (cat["y"][0] - y0) / cat["y_err"][0]])
            assert cat["x_err"][0] < 0.2 and cat["y_err"][0] < 0.18 and cat["snr"][0] > 5
    pulls = np.array(pulls)
    assert found > 0.8 * n, found
    assert np.all(np.abs(pulls) < 5), np.abs(pulls).max()
    width = pulls.std(axis=0)   # measured 1.08, 0.91 (x, y); with one FWHM for both axes max |pull| 5.7
    assert np.all((0.8 < width) & (width < 1.25)), width
    # no source: clouds (60-180" sigma) and noise give no detection
    for k in range(100):
        img, unc = _strip(rng, cloud=(rng.uniform(15, 40), rng.uniform(0, 19), rng.uniform(3.75, 11.0)))
        assert len(extract_sources(img, unc, np.ones(img.shape, bool), 40.0 / 17.0, fwhm_xy=FWHM160)["x"]) == 0
    # a bright source 2.5 px off the strip: rejected (its y would rest on the PSF wings alone)
    img, unc = _strip(rng, 10.0, -2.5, flux=3000.0)
    assert len(extract_sources(img, unc, np.ones(img.shape, bool), 40.0 / 17.0, fwhm_xy=FWHM160)["x"]) == 0
    # a transposed strip (20 x 2) gives the transposed centroid; a bad pixel at the peak is left out
    img, unc = _strip(rng, 9.3, 0.6, flux=300.0)
    good = np.ones(img.shape, bool)
    a = extract_sources(img, unc, good, 40.0 / 17.0, fwhm_xy=FWHM160)
    b = extract_sources(img.T, unc.T, good.T, 40.0 / 17.0, fwhm_xy=FWHM160[::-1])
    np.testing.assert_allclose([b["x"][0], b["y"][0], b["x_err"][0], b["y_err"][0]],
                               [a["y"][0], a["x"][0], a["y_err"][0], a["x_err"][0]], rtol=1e-6)
    good[1, 9] = False
    c = extract_sources(np.where(good, img, np.nan), unc, good, 40.0 / 17.0, fwhm_xy=FWHM160)
    assert abs(c["x"][0] - 9.3) < 4 * c["x_err"][0] and abs(c["y"][0] - 0.6) < 4 * c["y_err"][0]


def test_single_match_frames_refined_with_honest_sigma():
    """Frames holding one source each (160 um strips), with a reference catalogue: min_matches=1
    recovers every frame's 2-D offset within its stated sigma (pulls of unit width), the sigma
    being that source's centroid error (plus the reference's); the default 3 refines none."""
    rng = np.random.default_rng(7)
    n, dec0 = 200, -5.0
    gx, gy = np.meshgrid(np.arange(8) * 100.0, np.arange(5) * 100.0)   # 40 sources 100" apart
    sra = 210.0 + (gx.ravel() + rng.uniform(-20, 20, 40)) / 3600.0 / np.cos(np.radians(dec0))
    sdec = dec0 + (gy.ravel() + rng.uniform(-20, 20, 40)) / 3600.0
    err = rng.normal(0.0, 3.9 / np.sqrt(2.0), (n, 2))            # PCS errors, 3.9" radial
    sig = rng.uniform(0.3, 0.8, n)                              # centroid errors per axis, arcsec
    which = rng.integers(0, 40, n)
    v = _unit(sra[which], sdec[which])
    e, nn = _basis(v)
    obs = v - (err[:, :1] * e + err[:, 1:] * nn) / RHO + (rng.normal(0, 1, (n, 1)) * sig[:, None] * e
                                                          + rng.normal(0, 1, (n, 1)) * sig[:, None] * nn) / RHO
    obs /= np.linalg.norm(obs, axis=1, keepdims=True)
    ra, dec = np.degrees(np.arctan2(obs[:, 1], obs[:, 0])) % 360.0, np.degrees(np.arcsin(obs[:, 2]))
    cats = [{"ra": ra[i:i + 1], "dec": dec[i:i + 1], "sigma": sig[i:i + 1]} for i in range(n)]
    centres = np.column_stack([ra, dec])    # each frame's centre at its source (the basis is local)
    res = refine_pointing(cats, centres, refcat=(sra, sdec), match_radius_arcsec=20.0, min_matches=1,
                          ref_sigma_arcsec=0.1)
    assert res["refined"].all() and res["mode"] == "absolute" and np.all(res["nmatch"] == 1)
    d = np.column_stack([res["d_east"], res["d_north"]]) - err
    s = np.column_stack([res["sigma_east"], res["sigma_north"]])
    assert np.all(s >= sig[:, None] * 0.99) and np.all(s < np.hypot(sig, 0.2)[:, None]), "sigma ~ the centroid error"
    pull = d / s
    assert 0.8 < pull.std() < 1.2 and np.abs(pull).max() < 4.5, (pull.std(), np.abs(pull).max())
    none = refine_pointing(cats, centres, refcat=(sra, sdec), match_radius_arcsec=20.0, min_matches=3)
    assert not none["refined"].any() and np.all(none["d_east"] == 0)


def test_prf_fit_equals_photutils_psfphotometry():
    """extract_sources' centroid fit (kernels.pointing._fit_prf) gives photutils'
    PSFPhotometry(CircularGaussianPRF) result on the same box, weights and start: position,
    flux and their errors (1e-4 px, 1e-4 relative: the two fitters' stopping tolerances; the
    centroid errors are >= 2e-3 px), over S/N 8-800, non-uniform errors and starts 0.3 px off;
    a box that leaves the frame or holds a bad pixel is not fitted."""
    import warnings
    from astropy.table import Table
    from photutils.psf import CircularGaussianPRF, PSFPhotometry
    from reduce.mosaic.kernels.pointing import _FWHM_SIGMA, _fit_prf, _pixel_gauss

    rng = np.random.default_rng(7)
    fwhm = 6.0 / 2.55
    half, s = int(np.ceil(fwhm)), fwhm / _FWHM_SIGMA
    xx, yy = np.meshgrid(np.arange(40.0), np.arange(40.0))
    model = CircularGaussianPRF(fwhm=fwhm)
    model.fwhm.fixed = True
    phot = PSFPhotometry(model, (2 * half + 1,) * 2, aperture_radius=fwhm)
    for _ in range(15):
        x0, y0, flux = rng.uniform(10, 30), rng.uniform(10, 30), 10 ** rng.uniform(1.3, 3.3)
        err = rng.uniform(0.8, 1.5, xx.shape)
        img = flux * _pixel_gauss(xx, x0, s)[0] * _pixel_gauss(yy, y0, s)[0] + rng.normal(0, 1, xx.shape) * err
        xi, yi = x0 + rng.normal(0, 0.3), y0 + rng.normal(0, 0.3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = phot(img, error=err, init_params=Table({"x": [xi], "y": [yi]}))
        assert ref["flags"][0] == 0
        x, y, f, f_err, x_err, y_err, converged = _fit_prf(img, err, np.ones(xx.shape, bool), xi, yi, fwhm, half)
        assert converged == 1
        np.testing.assert_allclose([x, y], [ref["x_fit"][0], ref["y_fit"][0]], rtol=0, atol=1e-4)
        np.testing.assert_allclose([f, f_err, x_err, y_err],
                                   [ref[k][0] for k in ("flux_fit", "flux_err", "x_err", "y_err")], rtol=1e-4)
    good = np.ones(xx.shape, bool)
    good[20, 21] = False
    assert np.isnan(_fit_prf(img, err, good, 20.2, 19.6, fwhm, half)[0])
    assert np.isnan(_fit_prf(img, err, np.ones(xx.shape, bool), 1.4, 20.0, fwhm, half)[0])
