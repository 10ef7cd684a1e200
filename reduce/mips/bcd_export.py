"""Export the MIPS BCD Dataset as SSC-style BCD FITS files (one set per DCE).

``write_bcd_files(bcd, out_dir, calibration=..., version=...)`` writes, for every
DCE whose ``status`` is ``'ok'``::

    SPITZER_M{C}_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bcd.fits    image, MJy/sr, float32 [ny, nx]
    SPITZER_M{C}_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bunc.fits   1-sigma uncertainty, MJy/sr
    SPITZER_M{C}_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bbmsk.fits  mask, int16 bits + BITnn legend
    SPITZER_M1_..._{VER}_bsdr.fits   (24 um only, ``extras=True``) header-only PRIMARY and three
                                     image extensions SLOPE, DIFFERENCE, REPLACED (DN/s)

VER is the pipeline version made safe for a file name.  Headers follow the
real SSC BCDs (``../shared/reference/spitzer/``): TELESCOP/INSTRUME/CHNLNUM,
AORKEY/EXPID/DCENUM/DCEID, DATE_OBS/MJD_OBS (the DCE mid-time of ICD §2),
EXPTIME, BUNIT, FLUXCONV, the TAN-SIP WCS of ``reduce.mips.kernels.wcs`` (distortion
from the reference file, pointing RA_REF/DEC_REF/PA_REF, RA_RQST/DEC_RQST),
CREATOR/PIPEVERS, the calibration files (CF*/CS* cards: name and SHA-256 of
each, ``CalibrationSet.provenance_cards``) and the step history as HISTORY
cards.  The mask legend is written like the real ``_bimsk`` file:
``BITnn = 2**nn / name: meaning`` (``mask_names`` turns a ``read_mask`` legend
back into {name: value}).  Each HDU carries DATASUM (data only, so re-writing
gives byte-identical files apart from DATE); every file passes ``fitsverify``
with no warnings.  A lazy Dataset is exported one dask task per dce chunk on
the active scheduler.

The FITS bytes are written here, not by astropy.io.fits (issue 7.3: keep this
only while astropy would cost more than 20 % of the export).  Each file is a
list of ``Hdu`` (card images made with ``astropy.io.fits.Card``, data array);
``file_bytes`` lays them out as astropy does (``structure``: SIMPLE/XTENSION,
BITPIX, NAXISn, EXTEND, PCOUNT/GCOUNT, BSCALE/BZERO, EXTNAME), adds DATASUM,
END, the padding and the big-endian data, and ``_write_file`` writes them to a
temporary name in the same folder, then ``os.replace``.
benchmarks/bench_bcd_export.py: writing the same HDUs with ``HDUList.writeto(
checksum=True)`` makes the export from the store 3.8-4.6x slower (astropy 74-78 %
of it; 4000 files, one core); tests/mips/test_bcd_export.py checks every file
byte for byte against astropy's output for the same HDUs (apart from the
CHECKSUM card astropy adds and the time stamp in its DATASUM comment).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

import dask
import numpy as np
from astropy.io import fits
from astropy.time import Time

from reduce.errors import CalibrationError
from reduce.io.atomic import atomic_write_bytes
from reduce.mips.calib import BAND, SHAPE
from reduce.mips.kernels.wcs import wcs_header
from reduce.schemas import load_schema

log = logging.getLogger(__name__)

SUFFIXES = ("bcd", "bunc", "bbmsk")
EXTRA_SUFFIX = "bsdr"
EXTRA_PLANES = (("slope", "SLOPE", "slope of the ramp (before replacement)"),
                ("difference", "DIFFERENCE", "rate from the first difference"),
                ("replaced", "REPLACED", "slope with saturated pixels replaced"))
BLOCK = 256
"""DCEs handled at a time for an in-memory Dataset (a lazy one goes by its dce chunks)."""

# Sentences for the mask legend (like the real _bimsk); unknown names get "Set if <name>".
BIT_MEANINGS = {
    "dead": "dead pixel (PMASK)",
    "hot": "hot pixel (PMASK)",
    "noisy": "noisy pixel (PMASK)",
    "no_flat": "flat field not applied",
    "saturated": "saturated",
    "cosmic_ray": "radhit detected",
    "invalid": "data bad or missing",
    "too_few_reads": "fewer than 4 good reads",
    "no_good_segment": "no good ramp segment",
    "no_responsivity": "no valid stim responsivity",
    "replaced": "slope from first difference",
    "nonlinear": "beyond nonlinearity model",
    "stim": "stim-flash DCE (calibration)",
    "partial": "SED row partly covered (rectified)",
}

_NAME_SAFE = re.compile(r"[^A-Za-z0-9.-]+")


# ---------------------------------------------------------------- small helpers
def version_tag(version):
    """The pipeline version as it appears in file names ('1', '0.3.1', '0.3-dev')."""
    tag = _NAME_SAFE.sub("-", str(version)).strip("-.")
    if not tag:
        raise ValueError(f"pipeline version {version!r} gives an empty file-name tag")
    return tag


def bcd_basename(chnlnum, aorkey, expid, dcenum, version):
    """'SPITZER_M{C}_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}' (append '_bcd.fits' etc.)."""
    return (f"SPITZER_M{int(chnlnum)}_{int(aorkey)}_{int(expid):04d}_{int(dcenum):04d}_"
            f"{version_tag(version)}")


def _ascii(text):
    return str(text).encode("ascii", "replace").decode("ascii").replace("\n", " ")


def _card_image(key, value, comment):
    if isinstance(value, str):                      # one card, no CONTINUE
        value = _ascii(value)[:72 if key in ("HISTORY", "COMMENT", "") else 68]
    card = fits.Card(key, value)
    room = 80 - len(card.image.rstrip()) - 3
    comment = _ascii(comment)
    if comment and room >= 10:                      # no stub comments ('/ S')
        card = fits.Card(key, value, comment[:room])
    image = card.image
    if len(image) != 80:
        raise ValueError(f"card {key}={value!r} does not fit in 80 characters")
    return image


@functools.lru_cache(maxsize=8192)
def _cached_card(key, value, comment, _kind):
    return _card_image(key, value, comment)


def _card(key, value, comment=""):
    """The 80-character image of a card (values repeated across DCEs come from a cache)."""
    return _cached_card(key, value, comment, type(value).__name__)


def _section(title):
    """A blank card and an SSC-style section title ('          / TITLE')."""
    return [_card("", ""), _card("", f"  / {title}"), _card("", "")]


def _history(line, width=72):
    """HISTORY cards for one line of text, broken before a space where possible; no piece ends
    in a space (readers strip those), so joining the card values gives the line back (unless
    it holds a run of 72 blanks)."""
    line, cards = line.rstrip(), []
    while len(line) > width:
        space = line.rfind(" ", width // 2, width)
        cut = len(line[:space].rstrip(" ")) if space > 0 else 0
        if cut <= width // 2:
            cut = width
            while cut > 1 and line[cut - 1] == " ":
                cut -= 1
            if line[cut - 1] == " ":              # 72 blanks in a row: they are lost
                cut = width
        cards.append(_card("HISTORY", line[:cut]))
        line = line[cut:]
    return cards + [_card("HISTORY", line)]


def _key(image):
    return image[:8].rstrip()


def _without(cards, keys):
    return [c for c in cards if _key(c) not in keys]


def _insert_after(cards, key, new):
    keys = [_key(c) for c in cards]
    at = keys.index(key) + 1 if key in keys else len(cards)
    return cards[:at] + list(new) + cards[at:]


def _insert_before_section(cards, title, new):
    """Insert ``new`` before the blank card that opens section ``title`` (else at the end)."""
    for n, c in enumerate(cards):
        if _key(c) == "" and title in c:
            return cards[:n - 1] + list(new) + cards[n - 1:]
    return cards + list(new)


def _is_title(card):
    return _key(card) == "" and card[8:12] == "  / "


def _without_section(cards, title):
    """``cards`` without section ``title``: its blank, title and blank cards and its cards."""
    for n, c in enumerate(cards):
        if _is_title(c) and title in c:
            stop = next((k - 1 for k in range(n + 1, len(cards)) if _is_title(cards[k])),
                        len(cards))
            return cards[:n - 1] + cards[stop:]
    return list(cards)


def _replace(cards, key, image):
    return [image if _key(c) == key else c for c in cards]


def _f32(x):
    """The shortest decimal that gives back the float32 ``x`` (EXPTIME etc. are float32)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def _maybe_json(value):
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def mask_names(legend):
    """{name: bit value} from a ``read_mask`` legend ({bit: 'name: meaning'}) of our files."""
    return {str(text).split(":")[0].strip(): 1 << int(bit) for bit, text in legend.items()}


def resolve_mask_bits(bcd, mask_bits=None):
    """The mask legend {name: value}: the argument, else ``bcd.attrs['mask_bits']`` (dict or
    JSON), else the ``flag_masks``/``flag_meanings`` of ``bcd['mask']``, else ``mask_bits`` of
    schemas/mips_bcd.yaml; values must be distinct powers of two below 2**16."""
    if mask_bits is None:
        mask_bits = _maybe_json(bcd.attrs.get("mask_bits"))
    if mask_bits is None and "mask" in bcd and "flag_masks" in bcd["mask"].attrs:
        a = bcd["mask"].attrs
        mask_bits = dict(zip(str(a["flag_meanings"]).split(), np.atleast_1d(a["flag_masks"])))
    if mask_bits is None:
        try:
            mask_bits = load_schema("mips_bcd")["mask_bits"]
        except Exception as exc:          # noqa: BLE001 - any failure means "not found"
            raise ValueError("mask_bits not given and not found in the Dataset attrs, the mask's "
                             f"flag_masks or schemas/mips_bcd.yaml ({exc})") from exc
    out = {}
    for name, value in dict(mask_bits).items():
        value = int(value)
        if value <= 0 or value & (value - 1) or value >= 1 << 16:
            raise ValueError(f"mask bit {name!r} = {value} is not a power of two below 2**16")
        if value in out.values():
            raise ValueError(f"mask bit value {value} used twice ({name!r})")
        out[str(name)] = value
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _calibration_check(bcd, calibration):
    """The Dataset and the CalibrationSet must belong together (array, shape, file checksums)."""
    chnl = int(bcd.attrs.get("chnlnum", calibration.chnlnum))
    if chnl != calibration.chnlnum:
        raise CalibrationError(f"BCD Dataset is CHNLNUM={chnl} but the calibration set is "
                               f"CHNLNUM={calibration.chnlnum} (mismatched calibration)")
    shape = (bcd.sizes.get("y"), bcd.sizes.get("x"))
    if shape != SHAPE[chnl]:
        raise ValueError(f"BCD Dataset of CHNLNUM={chnl} has (y, x) = {shape}, "
                         f"expected {SHAPE[chnl]}")
    used = _maybe_json(bcd.attrs.get("calibration"))
    entries = []
    if isinstance(used, dict):
        entries = [dict(v, name=v.get("name", k)) if isinstance(v, dict)
                   else {"name": k, "sha256": v} for k, v in used.items()]
        if "files" in used and isinstance(used["files"], list):
            entries = used["files"]
    elif isinstance(used, list):
        entries = used
    ours = {f.name: f.sha256 for f in calibration.files}
    for e in entries:
        if not isinstance(e, dict):
            continue
        name, sha = e.get("name"), e.get("sha256")
        if name in ours and sha and sha != ours[name]:
            raise CalibrationError(
                f"{name}: the BCDs were reduced with SHA-256 {sha[:16]}..., the calibration "
                f"set given for export has {ours[name][:16]}... (mismatched reference file)")
    return chnl


def _history_lines(history):
    """HISTORY text lines from the Dataset's step provenance (list of dicts or strings, or JSON)."""
    history = _maybe_json(history)
    if history is None:
        return []
    if isinstance(history, (str, dict)):
        history = [history]
    lines = []
    for entry in history:
        entry = _maybe_json(entry)
        if isinstance(entry, dict):
            name = entry.get("step", entry.get("name", "step"))
            rest = {k: v for k, v in entry.items() if k not in ("step", "name")}
            lines.append(f"{name}: {json.dumps(rest, sort_keys=True, default=str)}" if rest
                         else str(name))
        else:
            lines.append(str(entry))
    return [_ascii(x) for x in lines]


# ---------------------------------------------------------------- headers
def _dce_meta(coords, i):
    """Per-DCE values (python scalars) of row ``i`` of the coordinate arrays."""
    return {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in coords.items()}


def _common_cards(m, *, chnlnum, calibration, version, fluxconv, history, date):
    """Card images shared by the files of one DCE (no data-structure cards)."""
    c = [_card("ORIGIN", "skyreduce", "Organization generating this FITS file"),
         _card("CREATOR", f"skyreduce {_ascii(version)}",
               "SW version used to create this FITS file"),
         _card("TELESCOP", "Spitzer", "SPITZER Space Telescope"),
         _card("INSTRUME", "MIPS", "SPITZER Space Telescope instrument ID"),
         _card("CHNLNUM", int(chnlnum), "1=24um, 2=70um, 3=160um"),
         _card("BANDUM", int(BAND[chnlnum]), "[um] MIPS band"),
         _card("EXPTYPE", "sci", "Exposure Type")]
    if "aot_type" in m:
        c.append(_card("AOT_TYPE", _ascii(m["aot_type"]), "Observation template type"))

    c += _section("PROPOSAL INFORMATION")
    if "progid" in m:
        c.append(_card("PROGID", int(m["progid"]), "Program ID"))

    c += _section("TIME AND EXPOSURE INFORMATION")
    mjd = float(m["time"])
    c += [_card("DATE_OBS", Time(mjd, format="mjd", scale="utc").isot,
                "Date & time (UTC) at DCE mid-time"),
          _card("MJD_OBS", mjd, "[days] MJD (UTC) at DCE mid-time")]
    if "sclk" in m:
        c.append(_card("SCLK_OBS", float(m["sclk"]), "[sec] SCLK time at DCE mid-time"))
    if "samptime" in m:
        c.append(_card("SAMPTIME", _f32(m["samptime"]), "[sec] Sample / read interval"))
    if "nreads" in m:
        c.append(_card("NREADS", int(m["nreads"]), "Samples (24um) or reads (70/160um) in the DCE"))
    c.append(_card("EXPTIME", _f32(m["exptime"]), "[sec] Effective integration time per pixel"))
    if "stimflsh" in m:
        c.append(_card("STIMFLSH", int(m["stimflsh"]), "1 if the stimulator flashed in this DCE"))

    c += _section("TARGET AND POINTING INFORMATION")
    if "object" in m:
        c.append(_card("OBJECT", _ascii(m["object"]), "Target Name"))
    w = wcs_header(calibration.distortion, m["ra_ref"], m["dec_ref"], m["pa_ref"], radesys="ICRS")
    sip = []
    for card in w.cards:
        key = card.keyword
        if key == "RADESYS":
            c += [_card("RADESYS", card.value, "International Celestial Reference System"),
                  _card("EQUINOX", 2000.0, "Equinox for ICRS celestial coord. system")]
        elif re.match(r"^(A|B|AP|BP)_", key):
            sip.append(_card(key, card.value, "polynomial order, axis {}, detector to sky".format(
                1 if key.startswith("A") else 2) if key.endswith("_ORDER")
                else "distortion coefficient"))
        elif key not in ("RA_REF", "DEC_REF", "PA_REF"):          # pointing: below
            c.append(_card(key, card.value, card.comment))
    for key, what in (("ra_rqst", "RA"), ("dec_rqst", "Dec")):
        if key in m:
            c.append(_card(key.upper(), float(m[key]), f"[deg] Requested {what} at array centre"))
    c += [_card("RA_REF", float(m["ra_ref"]), "[deg] RA of array centre used for the WCS"),
          _card("DEC_REF", float(m["dec_ref"]), "[deg] Dec of array centre used for the WCS"),
          _card("PA_REF", float(m["pa_ref"]), "[deg] PA of array +y (E of N) used for the WCS")]

    c += _section("DISTORTION KEYWORDS") + sip

    c += _section("PHOTOMETRY")
    c += [_card("BUNIT", "MJy/sr", "Units of image data"),
          _card("FLUXCONV", float(fluxconv), "Flux Conv. factor (MJy/sr per DN/sec)"),
          _card("GAIN", float(calibration.gain), "e/DN conversion"),
          _card("RDNOISE", float(calibration.rdnoise),
                "[DN] Read noise per read (24um: per sample)")]
    if "responsivity" in m and np.isfinite(m["responsivity"]):
        c.append(_card("RESPONS", _f32(m["responsivity"]),
                       "Stim responsivity applied (1 = nominal)"))
    if "responsivity_unc" in m and np.isfinite(m["responsivity_unc"]):
        c.append(_card("RESPUNC", _f32(m["responsivity_unc"]),
                       "Fractional 1-sigma responsivity error, in _bunc"))

    c += _section("DATA FLOW KEYWORDS")
    c += [_card("DATE", date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date"),
          _card("AORKEY", int(m["aorkey"]), "AOR key. Astrnmy Obs Req"),
          _card("EXPID", int(m["expid"]), "Exposure ID (0-9999)"),
          _card("DCENUM", int(m["dcenum"]), "DCE number (0-9999)")]
    if "dceid" in m:
        c.append(_card("DCEID", int(m["dceid"]), "Data-Collection-Event ID"))
    if "source_file" in m:
        c.append(_card("RAWFILE", _ascii(Path(str(m["source_file"])).name), "Raw data file name"))
    c += [_card("PIPEVERS", _ascii(version), "skyreduce pipeline version"),
          _card("CALVERS", _ascii(calibration.calvers), "Calibration set version used")]
    if "calvers" in m:
        c.append(_card("RAWCALV", _ascii(m["calvers"]),
                       "Calibration version the raw data came with"))
    c.append(_card("COMMENT", "Calibration reference files used: CF* name, CS* SHA-256"))
    c += [_card(key, _ascii(value), comment)
          for key, value, comment in calibration.provenance_cards()]

    c += _section("PROCESSING HISTORY")
    for line in history:
        c += _history(line)
    return c


def _legend_cards(mask_bits):
    """The mask legend like the real _bimsk: a section of BITnn = 2**nn / 'name: meaning'."""
    cards = _section("mask pixel Bit representation")
    for name, value in mask_bits.items():
        bit = value.bit_length() - 1
        meaning = BIT_MEANINGS.get(name, name.replace("_", " "))
        text = f"{name}: Set if {meaning}"
        if len(text) > 47:
            text = name if len(f"{name}: {meaning}") > 47 else f"{name}: {meaning}"
        cards.append(_card(f"BIT{bit:02d}", value, text))
    cards.append(_card("PROCBITS", int(sum(mask_bits.values())), "Processed Bits in mask"))
    return cards


def _mask_array(mask, mask_bits, where):
    """The mask as int16 (uint16 when bit 15 is in the legend); undocumented bits refused."""
    mask = np.asarray(mask)
    allowed = sum(mask_bits.values())
    bad = np.bitwise_and(mask.astype(np.int64), ~allowed)
    if bad.any():
        bits = sorted({b for b in range(63) if np.any(bad & (1 << b))})
        raise ValueError(f"{where}: mask uses bits {bits} that the legend (mask_bits) lacks")
    dtype = np.int16 if allowed < 1 << 15 else np.uint16
    return mask.astype(dtype)


# ---------------------------------------------------------------- FITS bytes
class Hdu(NamedTuple):
    """One HDU before it is serialised: the header card images that follow the structural
    ones (no DATASUM, no END), the data as meant (float32, int16 or uint16 [ny, nx]; None for
    a header-only PRIMARY), and its place in the file."""

    cards: list
    data: np.ndarray | None = None
    primary: bool = True
    extend: bool = False
    extname: str | None = None


def _pad(data, fill):
    return data + fill * (-len(data) % 2880)


def _datasum(data):
    """FITS DATASUM (32-bit ones' complement sum of the padded data unit)."""
    total = int(np.frombuffer(data, ">u4").sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def with_datasum(cards, datasum):
    """``cards`` with the DATASUM card where it goes: before the PROCESSING HISTORY section."""
    return _insert_before_section(cards, "PROCESSING HISTORY",
                                  [_card("DATASUM", str(datasum), "data unit checksum")])


def structure(hdu):
    """(structural cards before ``hdu.cards``, structural cards appended to them, data unit as
    stored: big-endian and padded), laid out as astropy.io.fits lays out the same HDU: NAXISn
    and EXTEND without comments; uint16 data stored as int16 with BSCALE/BZERO, after GCOUNT
    in an extension, appended (``_append``) in a primary HDU.  tests/mips/test_bcd_export.py
    compares the files with what astropy writes."""
    data, scale = hdu.data, []
    if data is None:
        raw, bitpix, axes = b"", 8, []
    else:
        if data.dtype == np.uint16:                       # FITS unsigned convention
            data = (data.astype(np.int32) - 32768).astype(np.int16)
            scale = [_card("BSCALE", 1), _card("BZERO", 32768)]
        be = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
        raw = _pad(be.tobytes(), b"\0")
        bitpix = {np.dtype(np.float32): -32, np.dtype(np.int16): 16}[np.dtype(data.dtype.name)]
        ny, nx = data.shape
        axes = [_card("NAXIS1", nx), _card("NAXIS2", ny)]
    head = ([_card("SIMPLE", True, "conforms to FITS standard")] if hdu.primary
            else [_card("XTENSION", "IMAGE", "Image extension")])
    head += [_card("BITPIX", bitpix, "array data type"),
             _card("NAXIS", len(axes), "number of array dimensions")] + axes
    if hdu.primary:
        if hdu.extend:
            head.append(_card("EXTEND", True))
        tail = scale
    else:
        head += [_card("PCOUNT", 0, "number of parameters"),
                 _card("GCOUNT", 1, "number of groups")] + scale
        tail = []
    if hdu.extname:
        head.append(_card("EXTNAME", hdu.extname, "extension name"))
    return head, tail, raw


def _append(cards, new):
    """``cards`` with ``new`` after the last card that is not commentary (blank, COMMENT,
    HISTORY): where astropy's ``Header.append`` puts a keyword."""
    last = max((n for n, c in enumerate(cards) if _key(c) not in ("", "COMMENT", "HISTORY")),
               default=-1)
    return cards[:last + 1] + list(new) + cards[last + 1:]


def _hdu_bytes(hdu):
    """One HDU: structural cards, the cards (with DATASUM), END; then the big-endian data unit."""
    head, tail, raw = structure(hdu)
    text = "".join(head + _append(with_datasum(hdu.cards, _datasum(raw)), tail)) + "END".ljust(80)
    return _pad(text.encode("ascii"), b" ") + raw


def file_bytes(hdus):
    """The bytes of a FITS file of ``hdus`` (what ``_write_file`` writes)."""
    return b"".join(_hdu_bytes(h) for h in hdus)



def _write_file(hdus, path):
    """Serialise ``hdus`` and write them atomically to ``path`` (one call per file)."""
    return atomic_write_bytes(path, file_bytes(hdus))


_NO_IMAGE = re.compile(r"^(CTYPE|CRPIX|CRVAL|CUNIT|CD\d_\d|WCSAXES|A_|B_|AP_|BP_)")


def _products(common, block, j, *, chnlnum, legend, mask_bits, base, extra_vars):
    """{suffix: [Hdu, ...]} of one DCE."""
    out = {}
    bcd_cards = [_card("FILETYPE", "bcd", "Basic Calibrated Data image")]
    if "ncr" in block:
        bcd_cards.append(_card("NCRHITS", int(np.asarray(block["ncr"].values[j]).sum()),
                               "Cosmic-ray hits found in the ramps of this DCE"))
    out["bcd"] = [Hdu(_insert_after(common, "EXPTYPE", bcd_cards),
                      np.asarray(block["bcd"].values[j], np.float32))]
    out["bunc"] = [Hdu(
        _insert_after(common, "EXPTYPE",
                      [_card("FILETYPE", "bunc", "1-sigma uncertainty of the BCD")]),
        np.asarray(block["unc"].values[j], np.float32))]
    mcards = _without(common, {"BUNIT", "FLUXCONV", "RESPONS"})
    mcards = _insert_after(mcards, "EXPTYPE", [_card("FILETYPE", "bbmsk", "Bit mask of the BCD")])
    mcards = _insert_before_section(mcards, "DATA FLOW KEYWORDS", legend)
    out["bbmsk"] = [Hdu(mcards, _mask_array(block["mask"].values[j], mask_bits, base))]
    if extra_vars:
        pcards = [c for c in common if not _NO_IMAGE.match(_key(c))]          # no image: no WCS
        pcards = _insert_after(pcards, "EXPTYPE", [
            _card("FILETYPE", EXTRA_SUFFIX, "24um slope, difference, replaced images")])
        pcards = _replace(_without(pcards, {"FLUXCONV", "RESPONS"}), "BUNIT",
                          _card("BUNIT", "DN/s", "Units of the extension images"))
        parts = [Hdu(pcards, None, extend=True)]
        ecommon = _replace(_without(_without_section(common, "PROCESSING HISTORY"),
                                    {"FLUXCONV", "RESPONS"}), "BUNIT",
                           _card("BUNIT", "DN/s", "Units of image data"))
        for var, ext, what in extra_vars:
            ecards = _insert_after(ecommon, "EXPTYPE", [_card("IMAGETYP", ext.lower(), what)])
            parts.append(Hdu(ecards, np.asarray(block[var].values[j], np.float32),
                             primary=False, extname=ext))
        out[EXTRA_SUFFIX] = parts
    return out


def _write_block(block, metas, *, ctx):
    """Write the files of the DCEs ``metas`` [(row in block, per-DCE values, base name)]."""
    written = []
    for j, m, base in metas:
        common = _common_cards(m, chnlnum=ctx["chnlnum"], calibration=ctx["calibration"],
                               version=ctx["version"], fluxconv=ctx["fluxconv"],
                               history=ctx["history"], date=ctx["date"])
        files = _products(common, block, j, chnlnum=ctx["chnlnum"], legend=ctx["legend"],
                          mask_bits=ctx["mask_bits"], base=base, extra_vars=ctx["extra_vars"])
        for suffix, hdus in files.items():
            written.append(_write_file(hdus, ctx["out_dir"] / f"{base}_{suffix}.fits"))
    return written


def _blocks(bcd, ndce):
    """[start, stop) DCE ranges: the dask chunks of ``bcd`` (one task each), else BLOCK."""
    chunks = bcd["bcd"].chunks
    if chunks is None:
        return [(a, min(a + BLOCK, ndce)) for a in range(0, ndce, BLOCK)]
    edges = np.cumsum((0,) + tuple(chunks[0]))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def plan_export(bcd, version):
    """Per-DCE plan (loads only the per-DCE coordinates): [(index, values, base name)] of the
    DCEs to export; every DCE left out gets one log line with the reason."""
    chnlnum = int(bcd.attrs["chnlnum"])
    coords = {k: np.asarray(c.values) for k, c in bcd.coords.items() if c.dims == ("dce",)}
    for name in ("responsivity", "responsivity_unc"):
        if name in bcd.data_vars and bcd[name].dims == ("dce",):
            coords[name] = np.asarray(bcd[name].values)
    for key in ("aorkey", "expid", "dcenum", "time", "exptime", "ra_ref", "dec_ref", "pa_ref"):
        if key not in coords:
            raise ValueError(f"BCD Dataset lacks the per-DCE coordinate {key!r}")
    ndce = bcd.sizes["dce"]
    status = coords.get("status", np.array(["ok"] * ndce))
    plan = []
    for i in range(ndce):
        m = _dce_meta(coords, i)
        base = bcd_basename(chnlnum, m["aorkey"], m["expid"], m["dcenum"], version)
        if str(status[i]).strip() != "ok":
            log.info("%s: not exported: %s", base, str(status[i]).strip())
        elif not all(np.isfinite(float(m[k])) for k in ("ra_ref", "dec_ref", "pa_ref", "time")):
            log.warning("%s: not exported: pointing (RA_REF/DEC_REF/PA_REF) or MJD_OBS is not "
                        "finite", base)
        else:
            plan.append((i, m, base))
    return plan


def write_bcd_files(bcd, out_dir, *, calibration, version, mask_bits=None, extras=True):
    """Write the SSC-style BCD, uncertainty and mask FITS files of every 'ok' DCE.

    ``bcd``: the BCD Dataset of one array (notes/mips_bcd.md), dims (dce, y, x), computed
    or lazy.  A lazy (dask) Dataset is written one task per dce chunk, in parallel on the
    active dask scheduler (the workers must see ``out_dir``); an in-memory one in blocks of
    ``BLOCK`` DCEs.  ``calibration``: the ``CalibrationSet`` the BCDs were reduced with
    (distortion, provenance).  ``version``: pipeline version (CREATOR/PIPEVERS; made
    name-safe for VER).  ``mask_bits``: {name: bit value}; by default from the Dataset /
    schema (``resolve_mask_bits``).  ``extras``: 24 um also writes ``_bsdr.fits`` (image
    extensions SLOPE, DIFFERENCE, REPLACED, DN/s).  Returns the written paths in DCE
    order.  DCEs with status != 'ok', or without a finite pointing or time, are skipped
    with one log line each.
    """
    chnlnum = _calibration_check(bcd, calibration)
    mask_bits = resolve_mask_bits(bcd, mask_bits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history = _history_lines(bcd.attrs.get("history"))
    history.append(f"bcd_export: SSC-style BCD FITS, skyreduce {_ascii(version)}")
    extra_vars = ([p for p in EXTRA_PLANES if p[0] in bcd.data_vars]
                  if chnlnum == 1 and extras else [])
    ctx = {"chnlnum": chnlnum, "calibration": calibration, "version": version,
           "fluxconv": float(bcd.attrs.get("fluxconv", calibration.fluxconv)),
           "history": history, "date": Time.now().utc.isot[:19], "legend": _legend_cards(mask_bits),
           "mask_bits": mask_bits, "extra_vars": extra_vars, "out_dir": out_dir}
    img_vars = ["bcd", "unc", "mask"] + [p[0] for p in extra_vars] + (
        ["ncr"] if "ncr" in bcd.data_vars else [])
    plan = plan_export(bcd, version)
    ndce = bcd.sizes["dce"]
    lazy = bcd["bcd"].chunks is not None
    results = []
    for start, stop in _blocks(bcd, ndce):
        metas = [(i - start, m, base) for i, m, base in plan if start <= i < stop]
        if not metas:
            continue
        block = bcd[img_vars].isel(dce=slice(start, stop))
        if lazy:
            results.append(dask.delayed(_write_block, pure=False)(block, metas, ctx=ctx))
        else:
            results.append(_write_block(block, metas, ctx=ctx))
    if lazy:
        results = dask.compute(*results)
    written = [p for r in results for p in r]
    log.info("wrote %d files of %d DCEs (CHNLNUM=%d) to %s", len(written), ndce, chnlnum, out_dir)
    return written
