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
def open_fits(path):
    """Open a FITS file read-only (memory-mapped); BadInputError if it is not FITS or truncated."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-standard cards are checked by the schema, not here
            hdul = fits.open(path, mode="readonly", memmap=True, lazy_load_hdus=False)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({exc})") from None
    try:
        size = _file_size(path)
        for i, hdu in enumerate(hdul):
            info = hdul.fileinfo(i)
            end = info["datLoc"] + info["datSpan"]
            if info["datSpan"] and end > size:
                raise BadInputError(path, f"truncated: HDU {i} ({hdu.name}) needs {end} bytes, file has {size}")
        yield hdul
    finally:
        hdul.close()


def _file_size(path):
    import os
    return os.stat(path).st_size


def hdu_data(hdul, name, path):
    """The data of a named HDU, with a BadInputError naming file and HDU if unreadable."""
    try:
        return hdul[name].data
    except KeyError:
        raise BadInputError(path, f"HDU {name} missing") from None
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(path, f"HDU {name}: data unreadable ({exc})") from None
