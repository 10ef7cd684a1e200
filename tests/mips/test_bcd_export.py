"""SSC-style MIPS BCD FITS export: names, headers, fitsverify, WCS vs wcstools, round trip,
the hand-written FITS bytes against astropy.io.fits."""
import io
import json
import re
import subprocess
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from conftest import HalfThenDiskFull, require_tool
from reduce.errors import CalibrationError
from reduce.mips import bcd_export as bx
from reduce.mips import bcd_reader as br
from reduce.mips.calib import load_calibration
from reduce.mips.kernels.wcs import wcs_header
from reduce.simulate.mips_cal import write_calibration

MASK_BITS = {"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8, "saturated": 16, "cosmic_ray": 32,
             "invalid": 64, "too_few_reads": 128, "no_good_segment": 256, "no_responsivity": 512}
VERSION = "1"
CHANNELS = [1, 2, 3]
# (ra_ref, dec_ref, pa_ref): ordinary, across RA = 0, near the pole
POINTINGS = [(83.8221, -5.3911, 71.0), (359.9995, 10.25, 250.5), (271.0, 86.5, 123.4),
             (150.1, 2.2, 0.0)]
IRAC = "spitzer/irac-hd209458/SPITZER_I1_41629440_0000_0000_1_bcd.fits"


@pytest.fixture(scope="module")
def cals(tmp_path_factory):
    root = tmp_path_factory.mktemp("mipscal")
    write_calibration(root)
    return {c: load_calibration(root / "cal", c) for c in CHANNELS}


def make_wcs(distortion, ra_ref, dec_ref, pa_ref):
    """The DCE's WCS as an astropy object (reduce.mips.kernels.wcs: ``WCS(wcs_header(...))``)."""
    return WCS(wcs_header(distortion, ra_ref, dec_ref, pa_ref), relax=True)


def make_bcd(cal, *, status=("ok", "ok", "too few reads (3 < 4)", "ok"), seed=1):
    """A small BCD Dataset of one array, laid out as notes/mips_bcd.md says."""
    rng = np.random.default_rng(seed + cal.chnlnum)
    n = len(status)
    ny, nx = cal.shape
    bcd = rng.normal(20.0, 3.0, (n, ny, nx)).astype(np.float32)
    bcd[:, 0, 1] = np.nan
    unc = rng.uniform(0.1, 1.0, (n, ny, nx)).astype(np.float32)
    mask = np.zeros((n, ny, nx), np.uint16)
    for v in MASK_BITS.values():
        mask |= (rng.random((n, ny, nx)) < 0.1).astype(np.uint16) * v
    for k, s in enumerate(status):
        if s != "ok":
            bcd[k] = unc[k] = np.nan
    ra, dec, pa = np.array(POINTINGS[:n]).T
    t0 = 53400.0 + cal.chnlnum
    coords = {
        "aorkey": ("dce", np.full(n, 12345678 + cal.chnlnum, np.int64)),
        "expid": ("dce", np.arange(n, dtype=np.int32) // 2),
        "dcenum": ("dce", np.arange(n, dtype=np.int32) % 2 + 7),
        "dceid": ("dce", np.arange(n, dtype=np.int64) + 1_000_000 * cal.chnlnum),
        "aot_type": ("dce", np.array(["MipsPhot"] * n)),
        "object": ("dce", np.array(["NGC 1234"] * n)),
        "progid": ("dce", np.full(n, 40, np.int32)),
        "exptime": ("dce", np.full(n, 2.62144 if cal.chnlnum > 1 else 9.96, np.float32)),
        "samptime": ("dce", np.full(n, 0.131072 if cal.chnlnum > 1 else 0.524288, np.float32)),
        "nreads": ("dce", np.full(n, 24 if cal.chnlnum > 1 else 20, np.int16)),
        "time": ("dce", t0 + np.arange(n) * 0.000123456789),
        "sclk": ("dce", 7.5e8 + np.arange(n) * 10.0),
        "ra_rqst": ("dce", ra + 1e-4), "dec_rqst": ("dce", dec - 1e-4),
        "ra_ref": ("dce", ra), "dec_ref": ("dce", dec), "pa_ref": ("dce", pa),
        "calvers": ("dce", np.array(["sim-1"] * n)),
        "calset": ("dce", np.zeros(n, np.int16)),
        "source_file": ("dce", np.array([f"raw/SPITZER_M{cal.chnlnum}_x_{k:04d}_raw.fits"
                                         for k in range(n)])),
        "status": ("dce", np.array(status)),
    }
    data = {"bcd": (("dce", "y", "x"), bcd, {"units": "MJy/sr"}),
            "unc": (("dce", "y", "x"), unc, {"units": "MJy/sr"}),
            "mask": (("dce", "y", "x"), mask)}
    if cal.chnlnum == 1:
        for k, name in enumerate(("slope", "difference", "replaced")):
            data[name] = (("dce", "y", "x"), (bcd / cal.fluxconv + k).astype(np.float32),
                          {"units": "DN/s"})
    else:
        coords["stimflsh"] = ("dce", (np.arange(n) % 2).astype(np.int8))
        data["responsivity"] = ("dce", np.linspace(0.98, 1.02, n).astype(np.float32))
        data["ncr"] = (("dce", "y", "x"), (rng.random((n, ny, nx)) < 0.05).astype(np.int16))
    dist = {k: cal.distortion[k] for k in cal.distortion
            if re.match(r"^(PXSCAL|CRPIX|A_|B_)", k)}
    attrs = {"chnlnum": cal.chnlnum, "band_um": cal.band, "fluxconv": cal.fluxconv * 1.0,
             "pipeline_version": VERSION,
             "calibration": json.dumps([{"name": f.name, "sha256": f.sha256, "calvers": f.calvers}
                                        for f in cal.files]),
             "history": json.dumps([json.dumps({"step": "dark", "params": {"scale": 1.0},
                                                "files": [f"{f.name} {f.sha256}" for f in cal.files]}),
                                    json.dumps({"step": "flat", "params": {}})]),
             "distortion": json.dumps(dist)}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def expected_names(ds):
    out = []
    for k in range(ds.sizes["dce"]):
        if str(ds.status.values[k]) != "ok":
            continue
        base = (f"SPITZER_M{ds.attrs['chnlnum']}_{int(ds.aorkey[k])}_{int(ds.expid[k]):04d}_"
                f"{int(ds.dcenum[k]):04d}_{VERSION}")
        out += [f"{base}_bcd.fits", f"{base}_bunc.fits", f"{base}_bbmsk.fits"]
        if ds.attrs["chnlnum"] == 1:
            out.append(f"{base}_bsdr.fits")
    return out


@pytest.fixture(scope="module")
def exported(cals, tmp_path_factory):
    """{chnl: (dataset, out_dir, paths)} written once per array."""
    out = {}
    for c in CHANNELS:
        ds = make_bcd(cals[c])
        d = tmp_path_factory.mktemp(f"bcd{c}")
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # no astropy card/verify warnings
            paths = bx.write_bcd_files(ds, d, calibration=cals[c], version=VERSION,
                                       mask_bits=MASK_BITS)
        out[c] = (ds, d, paths)
    return out


def _ok(ds):
    return [k for k in range(ds.sizes["dce"]) if str(ds.status.values[k]) == "ok"]


@pytest.mark.parametrize("chnl", CHANNELS)
def test_file_names_and_skipped_dces(exported, chnl):
    ds, d, paths = exported[chnl]
    assert [p.name for p in paths] == expected_names(ds)
    assert sorted(p.name for p in d.iterdir()) == sorted(expected_names(ds))   # no temp files
    assert not any("_0001_0007_" in p.name for p in paths)        # DCE 2 (status not ok)
    assert len(paths) == (4 if chnl == 1 else 3) * 3


@pytest.mark.parametrize("chnl", CHANNELS)
def test_header_values(exported, cals, chnl):
    ds, d, paths = exported[chnl]
    cal = cals[chnl]
    by_name = {p.name: p for p in paths}
    for k in _ok(ds):
        base = expected_names(ds.isel(dce=[k]))[0][:-len("_bcd.fits")]
        for suffix in ("bcd", "bunc", "bbmsk"):
            h = fits.getheader(by_name[f"{base}_{suffix}.fits"])
            assert h["TELESCOP"] == "Spitzer" and h["INSTRUME"] == "MIPS"
            assert h["CHNLNUM"] == chnl and type(h["CHNLNUM"]) is int
            assert h["AORKEY"] == int(ds.aorkey[k]) and type(h["AORKEY"]) is int
            assert h["EXPID"] == int(ds.expid[k]) and h["DCENUM"] == int(ds.dcenum[k])
            assert h["DCEID"] == int(ds.dceid[k])
            assert h["MJD_OBS"] == float(ds.time[k])                      # exact double
            assert Time(h["DATE_OBS"], scale="utc").mjd == pytest.approx(float(ds.time[k]),
                                                                         abs=1e-8)
            assert np.float32(h["EXPTIME"]) == ds.exptime.values[k]         # exact float32
            assert h["RA_REF"] == float(ds.ra_ref[k]) and h["PA_REF"] == float(ds.pa_ref[k])
            assert h["RA_RQST"] == float(ds.ra_rqst[k])
            assert h["CRVAL1"] == float(ds.ra_ref[k]) and h["CRVAL2"] == float(ds.dec_ref[k])
            assert h["CTYPE1"] == "RA---TAN-SIP" and h["CTYPE2"] == "DEC--TAN-SIP"
            for key in ("A_ORDER", "B_ORDER", "CRPIX1", "CRPIX2", "PXSCAL1", "PXSCAL2"):
                assert h[key] == cal.distortion[key]
            sip = [key for key in cal.distortion if re.match(r"^[AB]_\d_\d$", key)]
            assert sip and all(h[key] == cal.distortion[key] for key in sip)
            assert h["OBJECT"] == "NGC 1234" and h["AOT_TYPE"] == "MipsPhot"
            assert h["CREATOR"] == f"skyreduce {VERSION}" and h["PIPEVERS"] == VERSION
            assert h["RAWFILE"] == f"SPITZER_M{chnl}_x_{k:04d}_raw.fits"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["DATE"])
            # every calibration file, by name and SHA-256
            for f in cal.files:
                key = f.reftype[:6]
                assert h[f"CF{key}"] == f.name
                assert h[f"CS{key}"[:8]] == f.sha256
            hist = "".join(str(x) for x in h["HISTORY"])       # 72-character pieces
            steps = [json.loads(e) for e in json.loads(ds.attrs["history"])]
            text = "".join(f"{e.pop('step')}: {json.dumps(e, sort_keys=True)}" for e in steps)
            assert hist == text + f"bcd_export: SSC-style BCD FITS, skyreduce {VERSION}"
            if suffix != "bbmsk":
                assert h["BUNIT"] == "MJy/sr"
                assert h["FLUXCONV"] == ds.attrs["fluxconv"]
            if chnl > 1 and suffix == "bcd":
                assert np.float32(h["RESPONS"]) == ds.responsivity.values[k]
                assert h["STIMFLSH"] == int(ds.stimflsh[k])
                assert h["NCRHITS"] == int(ds.ncr.values[k].sum())


@pytest.mark.tools
@pytest.mark.parametrize("chnl", CHANNELS)
def test_fitsverify_clean(exported, chnl):
    fitsverify = require_tool("fitsverify")
    _, _, paths = exported[chnl]
    for p in paths:
        out = subprocess.run([fitsverify, str(p)], capture_output=True, text=True).stdout
        assert "Verification found 0 warning(s) and 0 error(s)" in out, out


@pytest.mark.tools
@pytest.mark.parametrize("chnl", CHANNELS)
def test_wcs_astropy_agrees_with_xy2sky(exported, cals, chnl):
    xy2sky = require_tool("xy2sky")
    ds, _, paths = exported[chnl]
    ny, nx = cals[chnl].shape
    pix = [(1, 1), (nx, ny), (1, ny), (nx, 1), (nx / 2, ny / 5), (0.5, 0.5), (nx + 0.5, ny + 0.5)]
    xs, ys = np.array(pix, float).T
    worst = 0.0
    for p in paths:
        if p.name.endswith("_bsdr.fits"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # astropy takes our header as it is
            w = WCS(fits.getheader(p))
        assert w.naxis == 2 and w.sip is not None
        out = subprocess.run([xy2sky, "-d", "-n", "9", str(p)] + [f"{v}" for q in pix for v in q],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        rows = [r.split() for r in out if r.strip()]
        assert len(rows) == len(pix), out
        theirs = SkyCoord([float(r[0]) for r in rows], [float(r[1]) for r in rows], unit="deg")
        sep = w.pixel_to_world(xs - 1, ys - 1).separation(theirs).arcsec
        worst = max(worst, sep.max())
        # and the SIP terms matter at this level (a reader ignoring them would fail)
        nosip = w.deepcopy()
        nosip.sip = None
        assert nosip.pixel_to_world(xs - 1, ys - 1).separation(theirs).arcsec.max() > 0.01
    assert worst < 0.01


@pytest.mark.parametrize("chnl", CHANNELS)
def test_round_trip_through_reader(exported, cals, chnl):
    ds, _, paths = exported[chnl]
    cal = cals[chnl]
    bcds = [p for p in paths if p.name.endswith("_bcd.fits")]
    for k, p in zip(_ok(ds), bcds, strict=True):
        mask_path = p.with_name(p.name.replace("_bcd", "_bbmsk"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            b = br.read_bcd_products(p, mask=mask_path)
            for q in (p, mask_path, p.with_name(p.name.replace("_bcd", "_bunc"))):
                with fits.open(q, checksum=True) as hdul:          # DATASUM verified
                    assert hdul[0].header["DATASUM"] != "0"
        assert b.unit == u.MJy / u.sr
        np.testing.assert_array_equal(b.data, ds.bcd.values[k])          # NaNs in place
        np.testing.assert_array_equal(b.uncertainty, ds.unc.values[k])
        np.testing.assert_array_equal(b.mask, ds.mask.values[k])
        assert b.mask.dtype == np.int16                                    # like the real _bimsk
        assert bx.mask_names(b.mask_bits) == MASK_BITS                    # BITnn legend
        # the WCS is the one of reduce.mips.kernels.wcs for this DCE's pointing
        ref = make_wcs(cal.distortion, float(ds.ra_ref[k]), float(ds.dec_ref[k]),
                       float(ds.pa_ref[k]))
        ny, nx = cal.shape
        y, x = np.mgrid[-0.5:ny - 0.5:5j, -0.5:nx - 0.5:6j]
        assert b.wcs.pixel_to_world(x, y).separation(ref.pixel_to_world(x, y)).arcsec.max() < 1e-6
        assert b.wcs.sip is not None
        c = b.wcs.pixel_to_world(cal.distortion["CRPIX1"] - 1, cal.distortion["CRPIX2"] - 1)
        assert c.separation(SkyCoord(float(ds.ra_ref[k]), float(ds.dec_ref[k]),
                                     unit="deg")).arcsec < 1e-6
        if chnl == 1:
            with fits.open(p.with_name(p.name.replace("_bcd", "_bsdr"))) as hd:
                assert [h.name for h in hd] == ["PRIMARY", "SLOPE", "DIFFERENCE", "REPLACED"]
                for name in ("slope", "difference", "replaced"):
                    np.testing.assert_array_equal(hd[name.upper()].data, ds[name].values[k])
                    assert hd[name.upper()].header["BUNIT"] == "DN/s"


def test_mask_legend_style_like_real_bimsk(exported, reference_dir):
    real = fits.getheader(reference_dir / IRAC.replace("_bcd", "_bimsk"))
    _, _, paths = exported[2]
    ours = fits.getheader(next(p for p in paths if p.name.endswith("_bbmsk.fits")))
    for h in (real, ours):
        bits = {c.keyword: c for c in h.cards if re.fullmatch(r"BIT\d\d", c.keyword)}
        assert bits and all(type(c.value) is int and c.value == 2**int(k[3:])
                            for k, c in bits.items())
        assert all(c.comment for c in bits.values())
        assert h["PROCBITS"] & ~sum(c.value for c in bits.values()) == 0   # processed bits
        assert h["BITPIX"] == 16 and "BZERO" not in h
    assert ours["PROCBITS"] == sum(MASK_BITS.values())
    assert br.mask_legend(ours)[5] == "cosmic_ray: Set if radhit detected"


def test_keywords_like_real_irac_bcd(exported, reference_dir):
    """The SSC keywords of a real IRAC BCD that apply to MIPS are in ours, with the same types."""
    real = fits.getheader(reference_dir / IRAC)
    keys = ["ORIGIN", "CREATOR", "TELESCOP", "INSTRUME", "CHNLNUM", "EXPTYPE", "AOT_TYPE",
            "PROGID", "DATE_OBS", "MJD_OBS", "SCLK_OBS", "SAMPTIME", "EXPTIME", "OBJECT",
            "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "RADESYS", "EQUINOX", "CD1_1", "CD1_2",
            "CD2_1", "CD2_2", "CTYPE1", "CTYPE2", "PXSCAL1", "PXSCAL2", "PA", "RA_RQST",
            "DEC_RQST", "RA_REF", "DEC_REF", "A_ORDER", "B_ORDER", "BUNIT", "FLUXCONV", "GAIN",
            "DATE", "AORKEY", "EXPID", "DCENUM", "DCEID", "RAWFILE"]
    for c in CHANNELS:
        _, _, paths = exported[c]
        ours = fits.getheader(paths[0])
        for key in keys:
            assert key in real, key                        # the list is of real SSC keywords
            assert key in ours, key
            kind = lambda v: "str" if isinstance(v, str) else type(v).__name__  # noqa: E731
            assert kind(ours[key]) == kind(real[key]) or (
                isinstance(real[key], float) and isinstance(ours[key], (int, float))), key
        for key in ("CTYPE1", "CTYPE2", "BUNIT", "RADESYS", "TELESCOP"):
            assert str(ours[key]).strip() == str(real[key]).strip()
        assert ours["BITPIX"] == real["BITPIX"] == -32


def test_rewrite_is_byte_identical_and_atomic(cals, tmp_path, monkeypatch):
    cal = cals[3]
    ds = make_bcd(cal)
    a = bx.write_bcd_files(ds, tmp_path / "a", calibration=cal, version=VERSION,
                           mask_bits=MASK_BITS)
    monkeypatch.setattr(bx, "BLOCK", 2)                    # lazy input, loaded in blocks
    b = bx.write_bcd_files(ds.chunk({"dce": 1}), tmp_path / "b", calibration=cal,
                           version=VERSION, mask_bits=MASK_BITS)
    assert [p.name for p in a] == [p.name for p in b]

    def no_date(p):
        raw = p.read_bytes()
        cards = [raw[i:i + 80] for i in range(0, len(raw), 80)]
        return [c for c in cards if not c.startswith(b"DATE    =")]

    for pa, pb in zip(a, b):
        assert no_date(pa) == no_date(pb), pa.name
        assert len(pa.read_bytes()) == len(pb.read_bytes())
    # a failing write leaves the earlier file and no temporary behind
    before = {p.name: p.read_bytes() for p in b}
    import reduce.io.atomic
    monkeypatch.setattr(reduce.io.atomic, "open", HalfThenDiskFull, raising=False)
    with pytest.raises(OSError, match="disk full"):
        bx.write_bcd_files(ds, tmp_path / "b", calibration=cal, version=VERSION,
                           mask_bits=MASK_BITS)
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before


def test_mask_bits_from_the_dataset(cals, tmp_path):
    cal = cals[2]
    ds = make_bcd(cal, status=("ok",))
    ds.attrs["mask_bits"] = json.dumps(MASK_BITS)
    paths = bx.write_bcd_files(ds, tmp_path, calibration=cal, version="0.3+dev")
    assert paths[0].name == "SPITZER_M2_12345680_0000_0007_0.3-dev_bcd.fits"
    _, legend = br.read_mask(paths[2])
    assert bx.mask_names(legend) == MASK_BITS
    del ds.attrs["mask_bits"]
    ds["mask"].attrs.update(flag_masks=list(MASK_BITS.values()),
                            flag_meanings=" ".join(MASK_BITS))
    assert bx.resolve_mask_bits(ds) == MASK_BITS
    del ds["mask"].attrs["flag_masks"]
    from reduce.schemas import load_schema
    try:
        schema_bits = load_schema("mips_bcd")["mask_bits"]
    except Exception:                                    # noqa: BLE001 - schema not there yet
        return
    assert bx.resolve_mask_bits(ds) == schema_bits      # the pipeline's legend, by default


def test_bad_inputs_are_refused(cals, tmp_path):
    ds = make_bcd(cals[2])
    with pytest.raises(CalibrationError, match="CHNLNUM=2 but the calibration set is CHNLNUM=3"):
        bx.write_bcd_files(ds, tmp_path, calibration=cals[3], version=VERSION,
                           mask_bits=MASK_BITS)
    bad = ds.copy()
    files = json.loads(bad.attrs["calibration"])
    files[0]["sha256"] = "0" * 64
    bad.attrs["calibration"] = json.dumps(files)
    with pytest.raises(CalibrationError, match=rf"{files[0]['name']}: .*mismatched reference"):
        bx.write_bcd_files(bad, tmp_path, calibration=cals[2], version=VERSION,
                           mask_bits=MASK_BITS)
    with pytest.raises(ValueError, match="not a power of two"):
        bx.write_bcd_files(ds, tmp_path, calibration=cals[2], version=VERSION,
                           mask_bits={"dead": 3})
    short = {k: v for k, v in MASK_BITS.items() if k != "cosmic_ray"}
    with pytest.raises(ValueError, match=r"SPITZER_M2_12345680_0000_0007_1: mask uses bits \[5\]"):
        bx.write_bcd_files(ds, tmp_path, calibration=cals[2], version=VERSION, mask_bits=short)
    nopoint = ds.copy(deep=True)
    nopoint["ra_ref"].values[1] = np.nan
    paths = bx.write_bcd_files(nopoint, tmp_path / "np", calibration=cals[2], version=VERSION,
                               mask_bits=MASK_BITS)
    assert len(paths) == 6 and "_0000_0008_" not in " ".join(p.name for p in paths)


@pytest.mark.tools
def test_mask_with_bit_15_is_unsigned(cals, tmp_path):
    """A legend using bit 15 needs the unsigned-int16 convention (BZERO = 32768)."""
    fitsverify = require_tool("fitsverify")
    cal = cals[3]
    ds = make_bcd(cal, status=("ok",))
    bits = dict(MASK_BITS, latent=1 << 15)
    ds["mask"].values[0, 1, :] |= 1 << 15
    paths = bx.write_bcd_files(ds, tmp_path, calibration=cal, version=VERSION, mask_bits=bits)
    mask, legend = br.read_mask(paths[2])
    assert mask.dtype == np.uint16 and fits.getheader(paths[2])["BZERO"] == 32768
    np.testing.assert_array_equal(mask, ds.mask.values[0])
    assert bx.mask_names(legend) == bits and legend[15] == "latent: Set if latent"
    out = subprocess.run([fitsverify, str(paths[2])], capture_output=True, text=True).stdout
    assert "Verification found 0 warning(s) and 0 error(s)" in out, out


def test_reader_finds_the_bbmsk_companion(exported):
    _, _, paths = exported[1]
    unc, mask = br.companion_paths(paths[0])
    assert unc == paths[1] and mask == paths[2]


def test_history_cards_join_back_to_the_line():
    rng = np.random.default_rng(5)
    for alphabet in ("ab ", 'abcxyz {}":,', "a"):
        for _ in range(300):
            words = ["".join(rng.choice(list(alphabet), rng.integers(0, 150)))
                     for _ in range(rng.integers(1, 6))]
            line = " ".join(words).rstrip()
            cards = bx._history(line)
            assert all(len(c) == 80 and c.startswith("HISTORY ") for c in cards)
            assert "".join(fits.Card.fromstring(c).value for c in cards) == line


# ---------------------------------------------------------------- the hand-written bytes vs astropy
# bcd_export serialises the FITS files itself (benchmarks/bench_bcd_export.py: astropy.io.fits
# would be most of the export's time); these tests hold every file it writes to what astropy
# writes for the same HDUs.
@pytest.fixture(scope="module")
def written_hdus(cals, tmp_path_factory):
    """[(path, [bx.Hdu]: what the exporter serialised into it)] for every file of every array
    (skipped DCEs, a lazy input) and of a mask that needs the unsigned convention (bit 15)."""
    seen = []
    original = bx._write_file

    def spy(hdus, path):
        seen.append((path, hdus))
        return original(hdus, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bx, "_write_file", spy)
        for c in CHANNELS:
            ds = make_bcd(cals[c])
            bx.write_bcd_files(ds.chunk({"dce": 2}) if c == 2 else ds, tmp_path_factory.mktemp(f"ap{c}"),
                               calibration=cals[c], version=VERSION, mask_bits=MASK_BITS)
        ds = make_bcd(cals[3], status=("ok",))
        ds["mask"].values[0, 0, :] |= 1 << 15
        bx.write_bcd_files(ds, tmp_path_factory.mktemp("ap16"), calibration=cals[3], version=VERSION,
                           mask_bits=dict(MASK_BITS, latent=1 << 15))
    assert len(seen) == 3 * 4 + 2 * 3 * 3 + 3
    return seen


def astropy_hdus(hdus):
    """The same HDUs built with astropy: each header (structural cards, cards, DATASUM in its
    place) card by card from (keyword, value, comment), the same data array; astropy then sets
    the structure from the data itself (BITPIX, NAXISn, BSCALE/BZERO, EXTEND)."""
    out = []
    for h in hdus:
        head, tail, _ = bx.structure(h)
        cards = [fits.Card.fromstring(c) for c in head + bx.with_datasum(h.cards, 0) + tail]
        header = fits.Header([fits.Card(c.keyword, c.value, c.comment) for c in cards])
        out.append(fits.PrimaryHDU(h.data, header) if h.primary else fits.ImageHDU(h.data, header))
    return fits.HDUList(out)


def astropy_bytes(hdus):
    """What ``HDUList.writeto(checksum=True)`` writes for ``hdus`` (verified, no warnings)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        astropy_hdus(hdus).writeto(buf, checksum=True, output_verify="exception")
    return buf.getvalue()


def split_hdus(raw):
    """[(header card images up to END, data unit bytes with padding)] of a FITS file."""
    out, i = [], 0
    while i < len(raw):
        start = i
        while raw[i:i + 80][:8] != b"END     ":
            i += 80
        i += 80
        cards = [raw[k:k + 80] for k in range(start, i, 80)]
        assert raw[i:i - i % 2880 + 2880 * bool(i % 2880)].strip(b" ") == b""    # header padding
        i += -i % 2880
        h = fits.Header.fromstring(b"".join(cards).decode("ascii"))
        n = abs(h["BITPIX"]) // 8 * int(np.prod([h[f"NAXIS{k + 1}"] for k in range(h["NAXIS"])]))
        n = n + -n % 2880 if h["NAXIS"] else 0
        out.append((cards, raw[i:i + n]))
        i += n
    assert i == len(raw)
    return out


def without_checksum(raw):
    """astropy's file without the CHECKSUM card it adds (ours carry DATASUM only, so that a
    re-export differs only in DATE) and with our DATASUM comment (astropy's has a time stamp)."""
    parts = []
    for cards, data in split_hdus(raw):
        keep = []
        for c in cards:
            if c.startswith(b"CHECKSUM="):
                continue
            if c.startswith(b"DATASUM ="):
                card = fits.Card.fromstring(c.decode("ascii"))
                assert card.comment.startswith("data unit checksum")
                c = fits.Card("DATASUM", card.value, "data unit checksum").image.encode("ascii")
            keep.append(c)
        head = b"".join(keep)
        parts.append(head + b" " * (-len(head) % 2880) + data)
    return b"".join(parts)


def test_files_are_byte_identical_to_astropy_writeto(written_hdus):
    for path, hdus in written_hdus:
        ours, theirs = path.read_bytes(), astropy_bytes(hdus)
        if without_checksum(theirs) != ours:                # say where, card by card
            for k, ((ca, da), (cb, db)) in enumerate(zip(split_hdus(ours),
                                                         split_hdus(without_checksum(theirs)))):
                diff = [(a, b) for a, b in zip(ca, cb) if a != b]
                assert not diff and len(ca) == len(cb), (path.name, k, diff[:3], len(ca), len(cb))
                assert da == db, (path.name, k, "data unit")
            pytest.fail(f"{path.name}: differs from astropy's file")
        # astropy's own file is ours plus one CHECKSUM card per HDU
        assert len(split_hdus(theirs)) == len(hdus)


def test_astropy_reads_them_with_checksums_same_cards_same_data(written_hdus):
    for path, hdus in written_hdus:
        ref = fits.HDUList.fromstring(astropy_bytes(hdus))
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # a bad DATASUM is a warning: raise
            with fits.open(path, checksum=True) as hdul:
                hdul.verify("exception")
                assert len(hdul) == len(hdus) == len(ref)
                for k, (ours, theirs, h) in enumerate(zip(hdul, ref, hdus)):
                    assert "CHECKSUM" not in ours.header and ours.header["DATASUM"] == theirs.header["DATASUM"]
                    cards = [(c.keyword, c.value, c.comment) for c in ours.header.cards]
                    want = [(c.keyword, c.value, "data unit checksum" if c.keyword == "DATASUM" else c.comment)
                            for c in theirs.header.cards if c.keyword != "CHECKSUM"]
                    assert cards == want, (path.name, k)
                    if h.data is None:
                        assert ours.data is None and theirs.data is None
                        continue
                    assert ours.data.dtype.name == theirs.data.dtype.name == h.data.dtype.name
                    for d in (ours.data, theirs.data):      # bitwise, NaNs included
                        assert np.ascontiguousarray(d, h.data.dtype).tobytes() == h.data.tobytes(), (path.name, k)


def test_astropy_checksum_check_catches_a_corrupt_file(written_hdus, tmp_path):
    """The verification above has teeth: one flipped bit in a data unit is reported."""
    for path, _ in written_hdus[:4]:                        # bcd, bunc, bbmsk, bsdr (extensions)
        raw = bytearray(path.read_bytes())
        at = 0
        for cards, data in split_hdus(bytes(raw)):
            at += len(cards) * 80 + -len(cards) * 80 % 2880
            if data:
                raw[at + 5] ^= 0x10                        # in the first data unit
                break
            at += len(data)
        bad = tmp_path / path.name
        bad.write_bytes(bytes(raw))
        with pytest.warns(UserWarning, match="[Dd]atasum verification failed"):
            with fits.open(bad, checksum=True) as hdul:
                for h in hdul:
                    h.data                                  # noqa: B018 - read them all
