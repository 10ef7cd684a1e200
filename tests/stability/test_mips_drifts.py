"""MIPS mission drifts (issue 10, part 3): a simulated mission of eleven small photometry AORs over
570 days (MJD 53760-54331, after the drifts' start MJD 53750; six DCEs per array, 24 um in four of
them, no dither so that a stim and its backgrounds see the same sky), ingested only, through
``reduce.stability.mips.study``.

Recovered against the simulator's truth (``mips_truth.json``: "zero_level", "responsivity", "si"):
the Ge zero-level drift rate (70 um within 10 %; 160 um, whose 40 pixels give ~60 DN per DCE, within
3 sigma of its fit), the responsivity jump (``kernels.trend.find_steps`` on the stim series with the
6 h oscillation fitted: the step between the AOR the day before and the one 0.15 d after the jump,
its size within 3 sigma) and the mission responsivity drift rate (within 10 %), per Ge array; and
the 24 um droop coefficient (within 1 %) and jailbar amplitude (within 5 %), measured per DCE from
the data (dead pixels, readout-4 columns), not copied from the calibration file."""
import json

import dask
import numpy as np
import pytest

from reduce.mips.ingest import ingest_mips
from reduce.simulate.mips import AorSpec, simulate_mips
from reduce.stability import mips as M
from reduce.stability.kernels.trend import find_steps, fit_trend

SEED = 5
CHNL = {70: "2", 160: "3"}
MJDS = [53760.3, 53779.7, 53799.55, 53800.15, 53850.2, 53930.9, 54010.4, 54090.1, 54170.6, 54250.2, 54330.8]
JUMP_BEFORE, JUMP_AFTER = 2, 3          # the AORs the day before the jump and 0.15 d after it


@pytest.fixture(scope="module")
def mission(tmp_path_factory):
    root = tmp_path_factory.mktemp("mips_drifts")
    specs = [AorSpec(aorkey=40000000 + i, aot_type="MipsPhot", object=f"D{i}", ra=20.0 + 25 * i,
                     dec=-10.0 + 4 * i, start_mjd=t, n_dce=6, arrays=(1, 2, 3) if i % 3 == 0 else (2, 3),
                     stim_every=3, dither_positions=1) for i, t in enumerate(MJDS)]
    simulate_mips(root / "raw", specs=specs, seed=SEED)
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    with dask.config.set(scheduler="sync"):
        study = M.study(store)
    assert study.problems == []
    return {"truth": json.loads((root / "raw" / "mips_truth.json").read_text()), "study": study}


def test_truth_carries_the_mission_model(mission):
    t = mission["truth"]
    resp, zero = t["responsivity"], t["zero_level"]
    assert resp["jump"] > 0 and MJDS[JUMP_BEFORE] < resp["jump_mjd"] < MJDS[JUMP_AFTER] and resp["drift_per_day"] < 0
    assert resp["mission_mjd0"] == zero["mission_mjd0"] < MJDS[0]       # every AOR on the linear drifts
    ge = [d for d in t["dces"] if d["chnl"] > 1]
    rate = zero["drift_dn_per_day"]
    expect = [zero["bias"][str(d["chnl"])] + rate[str(d["chnl"])] * (d["mjd"] - zero["mission_mjd0"]) for d in ge]
    assert np.allclose([d["zero_level"] for d in ge], expect)


@pytest.mark.parametrize("band", [70, 160])
def test_zero_level_drift_rate(mission, band):
    dce = mission["study"].tables["mips_dce"]
    g = dce[dce.array == band]
    assert len(g) == 6 * len(MJDS) and np.isfinite(g.zero_level_DN).all()
    fit = fit_trend(g.mjd, g.zero_level_DN, periods=())
    slope, err = fit.slope
    truth = mission["truth"]["zero_level"]["drift_dn_per_day"][CHNL[band]]
    assert abs(slope - truth) < 3 * err
    if band == 70:                                   # 1024 pixels: ~1 % precision
        assert abs(slope / truth - 1) < 0.10, (slope, err, truth)


@pytest.mark.parametrize("band", [70, 160])
def test_responsivity_jump_day_size_and_drift_rate(mission, band):
    truth = mission["truth"]["responsivity"]
    resp = mission["study"].tables["mips_responsivity"]
    r = resp[(resp.array == band) & resp.valid]
    assert len(r) == 2 * len(MJDS)
    periods = (truth["period_d"],)                   # the 6 h oscillation, fitted with the drift
    steps = find_steps(r.mjd, r.responsivity, r.responsivity_err, periods=periods)
    assert len(steps) == 1
    step = steps[0]
    assert step.mjd_before < truth["jump_mjd"] <= step.mjd
    assert np.floor(step.mjd) == np.floor(truth["jump_mjd"])           # the day exactly
    assert abs(step.size - truth["jump"]) < 3 * step.size_err, (step.size, step.size_err)
    fit = fit_trend(r.mjd, r.responsivity, r.responsivity_err, periods=periods, steps=steps)
    slope, err = fit.slope
    assert abs(slope / truth["drift_per_day"] - 1) < 0.10, (slope, err)


def test_droop_and_jailbar_measured_per_dce(mission):
    si = mission["truth"]["si"]
    dce = mission["study"].tables["mips_dce"]
    g = dce[dce.array == 24]
    assert len(g) == 6 * 4 and np.isfinite(g.droop_coeff).all() and np.isfinite(g.jailbar_amplitude).all()
    assert dce[dce.array > 24].droop_coeff.isna().all()
    w = 1 / g.droop_coeff_err ** 2
    droop = np.sum(w * g.droop_coeff) / np.sum(w)
    assert abs(droop / si["droop"] - 1) < 0.01, droop
    assert 0.5 < np.std((g.droop_coeff - si["droop"]) / g.droop_coeff_err) < 2    # honest errors
    w = 1 / g.jailbar_amplitude_err ** 2
    amp = np.sum(w * g.jailbar_amplitude) / np.sum(w)
    assert abs(amp / si["jailbar"] - 1) < 0.05, amp
    names = {s.name for s in mission["study"].series}
    assert {"mips_droop", "mips_jailbar"} <= names
