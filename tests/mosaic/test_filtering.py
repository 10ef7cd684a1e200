"""Filtered Ge products (issue 9 part 6): the time-median high-pass filter of the 70 / 160 um
BCDs (``_fbcd.fits``) and the mosaic made from them (``_fmaic`` / ``_fmunc`` / ``_fmcov``).

Kernel, on synthetic stacks (a scan: a point source crossing the pixels at 2.27 px per DCE, the
simulator's 70 um rate; slow drifts: a sinusoid, a step, a gradient growing in time; white
noise): drifts removed to within the noise, uncertainties as the noise, point-source flux kept,
no negative hole around a bright slow source, blocks equal to the whole. Pipeline, on a
simulated 70 um scan map (2 legs of 30 DCEs, per-leg offsets, clouds, gradient): one _fbcd per
usable DCE, fitsverify clean, the filtered mosaic's background ~0 while the unfiltered keeps the
sky level, the per-leg offsets gone from the filtered BCDs, fluxes of bright sources as in the
unfiltered mosaic, ``skyreduce mosaic`` on the BCD files gives the same filtered BCDs.
"""
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from reduce.mosaic.kernels.filtering import (compact_source_mask, filtered_uncertainty, highpass_time_median,
                                             median_box, running_median)

SIGMA = 0.1
N, NY, NX = 80, 12, 32


def _psf(x0, y0, fwhm=1.8):
    s = fwhm / 2.3548
    yy, xx = np.mgrid[0:NY, 0:NX]
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)


def _drift():
    t = np.arange(N)[:, None, None]
    x = np.linspace(0, 1, NX)[None, None, :]
    return 0.5 * np.sin(2 * np.pi * t / 200) + np.where(t >= 40, 0.3, 0.0) + 0.4 * x * (1 + t / 100)


def _filter(stack, mask=True, window=15):
    good = np.ones(stack.shape, bool)
    unc = np.full(stack.shape, SIGMA)
    m = np.stack([compact_source_mask(s, u, g) for s, u, g in zip(stack, unc, good)]) if mask else None
    return highpass_time_median(stack, good, window, source_mask=m)


def _scan(v, flux, seed=1):
    """(stack with source, the same without, source, source x per frame)."""
    rng = np.random.default_rng(seed)
    x0 = 8 + v * (np.arange(N) - 20)
    src = np.stack([flux * _psf(x, 5.3) for x in x0])
    noise = rng.normal(0, SIGMA, (N, NY, NX))
    return _drift() + src + noise, _drift() + noise, src, x0


def test_drift_removed_to_within_the_noise_and_uncertainty_as_scatter():
    rng = np.random.default_rng(0)
    stack = _drift() + rng.normal(0, SIGMA, (N, NY, NX))
    good = np.ones(stack.shape, bool)
    good[17::17] = False                                  # stim-flash DCEs: no good pixel
    good[:, 3, 7] = False                                 # a dead pixel
    f = highpass_time_median(stack, good, 15)
    assert np.all(np.isnan(f[~good]))
    v = f[good]
    assert abs(np.mean(v)) < 0.05 * SIGMA                 # the drift (amplitude 1.2 = 12 sigma) is gone
    frame_means = np.array([np.nanmean(fi) if np.any(g) else 0.0 for fi, g in zip(f, good)])
    # away from the ends and the step every frame's level is gone to within 0.2 sigma; within
    # window/2 of the 3-sigma step at DCE 40 the medians mix the two levels (up to half the step
    # next to it); in the first / last window/2 DCEs the truncated window lags the drift
    inner = np.r_[8:33, 48:72]
    assert np.max(np.abs(frame_means[inner])) < 0.2 * SIGMA
    assert np.max(np.abs(frame_means[33:48])) < 0.55 * 3 * SIGMA
    assert np.max(np.abs(frame_means[np.r_[0:8, 72:80]])) < 0.7 * SIGMA
    assert 0.95 < np.std(v) / SIGMA < 1.05
    base, n_used, own = running_median(stack, good, 15)
    unc = filtered_uncertainty(np.full(stack.shape, SIGMA), n_used, own)[good]
    assert 0.97 < np.std(v / unc) < 1.03                  # pulls of unit width
    # the window is truncated at the ends: the first DCE's median holds 8 values
    assert n_used[0, 0, 0] == 8 and n_used[25, 0, 0] == 15 and n_used[40, 0, 0] == 14 and n_used[20, 3, 7] == 0


def test_uncertainty_formula():
    u = filtered_uncertainty(np.ones(4), np.array([1, 2, 15, 15]), np.array([True, True, True, False]))
    np.testing.assert_allclose(u, [0.0, np.sqrt(0.5), np.sqrt(1 + np.pi / 30 - 2 / 15), np.sqrt(1 + np.pi / 30)])
    assert np.isnan(filtered_uncertainty(np.ones(1), np.zeros(1), np.zeros(1, bool))[0])


@pytest.mark.parametrize("flux, low, high", [(20.0, 0.99, 1.01), (4.0, 0.99, 1.01), (2.0, 0.92, 1.0)])
def test_point_source_crossing_pixels_keeps_its_flux(flux, low, high):
    """Aperture flux (r < 4 px, sky from an annulus) of the source in the filtered frames (the
    filter of the same frames without the source subtracted: the noise cancels) / true flux:
    within 1 % at a peak S/N of 55 and 11 per frame; ~5 % low at 5.4 (partly below the mask's
    3 sigma: its wings raise the medians)."""
    with_src, without, src, x0 = _scan(2.27, flux)
    d = _filter(with_src) - _filter(without)
    yy, xx = np.mgrid[0:NY, 0:NX]
    ratios = []
    for i in np.flatnonzero((x0 > 5) & (x0 < NX - 6)):
        r = np.hypot(xx - x0[i], yy - 5.3)
        ap, ann = r < 4, (r > 6) & (r < 9)
        ratios.append((d[i][ap].sum() - np.median(d[i][ann]) * ap.sum()) / src[i][ap].sum())
    assert len(ratios) > 8
    assert low < np.mean(ratios) < high, np.mean(ratios)
    # and unmasked the same source loses more (3 % at S/N 55, 15 % at 5.4)
    d0 = _filter(with_src, mask=False) - _filter(without, mask=False)
    i = np.flatnonzero((x0 > 5) & (x0 < NX - 6))
    kept0 = np.mean([d0[k][np.hypot(xx - x0[k], yy - 5.3) < 4].sum() / src[k][np.hypot(xx - x0[k], yy - 5.3) < 4].sum()
                     for k in i])
    assert kept0 < np.mean(ratios) - 0.02


def test_bright_source_masked_leaves_no_negative_hole():
    """A bright source that crawls (0.3 px per DCE, as a photometry dither would keep it on a
    pixel; peak 550 sigma): unmasked it is in the median of its own pixels and leaves a low flux
    and deep negative pixels around itself; masked, neither."""
    with_src, without, src, x0 = _scan(0.3, 200.0)
    yy, xx = np.mgrid[0:NY, 0:NX]
    out = {}
    for mask in (True, False):
        d = _filter(with_src, mask) - _filter(without, mask)        # the source's effect, noise cancelled
        hole, kept = [], []
        for i in np.flatnonzero((x0 > 5) & (x0 < NX - 6)):
            r = np.hypot(xx - x0[i], yy - 5.3)
            hole.append(d[i][(r > 2.5) & (r < 6)].min() / SIGMA)
            kept.append(d[i][r < 4].sum() / src[i][r < 4].sum())
        out[mask] = (min(hole), np.mean(kept))
    assert out[True][0] > -6 and abs(out[True][1] - 1) < 0.01, out   # noise of two filtered stacks
    assert out[False][0] < -20 and out[False][1] < 0.6, out           # what the mask prevents


def test_mask_ignores_smooth_emission_and_widens_the_window():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = 5 * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / (2 * 8.0 ** 2)) + 0.2 * xx   # cloud + gradient
    img = smooth + 50 * _psf_at(xx, yy, 8.2, 20.6) + rng.normal(0, SIGMA, (32, 32))
    m = compact_source_mask(img, np.full(img.shape, SIGMA), np.ones(img.shape, bool))
    assert m[20, 8] and m[21, 8]
    noise_only = compact_source_mask(smooth + rng.normal(0, SIGMA, (32, 32)), np.full(img.shape, SIGMA),
                                     np.ones(img.shape, bool))
    cloud = np.hypot(xx - 16, yy - 16) < 8                          # 200 pixels above 3 sigma
    assert noise_only.mean() < 0.03 and (noise_only & cloud).sum() < 20     # noise peaks, not the cloud
    assert (m & (np.hypot(xx - 8.2, yy - 20.6) > 4)).mean() < 0.03
    assert median_box((2, 20)) == (2, 9) and median_box((32, 32)) == (5, 5)
    # a pixel masked in most of the window: the window is widened until 5 values are left
    stack = rng.normal(0, SIGMA, (60, 1, 1))
    mask = np.zeros(stack.shape, bool)
    mask[20:40] = True
    base, n_used, own = running_median(stack, np.ones(stack.shape, bool), 15, source_mask=mask)
    assert n_used[30, 0, 0] >= 5 and not own[30, 0, 0] and own[10, 0, 0]
    # masked everywhere: the masked values are used rather than nothing
    base, n_used, own = running_median(stack, np.ones(stack.shape, bool), 15, source_mask=np.ones(stack.shape, bool))
    assert np.all(n_used > 0) and np.all(np.isfinite(base))


def _psf_at(xx, yy, x0, y0, fwhm=1.8):
    s = fwhm / 2.3548
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)


def test_blocks_with_their_margin_equal_the_whole():
    from reduce.mosaic.steps.filtering import margin
    with_src, _, _, _ = _scan(0.3, 200.0)
    good = np.ones(with_src.shape, bool)
    mask = np.zeros(with_src.shape, bool)
    mask[:, 4:7, :] = True                                   # long masked runs: the window widens
    whole = running_median(with_src, good, 15, source_mask=mask)
    h = margin(15)
    for a, b in ((0, 20), (20, 45), (45, 80)):
        lo, hi = max(a - h, 0), min(b + h, N)
        part = running_median(with_src[lo:hi], good[lo:hi], 15, source_mask=mask[lo:hi])
        for w, p in zip(whole, part):
            np.testing.assert_array_equal(w[a:b], p[a - lo:b - lo])


# ---------------------------------------------------------------- the pipeline on a simulated scan map
@pytest.fixture(scope="module")
def scanmap(tmp_path_factory):
    from reduce.mips.ingest import ingest_mips
    from reduce.mips.pipeline import reduce_mips
    from reduce.mosaic.files import mosaic_files
    from reduce.mosaic.pipeline import reduce_mips_level2
    from reduce.simulate.mips import AorSpec, simulate_mips
    spec = AorSpec(aorkey=46000001, aot_type="MipsScan", object="FILT", ra=150.0, dec=2.0, start_mjd=53700.0,
                   n_dce=60, n_legs=2, arrays=(2,), overhead=0.3, exptime_ge=3.0, pa=0.0, n_sources=100)
    root = tmp_path_factory.mktemp("filtered")
    simulate_mips(root / "raw", specs=[spec], seed=5)        # seed 5: several bright sources off the clouds
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    out = root / "out"                          # BCDs and mosaics in one folder, as skyreduce reduce mips
    assert reduce_mips(store, out, report=lambda line: None).exit_code == 0
    lines = []
    assert reduce_mips_level2(store, out, report=lines.append).exit_code == 0, lines
    assert reduce_mips_level2(store, root / "alone", report=lines.append).exit_code == 0, lines   # no BCDs there
    bcds = root / "bcds"
    bcds.mkdir()
    for p in out.glob("*_b*.fits"):
        shutil.copy(p, bcds / p.name)
    assert mosaic_files([bcds], root / "files", report=lines.append).exit_code == 0, lines
    truth = json.loads((root / "raw" / "mips_truth.json").read_text())
    return {"root": root, "store": store, "out": out, "truth": truth, "spec": spec}


def _one(folder, pattern):
    (path,) = list(Path(folder).glob(pattern))
    return path


def _truth_frames(m):
    """Per DCE (index order): truth flux at the pixels (static sky, leg offset), the point-source
    part of it, the leg offset, and whether the DCE is a stim flash."""
    from reduce.mips.calib import load_calibration
    from reduce.mips.kernels.wcs import wcs_header
    from reduce.simulate.mips_sky import extended, sky_of
    truth, raw = m["truth"], m["root"] / "raw"
    sky = sky_of(truth)
    npz = np.load(raw / "mips_truth.npz")
    dces = sorted([d for d in truth["dces"] if d["chnl"] == 2], key=lambda d: d["index"])
    flux = np.stack([npz[d["npz"]["key"] + "_flux"][d["npz"]["index"]] for d in dces]).astype(float)
    dist = load_calibration(raw / "cal", 2).distortion
    yy, xx = np.mgrid[0:flux.shape[1], 0:flux.shape[2]]
    ext = np.stack([extended(sky, 70, *WCS(wcs_header(dist, d["ra"], d["dec"], d["pa"]), relax=True)
                             .all_pix2world(xx, yy, 0)) for d in dces])
    off = np.array([d["leg_offset"] for d in dces])[:, None, None]
    return dces, flux, flux - ext - off, off, np.array([d["stim"] for d in dces])


@pytest.mark.slow
def test_products_written_and_described(scanmap):
    out = scanmap["out"]
    rows = _mptg(out)
    used = int((np.asarray(rows["status"]) == "ok").sum())
    assert used == 56                                   # 60 DCEs less 4 stim flashes
    for folder in (out, scanmap["root"] / "alone"):
        fb = sorted(folder.glob("*_fbcd.fits"))
        assert len(fb) == used
        for p in fb:
            assert (p.name.replace("_fbcd.fits", "") + "_bcd.fits") in {q.name for q in out.glob("*_bcd.fits")}
    for kind in ("fmaic", "fmunc", "fmcov"):
        h = fits.getheader(_one(out, f"SPITZER_M2_46000001_*_{kind}.fits"))
        assert h["PRODTYPE"] == kind and h["FILTER"] == "time-median high-pass" and h["FILTWIN"] == 15
        assert h["NFRAMES"] == used and h["CTYPE1"] == "RA---TAN"
        assert any("extended emission" in str(v) for v in h["HISTORY"])
    h = fits.getheader(_one(out, "SPITZER_M2_46000001_0001_0006_*_fbcd.fits"))
    b = fits.getheader(_one(out, "SPITZER_M2_46000001_0001_0006_*_bcd.fits"))
    assert h["FILTER"] == "time-median high-pass" and h["PRODTYPE"] == "fbcd" and h["BUNIT"] == "MJy/sr"
    for k in ("AORKEY", "EXPID", "DCENUM", "DCEID", "MJD_OBS", "CTYPE1", "CRVAL1", "A_2_0", "FLUXCONV", "CALVERS"):
        assert h[k] == b[k], k                          # the BCD's header, copied
    a = fits.getheader(_one(scanmap["root"] / "alone", "SPITZER_M2_46000001_0001_0006_*_fbcd.fits"))
    for k in ("AORKEY", "EXPID", "DCENUM", "DCEID", "MJD_OBS", "CTYPE1", "CRVAL1", "CRVAL2", "A_2_0"):
        assert a[k] == (pytest.approx(b[k], rel=1e-12) if isinstance(b[k], float) else b[k]), k
    np.testing.assert_array_equal(fits.getdata(_one(scanmap["root"] / "alone", "*0001_0006_*_fbcd.fits")),
                                  fits.getdata(_one(out, "*0001_0006_*_fbcd.fits")))
    with fits.open(_one(out, "*0001_0006_*_fbcd.fits"), checksum=True) as hd:
        assert hd[0].header["CHECKSUM"] and hd[0].header["DATASUM"]
    # 24 um mosaics and files: nothing filtered (no 24 um in this AOR: checked by the names only)
    assert not list(out.glob("SPITZER_M1_*_f*.fits"))
    if Path("/usr/bin/fitsverify").exists():
        files = [str(_one(out, f"*_{k}.fits")) for k in ("fmaic", "fmunc", "fmcov")] + [str(p) for p in fb[:5]]
        res = subprocess.run(["/usr/bin/fitsverify", "-q", *files], capture_output=True, text=True)
        lines = res.stdout.strip().splitlines()
        assert len(lines) == len(files) and all(line.startswith("verification OK") for line in lines), res.stdout


def _mptg(out):
    from astropy.table import Table
    return Table.read(_one(out, "SPITZER_M2_*_mptg.tbl"), format="ascii.ipac")


@pytest.mark.slow
def test_filtered_mosaic_has_no_background_and_keeps_point_sources(scanmap):
    """Away from sources and clouds the filtered mosaic is ~0 (within 0.15 MJy/sr of a sky of
    ~8) where the unfiltered one has the sky's level; the aperture fluxes of the sources detected
    at S/N > 20 are those of the unfiltered mosaic within 5 %."""
    from reduce.simulate.mips_sky import ARCSEC2_SR, extended, sky_of, truth_image
    out, truth = scanmap["out"], scanmap["truth"]
    sky = sky_of(truth)
    no_clouds = dataclasses.replace(sky, clouds={k: np.zeros(0) for k in sky.clouds})
    with fits.open(_one(out, "*_maic.fits")) as hd:
        m, w = hd[0].data.astype(float), WCS(hd[0].header)
    fm = fits.getdata(_one(out, "*_fmaic.fits")).astype(float)
    fu = fits.getdata(_one(out, "*_fmunc.fits")).astype(float)
    mu = fits.getdata(_one(out, "*_munc.fits")).astype(float)
    cov = fits.getdata(_one(out, "*_fmcov.fits"))
    np.testing.assert_allclose(cov, fits.getdata(_one(out, "*_mcov.fits")), atol=1e-4)
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    ra, dec = w.all_pix2world(xx, yy, 0)
    ext = extended(sky, 70, ra, dec)
    cloud = ext - extended(no_clouds, 70, ra, dec)
    points = truth_image(truth, 70, w, m.shape) - ext
    clear = (cov > 5) & (cloud < 0.05) & (points < 0.02) & np.isfinite(fm)
    assert clear.sum() > 1000
    assert abs(np.median(fm[clear])) < 0.15, np.median(fm[clear])
    assert np.median(m[clear]) > 5 and abs(np.median(m[clear]) - np.median(ext[clear])) < 0.1
    assert 0.95 < np.median(fu[clear]) / np.median(mu[clear]) < 1.1
    # point sources: 30" aperture, sky from a 40-70" annulus
    scale = 4.0
    x, y = w.all_world2pix(sky.sources["ra"], sky.sources["dec"], 0)
    pairs = []
    for j in range(len(x)):
        if not (12 < x[j] < m.shape[1] - 12 and 12 < y[j] < m.shape[0] - 12) or cov[int(y[j]), int(x[j])] < 5:
            continue
        r = np.hypot(xx - x[j], yy - y[j]) * scale
        ap, ann = r <= 30, (r > 40) & (r < 70)
        if not np.all(np.isfinite(fm[ap])):
            continue
        f_m, f_f = ((img[ap].sum() - np.median(img[ann]) * ap.sum()) * scale ** 2 * ARCSEC2_SR * 1e6 for img in (m, fm))
        noise = np.sqrt(np.sum(mu[ap] ** 2)) * 3 * scale ** 2 * ARCSEC2_SR * 1e6     # x3: correlated pixels
        if f_m > 20 * noise and np.max(cloud[r < 70]) < 0.3:
            pairs.append((f_m, f_f))
    assert len(pairs) >= 5, pairs
    ratio = np.array([f for _, f in pairs]) / np.array([f for f, _ in pairs])
    assert np.all(np.abs(ratio - 1) < 0.05), pairs


@pytest.mark.slow
def test_leg_offsets_gone_from_filtered_bcds(scanmap):
    """Per leg the filtered BCDs equal the filter of the true sky without the per-leg offsets
    (median difference < 0.04 MJy/sr over the pixels away from sources; -0.02 and 0.00 here),
    while the BCDs minus that sky show the offsets (+-0.17 MJy/sr in this AOR)."""
    import zarr
    from reduce.mosaic.sources import StoreFrames
    from reduce.runner import read_records
    m = scanmap
    dces, flux, points, off, stim = _truth_frames(m)
    key = "m70-46000001"
    rec = read_records(m["store"], "mips_bcd")[key]
    frames = StoreFrames(str(m["store"]), 2, rec["slots"]["bcd70"][0], rec["rows"]["bcd70"]).load(range(len(dces)))
    bcd = np.stack([f.image for f in frames])
    good = np.stack([f.good for f in frames]) & ~stim[:, None, None]
    filt = zarr.open_array(str(m["store"]), path=f"level2/{key}/filtered", mode="r")[:]
    ref = highpass_time_median(flux - off, ~stim[:, None, None] & np.ones(flux.shape, bool), 15,
                               source_mask=points > 0.05)
    legs = np.array([d["expid"] for d in dces])
    truth_off = m["truth"]["leg_offsets"]["46000001"]["2"]
    assert np.ptp(truth_off) > 0.1
    sel = good & (points < 0.02) & np.isfinite(filt)
    left = []
    for k in range(2):
        s = sel & (legs == k)[:, None, None]
        assert abs(np.median((bcd - (flux - off))[s]) - truth_off[k]) < 0.02          # the offsets are there
        left.append(np.median((filt - ref)[s]))
    assert np.max(np.abs(left)) < 0.04 and abs(left[1] - left[0]) < 0.15 * np.ptp(truth_off), left   # and gone
    # the _fbcd files hold the filtered images
    i = next(j for j, d in enumerate(dces) if d["expid"] == 1 and d["dcenum"] == 6)
    np.testing.assert_array_equal(fits.getdata(_one(m["out"], "*0001_0006_*_fbcd.fits")), filt[i])


@pytest.mark.slow
def test_skyreduce_mosaic_on_files_writes_the_same_filtered_bcds(scanmap):
    files = scanmap["root"] / "files"
    out = scanmap["out"]
    fb = sorted(files.glob("*_fbcd.fits"))
    assert len(fb) == 56
    # the same filter of the same values; the files' masks differ a little (noisy pixels are fatal
    # in BCD files, not in the store; outliers rejected on the files' own mosaic), so equal on
    # most pixels, not all
    same = []
    for p in fb:
        a, b = fits.getdata(p), fits.getdata(out / p.name)
        both = np.isfinite(a) & np.isfinite(b)
        same.append(np.mean(np.abs(a - b)[both] < 1e-4))
        assert both.sum() > 0.9 * np.isfinite(b).sum()
        assert fits.getheader(p)["FILTWIN"] == 15 and fits.getheader(p)["AORKEY"] == 46000001
    assert np.median(same) > 0.9, same
    for kind in ("fmaic", "fmunc", "fmcov"):
        assert _one(files, f"SPITZER_M2_COMBINED_*_{kind}.fits")


@pytest.mark.slow
def test_outliers_off_still_makes_the_products(scanmap, tmp_path):
    """With outlier rejection off the coadds and the filter still wait for the mosaic's zarr
    group to be created (they used to run without it: ArrayNotFoundError)."""
    from reduce.mosaic.pipeline import MosaicParams, reduce_mips_level2
    store = tmp_path / "mips.zarr"
    shutil.copytree(scanmap["store"], store)
    shutil.rmtree(store / "level2")
    lines = []
    summary = reduce_mips_level2(store, tmp_path / "out", report=lines.append, params=MosaicParams(outliers=False),
                                 redo=True)
    assert summary.exit_code == 0, lines
    assert len(list((tmp_path / "out").glob("*_fbcd.fits"))) == 56
    assert np.isfinite(fits.getdata(_one(tmp_path / "out", "*_fmaic.fits"))).sum() > 1000
