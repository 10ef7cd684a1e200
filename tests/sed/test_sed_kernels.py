"""Kernels of the MIPS SED steps (reduce/sed/kernels): calibration, wavelengths, rectification,
coaddition with outlier rejection, source column and extraction, on synthetic arrays."""
import numpy as np
import pytest
from scipy.stats import norm

from reduce.mips.bcd import mask_bits
from reduce.sed.kernels.calibrate import calibrate_block
from reduce.sed.kernels.coadd import align_offsets, clip_stack, combine, frame_weights, shift_columns
from reduce.sed.kernels.extract import extract, source_column
from reduce.sed.kernels.rectify import PARTIAL, rectify, rectify_block
from reduce.sed.kernels.wavelength import pixel_wavelengths, row_shift, row_wavelengths

WAVE0, DISP, CENTCOL, PXSCALE, SLITW = 53.65, 1.7, 7.0, 9.98, 19.96
OMEGA = SLITW * PXSCALE / 206264.806 ** 2
BITS = {**mask_bits(), "partial": PARTIAL}
INVALID = BITS["invalid"]


def _shift(tilt):
    return tilt * (np.arange(16) - CENTCOL) / DISP


# ---------------------------------------------------------------- calibrate, wavelength

def test_calibrate_exact_values_and_chunks():
    illum = np.ones((2, 32, 32), np.float32)
    illum[0, 3, 4] = 0.5
    illum[1, 3, 4] = 2.0
    illum[:, 5, 6] = 0.0
    illum[1, 7, 8] = np.nan
    fc = np.stack([np.arange(1, 33), 2 * np.arange(1, 33)]).astype(np.float32)  # (cset, y)
    rate = np.full((3, 32, 32), 2.0, np.float32)
    unc = np.full((3, 32, 32), 0.25, np.float32)
    calset = np.array([1, 0, 1])
    bcd, bunc = calibrate_block(rate, unc, calset, illum=illum, fluxconv_row=fc)
    assert bcd.dtype == np.float32 and bcd.shape == (3, 32, 32)
    y = np.arange(32)
    assert np.array_equal(bcd[1, :, 0], 2.0 * (y + 1))               # set 0: 2 DN/s * FLUXCONV(y)
    assert np.array_equal(bcd[0, :, 0], 2.0 * 2 * (y + 1))           # set 1: doubled FLUXCONV
    assert bcd[1, 3, 4] == 2.0 / 0.5 * 4 and bcd[0, 3, 4] == 2.0 / 2.0 * 8
    assert bunc[1, 3, 4] == 0.25 / 0.5 * 4 and bunc[2, 10, 0] == 0.25 * 2 * 11
    assert np.isnan(bcd[:, 5, 6]).all() and np.isnan(bunc[:, 5, 6]).all()    # illum <= 0
    assert np.isnan(bcd[[0, 2], 7, 8]).all() and bcd[1, 7, 8] == 2.0 * 8     # illum NaN in set 1 only
    parts = [calibrate_block(rate[s], unc[s], calset[s], illum=illum, fluxconv_row=fc)
             for s in (slice(0, 1), slice(1, 3))]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), bcd, equal_nan=True)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), bunc, equal_nan=True)


def test_wavelengths():
    lam = pixel_wavelengths(WAVE0, DISP, 0.02, CENTCOL)
    assert lam.shape == (32, 32)
    assert lam[0, 7] == pytest.approx(53.65, abs=1e-12)
    assert lam[10, 0] == pytest.approx(53.65 + 17.0 - 0.14, abs=1e-12)
    assert lam[26, 15] == pytest.approx(53.65 + 1.7 * 26 + 0.16, abs=1e-12)
    rows = row_wavelengths(WAVE0, DISP)
    assert rows.shape == (27,) and rows[0] == 53.65 and rows[26] == pytest.approx(97.85)
    assert np.allclose(row_shift(DISP, 0.2, CENTCOL), _shift(0.2))


# ---------------------------------------------------------------- rectify

def _frame(rng, value=None):
    img = rng.normal(10, 2, (32, 32)) if value is None else value
    unc = rng.uniform(0.5, 1.5, (32, 32))
    return img, unc, np.zeros((32, 32), np.uint16)


def test_rectify_zero_tilt_is_identity():
    rng = np.random.default_rng(1)
    img, unc, _ = _frame(rng)
    mask = rng.choice(np.array([0, 16, 32, 1024], np.uint16), (32, 32))   # none fatal
    r, u, m = rectify(img, unc, mask, disp=DISP, tilt=0.0, centcol=CENTCOL, bits=BITS)
    assert r.shape == u.shape == m.shape == (27, 16) and r.dtype == np.float32 and m.dtype == np.uint16
    assert np.array_equal(r, img[:27, :16].astype(np.float32))
    assert np.array_equal(u, unc[:27, :16].astype(np.float32))
    assert np.array_equal(m, mask[:27, :16])                          # no partial/invalid anywhere


@pytest.mark.parametrize("tilt", [0.02, 0.2, -0.5])
def test_rectify_conserves_column_integral_and_moves_centroid_by_s(tilt):
    rng = np.random.default_rng(2)
    img = np.zeros((32, 32))
    img[4:23] = rng.uniform(1, 100, (19, 32))        # zero within 4 rows of the edges: |s| <= 2.4
    img[27:] = 1e6                                    # second order: never used
    unc = np.ones((32, 32))
    r, _, m = rectify(img, unc, np.zeros((32, 32), np.uint16), disp=DISP, tilt=tilt, centcol=CENTCOL,
                      bits=BITS)
    s = _shift(tilt)
    full = (m & (INVALID | PARTIAL)) == 0
    rr = np.where(np.isfinite(r), r, 0.0).astype(np.float64)
    assert np.allclose(rr.sum(axis=0), img[:27, :16].sum(axis=0), rtol=1e-6, atol=0)
    y = np.arange(27)[:, None]
    cen_in = (img[:27, :16] * y).sum(0) / img[:27, :16].sum(0)
    cen_out = (rr * y).sum(0) / rr.sum(0)
    assert np.allclose(cen_out, cen_in + s, atol=1e-5)
    assert full[5:22].all()                          # interior rows fully covered


def test_rectify_tilted_line_lands_in_one_row():
    tilt, row0 = 0.2, 12.3
    lam = pixel_wavelengths(WAVE0, DISP, tilt, CENTCOL)
    sig = 3.4 / (2 * np.sqrt(2 * np.log(2)))          # FWHM 2 rows
    img = np.exp(-0.5 * ((lam - (WAVE0 + DISP * row0)) / sig) ** 2)   # point-sampled at the pixel centres
    img[27:] = 0.0
    r, _, _ = rectify(img, np.ones((32, 32)), np.zeros((32, 32), np.uint16), disp=DISP, tilt=tilt,
                      centcol=CENTCOL, bits=BITS)
    r = np.where(np.isfinite(r), r, 0.0)             # edge rows of the outer columns are invalid
    y = np.arange(27)[:, None]
    cen = (r * y).sum(0) / r.sum(0)
    assert np.all(np.abs(cen - row0) < 0.1), cen
    raw = (img[:27, :16] * y).sum(0) / img[:27, :16].sum(0)
    assert np.abs(raw - row0).max() > 0.5           # before rectification the tilt is visible


def test_rectify_unc_matches_monte_carlo():
    rng = np.random.default_rng(3)
    tilt = 0.2
    truth = rng.uniform(5, 20, (32, 32))
    unc = rng.uniform(0.5, 2.0, (32, 32))
    mask = np.zeros((32, 32), np.uint16)
    t_r, u_r, m_r = rectify(truth, unc, mask, disp=DISP, tilt=tilt, centcol=CENTCOL, bits=BITS)
    good = np.isfinite(t_r)
    assert good.sum() > 400 and np.isfinite(u_r[good]).all()
    s1 = np.zeros((27, 16))
    s2 = np.zeros((27, 16))
    nreal = 0
    for _ in range(4):
        n = 5000
        frames = truth + unc * rng.standard_normal((n, 32, 32))
        v, u, _ = rectify_block(frames, np.broadcast_to(unc, frames.shape), np.broadcast_to(mask, frames.shape),
                                np.zeros(n, int), disp=DISP, tilt=tilt, centcol=CENTCOL, bits=BITS)
        assert np.array_equal(u[0], u_r, equal_nan=True)
        pull = (v.astype(np.float64) - t_r) / u_r
        s1 += pull.sum(0)
        s2 += (pull ** 2).sum(0)
        nreal += n
    var = s2 / nreal - (s1 / nreal) ** 2
    assert np.all(np.abs(var[good] - 1) < 0.05), (var[good].min(), var[good].max())
    assert abs(var[good].mean() - 1) < 0.01


def test_rectify_mask_or_fatal_pixels_and_second_order():
    tilt = 0.2
    s = _shift(tilt)
    img = np.full((32, 32), 5.0)
    unc = np.ones((32, 32))
    mask = np.zeros((32, 32), np.uint16)
    sat, cr, dead, stim = BITS["saturated"], BITS["cosmic_ray"], BITS["dead"], BITS["stim"]
    mask[10, 3] = sat                                 # s(3) = -0.47: row 10 -> rectified rows 9, 10
    mask[11, 3] = cr                                  # row 11 -> rows 10, 11
    mask[15, 12] = dead                               # s(12) = +0.59: row 15 -> rows 15 (0.41), 16 (0.59)
    img[15, 12] = np.nan
    img[27:] = 1e6
    mask[27:] = stim | sat
    r, u, m = rectify(img, unc, mask, disp=DISP, tilt=tilt, centcol=CENTCOL, bits=BITS)
    assert m[9, 3] == sat and m[10, 3] == sat | cr and m[11, 3] == cr
    assert m[8, 3] == 0 and m[12, 3] == 0
    # dead pixel: left out; its bit does not spread, its neighbours lose weight
    assert (m & dead).sum() == 0
    assert m[15, 12] == PARTIAL and r[15, 12] == 5.0                      # sum w = 0.59
    assert m[16, 12] == INVALID and np.isnan(r[16, 12]) and np.isnan(u[16, 12])   # sum w = 0.41
    assert m[14, 12] == 0 and m[17, 12] == 0
    # rows >= 27 never contribute, not even bits; edges partial / invalid from the tilt
    assert np.nanmax(r) == 5.0 and not (m & (stim | sat))[12:].any()
    for x in range(16):
        sw0 = 1 - max(s[x], 0.0)                      # row 0 misses row -1 for s > 0
        sw26 = 1 + min(s[x], 0.0)                     # row 26 misses row 27 for s < 0
        for row, sw in ((0, sw0), (26, sw26)):
            want = INVALID if sw < 0.5 else PARTIAL if sw < 1 - 1e-6 else 0
            assert m[row, x] & (INVALID | PARTIAL) == want, (row, x, sw)
            assert np.isnan(r[row, x]) == (sw < 0.5)
            ws = np.clip(1 - np.abs(row - np.arange(27) - s[x]), 0, None)    # overlaps with rows 0..26
            assert ws.sum() == pytest.approx(sw)
            if sw >= 0.5:
                assert r[row, x] == 5.0 and u[row, x] == pytest.approx(np.sqrt((ws ** 2).sum()) / sw)
    assert not (m[1:26] & (INVALID | PARTIAL))[:, [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]].any()
    assert 2048 not in mask_bits().values()          # the new bit does not collide


def test_rectify_fatal_parameter_and_block_chunks():
    rng = np.random.default_rng(4)
    n = 6
    img = rng.normal(10, 1, (n, 32, 32)).astype(np.float32)
    unc = np.ones((n, 32, 32), np.float32)
    mask = np.zeros((n, 32, 32), np.uint16)
    mask[:, 8, 8] = BITS["hot"]
    calset = np.array([0, 1, 1, 0, 1, 0])
    kw = dict(disp=np.array([1.7, 1.7]), tilt=np.array([0.02, 0.2]), centcol=np.array([7.0, 7.0]), bits=BITS)
    whole = rectify_block(img, unc, mask, calset, **kw)
    parts = [rectify_block(img[s], unc[s], mask[s], calset[s], **kw) for s in (slice(0, 2), slice(2, 6))]
    for k in range(3):
        assert np.array_equal(np.concatenate([p[k] for p in parts]), whole[k], equal_nan=True)
    one = rectify(img[1], unc[1], mask[1], disp=1.7, tilt=0.2, centcol=7.0, bits=BITS)
    for k in range(3):
        assert np.array_equal(one[k], whole[k][1], equal_nan=True)
    # hot is fatal by default (not in the sums, no bit); with fatal=0 it is used and its bit kept
    assert not (whole[2] & BITS["hot"]).any()
    assert (whole[2][:, 8, 8] == INVALID).all() and (whole[2][:, 9, 8] == PARTIAL).all()  # 0 < s(8) < 0.5
    used = rectify_block(img, unc, mask, calset, fatal=0, **kw)
    assert (used[2][:, 8, 8] & BITS["hot"]).all()
    assert not (used[2] & PARTIAL)[:, 1:26].any()


# ---------------------------------------------------------------- coadd

def _stack(rng, nframe=12, shape=(200, 200)):
    unc_f = np.linspace(1.0, 3.0, nframe)                              # unequal per-frame unc
    unc = unc_f[:, None, None] * rng.uniform(0.9, 1.1, (nframe,) + shape)
    truth = rng.uniform(-5, 50, shape)
    return truth, unc, truth + unc * rng.standard_normal(unc.shape)


def test_clip_stack_false_rejections_and_spikes():
    rng = np.random.default_rng(5)
    truth, unc, vals = _stack(rng)
    clean = clip_stack(vals, unc)
    false_rate = clean.mean()
    assert false_rate < 2e-4, false_rate
    # uncs 1.5x too small (extra scatter): the robust scale keeps false rejections rare
    assert clip_stack(vals, unc / 1.5).mean() < 2e-3
    # 10-sigma spikes (of the frame's own unc) in 2 % of the samples, low- and high-noise frames
    spikes = rng.random(vals.shape) < 0.02
    hit = np.where(spikes, vals + 10 * unc, vals)
    rej = clip_stack(hit, unc)
    assert rej[spikes].mean() >= 0.99, rej[spikes].mean()
    assert rej[0][spikes[0]].mean() >= 0.99 and rej[-1][spikes[-1]].mean() >= 0.99
    assert rej[~spikes].mean() < 5e-4
    # negative outliers too; too shallow stacks reject nothing; unusable pixels never
    neg = clip_stack(np.where(spikes, vals - 10 * unc, vals), unc)
    assert neg[spikes].mean() >= 0.99
    shallow = hit.copy()
    shallow[2:, :5] = np.nan
    r2 = clip_stack(shallow, unc, min_depth=3)
    assert not r2[:, :5].any() and r2[:, 5:].sum() > 0
    # pixels are independent: any split of them gives the same flags
    assert np.array_equal(np.concatenate([clip_stack(hit[:, :70], unc[:, :70]),
                                          clip_stack(hit[:, 70:], unc[:, 70:])], axis=1), rej)


def test_clip_stack_noisy_frame_not_rejected_for_its_noise():
    rng = np.random.default_rng(6)
    shape = (12, 100, 200)
    unc = np.ones(shape)
    unc[3] = 20.0                                     # one very noisy frame
    vals = unc * rng.standard_normal(shape)
    rej = clip_stack(vals, unc)
    assert rej[3].mean() < 2e-4 and rej.mean() < 2e-4


def test_combine_weights_and_monte_carlo_unc():
    v = np.array([[3.0], [6.0]])
    u = np.array([[1.0], [2.0]])
    mean, err, depth = combine(v, u)
    assert np.allclose(frame_weights(v, u), [1.0, 0.25])
    assert mean[0] == pytest.approx((3 + 0.25 * 6) / 1.25, rel=1e-6)
    assert err[0] == pytest.approx(np.sqrt(1 + 0.0625 * 4) / 1.25, rel=1e-6) and depth[0] == 2
    mean, err, depth = combine(v, u, np.array([[True], [False]]))
    assert mean[0] == 6.0 and err[0] == 2.0 and depth[0] == 1
    mean, err, depth = combine(np.full((2, 1), np.nan), u)
    assert np.isnan(mean[0]) and np.isnan(err[0]) and depth[0] == 0

    rng = np.random.default_rng(7)
    nframe, nreal, npix = 8, 4000, 12
    unc = np.linspace(0.5, 2.0, nframe)[:, None, None] * rng.uniform(0.7, 1.3, (nframe, 1, npix))
    unc = np.broadcast_to(unc, (nframe, nreal, npix))
    truth = rng.uniform(0, 10, npix)
    vals = truth + unc * rng.standard_normal(unc.shape)
    mean, err, depth = combine(vals, unc)
    assert (depth == nframe).all()
    ratio = mean.astype(np.float64).std(axis=0) / err[0]
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    rejected = rng.random(vals.shape) < 0.2           # random rejections: per-pixel unc still right
    mean, err, depth = combine(vals, unc, rejected)
    pull = (mean - truth) / err
    assert abs(pull.std() - 1) < 0.05 and depth.min() >= 1 and depth.mean() == pytest.approx(6.4, abs=0.1)


def test_align_offsets_and_shift_columns_round_trip():
    u = np.array([0.0, PXSCALE + 1.2, -PXSCALE - 0.7, 0.3, 2 * PXSCALE - 2.0])
    sh = align_offsets(u, PXSCALE)
    assert sh.tolist() == [2, 1, 3, 2, 0]
    assert np.ptp(CENTCOL + u / PXSCALE + sh) < 0.5
    rng = np.random.default_rng(8)
    a = rng.normal(size=(5, 27, 16))
    b = shift_columns(a, sh)
    assert b.shape == (5, 27, 19)
    assert np.array_equal(b[0, :, 2:18], a[0]) and np.isnan(b[0, :, :2]).all() and np.isnan(b[0, :, 18:]).all()
    assert np.array_equal(shift_columns(b, -sh, width=16), a)
    m = rng.integers(0, 4096, (5, 27, 16)).astype(np.uint16)
    mb = shift_columns(m, sh, fill=0)
    assert mb.dtype == np.uint16 and np.array_equal(shift_columns(mb, -sh, fill=0, width=16), m)
    with pytest.raises(ValueError, match="fill"):
        shift_columns(m, sh)
    # a source at column CENTCOL + d (the dithers) lands in one column after the shifts
    d = np.array([0, 1, -1])
    x = np.arange(16)
    frames = np.exp(-0.5 * ((x - CENTCOL - d[:, None]) / 0.8) ** 2)[:, None, :]
    aligned = shift_columns(frames, align_offsets(d * PXSCALE, PXSCALE))
    assert len({int(np.nanargmax(f[0])) for f in aligned}) == 1


# ---------------------------------------------------------------- extract

def _profile_sigma_cols(lam):
    """Sigma (columns) of the point-source profile, FWHM 18" * lam / 71 um."""
    return 18.0 * lam / 71.0 / (2 * np.sqrt(2 * np.log(2))) / PXSCALE


def _point_source(col, flux_jy, lam):
    """Noiseless BCD (27, 16) MJy/sr of a point source centred across the slit at column ``col``
    (ICD forward model: F * T * G / (Omega 1e6))."""
    s = _profile_sigma_cols(lam)[:, None]
    x = np.arange(16)[None, :]
    g = norm.cdf((x + 0.5 - col) / s) - norm.cdf((x - 0.5 - col) / s)
    t = norm.cdf(SLITW / 2 / PXSCALE / s) - norm.cdf(-SLITW / 2 / PXSCALE / s)
    return flux_jy[:, None] * t * g / (OMEGA * 1e6), t[:, 0], g


@pytest.mark.parametrize("col", [7.3, 6.6, 8.0])
def test_source_column(col):
    lam = row_wavelengths(WAVE0, DISP)
    img, _, _ = _point_source(col, 3.0 * lam / 70, lam)
    unc = np.full(img.shape, 1.0)
    c, s = source_column(img, unc)
    assert abs(c - col) < 0.02 and 0 < s < 0.01
    # noise: the scatter over realisations matches the returned sigma and the bias stays small
    rng = np.random.default_rng(9)
    noise = 20.0
    cs = np.array([source_column(img + noise * rng.standard_normal(img.shape), unc * noise)[0]
                   for _ in range(2000)])
    _, s = source_column(img, unc * noise)
    assert abs(cs.mean() - col) < 0.1 and cs.std() == pytest.approx(s, rel=0.15)


def test_source_column_edges():
    img = np.zeros((27, 16))
    img[:, 0] = 5.0
    c, s = source_column(img, np.ones_like(img))
    assert c == 0.0 and np.isnan(s)
    with pytest.raises(ValueError, match="no finite column"):
        source_column(np.full((27, 16), np.nan), np.ones((27, 16)))


def test_extract_recovers_flux_and_propagates_errors():
    lam = row_wavelengths(WAVE0, DISP)
    flux = 3.0 * (lam / 70) + 2.5 * np.exp(-0.5 * ((lam - 88.36) / 1.44) ** 2)
    img, t, g = _point_source(7.0, flux, lam)
    apcorr = (1.0 / (t * g[:, 5:10].sum(axis=1))).astype(np.float32)
    f, e = extract(img.astype(np.float32), np.ones((27, 16), np.float32), 7.0, apcorr=apcorr, omega_sr=OMEGA)
    assert f.shape == e.shape == (27,)
    assert np.allclose(f, flux, rtol=1e-6, atol=0)
    assert np.allclose(e, apcorr * OMEGA * 1e6 * np.sqrt(5), rtol=1e-6)
    # the aperture is the 5 columns around round(column)
    f2, _ = extract(img, np.ones((27, 16)), 7.4, apcorr=apcorr, omega_sr=OMEGA)
    assert np.allclose(f2, flux, rtol=1e-6)
    f3, _ = extract(img, np.ones((27, 16)), 7.6, apcorr=apcorr, omega_sr=OMEGA)
    assert not np.allclose(f3, flux, rtol=1e-3)
    # Monte Carlo errors
    rng = np.random.default_rng(10)
    unc = rng.uniform(0.5, 3.0, (27, 16))
    fs = np.array([extract(img + unc * rng.standard_normal(img.shape), unc, 7.0, apcorr=apcorr,
                           omega_sr=OMEGA)[0] for _ in range(4000)])
    _, e = extract(img, unc, 7.0, apcorr=apcorr, omega_sr=OMEGA)
    assert np.all(np.abs(fs.std(axis=0) / e - 1) < 0.05)
    # NaN rows, aperture outside the image
    img2 = img.copy()
    img2[4, 9] = np.nan
    f4, e4 = extract(img2, np.ones((27, 16)), 7.0, apcorr=apcorr, omega_sr=OMEGA)
    assert np.isnan(f4[4]) and np.isnan(e4[4]) and np.isfinite(np.delete(f4, 4)).all()
    with pytest.raises(ValueError, match="aperture columns 12..16 outside"):
        extract(img, np.ones((27, 16)), 14.2, apcorr=apcorr, omega_sr=OMEGA)
