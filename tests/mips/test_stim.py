"""Stim-flash responsivity tracking on synthetic 70 um slopes (ICD §2 forward model)."""
import numpy as np
import pytest

from reduce.errors import CalibrationError
from reduce.mips import stim

NY = NX = 32
NDCE = 44
STIM_AT = (3, 13, 23, 33, 43)


def _truth_resp(t, r0):
    """Responsivity: per-pixel r0 times a 6 %/hour drift (t in s)."""
    return r0[None] * (1.0 + 0.06 * t[:, None, None] / 3600.0)


@pytest.fixture
def aor():
    rng = np.random.default_rng(11)
    t = 10.0 * np.arange(NDCE) + rng.uniform(-0.5, 0.5, NDCE)    # s
    r0 = rng.uniform(0.8, 1.2, (NY, NX))
    stimamp = rng.uniform(200, 400, (NY, NX))                     # DN/s at nominal response
    sky = 300.0 + 20 * np.sin(np.arange(NX) / 5.0)[None, :]       # DN/s, fixed on the array
    dark = rng.uniform(1, 3, (NY, NX))
    flash = np.zeros(NDCE, bool)
    flash[list(STIM_AT)] = True
    resp = _truth_resp(t, r0)
    slopes = resp * sky + dark + flash[:, None, None] * resp * stimamp
    slopes += rng.normal(0, 0.3, slopes.shape)
    return dict(t=t, resp=resp, stimamp=stimamp, slopes=slopes, flash=flash)


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_responsivity_recovered_within_1_percent(aor, method):
    ins = [aor[k].copy() for k in ("slopes", "flash", "t", "stimamp")]
    r = stim.track_responsivity(aor["slopes"], aor["flash"], aor["t"], aor["stimamp"],
                                method=method)
    for a, b in zip(ins, (aor["slopes"], aor["flash"], aor["t"], aor["stimamp"])):
        np.testing.assert_array_equal(a, b)                      # inputs untouched
    assert r.shape == aor["slopes"].shape
    rel = np.abs(r / aor["resp"] - 1)
    assert rel.max() < 0.01
    if method == "linear":
        # inside the stims the linear drift is followed to the stim noise (~0.2 % rms)
        assert np.sqrt(np.mean(rel[STIM_AT[0]:STIM_AT[-1] + 1] ** 2)) < 0.003


def test_stim_minus_background_uses_neighbours(aor):
    idx, sig = stim.stim_minus_background(aor["slopes"], aor["flash"], aor["t"])
    assert idx.tolist() == list(STIM_AT)
    truth = aor["resp"][idx] * aor["stimamp"]
    np.testing.assert_allclose(sig, truth, rtol=0.01)
    assert np.std(sig / truth - 1) < 0.003           # noise: 0.3 DN/s x sqrt(1.5) on ~250 DN/s


def test_invalid_stims_not_used(aor):
    slopes = aor["slopes"].copy()
    i_bad = STIM_AT[1]
    amp = aor["resp"][i_bad] * aor["stimamp"]
    slopes[i_bad] -= 1.5 * amp                  # whole flash: stim - background < 0
    slopes[STIM_AT[2], 5, 7] -= 3 * amp[5, 7]   # one pixel of another flash < 0
    sig = stim.stim_minus_background(slopes, aor["flash"], aor["t"])[1]
    valid = stim.stim_validity(sig)
    assert not valid[1].any()
    assert not valid[2, 5, 7] and valid[2].sum() == NY * NX - 1
    assert valid[[0, 3, 4]].all()
    for method in ("nearest", "linear"):
        r = stim.track_responsivity(slopes, aor["flash"], aor["t"], aor["stimamp"], method=method)
        assert np.all(r > 0)
        assert np.abs(r / aor["resp"] - 1).max() < 0.01
    # nearest: DCE 13 (the failed flash) takes flash 3 or 23; pixel (5,7) of DCE 23 takes
    # flash 33 (13 is invalid, 23 invalid there): check by value against the good flashes
    r = stim.track_responsivity(slopes, aor["flash"], aor["t"], aor["stimamp"], method="nearest")
    good = stim.stim_minus_background(slopes, aor["flash"], aor["t"])[1] / aor["stimamp"]
    keep = np.ones((NY, NX), bool)
    keep[5, 7] = False
    assert (np.array_equal(r[i_bad][keep], good[0][keep])
            or np.array_equal(r[i_bad][keep], good[2][keep]))
    assert r[STIM_AT[2], 5, 7] == pytest.approx(good[3][5, 7])


def test_negative_median_invalidates_whole_flash():
    sig = np.ones((2, 4, 4))
    sig[1] = -1.0
    sig[1, 0, 0] = 5.0              # one positive pixel does not rescue a failed flash
    v = stim.stim_validity(sig)
    assert v[0].all() and not v[1].any()


def test_no_valid_stim_names_the_aor(aor):
    n = NDCE
    slopes = np.concatenate([aor["slopes"], aor["slopes"]])
    flash = np.concatenate([aor["flash"], aor["flash"]])
    t = np.concatenate([aor["t"], aor["t"] + 1e4])
    keys = np.array([4242] * n + [99117] * n)
    slopes[n:][flash[n:]] -= 2 * aor["stimamp"] * aor["resp"][flash[:n]]   # all flashes fail
    with pytest.raises(CalibrationError, match=r"AOR 99117: no valid stim"):
        stim.track_responsivity(slopes, flash, t, aor["stimamp"], aorkeys=keys)
    flash2 = flash.copy()
    flash2[:n] = False                                         # no stim DCE at all
    with pytest.raises(CalibrationError, match=r"AOR 4242.*0 stim DCEs"):
        stim.track_responsivity(slopes, flash2, t, aor["stimamp"], aorkeys=keys)


def test_two_aors_kept_apart(aor):
    n = NDCE
    slopes = np.concatenate([aor["slopes"], 1.5 * aor["slopes"]])   # AOR 2: 50 % more responsive
    flash = np.concatenate([aor["flash"], aor["flash"]])
    t = np.concatenate([aor["t"], aor["t"] + 5.0])                  # interleaved in time
    keys = np.array([1] * n + [2] * n)
    r = stim.track_responsivity(slopes, flash, t, aor["stimamp"], aorkeys=keys)
    assert np.abs(r[:n] / aor["resp"] - 1).max() < 0.01
    assert np.abs(r[n:] / (1.5 * aor["resp"]) - 1).max() < 0.01


def test_interpolate_linear_exact_and_nan_without_stims():
    st = np.array([0.0, 10.0])
    resp = np.array([np.ones((1, 2)), 2 * np.ones((1, 2))])
    valid = np.ones((2, 1, 2), bool)
    valid[:, 0, 1] = False
    out = stim.interpolate_responsivity(st, resp, valid, np.array([-5.0, 2.5, 10.0, 20.0]),
                                        method="linear")
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 1.25, 2.0, 2.0])
    assert np.isnan(out[:, 0, 1]).all()
    near = stim.interpolate_responsivity(st, resp, valid, np.array([4.0, 6.0]))
    np.testing.assert_allclose(near[:, 0, 0], [1.0, 2.0])
    one = stim.interpolate_responsivity(st[:1], resp[:1], valid[:1], np.array([-1.0, 50.0]),
                                       method="linear")
    np.testing.assert_allclose(one[:, 0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match="method"):
        stim.interpolate_responsivity(st, resp, valid, st, method="cubic")
