"""MIPS SED-mode simulator (ICD §3): files, sequence, forward model against an independent
evaluation of the ICD formula, truth spectrum, S/N of the default AOR, switches, determinism."""
import json
import re
import subprocess
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from scipy.stats import norm

from conftest import require_tool
from reduce.simulate import mips, mips_sed
from reduce.simulate.mips_detector import nonlin_apply, ols_weights

SEED = 4
SPEC = mips_sed.SedSpec(aorkey=40000123, object="SED TEST", ra=150.0, dec=-20.0, start_mjd=53600.3,
                        n_cycles=3, pa_slit=200.0)
SMALL = mips_sed.SedSpec(aorkey=40000777, object="SMALL", ra=10.0, dec=5.0, start_mjd=53700.0,
                         n_cycles=1, exptime=3.0)
FWHM_LSF = 3.4
OMEGA = 19.96 * 9.98 / 206264.806 ** 2
RAW_KEYS = {"TELESCOP": str, "INSTRUME": str, "CHNLNUM": int, "AORKEY": int, "EXPID": int, "DCENUM": int,
            "DCEID": int, "AOT_TYPE": str, "OBJECT": str, "PROGID": int, "EXPTIME": float, "SAMPTIME": float,
            "NREADS": int, "MJD_OBS": float, "SCLK_OBS": float, "RA_RQST": float, "DEC_RQST": float,
            "RA_REF": float, "DEC_REF": float, "PA_REF": float, "CALVERS": str, "STIMFLSH": int,
            "CHOPPOS": str, "CHOPTHRW": float, "PA_SLIT": float}


def _simulate(out, spec=SPEC, seed=SEED, **kw):
    res = mips.simulate_mips(out, specs=[], sed_specs=[spec], seed=seed, **kw)
    return {"out": Path(out), "res": res, "truth": json.loads(Path(res["truth"]).read_text()),
            "npz": dict(np.load(Path(out) / "mips_truth.npz"))}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("sed"))


def _arr(s, e, name):
    return s["npz"][f"{e['npz']['key']}_{name}"][e["npz"]["index"]]


def _cal(s, key):
    return fits.getdata(s["out"] / "cal" / mips_sed.SED_FILES[key])


# ------------------------------------------------------------------ independent model pieces

def _convolved(f, lam, fwhm=FWHM_LSF):
    """Direct numerical LSF convolution on a fine grid (trapezoid over +-8 sigma)."""
    s = fwhm / 2.3548200450309493
    t = np.linspace(-8 * s, 8 * s, 4001)
    g = np.exp(-0.5 * (t / s) ** 2) / (s * np.sqrt(2 * np.pi))
    return np.array([np.trapezoid(f(lm - t) * g, t) for lm in np.atleast_1d(lam)])


def _F_L(spec, lam):
    lines = sum(p * np.exp(-0.5 * ((lam - l0) / (FWHM_LSF / 2.3548200450309493)) ** 2) for _, l0, p in spec.lines)
    return _convolved(lambda v: spec.continuum_jy * (v / 70.0) ** spec.alpha, lam) + lines


def _B_L(spec, lam):
    return _convolved(lambda v: spec.background_70 * (v / 70.0) ** 1.5, lam)


def _sig(lam):
    return 18.0 * lam / 71.0 / 2.3548200450309493


def _T(lam, w):
    return norm.cdf(9.98, loc=w, scale=_sig(lam)) - norm.cdf(-9.98, loc=w, scale=_sig(lam))


def _G(x, ucol, lam):
    return (norm.cdf((x + 0.5) * 9.98, loc=ucol * 9.98, scale=_sig(lam))
            - norm.cdf((x - 0.5) * 9.98, loc=ucol * 9.98, scale=_sig(lam)))


def _icd_rate(s, spec, e, y, x, tilt=0.02):
    """ICD §3 rate (DN/s) of pixel (y, x), evaluated from the files and the DCE's truth entry."""
    fc = fits.getdata(s["out"] / "cal" / mips_sed.SED_FILES["CAL"], "FLUXCONV")[y]
    illum, dark = _cal(s, "ILLUM")[y, x], _cal(s, "DARK")[y, x]
    stim = fits.getdata(s["out"] / "cal" / mips_sed.SED_FILES["CAL"], "STIMAMP")[y, x]
    lam = 53.65 + 1.7 * y + tilt * (x - 7.0)
    on = e["choppos"] == "ON"

    def order(lm):
        b = _B_L(spec, lm)[0] * (1 + spec.off_delta * (not on))
        if on:
            b += _F_L(spec, lm)[0] * _T(lm, e["source_w"]) * _G(x, e["source_column"], lm) / (OMEGA * 1e6)
        return b

    sky = order(lam) + (0.3 * order(lam / 2) if y >= 27 else 0.0)
    return e["resp"] * (sky / fc * illum + e["stim"] * stim) + dark


# ------------------------------------------------------------------ files

def test_raw_files_follow_icd(sim):
    files = sim["res"]["files"]
    assert len(files) == 5 * 3
    for f in files:
        m = re.fullmatch(r"SPITZER_M2_(\d+)_(\d{4})_(\d{4})_raw\.fits", Path(f).name)
        assert m, f
        with fits.open(f) as hd:
            assert len(hd) == 1 and [(h.verify_checksum(), h.verify_datasum()) for h in hd] == [(1, 1)]
            h, d = hd[0].header, hd[0].data
            for k, t in RAW_KEYS.items():
                assert isinstance(h[k], t), (f, k)
            assert (h["AORKEY"], h["EXPID"], h["DCENUM"]) == tuple(map(int, m.groups()))
            assert (h["TELESCOP"], h["INSTRUME"], h["CHNLNUM"], h["AOT_TYPE"]) == ("Spitzer", "MIPS", 2, "MipsSed")
            assert d.dtype == np.dtype(">i2") and d.shape == (80, 32, 32) and h["NREADS"] == 80
            assert h["EXPTIME"] == pytest.approx(80 * 0.131072) and h["SAMPTIME"] == 0.131072
            assert h["CHOPPOS"] in ("ON", "OFF") and h["CHOPTHRW"] == 60.0 and h["PA_SLIT"] == 200.0
            assert h["PA_REF"] == 110.0 and h["OBJECT"] == "SED TEST" and h["CALVERS"] == "sim-1"
    assert len({fits.getheader(f)["DCEID"] for f in files}) == len(files)


def test_cal_files_follow_icd(sim):
    cal = sim["res"]["sed_cal"]
    assert sorted(cal) == sorted(mips_sed.SED_FILES.values()) and len(sim["res"]["cal"]) == 17
    for key, name in mips_sed.SED_FILES.items():
        with fits.open(cal[name]) as hd:
            assert [(h.verify_checksum(), h.verify_datasum()) for h in hd] == [(1, 1)] * len(hd)
            h = hd[0].header
            assert (h["TELESCOP"], h["INSTRUME"], h["CHNLNUM"], h["REFTYPE"], h["CALVERS"]) == (
                "Spitzer", "MIPS", 2, key, "sim-1")
            d = hd[0].data
            if key in ("DARK", "ILLUM"):
                assert d.dtype == np.dtype(">f4") and d.shape == (32, 32) and len(hd) == 1
            if key == "DARK":
                assert h["BUNIT"] == "DN/s" and 4 < np.median(d) < 6
            if key == "NONLIN":
                assert d.dtype == np.dtype(">f4") and d.shape == (3, 32, 32) and np.all(d[0] == 1)
            if key == "PMASK":
                assert d.dtype == np.dtype(">i2") and d.shape == (32, 32) and np.all((d >= 0) & (d < 32))
            if key == "CAL":
                assert (h["GAIN"], h["RDNOISE"], h["SATLEVEL"]) == (7.1, 15.0, 32767.0) and "FLUXCONV" not in h
                fc, st = hd["FLUXCONV"].data, hd["STIMAMP"].data
                assert fc.dtype == np.dtype(">f4") and fc.shape == (32,) and np.all(np.diff(fc) > 0)
                assert (fc[0], fc[-1]) == pytest.approx((0.6, 1.2))
                assert st.dtype == np.dtype(">f4") and st.shape == (32, 32) and 2800 < np.median(st) < 3200
            if key == "WAVE":
                assert d is None
                assert {k: h[k] for k in ("WAVE0", "DISP", "TILT", "CENTCOL", "PXSCALE", "SLITW")} == {
                    "WAVE0": 53.65, "DISP": 1.7, "TILT": 0.02, "CENTCOL": 7.0, "PXSCALE": 9.98, "SLITW": 19.96}
                t = hd["APCORR"].data
                assert [c.name for c in hd["APCORR"].columns] == ["ROW", "WAVE", "APCORR"]
                assert t["ROW"].dtype == np.dtype(">i2") and t["APCORR"].dtype == np.dtype(">f4")
                assert list(t["ROW"]) == list(range(27))
                np.testing.assert_allclose(t["WAVE"], 53.65 + 1.7 * np.arange(27), rtol=1e-6)
                lam = 53.65 + 1.7 * np.arange(27)
                want = 1 / (_T(lam, 0.0) * sum(_G(x, 7.0, lam) for x in range(5, 10)))
                np.testing.assert_allclose(t["APCORR"], want, rtol=1e-6)
                assert np.all(t["APCORR"] > 1) and np.all(np.diff(t["APCORR"]) > 0)  # more light lost to the red
    illum, pm = _cal(sim, "ILLUM"), _cal(sim, "PMASK")
    window = np.zeros((32, 32), bool)
    window[:27, :16] = True
    assert illum[window & (illum > 0)].mean() == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(pm & 16 > 0, ~window)
    assert np.array_equal(illum <= 0, pm & 1 > 0) and np.all(pm[pm & 1 > 0] & 8)
    assert 0.03 < np.std(illum[window & (pm == 0)]) < 0.12  # 5 % pixel response plus the smooth shape


def test_fitsverify_clean(sim):
    tool = require_tool("fitsverify")
    paths = list(sim["res"]["sed_cal"].values()) + sim["res"]["files"][:2]
    out = subprocess.run([tool] + paths, capture_output=True, text=True).stdout
    found = re.findall(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", out)
    assert len(found) == len(paths) and all(f == ("0", "0") for f in found), out[-3000:]


# ------------------------------------------------------------------ sequence and pointing

def test_sequence_dithers_and_chop(sim):
    dces = sim["truth"]["dces"]
    assert [(e["expid"], e["dcenum"]) for e in dces] == [(k, j) for k in range(3) for j in range(5)]
    assert [e["choppos"] for e in dces] == ["ON", "ON", "OFF", "ON", "OFF"] * 3
    assert [e["stim"] for e in dces] == [True, False, False, False, False] * 3
    assert [fits.getheader(sim["out"] / e["file"])["STIMFLSH"] for e in dces] == [1, 0, 0, 0, 0] * 3
    assert [e["dither"] for e in dces] == [0] * 5 + [1] * 5 + [-1] * 5
    assert all(e["mode"] == "sed" and e["chnl"] == 2 for e in dces)
    assert np.all(np.diff([e["mjd"] for e in dces]) * 86400 == pytest.approx(10 * 1.048576 + 1.0))
    src = SkyCoord(SPEC.ra * u.deg, SPEC.dec * u.deg)
    for e in dces:
        h = fits.getheader(sim["out"] / e["file"])
        rqst = SkyCoord(h["RA_RQST"] * u.deg, h["DEC_RQST"] * u.deg)
        on = SkyCoord(dces[e["index"] - 1]["ra_rqst"] * u.deg, dces[e["index"] - 1]["dec_rqst"] * u.deg)
        if e["choppos"] == "OFF":  # CHOPTHRW across the slit from the preceding ON
            assert rqst.separation(on).arcsec == pytest.approx(60.0, abs=1e-3)
            assert on.position_angle(rqst).deg == pytest.approx((200.0 + 90.0) % 360, abs=1e-3)
        else:  # slit centre moved -d*PXSCALE along the slit
            d = e["dither"]
            assert rqst.separation(src).arcsec == pytest.approx(abs(d) * 9.98, abs=1e-3)
            if d:
                assert src.position_angle(rqst).deg == pytest.approx((200.0 + (180 if d > 0 else 0)) % 360, abs=1e-3)
            # truth source position from the true slit centre, independently
            true = SkyCoord(e["ra"] * u.deg, e["dec"] * u.deg)
            sep, pa = true.separation(src).arcsec, true.position_angle(src).rad - np.radians(200.0)
            assert e["source_column"] == pytest.approx(7.0 + sep * np.cos(pa) / 9.98, abs=1e-5)
            assert e["source_w"] == pytest.approx(sep * np.sin(pa), abs=1e-4)
            assert abs(e["source_column"] - 7.0 - d) < 0.15 and abs(e["source_w"]) < 1.5
        # RA_REF/DEC_REF = true slit centre + the 70 um pointing error (sigma 1.7" radial)
        assert SkyCoord(h["RA_REF"] * u.deg, h["DEC_REF"] * u.deg).separation(
            SkyCoord(e["ra"] * u.deg, e["dec"] * u.deg)).arcsec < 6.0
        assert (h["RA_REF"], h["DEC_REF"]) == (e["ra_ref"], e["dec_ref"])


def test_switches_no_off_no_stim(tmp_path):
    import dataclasses
    s = _simulate(tmp_path / "a", spec=dataclasses.replace(SMALL, n_cycles=2, with_off=False))
    assert [(e["expid"], e["dcenum"], e["choppos"]) for e in s["truth"]["dces"]] == [
        (0, 0, "ON"), (0, 1, "ON"), (0, 3, "ON"), (1, 0, "ON"), (1, 1, "ON"), (1, 3, "ON")]
    assert {fits.getheader(f)["CHOPPOS"] for f in s["res"]["files"]} == {"ON"}
    s = _simulate(tmp_path / "b", spec=dataclasses.replace(SMALL, with_stim=False))
    assert len(s["res"]["files"]) == 5
    assert [fits.getheader(f)["STIMFLSH"] for f in s["res"]["files"]] == [0] * 5
    e = s["truth"]["dces"][0]
    assert not e["stim"] and np.max(_arr(s, e, "rate")) < 2000  # no 3000 DN/s stim signal


def test_saturate_on(tmp_path):
    import dataclasses
    s = _simulate(tmp_path, spec=dataclasses.replace(SMALL, saturate_on=True))
    illum = _cal(s, "ILLUM")
    for e in s["truth"]["dces"]:
        reads = fits.getdata(s["out"] / e["file"])
        sat = _arr(s, e, "sat")
        if e["choppos"] == "ON":  # stim DCE included: every illuminated pixel clips at read 1
            assert np.all(sat[illum > 0] == 1) and np.all(reads[1:, illum > 0] == 32767)
            assert e["n_sat"] == int(np.sum(illum > 0))
        else:
            assert e["n_sat"] == 0 and np.all(sat == reads.shape[0])


def test_aorkeys_unique_and_plan():
    specs = mips_sed.plan_sed(3, seed=1)
    assert len(specs) == 3 and all(40_000_000 <= s.aorkey < 40_003_000 for s in specs)
    assert {s.aorkey for s in specs}.isdisjoint({s.aorkey for s in mips.plan_mips(aors=50, seed=1)})
    assert specs == mips_sed.plan_sed(3, seed=1) and specs != mips_sed.plan_sed(3, seed=2)
    bad = mips_sed.SedSpec(aorkey=20000009, object="X", ra=1.0, dec=1.0, start_mjd=53700.0)
    with pytest.raises(ValueError, match="AORKEYs must be unique"):
        mips.simulate_mips("/nonexistent/never", specs=[mips.AorSpec(
            aorkey=20000009, aot_type="MipsPhot", object="T", ra=10.0, dec=5.0, start_mjd=53700.0, n_dce=3)],
            sed_specs=[bad])


def test_cli_sed_aors_option():
    from reduce.cli import build_parser
    assert build_parser().parse_args(["simulate", "mips", "out"]).sed_aors == 1
    assert build_parser().parse_args(["simulate", "mips", "out", "--sed-aors", "3"]).sed_aors == 3


# ------------------------------------------------------------------ forward model and truth

@pytest.mark.parametrize("index", [0, 1, 2, 6, 13])  # stim ON, ON, OFF, ON dither +1, ON dither -1
def test_noise_free_rate_is_the_icd_formula(sim, index):
    e = sim["truth"]["dces"][index]
    rate = _arr(sim, e, "rate")
    col = int(round(e["source_column"]))
    for y, x in [(0, col), (4, col - 1), (13, col), (20, col + 2), (26, 0), (27, col), (31, col + 1), (10, 20)]:
        assert rate[y, x] == pytest.approx(_icd_rate(sim, SPEC, e, y, x), rel=2e-5), (y, x)


def test_second_order_rows_see_half_wavelength_light(sim):
    """Rows 27..31 hold 0.3 x the lam/2 light on top of first order: compare with a row-26 copy."""
    e = sim["truth"]["dces"][1]
    flux = _arr(sim, e, "flux")
    lam = 53.65 + 1.7 * 29 + 0.02 * (np.arange(32) - 7)
    first = _B_L(SPEC, lam[:1])[0]
    assert flux[29, 0] == pytest.approx(first + 0.3 * _B_L(SPEC, lam[:1] / 2)[0], rel=2e-5)


def test_ramps_follow_truth_rate(sim):
    """Linearised reads of clean pixels fit the truth rate (OLS pulls of unit width)."""
    gain, rdn = 7.1, 15.0
    pm, nl = _cal(sim, "PMASK"), _cal(sim, "NONLIN").astype(float)
    pulls = []
    for e in sim["truth"]["dces"]:
        reads = fits.getdata(sim["out"] / e["file"]).astype(float)
        n = reads.shape[0]
        lin = nonlin_apply(reads - reads[0], nl)
        t = np.arange(n) * 0.131072
        slope = np.polyfit(t, lin.reshape(n, -1), 1)[0].reshape(32, 32)
        rate = _arr(sim, e, "rate")
        w = ols_weights(n) / t[1]
        tail = np.cumsum(w[::-1])[::-1][1:]
        sig = np.sqrt((rdn ** 2 + 1 / 12) * np.sum(w ** 2) + rate * t[1] / gain * np.sum(tail ** 2))
        ok = pm == 0  # the calibrated window (columns 16..31 have 4x the read noise)
        for h in e["crs"]:
            ok[h["y"], h["x"]] = False
        pulls.append(((slope - rate) / sig)[ok])
    p = np.concatenate(pulls)
    assert p.size > 5000 and abs(p.mean()) < 0.05 and 0.9 < p.std() < 1.1, (p.size, p.mean(), p.std())


def test_truth_spectrum_is_lsf_convolved_model(sim):
    t = sim["truth"]["sed"][str(SPEC.aorkey)]
    lam = 53.65 + 1.7 * np.arange(27)
    assert t["rows"] == list(range(27)) and np.allclose(t["wavelength"], lam, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t["flux_density_jy"], _F_L(SPEC, lam), rtol=1e-6)
    np.testing.assert_allclose(t["background_mjysr"], _B_L(SPEC, lam), rtol=1e-6)
    assert (t["wave0"], t["disp"], t["tilt"], t["centcol"], t["pxscale"], t["slitw"]) == (
        53.65, 1.7, 0.02, 7.0, 9.98, 19.96)
    assert t["off_delta"] == 0.01 and t["lines"][2] == ["[O III]", 88.36, 2.5]
    assert t["spec"]["aorkey"] == SPEC.aorkey and t["spec"]["n_cycles"] == 3
    # the convolution matters for a curved continuum: B_L differs from B by ~sigma^2 B''/2
    steep = mips_sed.SedSpec(aorkey=1, object="s", ra=0, dec=0, start_mjd=0, alpha=-4.0, lines=())
    raw = 3.0 * (lam / 70.0) ** -4.0
    conv = mips_sed.source_spectrum(steep, lam)
    np.testing.assert_allclose(conv, _F_L(steep, lam), rtol=1e-6)
    assert np.all(conv / raw - 1 > 1e-3)


def test_tilt_reaches_wave_file_and_model(tmp_path):
    s = _simulate(tmp_path, spec=SMALL, sed_tilt=0.2)
    assert fits.getheader(s["res"]["sed_cal"]["mips70sed_wave.fits"])["TILT"] == 0.2
    assert s["truth"]["sed"][str(SMALL.aorkey)]["tilt"] == 0.2
    for e in (s["truth"]["dces"][1], s["truth"]["dces"][2]):
        rate = _arr(s, e, "rate")
        for y, x in [(17, 0), (20, 7), (20, 15), (29, 3)]:
            assert rate[y, x] == pytest.approx(_icd_rate(s, SMALL, e, y, x, tilt=0.2), rel=2e-5)
    cal = mips_sed.make_sed_calibration(seed=0, tilt=-0.05)
    assert cal["tilt"] == -0.05


def test_default_aor_reaches_sn_20_per_row():
    """Noise-free ON - OFF signal in a 5-column aperture over the default AOR (6 cycles x 2 ON-OFF
    pairs, 10 s DCEs) against the per-pixel OLS slope noise (read noise 15 DN + Poisson)."""
    spec = mips_sed.SedSpec(aorkey=1, object="d", ra=0.0, dec=0.0, start_mjd=53500.0)
    cal = mips_sed.make_sed_calibration(seed=0)
    n, dt = 80, 0.131072
    w = ols_weights(n) / dt
    tail = np.cumsum(w[::-1])[::-1][1:]

    def var(rate):
        return (15.0 ** 2 + 1 / 12) * np.sum(w ** 2) + rate * dt / 7.1 * np.sum(tail ** 2)

    on = mips_sed.sky_brightness(spec, cal, choppos="ON", source_column=7.0, source_w=0.0)
    off = mips_sed.sky_brightness(spec, cal, choppos="OFF", source_column=7.0, source_w=0.0)
    r_on = on / cal["fluxconv"][:, None] * cal["illum"] + cal["dark"]
    r_off = off / cal["fluxconv"][:, None] * cal["illum"] + cal["dark"]
    ap = slice(5, 10)
    signal = (r_on - r_off)[:27, ap].sum(axis=1)
    noise = np.sqrt((var(r_on) + var(r_off))[:27, ap].sum(axis=1) / (2 * spec.n_cycles))
    sn = signal / noise
    assert sn.min() > 20, sn.round(1)
    # the ICD extraction of the noise-free ON - OFF brightness gives F_L back (up to delta*B)
    lam = 53.65 + 1.7 * np.arange(27)
    bcd = (on - off)[:27, ap].sum(axis=1)
    np.testing.assert_allclose(bcd * cal["apcorr"] * OMEGA * 1e6, mips_sed.source_spectrum(spec, lam), rtol=0.01)


# ------------------------------------------------------------------ reproducibility

def _tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def test_deterministic_in_seed(tmp_path):
    _simulate(tmp_path / "a", spec=SMALL, seed=5)
    _simulate(tmp_path / "b", spec=SMALL, seed=5)
    _simulate(tmp_path / "c", spec=SMALL, seed=6)
    ta, tb, tc = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert ta == tb and ta.keys() == tc.keys() and len(ta) == 17 + 6 + 5 + 2
    name = "SPITZER_M2_40000777_0000_0001_raw.fits"
    assert ta[name] != tc[name] and ta["cal/mips70sed_illum.fits"] != tc["cal/mips70sed_illum.fits"]


def test_simulate_sed_dce_reproduces_a_written_file(sim):
    hdul, tr = mips_sed.simulate_sed_dce(SPEC, 7, cal=sim["out"] / "cal", seed=SEED)
    with fits.open(sim["out"] / tr["file"]) as hd:
        assert np.array_equal(hd[0].data, hdul[0].data)
        written = hd[0].header.copy()
        del written["CHECKSUM"], written["DATASUM"]
        assert written == hdul[0].header
    e = sim["truth"]["dces"][7]
    assert np.array_equal(tr["arrays"]["rate"], _arr(sim, e, "rate")) and tr["crs"] == e["crs"]


def test_parallel_equals_serial_with_sed(tmp_path):
    distributed = pytest.importorskip("distributed")
    phot = mips.AorSpec(aorkey=20000009, aot_type="MipsPhot", object="T", ra=10.0, dec=5.0,
                        start_mjd=53700.0, n_dce=3, arrays=(2,))
    mips.simulate_mips(tmp_path / "serial", specs=[phot], sed_specs=[SMALL], seed=5)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        mips.simulate_mips(tmp_path / "par", specs=[phot], sed_specs=[SMALL], seed=5, client=client)
    assert _tree(tmp_path / "serial") == _tree(tmp_path / "par")
