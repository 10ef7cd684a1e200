"""Stim-flash responsivity kernels (reduce.mips.kernels.responsivity) on synthetic 70 um slopes
(ICD §2 forward model), composed as the pipeline composes them: background_pairs and
stim_subset (plan_bcd), per_stim_responsivity and responsivity_block (step
responsivity.track_responsivity), apply_responsivity_block (step responsivity.apply_responsivity).
The reasons the pipeline gives an AOR without a (valid) stim are checked in
test_mips_pipeline_badinput.py."""
import numpy as np
import pytest

from reduce.mips.kernels import responsivity as rk

NY = NX = 32
NDCE = 44
STIM_AT = (3, 13, 23, 33, 43)


def _truth_resp(t, r0):
    """Responsivity (ndce, 1, 1): r0 times a 6 %/hour drift (t in s). One number per DCE, as the
    pipeline tracks it: the pixels' own response is in STIMAMP and the flat (ICD §2)."""
    return r0 * (1.0 + 0.06 * t[:, None, None] / 3600.0)


@pytest.fixture
def aor():
    rng = np.random.default_rng(11)
    t = 10.0 * np.arange(NDCE) + rng.uniform(-0.5, 0.5, NDCE)    # s
    r0 = 0.93
    stimamp = rng.uniform(200, 400, (NY, NX))                     # DN/s at nominal response
    sky = 300.0 + 20 * np.sin(np.arange(NX) / 5.0)[None, :]       # DN/s, fixed on the array
    dark = rng.uniform(1, 3, (NY, NX))
    flash = np.zeros(NDCE, bool)
    flash[list(STIM_AT)] = True
    resp = _truth_resp(t, r0)
    slopes = resp * sky + dark + flash[:, None, None] * resp * stimamp
    slopes += rng.normal(0, 0.3, slopes.shape)
    return dict(t=t, resp=resp, stimamp=stimamp, slopes=slopes, flash=flash)


def track(slopes, flash, t, stimamp, *, aorkeys=None, method="linear", ra=None):
    """Per-DCE responsivity (array median, 1 = nominal) as plan_bcd and the step derive it
    (one pointing unless ``ra`` is given); also the per-stim values and the background pairs."""
    n = len(t)
    aorkeys = np.zeros(n, np.int64) if aorkeys is None else np.asarray(aorkeys)
    ra = np.zeros(n) if ra is None else np.asarray(ra)
    pairs = rk.background_pairs(flash, t, aorkeys, ra, np.zeros(n), np.ones(n, bool), same_pointing_arcsec=4.9)
    idx, table = rk.stim_subset(pairs)
    stims = rk.per_stim_responsivity(slopes[idx], table=table, calset=np.zeros(idx.size, np.int64),
                                     stimamp=stimamp[None])
    first = idx[table[:, 0]] if idx.size else np.zeros(0, np.int64)
    resp = rk.responsivity_block(t, aorkeys, np.zeros(n, bool), stims=stims, stim_times=t[first],
                                 stim_aors=aorkeys[first], method=method)
    return resp, stims, pairs


def _median_truth(resp):
    return np.median(resp, axis=(1, 2))


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_responsivity_recovered_within_1_percent(aor, method):
    ins = [aor[k].copy() for k in ("slopes", "flash", "t", "stimamp")]
    r, _, _ = track(aor["slopes"], aor["flash"], aor["t"], aor["stimamp"], method=method)
    for a, b in zip(ins, (aor["slopes"], aor["flash"], aor["t"], aor["stimamp"])):
        np.testing.assert_array_equal(a, b)                      # inputs untouched
    assert r.shape == (NDCE,) and r.dtype == np.float32
    rel = np.abs(r / _median_truth(aor["resp"]) - 1)
    assert rel.max() < 0.01
    if method == "linear":
        # inside the stims the linear drift is followed to the stim noise
        assert np.sqrt(np.mean(rel[STIM_AT[0]:STIM_AT[-1] + 1] ** 2)) < 0.003


def test_background_pairs_use_neighbours(aor):
    _, stims, pairs = track(aor["slopes"], aor["flash"], aor["t"], aor["stimamp"])
    assert sorted(pairs) == list(STIM_AT)
    for i in STIM_AT[:-1]:
        assert pairs[i] == [i - 1, i + 1]            # the DCEs before and after, same pointing
    assert pairs[STIM_AT[-1]] == [41, 42]            # the last DCE: the two before it
    assert (stims[:, 1] == 1).all()
    truth = _median_truth(aor["resp"])[list(STIM_AT)]
    np.testing.assert_allclose(stims[:, 0], truth, rtol=0.003)


def test_background_pairs_follow_the_pointing():
    """Scan maps: nearest before and after in time; at a turn-around (end of a scan leg) only
    the one on the stim's side; dithers: the nearest DCEs at the stim's own position."""
    t = np.arange(8.0)
    flash = np.array([0, 0, 1, 0, 0, 0, 1, 0], bool)
    scan = np.array([0, 10, 20, 30, 40, 50, 60, 200]) / 3600.0             # deg, 10 arcsec per DCE
    pairs = rk.background_pairs(flash, t, np.zeros(8), scan, np.zeros(8), np.ones(8, bool),
                                same_pointing_arcsec=5.0)
    assert pairs == {2: [1, 3], 6: [5]}                                    # DCE 7 is a leg away
    dither = np.array([0, 30, 0, 30, 0, 30, 0, 30]) / 3600.0
    pairs = rk.background_pairs(flash, t, np.zeros(8), dither, np.zeros(8), np.ones(8, bool),
                                same_pointing_arcsec=5.0)
    assert pairs == {2: [0, 4], 6: [0, 4]}
    usable = np.ones(8, bool)
    usable[6] = False                                                       # a skipped stim DCE
    pairs = rk.background_pairs(flash, t, np.zeros(8), dither, np.zeros(8), usable, same_pointing_arcsec=5.0)
    assert list(pairs) == [2]
    idx, table = rk.stim_subset(pairs)
    assert idx.tolist() == [0, 2, 4] and table.tolist() == [[1, 0, 2]]


def test_invalid_stims_not_used(aor):
    slopes = aor["slopes"].copy()
    i_bad = STIM_AT[1]
    amp = aor["resp"][i_bad] * aor["stimamp"]
    slopes[i_bad] -= 1.5 * amp                  # whole flash: stim - background < 0
    slopes[STIM_AT[2], 5, 7] -= 3 * amp[5, 7]   # one pixel of another flash < 0
    signal = np.array([slopes[i] - slopes[[i - 1, i + 1]].mean(axis=0) for i in STIM_AT[:3]])
    valid = rk.stim_validity(signal)
    assert not valid[1].any()
    assert not valid[2, 5, 7] and valid[2].sum() == NY * NX - 1
    assert valid[0].all()
    truth = _median_truth(aor["resp"])
    for method in ("nearest", "linear"):
        r, stims, _ = track(slopes, aor["flash"], aor["t"], aor["stimamp"], method=method)
        assert np.isnan(stims[1, 0]) and stims[1, 1] == 0 and (stims[[0, 2, 3, 4], 1] == 1).all()
        assert np.all(r > 0)
        assert np.abs(r / truth - 1).max() < 0.01
    # nearest: DCE 13 (the failed flash) takes the value of flash 3 or 23
    r, stims, _ = track(slopes, aor["flash"], aor["t"], aor["stimamp"], method="nearest")
    assert r[i_bad] in (np.float32(stims[0, 0]), np.float32(stims[2, 0]))


def test_negative_median_invalidates_whole_flash():
    sig = np.ones((2, 4, 4))
    sig[1] = -1.0
    sig[1, 0, 0] = 5.0              # one positive pixel does not rescue a failed flash
    v = rk.stim_validity(sig)
    assert v[0].all() and not v[1].any()


def test_aor_without_valid_stim_gets_nan(aor):
    n = NDCE
    slopes = np.concatenate([aor["slopes"], aor["slopes"]])
    flash = np.concatenate([aor["flash"], aor["flash"]])
    t = np.concatenate([aor["t"], aor["t"] + 1e4])
    keys = np.array([4242] * n + [99117] * n)
    slopes[n:][flash[n:]] -= 2 * aor["stimamp"] * aor["resp"][flash[:n]]   # all flashes fail
    r, stims, _ = track(slopes, flash, t, aor["stimamp"], aorkeys=keys)
    assert np.isnan(r[n:]).all() and (stims[5:, 1] == 0).all()
    assert np.abs(r[:n] / _median_truth(aor["resp"]) - 1).max() < 0.01
    flash2 = flash.copy()
    flash2[:n] = False                                         # no stim DCE at all
    r, _, pairs = track(slopes, flash2, t, aor["stimamp"], aorkeys=keys)
    assert min(pairs) >= n and np.isnan(r).all()


def test_two_aors_kept_apart(aor):
    n = NDCE
    slopes = np.concatenate([aor["slopes"], 1.5 * aor["slopes"]])   # AOR 2: 50 % more responsive
    flash = np.concatenate([aor["flash"], aor["flash"]])
    t = np.concatenate([aor["t"], aor["t"] + 5.0])                  # interleaved in time
    keys = np.array([1] * n + [2] * n)
    r, _, pairs = track(slopes, flash, t, aor["stimamp"], aorkeys=keys)
    assert all((np.array(bg) >= n) == (i >= n) for i, bgs in pairs.items() for bg in bgs)
    truth = _median_truth(aor["resp"])
    assert np.abs(r[:n] / truth - 1).max() < 0.01
    assert np.abs(r[n:] / (1.5 * truth) - 1).max() < 0.01


def test_interpolate_linear_exact_and_nan_without_stims():
    st = np.array([0.0, 10.0])
    resp = np.array([np.ones((1, 2)), 2 * np.ones((1, 2))])
    valid = np.ones((2, 1, 2), bool)
    valid[:, 0, 1] = False
    out = rk.interpolate_responsivity(st, resp, valid, np.array([-5.0, 2.5, 10.0, 20.0]), method="linear")
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 1.25, 2.0, 2.0])
    assert np.isnan(out[:, 0, 1]).all()
    near = rk.interpolate_responsivity(st, resp, valid, np.array([4.0, 6.0]))
    np.testing.assert_allclose(near[:, 0, 0], [1.0, 2.0])
    one = rk.interpolate_responsivity(st[:1], resp[:1], valid[:1], np.array([-1.0, 50.0]), method="linear")
    np.testing.assert_allclose(one[:, 0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match="method"):
        rk.interpolate_responsivity(st, resp, valid, st, method="cubic")


def test_apply_responsivity_block(aor):
    """rate / responsivity, minus STIMAMP in the stim-flash DCEs: the sky of every DCE."""
    resp = _median_truth(aor["resp"]).astype(np.float32)
    pixels = aor["resp"] * (1 + 0.05 * np.sin(np.arange(NX) / 3.0))[None, None]  # some pixels off the median
    rate = (pixels * 300.0 + aor["flash"][:, None, None] * pixels * aor["stimamp"]).astype(np.float32)
    rel = (pixels / resp[:, None, None]).astype(np.float32)                       # pixel / array responsivity
    out, unc = rk.apply_responsivity_block(rate, np.ones_like(rate), resp, aor["flash"].astype(np.int8),
                                           np.zeros(NDCE, np.int64), stimamp=aor["stimamp"][None])
    assert out.dtype == np.float32 and unc.dtype == np.float32
    np.testing.assert_allclose(out, rel * 300.0 + aor["flash"][:, None, None] * (rel - 1) * aor["stimamp"],
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(unc, 1.0 / resp[:, None, None] * np.ones((1, NY, NX)), rtol=1e-6)


# ---------------------------------------------------------------- drift model ('gp', the default)
def _curved(t):
    """A curving drift like the simulator's: 4 % sine of 6 h period (t in s)."""
    return 1.0 + 0.04 * np.sin(2 * np.pi * t / 21600.0 + 2.5)


def _gp_block(t_stim, r_stim, sig, t, method="gp"):
    stims = np.stack([r_stim, np.ones_like(r_stim), sig], axis=1)
    return rk.responsivity_block(t, np.zeros(t.size, np.int64), np.zeros(t.size, bool), stims=stims,
                                 stim_times=t_stim, stim_aors=np.zeros(t_stim.size, np.int64), method=method,
                                 time_unit_s=1.0, with_unc=True)


def test_gp_drift_model_extrapolates_with_honest_uncertainty():
    """Stims every 10 min over 1.5 h of a curving ~5 % drift, DCEs 20 min before the first and after
    the last: the drift model beats holding the end stims' values (the former 'linear') outside,
    its uncertainty is smallest at the stims, grows between them and most in extrapolation, and its
    pulls over many noise draws have zero mean and unit width."""
    rng = np.random.default_rng(3)
    t_stim = np.arange(0.0, 5401.0, 600.0)
    t = np.arange(-1200.0, 6601.0, 100.0)
    truth = _curved(t)
    z, err_gp, err_lin, uncs = [], [], [], []
    for _ in range(60):
        sig = np.full(t_stim.size, 0.001)
        meas = _curved(t_stim) + rng.normal(0, 0.001, t_stim.size)
        r, u = _gp_block(t_stim, meas, sig, t)
        lin, ulin = _gp_block(t_stim, meas, sig, t, method="linear")
        assert r.dtype == np.float32 and u.dtype == np.float32 and (ulin == 0).all()
        z.append((r / truth - 1) / u)
        err_gp.append(r / truth - 1)
        err_lin.append(lin / truth - 1)
        uncs.append(u)
    z, err_gp, err_lin, u = np.array(z), np.array(err_gp), np.array(err_lin), np.mean(uncs, axis=0)
    out = (t < t_stim[0]) | (t > t_stim[-1])
    rms = lambda e: np.sqrt(np.mean(e ** 2))  # noqa: E731
    assert np.ptp(truth) > 0.04
    assert rms(err_gp[:, out]) < 0.5 * rms(err_lin[:, out])          # a better model, not only a larger error
    assert rms(err_gp[:, out]) < 0.004 and rms(err_gp[:, ~out]) < 0.001
    assert abs(z.mean()) < 0.15 and 0.8 < z.std() < 1.2, (z.mean(), z.std())
    assert abs(z[:, out].mean()) < 0.25 and 0.7 < z[:, out].std() < 1.3, (z[:, out].mean(), z[:, out].std())
    at_stim = np.isin(t, t_stim)
    between = np.isin(t, t_stim + 300.0) & ~out
    assert max(u[at_stim].max(), u[between].max()) < u[out].min()    # dense stims: flat inside
    assert u[0] == u.max() or u[-1] == u.max()                          # largest at the far ends
    assert np.all(np.diff(u[t > t_stim[-1]]) > 0) and np.all(np.diff(u[t < t_stim[0]]) < 0)


def test_gp_one_stim_and_stim_errors_from_the_pixels(aor):
    """One stim: its value everywhere, with an uncertainty growing away from it (the prior
    drift). The per-stim error (third column) is that of a pixel median."""
    r, u = _gp_block(np.array([100.0]), np.array([0.97]), np.array([0.002]), np.array([100.0, 700.0, 3700.0]))
    np.testing.assert_allclose(r, 0.97, atol=5e-4)
    assert 0.0018 < u[0] < 0.0025 and u[0] < u[1] < u[2] and u[2] > 0.02
    _, stims, _ = track(aor["slopes"], aor["flash"], aor["t"], aor["stimamp"])
    assert stims.shape == (len(STIM_AT), 3)
    truth = _median_truth(aor["resp"])[list(STIM_AT)]
    expected = 1.2533 * 0.3 * np.sqrt(1.5) / aor["stimamp"].mean() / np.sqrt(NY * NX)   # noise of stim - bg
    assert np.all((stims[:, 2] > 0.5 * expected) & (stims[:, 2] < max(2 * expected, 1.01 * rk.SIGMA_FLOOR)))
    assert np.all(np.abs(stims[:, 0] / truth - 1) < 5 * stims[:, 2])


def test_gp_rescales_the_backgrounds_to_the_stim_time():
    """A stim whose backgrounds were both taken later (a dither revisit) at a lower responsivity:
    stim - background overestimates the responsivity by (r_stim - r_bg) x sky / STIMAMP; the
    drift model brings the backgrounds to the stim's responsivity."""
    rng = np.random.default_rng(5)
    n = 40
    t = 120.0 * np.arange(n)                                      # s
    resp = 1.0 - 0.05 * t / 3600.0                               # 5 %/h fall
    sky, stimamp = 2000.0, np.full((4, 4), 3000.0)
    flash = np.arange(n) % 10 == 1
    rates = resp[:, None, None] * (sky + flash[:, None, None] * stimamp) + rng.normal(0, 0.3, (n, 4, 4))
    ra = (np.arange(n) % 8) * 30 / 3600.0                        # 8 dither positions: same sky 8 DCEs later
    pairs = rk.background_pairs(flash, t, np.zeros(n), ra, np.zeros(n), np.ones(n, bool), same_pointing_arcsec=5.0)
    assert pairs[1] == [9, 17]                                    # both later
    idx, table = rk.stim_subset(pairs)
    kw = dict(table=table, calset=np.zeros(idx.size, np.int64), stimamp=stimamp[None], times=t[idx] / 86400.0,
              aorkeys=np.zeros(idx.size, np.int64))
    old = rk.per_stim_responsivity(rates[idx], method="linear", **kw)
    new = rk.per_stim_responsivity(rates[idx], method="gp", **kw)
    true = resp[idx[table[:, 0]]]
    assert np.abs(old[:, 0] / true - 1).max() > 0.003
    assert np.abs(new[:, 0] / true - 1).max() < 0.2 * np.abs(old[:, 0] / true - 1).max()


def test_apply_responsivity_adds_its_uncertainty(aor):
    resp = _median_truth(aor["resp"]).astype(np.float32)
    rate = (resp[:, None, None] * 300.0 + aor["flash"][:, None, None] * resp[:, None, None] * aor["stimamp"])
    rate = rate.astype(np.float32)
    runc = np.linspace(0.001, 0.02, NDCE).astype(np.float32)
    out, unc = rk.apply_responsivity_block(rate, np.full_like(rate, 2.0), resp, aor["flash"].astype(np.int8),
                                           np.zeros(NDCE, np.int64), runc, stimamp=aor["stimamp"][None])
    np.testing.assert_allclose(out, 300.0, rtol=1e-5)
    scaled = rate / resp[:, None, None]                           # the stim signal carries the same error
    np.testing.assert_allclose(unc, np.hypot(2.0 / resp[:, None, None], runc[:, None, None] * scaled), rtol=1e-5)
