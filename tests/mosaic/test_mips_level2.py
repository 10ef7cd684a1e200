"""MIPS level 2 (post-BCD mosaics) on the runner, against the simulator's truth.

One simulated 24 um photometry AOR (16 dithered DCEs) and a 70 um one, reduced to BCDs and
then to mosaics twice: relative pointing refinement (no catalogue), and absolute with a
reference catalogue of the true source positions (``--refcat``). Tolerances are those of
issue 9: astrometry 0.3" (24 um) rms, relative per-frame offsets 0.3" rms (frames with >= 5
matches), point-source photometry 2 % (24 um), ``_munc`` pulls of unit width within 10 %.
"""
import json
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from reduce.mips.ingest import ingest_mips
from reduce.mips.pipeline import reduce_mips
from reduce.mosaic.pipeline import MipsMosaic, MosaicParams, reduce_mips_level2
from reduce.runner import read_records
from reduce.simulate.mips import AorSpec, simulate_mips
from reduce.simulate.mips_sky import ARCSEC2_SR, Sky, render

AOR24 = AorSpec(aorkey=21000001, aot_type="MipsPhot", object="L2A", ra=150.0, dec=2.0, start_mjd=53500.0,
                n_dce=16, exptime_ge=3.0, arrays=(1, 2), pa=20.0)


def simulate_to_bcds(root, *, seed, specs, **simulate_kw):
    """Simulate ``specs``, ingest and reduce them to BCDs under ``root``; (store, truth dict, refcat
    path: a CSV of the true positions of every catalogue source)."""
    simulate_mips(root / "raw", seed=seed, specs=specs, **simulate_kw)
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    assert reduce_mips(store, root / "bcd", report=lambda line: None).exit_code == 0
    truth = json.loads((root / "raw" / "mips_truth.json").read_text())
    src = truth["sky"]["sources"]
    refcat = root / "refcat.csv"
    Table({"ra": src["ra"], "dec": src["dec"]}).write(refcat, format="ascii.csv")
    return store, truth, refcat


@pytest.fixture(scope="module")
def level2(tmp_path_factory):
    root = tmp_path_factory.mktemp("level2")
    store, truth, refcat = simulate_to_bcds(root, seed=4, specs=[AOR24])
    lines = []
    rel = reduce_mips_level2(store, root / "relative", report=lines.append)
    assert rel.exit_code == 0, lines
    rel_rows = {k: _rows(root / "relative", 1 if k == 1 else 2) for k in (1, 2)}
    ab = reduce_mips_level2(store, root / "absolute", report=lines.append, params=MosaicParams().with_refcat(refcat))
    assert ab.exit_code == 0, lines
    return {"root": root, "store": store, "truth": truth, "relative": rel, "absolute": ab, "rel_rows": rel_rows}


def _product(out, chnl, kind):
    (path,) = list(out.glob(f"SPITZER_M{chnl}_*_{kind}.fits"))
    return path


def _rows(out, chnl):
    (path,) = list(out.glob(f"SPITZER_M{chnl}_*_mptg.tbl"))
    return Table.read(path, format="ascii.ipac")


def _truth_image(truth, band, wcs, shape):
    ext = truth["sky"]["extended"]
    sky = Sky({k: np.asarray(v, float) for k, v in truth["sky"]["sources"].items()},
              {k: np.asarray(v, float) for k, v in ext["clouds"].items()},
              {int(k): v for k, v in ext["background"].items()})
    fwhm = truth["arrays"][{24: "1", 70: "2", 160: "3"}[band]]["fwhm_arcsec"]
    return render(sky, band, wcs, shape, fwhm)


def test_products_named_and_described(level2):
    out = level2["root"] / "absolute"
    for chnl in (1, 2):
        for kind in ("maic", "munc", "mcov"):
            path = _product(out, chnl, kind)
            assert path.name == f"SPITZER_M{chnl}_21000001_0.1.0_{kind}.fits"
            h = fits.getheader(path)
            assert h["AORKEY"] == 21000001 and h["CHNLNUM"] == chnl and h["INSTRUME"] == "MIPS"
            assert h["BUNIT"] == ("frames" if kind == "mcov" else "MJy/sr")
            assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
            assert h["NFRAMES"] == int((_rows(out, chnl)["status"] == "ok").sum())
            assert h["PTGMODE"] == "absolute" and h["REFCAT"] == "refcat.csv"
            assert h["NREFINE"] + h["NUNREF"] == h["NFRAMES"]
            w = WCS(h)
            scale = np.abs(np.diag(w.pixel_scale_matrix)) * 3600
            np.testing.assert_allclose(scale, {1: 2.45, 2: 4.0}[chnl], rtol=1e-9)
            assert w.pixel_scale_matrix[0, 1] == 0 and w.pixel_scale_matrix[0, 0] < 0      # north up, east left
    # stim-flash DCEs (70 um) are calibration frames, not in the mosaic
    rows = _rows(out, 2)
    assert (rows["status"] != "ok").sum() >= 1
    assert all(s.startswith("no usable pixel") for s in rows["status"][rows["status"] != "ok"])


def test_reference_catalogue_puts_sources_within_0p3_arcsec(level2):
    """24 um mosaic with --refcat: centroids of the bright isolated truth sources within 0.3" rms."""
    from photutils.centroids import centroid_2dg
    truth, out = level2["truth"], level2["root"] / "absolute"
    with fits.open(_product(out, 1, "maic")) as hd:
        img, w = hd[0].data.astype(float), WCS(hd[0].header)
    cov = fits.getdata(_product(out, 1, "mcov"))
    src = truth["sky"]["sources"]
    ra, dec, flux = (np.asarray(src[k]) for k in ("ra", "dec", "flux24"))
    x, y = w.all_world2pix(ra, dec, 0)
    errs = []
    for j in np.argsort(flux)[::-1]:
        if flux[j] > 0.1 or flux[j] < 5e-3:        # saturated (0.5 Jy) or too faint for 0.1" centroids
            continue
        sep = np.hypot((ra - ra[j]) * np.cos(np.radians(dec[j])), dec - dec[j]) * 3600
        if np.sort(sep)[1] < 20:                    # a neighbour within 20"
            continue
        xi, yi = int(round(x[j])), int(round(y[j]))
        if not (6 <= xi < img.shape[1] - 6 and 6 <= yi < img.shape[0] - 6) or cov[yi, xi] < 6:
            continue
        cut = img[yi - 5:yi + 6, xi - 5:xi + 6]
        cx, cy = centroid_2dg(cut - np.median(img[np.isfinite(img)]))
        r2, d2 = w.all_pix2world(xi - 5 + cx, yi - 5 + cy, 0)
        errs.append(np.hypot((r2 - ra[j]) * np.cos(np.radians(dec[j])), d2 - dec[j]) * 3600)
    assert len(errs) >= 5, errs
    rms = float(np.sqrt(np.mean(np.square(errs))))
    assert rms < 0.3, (rms, errs)


def test_relative_refinement_recovers_frame_offsets(level2):
    """Relative mode: per-frame pointing corrections equal the truth (true - reconstructed
    pointing) up to one common shift, within 0.3" rms for frames with >= 5 matches."""
    truth = level2["truth"]
    rows = level2["rel_rows"][1]
    by_id = {str(d["file"]): d for d in truth["dces"] if d["chnl"] == 1}
    assert len(by_id) == len(rows)
    true_e, true_n, sel = [], [], []
    dces = sorted(by_id.values(), key=lambda d: d["index"])
    for row, d in zip(rows, dces):
        cosd = np.cos(np.radians(d["dec"]))
        true_e.append((d["ra"] - d["ra_ref"]) * cosd * 3600)
        true_n.append((d["dec"] - d["dec_ref"]) * 3600)
        sel.append(row["status"] == "ok" and row["nmatch"] >= 5)
    sel = np.array(sel)
    assert sel.sum() >= 10
    de = np.asarray(rows["d_east"]) - np.asarray(true_e)
    dn = np.asarray(rows["d_north"]) - np.asarray(true_n)
    de, dn = de[sel] - de[sel].mean(), dn[sel] - dn[sel].mean()
    rms = float(np.sqrt(np.mean(de ** 2 + dn ** 2)))
    true_rms = float(np.sqrt(np.mean(np.square(true_e) + np.square(true_n))))
    assert rms < 0.3 and true_rms > 3 * rms, (rms, true_rms)


def _aperture_jy(img, w, ra, dec, radius, annulus):
    x, y = w.all_world2pix([ra], [dec], 0)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    scale = np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600
    rr = np.hypot(xx - x[0], yy - y[0]) * scale
    ap, sky = rr <= radius, (rr > annulus[0]) & (rr <= annulus[1]) & np.isfinite(img)
    if not np.isfinite(img[ap]).all():
        return np.nan
    return float(np.sum(img[ap] - np.median(img[sky])) * scale ** 2 * ARCSEC2_SR * 1e6)


def _empty_aperture_sigma(resid, w, cov, radius, annulus, *, margin, min_cov, seed):
    """Scatter [Jy] of the aperture at 200 random places of ``resid`` (mosaic - truth) covered by
    >= ``min_cov`` frames, ``margin`` pixels inside the edges."""
    rng = np.random.default_rng(seed)
    empty = []
    while len(empty) < 200:
        x, y = rng.uniform(margin, resid.shape[1] - margin), rng.uniform(margin, resid.shape[0] - margin)
        if cov[int(y), int(x)] >= min_cov:
            ra, dec = w.all_pix2world(x, y, 0)
            empty.append(_aperture_jy(resid, w, ra, dec, radius, annulus))
    return float(np.nanstd(empty))


def test_point_source_photometry_within_2_percent(level2):
    """Aperture photometry of the 24 um mosaic (radius 3 FWHM = 18", annulus 24-36", the truth
    image of every other source subtracted; a Gaussian PSF leaves 2^-36 outside the aperture)
    against the catalogue flux, for the unsaturated sources > 10 mJy away from the saturated one:
    the S/N-weighted mean ratio within 2 % of 1, and every source within 3 sigma of its flux,
    sigma from the scatter of the same aperture at random empty places of (mosaic - truth)."""
    truth, out = level2["truth"], level2["root"] / "absolute"
    with fits.open(_product(out, 1, "maic")) as hd:
        img, w = hd[0].data.astype(float), WCS(hd[0].header)
    cov = fits.getdata(_product(out, 1, "mcov"))
    model = _truth_image(truth, 24, w, img.shape)
    sigma = _empty_aperture_sigma(img - model, w, cov, 18.0, (24.0, 36.0), margin=20, min_cov=6, seed=1)
    src = {k: np.asarray(v) for k, v in truth["sky"]["sources"].items()}
    bright = src["flux24"] > 0.1
    ratio, err = [], []
    for j in np.argsort(src["flux24"])[::-1]:
        sep = np.hypot((src["ra"][bright] - src["ra"][j]) * np.cos(np.radians(src["dec"][j])),
                       src["dec"][bright] - src["dec"][j]) * 3600
        if not 1e-2 < src["flux24"][j] < 0.1 or sep.min() < 60:
            continue
        x, y = w.all_world2pix(src["ra"][j], src["dec"][j], 0)
        if not (20 < x < img.shape[1] - 20 and 20 < y < img.shape[0] - 20) or cov[int(y), int(x)] < 6:
            continue
        others = {k: np.delete(v, j) for k, v in src.items()}
        t = dict(truth, sky=dict(truth["sky"], sources={k: v.tolist() for k, v in others.items()}))
        f = _aperture_jy(img - _truth_image(t, 24, w, img.shape) + np.median(model), w, src["ra"][j],
                         src["dec"][j], 18.0, (24.0, 36.0))
        ratio.append(f / src["flux24"][j])
        err.append(sigma / src["flux24"][j])
    ratio, err = np.array(ratio), np.array(err)
    assert len(ratio) >= 4, ratio
    mean = np.sum(ratio / err**2) / np.sum(1 / err**2)
    assert abs(mean - 1) < 0.02, (mean, ratio, err)
    assert np.all(np.abs(ratio - 1) < 3 * err), (ratio, err)


def test_70um_positions_within_1_arcsec_and_fluxes_within_3_percent(level2):
    """70 um mosaic with --refcat (most 70 um frames have too few sources to be refined and keep
    the spacecraft pointing, ~1" per axis per DCE): for the sources above 50 mJy with no
    neighbour within 20" and no source above 1 Jy within 60" (the 15 Jy one's residual), each
    measured on the mosaic minus the truth image of every other source: centroids within 1.0"
    rms of truth; aperture fluxes (radius 36" = 2 FWHM, annulus 45-63") S/N-weighted within 3 %
    of the catalogue flux and each within 3 sigma (sigma from the same aperture at 200 empty
    places of mosaic - truth)."""
    from photutils.centroids import centroid_2dg
    truth, out = level2["truth"], level2["root"] / "absolute"
    with fits.open(_product(out, 2, "maic")) as hd:
        img, w = hd[0].data.astype(float), WCS(hd[0].header)
    cov = fits.getdata(_product(out, 2, "mcov"))
    model = _truth_image(truth, 70, w, img.shape)
    src = {k: np.asarray(v) for k, v in truth["sky"]["sources"].items()}
    sigma = _empty_aperture_sigma(img - model, w, cov, 36.0, (45.0, 63.0), margin=15, min_cov=10, seed=2)
    x, y = w.all_world2pix(src["ra"], src["dec"], 0)
    errs, ratio, flux = [], [], []
    for j in np.argsort(src["flux70"])[::-1]:
        sep = np.hypot((src["ra"] - src["ra"][j]) * np.cos(np.radians(src["dec"][j])), src["dec"] - src["dec"][j]) * 3600
        sep[j] = np.inf
        xi, yi = int(round(x[j])), int(round(y[j]))
        if (src["flux70"][j] < 0.05 or src["flux70"][j] > 1.0 or sep.min() < 20 or (sep[src["flux70"] > 1.0] < 60).any()
                or not (16 <= xi < img.shape[1] - 16 and 16 <= yi < img.shape[0] - 16) or cov[yi, xi] < 10):
            continue
        others = {k: np.delete(v, j) for k, v in src.items()}
        t = dict(truth, sky=dict(truth["sky"], sources={k: v.tolist() for k, v in others.items()}))
        clean = img - _truth_image(t, 70, w, img.shape) + np.median(model)
        cut = clean[yi - 7:yi + 8, xi - 7:xi + 8]
        cx, cy = centroid_2dg(cut - np.median(model))
        r2, d2 = w.all_pix2world(xi - 7 + cx, yi - 7 + cy, 0)
        errs.append(np.hypot((r2 - src["ra"][j]) * np.cos(np.radians(src["dec"][j])), d2 - src["dec"][j]) * 3600)
        ratio.append(_aperture_jy(clean, w, src["ra"][j], src["dec"][j], 36.0, (45.0, 63.0)) / src["flux70"][j])
        flux.append(src["flux70"][j])
    assert len(errs) >= 5, errs
    rms = float(np.sqrt(np.mean(np.square(errs))))
    assert rms < 1.0, (rms, errs)
    ratio, err = np.array(ratio), sigma / np.array(flux)
    mean = np.sum(ratio / err**2) / np.sum(1 / err**2)
    assert abs(mean - 1) < 0.03, (mean, ratio, err)
    assert np.all(np.abs(ratio - 1) < 3 * err), (ratio, err)


def test_uncertainty_map_is_calibrated(level2):
    """(mosaic - truth) / munc over pixels covered by >= 4 frames away from bright sources:
    unit width within 10 %, mean within 0.1 (24 um)."""
    truth, out = level2["truth"], level2["root"] / "absolute"
    with fits.open(_product(out, 1, "maic")) as hd:
        img, w = hd[0].data.astype(float), WCS(hd[0].header)
    unc = fits.getdata(_product(out, 1, "munc")).astype(float)
    cov = fits.getdata(_product(out, 1, "mcov"))
    model = _truth_image(truth, 24, w, img.shape)
    src_only = model - _truth_image(dict(truth, sky=dict(truth["sky"], sources={k: [] for k in truth["sky"]["sources"]})),
                                    24, w, img.shape)
    sel = (cov >= 4) & np.isfinite(img) & np.isfinite(unc) & (src_only < 0.5 * np.nanmedian(unc))
    pulls = (img - model)[sel] / unc[sel]
    assert sel.sum() > 5000
    assert abs(np.mean(pulls)) < 0.1 and abs(np.std(pulls) - 1) < 0.1, (np.mean(pulls), np.std(pulls))


@pytest.mark.tools
def test_products_pass_fitsverify_and_wcstools(level2):
    from tests.conftest import require_tool
    require_tool("fitsverify")
    require_tool("xy2sky")
    out = level2["root"] / "absolute"
    for path in sorted(out.glob("*_m*.fits")):
        res = subprocess.run(["fitsverify", "-q", str(path)], capture_output=True, text=True)
        assert "0 warnings and 0 errors" in res.stdout or res.stdout.startswith("verification OK"), res.stdout
    path = _product(out, 1, "maic")
    w = WCS(fits.getheader(path))
    res = subprocess.run([shutil.which("xy2sky"), "-d", "-n", "7", str(path), "10", "20", "150", "100"],
                         capture_output=True, text=True, check=True)
    got = [list(map(float, line.split()[:2])) for line in res.stdout.strip().splitlines()]
    want = np.column_stack(w.all_pix2world([10, 150], [20, 100], 1))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_rerun_skips_done_mosaics_and_build_is_lazy(level2, raise_if_dask_computes):
    store, root = level2["store"], level2["root"]
    refcat = root / "refcat.csv"
    again = reduce_mips_level2(store, root / "absolute", report=lambda line: None,
                               params=MosaicParams().with_refcat(refcat))
    assert again.ran == 0 and again.skipped == 2
    recs = read_records(store, "mips_mosaic")
    assert {r["status"] for r in recs.values()} == {"done"}
    pipe = MipsMosaic()
    (unit,) = [u for u in pipe.units(store) if u.key.startswith("m24-")]
    with raise_if_dask_computes():
        graphs = pipe.build_unit(store, unit)
    assert len(graphs) == 1 and len(graphs[0].__dask_graph__()) > 10
