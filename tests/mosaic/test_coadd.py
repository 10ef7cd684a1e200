"""Drizzle coaddition (reduce.mosaic.kernels.coadd): flux conservation, uncertainty
calibration, masks/rejects and coverage, tile stitching, agreement with reproject."""
import warnings

import numpy as np
import pytest
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from reduce.mips.kernels.wcs import wcs_header
from reduce.mosaic.kernels.coadd import coadd_tile
from reduce.mosaic.kernels.frames import Frame, Grid, footprint, pixel_centres
from reduce.mosaic.kernels.grid import frames_in_tiles, output_grid, tan_wcs, tile_bounds
from reduce.simulate.mips_cal import distortion_header

SHAPES = {1: (128, 128), 2: (32, 32), 3: (2, 20)}
FWHM = {1: 6.0, 2: 18.0, 3: 40.0}
RA0, DEC0 = 150.0, 2.0


def mips_wcs(chnl, ra, dec, pa):
    return WCS(wcs_header(distortion_header(chnl), ra, dec, pa), relax=True)


def sky(ra, dec, sources, flat=0.0, ramp=0.0):
    """Analytic sky (MJy/sr) at (ra, dec) deg: ``flat`` + ``ramp`` MJy/sr per arcmin east
    of (RA0, DEC0) + circular Gaussians (ra, dec, peak MJy/sr, fwhm arcsec) in exact
    gnomonic offsets about each source."""
    out = np.full(np.shape(ra), float(flat))
    r, d = np.radians(ra), np.radians(dec)
    for ra_s, dec_s, peak, fwhm in sources:
        rs, ds = np.radians(ra_s), np.radians(dec_s)
        cosc = np.sin(ds) * np.sin(d) + np.cos(ds) * np.cos(d) * np.cos(r - rs)
        xi = np.cos(d) * np.sin(r - rs) / cosc
        eta = (np.cos(ds) * np.sin(d) - np.sin(ds) * np.cos(d) * np.cos(r - rs)) / cosc
        rr2 = (xi**2 + eta**2) * (206264.806 ** 2)
        out += peak * np.exp(-0.5 * rr2 / (fwhm / 2.3548) ** 2)
    if ramp:
        out += ramp * (ra - RA0) * np.cos(np.radians(DEC0)) * 60.0
    return out


def render(w, shape, sources, **kw):
    """The analytic sky at the pixel centres of a frame (a point-sampled image)."""
    x, y = pixel_centres(shape)
    return sky(*w.all_pix2world(x, y, 0), sources, **kw)


def input_solid_angles(w, shape):
    """Solid angle (sr) of every pixel of a TAN-SIP frame: the area of the quadrilateral of
    its corners on the frame's own tangent plane (SIP applied by sip_pix2foc, then CD).
    The gnomonic area element differs from the sphere's by cos^3 of the distance from the
    tangent point, < 1e-6 within a MIPS frame, and the chord quadrilateral differs from the
    SIP-bent pixel by O(SIP^2) ~ 1e-9: exact enough for a 1e-3 test."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny + 1, 0:nx + 1] - 0.5
    foc = w.sip_pix2foc(np.column_stack([xx.ravel(), yy.ravel()]), 0)
    X, Y = ((foc @ w.wcs.cd.T) * np.pi / 180).T
    X, Y = X.reshape(ny + 1, nx + 1), Y.reshape(ny + 1, nx + 1)
    d1x, d1y = X[1:, 1:] - X[:-1, :-1], Y[1:, 1:] - Y[:-1, :-1]
    d2x, d2y = X[1:, :-1] - X[:-1, 1:], Y[1:, :-1] - Y[:-1, 1:]
    return 0.5 * np.abs(d1x * d2y - d2x * d1y)


def make_frame(w, shape, image, unc):
    return Frame(np.asarray(image, float), np.broadcast_to(unc, shape).astype(float),
                 np.ones(shape, bool), w)


@pytest.mark.parametrize("chnl, out_scale", [(1, 2.45), (2, 4.0)])
def test_flux_conservation(chnl, out_scale):
    shape = SHAPES[chnl]
    w = mips_wcs(chnl, RA0, DEC0, 37.0)
    half = 0.25 * shape[0] * {1: 2.55, 2: 9.85}[chnl] / 3600  # sources within the inner half
    sources = [(RA0 + 0.3 * half, DEC0 - 0.5 * half, 7.0, FWHM[chnl]),
               (RA0 - 0.8 * half, DEC0 + 0.6 * half, 3.0, FWHM[chnl]),
               (RA0 + 0.9 * half, DEC0 + 0.9 * half, 1.5, FWHM[chnl])]
    image = render(w, shape, sources)
    assert image[0].max() < 1e-6 * image.max()  # sources fully inside the frame
    g = output_grid([footprint(w, shape)], out_scale)
    sci, unc, cov = coadd_tile(g, [make_frame(w, shape, image, 1.0)])
    omega_out = proj_plane_pixel_area(g.wcs) * (np.pi / 180) ** 2
    omega_in = input_solid_angles(w, shape)
    f_in = np.sum(image * omega_in)
    f_out = np.nansum(sci * omega_out)
    assert f_out == pytest.approx(f_in, rel=1e-3)  # measured: ~1e-8 (24 um), ~1e-7 (70 um)
    # the SIP pixel areas matter at this level: the nominal-area sum is off by more
    naive = image.sum() * proj_plane_pixel_area(w) * (np.pi / 180) ** 2
    assert abs(f_out / f_in - 1) < 0.1 * abs(naive / f_in - 1)
    # and the output resembles the sky: the brightest pixel lies on the bright source
    # (within the size of an input pixel, over which drizzle spreads a value)
    x, y = g.wcs.all_world2pix(sources[0][0], sources[0][1], 0)
    yp, xp = np.unravel_index(np.nanargmax(sci), sci.shape)
    assert np.hypot(xp - x, yp - y) < {1: 2.55, 2: 9.85}[chnl] / out_scale
    assert 0.6 * 7.0 < sci[yp, xp] <= 7.0


def dither_stack(chnl, n, rng, step):
    """n frames dithered by up to ``step`` arcsec around (RA0, DEC0), random PA."""
    pts = [(RA0 + dx / 3600 / np.cos(np.radians(DEC0)), DEC0 + dy / 3600, pa) for dx, dy, pa in
           zip(rng.uniform(-step, step, n), rng.uniform(-step, step, n), rng.uniform(0, 360, n))]
    return [mips_wcs(chnl, *p) for p in pts]


SOURCES = [(RA0 + 20 / 3600, DEC0 - 30 / 3600, 5.0, 6.0), (RA0 - 40 / 3600, DEC0 + 10 / 3600, 2.0, 6.0),
           (RA0 + 5 / 3600, DEC0 + 50 / 3600, 1.0, 6.0)]


def test_uncertainty_calibration():
    """Pulls of the coadd of noisy dithered frames against the coadd of the same frames
    without noise.

    Drizzling makes the noise of neighbouring output pixels correlated (each input pixel
    feeds ~(2.55/2.45)^2 + its overlaps ~ 2-4 output pixels), but the propagated ``unc`` is the
    exact marginal variance of each output pixel (a fixed linear combination of independent
    input pixels), so per-pixel pulls are N(0, 1): the correlation only makes the pulls of
    neighbouring pixels dependent, which widens the scatter of their sample mean/std (a few
    thousand effectively independent pixels: ~2 % on the std), not their expectation. The
    naive 1/sqrt(sum of weights) would be wrong here by the overlap fractions."""
    rng = np.random.default_rng(11)
    shape = SHAPES[1]
    ws = dither_stack(1, 9, rng, 40.0)
    g = output_grid([footprint(w, shape) for w in ws], 2.45)
    sigmas = rng.uniform(0.03, 0.09, len(ws))  # frames of different depth
    clean, noisy = [], []
    for w, s in zip(ws, sigmas):
        truth = render(w, shape, SOURCES, flat=2.0)
        unc = s * (1 + 0.5 * rng.random(shape))  # and per-pixel unc varying
        clean.append(make_frame(w, shape, truth, unc))
        noisy.append(make_frame(w, shape, truth + unc * rng.standard_normal(shape), unc))
    ref, ref_unc, cov = coadd_tile(g, clean)
    sci, unc, cov2 = coadd_tile(g, noisy)
    np.testing.assert_array_equal(unc, ref_unc)  # unc does not depend on the data
    np.testing.assert_array_equal(cov, cov2)
    well = cov >= 6
    assert well.sum() > 5000
    pulls = ((sci - ref) / unc)[well]
    assert abs(pulls.mean()) < 0.1
    assert pulls.std() == pytest.approx(1.0, rel=0.1)  # measured: mean -0.006, std 1.004
    # the noiseless coadd holds the sources' flux (analytic sky at the output pixel centres)
    x, y = pixel_centres(g.shape)
    analytic = sky(*g.wcs.all_pix2world(x, y, 0), SOURCES, flat=2.0)
    assert np.sum((ref - 2.0)[well]) == pytest.approx(np.sum((analytic - 2.0)[well]), rel=0.01)
    # unc shrinks with depth: mean unc ~ typical sigma / sqrt(number of frames)
    assert np.nanmedian(unc[cov > 8.9]) < np.median(sigmas) * 1.5 / np.sqrt(9) * 1.2


def test_unc_equals_inverse_variance_on_aligned_grid():
    """Output grid = the input pixel grid (TAN, no SIP): each output pixel is exactly one input
    pixel per frame, so unc must be 1/sqrt(sum 1/sigma_k^2) and sci the weighted mean."""
    shape = (20, 30)
    w = tan_wcs(RA0, DEC0, 2.55, crpix=(15.5, 10.5))
    g = Grid(tan_wcs(RA0, DEC0, 2.55, crpix=(15.5, 10.5), shape=shape), shape)
    s = np.array([0.1, 0.2, 0.05])
    vals = np.array([1.0, 2.0, 4.0])
    frames = [make_frame(w, shape, np.full(shape, v), sk) for v, sk in zip(vals, s)]
    sci, unc, cov = coadd_tile(g, frames, offsets=[0.0, 0.5, 1.0])
    wts = 1 / s**2
    np.testing.assert_allclose(unc, 1 / np.sqrt(wts.sum()), rtol=1e-5)
    np.testing.assert_allclose(sci, np.sum(wts * (vals - [0, 0.5, 1.0])) / wts.sum(), rtol=1e-5)
    np.testing.assert_allclose(cov, 3.0, rtol=1e-5)


def three_frames(rng):
    shape = SHAPES[1]
    ws = [mips_wcs(1, RA0 + dx / 3600, DEC0 + dy / 3600, pa)
          for dx, dy, pa in [(0, 0, 10.0), (12.0, -7.0, 14.0), (-9.0, 11.0, 7.0)]]
    frames = [make_frame(w, shape, render(w, shape, SOURCES, flat=1.0)
                         + 0.01 * rng.standard_normal(shape), 0.01) for w in ws]
    return ws, frames


def test_masked_and_rejected_pixels_and_coverage():
    rng = np.random.default_rng(5)
    ws, frames = three_frames(rng)
    shape = SHAPES[1]
    g = output_grid([footprint(w, shape) for w in ws], 2.45)
    frames[0].image[60, 60] = 1e9  # masked
    frames[0].good[60, 60] = False
    frames[1].image[30, 90] = -1e9  # rejected
    frames[1].image[70, 40] = 3e8  # unusable unc: must not give an infinite weight
    frames[1].unc[70, 40] = 0.0
    frames[2].image[100, 20] = 5e8  # rejected
    rejects = [None, np.zeros(shape, bool), np.zeros(shape, bool)]
    rejects[1][30, 90] = rejects[2][100, 20] = True
    sci, unc, cov = coadd_tile(g, frames, rejects=rejects)
    assert np.nanmax(np.abs(sci)) < 10.0  # sky peak ~6 MJy/sr; the bad values are >= 5e8
    assert np.all(np.isfinite(unc) == np.isfinite(sci))
    # where the frames all overlap, coverage is 3 except at the holes of the unused pixels
    interior = np.ones(g.shape, bool)  # output pixels >= 2 input pixels inside every frame
    radec = g.wcs.all_pix2world(*pixel_centres(g.shape), 0)
    for w in ws:
        xi, yi = w.all_world2pix(*radec, 0)
        interior &= (xi > 2) & (xi < shape[1] - 3) & (yi > 2) & (yi < shape[0] - 3)
    holes = np.zeros(g.shape, bool)
    for k, yb, xb in [(0, 60, 60), (1, 30, 90), (1, 70, 40), (2, 100, 20)]:
        w = ws[k]
        xo, yo = g.wcs.all_world2pix(*w.all_pix2world(xb, yb, 0), 0)
        hole = np.zeros(g.shape, bool)
        hole[int(round(float(yo))) - 2:int(round(float(yo))) + 3,
             int(round(float(xo))) - 2:int(round(float(xo))) + 3] = True
        # one frame missing over one input pixel's area, (2.55/2.45)^2 output pixels
        missing = 3.0 - cov[hole & interior]
        assert missing.sum() == pytest.approx((2.55 / 2.45) ** 2, rel=0.005)  # SIP: +-0.1 %
        holes |= hole
    full = interior & ~holes
    assert full.sum() > 5000
    np.testing.assert_allclose(cov[full], 3.0, atol=1e-5)  # measured: within 7e-7
    # the edge of the stack: coverage between 0 and 3, no weight -> NaN, coverage 0
    assert np.all((cov >= 0) & (cov <= 3.0 + 1e-4))
    assert np.all(np.isnan(sci[cov == 0]))
    assert np.all(np.isfinite(sci[cov > 0.01]))


def test_tiles_stitched_equal_whole_grid():
    rng = np.random.default_rng(8)
    shape = SHAPES[2]
    ws = dither_stack(2, 6, rng, 200.0)
    frames = [make_frame(w, shape, render(w, shape, [(RA0, DEC0, 4.0, 18.0)], flat=3.0)
                         + 0.1 * rng.standard_normal(shape), 0.1 * (1 + rng.random(shape)))
              for w in ws]
    offsets = rng.normal(0, 0.5, len(frames))
    rejects = [rng.random(shape) < 0.02 for _ in frames]
    fps = np.array([footprint(w, shape) for w in ws])
    g = output_grid(fps, 4.0)
    whole = coadd_tile(g, frames, offsets, rejects, pixfrac=0.8)
    bounds = tile_bounds(g.shape, size=23)
    assert len(bounds) > 9
    stitched = [np.full(g.shape, -1.0, np.float32) for _ in range(3)]
    for (y0, y1, x0, x1), idx in zip(bounds, frames_in_tiles(fps, g, bounds)):
        part = coadd_tile(g.tile(y0, y1, x0, x1), [frames[i] for i in idx], offsets[idx],
                          [rejects[i] for i in idx], pixfrac=0.8)
        for out, p in zip(stitched, part):
            assert p.shape == (y1 - y0, x1 - x0) and p.dtype == np.float32
            out[y0:y1, x0:x1] = p
    for a, b in zip(whole, stitched):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(b, a, rtol=2e-6, atol=1e-6 * np.nanmax(np.abs(a)))
    assert np.isfinite(whole[0]).mean() > 0.5


def test_agrees_with_reproject_exact():
    """On a smooth sky (flat + gradient + a 60" blob), drizzle and reproject_exact +
    mean-combining agree to 2e-4 of the sky level where all frames overlap (both are overlap-area
    weighted means of the frames' pixels; reproject_interp differs from both by ~1.7 % here,
    the difference between point sampling and pixel averaging of this sky)."""
    from reproject import reproject_exact
    from reproject.mosaicking import reproject_and_coadd
    rng = np.random.default_rng(2)
    shape = SHAPES[2]
    ws = dither_stack(2, 4, rng, 30.0)
    src = [(RA0 + 30 / 3600, DEC0 - 20 / 3600, 3.0, 60.0)]
    frames = [make_frame(w, shape, render(w, shape, src, flat=10.0, ramp=1.0), 0.1) for w in ws]
    g = output_grid([footprint(w, shape) for w in ws], 4.0)
    sci, _, cov = coadd_tile(g, frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep, foot = reproject_and_coadd([(f.image, f.wcs) for f in frames], g.wcs, shape_out=g.shape,
                                        reproject_function=reproject_exact, combine_function="mean")
    both = (cov > len(frames) - 1e-3) & (foot > len(frames) - 1e-3)
    assert both.sum() > 200
    rel = np.abs(sci[both] - rep[both]) / 10.0
    assert rel.max() < 2e-4  # measured: 2.3e-5 (median 3e-6)
