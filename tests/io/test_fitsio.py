"""FITS reading helpers against astropy (the reference) and fitsverify: the HDU layout and header
values CFITSIO reads, raw reads, and the FITS checksums (FITS 4.0 appendix J, ICD 1.1): CFITSIO's
verdict against astropy's and fitsverify's, and the checksums astropy writes for the simulators."""
import io
import re
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from conftest import require_tool

from reduce.errors import BadInputError
from reduce.io.fitsio import add_checksums, check_level0, hdu_spans, open_level0, read_at


def _level0_files(swas_raw, mips_raw):
    aor1 = mips_raw / "aor1"
    return (sorted((swas_raw / "day5").glob("*.fits"))[:1] + sorted(aor1.glob("SPITZER_M*.fits"))[::5]
            + [aor1 / "cal" / "mips70_nonlin.fits", aor1 / "cal" / "mips160_cal.fits",
               aor1 / "cal" / "mips24_distortion.fits"])


def _scaled_int16(folder):
    """A file of scaled int16 images (BSCALE/BZERO), as astropy writes them."""
    path = folder / "scaled.fits"
    rng = np.random.default_rng(5)
    image = fits.ImageHDU(rng.normal(0.0, 3.0, (12, 40)), name="SCALED")
    image.scale("int16", bscale=0.001, bzero=2.5)
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    return path


def _fits_files(swas_raw, mips_raw, reference_dir, folder):
    # the reference CLASS file (a value 0.8058610690795-297, no FITS number) is beyond CFITSIO: see hdu_spans
    return _level0_files(swas_raw, mips_raw) + [
        _scaled_int16(folder),
        reference_dir / "spitzer" / "irac-hd209458" / "SPITZER_I1_41629440_0000_0000_1_bcd.fits"]


def _astropy_hdul():
    rng = np.random.default_rng(7)
    table = fits.BinTableHDU.from_columns([fits.Column("A", "J", array=np.arange(7)),
                                           fits.Column("S", "5A", array=["x", "yy", "", "zzz", "a", "b", "c"])],
                                          name="TABLE")
    return fits.HDUList([fits.PrimaryHDU(), table,
                         fits.ImageHDU(rng.normal(size=(33, 17)).astype(np.float32), name="ODD"),
                         fits.ImageHDU(rng.integers(-30000, 30000, (4, 5, 6)).astype(np.int16), name="INT")])


def _bytes(hdul, **kw):
    stream = io.BytesIO()
    hdul.writeto(stream, **kw)
    return stream.getvalue()


def test_hdu_spans_equal_astropy_fileinfo(tmp_path, swas_raw, mips_raw, reference_dir):
    for path in _fits_files(swas_raw, mips_raw, reference_dir, tmp_path):
        spans = hdu_spans(path)
        with fits.open(path) as hdul:
            assert len(spans) == len(hdul), path
            for s, hdu in zip(spans, hdul):
                info = hdul.fileinfo(s.index)
                assert (s.start, s.data, s.end - s.data) == (info["hdrLoc"], info["datLoc"], info["datSpan"])
                assert s.name == hdu.name, path


def test_read_at_equals_astropy(tmp_path, swas_raw, mips_raw, reference_dir):
    """Raw reads equal astropy's data; scaled integers: BSCALE * stored + BZERO exactly (float64)."""
    for path in _fits_files(swas_raw, mips_raw, reference_dir, tmp_path):
        with (open_level0(path, integrity=False) as f,
              fits.open(path, do_not_scale_image_data=True) as hdul):
            for i, hdu in enumerate(hdul):
                if hdu.is_image and hdu.data is not None:
                    h = hdu.header
                    want = hdu.data * np.float64(h.get("BSCALE", 1)) + np.float64(h.get("BZERO", 0))
                    np.testing.assert_array_equal(read_at(path, f.location(i), np.float64), want)


def test_fast_reader_equals_astropy(swas_raw, mips_raw):
    """The CFITSIO path reads the same header values (and types), columns and data as astropy."""
    for path in _level0_files(swas_raw, mips_raw):
        with open_level0(path) as fast, fits.open(path) as ref:
            assert len(fast) == len(ref)
            for i, want in enumerate(ref):
                got = fast[want.name]
                assert got.span.index == i
                for card in want.header.cards:
                    if card.keyword not in ("", "COMMENT", "HISTORY"):
                        value = got.header[card.keyword]
                        assert (value, type(value)) == (card.value, type(card.value)), (path, card.keyword)
                if isinstance(want, fits.BinTableHDU):
                    assert got.columns == [(c.name, c.format) for c in want.columns]
                    for c in want.columns:
                        a, b = got.data[c.name], want.data[c.name]
                        if c.format.endswith("A"):
                            a, b = np.char.rstrip(a.astype(str)), np.char.rstrip(b.astype(str))
                        np.testing.assert_array_equal(a, b)
                else:
                    assert not hasattr(got, "columns")
                    if want.data is None:
                        assert got.data is None
                    else:
                        np.testing.assert_array_equal(got.data, want.data)
                        assert got.data.dtype == want.data.dtype.newbyteorder("=")


def test_truncated_and_not_fits_are_named(tmp_path, swas_raw):
    data = sorted((swas_raw / "day5").glob("*.fits"))[0].read_bytes()
    cases = {
        "cut.fits": (data[: len(data) // 2],  # inside the AOS data
                     r"cut.fits: truncated: HDU \d \(\w+\) needs \d+ bytes, file has \d+"),
        "last.fits": (data[:-10], rf"truncated: HDU 4 \(HK\) needs {len(data)} bytes, file has {len(data) - 10}"),
        "header.fits": (data[:5760],  # inside the header of HDU 1
                        r"not a readable FITS file \(HDU 1, the extension at byte 2880: FITSIO status = \d+: "),
        "short.fits": (data[:1000], r"short.fits: not a readable FITS file \(FITSIO status = \d+: "),
        "text.fits": (b"SIMPLE? no: a text file named .fits\n", r"not a readable FITS file \(FITSIO status"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        for read in (hdu_spans, check_level0):
            with pytest.raises(BadInputError, match=reason):
                read(tmp_path / name)
    (tmp_path / "tail.fits").write_bytes(data + b"\0" * 100)  # bytes after the last HDU that start none
    assert [s.name for s in check_level0(tmp_path / "tail.fits")] == ["PRIMARY", "SCANS", "AOS490", "AOS550", "HK"]


def test_cfitsio_verifies_astropy_checksums(tmp_path):
    """A file astropy writes with checksum=True passes CFITSIO's verification in every HDU."""
    path = tmp_path / "astropy.fits"
    _astropy_hdul().writeto(path, checksum=True)
    spans = check_level0(path)
    assert [s.name for s in spans] == ["PRIMARY", "TABLE", "ODD", "INT"]
    assert all("CHECKSUM" in s.header and "DATASUM" in s.header for s in spans)


def test_add_checksums_verify_and_are_deterministic(tmp_path):
    """add_checksums (astropy) writes sums that astropy and CFITSIO verify, the same bytes for the same
    HDUs (no time in the cards), and changes nothing else."""
    buf = _bytes(add_checksums(_astropy_hdul()))
    assert _bytes(add_checksums(_astropy_hdul())) == buf
    path = tmp_path / "ours.fits"
    path.write_bytes(buf)
    assert all("CHECKSUM" in s.header and "DATASUM" in s.header for s in check_level0(path))
    with fits.open(path) as hdul:
        assert [(h.verify_checksum(), h.verify_datasum()) for h in hdul] == [(1, 1)] * len(hdul)
        for ours, want in zip(hdul, _astropy_hdul()):
            assert [c for c in ours.header if c not in ("CHECKSUM", "DATASUM")] == list(want.header)
            np.testing.assert_array_equal(ours.data, want.data)


def _flip(buf, at, mask):
    out = bytearray(buf)
    out[at] ^= mask
    return bytes(out)


@pytest.mark.tools
def test_fitsverify_and_astropy_agree_with_cfitsio(tmp_path, swas_raw, mips_raw):
    """fitsverify accepts the sums the simulators write, and it, astropy and CFITSIO (check_level0) all
    find the same corruption."""
    exe = require_tool("fitsverify")
    for i, src in enumerate(_level0_files(swas_raw, mips_raw)[:3] + [None]):
        buf = src.read_bytes() if src else _bytes(add_checksums(_astropy_hdul()))
        good, bad = tmp_path / f"good{i}.fits", tmp_path / f"bad{i}.fits"
        good.write_bytes(buf)
        last = check_level0(good)[-1]
        bad.write_bytes(_flip(buf, last.data + 3, 0x10))
        out = subprocess.run([exe, good, bad], capture_output=True, text=True).stdout
        assert re.findall(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", out)[0] == ("0", "0"), out
        assert "checksum" in out.split(str(bad))[-1].lower(), out
        with fits.open(bad, checksum=False) as hdul:
            assert [h.verify_datasum() for h in hdul] == [1] * last.index + [0]
        with pytest.raises(BadInputError, match=rf"HDU {last.index} .*DATASUM check failed"):
            check_level0(bad)


@pytest.mark.parametrize("how, reason", [
    ("none", None),
    ("no_sums", None),  # files without the checksum keywords are accepted
    ("flipped_data", r"x.fits: HDU 3 \(INT\): DATASUM check failed \(data corrupted\)$"),
    ("header_digit", r"x.fits: HDU 2 \(ODD\): CHECKSUM check failed \(header or data corrupted\)$"),
    ("high_byte", r"x.fits: HDU 1 \(TABLE\): header byte 0xe9 at file offset \d+ is not ASCII text"),
    ("tab", r"x.fits: HDU 1 \(TABLE\): header byte 0x09 at file offset \d+ is not ASCII text"),
    # a byte CFITSIO cannot take in a structural value: no layout to name the HDU by, the byte is named
    ("high_byte_naxis1", r"x.fits: not a readable FITS file \(a header byte 0xe9 that is not ASCII text"),
    ("datasum_text", r"x.fits: HDU 2 \(ODD\): DATASUM check failed \(data corrupted\)$"),
])
def test_check_level0_verifies_sums_and_ascii(tmp_path, how, reason):
    buf = bytearray(_bytes(add_checksums(_astropy_hdul())))
    path = tmp_path / "x.fits"
    path.write_bytes(buf)
    spans = hdu_spans(path)
    if how == "no_sums":
        buf = bytearray(_bytes(_astropy_hdul()))
    elif how == "flipped_data":
        for i in np.random.default_rng(0).choice(np.arange(spans[3].data, spans[3].data + 240), 200, replace=False):
            buf[i] ^= 0x5A
    elif how in ("header_digit", "high_byte_naxis1"):  # NAXIS1 = 17 -> 18: header text valid, the sum not
        at = buf.index(b"NAXIS1  =                   17", spans[2].start) + 29
        buf[at] = ord("8") if how == "header_digit" else 0xE9
    elif how in ("high_byte", "tab"):
        at = buf.index(b"TTYPE1  = 'A", spans[1].start) + 60  # in the comment field
        buf[at] = 0xE9 if how == "high_byte" else 0x09
    elif how == "datasum_text":
        at = buf.index(b"DATASUM = '", spans[2].start)
        buf[at:at + 80] = b"DATASUM = 'abc     '".ljust(80)
    path.write_bytes(buf)
    if reason is None:
        assert [s.name for s in check_level0(path, bytes(buf))] == ["PRIMARY", "TABLE", "ODD", "INT"]
    else:
        with pytest.raises(BadInputError, match=reason):
            check_level0(path, bytes(buf))
