"""24 um Si:As kernels (reduce.mips.kernels.si, and the dark, uncertainty, flat and fluxcal
kernels the 24 um steps use) on small synthetic frames built from the ICD §2 forward model."""
import numpy as np
import pytest

from reduce.mips.kernels import dark as kdark
from reduce.mips.kernels import flat as kflat
from reduce.mips.kernels import fluxcal as kflux
from reduce.mips.kernels import si
from reduce.mips.kernels import uncertainty as kunc

NY = NX = 128
FLUXCONV = 0.0447
SIGMA = 1.0          # DN/s noise per pixel


def _gauss_star(shape, x0, y0, amp, sigma=1.0):
    y, x = np.mgrid[:shape[0], :shape[1]]
    return amp * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / sigma**2)


@pytest.fixture(scope="module")
def scene():
    """Three DCEs: sky + stars (DN/s at the detector, i.e. flux/FLUXCONV x flat), plus truth."""
    rng = np.random.default_rng(1)
    flat = rng.normal(1.0, 0.05, (NY, NX)).astype(np.float32)
    flat /= flat.mean()
    dark = rng.normal(1.5, 0.2, (NY, NX)).astype(np.float32)
    flux = np.empty((3, NY, NX))
    stars = [(30.3, 40.7, 300.0), (90.5, 90.5, 80.0), (64.2, 20.1, 1500.0), (100.0, 30.0, 40.0)]
    for k in range(3):
        sky = 40.0 + 5.0 * k + 0.02 * np.arange(NX)[None, :]   # MJy/sr-ish gradient
        flux[k] = sky * FLUXCONV
        for x0, y0, a in stars:
            flux[k] += _gauss_star((NY, NX), x0 + k, y0, a * FLUXCONV)
    signal = flux / FLUXCONV * flat               # true signal S, DN/s
    noise = rng.normal(0, SIGMA, signal.shape)
    return dict(flat=flat, dark=dark, flux=flux, signal=signal, noise=noise, stars=stars, rng=rng)


def _forward(sc, droop, jail_offsets, droop_dark=False):
    s = sc["signal"]
    drive = s + (sc["dark"] if droop_dark else 0)
    m = s + sc["dark"] + droop * drive.mean(axis=(1, 2), keepdims=True) + sc["noise"]
    m[:, :, 3::4] += np.asarray(jail_offsets)[:, None, None]
    return m.astype(np.float32)


def test_replace_saturated_exact():
    rng = np.random.default_rng(2)
    true = rng.uniform(10, 1200, (2, 16, 16))                 # DN/sample
    hot = true > 600
    slope = np.where(hot, 600.0 * rng.uniform(0.2, 0.9, true.shape), true).astype(np.float32)
    diff = np.where(hot, true, 0).astype(np.float32)           # read2 - read1 = rate x 1 sample
    s_in, d_in = slope.copy(), diff.copy()
    s, d, r, rep = si.replace_saturated(slope, diff)
    np.testing.assert_array_equal(slope, s_in)
    np.testing.assert_array_equal(diff, d_in)
    assert rep.sum() == hot.sum() > 10
    np.testing.assert_array_equal(rep, hot)
    np.testing.assert_allclose(s, slope / 0.524288, rtol=1e-6)
    np.testing.assert_allclose(d, diff / 0.524288, rtol=1e-6)
    np.testing.assert_allclose(r, true / 0.524288, rtol=1e-6)     # every pixel now right
    assert np.all(d[~hot] == 0)


@pytest.mark.parametrize("droop_dark", [False, True])
def test_dark_jailbar_droop_removed_below_noise(scene, droop_dark):
    droop = 0.35
    offsets = [6.0, -3.0, 12.0]
    raw = _forward(scene, droop, offsets, droop_dark)
    raw_copy = raw.copy()
    rate = kdark.subtract_dark(raw, scene["dark"])
    est = si.jailbar_offsets(rate, flat=scene["flat"])[:, 0]
    np.testing.assert_allclose(est, offsets, atol=0.1 * SIGMA)
    # without the flat the response pattern adds scatter, but the estimate is still close
    np.testing.assert_allclose(si.jailbar_offsets(rate)[:, 0], offsets, atol=0.3 * SIGMA)
    rate = si.correct_jailbar(rate, flat=scene["flat"])
    rate = si.correct_droop(rate, droop, dark=scene["dark"] if droop_dark else None)
    resid = rate - scene["signal"]
    np.testing.assert_array_equal(raw, raw_copy)
    # what is left is the noise: no mean offset (droop) and no column pattern (jailbar)
    assert np.all(np.abs(resid.mean(axis=(1, 2))) < 0.05 * SIGMA)
    col = resid.mean(axis=1)                                       # (3, nx) column means
    jail = col[:, 3::4].mean(axis=1) - col[:, np.r_[0:NX][np.arange(NX) % 4 != 3]].mean(axis=1)
    assert np.all(np.abs(jail) < 0.1 * SIGMA)        # estimate error ~0.03 sigma expected
    assert 0.95 < resid.std() / SIGMA < 1.05
    # without the corrections the residuals are far above the noise
    bad = kdark.subtract_dark(raw, scene["dark"]) - scene["signal"]
    assert np.all(np.abs(bad.mean(axis=(1, 2))) > 10 * SIGMA)


def test_droop_exact_inverse_noiseless():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 100, (2, 8, 8))
    d = rng.uniform(1, 2, (8, 8))
    for dark in (None, d):
        drive = s if dark is None else s + dark
        m = s + 0.4 * drive.mean(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(si.correct_droop(m, 0.4, dark=dark), s, rtol=1e-12, atol=1e-10)


def test_jailbar_all_channels_and_per_row():
    rng = np.random.default_rng(4)
    base = rng.normal(100, 0.5, (2, 32, 64))
    off = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 4.0, -1.0, -3.0]])
    m = base.copy()
    for c in range(4):
        m[:, :, c::4] += off[:, c][:, None, None]
    est = si.jailbar_offsets(m, channels=(0, 1, 2, 3))
    # a common offset is unobservable: compare zero-mean offsets
    np.testing.assert_allclose(est, off - off.mean(axis=1, keepdims=True), atol=0.1)
    out = si.correct_jailbar(m, channels=(0, 1, 2, 3))
    colmeans = (out - base).mean(axis=1)
    assert np.ptp(colmeans, axis=1).max() < 0.3
    # per-row offsets: a bright row only
    m2 = base.copy()
    m2[:, 10, 3::4] += 20.0
    out2 = si.correct_jailbar(m2, per_row=True)
    assert np.abs((out2 - base)[:, 10, 3::4].mean()) < 0.3
    # model mode: coeff x bright
    out3 = si.correct_jailbar(m2, 0.5, bright=np.array([2.0, 4.0]))
    np.testing.assert_allclose((m2 - out3)[:, :, 3::4], np.array([1.0, 2.0])[:, None, None]
                               * np.ones((2, 32, 16)))
    np.testing.assert_array_equal((m2 - out3)[:, :, 0::4], 0)


def test_flat_and_surface_brightness_recover_flux(scene):
    rate = scene["signal"].astype(np.float32)
    img = kflux.to_surface_brightness(kflat.flat_field(rate, scene["flat"]), FLUXCONV)
    np.testing.assert_allclose(img, scene["flux"], rtol=1e-5)
    bad = scene["flat"].copy()
    bad[0, 0], bad[0, 1] = 0.0, np.nan
    out = kflat.flat_field(rate, bad)
    assert np.isnan(out[:, 0, :2]).all() and np.isfinite(out[:, 1:, :]).all()


def test_cosmic_rays_flagged_stars_not(scene):
    rng = np.random.default_rng(5)
    rate = kflat.flat_field((scene["signal"] + scene["noise"]).astype(np.float32), scene["flat"])
    truth = np.zeros(rate.shape, bool)
    star_xy = [(x0 + k, y0, k) for k in range(3) for x0, y0, _ in scene["stars"]]
    n = 0
    while n < 60:
        k, y, x = rng.integers(0, 3), rng.integers(2, NY - 2), rng.integers(2, NX - 2)
        if min(np.hypot(x - sx, y - sy) for sx, sy, kk in star_xy if kk == k) < 6 or truth[k, y, x]:
            continue
        truth[k, y, x] = True
        rate[k, y, x] += rng.uniform(10, 500) * SIGMA
        n += 1
    err = kflat.flat_field(np.full(rate.shape, SIGMA, np.float32), scene["flat"])
    rate_in = rate.copy()
    flags = si.flag_cosmic_rays_single_frame(rate, err, threshold=5.0)
    np.testing.assert_array_equal(rate, rate_in)
    assert flags[truth].all()                       # every injected hit caught
    assert (flags & ~truth).sum() == 0              # no star, no noise pixel flagged
    # and a star as bright as the biggest hits still is not flagged
    assert not flags[:, int(20.1) - 3:int(20.1) + 4, 61:70].any()
    # the sharpness criterion is what spares the stars
    blunt = si.flag_cosmic_rays_single_frame(rate, err, threshold=5.0, sharpness=0.0)
    assert blunt[:, 17:24, 61:70].any()


def test_slope_uncertainty_matches_monte_carlo():
    rng = np.random.default_rng(6)
    n, dt, gain, rn, rate = 10, si.SAMPLE_TIME, 5.1, 3.0, 200.0     # DN/s
    npix = 20000
    t = dt * np.arange(n)
    electrons = rng.poisson(rate * gain * dt, (npix, n - 1)).cumsum(axis=1)
    reads = np.concatenate([np.zeros((npix, 1)), electrons / gain], axis=1)
    reads += rng.normal(0, rn, reads.shape)
    slope = np.polyfit(t, reads.T, 1)[0]
    sig = kunc.slope_uncertainty(np.array(rate), gain=gain, rdnoise=rn, nsamp=n)
    assert abs(slope.std() / sig - 1) < 0.03
    d = (reads[:, 1] - reads[:, 0]) / dt                  # first-difference rate
    sig2 = kunc.slope_uncertainty(np.array(rate), gain=gain, rdnoise=rn, nsamp=n, replaced=True)
    assert abs(d.std() / sig2 - 1) < 0.03


def test_kernels_never_mutate_and_tolerate_nan(scene):
    rate = (scene["signal"][:2] + scene["noise"][:2]).astype(np.float32)
    rate[0, 5, 5] = np.nan
    rate[1, :, 9] = np.nan                                # a dead column
    err = np.full(rate.shape, SIGMA, np.float32)
    dark, flat = scene["dark"].copy(), scene["flat"].copy()
    keep = [a.copy() for a in (rate, err, dark, flat)]
    out = [kdark.subtract_dark(rate, dark), si.correct_droop(rate, 0.3, dark=dark),
           si.correct_jailbar(rate, flat=flat), si.correct_jailbar(rate, per_row=True),
           kflat.flat_field(rate, flat), kflux.to_surface_brightness(rate, 0.0447),
           si.flag_cosmic_rays_single_frame(rate, err),
           kunc.slope_uncertainty(rate, gain=5.1, rdnoise=9.0, nsamp=8)]
    for a, b in zip(keep, (rate, err, dark, flat)):
        np.testing.assert_array_equal(a, b)
    for o in out:
        assert o.shape == rate.shape and o is not rate
    for o in out[:6] + out[7:]:
        assert np.isnan(o[0, 5, 5]) and np.isnan(o[1, :, 9]).all()   # NaN stays NaN
        assert np.isfinite(o[0, 6, 6])                                # and does not spread
    assert not out[6][0, 5, 5] and not out[6][1, :, 9].any()
    assert np.isfinite(si.correct_droop(rate, 0.3)).sum() == np.isfinite(rate).sum()


def test_jailbar_model_mode_matches_forward_model(scene):
    """J = coeff x sum over readout-4 pixels of max(s - median(s) - T, 0), added to x % 4 == 3."""
    coeff, thresh, droop = 5e-3, 200.0, 0.33         # offsets of ~0.5 to 9 DN/s
    s = scene["signal"]
    bright = si.jailbar_bright(s, thresh)
    assert np.all(coeff * bright > 0.4)                # the bright stars do drive it
    jail = coeff * bright
    raw = _forward(scene, droop, jail, droop_dark=True)
    rate = kdark.subtract_dark(raw, scene["dark"])
    model = si.correct_jailbar(rate, coeff, threshold=thresh)
    data = si.correct_jailbar(rate, flat=scene["flat"])
    for out in (model, data):
        off = (rate - out)[:, 0, 3]
        np.testing.assert_allclose(off, jail, atol=0.1 * SIGMA)
        np.testing.assert_array_equal((rate - out)[:, :, 0::4], 0)
    with pytest.raises(ValueError, match="threshold"):
        si.correct_jailbar(rate, coeff)


def test_cosmic_ray_flags_equal_the_full_median_filter_definition():
    """The candidate-only median gives exactly the flags of a full 5x5 median filter."""
    from scipy import ndimage


    rng = np.random.default_rng(11)
    rate = rng.normal(100, 3, (12, 128, 128)).astype("f4")
    err = np.full_like(rate, 3.0)
    yy, xx = np.mgrid[:128, :128]
    for k in range(len(rate)):
        for _ in range(5):  # stars
            y0, x0 = rng.uniform(0, 128, 2)
            rate[k] += 800 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 2.0)
        iy, ix = rng.integers(0, 128, (2, 30))  # hits, some near edges
        rate[k, iy, ix] += rng.uniform(10, 200, 30)
    rate[3, 0, 5] = np.nan
    bkg = ndimage.median_filter(np.where(np.isfinite(rate), rate, np.nanmedian(rate)), size=(1, 5, 5),
                                mode="nearest")
    excess = np.where(np.isfinite(rate), rate, np.nanmedian(rate)) - bkg
    kern = np.zeros((1, 3, 3))
    kern[0, [0, 1, 1, 2], [1, 0, 2, 1]] = 0.25
    neigh = ndimage.convolve(excess, kern, mode="nearest")
    expected = (excess > 5 * err) & (excess > 2.5 * np.clip(neigh, 0, None)) & np.isfinite(rate)
    got = si.flag_cosmic_rays_single_frame(rate, err)
    assert expected.sum() > 100
    np.testing.assert_array_equal(got, expected)
