"""Trend, step and outlier kernels (reduce.stability.kernels.trend) on synthetic series with known
slope, seasonal amplitude, steps and outliers; the shared Study writer and parse_when."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from reduce.stability.kernels import trend as K
from reduce.stability.study import Series, Study, parse_when, write_study

YEAR = K.YEAR_D


def series(rng, *, n=3 * 365, slope=2e-3, amp=0.5, noise=0.1, step_at=None, step=0.0, t0=53000.0):
    t = t0 + np.arange(n, dtype=float)
    y = 10.0 + slope * (t - t0) + amp * np.sin(2 * np.pi * t / YEAR + 0.7) + rng.normal(0, noise, n)
    if step_at is not None:
        y[step_at:] += step
    return t, y, np.full(n, noise)


@pytest.mark.parametrize("with_errors", [True, False])
def test_slope_and_seasonal_amplitude_recovered(with_errors):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        t, y, e = series(rng)
        fit = K.analyse(t, y, e if with_errors else None)
        slope, err = fit.slope
        assert abs(slope / 2e-3 - 1) < 0.10
        assert abs(slope - 2e-3) < 4 * err                   # the error is realistic
        assert fit.slope_per_year[0] == pytest.approx(slope * YEAR)
        amp, amp_err = fit.amplitude(YEAR)
        assert abs(amp - 0.5) < 4 * amp_err and abs(amp / 0.5 - 1) < 0.05
        assert fit.steps == []
        assert fit.sigma == pytest.approx(1.0 if with_errors else 0.1, rel=0.15)


def test_step_found_on_the_exact_sample_with_size_within_3_sigma():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        k = int(rng.integers(100, 1000))
        t, y, e = series(rng, step_at=k, step=0.6)
        fit = K.analyse(t, y, e)
        assert len(fit.steps) == 1, fit.steps
        s = fit.steps[0]
        assert s.index == k and s.mjd == t[k] and s.mjd_before == t[k - 1]
        assert abs(s.size - 0.6) < 3 * s.size_err
        assert abs(fit.slope[0] / 2e-3 - 1) < 0.10          # the step does not bias the drift
        model = fit.predict(t)
        assert model[k] - model[k - 1] == pytest.approx(s.size + 2e-3 + 0.5 * (
            np.sin(2 * np.pi * t[k] / YEAR + 0.7) - np.sin(2 * np.pi * t[k - 1] / YEAR + 0.7)), abs=0.02)


def test_two_steps_and_a_negative_one():
    rng = np.random.default_rng(7)
    t, y, e = series(rng, n=600, amp=0.0)
    y[200:] -= 0.5
    y[420:] += 0.4
    steps = K.find_steps(t, y, e)
    assert [s.index for s in steps] == [200, 420]
    assert abs(steps[0].size + 0.5) < 3 * steps[0].size_err and abs(steps[1].size - 0.4) < 3 * steps[1].size_err


def test_no_step_in_step_free_noise_in_at_least_95_percent_of_trials():
    rng = np.random.default_rng(11)
    trials, false = 300, 0
    for i in range(trials):
        t, y, e = series(rng, n=365 if i % 2 else 730)
        false += bool(K.find_steps(t, y, e if i % 3 else None))
    assert false <= 0.05 * trials


def test_outliers_do_not_make_steps_and_are_flagged():
    rng = np.random.default_rng(3)
    t, y, e = series(rng, n=400, amp=0.0)
    spikes = [50, 51, 300, 398]
    y[spikes] += 3.0
    fit = K.analyse(t, y, e)
    assert fit.steps == []
    assert set(np.flatnonzero(fit.outliers)) == set(spikes)
    assert abs(fit.slope[0] / 2e-3 - 1) < 0.10


def test_outlier_days_from_daily_medians():
    rng = np.random.default_rng(5)
    t = 53000.0 + np.sort(rng.uniform(0, 60, 60 * 24))     # about 24 samples a day
    y = 1.0 + rng.normal(0, 0.1, t.size)
    bad = (t >= 53017) & (t < 53018)
    y[bad] += 0.5                                              # one day off by ~25 sigma of a daily median
    days, med, z = K.outlier_days(t, y)
    assert list(days) == [53017.0]
    assert med[0] == pytest.approx(1.5, abs=0.05) and z[0] > 5
    d, m, n = K.daily_medians(t, y)
    assert d.size == 60 and n.sum() == t.size


def test_periods_the_data_do_not_span_are_not_fitted():
    rng = np.random.default_rng(2)
    t, y, e = series(rng, n=100, amp=0.0)
    fit = K.fit_trend(t, y, e, periods=(YEAR, 10.0))
    assert fit.periods == (10.0,)
    assert np.isnan(fit.amplitude(YEAR)[0])
    assert fit.amplitude(10.0)[0] < 5 * fit.amplitude(10.0)[1] + 0.02
    few = K.fit_trend(t[:2], y[:2])
    assert np.isnan(few.coef).all()


def test_parse_when():
    assert parse_when("53500") == 53500.0
    assert parse_when(" 53500.25 ") == 53500.25
    assert parse_when("2005-06-01") == pytest.approx(53522.0)
    assert parse_when("2005-06-01T12:00:00") == pytest.approx(53522.5)
    assert parse_when("2005-06-01 06:00") == pytest.approx(53522.25)
    for bad in ("yesterday", "2005-13-01", "nan", ""):
        with pytest.raises(ValueError, match="bad WHEN"):
            parse_when(bad)


def test_write_study(tmp_path):
    rng = np.random.default_rng(9)
    t, y, e = series(rng, n=800, step_at=500, step=0.6)
    t2, y2, _ = series(rng, n=800, slope=-1e-3, amp=0.2)
    s = Series("tsys_test", "Tsys (test)", "K", np.concatenate([t, t2]), np.concatenate([y, y2]),
               np.concatenate([e, e]), np.array(["A"] * t.size + ["B"] * t2.size))
    table = pd.DataFrame({"mjd": t, "value": y, "name": ["x"] * t.size})
    study = Study("test", {"test_table": table}, [s], notes=["a note"], span=(t[0], t[-1]))
    paths = write_study(study, tmp_path / "out")
    out = tmp_path / "out"
    assert {p.name for p in paths} >= {"test_table.csv", "trends.csv", "trend_steps.csv", "stability.zarr",
                                       "tsys_test.png", "index.html"}
    assert (out / "tsys_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trends = pd.read_csv(out / "trends.csv")
    a, b = (trends[trends.group == g].iloc[0] for g in ("A", "B"))
    assert abs(a.slope_per_year / (2e-3 * YEAR) - 1) < 0.1 and abs(b.slope_per_year / (-1e-3 * YEAR) - 1) < 0.1
    assert a.n_steps == 1 and b.n_steps == 0
    steps = pd.read_csv(out / "trend_steps.csv")
    assert list(steps.mjd) == [t[500]] and abs(steps["size"][0] - 0.6) < 3 * steps.size_err[0]
    z = xr.open_zarr(out / "stability.zarr", group="test_table", consolidated=False)
    assert np.array_equal(z.mjd.values, t) and [str(v) for v in z.name.values[:2]] == ["x", "x"]
    page = (out / "index.html").read_text()
    for name in ("test_table.csv", "trends.csv", "tsys_test.png", "a note"):
        assert name in page
    assert str(tmp_path) not in page                     # relative links only


def test_long_series_steps_from_daily_medians(tmp_path):
    rng = np.random.default_rng(21)
    t = 53000.0 + np.sort(rng.uniform(0, 900, 900 * 6))      # ~6 samples a day: > STEP_POINTS
    y = 5.0 - 1e-3 * (t - 53000) + 0.2 * np.sin(2 * np.pi * t / YEAR) + rng.normal(0, 0.05, t.size)
    y[t >= 53412.0] += 0.1
    s = Series("long", "long series", "K", t, y)
    write_study(Study("test", {}, [s]), tmp_path)
    steps = pd.read_csv(tmp_path / "trend_steps.csv")
    assert list(steps.mjd) == [53412.0] and list(steps.mjd_before) == [53411.0]
    assert abs(steps["size"][0] - 0.1) < 3 * steps.size_err[0]
    trends = pd.read_csv(tmp_path / "trends.csv")
    assert abs(trends.slope_per_day[0] / -1e-3 - 1) < 0.1
