"""Reading level-0 FITS files safely: read-only, truncation-checked, errors naming the file."""
from __future__ import annotations

import contextlib
import hashlib
import warnings

from astropy.io import fits

from ..errors import BadInputError


def sha256_file(path, *, block: int = 1 << 22) -> tuple[str, int]:
    """SHA-256 hex digest and size in bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def open_fits(path, *, memmap=True):
    """Open a FITS file read-only (memory-mapped by default); BadInputError if not FITS or truncated."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-standard cards are checked by the schema, not here
            hdul = fits.open(path, mode="readonly", memmap=memmap, lazy_load_hdus=False)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({exc})") from None
    try:
        size = _file_size(path)
        for i, hdu in enumerate(hdul):
            start, span = _data_span(hdul, i)
            if span and start + span > size:
                raise BadInputError(path, f"truncated: HDU {i} ({hdu.name}) needs {start + span} bytes, "
                                          f"file has {size}")
        yield hdul
    finally:
        hdul.close()


def _data_span(hdul, index):
    """(byte offset, padded byte length) of an HDU's data.

    HDUs read from a file carry both (``_data_offset``, ``_data_size``); ``fileinfo`` gives the
    same but first checks every HDU for resizing, which costs milliseconds per call.
    """
    hdu = hdul[index]
    offset, size = getattr(hdu, "_data_offset", None), getattr(hdu, "_data_size", None)
    if offset is None or size is None:
        info = hdul.fileinfo(index)
        return info["datLoc"], info["datSpan"]
    return offset, size + (-size % 2880)


def _file_size(path):
    import os
    return os.stat(path).st_size


def data_location(hdul, index) -> dict:
    """Where an image HDU's data lie in its file: {index, offset, dtype, shape} for read_at().

    Scaled data (BZERO/BSCALE) get no offset: read_at() then reads them through astropy.
    """
    hdu = hdul[index]
    header = hdu.header
    shape = tuple(header[f"NAXIS{i}"] for i in range(header["NAXIS"], 0, -1))
    # once the data were read, astropy has rewritten BITPIX/BZERO/BSCALE in memory: use the file's values
    bitpix = getattr(hdu, "_orig_bitpix", header["BITPIX"])
    bzero = getattr(hdu, "_orig_bzero", header.get("BZERO", 0))
    bscale = getattr(hdu, "_orig_bscale", header.get("BSCALE", 1))
    where = {"index": index, "shape": shape, "offset": None, "dtype": None}
    if not bzero and bscale == 1:
        where["dtype"] = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix]
        where["offset"] = _data_span(hdul, index)[0]
    return where


def read_at(path, location, dtype) -> "np.ndarray":
    """Read an image HDU's data straight from the file bytes (no FITS parsing), as ``dtype``."""
    import numpy as np

    if location["offset"] is None:  # scaled integers: astropy applies BZERO/BSCALE (not memory-mappable)
        with open_fits(path, memmap=False) as hdul:
            return np.array(hdul[location["index"]].data, dtype=dtype)
    count = int(np.prod(location["shape"]))
    raw = np.fromfile(path, dtype=location["dtype"], count=count, offset=location["offset"])
    if raw.size != count:
        raise BadInputError(path, f"truncated: expected {count} values at byte {location['offset']}")
    return raw.reshape(location["shape"]).astype(dtype)


def hdu_data(hdul, name, path):
    """The data of a named HDU, with a BadInputError naming file and HDU if unreadable."""
    try:
        return hdul[name].data
    except KeyError:
        raise BadInputError(path, f"HDU {name} missing") from None
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(path, f"HDU {name}: data unreadable ({exc})") from None
