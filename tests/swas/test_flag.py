"""Step 3 kernels (reduce.swas.kernels.flag): flagging criteria as the pipeline runs them
(flag_segment with the pipeline's parameters), on synthetic switched spectra with radiometer
noise and a Doppler-moving line."""

import numpy as np
import pytest

from reduce.swas.kernels.flag import (CRITERIA, FlagParams, FlagStepParams, expected_sigma, flag_segment,
                                      flag_statistics, line_mask, register_criterion)

N = 725
CH = np.arange(N)
DILATE = 15  # line-mask widening [channels]: the +-12 channels of Doppler below, and a margin
PIPELINE = FlagStepParams()  # the pipeline's defaults: noise, spikes_fast, baseline
BIT = {name: 1 << i for i, name in enumerate(PIPELINE.kernel.criteria)}


def clean_pairs(m, *, seed=0, t_on=2.0, t_off=2.0, ripple=3.0):
    """m switched spectra: radiometer noise + common ripple + a line that moves with v_sc."""
    rng = np.random.default_rng(seed)
    sig = expected_sigma(np.full(m, t_on), np.full(m, t_off))
    ripple = ripple * sig[0] * np.sin(CH / 37.0)  # standing wave, same in every pair
    centre = 300 + 12 * np.sin(np.linspace(0, 2 * np.pi, m))  # +-12 channels of Doppler
    line = 20 * sig[0] * np.exp(-0.5 * ((CH[None] - centre[:, None]) / 5.0) ** 2)
    x = rng.normal(0, 1, (m, N)) * sig[:, None] + ripple + line
    return x, sig


def flagged(flags, name):
    """Pairs whose bit of criterion `name` is set."""
    return np.flatnonzero(flags.astype(np.int32) & BIT[name]).tolist()


def test_expected_sigma_radiometer():
    assert expected_sigma(2.0, 2.0) == pytest.approx(np.sqrt(2 / 3e6))
    assert expected_sigma(2.0, 2.0, n_off=3) == pytest.approx(np.sqrt(1 / 3e6 + 1 / 9e6))


def test_line_mask_covers_the_moving_line():
    x, _ = clean_pairs(300, seed=1, ripple=0.0)
    mask = line_mask(x, DILATE)
    assert mask[288:313].all()  # the line's centre +-12 channels of Doppler
    assert not mask[:250].any() and not mask[350:].any()
    assert mask[288:313].all() == line_mask(clean_pairs(300, seed=1)[0], DILATE)[288:313].all()


def test_no_false_positives_on_clean_data():
    x, sig = clean_pairs(300, seed=1)
    flags, stats = flag_segment(x, sig, DILATE, PIPELINE)
    assert flags.dtype == np.int16 and stats.dtype == np.float32 and stats.shape == (300, 3)
    assert not flags.any(), {name: flagged(flags, name) for name in BIT}
    assert np.median(stats[:, 0]) == pytest.approx(1.0, abs=0.05)  # 'noise': measured / expected


def test_injected_defects_are_caught():
    x, sig = clean_pairs(60, seed=2)
    rng = np.random.default_rng(5)
    x[5, 400] += 15 * sig[5]  # single-channel spike
    x[12] += 2 * sig[12] * np.exp(-0.5 * ((CH - 500) / 30.0) ** 2)  # baseline bump
    x[20] += rng.normal(0, np.sqrt(3), N) * sig[20]  # pair twice as noisy
    x[33, 600] -= 12 * sig[33]  # negative spike
    flags, stats = flag_segment(x, sig, DILATE, PIPELINE)
    # 'spikes_fast' judges against the expected noise: the noisy pair may be flagged by it too
    assert {5, 33} <= set(flagged(flags, "spikes_fast")) <= {5, 20, 33}
    assert flagged(flags, "noise") == [20]
    assert 12 in flagged(flags, "baseline")
    assert set(flagged(flags, "baseline")) <= {12, 20}
    assert np.flatnonzero(flags).tolist() == [5, 12, 20, 33]
    table = flag_statistics({"490": flags}, np.zeros(60, int), PIPELINE.kernel.criteria)[0]["490"]
    assert table["noise"] == [60, 1] and table["any"] == [60, 4]
    assert table["spikes_fast"][0] == 60 and table["spikes_fast"][1] in (2, 3)
    # the median-based 'spikes' criterion (a pipeline option) flags the two spikes only
    spikes = FlagStepParams(kernel=FlagParams(criteria=("noise", "spikes", "baseline")))
    flags2, _ = flag_segment(x, sig, DILATE, spikes)
    assert np.flatnonzero(flags2.astype(np.int32) & 2).tolist() == [5, 33]
    assert np.flatnonzero(flags2).tolist() == [5, 12, 20, 33]


def test_edge_channels_are_not_judged():
    x, sig = clean_pairs(20, seed=3)
    x[4, 10] += 50 * sig[4]  # inside the 25 unreliable edge channels
    flags, _ = flag_segment(x, sig, DILATE, PIPELINE)
    assert not flags[4]
    narrow = FlagStepParams(kernel=FlagParams(criteria=PIPELINE.kernel.criteria, edge_channels=5))
    flags, _ = flag_segment(x, sig, DILATE, narrow)
    assert flags[4]


def test_unusable_pairs_get_bit_15():
    x, sig = clean_pairs(20, seed=6)
    x[7, 400] = np.nan  # a NaN inside the edges: the pair cannot be judged
    x[9, 3] = np.nan  # in the edge channels: does not matter
    flags, stats = flag_segment(x, sig, DILATE, PIPELINE)
    assert flags[7] == np.int16(-32768) and np.isnan(stats[7]).all()
    assert not flags[9] and np.isfinite(stats[9]).all()
    table = flag_statistics({"550": flags}, np.full(20, 5001), PIPELINE.kernel.criteria)
    assert table[5001]["550"]["any"] == [19, 0]


def test_registry_is_pluggable_and_checked():
    @register_criterion("test_mean_offset")
    def mean_offset(spectra, *, sigma, channels, params):
        stat = np.abs(np.mean(spectra[:, channels], axis=1)) / sigma
        return stat > 1.0, stat

    try:
        x, sig = clean_pairs(10, seed=4)
        x[3] += 2 * sig[3]
        own = FlagStepParams(kernel=FlagParams(criteria=("test_mean_offset",)), masked_criteria=("test_mean_offset",))
        flags, stats = flag_segment(x, sig, DILATE, own)
        assert np.flatnonzero(flags).tolist() == [3] and stats.shape == (10, 1)
    finally:
        CRITERIA.pop("test_mean_offset")
    with pytest.raises(KeyError, match="unknown flagging criterion 'nope'"):
        flag_segment(x, sig, DILATE, FlagStepParams(kernel=FlagParams(criteria=("nope",))))


def test_no_pairs():
    flags, stats = flag_segment(np.zeros((0, N)), np.zeros(0), DILATE, PIPELINE)
    assert flags.shape == (0,) and stats.shape == (0, 3)
    assert flag_statistics({"490": flags}, np.zeros(0, int), PIPELINE.kernel.criteria) == {}
