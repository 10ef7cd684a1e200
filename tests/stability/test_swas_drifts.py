"""The SWAS simulator's mission drifts (reduce.simulate.swas_mission) recovered by ``skyreduce trend
swas`` from an ingested store: the gain drift rate (10 %), the Tsys step (its day exactly, its
size within 3 sigma of the step detector), the total-power Allan time of the long OFF run (30 %)
and F0 against TAOS (10 %), against the truth the simulator wrote.

The mission: two short NOD segments on every other day from day 1 to day 55 (the step day 15
is one of them) and the default plan's long-OFF segment of day 3 (3600 continuous OFF scans)."""

import json

import numpy as np
import pandas as pd
import pytest

from reduce.cli import main
from reduce.simulate.swas import simulate_segment, simulate_swas
from reduce.simulate.swas_mission import DAY1_MJD, MissionDrifts
from reduce.simulate.swas_plan import make_spec, plan_swas, with_overrides
from reduce.swas.ingest import ingest_swas

HALVES = ("490", "550")


@pytest.fixture(scope="module")
def scheduler():
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as lc:
        yield ["--scheduler", lc.scheduler_address, "-q"]


@pytest.fixture(scope="module")
def mission(tmp_path_factory, scheduler):
    root = tmp_path_factory.mktemp("swas_drifts")
    long_off = plan_swas(days=1, start_day=3, segments_per_day=1)     # the default plan's day 3
    assert len(long_off) == 1 and long_off[0].long_off_scans >= 1800
    long_off = [with_overrides(long_off[0], segment=3)]               # after the day's two short ones
    specs = long_off + [make_spec(d, k + 1, obj, "NOD", 160, start_s=300.0 + 2700.0 * k)
                        for d in range(1, 56, 2) for k, obj in enumerate(("OMC-1", "SGRA"))]
    simulate_swas(root / "raw", specs=specs, seed=11)
    store = root / "swas.zarr"
    ingest_swas([root / "raw"], store)
    out = root / "trend"
    assert main(["trend", "swas", "--store", str(store), "--out", str(out), *scheduler]) == 0
    doc = json.loads((root / "raw" / "swas_truth.json").read_text())
    tables = {name: pd.read_csv(out / f"{name}.csv")
              for name in ("swas_segments", "trends", "trend_steps", "swas_correlations")}
    return {"truth": doc, "mission": doc["mission"], "long_off": long_off[0], **tables}


def _trend(m, series, half):
    t = m["trends"]
    return t[(t["series"] == series) & (t["group"] == f"{half} GHz")].iloc[0]


def test_truth_states_the_mission_model(mission):
    mis = mission["mission"]
    assert mis["tsys_step_day"] == 15 and mis["tsys_step_mjd"] == DAY1_MJD + 14
    assert [r["file"] for r in mis["long_off_segments"]] == ["swas_lh_0003_003.fits"]
    for seg in mission["truth"]["segments"]:
        for h in HALVES:
            step = mis["halves"][h]["tsys_step_k"] if seg["day"] >= 15 else 0.0
            assert seg["tsys_step_k"][h] == step
            assert seg["t_rx_k"][h] - step == pytest.approx(mis["halves"][h]["t_rx_k"], rel=0.03)


def test_gain_drift_rate_within_10_percent(mission):
    seg = mission["swas_segments"]
    for h in HALVES:
        row = _trend(mission, "gain", h)
        g = seg[f"gain_{h}_counts_per_K"].values
        at_day1 = g.mean() - row["slope_per_day"] * (seg["mjd"].values.mean() - DAY1_MJD)   # measured
        rate, err = row["slope_per_day"] / at_day1, row["slope_per_day_err"] / at_day1
        true = mission["mission"]["halves"][h]["gain_rate_per_day"]
        assert rate == pytest.approx(true, rel=0.10), (h, rate, err, true)
        assert err < 0.05 * abs(true)            # the test can tell a wrong rate
        assert row["n_steps"] == 0               # no step in the gain: the Tsys step is not in it


def test_tsys_step_day_exact_and_size_within_3_sigma(mission):
    mis = mission["mission"]
    steps = mission["trend_steps"]
    for h in HALVES:
        st = steps[(steps["series"] == "tsys") & (steps["group"] == f"{h} GHz")]
        assert len(st) == 1, st
        st = st.iloc[0]
        assert np.floor(st["mjd"]) == mis["tsys_step_mjd"]                 # the first segment of day 15
        assert np.floor(st["mjd_before"]) < mis["tsys_step_mjd"]
        true = mis["halves"][h]["tsys_step_k"]
        assert abs(st["size"] - true) < 3 * st["size_err"], (h, st["size"], st["size_err"], true)
        assert st["size_err"] < 0.2 * true


def test_allan_time_of_the_long_off_run_within_30_percent(mission):
    seg = mission["swas_segments"]
    run = mission["mission"]["long_off_segments"][0]
    sid = run["day"] * 1000 + run["segment"]
    row = seg[seg["segment"] == sid].iloc[0]
    assert row["allan_run"] == "OFF" and row["allan_scans"] >= run["n_scans"] - 2   # first scan: settling
    for h in HALVES:
        assert row[f"allan_time_tp_{h}_s"] == pytest.approx(run["allan_time_tp_s"][h], rel=0.30), h
    # the short NOD segments (10-scan blocks) have no run long enough
    assert np.isnan(seg[seg["segment"] != sid][[f"allan_time_tp_{h}_s" for h in HALVES]].values).all()


def test_f0_against_taos_within_10_percent(mission):
    cor = mission["swas_correlations"].set_index(["receiver", "quantity"])
    for h in HALVES:
        slope = cor.loc[(int(h), "f0_vs_taos_within_segments"), "slope"]
        assert slope == pytest.approx(mission["mission"]["halves"][h]["df0_dtaos_hz_per_c"], rel=0.10)


def test_drifts_off_and_the_cli_step_day(tmp_path, scheduler):
    spec = make_spec(20, 1, "SGRA", "NOD", 160, start_s=300.0)
    _, on = simulate_segment(spec, seed=2)
    _, off = simulate_segment(spec, seed=2, drifts=MissionDrifts.off())
    assert on["tsys_step_k"] == {"490": 100.0, "550": 150.0} and off["tsys_step_k"] == {"490": 0.0, "550": 0.0}
    assert on["t_rx_k"]["550"] - off["t_rx_k"]["550"] == pytest.approx(150.0)
    ratio = on["gain0_counts_per_k"]["490"] / off["gain0_counts_per_k"]["490"]
    assert ratio == pytest.approx(1 - 2e-4 * (on["start_mjd"] - DAY1_MJD), rel=1e-5)
    assert plan_swas(days=1) == plan_swas(days=1, drifts=MissionDrifts.off())      # day 1: the template
    assert not any(s.long_off_scans for s in plan_swas(days=1))
    out = tmp_path / "raw"
    assert main(["simulate", "swas", str(out), "--days", "1", "--start-day", "15", "--segments-per-day", "1",
                 "--tsys-step-day", "16", *scheduler]) == 0
    doc = json.loads((out / "swas_truth.json").read_text())
    assert doc["mission"]["tsys_step_day"] == 16 and doc["segments"][0]["tsys_step_k"]["490"] == 0.0
    with pytest.raises(SystemExit):
        main(["simulate", "swas", str(out), "--tsys-step-day", "0"])
