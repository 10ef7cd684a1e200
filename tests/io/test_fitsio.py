"""FITS reading helpers: data spans equal astropy's fileinfo, raw reads equal astropy's data."""
import numpy as np
import pytest
from astropy.io import fits

from reduce.errors import BadInputError
from reduce.io.fitsio import _data_span, data_location, open_fits, read_at


def _fits_files(swas_raw, mips_raw, reference_dir):
    files = sorted((swas_raw / "day5").glob("*.fits"))[:1] + sorted((mips_raw / "aor1").glob("SPITZER_M*.fits"))[:3]
    files += [reference_dir / "class" / "10074-190_HCOp.fits",
              reference_dir / "spitzer" / "irac-hd209458" / "SPITZER_I1_41629440_0000_0000_1_bcd.fits"]
    return files


def test_data_span_equals_fileinfo(swas_raw, mips_raw, reference_dir):
    for path in _fits_files(swas_raw, mips_raw, reference_dir):
        with fits.open(path) as hdul:
            for i in range(len(hdul)):
                info = hdul.fileinfo(i)
                assert _data_span(hdul, i) == (info["datLoc"], info["datSpan"]), (path, i)


def test_read_at_equals_astropy(swas_raw, mips_raw, reference_dir):
    for path in _fits_files(swas_raw, mips_raw, reference_dir):
        with open_fits(path, memmap=False) as hdul:
            for i, hdu in enumerate(hdul):
                if hdu.is_image and hdu.data is not None:
                    np.testing.assert_array_equal(read_at(path, data_location(hdul, i), np.float64),
                                                  hdu.data.astype(np.float64))


def test_truncated_file_is_named(tmp_path, swas_raw):
    src = sorted((swas_raw / "day5").glob("*.fits"))[0]
    cut = tmp_path / "cut.fits"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # inside the AOS data
    with pytest.raises(BadInputError, match=r"cut.fits: truncated: HDU \d \(\w+\) needs \d+ bytes, file has \d+"):
        with open_fits(cut):
            pass
