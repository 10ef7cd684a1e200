"""Step 5 kernels (reduce.swas.kernels.calibrate): Y-factor Tsys, passband gain and Ta* on
synthetic CAL data from the forward model."""

from types import SimpleNamespace

import numpy as np
import pytest

from reduce.errors import CalibrationError
from reduce.swas.kernels.calibrate import (CalStepParams, calibrate_batch, channel_tsys, passband_gain,
                                           segment_tsys, to_antenna_temperature, tsys_profile, yfactor_tsys)
from reduce.swas.kernels.pair import switched_spectrum
from reduce.swas.physics import NOISE_BW, NOMINAL_LO, T_BG, planck_j

LO = np.array([NOMINAL_LO["490"], NOMINAL_LO["550"]])
TRX = np.array([2400.0, 2900.0])
G_CONT = np.array([12.0, 9.0])
Z_CONT = np.array([500.0, 800.0])


def cont_cal(m=8, seed=0, rel_noise=1e-4):
    """m HOT/OFF continuum pairs (m, 2) and ZERO levels; THOT near 285 K."""
    rng = np.random.default_rng(seed)
    thot = 285.0 + rng.normal(0, 1.0, m)
    j_hot = planck_j(thot[:, None], LO)
    j_bg = planck_j(T_BG, LO)
    hot = Z_CONT + G_CONT * (j_hot + TRX)
    off = Z_CONT + G_CONT * (j_bg + TRX) + 0 * thot[:, None]
    hot = hot * (1 + rng.normal(0, rel_noise, hot.shape))
    off = off * (1 + rng.normal(0, rel_noise, off.shape))
    zero = Z_CONT * (1 + rng.normal(0, rel_noise, (m, 2)))
    return hot, off, zero, thot


def test_yfactor_tsys_recovered_within_one_percent():
    hot, off, zero, thot = cont_cal()
    yf = yfactor_tsys(hot, off, zero, thot, LO)
    truth = TRX + planck_j(T_BG, LO)
    assert yf.tsys.shape == (8, 2)
    assert np.all(np.abs(yf.tsys / truth - 1) < 0.01)
    assert np.allclose(yf.gain, G_CONT, rtol=0.02)
    tsys, err = segment_tsys(hot, off, zero, thot, LO)
    assert np.all(np.abs(tsys / truth - 1) < 0.003)
    assert np.all(err > 0) and np.all(err < 0.01 * truth)


def test_yfactor_rejects_unphysical_and_missing_cal():
    hot, off, zero, thot = cont_cal(m=3)
    with pytest.raises(CalibrationError, match="no usable CAL"):
        yfactor_tsys(hot[:0], off[:0], zero[:0], thot[:0], LO)
    with pytest.raises(CalibrationError, match="Y-factor <= 1"):
        yfactor_tsys(off, hot, zero, thot, LO)  # HOT and OFF swapped: Y < 1
    bad = hot.copy()
    bad[0, 0] = off[0, 0]  # one pair with Y = 1 is dropped, not used
    yf = yfactor_tsys(bad, off, zero, thot, LO)
    assert np.isnan(yf.tsys[0, 0]) and np.isfinite(yf.tsys[1:, 0]).all()


def make_spectral_cal(m=10, seed=1):
    rng = np.random.default_rng(seed)
    ch = np.arange(725)
    g = 8.0 * (1 + 0.15 * np.sin(ch / 60.0) + 0.05 * np.cos(ch / 7.0))  # passband with ripple
    z = 1000.0 + 3 * np.sin(ch / 100.0)
    trx = 2500.0
    thot = 284.0 + rng.normal(0, 0.5, m)
    lo = LO[0]
    j_hot = planck_j(thot, lo)[:, None]
    j_bg = planck_j(T_BG, lo)

    def scans(t_in):
        sig = (t_in + trx) / np.sqrt(NOISE_BW * 2.0)
        return z + g * (t_in + trx + rng.normal(0, 1, (m, 725)) * sig)

    return scans(j_hot), scans(np.full((m, 1), j_bg)), z, thot, g, trx + j_bg, scans


def test_passband_gain_and_channel_tsys():
    hot, off, z, thot, g, tsys_true, _ = make_spectral_cal()
    gain, profile = passband_gain(hot, off, thot, LO[0])
    assert np.median(np.abs(gain / g - 1)) < 0.005
    assert np.max(np.abs(gain / g - 1)) < 0.02
    assert np.mean(profile[25:-25]) == pytest.approx(1.0, abs=1e-12)
    tc = channel_tsys(off.mean(axis=0), z, gain, LO[0])
    assert np.median(np.abs(tc / tsys_true - 1)) < 0.01
    assert np.all(np.abs(tsys_profile(tc)[25:-25] - 1) < 0.03)  # flat T_rx -> flat profile
    with pytest.raises(CalibrationError, match="no usable CAL"):
        passband_gain(hot[:0], off[:0], thot[:0], LO[0])


def test_switched_spectrum_to_ta_star():
    hot, off, z, thot, g, tsys_true, scans = make_spectral_cal(m=200, seed=3)
    ch = np.arange(725)
    line = 4.0 * np.exp(-0.5 * ((ch - 400) / 6.0) ** 2)  # K, DSB antenna temperature
    j_bg = planck_j(T_BG, LO[0])
    on = scans(j_bg + line[None])
    s = switched_spectrum(on, off, z).mean(axis=0)
    ta = to_antenna_temperature(s, tsys_true)
    noise = tsys_true * np.sqrt(2 / (NOISE_BW * 2.0 * 200))
    assert np.max(np.abs(ta - line)[25:-25]) < 5 * noise
    assert ta[400] == pytest.approx(4.0, abs=5 * noise)
    with pytest.raises(CalibrationError, match="not finite"):
        to_antenna_temperature(s, np.nan)


def test_calibrate_batch_is_ta_star_with_the_shifted_profile():
    """The step's task body: Ta* = switched x Tsys x CAL profile carried by the coadd's mean shift."""
    rng = np.random.default_rng(4)
    spec = rng.normal(0, 1e-3, (3, 725))
    profile = 1 + 0.1 * np.sin(np.arange(725) / 40.0)[None]
    segs = [SimpleNamespace(segment=5001, tsys=np.array([2400.0, 2900.0]))]
    batch = SimpleNamespace(rows={"490": [(0, 0, "O2"), (0, 0, "CI"), (0, 1, "O2")]}, segs=segs)
    stats = np.array([[0.0], [3.0], [np.nan]])  # mean shift [channels]; NaN: no profile
    ta = calibrate_batch(spec, stats, profile, batch, "490", shift_col=0)
    assert ta.dtype == np.float32 and ta.shape == (3, 725)
    grid = np.arange(725)
    np.testing.assert_array_equal(ta[0], to_antenna_temperature(spec[0], 2400.0, profile[0]).astype(np.float32))
    shifted = np.interp(grid - 3.0, grid, profile[0])
    np.testing.assert_array_equal(ta[1], to_antenna_temperature(spec[1], 2400.0, shifted).astype(np.float32))
    np.testing.assert_array_equal(ta[2], to_antenna_temperature(spec[2], 2400.0).astype(np.float32))
    flat = calibrate_batch(spec, stats, profile, batch, "490", CalStepParams(apply_profile=False), shift_col=0)
    np.testing.assert_array_equal(flat, (spec * 2400.0).astype(np.float32))
    segs[0].tsys[0] = np.nan
    with pytest.raises(CalibrationError, match="segment 5001: Tsys not finite"):
        calibrate_batch(spec, stats, profile, batch, "490", shift_col=0)
