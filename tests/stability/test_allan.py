"""Allan variance kernels (reduce.stability.kernels.allan) on synthetic noise of known statistics."""

import numpy as np
import pytest

from reduce.stability.kernels.allan import (allan_levels, allan_time, allan_variance, fit_allan,
                                            spectroscopic_allan, total_power_allan)

N = 2 ** 16


def _slope(m, avar, err, min_blocks=32):
    """Weighted log-log slope over the levels with at least min_blocks blocks."""
    ok = (N // m >= min_blocks) & np.isfinite(avar)
    return np.polyfit(np.log(m[ok]), np.log(avar[ok]), 1, w=(avar / err)[ok])[0]


def test_white_noise_falls_as_one_over_t():
    rng = np.random.default_rng(0)
    sigma = 3.0
    x = sigma * rng.standard_normal(N)
    m = allan_levels(N)
    assert m[0] == 1 and np.all(np.diff(np.log2(m)) == 1) and N // m[-1] >= 4
    avar, err = allan_variance(x, m)
    assert avar[0] == pytest.approx(sigma ** 2, rel=0.03)          # sigma_A^2(1 sample) = variance
    assert _slope(m, avar, err) == pytest.approx(-1.0, abs=0.1)     # slope -1 within 10 %
    assert np.all(np.abs(avar * m / sigma ** 2 - 1) < 5 * err / avar)  # each level within 5 sigma
    assert np.isnan(allan_time(m * 2.0, avar, err))                 # no rise: no Allan time


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_plus_drift_gives_the_known_allan_time(seed):
    """White noise (sigma_w) + random walk (steps sigma_rw, a 1/f^2 spectrum): sigma_A^2(m) =
    (sigma_w^2 + sigma_rw^2/6)/m + sigma_rw^2 m/3, minimum at m_A = sqrt(3 (sigma_w^2 + sigma_rw^2/6))/sigma_rw."""
    rng = np.random.default_rng(seed)
    sw, srw, dt = 1.0, 0.01, 2.0
    x = sw * rng.standard_normal(N) + np.cumsum(srw * rng.standard_normal(N))
    m = allan_levels(N)
    avar, err = allan_variance(x, m)
    expect = dt * np.sqrt(3 * (sw ** 2 + srw ** 2 / 6)) / srw
    t_a = allan_time(m * dt, avar, err)
    assert t_a == pytest.approx(expect, rel=0.3)
    a, b, beta, _ = fit_allan(m * dt, avar, err)
    assert beta == pytest.approx(1.0, abs=0.5)                     # random walk: sigma_A^2 ~ T^1


def test_spectroscopic_allan_removes_common_gain_fluctuations():
    """Channels sharing a drifting gain: the total power shows the drift (an Allan time), the
    spectroscopic Allan variance (difference of two channels) keeps the radiometric 2/(B t m)."""
    rng = np.random.default_rng(5)
    n, c = 8192, 64
    rel = 1e-3                                                      # per-channel radiometer noise (1/sqrt(B t))
    gain = 1.0 + np.cumsum(2e-5 * rng.standard_normal(n))
    counts = 1000.0 + 5000.0 * gain[:, None] * (1 + rel * rng.standard_normal((n, c)))
    zero = np.full(c, 1000.0)
    m = allan_levels(n)
    tp, tpe = total_power_allan(counts, m, zero=zero)
    sp, spe = spectroscopic_allan(counts, m, zero=zero)
    assert sp[0] == pytest.approx(2 * rel ** 2, rel=0.05)
    ok = n // m >= 32
    assert np.all(np.abs(sp[ok] * m[ok] / (2 * rel ** 2) - 1) < 0.15)
    assert np.isfinite(allan_time(m * 2.0, tp, tpe))
    assert np.isnan(allan_time(m * 2.0, sp, spe))


def test_bad_input():
    m = allan_levels(10)
    assert list(m) == [1, 2]
    avar, err = allan_variance(np.ones(3), np.array([1, 2]))
    assert np.isfinite(avar[0]) and np.isnan(avar[1])              # fewer than 2 blocks of 2
    with pytest.raises(ValueError, match="channel offset 9 outside 1..7"):
        spectroscopic_allan(np.ones((16, 8)), m, delta=9)
    assert np.isnan(allan_time(np.array([1.0, 2.0]), np.array([1.0, 0.5])))  # too few points
