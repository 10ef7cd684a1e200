"""Issue 10 part 4: the real Spitzer IRAC HD 209458 staring series (501 subarray cubes of 64
planes, channel 1) read into a (time, y, x) store and studied: centroids, aperture flux, the
first-frame effect, the pointing drift and oscillation, the intrapixel correlation and the
light-curve scatter against photon noise.  Synthetic cubes with a known star check the
photometry exactly; the real series must show what the Spitzer literature knows is there."""
import shutil

import dask
import numpy as np
import pytest
from astropy.io import fits
from scipy.special import ndtr

from reduce.errors import BadInputError
from reduce.stability import irac
from reduce.stability.kernels import photometry as P
from reduce.stability.kernels import timeseries as T

SERIES = "spitzer/irac-hd209458"
E_PER_UNIT = 3.7 * 0.08 / 0.1253          # GAIN * EXPTIME / FLUXCONV of the real headers


# ------------------------------------------------------------------------------ synthetic
def gaussian_star(x0, y0, total, sigma, shape=(32, 32)):
    """A pixel-integrated circular Gaussian of ``total`` (image units x pixel) at (x0, y0)."""
    iy, ix = np.arange(shape[0]), np.arange(shape[1])
    gx = ndtr((ix + 0.5 - x0) / sigma) - ndtr((ix - 0.5 - x0) / sigma)
    gy = ndtr((iy + 0.5 - y0) / sigma) - ndtr((iy - 0.5 - y0) / sigma)
    return total * gy[:, None] * gx[None, :]


def write_cube(path, data, *, expid, mjd, instrume="IRAC", framtime=0.1, framedly=2.0):
    h = fits.Header()
    h.update(INSTRUME=instrume, CHNLNUM=1, AORKEY=1234, EXPID=expid, DCENUM=0, MJD_OBS=mjd,
             BMJD_OBS=mjd + 0.00126, FRAMTIME=framtime, EXPTIME=0.08, FRAMEDLY=framedly, GAIN=3.7,
             FLUXCONV=0.1253, RONOISE=16.9, BUNIT="MJy/sr", OBJECT="fake star")
    fits.PrimaryHDU(np.asarray(data, np.float32), h).writeto(path)


def synthetic_series(folder, rng, *, ncubes=3, total=20000.0, sky=5.0, poisson=False, noise=0.3):
    """Cubes of a star moving on a known path; returns the truth (x, y) per frame."""
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for c in range(ncubes):
        k = np.arange(64) + 64 * c
        x = 14.6 + 0.8 * k / (64 * ncubes) + 0.03 * np.sin(k / 7.0)
        y = 15.3 - 0.6 * k / (64 * ncubes)
        cube = np.array([gaussian_star(a, b, total, 0.62) for a, b in zip(x, y)]) + sky
        if poisson:
            cube = rng.poisson(cube * E_PER_UNIT) / E_PER_UNIT
        cube = cube + rng.normal(0, noise, cube.shape)
        mjd = 55573.25 + c * (6.4 + 2.0) / 86400
        write_cube(folder / f"SPITZER_I1_1234_{c:04d}_0000_1_bcd.fits", cube, expid=c, mjd=mjd)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def test_known_star_recovered_exactly(tmp_path):
    """A Gaussian star at known sub-pixel positions, nearly noise-free: every frame's centroid
    within 0.01 pixel, its aperture flux (3 pixel radius holds all of a sigma = 0.62 px star)
    within 0.5 %; read through the BCD reader and the lazy per-cube photometry."""
    x, y = synthetic_series(tmp_path / "bcd", np.random.default_rng(1))
    ds, problems = irac.open_bcds(tmp_path / "bcd")
    assert problems == []
    phot = irac.frame_photometry(ds).compute()
    assert np.all(phot.fit_ok.values == 1)
    assert np.max(np.abs(phot.x.values - x)) < 0.01
    assert np.max(np.abs(phot.y.values - y)) < 0.01
    assert np.max(np.abs(phot.flux.values / 20000.0 - 1)) < 0.005
    assert np.allclose(phot.sky.values, 5.0, atol=0.05)


def test_photon_noise_model_matches_poisson_scatter(tmp_path):
    """Poisson electrons (GAIN * EXPTIME / FLUXCONV per MJy/sr) plus read noise: the flux
    errors predict the measured frame-to-frame scatter (within 15 %), the centroid errors the
    centroid scatter (pull rms 0.75..1.35), and the star's shot noise is 1/sqrt(electrons)."""
    x, y = synthetic_series(tmp_path / "bcd", np.random.default_rng(2), ncubes=4, poisson=True, noise=3.0)
    ds, _ = irac.open_bcds(tmp_path / "bcd")
    phot = irac.frame_photometry(ds).compute()
    rel = phot.flux.values / 20000.0
    assert abs(rel.mean() - 1) < 0.002
    assert np.std(rel) / np.median(phot.flux_err.values / 20000.0) == pytest.approx(1, abs=0.15)
    for axis, truth in (("x", x), ("y", y)):
        pull = (phot[axis].values - truth) / phot[f"{axis}_err"].values
        assert 0.75 < np.std(pull) < 1.35, axis
    star, total = P.photon_noise(20000.0, E_PER_UNIT, area=28.3, sky_sigma=3.0)
    assert star == pytest.approx(np.sqrt(20000.0 / E_PER_UNIT))
    assert total > star
    assert P.electrons_per_unit(3.7, 0.1253, 0.08) == pytest.approx(2.3623, rel=1e-4)


def test_timeseries_kernels_recover_injected_signals():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 70, 500)                         # minutes
    y = 0.002 * t + 0.03 * np.sin(2 * np.pi * t / 38.0 + 1.0) + rng.normal(0, 0.01, t.size)
    pg = T.periodogram(t, y - np.polyval(np.polyfit(t, y, 2), t), min_period=5, max_period=70)
    assert pg["fap"] < 1e-6 and 30 < pg["period"] < 48
    fit = T.drift_and_oscillation(t, y, period0=pg["period"], degree=1)
    assert abs(fit["period"] - 38.0) < 3 * fit["period_err"] + 0.5
    assert abs(fit["amplitude"] - 0.03) < 3 * fit["amplitude_err"]
    assert abs(fit["drift"] - 0.002) < 3 * fit["drift_err"]
    noise = T.periodogram(t, rng.normal(0, 0.01, t.size), min_period=5, max_period=70)
    assert noise["fap"] > 0.01
    # intrapixel: flux = 1 + 0.2 dx + 0.05 dy + 0.3 dy^2 (fractional) + noise
    xs, ys = rng.normal(15, 0.05, 20000), rng.normal(15, 0.05, 20000)
    f = 1000 * (1 + 0.2 * (xs - 15) + 0.05 * (ys - 15) + 0.3 * (ys - 15) ** 2) * (1 + rng.normal(0, 0.002, xs.size))
    d = T.decorrelate(f, xs, ys)
    assert abs(d["dfdx"] - 0.02) < 3 * d["dfdx_err"] + 2e-4     # per 0.1 px
    assert abs(d["dfdy"] - 0.005) < 3 * d["dfdy_err"] + 2e-4
    assert np.std(d["corrected"] / np.median(d["corrected"])) < 0.0022
    q = rng.normal(0, 1, (300, 64))
    q[:, 0] += 0.5
    off = T.plane_offsets(q, reference=slice(1, None))
    assert off["significance"][0] > 5 and abs(off["offset"][0] - 0.5) < 4 * off["offset_err"][0]
    assert np.all(np.abs(off["significance"][1:]) < 5)


def _with_header(src, dst, **cards):
    with fits.open(src) as h:
        for k, v in cards.items():
            h[0].header[k] = v
        h.writeto(dst)


def test_bad_files_one_line_each_rest_goes_on(tmp_path, reference_dir):
    src = sorted((reference_dir / SERIES).glob("*_bcd.fits"))[:3]
    for p in src:
        shutil.copy(p, tmp_path / p.name)
    raw = src[0].read_bytes()
    bad = {"SPITZER_I1_41629440_0900_0000_1_bcd.fits": raw[:1000],                  # no header
           "SPITZER_I1_41629440_0901_0000_1_bcd.fits": raw[:200000]}                # no pixels
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    _with_header(src[1], tmp_path / "SPITZER_I1_41629440_0902_0000_1_bcd.fits", INSTRUME="MIPS")
    _with_header(src[1], tmp_path / "SPITZER_I1_41629440_0903_0000_1_bcd.fits", FRAMTIME="n/a")
    write_cube(tmp_path / "SPITZER_I1_41629440_0904_0000_1_bcd.fits", np.zeros((2, 32, 32)), expid=904,
               mjd=55573.26)
    store, problems = irac.ingest_irac(tmp_path, tmp_path / "s.zarr")
    names = [f"_{n:04d}_0000_1_bcd.fits" for n in range(900, 905)]
    assert len(problems) == 5, problems
    for name in names:
        assert sum(name in line for line in problems) == 1, (name, problems)
    assert all("\n" not in line for line in problems)
    assert any("INSTRUME" in line for line in problems) and any("FRAMTIME" in line for line in problems)
    ds = irac.open_irac(store)
    assert ds.sizes["dce"] == 3 and ds.sizes["time"] == 192
    assert list(ds.file.values) == [p.name for p in src]
    with pytest.raises(BadInputError, match="0900_0000_1_bcd.fits"):
        irac.read_cube_header(tmp_path / "SPITZER_I1_41629440_0900_0000_1_bcd.fits")


# ------------------------------------------------------------------------------ real series
@pytest.fixture(scope="module")
def store(reference_dir, tmp_path_factory):
    folder = reference_dir / SERIES
    if not folder.is_dir():
        pytest.skip(f"the IRAC HD 209458 series is not at {folder}")
    path, problems = irac.ingest_irac(folder, tmp_path_factory.mktemp("irac") / "irac.zarr")
    assert problems == []
    return path


@pytest.fixture(scope="module")
def result(store):
    with dask.config.set(scheduler="threads"):
        return irac.study(store)


def test_store_time_stamps_follow_the_headers(store, reference_dir):
    ds = irac.open_irac(store)
    assert dict(ds.sizes) == {"time": 501 * 64, "y": 32, "x": 32, "dce": 501}
    assert ds.flux.data.chunks[0] == (64,) * 501              # one chunk per cube
    mjd, plane, cube = (ds[k].values for k in ("mjd", "plane", "cube"))
    framtime, framedly, mjd_obs = (ds[k].values for k in ("framtime", "framedly", "mjd_obs"))
    assert np.all(np.diff(mjd) > 0)
    assert np.array_equal(plane, np.tile(np.arange(64), 501)) and np.array_equal(cube, np.repeat(np.arange(501), 64))
    step = np.diff(mjd.reshape(501, 64), axis=1) * 86400                   # within a cube: FRAMTIME
    assert np.allclose(step, framtime[:, None], atol=1e-4)
    assert np.allclose(mjd[::64], mjd_obs + 0.5 * framtime / 86400, rtol=0, atol=1e-9)
    # between cubes: the last plane ends, FRAMEDLY (next cube's header) passes, the next begins
    gap = (mjd[64::64] - mjd[63:-1:64]) * 86400 - framtime[1:]
    assert np.allclose(gap, framedly[1:], atol=0.02)
    assert np.all(ds.exptime.values < framtime)           # 0.08 s effective within 0.1 s frames
    h = fits.getheader(reference_dir / SERIES / "SPITZER_I1_41629440_0250_0000_1_bcd.fits")
    i = list(ds.file.values).index("SPITZER_I1_41629440_0250_0000_1_bcd.fits")
    assert ds.mjd.values[64 * i + 10] == pytest.approx(h["MJD_OBS"] + 10.5 * h["FRAMTIME"] / 86400, abs=1e-10)
    assert ds.bmjd.values[64 * i] == pytest.approx(h["BMJD_OBS"] + 0.5 * h["FRAMTIME"] / 86400, abs=1e-10)
    data = fits.getdata(reference_dir / SERIES / "SPITZER_I1_41629440_0250_0000_1_bcd.fits")
    assert np.array_equal(ds.flux[64 * i:64 * (i + 1)].values, data)


def test_centroids_inside_subarray_with_small_scatter(result):
    frames = result.tables["irac_frames"]
    assert frames["fit_ok"].all()
    assert frames["x"].between(0, 31).all() and frames["y"].between(0, 31).all()
    assert frames["x_err"].median() < 0.01 and frames["y_err"].median() < 0.01
    s = result.tables["irac_summary"].set_index("quantity")
    for axis in ("x", "y"):   # cube means about drift + oscillation: a few hundredths of a pixel
        assert 0.003 < s.loc[f"{axis}_scatter", "value"] < 0.08
        assert frames[axis].std() < 0.2


def test_first_frame_background_offset_significant(result):
    planes = result.tables["irac_planes"].set_index("plane")
    assert abs(planes.loc[0, "sky_significance"]) > 5
    assert abs(planes.loc[0, "sky_offset"]) > 5 * planes.loc[0, "sky_offset_err"]
    # planes deep in the cube follow their neighbours: plane 0 stands out against planes 30..50
    rest = planes.loc[30:50, "sky_offset"]
    assert abs(planes.loc[0, "sky_offset"] - rest.mean()) > 5 * rest.std()
    assert {"flux_offset", "flux_offset_err", "flux_significance"} <= set(planes.columns)


def test_pointing_oscillation_found_and_separated_from_drift(result):
    s = result.tables["irac_summary"].set_index("quantity")
    found = []
    for axis in ("x", "y"):
        fap, period = s.loc[f"{axis}_oscillation_fap", "value"], s.loc[f"{axis}_oscillation_period", "value"]
        amp, amp_err = s.loc[f"{axis}_oscillation_amplitude", ["value", "error"]]
        if fap < 0.01 and 20 < period < 90:
            found.append(axis)
            assert amp > 3 * amp_err and 0.003 < amp < 0.15
            assert np.isfinite(s.loc[f"{axis}_drift_rate", "error"])
    assert found, s.loc[[q for q in s.index if "oscillation" in q]]
    pg = result.tables["irac_periodogram"]
    assert pg["period_min"].between(4.99, 71).all()


def test_decorrelation_beats_raw_scatter_and_respects_photon_noise(result):
    s = result.tables["irac_summary"].set_index("quantity")
    raw, cor = s.loc["rms_raw", "value"], s.loc["rms_decorrelated", "value"]
    assert cor < 0.8 * raw
    assert cor > 0.95 * s.loc["photon_noise", "value"]          # nothing beats photon noise
    assert cor < 2 * s.loc["expected_noise", "value"]
    for axis in ("x", "y"):
        v, e = s.loc[f"dflux_per_0.1px_{axis}", ["value", "error"]]
        assert np.isfinite(v) and 0 < e < 0.01
    v, e = s.loc["dflux_per_0.1px_y", ["value", "error"]]
    assert abs(v) > 5 * e
    binned = result.tables["irac_binned_rms"]
    assert (binned["rms_decorrelated"] <= binned["rms_raw"] * 1.05).all()


def test_study_tables_series_and_plot(result, tmp_path):
    assert result.instrument == "irac" and result.problems == []
    t = result.tables
    assert len(t["irac_frames"]) == 501 * 64 and len(t["irac_cubes"]) == 501
    assert result.span[1] - result.span[0] == pytest.approx(70.0 / 1440, abs=2 / 1440)
    for s in result.series:
        assert len(s.time) == 501 and np.all(np.diff(s.time) > 0) and s.units
    pytest.importorskip("matplotlib")
    png = irac.plot_summary(result, tmp_path / "irac.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
