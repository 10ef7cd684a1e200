"""Output grid, tiling, and frame-to-tile assignment (reduce.mosaic.kernels.grid)."""
import numpy as np
import pytest
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from reduce.mips.kernels.wcs import wcs_header
from reduce.mosaic.kernels.coadd import coadd_tile
from reduce.mosaic.kernels.frames import Frame, footprint, pixmap
from reduce.mosaic.kernels.grid import frames_in_tiles, mean_direction, output_grid, tile_bounds
from reduce.simulate.mips_cal import distortion_header


def mips_wcs(chnl, ra, dec, pa):
    return WCS(wcs_header(distortion_header(chnl), ra, dec, pa), relax=True)


SHAPES = {1: (128, 128), 2: (32, 32), 3: (2, 20)}


def frames_at(chnl, pointings):
    ws = [mips_wcs(chnl, ra, dec, pa) for ra, dec, pa in pointings]
    return ws, np.array([footprint(w, SHAPES[chnl]) for w in ws])


# frames straddling RA = 0/360; frames around the north pole (RA all over the place)
WRAP = [(359.95, 5.0, 10.0), (0.04, 5.03, 80.0), (359.99, 4.96, -40.0), (0.0, 5.0, 0.0)]
POLE = [(ra, 89.97, pa) for ra, pa in [(0.0, 0.0), (90.0, 30.0), (180.0, 60.0), (270.0, 120.0),
                                        (45.0, 200.0)]]


@pytest.mark.parametrize("pointings, chnl, scale", [(WRAP, 1, 2.45), (POLE, 1, 2.45),
                                                     (POLE, 2, 4.0), (WRAP, 3, 8.0)])
def test_output_grid_covers_wrap_and_pole(pointings, chnl, scale):
    ws, fps = frames_at(chnl, pointings)
    margin = 2
    g = output_grid(fps, scale, margin_px=margin)
    ny, nx = g.shape
    assert isinstance(ny, int) and isinstance(nx, int)
    # north up, east left, exact pixel scale
    s = scale / 3600.0
    np.testing.assert_array_equal(g.wcs.wcs.cd, [[-s, 0.0], [0.0, s]])
    np.testing.assert_allclose(proj_plane_pixel_scales(g.wcs), [s, s], rtol=1e-15)
    assert list(g.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    # tangent point at a pixel centre
    assert np.all(g.wcs.wcs.crpix == np.round(g.wcs.wcs.crpix))
    # every corner inside, with the margin to spare (pixel edges at -0.5, n - 0.5)
    x, y = g.wcs.all_world2pix(fps[..., 0].ravel(), fps[..., 1].ravel(), 0)
    assert np.all(x >= margin - 0.5 - 1e-9) and np.all(x <= nx - 0.5 - margin + 1e-9)
    assert np.all(y >= margin - 0.5 - 1e-9) and np.all(y <= ny - 0.5 - margin + 1e-9)
    # and tight: no more than one spare pixel beyond the margin on each side
    assert x.min() < margin + 0.5 and x.max() > nx - 1.5 - margin
    assert y.min() < margin + 0.5 and y.max() > ny - 1.5 - margin
    # every input pixel centre lands inside too
    for w in ws:
        pm = pixmap(w, SHAPES[chnl], g.wcs)
        assert pm[..., 0].min() > -0.5 and pm[..., 0].max() < nx - 0.5
        assert pm[..., 1].min() > -0.5 and pm[..., 1].max() < ny - 0.5
    # north up: a step north in Dec is +y, a step east in RA is -x (away from the pole)
    ra0, dec0 = g.wcs.wcs.crval
    xn, yn = g.wcs.all_world2pix([ra0, ra0, ra0 + 0.001], [dec0, dec0 + 0.001, dec0], 0)
    assert yn[1] - yn[0] == pytest.approx(3.6 / scale, rel=1e-6) and abs(xn[1] - xn[0]) < 1e-9
    assert xn[2] < xn[0]


def test_mean_direction_wraps():
    ra, dec = mean_direction([359.9, 0.1], [10.0, 10.0])
    assert min(ra, 360 - ra) < 1e-9 and dec == pytest.approx(10.0, abs=1e-4)
    ra, dec = mean_direction([0, 90, 180, 270], [89.0] * 4)
    assert dec == pytest.approx(90.0, abs=1e-9)


def test_tile_bounds_cover_once():
    shape = (1100, 700)
    b = tile_bounds(shape, size=512)
    assert len(b) == 3 * 2
    count = np.zeros(shape, int)
    for y0, y1, x0, x1 in b:
        assert 0 < y1 - y0 <= 512 and 0 < x1 - x0 <= 512
        count[y0:y1, x0:x1] += 1
    assert np.all(count == 1)


def test_frames_in_tiles_matches_coverage():
    """A tile lists a frame if the frame's drizzled coverage reaches into it, and never when
    the bounding box of that coverage stays more than the pad (+1) away from the tile."""
    rng = np.random.default_rng(3)
    pts = [(30.0 + dx / 3600, -20.0 + dy / 3600, pa) for dx, dy, pa in
           zip(rng.uniform(-250, 250, 6), rng.uniform(-250, 250, 6), rng.uniform(0, 360, 6))]
    ws, fps = frames_at(2, pts)
    g = output_grid(fps, 9.0)
    bounds = tile_bounds(g.shape, size=16)
    pad = 2.0
    assign = frames_in_tiles(fps, g, bounds, pad_px=pad)
    assert len(assign) == len(bounds) and all(a.dtype.kind == "i" for a in assign)
    ones = np.ones(SHAPES[2])
    n_listed = 0
    for k, w in enumerate(ws):
        f = Frame(ones, ones, ones.astype(bool), w)
        cov = coadd_tile(g, [f])[2] > 0
        ys, xs = np.nonzero(cov)
        near = np.zeros_like(cov)
        m = int(pad) + 1  # the pad, + the bbox of corners vs of covered pixel centres
        near[max(ys.min() - m, 0):ys.max() + m + 1, max(xs.min() - m, 0):xs.max() + m + 1] = True
        for (y0, y1, x0, x1), idx in zip(bounds, assign):
            listed = k in idx
            n_listed += listed
            if cov[y0:y1, x0:x1].any():
                assert listed
            if listed:
                assert near[y0:y1, x0:x1].any()
    assert 0 < n_listed < len(ws) * len(bounds)  # the test has both cases


@pytest.mark.parametrize("pointings, chnl", [(WRAP, 1), (POLE, 1), (POLE, 2), (WRAP, 3)])
def test_pixel_map_equals_the_per_pixel_transform(pointings, chnl):
    """pixel_map (exact on nodes every 16 pixels, a bicubic spline between) against transforming
    every pixel (SIP both ways) for frame -> grid, frame -> frame (the SIP inverse on the target)
    and a grid cut-out -> frame, at RA 0/360 and at the pole: within 1e-6 pixel. The 2 x 20
    160 um array is transformed pixel by pixel (fewer than 4 nodes on an axis)."""
    from reduce.mosaic.kernels.frames import pixel_centres, pixel_map
    ws, fps = frames_at(chnl, pointings)
    g = output_grid(fps, 2.45 if chnl == 1 else 4.0, margin_px=2)

    def exact(fw, tw, shape, origin=(0, 0)):
        x, y = pixel_centres(shape)
        ox, oy = tw.all_world2pix(*fw.all_pix2world(x + origin[1], y + origin[0], 0), 0, quiet=True)
        return np.dstack([ox, oy])

    shape = SHAPES[chnl]
    for a, b in [(0, 1), (2, 3)]:
        np.testing.assert_allclose(pixel_map(ws[a], g.wcs, shape), exact(ws[a], g.wcs, shape), rtol=0, atol=1e-6)
        np.testing.assert_allclose(pixel_map(ws[a], ws[b], shape), exact(ws[a], ws[b], shape), rtol=0, atol=1e-6)
    c = np.array(g.wcs.all_world2pix(*fps[0].T, 0))
    y0, x0 = max(int(c[1].min()) - 2, 0), max(int(c[0].min()) - 2, 0)
    cut = (min(int(c[1].max()) + 3, g.shape[0]) - y0, min(int(c[0].max()) + 3, g.shape[1]) - x0)
    np.testing.assert_allclose(pixel_map(g.wcs, ws[0], cut, origin=(y0, x0)), exact(g.wcs, ws[0], cut, (y0, x0)),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("n, m", [(128, 9), (61, 5), (20, 4), (140, 10)])
def test_spline_matrix_is_fitpacks_interpolating_spline(n, m):
    """pixel_map's separable spline (By @ V @ Bx.T, kernels.frames._spline_matrix) equals
    scipy's RectBivariateSpline(s=0) through the same nodes (FITPACK) at every pixel."""
    from scipy.interpolate import RectBivariateSpline
    from reduce.mosaic.kernels.frames import _spline_matrix

    rng = np.random.default_rng(n)
    ny_, nx_ = np.linspace(0, n - 1, m), np.linspace(0, 2 * n - 1, m + 2)
    values = rng.normal(0, 50, (m, m + 2)) + np.add.outer(1.1 * ny_, 0.3 * nx_)
    ref = RectBivariateSpline(ny_, nx_, values, s=0)(np.arange(n, dtype=float), np.arange(2 * n, dtype=float))
    out = _spline_matrix(n, m) @ values @ _spline_matrix(2 * n, m + 2).T
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)
