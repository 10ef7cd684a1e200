"""Flagging criteria on synthetic switched spectra (radiometer noise, Doppler-moving line)."""

import numpy as np
import pytest

from reduce.swas.flagging import (CRITERIA, FlagParams, expected_sigma, flag_pairs, flag_summary,
                                  register_criterion)

N = 725
CH = np.arange(N)


def clean_pairs(m, *, seed=0, t_on=2.0, t_off=2.0):
    """m switched spectra: radiometer noise + common ripple + a line that moves with v_sc."""
    rng = np.random.default_rng(seed)
    sig = expected_sigma(np.full(m, t_on), np.full(m, t_off))
    ripple = 3 * sig[0] * np.sin(CH / 37.0)  # standing wave, same in every pair
    centre = 300 + 12 * np.sin(np.linspace(0, 2 * np.pi, m))  # +-12 channels of Doppler
    line = 20 * sig[0] * np.exp(-0.5 * ((CH[None] - centre[:, None]) / 5.0) ** 2)
    x = rng.normal(0, 1, (m, N)) * sig[:, None] + ripple + line
    mask = (CH > 270) & (CH < 330)  # line window, known from VSOURCE and v_sc range
    return x, sig, mask


def test_expected_sigma_radiometer():
    assert expected_sigma(2.0, 2.0) == pytest.approx(np.sqrt(2 / 3e6))
    assert expected_sigma(2.0, 2.0, n_off=3) == pytest.approx(np.sqrt(1 / 3e6 + 1 / 9e6))


def test_no_false_positives_on_clean_data():
    x, sig, mask = clean_pairs(300, seed=1)
    flag, res = flag_pairs(x, sig, mask=mask)
    assert not flag.any(), {k: np.flatnonzero(f) for k, (f, _) in res.items()}
    assert np.median(res["noise"][1]) == pytest.approx(1.0, abs=0.05)


def test_injected_defects_are_caught():
    x, sig, mask = clean_pairs(60, seed=2)
    rng = np.random.default_rng(5)
    x[5, 400] += 15 * sig[5]  # single-channel spike
    x[12] += 2 * sig[12] * np.exp(-0.5 * ((CH - 500) / 30.0) ** 2)  # baseline bump
    x[20] += rng.normal(0, np.sqrt(3), N) * sig[20]  # pair twice as noisy
    x[33, 600] -= 12 * sig[33]  # negative spike
    flag, res = flag_pairs(x, sig, mask=mask)
    assert np.flatnonzero(res["spikes"][0]).tolist() == [5, 33]
    assert np.flatnonzero(res["noise"][0]).tolist() == [20]
    assert 12 in np.flatnonzero(res["baseline"][0])
    assert set(np.flatnonzero(res["baseline"][0])) <= {12, 20}
    assert np.flatnonzero(flag).tolist() == [5, 12, 20, 33]
    table = flag_summary(res, flag)
    rows = {r["criterion"]: (r["n_flagged"], r["n_total"]) for r in table}
    assert rows["spikes"] == (2, 60) and rows["noise"] == (1, 60) and rows["any"] == (4, 60)


def test_edge_channels_are_not_judged():
    x, sig, mask = clean_pairs(20, seed=3)
    x[4, 10] += 50 * sig[4]  # inside the 25 unreliable edge channels
    flag, _ = flag_pairs(x, sig, mask=mask)
    assert not flag[4]
    flag, _ = flag_pairs(x, sig, mask=mask, params=FlagParams(edge_channels=5))
    assert flag[4]


def test_registry_is_pluggable_and_checked():
    @register_criterion("test_mean_offset")
    def mean_offset(spectra, *, sigma, channels, params):
        stat = np.abs(np.mean(spectra[:, channels], axis=1)) / sigma
        return stat > 1.0, stat

    try:
        x, sig, mask = clean_pairs(10, seed=4)
        x[3] += 2 * sig[3]
        flag, res = flag_pairs(x, sig, mask=mask, params=FlagParams(criteria=("test_mean_offset",)))
        assert np.flatnonzero(flag).tolist() == [3] and list(res) == ["test_mean_offset"]
    finally:
        CRITERIA.pop("test_mean_offset")
    with pytest.raises(KeyError, match="unknown flagging criterion 'nope'"):
        flag_pairs(x, sig, params=FlagParams(criteria=("nope",)))


def test_no_pairs():
    flag, res = flag_pairs(np.zeros((0, N)), np.zeros(0))
    assert flag.shape == (0,) and flag_summary(res, flag)["n_total"].tolist() == [0, 0, 0, 0]
