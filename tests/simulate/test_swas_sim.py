"""SWAS level-0.5 simulator: ICD conformance, forward model against truth, determinism."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.constants import c as C_LIGHT
from astropy.coordinates import ICRS, LSRK, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time

from conftest import require_tool
from reduce.simulate.swas import plan_swas, simulate_segment, simulate_swas
from reduce.simulate.swas_plan import REST_FREQ_HZ, make_spec

C_KMS = C_LIGHT.to_value(u.km / u.s)
NB = 1.5e6  # noise bandwidth, Hz (ICD)
LINES = (("490LSB", 2.0, 9.0, 6.0), ("490USB", 4.0, 9.0, 6.0), ("550LSB", 10.0, 9.0, 6.0),
         ("550USB", 8.0, 9.0, 6.0))

PRIMARY_KEYS = {"TELESCOP": str, "INSTRUME": str, "LHVERSN": int, "MISSDAY": int, "SEGMENT": int,
                "OBSMODE": str, "OBJECT": str, "RA": float, "DEC": float, "VSOURCE": float,
                "LOFREQ1": float, "LOFREQ2": float, "DATE-OBS": str, "NSCANS": int}
SCAN_COLS = {"SCAN": "J", "TIME": "D", "SCANTYPE": "4A", "INTTIME": "E", "RA": "D", "DEC": "D",
             "DLAM": "E", "DBET": "E", "ROLL": "E", "SCPOS": "3D", "SCVEL": "3D", "THOT": "E",
             "TAOS": "E", "CONT": "2E", "QUALITY": "I"}
HK_COLS = {"TIME": "D", "TMIX1": "E", "TMIX2": "E", "TLO1": "E", "TLO2": "E", "IBIAS1": "E", "IBIAS2": "E"}


def small_specs():
    """Five short segments: every mode, odd names, an LO shift and a ground gap."""
    return [make_spec(7, 1, "W3(OH)", "NOD", 200, ground_gap=True, start_s=600.0),
            make_spec(7, 2, "G34.3+0.15/A", "CHOP", 120, start_s=1200.0),
            make_spec(7, 3, "NGC 7538 IRS1", "CHOP_NOD", 120, start_s=1600.0),
            make_spec(7, 4, "IC443B-60", "MAP", 160, lo_shift_kms=-60.0, start_s=2000.0),
            make_spec(7, 5, "JUPITER", "PLANCAL", 80, start_s=2500.0, end_cal=True)]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("swas_small")
    summary = simulate_swas(out, specs=small_specs(), seed=5)
    return out, summary


@pytest.fixture(scope="module")
def nod():
    """A full 1350-scan NOD segment of OMC-1 with a ground gap: (HDUList, truth)."""
    spec = make_spec(1, 1, "OMC-1", "NOD", 1350, ground_gap=True, start_s=300.0, end_cal=True, lines=LINES)
    return simulate_segment(spec, seed=11)


def clean_mask(hdul, truth, extra_after_gap=50):
    """Scans free of flags, spikes, excursions and post-gap hysteresis."""
    q = hdul["SCANS"].data["QUALITY"]
    ok = q == 0
    for s in [sp[0] for sp in truth["spikes"]] + [e["scan"] for e in truth["baseline_excursions"]]:
        ok[s] = False
    for g in truth["ground_gaps"]:
        ok[g["first_scan_after"]:g["first_scan_after"] + extra_after_gap] = False
    return ok


def channel_of_if(disp, taos, f_if):
    """Invert f_IF(c) = F0' + D1 x + D2 x^2 for the channel c (independent of the simulator)."""
    f0 = disp["F0_hz"] + disp["dF0_dTAOS_hz_per_c"] * (taos - disp["taos_ref_c"])
    a, b, cc = disp["D2_hz"], disp["D1_hz"], f0 - f_if
    return 362 + (-b + np.sqrt(b * b - 4 * a * cc)) / (2 * a)


def predicted_channel(truth, band, v_lsr, v_obs_extra, taos):
    """Channel of a line in ``band`` per the ICD sideband and Doppler formulas."""
    half = band[:3]
    lo = truth["lofreq_hz"][half]
    nu = REST_FREQ_HZ[band] * (1 - (v_lsr + v_obs_extra) / C_KMS)
    f_if = nu - lo if band.endswith("USB") else lo - nu
    return channel_of_if(truth["dispersion"][half], taos, f_if)


def paired_spectra(hdul, truth, half, ok):
    """(ON-OFF)/(OFF-ZERO)*Tsys, each clean ON paired one-to-one with the nearest unused clean OFF
    within 30 s (ZERO = mean of the ZERO scans, Tsys from the truth)."""
    d = hdul["SCANS"].data
    aos = hdul[f"AOS{half}"].data.astype(float)
    st = np.char.strip(d["SCANTYPE"])
    zero = aos[st == "ZERO"].mean(axis=0)
    t = d["TIME"] * 86400.0
    offs = np.flatnonzero((st == "OFF") & ok & (np.arange(len(st)) > 10))
    used, on, off = set(), [], []
    for i in np.flatnonzero((st == "ON") & ok):
        for j in offs[np.argsort(np.abs(t[offs] - t[i]), kind="stable")]:
            if abs(t[j] - t[i]) > 30.0:
                break
            if j not in used:
                used.add(j), on.append(i), off.append(j)
                break
    on, off = np.array(on), np.array(off)
    return on, off, (aos[on] - aos[off]) / (aos[off] - zero) * truth["tsys_k"][half]


# ---------------------------------------------------------------- ICD conformance

def test_files_conform_to_icd(small_set):
    out, summary = small_set
    specs = small_specs()
    assert [Path(f).name for f in summary["files"]] == [f"swas_lh_0007_{k:03d}.fits" for k in range(1, 6)]
    assert summary["n_scans"] == sum(s.n_scans for s in specs)
    for path, spec in zip(summary["files"], specs):
        assert re.fullmatch(r"swas_lh_\d{4}_\d{3}\.fits", Path(path).name)
        with fits.open(path) as h:
            assert [x.name for x in h] == ["PRIMARY", "SCANS", "AOS490", "AOS550", "HK"]
            p = h[0].header
            for k, typ in PRIMARY_KEYS.items():
                assert isinstance(p[k], typ), k
            assert "EPOCH" not in p and p["RADESYS"] == "ICRS"
            assert (p["TELESCOP"], p["INSTRUME"], p["LHVERSN"]) == ("SWAS", "SWAS-AOS", 1)
            assert (p["MISSDAY"], p["SEGMENT"], p["OBSMODE"], p["OBJECT"]) == (7, spec.segment, spec.mode,
                                                                               spec.object)
            assert (p["RA"], p["DEC"], p["VSOURCE"]) == (spec.ra, spec.dec, spec.vsource)
            assert h[0].data is None
            n = p["NSCANS"]
            assert n == spec.n_scans
            cols = h["SCANS"].columns
            assert {c.name: c.format for c in cols} == SCAN_COLS
            d = h["SCANS"].data
            assert len(d) == n and np.array_equal(d["SCAN"], np.arange(n))
            assert d["SCPOS"].shape == (n, 3) and d["CONT"].shape == (n, 2)
            assert set(np.char.strip(d["SCANTYPE"])) <= {"ON", "OFF", "ZERO", "HOT", "COMB"}
            assert np.all(np.diff(d["TIME"]) > 0)
            assert p["DATE-OBS"] == Time(d["TIME"][0], format="mjd", scale="utc").isot
            assert abs(d["TIME"][0] - (51118.0 + 6 + (spec.start_s + 1.0) / 86400)) < 1e-9
            for name in ("AOS490", "AOS550"):
                assert h[name].data.dtype == np.dtype(">f4") and h[name].data.shape == (n, 725)
                assert h[name].header["NAXIS1"] == 725 and h[name].header["NAXIS2"] == n
            assert {c.name: c.format for c in h["HK"].columns} == HK_COLS
            hk = h["HK"].data["TIME"]
            assert np.allclose(np.diff(hk) * 86400, 10.0, atol=1e-4)
            assert hk[0] <= d["TIME"][0] and hk[-1] >= d["TIME"][-1] - 10 / 86400
    lo = fits.getheader(summary["files"][3])
    assert lo["LOFREQ1"] == pytest.approx(489.5050e9 * (1 + 60.0 / C_KMS), rel=1e-12)
    assert lo["LOFREQ2"] == pytest.approx(553.7311e9 * (1 + 60.0 / C_KMS), rel=1e-12)


def test_every_hdu_carries_verified_checksums(small_set):
    """ICD 1.1: CHECKSUM and DATASUM in every HDU of every segment file (astropy verifies them)."""
    for path in small_set[1]["files"]:
        with fits.open(path) as hd:
            assert [(h.verify_checksum(), h.verify_datasum()) for h in hd] == [(1, 1)] * len(hd), path


def test_fitsverify_clean(small_set):
    exe = require_tool("fitsverify")
    for path in small_set[1]["files"]:
        res = subprocess.run([exe, path], capture_output=True, text=True)
        m = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", res.stdout)
        assert m, res.stdout[-500:]
        assert (int(m.group(1)), int(m.group(2))) == (0, 0), res.stdout[-2000:]


def test_truth_files(small_set):
    out, summary = small_set
    doc = json.loads(Path(summary["truth"]).read_text())
    arrays = np.load(out / doc["npz"])
    assert [s["file"] for s in doc["segments"]] == [Path(f).name for f in summary["files"]]
    for seg in doc["segments"]:
        stem = seg["file"][:-5]
        for k in ("time_mjd", "v_sc_kms", "v_geo_kms", "coupling"):
            assert arrays[f"{stem}.{k}"].shape == (seg["n_scans"],)
        for h in ("490", "550"):
            assert 2000 <= seg["tsys_k"][h] <= 3100
            t0 = 6.62607015e-34 * seg["lofreq_hz"][h] / 1.380649e-23
            j_bg = t0 / np.expm1(t0 / 2.97)                    # J(2.97 K) at the LO
            assert seg["tsys_k"][h] == pytest.approx(seg["t_rx_k"][h] + j_bg, abs=1e-9)
    assert doc["segments"][0]["ground_gaps"] and not doc["segments"][1]["ground_gaps"]


# ---------------------------------------------------------------- timeline

def test_nod_settle_bit_and_gap(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    st = np.char.strip(d["SCANTYPE"])
    sky = np.flatnonzero(np.isin(st, ("ON", "OFF")))
    hot = np.flatnonzero(st == "HOT")
    sky = sky[(sky > 8) & (sky < hot[hot > 8].min())]     # between the start and end CAL sequences
    change = st[sky][1:] != st[sky][:-1]
    bit4 = (d["QUALITY"][sky][1:] & 4) != 0
    assert change.sum() > 100
    assert np.array_equal(bit4, change)        # set on the first scan after each nod, nowhere else
    (gap,) = truth["ground_gaps"]
    g = gap["first_scan_after"]
    dt = np.diff(d["TIME"]) * 86400
    assert dt[g - 1] >= 10.0
    assert np.allclose(np.delete(dt, g - 1), 2.0, atol=1e-4)
    assert d["TIME"][g - 1] + 1 / 86400 == pytest.approx(gap["start_mjd"], abs=1e-9)
    assert d["TIME"][g] - 1 / 86400 == pytest.approx(gap["end_mjd"], abs=1e-9)
    lost = (d["QUALITY"] & 1) != 0
    assert np.array_equal(np.flatnonzero(lost), truth["lost_reads"])
    assert np.array_equal(lost, d["INTTIME"] < 2.0)


def test_comb_lines_and_saturation(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    st = np.char.strip(d["SCANTYPE"])
    combs = np.flatnonzero(st == "COMB")
    assert len(combs) >= 3
    sat = (d["QUALITY"] & 2) != 0
    assert np.array_equal(np.flatnonzero(sat), truth["saturated_scans"]) and set(combs) == set(np.flatnonzero(sat))
    n_fit = 0
    for half in ("490", "550"):
        aos = hdul[f"AOS{half}"].data.astype(float)
        assert (aos[combs] == 65535.0).any(axis=1).all() and not (aos[~sat] >= 65535.0).any()
        offs = np.flatnonzero(st == "OFF")[:4]            # CAL sky scans just before the combs
        base = aos[offs].mean(axis=0)
        for i in combs:
            y = aos[i] - base
            for n, amp in truth["comb"]["amps_k"][half].items():
                c = predicted_channel_if(truth, half, d["TAOS"][i], int(n) * 1e8)
                k = int(round(c))
                if not 3 <= k <= 721 or (aos[i, k - 2:k + 3] >= 65535).any():
                    continue
                yy = np.log(y[k - 1:k + 2])                # a Gaussian is a parabola in log
                frac = 0.5 * (yy[0] - yy[2]) / (yy[0] - 2 * yy[1] + yy[2])
                assert k + frac == pytest.approx(c, abs=0.05)
                n_fit += 1
    assert n_fit >= 20


def predicted_channel_if(truth, half, taos, f_if):
    return channel_of_if(truth["dispersion"][half], float(taos), f_if)


# ---------------------------------------------------------------- intensity, noise, Doppler

def line_model(hdul, truth, half, scans):
    """Mean DSB line temperature (K) over ``scans`` from the ICD formulas and the truth."""
    return line_model_scans(hdul, truth, half, scans).mean(axis=0)


def line_model_scans(hdul, truth, half, scans):
    """DSB source temperature (K, lines + continuum x coupling) per scan, shape (len(scans), 725)."""
    d = hdul["SCANS"].data
    disp = truth["dispersion"][half]
    x = np.arange(725) - 362
    f0 = disp["F0_hz"] + disp["dF0_dTAOS_hz_per_c"] * (d["TAOS"][scans].astype(float) - disp["taos_ref_c"])
    f_if = f0[:, None] + disp["D1_hz"] * x + disp["D2_hz"] * x**2
    arr = truth["arrays"]
    vshift = (arr["v_geo_kms"][scans] + arr["v_sc_kms"][scans])[:, None]
    lo = truth["lofreq_hz"][half]
    out = np.zeros_like(f_if)
    for ln in truth["lines"]:
        if ln["band"].startswith(half):
            nu = lo + f_if if ln["band"].endswith("USB") else lo - f_if
            v = C_KMS * (1 - nu / ln["rest_freq_hz"]) - vshift
            out += ln["amp_k"] * np.exp(-4 * np.log(2) * ((v - ln["v_lsr_kms"]) / ln["fwhm_kms"]) ** 2)
    return (out + truth["continuum_k"]) * arr["coupling"][scans][:, None]


def test_doppler_terms_follow_icd(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    ra, dec = truth["ra_deg"], truth["dec_deg"]
    n_hat = SkyCoord(ra * u.deg, dec * u.deg).cartesian.xyz.value
    assert np.allclose(truth["arrays"]["v_sc_kms"], -(d["SCVEL"] @ n_hat), atol=1e-9)
    speed = np.linalg.norm(d["SCVEL"], axis=1)
    assert np.allclose(speed, 7.53, atol=0.05)
    assert np.allclose(np.linalg.norm(d["SCPOS"], axis=1), 6378.1 + 640.0, atol=1.0)
    assert np.ptp(truth["arrays"]["v_sc_kms"]) > 5.0           # half an orbit in 45 min
    # v_geo from an independent astropy route: barycentric correction + solar motion wrt LSRK
    i = 700
    t = Time(d["TIME"][i], format="mjd", scale="utc")
    pole = EarthLocation.from_geodetic(0 * u.deg, 90 * u.deg, 0 * u.m)   # no rotation velocity
    vcorr = SkyCoord(ra * u.deg, dec * u.deg).radial_velocity_correction(obstime=t, location=pole)
    bary = ICRS(x=0 * u.km, y=0 * u.km, z=0 * u.km, v_x=0 * u.km / u.s, v_y=0 * u.km / u.s,
                v_z=0 * u.km / u.s, representation_type="cartesian", differential_type="cartesian")
    v_sun = bary.transform_to(LSRK()).velocity.d_xyz.to_value(u.km / u.s)
    expect = -vcorr.to_value(u.km / u.s) - v_sun @ n_hat
    assert truth["arrays"]["v_geo_kms"][i] == pytest.approx(expect, abs=0.02)


def test_on_off_recovers_line_amplitude(nod):
    hdul, truth = nod
    ok = clean_mask(hdul, truth)
    for half in ("490", "550"):
        on, off, spec = paired_spectra(hdul, truth, half, ok)
        assert len(on) > 400
        mean = spec.mean(axis=0)
        cont = truth["continuum_k"] * (truth["arrays"]["coupling"][on].mean()
                                       - truth["arrays"]["coupling"][off].mean())
        model = line_model(hdul, truth, half, on) - line_model(hdul, truth, half, off) - cont  # lines only
        resid = mean - model - cont
        noise = np.std(spec[:, 40:685], axis=0).mean() / np.sqrt(len(on))
        assert np.std(resid[40:685]) < 1.5 * noise
        for band in (half + "LSB", half + "USB"):
            amp = next(ln["amp_k"] for ln in truth["lines"] if ln["band"] == band)
            lo_side = np.arange(725) < 362 if band.endswith("LSB") else np.arange(725) >= 362
            win = lo_side & (model > 0.3 * model[lo_side].max())
            ratio = (mean[win] - cont) @ model[win] / (model[win] @ model[win])
            err = noise / np.sqrt(model[win] @ model[win])
            assert ratio == pytest.approx(1.0, abs=max(5 * err, 0.01)), (band, amp, ratio, err)


def test_off_off_noise_follows_radiometer_equation(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    ok = clean_mask(hdul, truth) & (d["INTTIME"] == 2.0)
    st = np.char.strip(d["SCANTYPE"])
    i = np.flatnonzero((st[:-1] == "OFF") & (st[1:] == "OFF") & ok[:-1] & ok[1:])
    for half in ("490", "550"):
        aos = hdul[f"AOS{half}"].data.astype(float)
        zero = aos[st == "ZERO"].mean(axis=0)
        rel = (aos[i + 1] - aos[i]) / (aos[i] - zero)      # (T_in + T_rx) = Tsys on OFF
        ratio = np.std(rel, axis=0)[30:695] / (np.sqrt(2) / np.sqrt(NB * 2.0))
        assert len(i) > 300
        assert np.median(ratio) == pytest.approx(1.0, abs=0.02)


def test_doppler_moves_lines_with_v_sc_and_sidebands_fold(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    ok = clean_mask(hdul, truth)
    on, off, spec = paired_spectra(hdul, truth, "550", ok)
    vsc = truth["arrays"]["v_sc_kms"][on]
    groups = [vsc < np.quantile(vsc, 0.2), vsc > np.quantile(vsc, 0.8)]
    assert vsc[groups[1]].mean() - vsc[groups[0]].mean() > 4.0
    cdx = np.arange(725.0)
    shifts = {}
    for band, ln in (("550LSB", LINES[2]), ("550USB", LINES[3])):
        meas, pred, err = [], [], []
        for g in groups:
            extra = truth["arrays"]["v_geo_kms"][on][g] + vsc[g]
            c_pred = predicted_channel(truth, band, ln[2], extra, d["TAOS"][on][g].astype(float)).mean()
            y = spec[g].mean(axis=0) - truth["continuum_k"]
            w = np.abs(cdx - c_pred) < 13
            cm = (y[w] * cdx[w]).sum() / y[w].sum()           # centroid = mean shift of the group
            sig = spec[g][:, w].std(axis=0).mean() / np.sqrt(g.sum())
            meas.append(cm), pred.append(c_pred)
            err.append(sig * np.sqrt(((cdx[w] - cm) ** 2).sum()) / y[w].sum())
        # LSB lines at channel ~162, USB at ~562 (nominal LO), moving in opposite directions
        assert pred[0] == pytest.approx(162 if band == "550LSB" else 562, abs=30)
        for m, p, e in zip(meas, pred, err):
            assert m == pytest.approx(p, abs=4 * e + 0.05)
        shifts[band] = meas[1] - meas[0]
        assert shifts[band] == pytest.approx(pred[1] - pred[0], abs=4 * np.hypot(*err) + 0.05)
    # receding faster (v_sc up) -> lower sky frequency -> LSB channel up, USB channel down
    assert shifts["550LSB"] > 6.0 and shifts["550USB"] < -6.0


# ---------------------------------------------------------------- determinism, parallel, plan

def test_deterministic_bytes(small_set, tmp_path):
    out, summary = small_set
    specs = small_specs()[:3]
    again = simulate_swas(tmp_path / "a", specs=specs, seed=5)
    other = simulate_swas(tmp_path / "b", specs=specs, seed=6)
    for f, g, h in zip(summary["files"], again["files"], other["files"]):
        assert Path(f).read_bytes() == Path(g).read_bytes()
        assert Path(f).read_bytes() != Path(h).read_bytes()
    third = simulate_swas(tmp_path / "c", specs=specs, seed=5)  # the truth arrays are reproducible too
    npz = [Path(run["truth"]).with_suffix(".npz").read_bytes() for run in (again, third)]
    assert npz[0] == npz[1]


def test_parallel_equals_serial(small_set, tmp_path):
    from distributed import Client, LocalCluster
    out, summary = small_set
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl, \
            Client(cl) as client:
        par = simulate_swas(tmp_path, specs=small_specs(), seed=5, client=client)
    assert par["bytes"] == summary["bytes"] and par["n_scans"] == summary["n_scans"]
    for f, g in zip(summary["files"], par["files"]):
        assert Path(f).read_bytes() == Path(g).read_bytes()
    a = json.loads(Path(summary["truth"]).read_text())
    b = json.loads(Path(par["truth"]).read_text())
    assert a == b


def test_default_plan_covers_everything():
    specs = plan_swas()
    assert 8 <= len(specs) <= 12
    assert {s.mode for s in specs} == {"NOD", "CHOP", "CHOP_NOD", "MAP", "PLANCAL"}
    names = {s.object for s in specs}
    assert {"OMC-1", "SGRA", "SGRA-150", "G34.3+0.15/A", "IC443B-60"} <= names
    assert any(" " in n or "(" in n for n in names)
    assert any(s.ground_gap for s in specs)
    assert all(200 <= s.n_scans <= 1350 for s in specs)
    assert {s.lo_shift_kms for s in specs if s.object == "SGRA-150"} == {-150.0}
    multi = plan_swas(days=3, seed=2, start_day=100, segments_per_day=20)
    assert len(multi) == 60 and len({(s.day, s.segment) for s in multi}) == 60
    for day in (100, 101, 102):
        segs = [s for s in multi if s.day == day]
        ends = [s.start_s + 2 * s.n_scans for s in segs]
        assert all(e < 86400 for e in ends)
        assert all(b.start_s > a for a, b in zip(ends, segs[1:]))     # no overlap
    assert plan_swas(days=3, seed=2, start_day=100, segments_per_day=20) == multi


# ---------------------------------------------------------------- artefacts

def test_hysteresis_spikes_and_excursions(nod):
    hdul, truth = nod
    d = hdul["SCANS"].data
    st = np.char.strip(d["SCANTYPE"])
    (gap,) = truth["ground_gaps"]
    g = gap["first_scan_after"]
    aos = hdul["AOS550"].data.astype(float)
    zero = aos[st == "ZERO"].mean(axis=0)
    ok = clean_mask(hdul, truth, extra_after_gap=0)
    ref_idx = np.flatnonzero(ok & (st == "OFF") & (np.arange(len(st)) < g) & (np.arange(len(st)) > g - 60))
    ref = aos[ref_idx].mean(axis=0) - zero
    t_after = (d["TIME"] - gap["end_mjd"]) * 86400.0
    for i in range(g, g + 60):
        if st[i] in ("ON", "OFF") and ok[i]:
            excess = np.median((aos[i] - zero) / ref - 1)
            expect = gap["hysteresis_frac"] * np.exp(-t_after[i] / gap["tau_s"])
            assert excess == pytest.approx(expect, abs=0.1 * expect + 2e-3)
    assert np.median((aos[g + 60] - zero) / ref - 1) < 2e-3
    for scan, half, chan, amp in truth["spikes"]:
        row = hdul[f"AOS{half}"].data[scan].astype(float)
        nb = np.r_[row[chan - 3:chan], row[chan + 1:chan + 4]]
        assert row[chan] - np.median(nb) == pytest.approx(amp, abs=0.05 * amp + 80)
    x = (np.arange(725) - 362) / 362
    for ex in [e for e in truth["baseline_excursions"] if not 0 <= e["scan"] - g < 60]:  # skip hysteresis
        i = ex["scan"]
        j = next(k for k in (i + 1, i - 1, i + 2, i - 2) if st[k] == st[i] and ok[k])   # a clean neighbour
        y = (aos[i] - aos[j]) / (aos[j] - zero) * truth["tsys_k"]["550"]
        shape = np.polynomial.legendre.Legendre.basis(ex["order"])(x)[40:685]
        fit = y[40:685] @ shape / (shape @ shape)
        sigma = np.sqrt(2) * truth["tsys_k"]["550"] / np.sqrt(NB * 2.0) / np.sqrt(shape @ shape)
        assert fit == pytest.approx(ex["amp_k"]["550"], abs=5 * sigma + 0.1)


@pytest.mark.parametrize("mode", ["CHOP", "CHOP_NOD"])
def test_chop_standing_wave(mode):
    spec = make_spec(3, 4, "G34.3+0.15/A", mode, 400, start_s=4000.0, n_spikes=0, n_excursions=0)
    hdul, truth = simulate_segment(spec, seed=21)
    d = hdul["SCANS"].data
    ok = clean_mask(hdul, truth)
    rip = truth["chop_ripple"]["490"]
    st = np.char.strip(d["SCANTYPE"])
    aos = hdul["AOS490"].data.astype(float)
    zero = aos[st == "ZERO"].mean(axis=0)
    n = len(st)
    # pair within one chop cycle: nod A = ON then OFF at +throw, nod B = OFF at -throw then ON
    pairs = {+1: [], -1: []}
    for i in np.flatnonzero((st == "ON") & ok):
        if i + 1 < n and st[i + 1] == "OFF" and ok[i + 1] and d["DLAM"][i + 1] > 0:
            pairs[+1].append((i, i + 1))
        elif i > 0 and st[i - 1] == "OFF" and ok[i - 1] and d["DLAM"][i - 1] < 0:
            pairs[-1].append((i, i - 1))
    if mode == "CHOP":
        assert not pairs[-1]
    else:
        k = min(len(pairs[1]), len(pairs[-1]))
        assert k > 50
        pairs = {+1: pairs[1][:k], -1: pairs[-1][:k]}
    on = np.array([p[0] for v in pairs.values() for p in v])
    off = np.array([p[1] for v in pairs.values() for p in v])
    sp = (aos[on] - aos[off]) / (aos[off] - zero) * truth["tsys_k"]["490"]
    y = sp - (line_model_scans(hdul, truth, "490", on) - line_model_scans(hdul, truth, "490", off))
    disp = truth["dispersion"]["490"]
    xx = np.arange(725) - 362
    f_if = (disp["F0_hz"] + disp["dF0_dTAOS_hz_per_c"] * (d["TAOS"].mean() - disp["taos_ref_c"])
            + disp["D1_hz"] * xx + disp["D2_hz"] * xx**2)
    basis = np.stack([np.sin(2 * np.pi * f_if / rip["period_hz"] + rip["phase_rad"]),
                      np.cos(2 * np.pi * f_if / rip["period_hz"] + rip["phase_rad"]), np.ones(725)], axis=1)
    sl = slice(30, 695)

    def fit(rows):
        coef, *_ = np.linalg.lstsq(basis[sl], y[rows][:, sl].mean(axis=0), rcond=None)
        err = y[rows][:, sl].std(axis=0).mean() / np.sqrt(len(rows)) * np.sqrt(2 / (sl.stop - sl.start))
        return coef, err

    n_a = len(pairs[+1])
    coef, err = fit(np.arange(len(on)))
    expect = rip["amp_k"] if mode == "CHOP" else 0.0      # chop_nod: cancels in the averaged pairs
    assert coef[0] == pytest.approx(expect, abs=5 * err + 0.01)
    assert abs(coef[1]) < 5 * err + 0.01
    if mode == "CHOP_NOD":                                  # but each nod alone carries it, with opposite signs
        ca, ea = fit(np.arange(n_a))
        cb, eb = fit(np.arange(n_a, len(on)))
        assert ca[0] == pytest.approx(rip["amp_k"], abs=5 * ea + 0.01)
        assert cb[0] == pytest.approx(-rip["amp_k"], abs=5 * eb + 0.01)


def test_map_grid_and_special_mode(small_set):
    out, summary = small_set
    doc = json.loads(Path(summary["truth"]).read_text())
    seg = next(s for s in doc["segments"] if s["mode"] == "MAP")
    with fits.open(out / seg["file"]) as h:
        d = h["SCANS"].data
        st = np.char.strip(d["SCANTYPE"])
        on = (st == "ON") & ((d["QUALITY"] & 4) == 0)
        grid = np.array(seg["map_grid_arcmin"])
        pos = np.stack([d["DLAM"][on], d["DBET"][on]], axis=1)
        dist = np.min(np.hypot(*(pos[:, None, :] - grid[None, :, :]).transpose(2, 0, 1)), axis=1)
        assert dist.max() < 0.15                                   # arcmin: on the grid (jitter 0.02')
        assert len({tuple(np.round(p / 3.2)) for p in pos}) >= 5   # several positions
        assert (st == "OFF").sum() < (st == "ON").sum()            # ONs share fewer OFFs
        dec0 = h[0].header["DEC"]
        assert np.allclose(d["DEC"] - dec0, d["DBET"] / 60.0, atol=1e-6)
        ra_off = (d["RA"] - h[0].header["RA"] + 180) % 360 - 180
        assert np.allclose(ra_off * np.cos(np.radians(dec0)), d["DLAM"] / 60.0, atol=1e-6)
    assert fits.getheader(summary["files"][4])["OBSMODE"] == "PLANCAL"
