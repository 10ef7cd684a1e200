"""Read real Spitzer BCD files (image, uncertainty, mask) with their WCS and units.

Tolerates the quirks of SSC products: cubes (IRAC subarray, NAXIS = 3) with a
2-axis celestial WCS, ``DATE_OBS``/``MJD_OBS`` spelled with underscores,
duplicated keywords, padded strings, mask files without WCS, 'e-/sec' units.
Companion files share the BCD name with ``_bcd`` replaced by ``_bunc``
(uncertainty) and ``_bimsk`` (mask; IRAC) or ``_bmsk`` (MIPS, IRS).
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from reduce.errors import BadInputError

log = logging.getLogger(__name__)

_BIT = re.compile(r"^BIT(\d\d)$")
_UNIT_ALIASES = {"e-": "electron", "e": "electron", "sec": "s", "ster": "sr", "DN": "adu"}


@dataclass(frozen=True)
class BCD:
    """One BCD with its companions (uncertainty/mask None when absent)."""
    data: np.ndarray
    header: fits.Header
    wcs: WCS
    unit: u.UnitBase
    uncertainty: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_bits: dict | None = None


def parse_bunit(bunit):
    """BUNIT string -> astropy unit ('MJy/sr', 'e-/sec', 'DN/s', ...)."""
    text = str(bunit).strip()
    try:
        return u.Unit(text, format="fits")
    except ValueError:
        pass
    parts = re.split(r"([/*. ])", text)
    fixed = "".join(_UNIT_ALIASES.get(p, p) for p in parts)
    try:
        return u.Unit(fixed)
    except ValueError as exc:
        raise ValueError(f"BUNIT {bunit!r} is not a recognisable unit") from exc


def _celestial_wcs(path, header):
    """2-axis celestial WCS of a (possibly 3-axis) image header."""
    h = header.copy()
    for bad, good in (("DATE_OBS", "DATE-OBS"), ("MJD_OBS", "MJD-OBS")):
        if bad in h and good not in h:
            h[good] = h[bad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(h, naxis=2, relax=True)
    if not w.has_celestial:
        raise BadInputError(path, f"HDU 0: no celestial WCS (CTYPE1/2 = "
                                  f"{header.get('CTYPE1')!r}/{header.get('CTYPE2')!r})")
    return w


def _open_primary(path):
    path = Path(path)
    try:
        with fits.open(path, mode="readonly", memmap=False, ignore_missing_simple=True) as hdul:
            hdul.verify("silentfix+ignore")             # in memory only; the file is untouched
            hdu = hdul[0]
            if hdu.data is None and len(hdul) > 1:   # image in the first extension
                hdu = hdul[1]
            return np.array(hdu.data), hdu.header.copy()
    except OSError as exc:
        raise BadInputError(path, f"cannot open as FITS ({exc})") from exc


def read_bcd(path):
    """Open a BCD -> (data float32 [.., ny, nx], header, 2-axis celestial WCS).

    The unit is ``parse_bunit(header['BUNIT'])`` (MJy/sr for MIPS/IRAC BCDs).
    """
    data, header = _open_primary(path)
    if data is None or data.ndim < 2:
        raise BadInputError(path, "HDU 0: no image data")
    if "BUNIT" not in header:
        raise BadInputError(path, "HDU 0: keyword BUNIT missing")
    return data.astype(np.float32), header, _celestial_wcs(path, header)


def mask_legend(header):
    """{bit number: meaning} from the mask's ``BITnn`` cards (value 2**nn, comment = meaning)."""
    legend = {}
    for card in header.cards:
        m = _BIT.match(card.keyword)
        if m:
            bit = int(m.group(1))
            if card.value != 2**bit:
                log.warning("mask legend card %s = %r is not 2**%d", card.keyword, card.value, bit)
            legend[bit] = card.comment.strip()
    return legend


def read_mask(path):
    """Mask file -> (integer mask, {bit: meaning})."""
    data, header = _open_primary(path)
    if data is None or not np.issubdtype(data.dtype, np.integer):
        raise BadInputError(path, f"HDU 0: integer mask image expected, got "
                                  f"{None if data is None else data.dtype}")
    return data.astype(data.dtype.newbyteorder("=")), mask_legend(header)


def read_uncertainty(path):
    """Uncertainty file -> float32 array (same unit as the BCD)."""
    data, _ = _open_primary(path)
    if data is None:
        raise BadInputError(path, "HDU 0: no image data")
    return data.astype(np.float32)


def companion_paths(path):
    """(uncertainty, mask) paths beside a ``*_bcd.fits`` file (None when absent)."""
    path = Path(path)
    if "_bcd" not in path.name:
        return None, None
    unc = path.with_name(path.name.replace("_bcd", "_bunc"))
    masks = [path.with_name(path.name.replace("_bcd", s)) for s in ("_bimsk", "_bbmsk", "_bmsk")]
    mask = next((m for m in masks if m.is_file()), None)
    return (unc if unc.is_file() else None), mask


def read_bcd_products(path, *, uncertainty=None, mask=None):
    """A ``BCD`` with data, header, WCS, unit and (if found) uncertainty and mask.

    Companions default to ``companion_paths(path)``; their shapes must match.
    """
    data, header, w = read_bcd(path)
    unc_path, mask_path = companion_paths(path)
    unc_path, mask_path = uncertainty or unc_path, mask or mask_path
    unc = msk = legend = None
    if unc_path is not None:
        unc = read_uncertainty(unc_path)
        if unc.shape != data.shape:
            raise BadInputError(unc_path, f"shape {unc.shape} differs from the BCD's {data.shape}")
    if mask_path is not None:
        msk, legend = read_mask(mask_path)
        if msk.shape != data.shape:
            raise BadInputError(mask_path, f"shape {msk.shape} differs from the BCD's {data.shape}")
    return BCD(data, header, w, parse_bunit(header["BUNIT"]), unc, msk, legend)
