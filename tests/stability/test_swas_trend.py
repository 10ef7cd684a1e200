"""SWAS stability study (reduce.stability.swas) on a simulated three-day store that has only been
ingested: the quantities against the level-1 reduction of the same store and the simulator's truth,
laziness, the window, problem lines."""

import json

import numpy as np
import pytest
from astropy.io import fits

from reduce.simulate.swas import simulate_swas
from reduce.simulate.swas_plan import make_spec
from reduce.stability import swas as S
from reduce.swas.ingest import ingest_swas
from reduce.swas.physics import NOISE_BW

DAY1 = 51118.0  # MJD of mission day 1


@pytest.fixture(scope="module")
def mission(tmp_path_factory):
    root = tmp_path_factory.mktemp("stab_swas")
    specs = [make_spec(5, 1, "OMC-1", "NOD", 400, start_s=300.0, ground_gap=True),
             make_spec(5, 2, "G34.3+0.15/A", "CHOP", 200, start_s=1500.0),
             make_spec(5, 3, "JUPITER", "PLANCAL", 120, start_s=2400.0),
             # 150-scan OFF blocks for the Allan variance, without the single-scan artefacts (an injected
             # baseline excursion inside the run would rightly raise its Allan variance)
             make_spec(5, 4, "W3(OH)", "NOD", 700, start_s=3000.0, nod_scans=150, n_excursions=0, n_spikes=0),
             make_spec(6, 1, "IC443B-60", "MAP", 240, lo_shift_kms=-60.0, start_s=300.0),
             make_spec(6, 2, "NGC 7538 IRS1", "CHOP_NOD", 300, start_s=1500.0),
             make_spec(7, 1, "SGRA", "NOD", 300, start_s=300.0, with_cal=False, nod_scans=100,  # no CAL
                       n_excursions=0, n_spikes=0)]
    simulate_swas(root / "raw", specs=specs, seed=3)
    store = root / "swas.zarr"
    ingest_swas([root / "raw"], store)
    study = S.study(store)                       # on the store as ingested (no level-1 group yet)
    from reduce.swas.pipeline import open_level1, reduce_swas
    reduce_swas(store, root / "level1", report=lambda *a, **k: None)
    level1 = {t: open_level1(store, t).compute() for t in ("segments", "pairs")}
    study_l1 = S.study(store)                    # now with level-1 results in the store
    doc = json.loads((root / "raw" / "swas_truth.json").read_text())
    truth = {(t["day"], t["segment"]): t for t in doc["segments"]}
    npz = dict(np.load(root / "raw" / "swas_truth.npz"))
    return {"root": root, "store": store, "study": study, "study_l1": study_l1, "level1": level1, "truth": truth,
            "npz": npz}


def _row(table, seg):
    return table[table["segment"] == seg].iloc[0]


def test_segments_table_columns_rows_and_problems(mission):
    st = mission["study"]
    t = st.tables["swas_segments"]
    assert list(t.columns[:7]) == ["segment", "object", "mjd", "tsys_490_K", "tsys_550_K",
                                   "noise_ratio_490", "noise_ratio_550"]
    assert sorted(t["segment"]) == [5001, 5002, 5004, 6001, 6002]
    assert _row(t, 6001)["object"] == "IC443B-60"
    for seg, tr in ((s, mission["truth"][(s // 1000, s % 1000)]) for s in t["segment"]):
        assert _row(t, seg)["mjd"] == pytest.approx(tr["start_mjd"], abs=1e-9)
    # the segment without CAL: one problem line naming it and why; the special mode is a note
    assert len(st.problems) == 1 and st.problems[0].startswith("s0007001 'SGRA'")
    assert "no usable CAL" in st.problems[0]
    assert any("s0005003" in n and "PLANCAL" in n for n in st.notes)
    assert st.instrument == "swas" and st.span[0] <= t["mjd"].min() and st.span[1] >= t["mjd"].max()


def test_tsys_equals_level1_and_truth(mission):
    t = mission["study"].tables["swas_segments"]
    seg = mission["level1"]["segments"]
    ids = list(seg["seg_segment"].values)
    assert sorted(ids) == sorted(t["segment"])
    for _, r in t.iterrows():
        j = ids.index(r["segment"])
        tr = mission["truth"][(r["segment"] // 1000, r["segment"] % 1000)]
        for k, h in enumerate(("490", "550")):
            got = r[f"tsys_{h}_K"]
            assert got == pytest.approx(float(seg["tsys"].values[j, k]), rel=1e-6)
            assert abs(got / tr["tsys_k"][h] - 1) < 0.02      # the level-1 fidelity tolerance


def test_level1_results_in_the_store_are_set_beside(mission):
    before, after = mission["study"].tables["swas_segments"], mission["study_l1"].tables["swas_segments"]
    assert "tsys_level1_490_K" not in before.columns
    for h in ("490", "550"):
        np.testing.assert_array_equal(after[f"tsys_{h}_K"].values, before[f"tsys_{h}_K"].values)
        np.testing.assert_allclose(after[f"tsys_level1_{h}_K"].values, after[f"tsys_{h}_K"].values, rtol=1e-6)
    assert any(n.startswith("level-1 results in the store for 5 of 5 segments") for n in mission["study_l1"].notes)


REUSED = ["noise_ratio_490", "noise_ratio_550", "pairs_490", "spikes_550", "baseline_490", "comb_nlines_490",
          "f0_490_Hz", "d1_550_Hz_per_ch", "d2_490_Hz_per_ch2", "comb_rms_550_ch"]


def test_level1_pairs_flags_and_dispersion_are_read_not_redone(mission, monkeypatch):
    """With level-1 results in the store (same inputs and parameters), the pairing, COMB dispersion
    and flagging are read from its tables: the study gives the same numbers with those kernels
    disabled, and says so; an ingested-only store still needs them."""
    import dask

    before = mission["study"].tables["swas_segments"]
    assert set(REUSED) <= set(before.columns)
    assert any("taken from the store's level-1 results" in n and n.startswith("pairing, COMB dispersion and "
               "flagging of 5 segments") for n in mission["study_l1"].notes), mission["study_l1"].notes

    def refuse(*a, **k):
        raise AssertionError("recomputed a level-1 result")
    monkeypatch.setattr(S, "pair_segment", refuse)
    monkeypatch.setattr(S, "flag_segment", refuse)
    with dask.config.set(scheduler="sync"):
        again = S.study(mission["store"]).tables["swas_segments"]
    assert list(again["segment"]) == list(before["segment"])
    for col in REUSED:
        np.testing.assert_allclose(again[col].values, before[col].values, rtol=1e-6, err_msg=col)
    assert (before["pairs_490"] > 0).all()


def test_series_kernels():
    from reduce.stability.kernels.swas_series import day_candidates, longest_run, segment_sums

    sums = segment_sums(np.array([5, 5, 7, 9, 7]), np.array([[1.0, 2], [3, np.nan], [4, 4], [100, 100], [6, 6]]),
                        np.array([7, 5, 8]))
    np.testing.assert_array_equal(sums, [[10, 10, 2, 2], [4, 2, 2, 1], [0, 0, 0, 0]])
    t = np.arange(9) * 2 / 86400
    assert longest_run(np.array([1, 1, 1, 2, 2, 2, 2, 1, 1]), np.ones(9, bool), t) == (2, 3, 7)
    # an unusable scan or a time gap breaks a run
    assert longest_run(np.array([1, 1, 1, 1, 2, 2, 1, 1]), np.array([1, 1, 0, 1, 1, 1, 1, 1], bool),
                       np.r_[0, 2, 4, 6, 8, 10, 30, 32] / 86400) == (1, 0, 2)
    assert longest_run(np.zeros(4), np.ones(4, bool), t[:4]) == (-1, 0, 0)
    assert list(day_candidates([5001, 6001, 7001], DAY1 + 5.5, DAY1 + 6.0)) == [False, True, False]


def test_noise_ratio_near_one(mission):
    """The simulator's noise is purely radiometric: measured / radiometer-equation noise ~ 1."""
    t = mission["study"].tables["swas_segments"]
    for h in ("490", "550"):
        assert np.all(np.abs(t[f"noise_ratio_{h}"] - 1) < 0.03), t[f"noise_ratio_{h}"].values


def test_dispersion_against_truth(mission):
    st = mission["study"]
    t = st.tables["swas_segments"]
    x = np.arange(25, 700) - 362.0
    for _, r in t.iterrows():
        tr = mission["truth"][(r["segment"] // 1000, r["segment"] % 1000)]
        for h in ("490", "550"):
            d = tr["dispersion"][h]
            f_true = (d["F0_hz"] + d["dF0_dTAOS_hz_per_c"] * (r["taos_C"] - d["taos_ref_c"])
                      + d["D1_hz"] * x + d["D2_hz"] * x * x)
            f = r[f"f0_{h}_Hz"] + r[f"d1_{h}_Hz_per_ch"] * x + r[f"d2_{h}_Hz_per_ch2"] * x * x
            assert np.max(np.abs(f - f_true)) / d["D1_hz"] < 0.1, (r["segment"], h)
    # COMB line positions: each used line's centre maps back to n x 100 MHz through its set's fit
    lines, sets = st.tables["swas_comb_lines"], st.tables["swas_comb_sets"]
    assert len(lines) > 0 and set(lines["receiver"]) == {490, 550}
    m = lines.merge(sets, on=["segment", "receiver", "comb_set"], suffixes=("", "_set"))
    xc = m["centre_ch"] - 362.0
    resid = (m["f0_Hz"] + m["d1_Hz_per_ch"] * xc + m["d2_Hz_per_ch2"] * xc ** 2 - m["if_Hz"]) / m["d1_Hz_per_ch"]
    assert np.max(np.abs(resid)) < 0.05
    # F0 against TAOS within segments recovers the simulator's dF0/dTAOS within 10 %
    cor = st.tables["swas_correlations"].set_index(["receiver", "quantity"])
    for h in (490, 550):
        slope = cor.loc[(h, "f0_vs_taos_within_segments"), "slope"]
        assert slope == pytest.approx(mission["truth"][(5, 1)]["dispersion"][str(h)]["dF0_dTAOS_hz_per_c"], rel=0.1)


def test_zero_gain_and_housekeeping(mission):
    t = mission["study"].tables["swas_segments"]
    npz = mission["npz"]
    for _, r in t.iterrows():
        day, num = r["segment"] // 1000, r["segment"] % 1000
        stem = f"swas_lh_{day:04d}_{num:03d}"
        for h in ("490", "550"):
            z = npz[f"{stem}.zero{h}"][25:-25].mean()
            g = npz[f"{stem}.gain{h}"][25:-25].mean()
            assert r[f"zero_{h}_counts"] == pytest.approx(z, rel=0.005)
            assert r[f"gain_{h}_counts_per_K"] == pytest.approx(g, rel=0.03)
            assert r[f"off_zero_{h}_counts"] == pytest.approx(r[f"gain_{h}_counts_per_K"] * r[f"tsys_{h}_K"], rel=1e-9)
        with fits.open(mission["root"] / "raw" / f"{stem}.fits") as hdul:
            hk = hdul["HK"].data
            for k, h in enumerate(("490", "550")):
                assert r[f"t_lo_{h}_K"] == pytest.approx(float(np.mean(hk[f"TLO{k + 1}"].astype(float))), rel=1e-6)
                assert r[f"t_mix_{h}_K"] == pytest.approx(float(np.mean(hk[f"TMIX{k + 1}"].astype(float))), rel=1e-6)
    cor = mission["study"].tables["swas_correlations"]
    assert set(cor["quantity"]) >= {"gain_vs_t_lo", "gain_vs_t_mix"}
    assert np.all(np.abs(cor["pearson_r"].dropna()) <= 1)


def test_flag_rates_per_day_equal_level1_flags(mission):
    """Pairs tested and flagged for spikes / baseline per day: exactly the level-1 flagging's."""
    daily = mission["study"].tables["swas_flags_daily"].set_index("missday")
    pairs = mission["level1"]["pairs"]
    crit = ["noise", "spikes_fast", "baseline"]
    day = pairs["pair_segment"].values // 1000
    for h in ("490", "550"):
        f = pairs[f"flag{h}"].values.astype(np.int32) & 0xFFFF
        usable = (f & 0x8000) == 0
        for d in (5, 6):
            sel = usable & (day == d)
            assert daily.loc[d, f"pairs_{h}"] == sel.sum()
            assert daily.loc[d, f"spikes_{h}"] == np.count_nonzero(f[sel] & (1 << crit.index("spikes_fast")))
            assert daily.loc[d, f"baseline_{h}"] == np.count_nonzero(f[sel] & (1 << crit.index("baseline")))
            assert daily.loc[d, f"spike_rate_{h}"] == pytest.approx(daily.loc[d, f"spikes_{h}"] / sel.sum())
        assert daily.loc[5, f"pairs_{h}"] > 0
    assert daily.loc[5, "mjd"] == pytest.approx(mission["truth"][(5, 1)]["start_mjd"], abs=1e-9)


def test_allan_from_the_long_off_run(mission):
    """Only 5004 and 7001 (not calibrated: the Allan variance needs no CAL) have OFF runs >= 64
    scans; the spectroscopic Allan variance at one scan is the radiometric 2 / (B t) (two channels'
    difference), falling as 1/T; the total power one (channel average) far below at one scan."""
    st = mission["study"]
    al = st.tables["swas_allan"]
    assert set(al["segment"]) == {5004, 7001} and set(al["run"]) == {"OFF"}
    runs = al.groupby("segment")["run_scans"].first()
    assert 64 <= runs[5004] <= 149 and 64 <= runs[7001] <= 99      # within one OFF block (first one unsettled)
    assert any("from 2 continuous OFF/ZERO runs" in n for n in st.notes)
    for seg, h in ((5004, 490), (5004, 550), (7001, 490), (7001, 550)):
        sp = al[(al["segment"] == seg) & (al["receiver"] == h) & (al["kind"] == "spectroscopic")].sort_values("tau_s")
        assert sp["tau_s"].iloc[0] == pytest.approx(2.0, rel=1e-3)
        assert sp["allan_variance"].iloc[0] == pytest.approx(2.0 / (NOISE_BW * 2.0), rel=0.1)
        slope = np.polyfit(np.log(sp["tau_s"]), np.log(sp["allan_variance"]), 1)[0]
        assert slope == pytest.approx(-1.0, abs=0.1)
        tp = al[(al["segment"] == seg) & (al["receiver"] == h) & (al["kind"] == "total_power")].sort_values("tau_s")
        assert tp["allan_variance"].iloc[0] < 0.1 * sp["allan_variance"].iloc[0]
    t = st.tables["swas_segments"]
    assert _row(t, 5004)["allan_run"] == "OFF" and _row(t, 5001)["allan_run"] == ""


def test_series_have_units_and_groups(mission):
    series = {s.name: s for s in mission["study"].series}
    assert {"tsys", "noise_ratio", "zero_level", "gain", "dispersion_f0", "t_lo", "t_mix", "taos",
            "spike_flag_rate", "baseline_flag_rate"} <= set(series)
    s = series["tsys"]
    assert s.units == "K" and set(s.group) == {"490 GHz", "550 GHz"} and s.time.size == 10
    assert np.all(np.isfinite(s.value)) and s.error is not None


def test_reductions_are_lazy(mission, raise_if_dask_computes):
    with raise_if_dask_computes():
        seg = S.segment_dataset(mission["store"])
        day = S.daily_flag_rates(seg)
        for v in ("tsys", "noise_ratio", "allan_spec", "t_lo", "status"):
            assert hasattr(seg[v].data, "dask"), v
        assert hasattr(day["spike_rate"].data, "dask")
    assert seg["tsys"].attrs["units"] == "K" and seg.sizes["receiver"] == 2
    assert list(seg["segment"].values) == [5001, 5002, 5003, 5004, 6001, 6002, 7001]


def test_window_restricts_segments(mission):
    st = S.study(mission["store"], start=DAY1 + 5.0, stop=DAY1 + 6.0)    # mission day 6 only
    t = st.tables["swas_segments"]
    assert sorted(t["segment"]) == [6001, 6002]
    assert st.problems == []                                          # 7001 lies outside
    assert list(st.tables["swas_flags_daily"]["missday"]) == [6]
    assert st.span == (DAY1 + 5.0, DAY1 + 6.0)
    # a window inside a day cuts by the first scan's time
    t0 = mission["truth"][(5, 2)]["start_mjd"]
    st = S.study(mission["store"], start=t0, stop=t0 + 1e-6)
    assert list(st.tables["swas_segments"]["segment"]) == [5002]
    st = S.study(mission["store"], start=DAY1 + 100.0)
    assert len(st.tables["swas_segments"]) == 0 and st.problems == []


def test_batches_of_days_give_the_same_study(mission):
    """One graph per mission day (batch_days=1: three graphs here) gives the same tables as one graph."""
    import dask

    with dask.config.set(scheduler="sync"):
        one = S.study(mission["store"], batch_days=1)
    whole = mission["study_l1"]                  # the store holds level-1 results by now
    assert one.problems == whole.problems
    for name, df in whole.tables.items():
        assert list(one.tables[name].columns) == list(df.columns), name
        np.testing.assert_array_equal(one.tables[name].to_numpy(dtype=str), df.to_numpy(dtype=str), err_msg=name)
    assert S._batches(S._open(mission["store"])[0], None, None, 1) == [(DAY1 + 4, DAY1 + 5), (DAY1 + 5, DAY1 + 6),
                                                           (DAY1 + 6, DAY1 + 7)]
