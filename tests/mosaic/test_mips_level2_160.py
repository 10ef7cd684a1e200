"""MIPS level 2 at 160 um (issue 9): astrometry 2.0" rms and point-source photometry 3 %.

The photometry AOR of test_mips_level2 holds too few sources on its 2 x 20 pixel (16" x 18")
160 um strip, so this module simulates its own AOR: a slow scan map of the 160 um array alone
(AOR160), with six point sources of 1.5-3 Jy injected at chosen, isolated places of the map
(``simulate_mips(extra_sources=...)``, INJECT) besides the simulator's catalogue. It is
reduced as in test_mips_level2: simulate_mips -> ingest_mips -> reduce_mips ->
reduce_mips_level2 with a reference catalogue of the true source positions
(``MosaicParams().with_refcat``). The truth image is ``mips_sky.truth_image`` (it has the scan
map's background gradient, which test_mips_level2._truth_image leaves out).

160 um frames are two pixels high, too few for the 2-D fit box of ``kernels.pointing
.extract_sources`` (2 ceil(FWHM_px) + 1 = 7 pixels); there a narrow-frame fit (the
pixel-integrated Gaussian, FWHM fixed along each pixel axis, plus a background quadratic along
the strip, on the box clipped to the frame) measures the sources centred within 1 pixel of the
strip, and one matched source refines a frame (``MosaicParams.min_matches_narrow``): 129-141 of
the 448 frames at seeds 16-19; the others keep their spacecraft pointing (3.9" radial rms per
DCE, sim). Background: one additive offset per scan leg (``MosaicParams.background_groups``,
"auto": per leg at 70/160 um; legs from AORKEY/EXPID, ``kernels.background.leg_groups``), fitted
from the pairs of overlapping strips of different legs. It recovers the simulator's per-leg
offsets (+-0.9 MJy/sr, 0.49-0.71 rms) within 0.03-0.08 MJy/sr rms; one offset per 2 x 20 strip
left 0.37-0.50 (each strip's offset carries 0.1-0.2 MJy/sr of its own noise and sources, and
its nearest frames are on its own leg, so the legs were not linked).

Measured at seeds 16-19 (24 sources; before = one offset per frame, at the branch's previous
commit): centroids 0.25-0.48" rms (0.35-0.51"); S/N-weighted mean ratio 0.987-0.999
(0.983-1.003); single sources within 2.8 % of the truth, 1.6 % rms (up to 6.4 %, 2.5 % rms, 6 of
24 beyond 3 %); the empty-aperture scatter (``_empty_sigma``) fell from 0.019-0.041 Jy to
0.006-0.011 Jy, so that the pulls, now set by systematics, grew: up to 7.2, 4.5, 8.3, 6.6 sigmas
at seeds 16-19 (2.3, 5.0, 4.3, 2.3). What remains (the mean ratio's -0.1 to -1.3 % and the
single sources' 1.6 % rms) is put down to the frames that keep the spacecraft pointing, mostly
strips that see only a source's wings (centre > 1 px off the strip), by a measurement made
before the per-leg offsets and not repeated since: ~1-2 % on noiseless frames, while with every
frame at its true pointing, noiseless and without the per-leg offsets, every ratio was within
0.4 % (with 0.54 MJy/sr of noise added, within 1.3 sigma). Hence the per-source 3 % test passes
and the 3-sigma one is a strict xfail.
"""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from reduce.mosaic.pipeline import MosaicParams, reduce_mips_level2
from reduce.simulate.mips import AorSpec
from reduce.simulate.mips_sky import _offset, truth_image
from tests.mosaic.test_mips_level2 import _aperture_jy, simulate_to_bcds

SEED = 16
# 160 um scan map: 7 legs 80" apart of 64 DCEs at 2 "/s (6.9" per DCE along the scan, 3 MIPS-s
# DCEs), the array's 320" long side across the scan: ~800" x 480" (across x along), each point
# within 250" of the map's axis seen in 10-20 DCEs; the field's 20 Jy source lies ~150" before
# the map's centre along the scan (the 160 um array is 150" ahead of the boresight).
AOR160 = AorSpec(aorkey=21000160, aot_type="MipsScan", object="L2C", ra=210.0, dec=-5.0, start_mjd=53510.0,
                 n_dce=448, arrays=(3,), pa=30.0, n_legs=7, leg_sep=80.0, scan_rate=2.0, overhead=0.3)
# injected sources: (across the scan, along the scan) arcsec from the AOR's target (the array's
# +x and +y axes), 160 um flux Jy; >= 160" apart and >= 240" from the target
INJECT = [(-240.0, 60.0, 2.0), (240.0, 60.0, 3.0), (-240.0, 260.0, 2.5), (-80.0, 240.0, 1.5),
          (80.0, 280.0, 3.0), (240.0, 250.0, 2.0)]
RADIUS = 64.0                 # arcsec, aperture radius (1.6 FWHM of the 40" PSF, 8 mosaic pixels of 8")
ANNULUS = (80.0, 112.0)       # arcsec, sky annulus (2-2.8 FWHM)
CUT = 7                       # centroid cut half-size, pixels (15 x 15 pixels = 3 FWHM)
MIN_COV = 8                   # frames covering the source's mosaic pixel
PIXEL = 8.0                   # arcsec, the 160 um mosaic pixel (arrays.PIXEL_SCALE)
BRIGHT, RING = 0.5, 60.0      # Jy, arcsec: no empty aperture within RING of a source above BRIGHT


def injected(spec=AOR160, inject=INJECT):
    """INJECT as extra_sources for simulate_mips (24 and 70 um fluxes: a cold SED, unused)."""
    dx, dy, f = (np.array(v) for v in zip(*inject))
    pa = np.radians(spec.pa)
    ra, dec = _offset(spec.ra, spec.dec, -dx * np.cos(pa) + dy * np.sin(pa), dx * np.sin(pa) + dy * np.cos(pa))
    return {"ra": ra, "dec": dec, "flux24": f / 30, "flux70": f / 1.5, "flux160": f}


def simulate_and_reduce(root, seed=SEED, spec=AOR160, inject=INJECT):
    """The 160 um mosaic of ``spec`` (absolute mode, reference catalogue = truth): (truth dict, out dir)."""
    store, truth, refcat = simulate_to_bcds(root, seed=seed, specs=[spec], extra_sources=injected(spec, inject))
    lines = []
    res = reduce_mips_level2(store, root / "absolute", report=lines.append, params=MosaicParams().with_refcat(refcat))
    assert res.exit_code == 0, lines
    return truth, root / "absolute"


@pytest.fixture(scope="module")
def level2_160(tmp_path_factory):
    return simulate_and_reduce(tmp_path_factory.mktemp("level2_160"))


def _product(out, kind):
    (path,) = list(out.glob(f"SPITZER_M3_*_{kind}.{'tbl' if kind == 'mptg' else 'fits'}"))
    return path


def _empty_sigma(resid, w, cov, bright_xy, *, seed, n=60, tries=20000):
    """(scatter [Jy], number) of the aperture (RADIUS, ANNULUS, ``_aperture_jy``) at up to ``n``
    random places of ``resid`` (mosaic - truth) covered by >= MIN_COV frames, with every
    pixel within RING of ``bright_xy`` (pixel positions of the sources above BRIGHT) left out:
    there the mosaic's PSF, wider than the simulator's (16" x 18" detector pixels drizzled,
    pointing jitter), leaves residual rings (+-1-3 MJy/sr at 20-60"), which are no empty sky."""
    yy, xx = np.mgrid[0:resid.shape[0], 0:resid.shape[1]]
    masked = resid.copy()
    for bx, by in zip(*bright_xy):
        masked[np.hypot(xx - bx, yy - by) * PIXEL < RING] = np.nan
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(tries):
        x, y = rng.uniform(0, resid.shape[1] - 1), rng.uniform(0, resid.shape[0] - 1)
        if cov[int(round(y)), int(round(x))] >= MIN_COV:
            ra, dec = w.all_pix2world(x, y, 0)
            v = _aperture_jy(masked, w, float(ra), float(dec), RADIUS, ANNULUS)   # NaN: aperture not all finite
            if np.isfinite(v):
                vals.append(v)
                if len(vals) == n:
                    break
    return float(np.std(vals)), len(vals)


def measure(truth, out):
    """Centroid errors ["] and aperture flux ratios of the injected sources whose mosaic pixel is
    covered by >= MIN_COV frames, whose aperture is all covered and annulus >= 90 % covered,
    each measured on the mosaic minus the truth image of every other source (as
    test_mips_level2's 70 um test): centroid_2dg on the 15 x 15 pixels round the true position
    minus the annulus median; ``_aperture_jy`` (RADIUS, ANNULUS) over the flux. With the empty
    aperture scatter (``_empty_sigma``) and the frames' pointing-refinement counts."""
    from photutils.centroids import centroid_2dg
    with fits.open(_product(out, "maic")) as hd:
        img, w = hd[0].data.astype(float), WCS(hd[0].header)
    cov = fits.getdata(_product(out, "mcov"))
    rows = Table.read(_product(out, "mptg"), format="ascii.ipac")
    model = truth_image(truth, 160, w, img.shape)
    src = {k: np.asarray(v) for k, v in truth["sky"]["sources"].items()}
    x, y = w.all_world2pix(src["ra"], src["dec"], 0)
    bright = src["flux160"] > BRIGHT
    sigma, nempty = _empty_sigma(img - model, w, cov, (x[bright], y[bright]), seed=3)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    first, count = truth["injected_sources"]["first"], truth["injected_sources"]["count"]
    res = {"errs": [], "ratio": [], "flux": [], "cov": []}
    for j in range(first, first + count):
        xi, yi = int(round(x[j])), int(round(y[j]))
        rr = np.hypot(xx - x[j], yy - y[j]) * PIXEL
        if (not (CUT <= xi < img.shape[1] - CUT and CUT <= yi < img.shape[0] - CUT) or cov[yi, xi] < MIN_COV
                or not np.isfinite(img[rr <= RADIUS]).all() or np.isfinite(img[rr <= ANNULUS[1]]).mean() < 0.9):
            continue
        others = {k: np.delete(v, j).tolist() for k, v in src.items()}
        clean = img - truth_image(dict(truth, sky=dict(truth["sky"], sources=others)), 160, w, img.shape)
        cut = clean[yi - CUT:yi + CUT + 1, xi - CUT:xi + CUT + 1]
        cx, cy = centroid_2dg(cut - np.nanmedian(clean[(rr > ANNULUS[0]) & (rr <= ANNULUS[1])]))
        r2, d2 = w.all_pix2world(xi - CUT + cx, yi - CUT + cy, 0)
        res["errs"].append(np.hypot((r2 - src["ra"][j]) * np.cos(np.radians(src["dec"][j])), d2 - src["dec"][j]) * 3600)
        res["ratio"].append(_aperture_jy(clean, w, src["ra"][j], src["dec"][j], RADIUS, ANNULUS) / src["flux160"][j])
        res["flux"].append(src["flux160"][j])
        res["cov"].append(float(cov[yi, xi]))
    res = {k: np.array(v) for k, v in res.items()}
    res.update(sigma=sigma, nempty=nempty, nrefined=int(rows["refined"].sum()), nframes=len(rows))
    return res


@pytest.fixture(scope="module")
def measured(level2_160):
    return measure(*level2_160)


def _figures(m):
    err = m["sigma"] / m["flux"]
    mean = float(np.sum(m["ratio"] / err**2) / np.sum(1 / err**2))
    rms = float(np.sqrt(np.mean(np.square(m["errs"]))))
    return {"n": len(m["errs"]), "rms_arcsec": rms, "errs": m["errs"].round(2).tolist(), "mean_ratio": mean,
            "ratios": m["ratio"].round(4).tolist(), "flux_jy": m["flux"].tolist(), "sigma_jy": m["sigma"],
            "n_empty": m["nempty"], "pulls": ((m["ratio"] - 1) / err).round(1).tolist(),
            "cov": m["cov"].round(1).tolist(), "frames_refined": f"{m['nrefined']}/{m['nframes']}"}


def test_160um_positions_within_2_arcsec(measured):
    """160 um mosaic with --refcat (frames with a source refined, the others at their spacecraft
    pointing, see the module docstring): centroids (centroid_2dg, 15 x 15 pixels of 8") of the >= 5 injected sources
    within 2.0" rms of the truth."""
    f = _figures(measured)
    assert f["n"] >= 5, f
    assert f["rms_arcsec"] < 2.0, f


def test_160um_photometry_mean_within_3_percent(measured):
    """Aperture photometry of the 160 um mosaic: radius 64" (1.6 FWHM), annulus 80-112" (median),
    each source on the mosaic minus the truth image of every other source. No aperture
    correction: the mosaic PSF (Gaussian 40" FWHM, sigma 17.0", widened by the 16" x 18"
    detector pixels drizzled onto 8" pixels and by ~2.8" per axis of pointing jitter: sigma
    ~18") leaves exp(-64^2 / (2 * 18^2)) ~ 0.2 % outside the aperture and < 1e-4 of its peak in
    the annulus. The S/N-weighted mean ratio (sigma from empty apertures, ``_empty_sigma``) of
    the >= 5 injected sources within 3 % of 1."""
    f = _figures(measured)
    assert f["n"] >= 5 and f["n_empty"] >= 30, f
    assert abs(f["mean_ratio"] - 1) < 0.03, f


def test_160um_background_one_offset_per_leg(level2_160):
    """The default background groups at 160 um are the scan legs (header BGGROUP = 'leg'): one
    offset for the 64 DCEs of each leg, within 0.15 MJy/sr of the simulator's per-leg offsets
    (+-0.9 MJy/sr; measured within 0.06, 0.06, 0.05, 0.10 at seeds 16-19; one offset per
    frame was 0.52-0.64 MJy/sr rms off the leg's)."""
    truth, out = level2_160
    assert fits.getheader(_product(out, "maic"))["BGGROUP"] == "leg"
    rows = Table.read(_product(out, "mptg"), format="ascii.ipac")
    legs = np.repeat(np.arange(AOR160.n_legs), AOR160.n_dce // AOR160.n_legs)
    found = np.asarray(rows["bg_offset"], float)
    true = np.asarray(truth["leg_offsets"][str(AOR160.aorkey)]["3"])
    for k in range(AOR160.n_legs):
        assert np.ptp(found[legs == k]) < 1e-6, (k, found[legs == k])
    assert np.all(np.abs(found - true[legs]) < 0.15), (found[::64], true)


def test_160um_photometry_each_within_3_percent(measured):
    """Issue 9's per-source criterion: each injected source's aperture flux (as above) within 3 %
    of its truth (at seeds 16-19 all 24 within 2.8 %, 1.6 % rms; module docstring)."""
    f = _figures(measured)
    assert f["n"] >= 5, f
    assert np.all(np.abs(np.array(f["ratios"]) - 1) < 0.03), f


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="at 160 um the single sources' systematic errors (1.6 % rms, from the frames that keep "
                   "the spacecraft pointing: module docstring) exceed 3 empty-aperture sigmas (0.3-0.5 % of a "
                   "2 Jy source with per-leg background offsets): pulls up to 7.2, 4.5, 8.3, 6.6 at seeds 16-19 "
                   "(7.2 at this module's seed 16)")
def test_160um_photometry_each_within_3_sigma(measured):
    """Each injected source's aperture flux (as above) within 3 sigma of its truth, sigma the
    scatter of the same aperture at empty places of mosaic - truth (``_empty_sigma``)."""
    f = _figures(measured)
    assert f["n"] >= 5 and f["n_empty"] >= 30, f
    assert np.all(np.abs(np.array(f["pulls"])) < 3), f
