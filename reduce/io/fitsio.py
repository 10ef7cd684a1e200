"""Reading level-0 FITS files safely: read-only, integrity-checked, errors naming the file and HDU.

Everything FITS is CFITSIO's, through ``fitsio``: the HDU layout, the header values and the
verification of CHECKSUM and DATASUM (FITS 4.0 appendix J, ICD 1.1). Ingest reads each file's
bytes once, for their SHA-256 and the ICD's check that header text is ASCII; CFITSIO then reads
the file again (from the page cache). astropy is the reference the tests compare against, and
writes the checksums of the simulated files (``add_checksums``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError

_NOT_TEXT = re.compile(rb"[^\x20-\x7e]")  # FITS header text is ASCII 0x20-0x7E (ICD 1.1)
_NO_VALUE = {None, "", "COMMENT", "HISTORY", "CONTINUE"}  # cards that carry no keyword value


def sha256_file(path, *, block: int = 1 << 22) -> tuple[str, int]:
    """SHA-256 hex digest and size in bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ---------------------------------------------------------------- layout, headers and integrity (CFITSIO)
@dataclass(frozen=True)
class HduSpan:
    """One HDU of a file: its header values and where it lies (byte offsets): header [start, data),
    data with fill [data, end)."""
    index: int
    name: str
    start: int
    data: int
    end: int
    header: dict  # keyword -> value (str, bool, int, float; None if undefined), first of duplicates

    @property
    def label(self):
        return f"HDU {self.index} ({self.name})" if self.name else f"HDU {self.index}"


def _cfitsio_reason(exc) -> str:
    """A CFITSIO error in one line: its distinct ``FITSIO status = N: what`` lines."""
    if isinstance(exc, UnicodeDecodeError):  # fitsio could not decode CFITSIO's message: it quotes the header
        return f"a header byte 0x{exc.object[exc.start]:02x} that is not ASCII text (0x20-0x7E)"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    status = list(dict.fromkeys(line for line in lines if line.startswith("FITSIO status")))
    return "; ".join(status or lines[:1]) or type(exc).__name__


def _open(path):
    import fitsio

    try:
        return fitsio.FITS(str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({_cfitsio_reason(exc)})") from None


def _header(hdu) -> dict:
    """An HDU's keyword values as CFITSIO reads them (long strings joined) and astropy gives them: the
    first of duplicates (``read_header`` keeps the last)."""
    values = {}
    for card in hdu.read_header_list():
        if card["name"] not in _NO_VALUE and card["name"] not in values:
            values[card["name"]] = card["value"]
    return values


def _layout(fits, buf, path):
    """(HDU index, name, header start, data start, data end) of every HDU CFITSIO finds; BadInputError
    if the file is truncated, or an extension follows that CFITSIO cannot read."""
    size, layout = len(buf), []
    try:
        hdus = list(fits)  # CFITSIO walks the HDUs, up to the first it cannot read
        for index, hdu in enumerate(hdus):
            offsets = hdu.get_offsets()
            start, data, end = offsets["header_start"], offsets["data_start"], offsets["data_end"]  # end: with fill
            name = hdu.get_extname() or ("PRIMARY" if index == 0 else "")
            if end > size:
                raise BadInputError(path, f"truncated: HDU {index} ({name}) needs {end} bytes, file has {size}")
            layout.append((index, name, start, data, end))
        if not layout:
            raise BadInputError(path, "not a readable FITS file (no HDU)")
        end = layout[-1][-1]
        if buf[end:end + 8] == b"XTENSION":  # CFITSIO stopped at it (other bytes after the last HDU: ignored)
            try:
                fits.movabs_ext(len(layout))
            except (OSError, RuntimeError, UnicodeDecodeError) as exc:
                raise BadInputError(path, f"not a readable FITS file (HDU {len(layout)}, the extension at byte "
                                          f"{end}: {_cfitsio_reason(exc)})") from None
    except (OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({_cfitsio_reason(exc)})") from None
    return layout


def hdu_spans(path, buf=None) -> list[HduSpan]:
    """The HDUs of a FITS file as CFITSIO reads them (layout, header values), without the integrity
    checks of ``check_level0``; BadInputError if not FITS or truncated. ``buf``: the file's bytes."""
    with open_level0(path, buf, integrity=False) as f:
        return f.spans


def check_level0(path, buf=None) -> list[HduSpan]:
    """The HDUs of a level-0 file after the ICD 1.1 integrity checks (``open_level0``)."""
    with open_level0(path, buf) as f:
        return f.spans


def _read(fits, path, buf, integrity):
    """The HDUs of an open file (see ``open_level0``)."""
    if buf is None:
        with open(path, "rb") as f:
            buf = f.read()
    layout = _layout(fits, buf, path)
    for index, name, start, data, _ in layout if integrity else ():
        bad = _NOT_TEXT.search(buf, start, data)
        if bad:
            raise BadInputError(path, f"HDU {index} ({name}): header byte 0x{bad.group()[0]:02x} at file "
                                      f"offset {bad.start()} is not ASCII text (0x20-0x7E)")
    try:
        spans = [HduSpan(*where, _header(fits[where[0]])) for where in layout]
        for s in spans if integrity else ():
            if "CHECKSUM" in s.header or "DATASUM" in s.header:
                # CFITSIO: 1 ok, 0 keyword absent, -1 failed (fitsio's public verify_checksum raises
                # when a keyword is absent; the ICD makes both optional)
                verdict = fits._FITS.verify_checksum(s.index + 1)
                if verdict["dataok"] == -1:
                    raise BadInputError(path, f"{s.label}: DATASUM check failed (data corrupted)")
                if verdict["hduok"] == -1:
                    raise BadInputError(path, f"{s.label}: CHECKSUM check failed (header or data corrupted)")
    except (OSError, RuntimeError, ValueError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({_cfitsio_reason(exc)})") from None
    return spans


# ---------------------------------------------------------------- writing checksums (astropy)
def add_checksums(hdul):
    """Add DATASUM and CHECKSUM (FITS 4.0 appendix J, ICD 1.1) to every HDU of an astropy HDUList, with
    fixed comments (astropy's own carry the time: with these, equal HDUs give equal bytes). The last
    change before ``hdul.writeto`` (without ``checksum``); returns ``hdul``."""
    for hdu in hdul:
        hdu.add_datasum(when="data unit checksum")
        hdu.add_checksum(when="HDU checksum", override_datasum=True)
    return hdul


# ---------------------------------------------------------------- reading (CFITSIO)
Column = namedtuple("Column", "name format")


class Hdu:
    """One HDU: ``header`` (as ``check_level0`` read it), ``data`` (read with CFITSIO when first used),
    ``columns`` (binary tables only), ``span`` (where it lies in the file)."""

    def __init__(self, fits, span):
        self._fits, self.span, self.name, self.header = fits, span, span.name, span.header

    @property
    def columns(self):
        h = self.header
        if h.get("XTENSION") != "BINTABLE":
            raise AttributeError(f"{self.span.label} is not a binary table")
        return [Column(str(h.get(f"TTYPE{i}", "")).strip(), str(h.get(f"TFORM{i}", "")).strip())
                for i in range(1, int(h.get("TFIELDS", 0)) + 1)]

    @functools.cached_property
    def data(self):
        return self._fits[self.span.index].read() if self.header.get("NAXIS") else None


class Level0File:
    """A level-0 FITS file read with CFITSIO, its HDUs by position or EXTNAME (as an astropy HDUList)."""

    def __init__(self, fits, spans):
        self._fits, self.spans, self._hdus = fits, spans, {}

    def __len__(self):
        return len(self.spans)

    def __getitem__(self, key) -> Hdu:
        if isinstance(key, str):
            name, key = key, next((s.index for s in self.spans if s.name.upper() == key.upper()), None)
            if key is None:
                raise KeyError(name)
        if not 0 <= key < len(self.spans):
            raise IndexError(key)
        if key not in self._hdus:
            self._hdus[key] = Hdu(self._fits, self.spans[key])
        return self._hdus[key]

    def location(self, key) -> dict:
        """Where an image HDU's data lie in the file, for ``read_at``: {index, offset, dtype (of the
        file), shape, scale: (BSCALE, BZERO)}."""
        span = self[key].span
        h = span.header
        return {"index": span.index, "offset": span.data,
                "shape": tuple(h[f"NAXIS{i}"] for i in range(h["NAXIS"], 0, -1)),
                "dtype": {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[h["BITPIX"]],
                "scale": (h.get("BSCALE", 1), h.get("BZERO", 0))}


@contextlib.contextmanager
def open_level0(path, buf=None, *, integrity=True):
    """Open a level-0 file with CFITSIO (read-only), after the ICD 1.1 integrity checks: a
    ``Level0File``. ``buf``: the file's bytes, if already read.

    Every header is ASCII text (0x20-0x7E); where an HDU carries DATASUM or CHECKSUM, CFITSIO
    verifies its data (DATASUM) and the whole HDU (CHECKSUM). BadInputError names the file,
    the HDU and the check that failed; also if the file is not FITS or truncated. With
    ``integrity=False``, only the layout and the headers are read (files of other pipelines).
    """
    fits = _open(path)
    try:
        yield Level0File(fits, _read(fits, path, buf, integrity))
    finally:
        fits.close()


def read_at(path, location, dtype) -> np.ndarray:
    """Read an image HDU's data straight from the file bytes (no FITS parsing), as ``dtype``
    (scaled integers: BSCALE * stored + BZERO, computed in float64)."""
    count = int(np.prod(location["shape"]))
    raw = np.fromfile(path, dtype=location["dtype"], count=count, offset=location["offset"])
    if raw.size != count:
        raise BadInputError(path, f"truncated: expected {count} values at byte {location['offset']}")
    bscale, bzero = location.get("scale", (1, 0))
    if (bscale, bzero) != (1, 0):
        raw = raw * np.float64(bscale) + np.float64(bzero)
    return raw.reshape(location["shape"]).astype(dtype)


def hdu_data(hdul, name, path):
    """The data of a named HDU, with a BadInputError naming file and HDU if unreadable."""
    try:
        return hdul[name].data
    except KeyError:
        raise BadInputError(path, f"HDU {name} missing") from None
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(path, f"HDU {name}: data unreadable ({exc})") from None
