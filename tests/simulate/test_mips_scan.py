"""MIPS simulator, scan maps: background gradient, per-leg 70/160 um offsets, a moving object,
and the truth helpers a mosaic test needs (mips_sky.truth_image, surface_brightness, ...)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from reduce.simulate import mips
from reduce.simulate.mips_cal import (ARRAYS, READTIME_GE, SAMPTIME_SI, array_wcs, distortion_header,
                                      load_calibration)
from reduce.simulate.mips_detector import nonlin_apply
from reduce.simulate.mips_sky import (ARCSEC2_SR, _empty, _offset, _sep_arcsec, _tangent, mover_position,
                                      render, sky_of, surface_brightness, truth_image)

PHOT = mips.AorSpec(aorkey=30000001, aot_type="MipsPhot", object="PHOT", ra=40.0, dec=10.0,
                    start_mjd=53700.0, n_dce=2, arrays=(1,))
SCAN = mips.AorSpec(aorkey=30000002, aot_type="MipsScan", object="SCAN", ra=41.0, dec=11.0,
                    start_mjd=53700.01, n_dce=16, n_legs=2, arrays=(1, 2), pa=60.0, overhead=0.3)
SEED = 4


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("mips_scan")
    res = mips.simulate_mips(out, specs=[PHOT, SCAN], seed=SEED)
    truth = json.loads(Path(res["truth"]).read_text())
    npz = dict(np.load(out / "mips_truth.npz"))
    return {"out": out, "res": res, "truth": truth, "npz": npz, "cal": load_calibration(out / "cal")}


def _dces(sim, chnl, aorkey=SCAN.aorkey):
    return [e for e in sim["truth"]["dces"] if e["chnl"] == chnl and e["aorkey"] == aorkey]


def _arr(sim, e, name):
    return sim["npz"][f"{e['npz']['key']}_{name}"][e["npz"]["index"]]


def _wcs(sim, e):
    return array_wcs(sim["cal"][e["chnl"]]["dist"], e["ra"], e["dec"], e["pa"])


def _si_flux(sim, e):
    """24 um raw slope -> surface brightness [MJy/sr] with the truth dark/droop/jailbar/flat;
    NaN on bad, saturated and cosmic-ray pixels."""
    c = sim["cal"][1]
    d = fits.getdata(sim["out"] / e["file"]).astype(float)
    rate = d[0] / SAMPTIME_SI - c["dark"] - e["droop"]
    rate[:, 3::4] -= e["jailbar"]
    bad = (c["pmask"] != 0) | (d[1] != 0) | (c["flat"] <= 0)
    flux = rate / np.where(bad, 1.0, c["flat"]) * c["fluxconv"]
    for h in e["crs"]:
        bad[h["y"], h["x"]] = True
    return np.where(bad, np.nan, flux)


def _no_gradient(sky):
    return dataclasses.replace(sky, gradients=_empty(sky.gradients))


def _points_only(sky, band, drop_sources=False):
    """The sky without extended emission (and without the static catalogue if asked)."""
    return dataclasses.replace(sky, clouds=_empty(sky.clouds), gradients=_empty(sky.gradients),
                               background={band: 0.0},
                               **({"sources": _empty(sky.sources)} if drop_sources else {}))


def test_truth_has_scan_fields(sim):
    t = sim["truth"]
    g, m = t["sky"]["extended"]["gradients"], t["sky"]["movers"]
    assert all(len(g[k]) == 1 for k in ("ra", "dec", "radius", "pa", "g24", "g70", "g160", "aorkey"))
    assert g["aorkey"] == [SCAN.aorkey] and (g["ra"][0], g["dec"][0]) == (SCAN.ra, SCAN.dec)
    assert all(len(m[k]) == 1 for k in ("ra", "dec", "mjd0", "rate_east", "rate_north",
                                        "flux24", "flux70", "flux160", "aorkey"))
    speed = np.hypot(m["rate_east"][0], m["rate_north"][0]) * 60  # "/min
    assert 10 <= speed <= 60 and m["flux24"][0] > m["flux70"][0] > m["flux160"][0] > 0
    off = t["leg_offsets"][str(SCAN.aorkey)]
    assert set(off) == {"2"} and len(off["2"]) == 2 and abs(sum(off["2"])) < 1e-12
    assert 0.01 < abs(off["2"][0]) < 0.1 * 8.0                 # a few % of the 70 um background
    for e in t["dces"]:
        want = off["2"][e["expid"]] if (e["aorkey"], e["chnl"]) == (SCAN.aorkey, 2) else 0.0
        assert e["leg_offset"] == want and isinstance(e["movers"], list)
    assert str(PHOT.aorkey) not in t["leg_offsets"]
    assert not any(e["movers"] for e in _dces(sim, 1, PHOT.aorkey))
    # the truth JSON rebuilds the simulator's sky exactly
    a, b = sky_of(t), mips.make_mips_sky([PHOT, SCAN], seed=SEED)
    for name in ("sources", "clouds", "gradients", "movers"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), name
    e = _dces(sim, 1)[0]
    assert np.array_equal(truth_image(sim["res"]["truth"], 24, _wcs(sim, e), (128, 128)),  # JSON path
                          truth_image(b, 24, _wcs(sim, e), (128, 128)))


def test_photometry_aor_unchanged_by_scan_components(sim, tmp_path):
    """MipsPhot files do not depend on a scan map's gradient, offsets and moving object."""
    mips.simulate_mips(tmp_path, specs=[PHOT], seed=SEED)
    for e in _dces(sim, 1, PHOT.aorkey):
        assert (tmp_path / e["file"]).read_bytes() == (sim["out"] / e["file"]).read_bytes()


def _plane(e_deg, n_deg, v):
    a = np.stack([np.ones_like(e_deg), e_deg, n_deg], axis=1)
    return np.linalg.lstsq(a, v, rcond=None)[0]


def test_gradient_in_24um_raw_slopes(sim):
    """A plane fitted to (raw 24 um surface brightness - truth without the gradient) over all
    DCEs, sources and the moving object masked, is the truth gradient; with the gradient in
    the truth nothing is left."""
    sky = sky_of(sim["truth"])
    g = sky.gradients
    flat = _no_gradient(sky)
    es, ns, r0, r1 = [], [], [], []
    for e in _dces(sim, 1):
        w = _wcs(sim, e)
        shape = ARRAYS[1].shape
        obs = _si_flux(sim, e)
        points = render(_points_only(sky, 24), 24, w, shape, 6.0, mjd=e["mjd"])
        ok = np.isfinite(obs) & (points < 0.05)       # blank sky: no source, no moving object
        yy, xx = np.nonzero(ok)
        ra, dec = w.all_pix2world(xx, yy, 0)
        de, dn, _ = _tangent(g["ra"][0], g["dec"][0], ra, dec)
        es.append(de / 3600)
        ns.append(dn / 3600)
        r0.append(obs[ok] - render(flat, 24, w, shape, 6.0)[ok])
        r1.append(obs[ok] - truth_image(sim["truth"], 24, w, shape)[ok])
    es, ns = np.concatenate(es), np.concatenate(ns)
    assert es.size > 100_000 and max(np.ptp(es), np.ptp(ns)) > 0.05   # the map spans > 3'
    pa = np.radians(g["pa"][0])
    want = g["g24"][0] * np.array([np.sin(pa), np.cos(pa)])
    fit0, fit1 = _plane(es, ns, np.concatenate(r0)), _plane(es, ns, np.concatenate(r1))
    assert np.hypot(*want) > 5                                       # MJy/sr per deg
    assert np.allclose(fit0[1:], want, atol=0.03 * np.hypot(*want)), (fit0, want)
    assert np.all(np.abs(fit1[1:]) < 0.03 * np.hypot(*want)) and abs(fit1[0]) < 0.05, fit1
    # the two DCEs farthest apart along the gradient differ by the gradient between them
    d = _dces(sim, 1)
    sb = np.array([surface_brightness(sky, 24, [x["ra"]], [x["dec"]])[0]
                   - surface_brightness(flat, 24, [x["ra"]], [x["dec"]])[0] for x in d])
    a, b = d[int(np.argmin(sb))], d[int(np.argmax(sb))]
    diff = [np.nanmedian(_si_flux(sim, x) - render(flat, 24, _wcs(sim, x), ARRAYS[1].shape, 6.0))
            for x in (a, b)]
    assert sb.max() - sb.min() > 0.2
    assert diff[1] - diff[0] == pytest.approx(sb.max() - sb.min(), abs=0.03)


def _ge_slope(sim, e):
    """Linearised 70 um ramp slope [DN/s] (OLS over all reads)."""
    reads = fits.getdata(sim["out"] / e["file"]).astype(float)
    lin = nonlin_apply(reads - reads[0], sim["cal"][2]["nonlin"].astype(float))
    n, ny, nx = lin.shape
    t = np.arange(n) * READTIME_GE
    return np.polyfit(t, lin.reshape(n, -1), 1)[0].reshape(ny, nx), reads


def test_leg_offsets_in_70um_ramps(sim):
    """Raw 70 um slopes minus the truth sky (static + moving object, no offset) through the
    detector model, in blank pixels: the per-leg offset of the truth, within noise."""
    sky, c = sky_of(sim["truth"]), sim["cal"][2]
    truth = sim["truth"]["leg_offsets"][str(SCAN.aorkey)]["2"]
    per_leg = {}
    for e in _dces(sim, 2):
        if e["stim"]:
            continue
        w = _wcs(sim, e)
        slope, reads = _ge_slope(sim, e)
        seen = render(sky, 70, w, (32, 32), 18.0, mjd=e["mjd"])          # MJy/sr, no leg offset
        model = e["resp"] * seen / c["fluxconv"] * c["flat"] + c["dark"]  # DN/s
        points = render(_points_only(sky, 70), 70, w, (32, 32), 18.0, mjd=e["mjd"])
        ok = (c["pmask"] == 0) & (c["flat"] > 0) & (reads.max(axis=0) < 32767) & (points < 0.05)
        for h in e["crs"]:
            ok[h["y"], h["x"]] = False
        assert ok.sum() > 300
        res = (slope - model) / (e["resp"] * np.where(ok, c["flat"], 1.0)) * c["fluxconv"]   # MJy/sr
        per_leg.setdefault(e["expid"], []).append(np.median(res[ok]))
    meas = np.array([np.mean(per_leg[k]) for k in sorted(per_leg)])
    sem = np.array([np.std(per_leg[k]) / np.sqrt(len(per_leg[k])) for k in sorted(per_leg)])
    assert len(meas) == 2 and abs(truth[1] - truth[0]) > 0.05
    assert np.all(np.abs(meas - truth) < 4 * sem + 0.01), (meas, truth, sem)
    assert (meas[1] - meas[0]) == pytest.approx(truth[1] - truth[0], abs=0.02)
    # and the npz truth flux of the DCE (what the array saw) carries it
    e = _dces(sim, 2)[0]
    w = _wcs(sim, e)
    assert np.allclose(_arr(sim, e, "flux"), render(sky, 70, w, (32, 32), 18.0, mjd=e["mjd"])
                       + truth[e["expid"]], atol=1e-4)


def _centroid(img, x0, y0, r=4):
    """Peak pixel near (x0, y0) and the 3x3 flux-weighted centroid around it."""
    xi, yi = int(round(x0)), int(round(y0))
    box = img[yi - r:yi + r + 1, xi - r:xi + r + 1]
    by, bx = np.unravel_index(np.nanargmax(box), box.shape)
    py, px = yi - r + by, xi - r + bx
    cut = np.clip(np.nan_to_num(img[py - 1:py + 2, px - 1:px + 2]), 0, None)
    yy, xx = np.mgrid[-1:2, -1:2]
    return px + (cut * xx).sum() / cut.sum(), py + (cut * yy).sum() / cut.sum()


def test_moving_object_where_predicted_and_not_in_catalogue(sim):
    truth = sim["truth"]
    m = truth["sky"]["movers"]
    seen = [e for e in _dces(sim, 1) if e["movers"]
            and 8 < e["movers"][0]["x"] < 119 and 8 < e["movers"][0]["y"] < 119]
    assert len(seen) >= 2
    a, b = seen[0], seen[-1]
    assert b["mjd"] - a["mjd"] > 10 / 86400
    pos = [mover_position(truth, e["mjd"]) for e in (a, b)]
    moved = _sep_arcsec(pos[0][0][0], pos[0][1][0], pos[1][0][0], pos[1][1][0])
    assert moved > 3 * 2.55                                         # it moved > 3 pixels
    src = truth["sky"]["sources"]
    sky = sky_of(truth)
    mover_only = _points_only(sky, 24, drop_sources=True)
    for e, (ra, dec) in zip((a, b), pos):
        w = _wcs(sim, e)
        x, y = (float(v[0]) for v in w.all_world2pix(ra, dec, 0))
        assert (x, y) == pytest.approx((e["movers"][0]["x"], e["movers"][0]["y"]), abs=1e-6)
        res = _si_flux(sim, e) - truth_image(truth, 24, w, ARRAYS[1].shape)   # static truth removed
        cx, cy = _centroid(res, x, y)
        assert np.hypot(cx - x, cy - y) < 1.0, (cx, cy, x, y)
        # the static position (at the other DCE's time) is not where it is
        other = pos[1] if e is a else pos[0]
        ox, oy = (float(v[0]) for v in w.all_world2pix(other[0], other[1], 0))
        assert np.hypot(cx - ox, cy - oy) > 2.0
        # PSF-fit flux of the residual = the mover's flux: it is not in the static truth
        tpl = render(mover_only, 24, w, ARRAYS[1].shape, 6.0, mjd=e["mjd"]) / m["flux24"][0]   # 1 Jy
        static = render(_points_only(sky, 24), 24, w, ARRAYS[1].shape, 6.0)
        assert static[int(round(y)), int(round(x))] < 0.01 * tpl.max() * m["flux24"][0]
        yy, xx = np.mgrid[0:128, 0:128]
        rr = np.hypot(xx - x, yy - y)
        ap, ring = (rr < 5) & np.isfinite(res), (rr > 8) & (rr < 20) & np.isfinite(res)
        t = tpl[ap]
        flux = np.sum(t * (res[ap] - np.median(res[ring]))) / np.sum(t * t)
        sigma = np.std(res[ring]) / np.sqrt(np.sum(t * t))
        assert m["flux24"][0] > 10 * sigma and abs(flux - m["flux24"][0]) < 4 * sigma, (flux, sigma)
        # and the catalogue has nothing there
        assert np.min(_sep_arcsec(np.array(src["ra"]), np.array(src["dec"]), ra[0], dec[0])) > 6.0


def test_truth_helpers_agree():
    """surface_brightness at pixel centres = truth_image away from point sources; a point source
    sampled by surface_brightness on a fine grid integrates to its flux."""
    sky = mips.make_mips_sky([SCAN], seed=SEED)
    w = array_wcs(distortion_header(1), SCAN.ra, SCAN.dec, SCAN.pa)
    img = truth_image(sky, 24, w, (128, 128))
    yy, xx = np.mgrid[0:128, 0:128]
    ra, dec = w.all_pix2world(xx, yy, 0)
    sb = surface_brightness(sky, 24, ra, dec)
    points = render(_points_only(sky, 24), 24, w, (128, 128), 6.0)
    blank = points < 1e-6
    assert blank.mean() > 0.5 and np.allclose(img[blank], sb[blank], atol=1e-6)
    assert np.ptp(img[blank]) > 0.5                                 # gradient + clouds vary
    j = int(np.argmax(sky.sources["flux24"]))
    ra0, dec0 = sky.sources["ra"][j], sky.sources["dec"][j]
    e, n = np.meshgrid(np.arange(-30, 30.01, 0.5), np.arange(-30, 30.01, 0.5))
    gra, gdec = _offset(ra0, dec0, e, n)
    nog = _no_gradient(sky)
    bump = surface_brightness(nog, 24, gra, gdec) - surface_brightness(
        dataclasses.replace(nog, sources={k: np.delete(v, j) for k, v in sky.sources.items()}), 24, gra, gdec)
    assert bump.sum() * 0.25 * ARCSEC2_SR * 1e6 == pytest.approx(sky.sources["flux24"][j], rel=1e-3)


def test_plan_scan_size():
    specs = mips.plan_mips(aors=2, seed=0, scan_dces=150, scan_legs=5, scan_arrays=(1,))
    base = mips.plan_mips(aors=2, seed=0)
    assert specs[0] == base[0]
    assert dataclasses.replace(specs[1], n_dce=30, n_legs=2, arrays=(1, 2, 3)) == base[1]
    assert (specs[1].n_dce, specs[1].n_legs, specs[1].arrays) == (150, 5, (1,))
    p = mips._plan(specs[1], 1, 0)
    assert p["expid"].max() == 4 and np.bincount(p["expid"]).tolist() == [30] * 5


def test_scan_field_sources_scale_with_size():
    """Small maps keep 40 catalogue sources (historical sky); big ones get a density; n_sources wins."""
    big = dataclasses.replace(SCAN, n_dce=1000, n_legs=8, arrays=(1,))
    assert mips._fields([SCAN])[0][3] == 40
    rad = mips.scan_radius(big)
    assert 1500 < rad < 3000                                         # the footprint, not 0.5 * scan length
    n = mips._fields([big])[0][3]
    assert n == round(mips.SCAN_SOURCES_PER_DEG2 * np.pi * (rad / 3600) ** 2) > 100
    sky = mips.make_mips_sky([dataclasses.replace(SCAN, n_sources=200)], seed=SEED)
    assert len(sky.sources["ra"]) == 201                             # + the bright one
