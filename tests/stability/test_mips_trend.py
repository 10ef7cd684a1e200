"""MIPS stability study (reduce.stability.mips) on simulated AORs that were only ingested: the
stim-flash responsivity recovers the simulator's truth, the per-DCE quantities their known
values; the reductions build without computing; ``skyreduce trend mips`` writes its tables,
plots and index page, honours --from/--to and rejects a bad WHEN."""
import json
import shutil

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from reduce.cli import main
from reduce.mips.ingest import ingest_mips
from reduce.simulate.mips import AorSpec, simulate_mips
from reduce.simulate.mips_cal import ARRAYS
from reduce.simulate.mips_dce import RESP_MJD0, RESP_PERIOD, _resp_phase, responsivity
from reduce.stability import mips as M
from reduce.stability.kernels.trend import fit_trend
from reduce.stability.study import write_study

SEED = 3
CHNL = {70: 2, 160: 3}
LEADING = ["array", "aorkey", "dceid", "mjd", "responsivity", "responsivity_err"]


def _start():
    """An MJD shortly before a zero crossing of the 70 um responsivity (its steepest drift)."""
    ph = _resp_phase(2, SEED)
    k = np.ceil(((53500 - RESP_MJD0) * 2 * np.pi / RESP_PERIOD + ph) / np.pi)
    return RESP_MJD0 + (k * np.pi - ph) * RESP_PERIOD / (2 * np.pi) - 0.02


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Four 30-DCE photometry AORs 14 min apart (24 um only in the first), a stim every 3rd DCE."""
    root = tmp_path_factory.mktemp("mips_trend")
    t0 = _start()
    specs = [AorSpec(aorkey=20000000 + i, aot_type="MipsPhot", object=f"F{i}", ra=150.0 + i, dec=2.0,
                     start_mjd=t0 + 0.01 * i, n_dce=30, arrays=(1, 2, 3) if i == 0 else (2, 3), stim_every=3)
             for i in range(4)]
    simulate_mips(root / "raw", specs=specs, seed=SEED)
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    truth = json.loads((root / "raw" / "mips_truth.json").read_text())
    with dask.config.set(scheduler="sync"):
        result = M.study(store)
    return {"root": root, "store": store, "truth": truth, "study": result,
            "dces": {d["file"]: d for d in truth["dces"]}}


def test_responsivity_per_stim_flash_recovers_the_truth(sim):
    resp = sim["study"].tables["mips_responsivity"]
    assert list(resp.columns[:6]) == LEADING
    stims = [d for d in sim["truth"]["dces"] if d["stim"]]
    assert len(resp) == len(stims) == 80                    # one row per stim flash
    assert set(resp.source_file) == {d["file"] for d in stims}
    assert set(resp.array) == {70, 160}
    assert resp.valid.all() and (resp.status == "ok").all()
    truth = np.array([responsivity(CHNL[a], m, seed=SEED) for a, m in zip(resp.array, resp.mjd)])
    assert np.all(np.abs(resp.responsivity / truth - 1) < 0.01)
    # the errors are honest: pulls against the truth of unit order
    pull = (resp.responsivity - truth) / resp.responsivity_err
    assert 0.3 < np.std(pull) < 3
    assert sim["study"].problems == []
    groups = sim["study"].tables["mips_responsivity_groups"]        # two pixel groups per array
    assert len(groups) == 2 * len(resp) and groups.valid.all()
    assert set(groups.pixel_group) == {"x0-15", "x16-31", "y0", "y1"}
    truth = np.array([responsivity(CHNL[a], m, seed=SEED) for a, m in zip(groups.array, groups.mjd)])
    assert np.all(np.abs(groups.responsivity / truth - 1) < 0.01)


def test_drift_rate_of_a_linear_trend_within_10_percent(sim):
    resp = sim["study"].tables["mips_responsivity"]
    checked = 0
    for band in (70, 160):
        r = resp[resp.array == band]
        fit = fit_trend(r.mjd, r.responsivity, r.responsivity_err, periods=())
        truth = fit_trend(r.mjd, responsivity(CHNL[band], r.mjd.to_numpy(), seed=SEED), periods=())
        slope, err = fit.slope
        if abs(truth.slope[0]) < 20 * err:                   # the data do not allow a 10 % test
            continue
        assert abs(slope / truth.slope[0] - 1) < 0.10, (band, slope, truth.slope[0])
        checked += 1
    assert checked >= 1


def test_per_dce_quantities_against_the_simulator(sim):
    dce = sim["study"].tables["mips_dce"]
    assert len(dce) == len(sim["truth"]["dces"]) == 30 + 120 + 120
    npix = {24: 128 * 128, 70: 32 * 32, 160: 2 * 20}
    for band, g in dce.groupby("array"):
        truth = [sim["dces"][f] for f in g.source_file]
        # saturated fraction: exactly the pixels the simulator clipped
        assert np.array_equal(np.rint(g.saturated_fraction * npix[band]).astype(int), [d["n_sat"] for d in truth])
        n_cr = sum(len(d["crs"]) for d in truth)
        if band == 24:
            assert g.zero_level_DN.isna().all() and g.read_noise_DN.isna().all()
            assert 0.75 * n_cr <= g.cr_hits.sum() <= 1.25 * n_cr
            continue
        arr = ARRAYS[CHNL[band]]
        zero = np.array([d["zero_level"] for d in truth])               # bias -28000 DN + mission drift
        assert abs(np.median(zero) - arr.bias) < 30                     # ~0 near MISSION_MJD0 (53500)
        assert abs(np.median(g.zero_level_DN - zero)) < 30              # +- 300 DN per pixel and DCE
        assert abs(np.median(g.read_noise_DN) / arr.rdnoise - 1) < 0.03  # 15 DN per read
        assert 0.6 * n_cr <= g.cr_hits.sum() <= 1.02 * n_cr              # small hits hide in the noise
    daily = sim["study"].tables["mips_cr_daily"]
    for band, g in dce.groupby("array"):
        row = daily[daily.array == band].iloc[0]
        assert row.hits == g.cr_hits.sum() and row.dces == len(g)
        assert row.cr_rate == pytest.approx(g.cr_hits.sum() / (g.pixels * g.exptime).sum())


def test_reductions_build_without_computing(sim, raise_if_dask_computes):
    plan = M.plan(sim["store"])                 # the eager part: per-DCE metadata, calibration
    with raise_if_dask_computes():
        lazy = M.reductions(plan)
    assert set(lazy) == {1, 2, 3}
    for chnl, parts in lazy.items():
        assert all(isinstance(a, dask.array.Array) for a in parts["stats"])
        assert (parts["stims"] is None) == (chnl == 1)
        assert all(isinstance(a, dask.array.Array) for a in parts["groups"].values())
    with dask.config.set(scheduler="sync"):
        stims = lazy[2]["stims"].compute()
    assert stims.shape == (40, 3)


def test_time_window_selects_dces(sim):
    resp = sim["study"].tables["mips_responsivity"]
    mjd = np.sort(resp.mjd.unique())
    start, stop = mjd[5] - 1e-6, mjd[40] + 1e-6
    with dask.config.set(scheduler="sync"):
        part = M.study(sim["store"], start=start, stop=stop)
    r = part.tables["mips_responsivity"]
    assert len(r) == 36 and r.mjd.between(start, stop).all()
    assert part.tables["mips_dce"].mjd.between(start, stop).all()
    assert part.span[0] >= start and part.span[1] <= stop
    truth = np.array([responsivity(CHNL[a], m, seed=SEED) for a, m in zip(r.array, r.mjd)])
    assert np.all(np.abs(r.responsivity / truth - 1) < 0.01)   # stims at the window edges too


def test_write_study_plots_and_zarr(sim, tmp_path):
    paths = write_study(sim["study"], tmp_path)
    names = {p.name for p in paths}
    for name in ("mips_responsivity", "mips_responsivity_groups", "mips_zero_level", "mips_read_noise", "mips_saturated_fraction",
                 "mips_cr_rate", "mips_droop", "mips_jailbar"):
        assert f"{name}.png" in names
    z = xr.open_zarr(tmp_path / "stability.zarr", group="mips_responsivity", consolidated=False)
    assert np.allclose(z.responsivity.values, sim["study"].tables["mips_responsivity"].responsivity.values)


@pytest.fixture(scope="module")
def scheduler():
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as lc:
        yield ["--scheduler", lc.scheduler_address, "-q"]


def test_cli_trend_mips(sim, tmp_path, scheduler, capsys):
    out = tmp_path / "trend"
    assert main(["trend", "mips", "--store", str(sim["store"]), "--out", str(out), *scheduler]) == 0
    csv = pd.read_csv(out / "mips_responsivity.csv")
    assert list(csv.columns[:6]) == LEADING
    assert len(csv) == sum(d["stim"] for d in sim["truth"]["dces"])
    page = (out / "index.html").read_text()
    for name in ("mips_responsivity.csv", "mips_dce.csv", "trends.csv", "mips_responsivity.png"):
        assert f"'{name}'" in page and (out / name).is_file()
    assert len(list(out.glob("*.png"))) == 8
    assert "mips_responsivity 80 rows" in capsys.readouterr().out


def test_cli_window_restricts_rows(sim, tmp_path, scheduler):
    from astropy.time import Time

    resp = sim["study"].tables["mips_responsivity"]
    mjd = np.sort(resp.mjd.unique())
    start = Time(mjd[20] - 1e-6, format="mjd", scale="utc").isot      # ISO date-time
    stop = f"{mjd[59] + 1e-6:.7f}"                                    # MJD
    out = tmp_path / "window"
    assert main(["trend", "mips", "--store", str(sim["store"]), "--out", str(out), "--from", start,
                 "--to", stop, *scheduler]) == 0
    csv = pd.read_csv(out / "mips_responsivity.csv")
    assert len(csv) == 40 and csv.mjd.min() == pytest.approx(mjd[20]) and csv.mjd.max() == pytest.approx(mjd[59])


@pytest.mark.parametrize("args, message", [
    (["--from", "last tuesday"], "--from: bad WHEN 'last tuesday'"),
    (["--to", "2005-02-30"], "--to: bad WHEN '2005-02-30'"),
    (["--from", "53501", "--to", "53500"], "--from 53501 is after --to 53500"),
])
def test_cli_bad_when_exits_2(sim, tmp_path, capsys, args, message):
    code = main(["trend", "mips", "--store", str(sim["store"]), "--out", str(tmp_path / "x"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_changed_calibration_is_a_problem_the_rest_goes_on(tmp_path, scheduler, capsys):
    raw = tmp_path / "raw"
    simulate_mips(raw, specs=[AorSpec(aorkey=30000000, aot_type="MipsPhot", object="G", ra=10.0, dec=5.0,
                                      start_mjd=53600.0, n_dce=6, arrays=(2, 3), stim_every=3)], seed=1)
    store = tmp_path / "m.zarr"
    assert ingest_mips([raw], store, report=lambda line: None).exit_code == 0
    dark = raw / "cal" / "mips160_dark.fits"
    shutil.copy(dark, tmp_path / "dark.bak")
    with open(dark, "r+b") as f:                       # the 160 um calibration changed after ingest
        f.seek(2880 + 10)
        f.write(b"\x01")
    out = tmp_path / "out"
    assert main(["trend", "mips", "--store", str(store), "--out", str(out), *scheduler]) == 1
    err = capsys.readouterr().err
    assert "MIPS 160 um: 6 DCE(s) not analysed (SPITZER_M3_30000000_" in err and "SHA-256" in err
    csv = pd.read_csv(out / "mips_responsivity.csv")
    assert (csv[csv.array == 70].status == "ok").all() and len(csv[csv.array == 70]) == 2
    assert csv[csv.array == 160].responsivity.isna().all()
