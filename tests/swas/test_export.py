"""SWAS level-1 export: layout, headers, CLASS structure against the real CLASS file, target folders,
atomicity, re-runs, fitsverify. The level-1 Dataset is built here by hand, following
/work/notes/swas_level1.md exactly, with Gaussian lines of known LSRK velocity on linear axes."""

import json
import logging
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from conftest import require_tool

from reduce.errors import ReduceError
from reduce.swas import export
from reduce.swas.export import frequency_axis, velocity_axis, write_products
from reduce.swas.physics import C_KMS, get_band
from reduce.swas.targets import (INDEX_NAME, TOP_INDEX_NAME, read_target_index, target_folder, target_name,
                                 write_target_index, write_top_index)

N_CHAN = 725
LINE_V = 8.0  # km/s LSRK (radio) of every injected line
LINE_SIGMA = 1.5  # km/s
REDUCTION_TIME = "2026-11-22T06:00:00"
HISTORY = ["check v1 {'gap_drop_scans': 50}", "pair v1 {'max_dt_s': 30.0}",
           "coadd v1 {'max_on_time_s': 180.0} " + "x" * 100]
FLAGS = {"506006": {"490": {"noise": [300, 4], "spike": [300, 1]}, "550": {"noise": [300, 9]}},  # pipeline form
         "507003": {"noise": {"tested": 200, "flagged": 0}}}

# (missday, segment number, object, obsmode, bands, positions [(dlam, dbet)], nominal coadds per band/position)
SEGMENTS = [
    (506, 6, "sgra", "NOD", ("CI", "O2"), [(0.0, 0.0)], 2),
    (506, 7, "sgra-150", "CHOP", ("H2O", "13CO"), [(0.0, 0.0)], 1),
    (507, 3, "G34.3+0.15/A", "MAP", ("CI", "O2"), [(0.0, 0.0), (3.2, -3.2)], 1),
]


def line_profile(v, amp):
    return amp * np.exp(-0.5 * ((v - LINE_V) / LINE_SIGMA) ** 2)


def make_level1():
    """A computed level-1 Dataset per swas_level1.md: USB and LSB bands, a 2-position MAP, 'total' coadds."""
    rows, spectra = [], []
    t0 = 52000.0
    for missday, segnum, obj, mode, bands, positions, n_nominal in SEGMENTS:
        for band_name in bands:
            band = get_band(band_name)
            receiver = int(band.half)
            usb = band.sideband == "USB"
            cdelt_freq = (1.0 if usb else -1.0) * 1.00012e6
            vlsr_ref = LINE_V + (61.3 if usb else -47.9)  # the line ~100 / ~80 channels from CRPIX1
            freq_ref = band.rest_freq * (1.0 - vlsr_ref / C_KMS)
            lo = freq_ref - (1.0 if usb else -1.0) * 2.4556e9
            cdelt_vel = -C_KMS * cdelt_freq / band.rest_freq
            crpix = 363.37
            for pos, (dlam, dbet) in enumerate(positions):
                kinds = [("nominal", k) for k in range(n_nominal)] + [("total", n_nominal)]
                for kind, k in kinds:
                    on_time = 180.0 if kind == "nominal" else 180.0 * n_nominal
                    start = t0 + missday + segnum / 100.0 + (0 if kind == "total" else k * 400.0 / 86400)
                    end = start + (on_time * 2 + 20.0) / 86400
                    amp = 1.0 + 0.1 * k + 0.05 * pos
                    edge = 25 + 3
                    meta = dict(
                        segment=missday * 1000 + segnum, missday=missday, segment_number=segnum, object=obj,
                        obsmode=mode, band=band_name, receiver=receiver, sideband=band.sideband, kind=kind,
                        dlam=dlam, dbet=dbet, position=pos if mode == "MAP" else 0, on_time=on_time,
                        n_scans=int(on_time / 2), time_start=start, time_mid=(start + end) / 2, time_end=end,
                        tsys=2300.0 + receiver, roll=123.4 + k, ra=266.4168 + missday / 1000, dec=-29.0078,
                        vsource=LINE_V, restfreq=band.rest_freq, imagfreq=2 * lo - freq_ref / (1 - vlsr_ref / C_KMS),
                        lofreq=lo, crpix=crpix, freq_ref=freq_ref, cdelt_freq=cdelt_freq, vlsr_ref=vlsr_ref,
                        cdelt_vel=cdelt_vel, edge_channels=edge)
                    v = velocity_axis(meta, N_CHAN)
                    ta = (line_profile(v, amp) + 0.003 * np.sin(np.arange(N_CHAN) / 7.0)).astype(np.float32)
                    ta[:3] = np.nan  # no scan covered these after the shift-and-add
                    rows.append(meta)
                    spectra.append(ta)
    # shuffle the coadd order: the export must number coadds by time, not by row
    order = np.random.default_rng(3).permutation(len(rows))
    rows = [rows[i] for i in order]
    spectra = [spectra[i] for i in order]
    dtypes = dict(segment=np.int32, missday=np.int32, segment_number=np.int32, receiver=np.int16,
                  dlam=np.float32, dbet=np.float32, position=np.int16, on_time=np.float32, n_scans=np.int32,
                  tsys=np.float32, roll=np.float32, vsource=np.float32, edge_channels=np.int16)
    coords = {}
    for name in rows[0]:
        values = np.array([r[name] for r in rows])
        coords[name] = ("coadd", values.astype(dtypes.get(name, values.dtype)))
    ta = np.stack(spectra)
    weight = np.where(np.isfinite(ta), 90.0, 0.0).astype(np.float32)
    ds = xr.Dataset({"ta": (("coadd", "channel"), ta, {"units": "K"}),
                     "weight": (("coadd", "channel"), weight)}, coords=coords)
    ds.attrs.update(software="0.1.0", history=HISTORY, flag_statistics=json.dumps(FLAGS), store="/data/swas.zarr")
    return ds


@pytest.fixture(scope="module")
def level1():
    return make_level1()


@pytest.fixture(scope="module")
def products(level1, tmp_path_factory):
    out = tmp_path_factory.mktemp("level1_out")
    paths = write_products(level1, out, reduction_time=REDUCTION_TIME)
    return out, paths


def _row(level1, missday, segnum, band, position, kind, number):
    """The level-1 coadd (meta dict, ta) that a product name stands for."""
    sel = ((level1.missday == missday) & (level1.segment_number == segnum) & (level1.band == band)
           & (level1.position == position) & (level1.kind == kind)).values
    idx = np.flatnonzero(sel)
    idx = idx[np.argsort(level1.time_start.values[idx], kind="stable")]
    i = idx[0] if kind == "total" else idx[number - 1]
    meta = {name: level1[name].values[i].item() for name in export.REQUIRED_COORDS}
    return meta, level1.ta.values[i]


def parse_name(path):
    """s0506_006_CI_p000_n01.fits -> (506, 6, 'CI', 0, 'nominal', 1)."""
    day, seg, band, pos, tail = path.stem[1:].split("_")
    kind = "total" if tail == "total" else "nominal"
    return int(day), int(seg), band, int(pos[1:]), kind, 0 if kind == "total" else int(tail[1:])


def test_layout(products, level1):
    out, paths = products
    n = level1.sizes["coadd"]
    n_total = int((level1.kind == "total").sum())
    iraf = [p for p in paths if p.parent.name == "iraf"]
    cls = [p for p in paths if p.parent.name == "class"]
    assert len(cls) == n and len(iraf) == n - n_total
    assert not any("total" in p.name for p in iraf)
    assert sorted(p for p in out.rglob("*.fits")) == paths
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary file
    folders = {p.parent.parent.name for p in paths}
    assert folders == {target_folder(s[2]) for s in SEGMENTS}
    assert read_target_index(out) == {target_folder(s[2]): s[2] for s in SEGMENTS}
    # the map segment's two positions have their own products, and both carry a 'total'
    g34 = out / target_folder("G34.3+0.15/A") / "class"
    assert {p.name for p in g34.glob("*CI*")} == {"s0507_003_CI_p000_n01.fits", "s0507_003_CI_p000_total.fits",
                                                  "s0507_003_CI_p001_n01.fits", "s0507_003_CI_p001_total.fits"}
    tsv = (out / TOP_INDEX_NAME).read_text().splitlines()
    assert f"{target_folder('G34.3+0.15/A')}\tG34.3+0.15/A" in tsv


def test_data_and_headers_match_level1(products, level1):
    """Every product holds its coadd's spectrum and the header values the level-1 metadata gives."""
    out, paths = products
    for path in paths:
        day, seg, band, pos, kind, number = parse_name(path)
        meta, ta = _row(level1, day, seg, band, pos, kind, number)
        with fits.open(path) as hdul:
            assert len(hdul) == 1
            h, data = hdul[0].header, hdul[0].data
        flat = data.reshape(-1)
        assert flat.size == N_CHAN and data.dtype == np.dtype(">f4")
        if path.parent.name == "class":
            np.testing.assert_array_equal(flat, ta)  # NaN where no data, bit for bit elsewhere
        else:
            np.testing.assert_array_equal(flat, np.nan_to_num(ta, nan=0.0))
        assert h["NBLANK"] == 3
        assert h["OBJECT"] == meta["object"]
        assert h["TELESCOP"] == f"s{day:03d}{seg:03d} {meta['obsmode']}"
        assert h["OBSTIME"] == pytest.approx(meta["on_time"]) and h["EXPTIME"] == h["OBSTIME"]
        assert h["AZIMUTH"] == pytest.approx(meta["roll"])
        assert h["TSYS"] == pytest.approx(meta["tsys"])
        assert h["RESTFREQ"] == meta["restfreq"] and h["IMAGFREQ"] == meta["imagfreq"]
        assert h["VELO-LSR"] == pytest.approx(meta["vlsr_ref"] * 1000, rel=1e-12)
        assert h["DELTAV"] == pytest.approx(meta["cdelt_vel"] * 1000, rel=1e-12)
        assert h["LINE"] == export.LINE_NAMES[band] and len(h["LINE"]) <= 12
        assert h["DATE"] == REDUCTION_TIME
        assert h["MJD-OBS"] == meta["time_start"] and h["MJD-END"] == meta["time_end"]
        assert h["DATE-OBS"].startswith("19") or h["DATE-OBS"].startswith("20")
        assert (h["EDGECHAN"], h["GOODLO"], h["GOODHI"]) == (28, 29, N_CHAN - 28)
        assert h["COADD"] == kind and h["MAPPOS"] == pos
        assert h["DLAM"] == pytest.approx(meta["dlam"]) and h["DBET"] == pytest.approx(meta["dbet"])
        assert "EPOCH" not in h and h["EQUINOX"] == 2000.0
        assert h["SOFTWARE"] == "skyreduce 0.1.0"
        history = "\n".join(h["HISTORY"])
        assert "check v1 {'gap_drop_scans': 50}" in history
        assert "x" * 60 in history  # long provenance lines are wrapped, not cut
        if meta["segment"] == 506006:
            assert "flag noise: 4/300 flagged" in history and "flag spike: 1/300 flagged" in history
            assert "9/300" not in history  # the other receiver's statistics are not this band's
        elif meta["segment"] == 507003:
            assert "flag noise: 0/200 flagged" in history
        elif meta["segment"] == 506007:
            assert "none recorded for this segment" in history


def test_nominal_coadds_numbered_by_time(products, level1):
    out, _ = products
    folder = out / target_folder("sgra") / "iraf"
    starts = [fits.getheader(folder / f"s0506_006_CI_p000_n0{k}.fits")["MJD-OBS"] for k in (1, 2)]
    assert starts[0] < starts[1]


def _wcs(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _peak_pixel(data):
    """Sub-channel line centre (0-based pixel): Gaussian + constant fitted around the maximum."""
    from scipy.optimize import curve_fit

    flat = np.nan_to_num(np.asarray(data, float).reshape(-1))
    i = int(np.argmax(flat))
    x = np.arange(i - 15, i + 16, dtype=float)
    model = lambda x, a, x0, s, c: a * np.exp(-0.5 * ((x - x0) / s) ** 2) + c  # noqa: E731
    popt, _ = curve_fit(model, x, flat[i - 15:i + 16], p0=(flat[i], i, 2.5, 0.0))
    return float(popt[1])


def test_axes_through_astropy_wcs(products, level1):
    """astropy.wcs reads both flavours to the axes our own computation gives, and the injected line is there."""
    out, paths = products
    for path in paths:
        day, seg, band, pos, kind, number = parse_name(path)
        meta, _ = _row(level1, day, seg, band, pos, kind, number)
        with fits.open(path) as hdul:
            h, data = hdul[0].header, hdul[0].data
        pix = np.arange(N_CHAN, dtype=float)
        v_ours, f_ours = velocity_axis(meta, N_CHAN), frequency_axis(meta, N_CHAN)
        if path.parent.name == "iraf":
            f = _wcs(h).pixel_to_world_values(pix)
            v = WCS(h, key="V").pixel_to_world_values(pix) / 1000.0  # m/s -> km/s
            np.testing.assert_allclose(v, v_ours, rtol=0, atol=1e-9)
            np.testing.assert_allclose(f, f_ours, rtol=1e-15, atol=1e-3)
        else:
            w = _wcs(h)
            offset = w.sub([1]).pixel_to_world_values(pix)
            # CLASS convention: offset from RESTFREQ at CRPIX1, where the velocity is VELO-LSR, and
            # DELTAV = -CDELT1 c / RESTFREQ; so v = VELO-LSR - c offset / RESTFREQ and the LSRK-frame
            # frequency is RESTFREQ (1 - VELO-LSR / c) + offset
            v = h["VELO-LSR"] / 1000 - offset / h["RESTFREQ"] * C_KMS
            f = h["RESTFREQ"] * (1 - h["VELO-LSR"] / 1000 / C_KMS) + offset
            np.testing.assert_allclose(v, v_ours, rtol=0, atol=1e-9)
            np.testing.assert_allclose(f, f_ours, rtol=1e-14, atol=1.0)
            # the GLS celestial axes point at the map offset of this position
            ra, dec = w.sub([2, 3]).pixel_to_world_values(0, 0)
            assert dec == pytest.approx(meta["dec"] + meta["dbet"] / 60, abs=1e-6)
            dra = (ra - meta["ra"]) * np.cos(np.radians(dec))
            assert dra == pytest.approx(meta["dlam"] / 60, abs=1e-6)
        peak = _peak_pixel(data)
        v_peak = meta["vlsr_ref"] + (peak + 1 - meta["crpix"]) * meta["cdelt_vel"]
        assert v_peak == pytest.approx(LINE_V, abs=0.05 * abs(meta["cdelt_vel"]))
        f_line = meta["restfreq"] * (1 - LINE_V / C_KMS)
        f_peak = meta["freq_ref"] + (peak + 1 - meta["crpix"]) * meta["cdelt_freq"]
        assert f_peak == pytest.approx(f_line, abs=0.05 * abs(meta["cdelt_freq"]))


def test_usb_and_lsb_axes_run_opposite(products):
    out, _ = products
    folder = out / target_folder("sgra") / "iraf"
    usb = fits.getheader(folder / "s0506_006_CI_p000_n01.fits")
    lsb = fits.getheader(folder / "s0506_006_O2_p000_n01.fits")
    assert usb["CDELT1"] > 0 > lsb["CDELT1"]  # frequency rises with channel in USB, falls in LSB
    assert usb["CDELT1V"] < 0 < lsb["CDELT1V"]


# ------------------------------------------------------------------------------------ CLASS structure

CLASS_OMITTED = {  # keywords of the real CLASS file we deliberately leave out, and why
    "BLOCKED", "BLANK", "BSCALE", "BZERO",  # float32 data with NaN blanks, not scaled int16
    "CROTA3",  # malformed in the real file, no rotation here
    "ELEVATIO", "LST",  # meaningless in orbit (roll goes into AZIMUTH)
    "DATE-RED",  # the reduction time is DATE alone (re-runs differ in one keyword)
    "GAINIMAG", "BEAMEFF", "FORWEFF",  # not known at level 1: Ta* is not corrected
}


@pytest.mark.filterwarnings("ignore:Header block contains null bytes")
def test_class_flavour_structure_like_real_class_file(products, reference_dir):
    real = fits.getheader(reference_dir / "class" / "10074-190_HCOp.fits", ignore_missing_end=True)
    out, paths = products
    for path in [p for p in paths if p.parent.name == "class"]:
        h = fits.getheader(path)
        missing = {k for k in real if k not in h and k not in ("", "HISTORY", "COMMENT")} - CLASS_OMITTED
        assert not missing, f"{path.name} lacks CLASS keywords {missing}"
        assert h["NAXIS"] == real["NAXIS"] == 4
        assert h["NAXIS1"] == N_CHAN and h["NAXIS2"] == h["NAXIS3"] == h["NAXIS4"] == 1
        for k in ("CTYPE1", "CTYPE2", "CTYPE3", "CTYPE4", "BUNIT"):
            assert h[k] == real[k].strip(), k
        assert h["CRVAL1"] == real["CRVAL1"] == 0.0
        assert all(h[f"CDELT{i}"] != 0 for i in (1, 2, 3, 4))  # unlike the real file: fitsverify-clean
        # CLASS relation between the frequency and velocity steps, true in the real file and in ours
        for hdr in (real, h):
            assert hdr["DELTAV"] == pytest.approx(-hdr["CDELT1"] * C_KMS * 1000 / hdr["RESTFREQ"], rel=1e-6)
        assert abs(h["IMAGFREQ"] - h["RESTFREQ"]) == pytest.approx(2 * abs(h["LOFREQ"] - h["RESTFREQ"]), rel=0.01)
        assert h["TSYS"] > 0 and h["OBSTIME"] > 0
        assert isinstance(h["SCAN-NUM"], float) and h["ORIGIN"] == "skyreduce"
        assert h["UT"].startswith(" ") and h["DATE-OBS"][11:] == h["UT"][1:]


def test_totals_only_in_class(products, level1):
    out, paths = products
    totals = [p for p in paths if p.name.endswith("_total.fits")]
    assert totals and all(p.parent.name == "class" for p in totals)
    for p in totals:
        h = fits.getheader(p)
        assert h["COADD"] == "total" and h["COADDNUM"] == 0
    # the total of a band/position carries all of its ON time
    folder = out / target_folder("sgra") / "class"
    total = fits.getheader(folder / "s0506_006_CI_p000_total.fits")["OBSTIME"]
    nominal = sum(fits.getheader(folder / f"s0506_006_CI_p000_n0{k}.fits")["OBSTIME"] for k in (1, 2))
    assert total == pytest.approx(nominal)


# ------------------------------------------------------------------------------------ fitsverify


def _fitsverify(paths):
    exe = require_tool("fitsverify")
    bad = []
    for path in paths:
        res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
        text = res.stdout + res.stderr
        found = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", text)
        if found is None or found.groups() != ("0", "0"):
            bad.append(f"{path.name}:\n{text}")
    return bad


@pytest.mark.tools
def test_fitsverify_clean(products):
    out, paths = products
    bad = _fitsverify(paths)
    assert not bad, "\n".join(bad)


@pytest.mark.tools
def test_fitsverify_flags_the_real_class_file(reference_dir):
    """The check can fail: the real CLASS file is not clean (zero CDELTs etc.)."""
    bad = _fitsverify([reference_dir / "class" / "10074-190_HCOp.fits"])
    assert bad


# ------------------------------------------------------------------------------------ re-runs, atomicity


def _strip_date(raw: bytes) -> bytes:
    cards = [raw[i:i + 80] for i in range(0, len(raw), 80)]
    return b"".join(c for c in cards if not c.startswith(b"DATE    ="))


def test_rerun_identical_apart_from_date(level1, products, tmp_path):
    out, paths = products
    again = write_products(level1, tmp_path, reduction_time="2030-01-02T03:04:05")
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(out) for p in paths]
    for a, b in zip(paths, again):
        ra, rb = a.read_bytes(), b.read_bytes()
        assert len(ra) == len(rb)
        assert ra != rb  # DATE differs ...
        assert _strip_date(ra) == _strip_date(rb)  # ... and nothing else
        assert fits.getheader(b)["DATE"] == "2030-01-02T03:04:05"
    for name in (TOP_INDEX_NAME,):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes()
    for folder in read_target_index(out):
        assert (out / folder / INDEX_NAME).read_bytes() == (tmp_path / folder / INDEX_NAME).read_bytes()


def test_rerun_in_place_same_bytes(level1, tmp_path):
    first = write_products(level1, tmp_path, reduction_time=REDUCTION_TIME)
    snap = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = write_products(level1, tmp_path, reduction_time=REDUCTION_TIME)
    assert first == second
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snap


def test_default_reduction_time_from_attrs(level1, tmp_path):
    ds = level1.isel(coadd=[0])
    ds.attrs["reduction_time"] = "2027-05-06T07:08:09+00:00"
    (path,) = [p for p in write_products(ds, tmp_path)]
    assert fits.getheader(path)["DATE"] == "2027-05-06T07:08:09"


def test_failed_write_leaves_old_product_and_no_temp(level1, tmp_path, monkeypatch):
    paths = write_products(level1, tmp_path, reduction_time=REDUCTION_TIME)
    before = paths[0].read_bytes()

    def boom(self, fileobj, **kwargs):
        Path(fileobj).write_bytes(b"SIMPLE  =   half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    failures = []
    assert write_products(level1, tmp_path, reduction_time="2031-01-01T00:00:00", failures=failures) == []
    assert len(failures) == level1.sizes["coadd"] and all("disk full" in why for _, why in failures)
    assert paths[0].read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_unusable_coadd_reported_rest_written(level1, tmp_path, caplog):
    ds = level1.copy(deep=True)
    tsys = ds.tsys.values.copy()
    tsys[(ds.segment == 506007).values] = np.nan  # an uncalibrated segment must give no product
    ds = ds.assign_coords(tsys=("coadd", tsys))
    failures = []
    with caplog.at_level(logging.ERROR, logger="reduce.swas.export"):
        paths = write_products(ds, tmp_path, reduction_time=REDUCTION_TIME, failures=failures)
    assert failures and all(seg == 506007 for seg, _ in failures)
    assert "0506_007" in caplog.text and "tsys" in caplog.text
    assert not [p for p in paths if "s0506_007" in p.name]
    assert [p for p in paths if "s0506_006" in p.name]


def test_duplicate_total_refused(level1, tmp_path):
    totals = np.flatnonzero((level1.kind == "total").values & (level1.segment == 506006).values)
    ds = level1.isel(coadd=[*totals, totals[0]])  # the same 'total' twice
    failures = []
    paths = write_products(ds, tmp_path, reduction_time=REDUCTION_TIME, failures=failures)
    assert len(paths) == len(totals) and len(failures) == 1 and "second" in failures[0][1]


def test_missing_variable_named(level1, tmp_path):
    with pytest.raises(ReduceError, match="tsys"):
        write_products(level1.drop_vars("tsys"), tmp_path)


def test_empty_level1_writes_nothing(level1, tmp_path):
    assert write_products(level1.isel(coadd=slice(0, 0)), tmp_path) == []


# ------------------------------------------------------------------------------------ target folders


def test_target_folders_distinct_and_safe():
    names = ["sgra", "sgra-150", "SGRA", "SGRA-150", "OMC-1", "omc-1", "Omc-1", "G34.3+0.15/A", "G34.3+0.15_A",
             "G34.3+0.15 A", "IC443B-60", "W3(OH)", "a b", "a_b", "a/b", "a\\b", "..", ".", "-x", "CON", "nul.txt",
             "x" * 200, "x" * 201, "ρ Oph", "name~1", "'quoted'", "C*", "a:b", 'a"b', "a|b", "a?b", "a<b>", "TAB\tX"]
    folders = [target_folder(n) for n in names]
    assert len({f.lower() for f in folders}) == len(names)  # distinct even on case-insensitive filesystems
    for f in folders:
        assert f == f.lower() and 0 < len(f) <= 64 and "/" not in f and "\\" not in f
        assert f not in (".", "..") and f[0] not in ".-" and not f.endswith(".")
        assert f.split(".")[0] not in ("con", "nul", "prn", "aux")
        assert all(c.isascii() and (c.isalnum() or c in ".+-_~") for c in f)
    assert target_folder("OMC-1") == "omc-1" and target_folder("SGRA-150") == "sgra-150"
    assert target_folder("G34.3+0.15/A").startswith("g34.3+0.15_a~")
    assert target_folder("sgra") != target_folder("sgra-150")
    assert target_folder("G34.3+0.15/A") == target_folder("G34.3+0.15/A")  # deterministic


def test_target_index_round_trip(tmp_path):
    names = ["sgra", "sgra-150", "G34.3+0.15/A", "ρ Oph", "a\tb", '"x"', "OMC-1"]
    for n in names:
        folder = write_target_index(tmp_path, n)
        assert folder.parent == tmp_path and folder.is_dir()  # 'G34.3+0.15/A' is ONE folder
        assert target_name(folder) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(target_folder(n) for n in names)
    assert read_target_index(tmp_path) == {target_folder(n): n for n in names}
    lines = write_top_index(tmp_path).read_text("ascii").splitlines()[1:]
    back = {}
    for line in lines:
        folder, name = line.split("\t", 1)
        back[folder] = json.loads(name) if name.startswith('"') else name
    assert back == {target_folder(n): n for n in names}


def test_target_index_collision_refused(tmp_path):
    folder = write_target_index(tmp_path, "G34.3+0.15/A")
    (folder / INDEX_NAME).write_text(json.dumps({"object": "someone else"}))
    with pytest.raises(ReduceError, match="someone else"):
        write_target_index(tmp_path, "G34.3+0.15/A")


@pytest.mark.tools
def test_odd_target_name_product(level1, tmp_path):
    """A name with non-ASCII, quotes, a slash and spaces: one safe folder, the exact name in the index,
    a printable-ASCII OBJECT in the FITS header, and still a clean FITS file."""
    name = "ρ Oph/B 'A'  ~x"  # (astropy misreads a '' followed later by ' /': kept out of this test)
    ds = level1.isel(coadd=[0, 1])
    ds = ds.assign_coords(object=("coadd", np.array([name, name], dtype=object)))
    paths = write_products(ds, tmp_path, reduction_time=REDUCTION_TIME)
    (folder,) = {p.parent.parent for p in paths}
    assert folder.parent == tmp_path and folder.name == target_folder(name)
    assert target_name(folder) == name and read_target_index(tmp_path) == {folder.name: name}
    for p in paths:
        assert fits.getheader(p)["OBJECT"] == "? Oph/B 'A'  ~x"
    assert not _fitsverify(paths)
