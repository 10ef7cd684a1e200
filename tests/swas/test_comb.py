"""COMB line fits -> dispersion, on synthetic COMB scans from the ICD forward model."""

import numpy as np
import pytest

from reduce.errors import CalibrationError
from reduce.swas.kernels.comb import CombParams, average_dispersions, comb_sets, comb_spectrum, fit_comb
from reduce.swas.physics import NOMINAL_DISPERSION, Dispersion, planck_j

CH = np.arange(725)
SAT = 65535.0


def make_comb_scans(truth, *, n_scan=4, amps=None, seed=0, t_rx=2500.0, gain=8.0, zero=1000.0):
    """COMB scans: counts = Z + G(c) (T_rx + J_bg) + comb lines (Gaussian, 1.5 MHz FWHM), clipped."""
    rng = np.random.default_rng(seed)
    f_if = truth.if_freq(CH)
    g = gain * (1 + 0.1 * np.sin(CH / 90.0))  # smooth passband with ripple
    base = zero + g * (t_rx + 3.0)
    sig_f = 1.5e6 / 2.3548
    orders = np.arange(20, 35)
    amps = {} if amps is None else amps
    lines = sum(amps.get(n, 8000.0) * np.exp(-0.5 * ((f_if - n * 1e8) / sig_f) ** 2) for n in orders)
    noise_counts = g * t_rx / np.sqrt(1.5e6 * 2.0)
    counts = base + lines + rng.normal(0, 1, (n_scan, CH.size)) * noise_counts
    return np.minimum(counts, SAT).astype(np.float32), np.full(CH.size, zero, np.float32)


TRUTH = Dispersion(2.4586e9, 1.0030e6, 23.0)  # F0 3 MHz above nominal (TAOS drift)


def test_dispersion_roundtrip_and_sky_frequency():
    d = TRUTH
    c = np.linspace(-5, 730, 50)
    assert np.allclose(d.channel(d.if_freq(c)), c, atol=1e-9)
    # a channel sees LO + f_IF (USB) and LO - f_IF (LSB); the kernels find the channel of a sky
    # frequency nu as channel(sgn (nu - LO)), sgn = +1 USB, -1 LSB
    lo = 489.505e9
    nu_u, nu_l = lo + d.if_freq(c), lo - d.if_freq(c)
    assert np.allclose(nu_u + nu_l, 2 * lo)
    assert np.allclose(d.channel(-(nu_l - lo)), c, atol=1e-9)
    assert np.allclose(d.channel(nu_u - lo), c, atol=1e-9)
    # O2 and C I rest frequencies sit ~200 channels either side of the centre (ICD)
    nom = NOMINAL_DISPERSION["490"]
    assert nom.channel(-(487.249376e9 - lo)) == pytest.approx(162, abs=2)
    assert nom.channel(492.160651e9 - lo) == pytest.approx(562, abs=2)


def test_planck_j_limits():
    t0 = 6.62607015e-34 * 490e9 / 1.380649e-23
    assert planck_j(300.0, 490e9) == pytest.approx(300 - t0 / 2 + t0**2 / (12 * 300), rel=1e-5)
    assert planck_j(0.0, 490e9) == 0.0
    assert planck_j(2.97, 490e9) < 0.01  # Wien side: tiny background at 490 GHz


def test_fit_recovers_dispersion_with_saturated_line_excluded():
    # order 25 (2.5 GHz, near the centre) is bright enough to clip at 65535
    counts, zero = make_comb_scans(TRUTH, amps={25: 80000.0, 23: 12000.0})
    assert np.any(counts >= SAT)
    spec, sat = comb_spectrum(counts, zero)
    fit = fit_comb(spec, sat, half="490")
    reasons = dict(zip(fit.n.tolist(), fit.reason.tolist()))
    assert reasons[25] == "saturated"
    assert not fit.used[fit.n == 25].any()
    assert fit.used.sum() >= 5
    assert np.all(np.abs(fit.residual[fit.used]) < 0.1)  # channels
    # model vs truth over the whole band (edges excluded): < 0.1 channel
    dc = fit.dispersion.channel(TRUTH.if_freq(CH[25:-25])) - CH[25:-25]
    assert np.max(np.abs(dc)) < 0.1
    assert fit.dispersion.f0 == pytest.approx(TRUTH.f0, abs=30e3)
    assert fit.dispersion.d1 == pytest.approx(TRUTH.d1, rel=1e-3)
    assert abs(fit.dispersion.d2 - TRUTH.d2) < 5 * fit.sigma[2] + 1.0


def test_saturation_mask_from_quality_is_honoured():
    counts, zero = make_comb_scans(TRUTH)
    mask = np.zeros(725, bool)
    c24 = int(round(TRUTH.channel(2.4e9)))
    mask[c24] = True  # e.g. a channel known saturated from QUALITY bit 2
    spec, sat = comb_spectrum(counts, zero, saturated=mask)
    fit = fit_comb(spec, sat, half="490")
    assert dict(zip(fit.n.tolist(), fit.reason.tolist()))[24] == "saturated"


def test_edge_line_rejected_550_half():
    truth = Dispersion(3.0049e9, 0.998e6, 18.0)
    counts, zero = make_comb_scans(truth, seed=3)
    spec, sat = comb_spectrum(counts, zero)
    params = CombParams(edge_margin=60)
    fit = fit_comb(spec, sat, half="550", params=params)
    assert "edge" in set(fit.reason)
    assert np.all(fit.centre[fit.used] - 6 >= 60)
    assert np.all(np.abs(fit.residual[fit.used]) < 0.1)


def test_too_few_lines_raises():
    counts, zero = make_comb_scans(TRUTH, amps={n: 0.0 for n in range(20, 35) if n != 24})
    spec, sat = comb_spectrum(counts, zero)
    with pytest.raises(CalibrationError, match="490 GHz half: 1 usable comb lines"):
        fit_comb(spec, sat, half="490")


def test_average_of_two_sets_and_set_splitting():
    t = 51500 + np.r_[np.arange(3) * 2, 1000 + np.arange(3) * 2] / 86400.0
    sets = comb_sets(t, np.ones(6, bool))
    assert [s.tolist() for s in sets] == [[0, 1, 2], [3, 4, 5]]
    fits = []
    for seed in (1, 2):
        counts, zero = make_comb_scans(TRUTH, seed=seed)
        fits.append(fit_comb(*comb_spectrum(counts, zero), half="490"))
    disp, cov = average_dispersions(fits)
    single = np.array([f.sigma for f in fits])
    assert np.all(np.sqrt(np.diag(cov)) <= single.max(axis=0) + 1e-12)
    dc = disp.channel(TRUTH.if_freq(CH[25:-25])) - CH[25:-25]
    assert np.max(np.abs(dc)) < 0.1
    with pytest.raises(CalibrationError):
        average_dispersions([])


def test_quality_bit2_marks_the_scan_maximum_saturated():
    # the brightest line tops out below 65535 (e.g. rescaled data) but QUALITY bit 2 is set
    counts, zero = make_comb_scans(TRUTH, amps={26: 30000.0})
    assert counts.max() < SAT
    spec, sat = comb_spectrum(counts, zero)
    plain = fit_comb(spec, sat, half="490")
    assert dict(zip(plain.n.tolist(), plain.reason.tolist()))[26] == ""
    spec, sat = comb_spectrum(counts, zero, quality=np.full(counts.shape[0], 2, np.int16))
    fit = fit_comb(spec, sat, half="490")
    assert dict(zip(fit.n.tolist(), fit.reason.tolist()))[26] == "saturated"
    assert np.all(np.abs(fit.residual[fit.used]) < 0.1)


def test_batched_line_fit_equals_scipy_curve_fit():
    """fit_gauss_lin (all windows at once) reaches curve_fit's minimum, one window at a time:
    centres within 1e-5 channel and their errors within 0.1 % for lines of a comb's widths."""
    from scipy.optimize import curve_fit

    from reduce.swas.kernels.comb import FWHM_TO_SIGMA, fit_gauss_lin, gauss_lin

    rng = np.random.default_rng(7)
    k = 300
    x = rng.integers(20, 700, k)[:, None] + np.arange(-6, 7)[None, :].astype(float)
    truth = np.stack([rng.uniform(50, 3000, k), x[:, 6] + rng.uniform(-0.5, 0.5, k), rng.uniform(0.5, 1.2, k),
                      np.full(k, 100.0), np.full(k, 0.3)], axis=1)
    y = gauss_lin(x, truth) + rng.normal(0, 5, x.shape)
    b0 = 0.5 * (y[:, 0] + y[:, -1])
    p0 = np.stack([y.max(axis=1) - b0, x[:, 6], np.full(k, 1.5 * FWHM_TO_SIGMA), b0, np.zeros(k)], axis=1)
    p, cov, ok = fit_gauss_lin(x, y, p0)
    model = lambda xx, *q: gauss_lin(xx[None, :], np.array([q]))[0]
    ref = [curve_fit(model, x[i], y[i], p0=p0[i], maxfev=2000) for i in range(k)]
    mu = np.array([r[0][1] for r in ref])
    err = np.array([np.sqrt(r[1][1, 1]) for r in ref])
    fwhm = np.abs([r[0][2] for r in ref]) / FWHM_TO_SIGMA
    comb_like = (fwhm > 0.7) & (fwhm < 3.5)
    assert comb_like.sum() > 250 and ok[comb_like].all()
    np.testing.assert_allclose(p[comb_like, 1], mu[comb_like], atol=1e-5)
    np.testing.assert_allclose(np.sqrt(cov[comb_like, 1, 1]), err[comb_like], rtol=1e-3)
    assert np.abs(p[comb_like, 1] - truth[comb_like, 1]).max() < 0.2
