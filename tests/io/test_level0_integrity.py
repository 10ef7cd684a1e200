"""ICD 1.1 integrity at ingest: a level-0 file whose CHECKSUM or DATASUM fails, or whose header is not
ASCII, is rejected (one REJECTED line naming file, HDU and check; quarantined), files without the
checksum keywords are accepted, the rest of the run is ingested and no raw file changes."""
import re
import shutil

import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256_tree

from reduce.io.fitsio import hdu_spans
from reduce.io.store import Store
from reduce.mips.ingest import ingest_mips
from reduce.swas.ingest import ingest_swas


def flip_data_bytes(src, dst, hdu, n=200, seed=0):
    """Copy ``src`` to ``dst`` with ``n`` bytes of HDU ``hdu``'s data inverted."""
    buf = bytearray(src.read_bytes())
    span = hdu_spans(src, bytes(buf))[hdu]
    for i in np.random.default_rng(seed).choice(np.arange(span.data, span.end), n, replace=False):
        buf[i] ^= 0xFF
    dst.write_bytes(buf)


def set_header_byte(src, dst, keyword, byte):
    """Copy ``src`` to ``dst`` with one byte of the comment of ``keyword``'s card (HDU 0) set to ``byte``."""
    buf = bytearray(src.read_bytes())
    buf[buf.index(keyword.ljust(8).encode() + b"= ") + 70] = byte
    dst.write_bytes(buf)


def without_checksums(src, dst):
    """Copy ``src`` to ``dst`` without CHECKSUM and DATASUM (as a writer that does not write them)."""
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    for h in hdul:
        del h.header["CHECKSUM"], h.header["DATASUM"]
    hdul.writeto(dst, overwrite=True)


def _check(summary, lines, raw, before, store, expect):
    assert summary.exit_code == 1
    assert len(lines) == len(expect), lines
    for name, pattern in expect.items():
        line = [x for x in lines if f"/{name}:" in x]
        assert len(line) == 1 and line[0].startswith(f"REJECTED {raw}/{name}: "), (name, lines)
        assert re.search(pattern, line[0]), (name, line[0])
    assert sorted(q["name"] for q in Store(store).quarantine()) == sorted(expect)
    assert sha256_tree(raw) == before


FLIPPED = r"HDU {} \({}\): DATASUM check failed \(data corrupted\)$"
NOT_ASCII = r"HDU 0 \(PRIMARY\): header byte 0x{:02x} at file offset \d+ is not ASCII text \(0x20-0x7E\)"
HEADER_SUM = r"HDU 0 \(PRIMARY\): CHECKSUM check failed \(header or data corrupted\)$"


def _bad_copies(src, raw, prefix, data_hdu):
    """The bad copies of one good file, {name: expected reason}."""
    flip_data_bytes(src, raw / f"{prefix}flipped.fits", data_hdu[0])
    set_header_byte(src, raw / f"{prefix}high.fits", "OBJECT", 0xE9)
    set_header_byte(src, raw / f"{prefix}control.fits", "OBJECT", 0x07)
    set_header_byte(src, raw / f"{prefix}header_text.fits", "OBJECT", ord("#"))  # still ASCII: the sum fails
    return {f"{prefix}flipped.fits": FLIPPED.format(*data_hdu), f"{prefix}high.fits": NOT_ASCII.format(0xE9),
            f"{prefix}control.fits": NOT_ASCII.format(0x07), f"{prefix}header_text.fits": HEADER_SUM}


def test_swas_checksum_failures_rejected_rest_ingested(tmp_path, swas_raw):
    good = sorted((swas_raw / "day5").glob("*.fits"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(good[0], raw)
    shutil.copy(good[1], raw)
    without_checksums(good[2], raw / good[2].name)  # accepted: the keywords are optional
    expect = _bad_copies(good[2], raw, "swas_lh_0099_", (2, "AOS490"))
    before = sha256_tree(raw)
    lines = []
    summary = ingest_swas([raw], tmp_path / "s.zarr", report=lines.append)
    _check(summary, lines, raw, before, tmp_path / "s.zarr", expect)
    assert sorted(summary.ingested) == sorted(str(raw / f.name) for f in good)
    with fits.open(raw / good[2].name) as hdul:
        assert "CHECKSUM" not in hdul[0].header
        np.testing.assert_array_equal(Store(tmp_path / "s.zarr").open_group("").aos490.values[-len(hdul[2].data):],
                                      hdul[2].data)


def test_mips_checksum_failures_rejected_rest_ingested(tmp_path, mips_raw):
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw, ignore=shutil.ignore_patterns("mips_truth*"))
    m70 = sorted(raw.glob("SPITZER_M2_*_raw.fits"))
    without_checksums(m70[1], m70[1])  # accepted: the keywords are optional
    expect = _bad_copies(m70[0], raw, "bad_", (0, "PRIMARY"))
    before = sha256_tree(raw)
    lines = []
    summary = ingest_mips([raw], tmp_path / "s.zarr", report=lines.append)
    _check(summary, lines, raw, before, tmp_path / "s.zarr", expect)
    assert len(summary.ingested) == 15 and str(m70[1]) in summary.ingested


def test_mips_calibration_file_checksum_failure(tmp_path, mips_raw):
    """A calibration file of the ICD is checked too: the DCEs that need it are rejected, naming it."""
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw, ignore=shutil.ignore_patterns("mips_truth*"))
    dark = raw / "cal" / "mips70_dark.fits"
    flip_data_bytes(dark, dark, 0)
    lines = []
    summary = ingest_mips([raw], tmp_path / "s.zarr", report=lines.append)
    assert len(lines) == 5 and len(summary.ingested) == 10
    pattern = r"SPITZER_M2_.*: .*mips70_dark.fits: " + FLIPPED.format(0, "PRIMARY")
    assert all(re.search(pattern, x) for x in lines), lines


@pytest.mark.parametrize("instrument", ["swas", "mips"])
def test_unmodified_simulated_files_pass_the_check(instrument, swas_raw, mips_raw):
    from reduce.io.fitsio import check_level0

    files = sorted((swas_raw if instrument == "swas" else mips_raw).rglob("*.fits"))
    for path in files:
        spans = check_level0(path)
        assert all("CHECKSUM" in s.header and "DATASUM" in s.header for s in spans), path
