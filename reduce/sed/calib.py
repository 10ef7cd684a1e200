"""Read and validate the MIPS SED-mode calibration reference files (ICD section 3).

``load_sed_calibration(folder)`` opens (read-only) the six ``mips70sed_*.fits`` files, checks
their PRIMARY keywords, data shapes and dtypes, required keywords, extensions and the APCORR
table, and returns a frozen ``SedCalibrationSet`` (read-only arrays, scalars, each file's
identity). ``check_sed_calset`` checks a set recorded at ingest (files present, SHA-256
unchanged); ``SedCalTable`` stacks the sets of the store group ``mips70sed`` for the lazy steps,
with the interface of ``reduce.mips.calib.CalTable`` (so the Ge ramp steps run unchanged).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits

from reduce.errors import BadInputError, CalibrationError
from reduce.io.fitsio import sha256_file
from reduce.mips.calib import CalFile, CalibrationSet, CalTable, _check_primary, recorded_folder, unlike_record
from reduce.schemas import load_schema

log = logging.getLogger(__name__)

SED_RAW_GROUP = "mips70sed"
"""Store group (schemas/mips_store.yaml) of the SED-mode raw DCEs."""
CHNLNUM = 2
BAND = 70
SHAPE = (32, 32)
"""Array shape [ny, nx]: y (rows) spectral, x (columns) along the slit."""
NROWS, NCOLS = 27, 16
"""Calibrated window: rows 0..26, columns 0..15 (0-based)."""
_SCHEMA = load_schema("mips_cal")["sed"]
SED_FILES = {reftype: spec["pattern"] for reftype, spec in _SCHEMA["files"].items()}
"""REFTYPE -> file name: DARK, ILLUM, NONLIN, PMASK, CAL, WAVE (schemas/mips_cal.yaml ``sed``)."""
PMASK_BITS = dict(_SCHEMA["pmask_bits"])
"""Bits of mips70sed_pmask.fits: dead 1, hot 2, noisy 4, no_flat 8, outside (the calibrated window) 16."""
CAL_KEYWORDS = tuple(_SCHEMA["files"]["CAL"]["keywords"])
WAVE_KEYWORDS = tuple(_SCHEMA["files"]["WAVE"]["keywords"])
APCORR_COLUMNS = tuple(_SCHEMA["files"]["WAVE"]["tables"]["APCORR"])
ARCSEC_PER_RAD = 206264.80624709636
WAVE_TOL_UM = 1e-3
"""Largest |WAVE - (WAVE0 + DISP*ROW)| accepted in the APCORR table (um; float32 rounding)."""


@dataclass(frozen=True)
class SedCalibrationSet:
    """Everything the SED pipeline needs from one set of reference files (arrays read-only).

    dark (DN/s), illum, stimamp (DN/s) float32 [32, 32]; pmask int16 [32, 32] (``PMASK_BITS``);
    nonlin float32 [K, 32, 32]; fluxconv_row float32 [32] (MJy/sr per DN/s of each row). Scalars:
    gain (e-/DN), rdnoise (DN per read), satlevel (DN), wave0, disp (um, um/row), tilt (um/column),
    centcol (0-based column of the slit centre), pxscale (arcsec/column), slitw (arcsec).
    apcorr_row (int [n]), apcorr_wave (um [n]), apcorr [n]: the WAVE file's APCORR table.
    files: the CalFile of each file (DARK, ILLUM, NONLIN, PMASK, CAL, WAVE).
    """
    chnlnum: int
    dark: np.ndarray
    illum: np.ndarray
    pmask: np.ndarray
    nonlin: np.ndarray
    stimamp: np.ndarray
    fluxconv_row: np.ndarray
    gain: float
    rdnoise: float
    satlevel: float
    wave0: float
    disp: float
    tilt: float
    centcol: float
    pxscale: float
    slitw: float
    apcorr_row: np.ndarray
    apcorr_wave: np.ndarray
    apcorr: np.ndarray
    files: tuple

    @property
    def flat(self):
        """The illumination correction (the imaging steps' ``flat``)."""
        return self.illum

    @property
    def fluxconv(self):
        """NaN: the SED flux calibration is per row (``fluxconv_row``)."""
        return float("nan")

    @property
    def distortion(self):
        """{'PXSCAL1', 'PXSCAL2'}: arcsec per column (the imaging plan's pixel scale)."""
        return {"PXSCAL1": self.pxscale, "PXSCAL2": self.pxscale}

    @property
    def band(self):
        return BAND

    @property
    def shape(self):
        return SHAPE

    @property
    def omega_sr(self):
        """Solid angle of one slit pixel, SLITW x PXSCALE, in sr."""
        return self.slitw * self.pxscale / ARCSEC_PER_RAD ** 2

    @property
    def calvers(self):
        """The CALVERS of the set ('+'-joined when files differ)."""
        return CalibrationSet.calvers.fget(self)

    def wave_values(self) -> dict:
        """WAVE0, DISP, TILT (um), CENTCOL, PXSCALE, SLITW (arcsec) of the WAVE file, lower-case keys."""
        return {key.lower(): float(getattr(self, key.lower())) for key in WAVE_KEYWORDS}

    def provenance_cards(self):
        """[(keyword, value, comment)] naming each file and its SHA-256 (CFDARK, CSDARK, ... CFWAVE, CSWAVE)."""
        return CalibrationSet.provenance_cards(self)


# ---------------------------------------------------------------- reading
def _read(folder, reftype):
    """(path, [HDU copies], CalFile) of one SED reference file, PRIMARY keywords checked."""
    path = Path(folder) / SED_FILES[reftype]
    if not path.is_file():
        raise CalibrationError(f"{path}: {reftype} calibration file of the 70 um SED mode not found")
    try:
        hdul = fits.open(path, mode="readonly", memmap=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({exc})") from exc
    with hdul:
        _check_primary(path, hdul[0].header, CHNLNUM, reftype)
        hdul.readall()
        ident = CalFile(path.name, reftype, sha256_file(path)[0], str(hdul[0].header["CALVERS"]))
        return path, [h.copy() for h in hdul], ident


def _array(path, hdu, where, shape, dtype):
    """Read-only native copy of an image HDU's data, checked against ``shape`` (None: any length) and
    ``dtype`` (float32 or int16)."""
    data, want = hdu.data, np.dtype(dtype)
    ok = (data is not None and isinstance(data, np.ndarray) and data.dtype.kind == want.kind
          and data.dtype.itemsize == want.itemsize and data.ndim == len(shape)
          and all(s is None or s == n for s, n in zip(shape, data.shape)))
    if not ok:
        got = "no data" if data is None else f"data {data.dtype.name} {tuple(data.shape)}"
        wanted = "(" + ", ".join("K" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise BadInputError(path, f"HDU {where}: {got}, expected {want.name} {wanted}")
    out = np.array(data, dtype=want)      # native byte order, our own copy
    out.flags.writeable = False
    return out


def _numbers(path, header, keys, where="0 (PRIMARY)"):
    """{key.lower(): float} of required numeric keywords (present, a number, finite)."""
    out = {}
    for key in keys:
        if key not in header:
            raise BadInputError(path, f"HDU {where}: required keyword {key} missing")
        value = header[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise BadInputError(path, f"HDU {where}: keyword {key} = {value!r} is not a number")
        if not np.isfinite(value):
            raise BadInputError(path, f"HDU {where}: keyword {key} = {value!r} is not finite")
        out[key.lower()] = float(value)
    return out


def _extension(path, hdus, name):
    for h in hdus[1:]:
        if h.name.upper() == name:
            return h
    raise BadInputError(path, f"extension {name} missing")


def _apcorr_table(path, hdus, wave):
    """(row int64 [n], wave float64 [n], apcorr float64 [n]) of the APCORR table, checked: rows 0..26
    once each, WAVE = WAVE0 + DISP*ROW, APCORR finite and > 0."""
    hdu = _extension(path, hdus, "APCORR")
    if not isinstance(hdu, fits.BinTableHDU):
        raise BadInputError(path, "HDU APCORR is not a binary table")
    names = [c.upper() for c in hdu.columns.names]
    for col in APCORR_COLUMNS:
        if col not in names:
            raise BadInputError(path, f"HDU APCORR: column {col} missing")
    data = hdu.data
    cols = {c: np.asarray(data[c]) for c in APCORR_COLUMNS}
    for col, kinds in (("ROW", "iu"), ("WAVE", "f"), ("APCORR", "f")):
        if cols[col].ndim != 1 or cols[col].dtype.kind not in kinds:
            raise BadInputError(path, f"HDU APCORR: column {col} has {cols[col].dtype.name} values of shape "
                                      f"{cols[col].shape[1:]}, expected one {'integer' if kinds == 'iu' else 'float'} "
                                      f"per row")
    row = cols["ROW"].astype(np.int64)
    if sorted(row.tolist()) != list(range(NROWS)):
        raise BadInputError(path, f"HDU APCORR: column ROW holds {row.tolist()}, expected each of rows "
                                  f"0..{NROWS - 1} once")
    wav = cols["WAVE"].astype(np.float64)
    off = np.abs(wav - (wave["wave0"] + wave["disp"] * row))
    if not np.all(off <= WAVE_TOL_UM):
        i = int(np.nanargmax(np.where(np.isfinite(off), off, np.inf)))
        raise BadInputError(path, f"HDU APCORR: WAVE = {wav[i]:.4f} um at ROW {row[i]}, expected WAVE0 + DISP*ROW = "
                                  f"{wave['wave0'] + wave['disp'] * row[i]:.4f} um")
    apc = cols["APCORR"].astype(np.float64)
    bad = ~(np.isfinite(apc) & (apc > 0))
    if bad.any():
        raise BadInputError(path, f"HDU APCORR: APCORR not finite and > 0 at ROW {row[bad].tolist()}")
    order = np.argsort(row)
    out = []
    for a in (row[order], wav[order], apc[order]):
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def load_sed_calibration(folder) -> SedCalibrationSet:
    """Read the six SED reference files (``SED_FILES``) from ``folder``.

    Raises CalibrationError for a missing file, BadInputError (naming the file and HDU) for one
    that does not follow ICD section 3.
    """
    kw, files = {}, []
    for reftype, shape, dtype in (("DARK", SHAPE, np.float32), ("ILLUM", SHAPE, np.float32),
                                  ("NONLIN", (None,) + SHAPE, np.float32), ("PMASK", SHAPE, np.int16)):
        path, hdus, ident = _read(folder, reftype)
        kw[reftype.lower()] = _array(path, hdus[0], "0 (PRIMARY)", shape, dtype)
        files.append(ident)
    path, hdus, ident = _read(folder, "CAL")
    kw.update(_numbers(path, hdus[0].header, CAL_KEYWORDS))
    kw["fluxconv_row"] = _array(path, _extension(path, hdus, "FLUXCONV"), "FLUXCONV", SHAPE[:1], np.float32)
    bad = ~(np.isfinite(kw["fluxconv_row"][:NROWS]) & (kw["fluxconv_row"][:NROWS] > 0))
    if bad.any():
        raise BadInputError(path, f"HDU FLUXCONV: not finite and > 0 in calibrated rows {np.flatnonzero(bad).tolist()}")
    kw["stimamp"] = _array(path, _extension(path, hdus, "STIMAMP"), "STIMAMP", SHAPE, np.float32)
    files.append(ident)
    path, hdus, ident = _read(folder, "WAVE")
    wave = _numbers(path, hdus[0].header, WAVE_KEYWORDS)
    kw.update(wave)
    kw["apcorr_row"], kw["apcorr_wave"], kw["apcorr"] = _apcorr_table(path, hdus, wave)
    files.append(ident)
    if len({f.calvers for f in files}) > 1:
        log.warning("SED calibration files in %s have different CALVERS: %s", folder,
                    {f.name: f.calvers for f in files})
    return SedCalibrationSet(chnlnum=CHNLNUM, files=tuple(files), **kw)


def check_sed_calset(identity: dict):
    """Load one SED calibration set recorded at ingest -> (SedCalibrationSet or None, reason).

    ``identity``: {REFTYPE: {name, path, sha256, calvers}} from the attribute ``calibration_sets``
    of the group ``mips70sed``. Every file must exist and have the recorded SHA-256.
    """
    folder, reason = recorded_folder(identity)
    if folder is None:
        return None, reason
    try:
        cs = load_sed_calibration(folder)
    except (CalibrationError, BadInputError) as exc:
        return None, f"SED calibration set in {folder}: {exc}"
    reason = unlike_record(identity, cs, folder)
    if reason:
        return None, reason
    bad = [k for k in ("gain", "rdnoise", "satlevel", "disp", "pxscale", "slitw") if getattr(cs, k) <= 0]
    if bad:
        return None, f"SED calibration set in {folder}: {', '.join(k.upper() for k in bad)} not > 0"
    return cs, ""


@dataclass(frozen=True)
class SedCalTable(CalTable):
    """The SED calibration sets of the group ``mips70sed``, indexed like its ``calibration_sets``.

    As CalTable (``image``: dark, illum/flat, pmask, nonlin, stimamp; ``scalar``: gain, rdnoise,
    satlevel, wave0, disp, tilt, centcol, pxscale, slitw; ``checksums``; ``main``), plus ``rows``
    (per-row arrays such as fluxconv_row) and ``wave`` (the WAVE values of one set).
    """

    @classmethod
    def load(cls, calibration_sets, chnlnum=CHNLNUM):
        if chnlnum != CHNLNUM:
            raise ValueError(f"the SED mode uses CHNLNUM {CHNLNUM}, got {chnlnum!r}")
        sets, reasons, idents = [], [], []
        for identity in calibration_sets:
            cs, reason = check_sed_calset(identity)
            if reason:
                log.warning("MIPS 70 um SED: %s", reason)
            sets.append(cs)
            reasons.append(reason)
            idents.append({k: {f: v[f] for f in ("name", "sha256", "calvers")} for k, v in identity.items()})
        return cls(CHNLNUM, tuple(sets), tuple(reasons), tuple(idents))

    def rows(self, name, *, fill=np.nan, dtype=np.float32) -> xr.DataArray:
        """(cset, y) stack of a per-row attribute ('fluxconv_row' [32]; also 'apcorr' [27], padded with
        ``fill``); ``fill`` where a set is unusable."""
        arrays = [None if cs is None else np.asarray(getattr(cs, name)) for cs in self.sets]
        n = max((a.shape[0] for a in arrays if a is not None), default=SHAPE[0])
        out = np.full((max(len(arrays), 1), n), fill, dtype=dtype)
        for i, a in enumerate(arrays):
            if a is not None:
                out[i, :a.shape[0]] = a
        return xr.DataArray(out, dims=("cset", "y"))

    def wave(self, k) -> dict:
        """WAVE0, DISP, TILT (um), CENTCOL, PXSCALE, SLITW (arcsec) and the APCORR table (apcorr_row,
        apcorr_wave, apcorr) of set ``k`` (lower-case keys); CalibrationError if the set is unusable."""
        cs = self.sets[k] if 0 <= k < len(self.sets) else None
        if cs is None:
            why = self.reasons[k] if 0 <= k < len(self.reasons) else "no such set"
            raise CalibrationError(f"SED calibration set {k} is not usable: {why}")
        out = cs.wave_values()
        out.update(apcorr_row=cs.apcorr_row, apcorr_wave=cs.apcorr_wave, apcorr=cs.apcorr)
        return out
