"""SED product writers (reduce.sed.export): names, exact headers, spectral WCS, fitsverify,
IPAC table, specutils, bit-exact round trip, atomic writes."""
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import ascii, fits
from astropy.nddata import StdDevUncertainty
from astropy.time import Time
from astropy.wcs import WCS

from conftest import HalfThenDiskFull, require_tool
from reduce.io.atomic import TMP_SUFFIX
from reduce.mips import bcd_export as bx
from reduce.mips import bcd_reader as br
from reduce.sed import export as sx

VERSION = "0.3+dev"
TAG = "0.3-dev"
AORKEY = 40123456
WAVE = {"wave0": 53.65, "disp": 1.7, "tilt": 0.02, "centcol": 7.0, "pxscale": 9.98,
        "slitw": 19.96}
MASK_BITS = {"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8, "saturated": 16, "cosmic_ray": 32,
             "invalid": 64, "no_responsivity": 512, "partial": 1024}
META = {"aorkey": AORKEY, "expid": 4, "dcenum": 3, "dceid": 1234, "mjd": 53500.5123456789,
        "exptime": np.float32(10.0), "object": "NGC 7027", "progid": 40, "choppos": "OFF",
        "chopthrw": np.float32(60.0), "pa_slit": 30.25, "ra_slit": 316.757, "dec_slit": 42.236,
        "ra_rqst": 316.7571, "dec_rqst": 42.2361, "stimflsh": 0, "responsivity": np.float32(0.97),
        "responsivity_unc": np.float32(0.012),
        "source_file": "/data/raw/SPITZER_M2_40123456_0004_0003_raw.fits", "aot_type": "MipsSed"}
CAL_CARDS = [("CFDARK", "mips70sed_dark.fits", "DARK reference file (CALVERS sim-1)"),
             ("CSDARK", "0123456789abcdef" * 4, "SHA-256 of mips70sed_dark.fits"),
             ("CFWAVE", "mips70sed_wave.fits", "WAVE reference file (CALVERS sim-1)"),
             ("CSWAVE", "fedcba9876543210" * 4, "SHA-256 of mips70sed_wave.fits")]
HISTORY = ["calibrate: {\"fluxconv\": \"per row\"}",
           "rectify: flux-conserving overlap resampling along y, TILT removed " * 2]
SRC_COL = 8.37
FITS_SUFFIXES = ("bcd", "bunc", "bbmsk")


def make_planes(seed=0, shape=(27, 16)):
    rng = np.random.default_rng(seed)
    bcd = rng.normal(5.0, 2.0, shape).astype(np.float32)
    bcd[2, 5] = np.nan
    bcd[26, 0] = np.float32(-0.0)
    bcd[10, 3] = np.float32(1e-38)                       # subnormal-adjacent value survives
    unc = rng.uniform(0.05, 0.5, shape).astype(np.float32)
    unc[2, 5] = np.nan
    mask = np.zeros(shape, np.uint16)
    for v in MASK_BITS.values():
        mask |= (rng.random(shape) < 0.15).astype(np.uint16) * v
    return bcd, unc, mask


def spectrum_columns():
    row = np.arange(27)
    wav = WAVE["wave0"] + WAVE["disp"] * row
    flux = 3.0 * (wav / 70.0) + np.exp(-0.5 * ((wav - 88.36) / 1.44) ** 2) * 2.5
    flux[0] = np.nan                                       # an aperture pixel was NaN
    err = 0.03 * np.nan_to_num(flux, nan=3.0) + 0.01
    err[0] = np.nan
    apcorr = np.linspace(1.21, 1.58, 27)
    return row, wav, flux, err, apcorr


SPEC_CARDS = [("OBJECT", "NGC 7027", "Target Name"), ("SRCCOL", SRC_COL, "source column"),
              ("NFRAMES", 36, "ON and OFF BCDs combined"), ("RA_SLIT", 316.757, "[deg] slit centre"),
              ("BGSUB", True, "OFF subtracted"), ("HISTORY", "extract: 5 columns", "")]


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    out = tmp_path_factory.mktemp("sedprod")
    bcd, unc, mask = make_planes()
    bcd_paths = sx.write_sed_bcd(out, meta=META, bcd=bcd, unc=unc, mask=mask, wave=WAVE,
                                 mask_bits=MASK_BITS, calibration_cards=CAL_CARDS,
                                 history=HISTORY, version=VERSION)
    row, wav, flux, err, apcorr = spectrum_columns()
    spec_paths = sx.write_sed_spectrum(out, aorkey=AORKEY, version=VERSION, row=row,
                                       wavelength=wav, flux_density=flux, error=err,
                                       apcorr=apcorr, header_cards=SPEC_CARDS)
    diff, dunc, _ = make_planes(1, (27, 18))
    on, off, _ = make_planes(2, (27, 18))
    depth = np.random.default_rng(3).integers(0, 13, (27, 18))
    coadd = sx.write_sed_coadd(out, aorkey=AORKEY, version=VERSION, diff=diff, diff_unc=dunc,
                               depth=depth, on=on, off=off, source_column=SRC_COL, wave=WAVE,
                               header_cards=[("OBJECT", "NGC 7027", "Target Name")])
    return {"out": out, "bcd": bcd_paths, "spec": spec_paths, "coadd": coadd,
            "planes": (bcd, unc, mask), "coadd_planes": (diff, dunc, depth, on, off)}


def fits_paths(p):
    return list(p["bcd"]) + [p["spec"][1], p["coadd"]]


def test_names(products):
    assert sx.sed_bcd_basename(AORKEY, 4, 3, VERSION) == f"SPITZER_M2_{AORKEY}_0004_0003_{TAG}"
    assert sx.sed_basename(np.int64(AORKEY), "1") == f"SPITZER_M2_{AORKEY}_1"
    assert [p.name for p in products["bcd"]] == [
        f"SPITZER_M2_{AORKEY}_0004_0003_{TAG}_{s}.fits" for s in FITS_SUFFIXES]
    assert [p.name for p in products["spec"]] == [f"SPITZER_M2_{AORKEY}_{TAG}_sed.tbl",
                                                  f"SPITZER_M2_{AORKEY}_{TAG}_sed.fits"]
    assert products["coadd"].name == f"SPITZER_M2_{AORKEY}_{TAG}_sedcoadd.fits"
    # atomic: the folder holds the products and nothing else (no temporaries)
    names = sorted(p.name for p in products["out"].iterdir())
    assert names == sorted(p.name for p in fits_paths(products) + [products["spec"][0]])
    assert not [n for n in names if n.endswith(TMP_SUFFIX)]


@pytest.mark.tools
def test_fitsverify_clean(products):
    fitsverify = require_tool("fitsverify")
    for p in fits_paths(products):
        out = subprocess.run([fitsverify, str(p)], capture_output=True, text=True).stdout
        assert "Verification found 0 warning(s) and 0 error(s)" in out, out


def test_checksums_verify(products):
    for p in fits_paths(products):
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # a bad checksum is a warning
            with fits.open(p, checksum=True) as hdul:
                for hdu in hdul:
                    assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header, p.name
                    hdu.data                                # noqa: B018 - reads, verifies


def test_bcd_headers_exact(products):
    heads = {s: fits.getheader(p) for s, p in zip(FITS_SUFFIXES, products["bcd"])}
    for suffix, h in heads.items():
        assert h["FILETYPE"] == suffix
        assert (h["NAXIS"], h["NAXIS1"], h["NAXIS2"]) == (2, 16, 27)
        assert (h["CTYPE1"], h["CUNIT1"], h["CRPIX1"], h["CRVAL1"], h["CDELT1"]) == (
            "OFFSET", "arcsec", 8.0, 0.0, 9.98)
        assert (h["CTYPE2"], h["CUNIT2"], h["CRPIX2"], h["CRVAL2"], h["CDELT2"]) == (
            "WAVE", "um", 1.0, 53.65, 1.7)
        assert (h["TILT"], h["CENTCOL"], h["PXSCALE"], h["SLITW"]) == (0.02, 7.0, 9.98, 19.96)
        assert (h["TELESCOP"], h["INSTRUME"], h["CHNLNUM"], h["AOT_TYPE"]) == (
            "Spitzer", "MIPS", 2, "MipsSed")
        assert (h["AORKEY"], h["EXPID"], h["DCENUM"], h["DCEID"]) == (AORKEY, 4, 3, 1234)
        assert (h["RA_SLIT"], h["DEC_SLIT"], h["PA_SLIT"]) == (316.757, 42.236, 30.25)
        assert (h["RA_RQST"], h["DEC_RQST"]) == (316.7571, 42.2361)
        assert (h["CHOPPOS"], h["CHOPTHRW"], h["STIMFLSH"]) == ("OFF", 60.0, 0)
        assert h["MJD_OBS"] == META["mjd"]
        assert h["DATE_OBS"] == "2005-05-10T12:17:46.667"
        assert abs(Time(h["DATE_OBS"], scale="utc").mjd - META["mjd"]) * 86400 < 1e-3
        assert (h["EXPTIME"], h["PROGID"], h["OBJECT"]) == (10.0, 40, "NGC 7027")
        assert h["RAWFILE"] == "SPITZER_M2_40123456_0004_0003_raw.fits"
        assert (h["PIPEVERS"], h["CREATOR"]) == (VERSION, f"skyreduce {VERSION}")
        for key, value, _ in CAL_CARDS:
            assert h[key] == value
        history = [str(v) for v in h["HISTORY"]]
        assert history[0] == HISTORY[0]
        assert "".join(history[1:3]) == HISTORY[1].rstrip()
        assert history[-1].startswith("sed export")
    for suffix in ("bcd", "bunc"):
        h = heads[suffix]
        assert h["BUNIT"] == "MJy/sr"
        assert h["RESPONSI"] == 0.97 and h["RESPUNC"] == 0.012
    assert "BUNIT" not in heads["bbmsk"] and "RESPONSI" not in heads["bbmsk"]


def test_optional_meta_and_on(tmp_path):
    meta = {k: META[k] for k in sx._REQUIRED_META}
    meta.update(choppos="on", mjd=53000.0)
    bcd, unc, mask = make_planes()
    paths = sx.write_sed_bcd(tmp_path, meta=meta, bcd=bcd, unc=unc, mask=mask, wave=WAVE,
                             mask_bits=MASK_BITS, calibration_cards=[], history=[], version="1")
    h = fits.getheader(paths[0])
    assert h["CHOPPOS"] == "ON" and h["DATE_OBS"] == "2003-12-27T00:00:00.000"
    for key in ("DCEID", "RESPONSI", "RA_RQST", "OBJECT", "CFDARK", "STIMFLSH"):
        assert key not in h
    assert h["AOT_TYPE"] == "MipsSed"


def test_bcd_wcs_pixel_to_world(products):
    for p in products["bcd"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            w = WCS(fits.getheader(p))
        assert w.world_axis_physical_types[1] == "em.wl"
        y, x = np.mgrid[0:27, 0:16]
        off, lam = w.pixel_to_world_values(x.ravel(), y.ravel())
        lam_um = (lam * u.Unit(w.wcs.cunit[1])).to_value(u.um)
        np.testing.assert_allclose(lam_um, 53.65 + 1.7 * y.ravel(), rtol=0, atol=1e-9)
        off_arcsec = (off * u.Unit(w.wcs.cunit[0])).to_value(u.arcsec)
        np.testing.assert_allclose(off_arcsec, (x.ravel() - 7.0) * 9.98, rtol=0, atol=1e-9)
    # the source column of the coadd is offset 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = WCS(fits.getheader(products["coadd"]))
    off, lam = w.pixel_to_world_values([SRC_COL, 0.0, 17.0], [0.0, 26.0, 13.0])
    np.testing.assert_allclose((off * u.Unit(w.wcs.cunit[0])).to_value(u.arcsec),
                               [0.0, -SRC_COL * 9.98, (17 - SRC_COL) * 9.98], atol=1e-9)
    np.testing.assert_allclose((lam * u.Unit(w.wcs.cunit[1])).to_value(u.um),
                               [53.65, 53.65 + 1.7 * 26, 53.65 + 1.7 * 13], atol=1e-9)


def test_bcd_round_trip_bit_exact(products):
    bcd, unc, mask = products["planes"]
    with fits.open(products["bcd"][0]) as h:
        assert h[0].data.dtype == np.dtype(">f4")
        assert h[0].data.astype(np.float32).tobytes() == bcd.tobytes()     # NaN, -0.0 too
    with fits.open(products["bcd"][1]) as h:
        assert h[0].data.astype(np.float32).tobytes() == unc.tobytes()
    data, legend = br.read_mask(products["bcd"][2])
    assert data.dtype == np.int16                          # the legend is below 2**15
    assert np.array_equal(data, mask.astype(np.int16))
    assert bx.mask_names(legend) == MASK_BITS
    h = fits.getheader(products["bcd"][2])
    assert h["BIT10"] == 1024 and h.comments["BIT10"].startswith("partial")
    assert h["PROCBITS"] == sum(MASK_BITS.values())


def test_mask_bit_15_is_uint16(tmp_path):
    bits = dict(MASK_BITS, stim=1 << 15)
    bcd, unc, mask = make_planes()
    mask[0, 0] = 1 << 15 | 1
    paths = sx.write_sed_bcd(tmp_path, meta=META, bcd=bcd, unc=unc, mask=mask, wave=WAVE,
                             mask_bits=bits, calibration_cards=[], history=[], version="1")
    data = fits.getdata(paths[2])
    assert data.dtype.kind == "u" and data.dtype.itemsize == 2
    assert np.array_equal(data, mask)


def test_bad_input_refused(tmp_path):
    bcd, unc, mask = make_planes()
    kw = dict(meta=META, bcd=bcd, unc=unc, mask=mask, wave=WAVE, mask_bits=MASK_BITS,
              calibration_cards=[], history=[], version="1")
    with pytest.raises(ValueError, match=r"bcd has shape \(32, 32\), expected \(27, 16\)"):
        sx.write_sed_bcd(tmp_path, **dict(kw, bcd=np.zeros((32, 32), np.float32)))
    bad = mask.copy()
    bad[1, 1] = 128                                        # not in the legend
    with pytest.raises(ValueError, match=r"mask uses bits \[7\]"):
        sx.write_sed_bcd(tmp_path, **dict(kw, mask=bad))
    with pytest.raises(ValueError, match=r"meta lacks \['pa_slit'\]"):
        sx.write_sed_bcd(tmp_path, **dict(kw, meta={k: v for k, v in META.items()
                                                    if k != "pa_slit"}))
    with pytest.raises(ValueError, match="choppos"):
        sx.write_sed_bcd(tmp_path, **dict(kw, meta=dict(META, choppos="MID")))
    with pytest.raises(ValueError, match=r"wave lacks \['tilt'\]"):
        sx.write_sed_bcd(tmp_path, **dict(kw, wave={k: v for k, v in WAVE.items() if k != "tilt"}))
    with pytest.raises(ValueError, match="CRVAL2 is set by the writer"):
        sx.write_sed_bcd(tmp_path, **dict(kw, calibration_cards=[("CRVAL2", 50.0, "")]))
    row, wav, flux, err, apcorr = spectrum_columns()
    with pytest.raises(ValueError, match="wavelength must be finite and increasing"):
        sx.write_sed_spectrum(tmp_path, aorkey=1, version="1", row=row, wavelength=wav[::-1],
                              flux_density=flux, error=err, apcorr=apcorr, header_cards=[])
    with pytest.raises(ValueError, match="error has shape"):
        sx.write_sed_spectrum(tmp_path, aorkey=1, version="1", row=row, wavelength=wav,
                              flux_density=flux, error=err[:-1], apcorr=apcorr, header_cards=[])
    with pytest.raises(ValueError, match="TUNIT3 is set by the writer"):
        sx.write_sed_spectrum(tmp_path, aorkey=1, version="1", row=row, wavelength=wav,
                              flux_density=flux, error=err, apcorr=apcorr,
                              header_cards=[("TUNIT3", "mJy", "")])
    with pytest.raises(ValueError, match=r"depth has shape \(27, 16\), expected \(27, 17\)"):
        z = np.zeros((27, 17), np.float32)
        sx.write_sed_coadd(tmp_path, aorkey=1, version="1", diff=z, diff_unc=z,
                           depth=np.zeros((27, 16), int), on=z, off=z, source_column=8.0,
                           wave=WAVE, header_cards=[])
    assert list(tmp_path.iterdir()) == []                  # nothing written


def test_tbl_reads_as_ipac(products):
    row, wav, flux, err, apcorr = spectrum_columns()
    t = ascii.read(products["spec"][0], format="ipac")
    assert t.colnames == ["row", "wavelength", "flux_density", "error", "apcorr"]
    assert [None if t[c].unit is None else str(t[c].unit) for c in t.colnames] == [
        None, "um", "Jy", "Jy", None]
    assert np.issubdtype(t["row"].dtype, np.integer)
    assert np.array_equal(t["row"], row)
    assert np.array_equal(t["wavelength"], wav)             # exact: shortest repr
    for name, values in (("flux_density", flux), ("error", err), ("apcorr", apcorr)):
        col = np.ma.filled(t[name], np.nan)
        assert np.array_equal(col, values, equal_nan=True), name
    assert np.ma.getmaskarray(t["flux_density"]).tolist() == [True] + [False] * 26
    kw = {k: v["value"] for k, v in t.meta["keywords"].items()}
    assert (kw["AORKEY"], kw["OBJECT"], kw["SRCCOL"], kw["NFRAMES"]) == (
        AORKEY, "NGC 7027", SRC_COL, 36)
    assert (kw["TELESCOP"], kw["INSTRUME"], kw["CHNLNUM"], kw["PIPEVERS"]) == (
        "Spitzer", "MIPS", 2, VERSION)
    assert kw["BGSUB"] == "T" and kw["RA_SLIT"] == 316.757
    assert "HISTORY: extract: 5 columns" in t.meta["comments"]


def test_sed_fits_table(products):
    with fits.open(products["spec"][1]) as hdul:
        assert hdul[0].data is None and hdul[0].header["AORKEY"] == AORKEY
        assert hdul[0].header["OBJECT"] == "NGC 7027" and hdul[0].header["SRCCOL"] == SRC_COL
        assert hdul[0].header["BGSUB"] is True
        assert list(hdul[0].header["HISTORY"]) == ["extract: 5 columns"]
        ext = hdul[1]
        assert ext.name == "SPECTRUM" and isinstance(ext, fits.BinTableHDU)
        assert ext.columns.names == ["row", "wavelength", "flux_density", "error", "apcorr"]
        assert [c.unit for c in ext.columns] == [None, "um", "Jy", "Jy", None]
        assert [c.format for c in ext.columns] == ["J", "D", "D", "D", "D"]
        row, wav, flux, err, apcorr = spectrum_columns()
        for name, values in zip(ext.columns.names, (row, wav, flux, err, apcorr)):
            assert np.array_equal(ext.data[name], values, equal_nan=True), name


def test_specutils_reads_sed_fits(products):
    specutils = pytest.importorskip("specutils")
    from astropy.utils.exceptions import AstropyDeprecationWarning
    path = str(products["spec"][1])
    assert specutils.Spectrum.read.registry.identify_format(
        "read", specutils.Spectrum, path, None, [path], {}) == ["tabular-fits"]
    t = ascii.read(products["spec"][0], format="ipac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", AstropyDeprecationWarning)    # Spectrum1D -> Spectrum
        spectra = [specutils.Spectrum1D.read(path), specutils.Spectrum.read(path)]
    for s in spectra:
        assert s.spectral_axis.unit == u.um and s.flux.unit == u.Jy
        assert np.array_equal(s.spectral_axis.value, t["wavelength"])
        assert np.array_equal(s.flux.value, np.ma.filled(t["flux_density"], np.nan), equal_nan=True)
        assert isinstance(s.uncertainty, StdDevUncertainty) and s.uncertainty.unit == u.Jy
        assert np.array_equal(s.uncertainty.array, np.ma.filled(t["error"], np.nan), equal_nan=True)
        assert s.meta["header"]["AORKEY"] == AORKEY


def test_coadd_file(products):
    diff, dunc, depth, on, off = products["coadd_planes"]
    with fits.open(products["coadd"]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNC", "DEPTH", "ON", "OFF"]
        h = hdul[0].header
        assert (h["FILETYPE"], h["AORKEY"], h["OBJECT"], h["BUNIT"]) == (
            "sedcoadd", AORKEY, "NGC 7027", "MJy/sr")
        assert (h["SRCCOL"], h["CRPIX1"], h["CRVAL1"], h["CDELT1"]) == (SRC_COL, SRC_COL + 1, 0.0, 9.98)
        assert (h["CTYPE2"], h["CUNIT2"], h["CRPIX2"], h["CRVAL2"], h["CDELT2"]) == (
            "WAVE", "um", 1.0, 53.65, 1.7)
        for hdu, values in zip(hdul, (diff, dunc, depth, on, off)):
            assert hdu.data.shape == (27, 18)
            assert hdu.header["CTYPE1"] == "OFFSET" and hdu.header["CRPIX1"] == SRC_COL + 1
            if hdu.name == "DEPTH":
                assert hdu.data.dtype.kind == "i" and "BUNIT" not in hdu.header
                assert np.array_equal(hdu.data, values)
            else:
                assert hdu.header["BUNIT"] == "MJy/sr"
                assert hdu.data.astype(np.float32).tobytes() == values.tobytes()


def test_failed_writes_leave_old_files_and_no_temporaries(products, tmp_path, monkeypatch):
    import reduce.io.atomic
    bcd, unc, mask = products["planes"]
    kw = dict(meta=META, bcd=bcd, unc=unc, mask=mask, wave=WAVE, mask_bits=MASK_BITS,
              calibration_cards=CAL_CARDS, history=HISTORY, version=VERSION)
    row, wav, flux, err, apcorr = spectrum_columns()
    skw = dict(aorkey=AORKEY, version=VERSION, row=row, wavelength=wav, flux_density=flux,
               error=err, apcorr=apcorr, header_cards=SPEC_CARDS)
    sx.write_sed_bcd(tmp_path, **kw)
    sx.write_sed_spectrum(tmp_path, **skw)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real = fits.HDUList.writeto

    def half_then_fail(self, name, *args, **kwargs):      # writes a half file, then fails
        real(self, name, *args, **kwargs)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[:len(data) // 2])
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(fits.HDUList, "writeto", half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            sx.write_sed_bcd(tmp_path, **dict(kw, bcd=bcd + 1))
    with monkeypatch.context() as m:
        m.setattr(reduce.io.atomic, "open", HalfThenDiskFull, raising=False)
        with pytest.raises(OSError, match="disk full"):
            sx.write_sed_spectrum(tmp_path, **dict(skw, flux_density=flux * 2))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # and a successful re-write replaces the files in place
    paths = sx.write_sed_bcd(tmp_path, **dict(kw, bcd=bcd + 1))
    assert np.array_equal(fits.getdata(paths[0]), bcd + 1, equal_nan=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)
