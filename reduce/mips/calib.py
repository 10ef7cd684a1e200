"""Read and validate the MIPS calibration reference files of ICD §2.

``load_calibration(folder, chnlnum)`` opens (read-only) the dark, flat,
pmask, distortion and cal files of one array (plus nonlin for 70/160 um),
checks their PRIMARY keywords, shapes and required keywords, and returns a
frozen ``CalibrationSet`` with read-only arrays, the scalars and every
file's identity (name, SHA-256, CALVERS) for product provenance.
``CalTable.load`` checks the sets recorded at ingest (files present, SHA-256
unchanged) and stacks them per set for the steps (``image``, ``scalar``).
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

log = logging.getLogger(__name__)

BAND = {1: 24, 2: 70, 3: 160}
"""CHNLNUM -> band (um)."""
SHAPE = {1: (128, 128), 2: (32, 32), 3: (2, 20)}
"""CHNLNUM -> array shape [ny, nx]."""
PRIMARY_KEYWORDS = ("TELESCOP", "INSTRUME", "CHNLNUM", "REFTYPE", "CALVERS")
CAL_KEYWORDS = {1: ("FLUXCONV", "GAIN", "RDNOISE", "SATLEVEL", "DROOP", "JAILBAR"),
                2: ("FLUXCONV", "GAIN", "RDNOISE", "SATLEVEL"),
                3: ("FLUXCONV", "GAIN", "RDNOISE", "SATLEVEL")}
DISTORTION_KEYWORDS = ("WCSAXES", "CTYPE1", "CTYPE2", "PXSCAL1", "PXSCAL2", "CRPIX1", "CRPIX2",
                       "A_ORDER", "B_ORDER")


@dataclass(frozen=True)
class CalFile:
    """Identity of one reference file, as recorded in product headers."""
    name: str
    reftype: str
    sha256: str
    calvers: str


@dataclass(frozen=True)
class CalibrationSet:
    """Everything the level-1 pipeline needs for one array (arrays read-only).

    dark (DN/s), flat, pmask (int16 bits) are [ny, nx]; nonlin [K, ny, nx]
    (70/160 only); stimamp [ny, nx] DN/s (70/160 only); distortion is the
    DISTORT header (a copy).  Scalars as in the CAL header (jbthresh: the
    optional JBTHRESH keyword, None when absent).
    """
    chnlnum: int
    dark: np.ndarray
    flat: np.ndarray
    pmask: np.ndarray
    distortion: fits.Header
    fluxconv: float
    gain: float
    rdnoise: float
    satlevel: float
    files: tuple
    nonlin: np.ndarray | None = None
    stimamp: np.ndarray | None = None
    droop: float | None = None
    jailbar: float | None = None
    jbthresh: float | None = None

    @property
    def band(self):
        return BAND[self.chnlnum]

    @property
    def shape(self):
        return SHAPE[self.chnlnum]

    @property
    def calvers(self):
        """The CALVERS of the set ('+'-joined when files differ)."""
        return "+".join(sorted({f.calvers for f in self.files}))

    def provenance_cards(self):
        """[(keyword, value, comment)] naming each file and its SHA-256, for a product header."""
        cards = []
        for f in self.files:
            key = f.reftype[:6]
            cards += [(f"CF{key}", f.name, f"{f.reftype} reference file (CALVERS {f.calvers})"),
                      (f"CS{key}"[:8], f.sha256[:64], f"SHA-256 of {f.name}")]
        return cards


def _check_primary(path, header, chnlnum, reftype):
    for key in PRIMARY_KEYWORDS:
        if key not in header:
            raise BadInputError(path, f"HDU 0 (PRIMARY): required keyword {key} missing")
    expect = {"TELESCOP": "Spitzer", "INSTRUME": "MIPS", "REFTYPE": reftype}
    for key, value in expect.items():
        if str(header[key]).strip().upper() != value.upper():
            raise BadInputError(path, f"HDU 0: {key} = {header[key]!r}, expected {value!r}")
    if header["CHNLNUM"] != chnlnum:
        raise BadInputError(path, f"HDU 0: CHNLNUM = {header['CHNLNUM']!r} does not match the "
                                  f"requested channel {chnlnum} (mismatched calibration file)")


def _check_keywords(path, header, keys, hdu="0 (PRIMARY)"):
    for key in keys:
        if key not in header:
            raise BadInputError(path, f"HDU {hdu}: required keyword {key} missing")
        value = header[key]
        if not isinstance(value, str) and not np.isfinite(value):
            raise BadInputError(path, f"HDU {hdu}: keyword {key} = {value!r} is not finite")


def _image(path, hdu, name, shape, dtype):
    data = hdu.data
    if data is None or data.shape != shape:
        got = None if data is None else data.shape
        raise BadInputError(path, f"HDU {name}: data shape {got}, expected {shape} [ny, nx]")
    out = np.array(data, dtype=dtype)       # native byte order, our own copy
    out.flags.writeable = False
    return out


def _read(folder, chnlnum, suffix, reftype):
    path = Path(folder) / f"mips{BAND[chnlnum]}_{suffix}.fits"
    if not path.is_file():
        raise CalibrationError(
            f"{path}: {reftype} calibration file for CHNLNUM={chnlnum} not found")
    try:
        hdul = fits.open(path, mode="readonly", memmap=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable FITS file ({exc})") from exc
    with hdul:
        _check_primary(path, hdul[0].header, chnlnum, reftype)
        hdul.readall()
        ident = CalFile(path.name, reftype, sha256_file(path)[0], str(hdul[0].header["CALVERS"]))
        return path, [h.copy() for h in hdul], ident


def load_calibration(folder, chnlnum):
    """Read the reference files of array ``chnlnum`` (1, 2, 3) from ``folder``."""
    if chnlnum not in BAND:
        raise ValueError(f"CHNLNUM must be 1, 2 or 3, got {chnlnum!r}")
    shape = SHAPE[chnlnum]
    files, kw = [], {}
    for suffix, reftype in (("dark", "DARK"), ("flat", "FLAT"), ("pmask", "PMASK")):
        path, hdus, ident = _read(folder, chnlnum, suffix, reftype)
        dtype = np.int16 if reftype == "PMASK" else np.float32
        kw[suffix] = _image(path, hdus[0], "0 (PRIMARY)", shape, dtype)
        files.append(ident)
    if chnlnum in (2, 3):
        path, hdus, ident = _read(folder, chnlnum, "nonlin", "NONLIN")
        data = hdus[0].data
        if data is None or data.ndim != 3 or data.shape[1:] != shape:
            got = None if data is None else data.shape
            raise BadInputError(path, f"HDU 0 (PRIMARY): data shape {got}, "
                                      f"expected [K, {shape[0]}, {shape[1]}]")
        kw["nonlin"] = _image(path, hdus[0], "0 (PRIMARY)", data.shape, np.float32)
        files.append(ident)
    path, hdus, ident = _read(folder, chnlnum, "distortion", "DISTORT")
    _check_keywords(path, hdus[0].header, DISTORTION_KEYWORDS)
    kw["distortion"] = hdus[0].header.copy()
    files.append(ident)
    path, hdus, ident = _read(folder, chnlnum, "cal", "CAL")
    hdr = hdus[0].header
    _check_keywords(path, hdr, CAL_KEYWORDS[chnlnum])
    for key in CAL_KEYWORDS[chnlnum]:
        kw[key.lower()] = float(hdr[key])
    if chnlnum == 1 and "JBTHRESH" in hdr:       # optional: jailbar "bright" threshold, DN/s
        kw["jbthresh"] = float(hdr["JBTHRESH"])
    if chnlnum in (2, 3):
        names = [h.name for h in hdus]
        if "STIMAMP" not in names:
            raise BadInputError(path, "image extension STIMAMP missing")
        kw["stimamp"] = _image(path, hdus[names.index("STIMAMP")], "STIMAMP", shape, np.float32)
    files.append(ident)
    if len({f.calvers for f in files}) > 1:
        log.warning("calibration files of CHNLNUM=%d in %s have different CALVERS: %s",
                    chnlnum, folder, {f.name: f.calvers for f in files})
    return CalibrationSet(chnlnum=chnlnum, files=tuple(files), **kw)


def recorded_folder(identity: dict):
    """(folder of one calibration set recorded at ingest, or None; the reason): every file of
    ``identity`` ({REFTYPE: {name, path, sha256, calvers}}) present, with its recorded SHA-256,
    all in one folder."""
    folders = set()
    for reftype, entry in sorted(identity.items()):
        path = Path(entry.get("path", entry["name"]))
        folders.add(path.parent)
        if not path.is_file():
            return None, f"calibration file {path} ({reftype}) is missing"
        sha = sha256_file(path)[0]
        if sha != entry["sha256"]:
            return None, (f"calibration file {path} ({reftype}) has SHA-256 {sha[:16]}..., not the "
                          f"{entry['sha256'][:16]}... recorded at ingest (file changed)")
    if len(folders) != 1:
        return None, f"calibration files of one set lie in several folders: {sorted(map(str, folders))}"
    return folders.pop(), ""


def unlike_record(identity: dict, cs, folder) -> str:
    """Why the loaded set ``cs`` is not the one recorded (a file changed since the check), or ''."""
    recorded = {e["name"]: e["sha256"] for e in identity.values()}
    for f in cs.files:
        if recorded.get(f.name) != f.sha256:
            return f"calibration file {folder / f.name}: SHA-256 differs from the one recorded at ingest"
    return ""


def check_calset(identity: dict, chnlnum: int):
    """Load one calibration set recorded at ingest -> (CalibrationSet or None, reason).

    ``identity``: {REFTYPE: {name, path, sha256, calvers}} from the group attribute
    ``calibration_sets``. Every file must exist and have the recorded SHA-256.
    """
    folder, reason = recorded_folder(identity)
    if folder is None:
        return None, reason
    try:
        cs = load_calibration(folder, chnlnum)
    except (CalibrationError, BadInputError) as exc:
        return None, f"calibration set in {folder}: {exc}"
    reason = unlike_record(identity, cs, folder)
    if reason:
        return None, reason
    bad = [k for k in ("gain", "rdnoise", "fluxconv", "satlevel") if not np.isfinite(getattr(cs, k))
           or getattr(cs, k) <= 0]
    if bad:
        return None, f"calibration set in {folder}: {', '.join(k.upper() for k in bad)} not finite and > 0"
    return cs, ""


@dataclass(frozen=True)
class CalTable:
    """The calibration sets of one array, indexed like the store's ``calibration_sets``.

    ``sets[k]`` is a CalibrationSet or None (then ``reasons[k]`` says why);
    ``identities[k]`` the recorded {REFTYPE: {name, sha256, calvers}}.
    """

    chnlnum: int
    sets: tuple
    reasons: tuple
    identities: tuple

    @classmethod
    def load(cls, calibration_sets, chnlnum):
        sets, reasons, idents = [], [], []
        for identity in calibration_sets:
            cs, reason = check_calset(identity, chnlnum)
            if reason:
                log.warning("MIPS %d um: %s", BAND[chnlnum], reason)
            sets.append(cs)
            reasons.append(reason)
            idents.append({k: {f: v[f] for f in ("name", "sha256", "calvers")} for k, v in identity.items()})
        return cls(chnlnum, tuple(sets), tuple(reasons), tuple(idents))

    @property
    def shape(self):
        return SHAPE[self.chnlnum]

    def image(self, name, *, fill=np.nan, dtype=np.float32) -> xr.DataArray:
        """(cset, y, x) stack of one image attribute ('nonlin': (cset, k, y, x), zero-padded in k);
        ``fill`` where a set is unusable."""
        arrays = [None if cs is None else np.asarray(getattr(cs, name)) for cs in self.sets]
        shape, dims = self.shape, ("cset", "y", "x")
        if name == "nonlin":
            k = max((a.shape[0] for a in arrays if a is not None), default=1)
            shape, dims = (k,) + self.shape, ("cset", "k", "y", "x")
        out = np.full((max(len(arrays), 1),) + shape, fill, dtype=dtype)
        for i, a in enumerate(arrays):
            if a is not None:
                out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
        return xr.DataArray(out, dims=dims)

    def scalar(self, name, *, fill=np.nan) -> xr.DataArray:
        """(cset,) float64 of one scalar attribute (fill where unusable or None)."""
        vals = [fill if cs is None or getattr(cs, name) is None else float(getattr(cs, name)) for cs in self.sets]
        return xr.DataArray(np.array(vals or [fill], dtype=np.float64), dims=("cset",))

    def checksums(self) -> list[str]:
        """['NAME sha256', ...] of every usable file (provenance)."""
        out = []
        for cs in self.sets:
            if cs is not None:
                out += [f"{f.name} {f.sha256}" for f in cs.files]
        return sorted(set(out))

    def main(self, calset_counts) -> int | None:
        """Index of the usable set used by most DCEs (None: none usable)."""
        usable = [k for k, cs in enumerate(self.sets) if cs is not None]
        if not usable:
            return None
        return max(usable, key=lambda k: calset_counts.get(k, 0))
