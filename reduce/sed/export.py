"""MIPS SED products as files (issue 11 parts 3 and 4): the 2-D spectral BCDs of each DCE,
the per-AOR 1-D spectrum (IPAC table and FITS binary table) and the 2-D ON - OFF coadd.

Per DCE (``sed_bcd_basename``; rows 0..26 = rectified wavelength rows, columns 0..15 along
the slit, 0-based as in the ICD)::

    SPITZER_M2_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bcd.fits    float32 [27, 16] MJy/sr
    SPITZER_M2_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bunc.fits   1-sigma, float32 [27, 16] MJy/sr
    SPITZER_M2_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}_bbmsk.fits  mask bits + BITnn legend

Per AOR (``sed_basename``)::

    SPITZER_M2_{AORKEY}_{VER}_sed.tbl       IPAC table: row, wavelength [um], flux_density [Jy],
                                            error [Jy], apcorr (null where not finite)
    SPITZER_M2_{AORKEY}_{VER}_sed.fits      header-only PRIMARY + BinTableHDU 'SPECTRUM' with the
                                            same five columns (TUNIT um, Jy, Jy): specutils'
                                            'tabular-fits' loader reads it (Spectrum1D.read(path))
    SPITZER_M2_{AORKEY}_{VER}_sedcoadd.fits PRIMARY ON - OFF float32 [27, ncol] MJy/sr; ImageHDUs
                                            'UNC', 'DEPTH' (frames), 'ON', 'OFF'

Every image HDU has the linear spectral WCS: axis 1 ``CTYPE1 = 'OFFSET'`` (arcsec along the
slit, +x towards PA_SLIT; CRPIX1 = CENTCOL + 1 for a BCD, source column + 1 for the coadd,
CRVAL1 = 0, CDELT1 = PXSCALE), axis 2 ``CTYPE2 = 'WAVE'`` (um; CRPIX2 = 1, CRVAL2 = WAVE0,
CDELT2 = DISP), so pixel row r (0-based) is at WAVE0 + DISP*r.  Cards are made with the imaging
BCD writer's helpers (``reduce.mips.bcd_export``: card images, sections, HISTORY, mask legend);
files are written by astropy.io.fits with CHECKSUM/DATASUM, atomically (``reduce.io.atomic``).
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from astropy.io import ascii as ascii_io
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from astropy.time import Time

from reduce.io.atomic import atomic_write_fits, atomic_write_text
from reduce.mips import bcd_export as bx

CHNLNUM = 2
NROWS, NCOLS = 27, 16
"""Calibrated window of the SED BCD: 27 rectified rows x 16 slit columns."""
AOT_TYPE = "MipsSed"
WAVE_KEYS = ("wave0", "disp", "tilt", "centcol", "pxscale", "slitw")
SPECTRUM_COLUMNS = (("row", None, "rectified row (0-based)"),
                    ("wavelength", "um", "wavelength of the row centre"),
                    ("flux_density", "Jy", "point-source flux density"),
                    ("error", "Jy", "1-sigma error of flux_density"),
                    ("apcorr", None, "point-source aperture correction applied"))
_REQUIRED_META = ("aorkey", "expid", "dcenum", "mjd", "exptime", "ra_slit", "dec_slit", "pa_slit",
                  "choppos", "chopthrw")
# keywords that header_cards may not set: FITS structure, checksums, table and WCS keywords
_RESERVED = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BSCALE|BZERO|"
                       r"CHECKSUM|DATASUM|EXTNAME|EXTVER|END|TFIELDS|THEAP|T(TYPE|FORM|UNIT|DIM|"
                       r"NULL|DISP|SCAL|ZERO)\d+|WCSAXES|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|"
                       r"CROTA\d|PC\d_\d|CD\d_\d|BUNIT)$")


# ---------------------------------------------------------------- names
def sed_bcd_basename(aorkey, expid, dcenum, version):
    """'SPITZER_M2_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_{VER}' (append '_bcd.fits' etc.)."""
    return bx.bcd_basename(CHNLNUM, aorkey, expid, dcenum, version)


def sed_basename(aorkey, version):
    """'SPITZER_M2_{AORKEY}_{VER}' (append '_sed.tbl', '_sed.fits', '_sedcoadd.fits')."""
    return f"SPITZER_M{CHNLNUM}_{int(aorkey)}_{bx.version_tag(version)}"


# ---------------------------------------------------------------- helpers
def _py(value):
    """A numpy scalar as the python scalar (cards and IPAC keywords want plain types)."""
    return value.item() if isinstance(value, np.generic) else value


def _wave(wave):
    """The six WAVE values (um, arcsec) as floats; ValueError when one is missing or unusable."""
    missing = [k for k in WAVE_KEYS if k not in wave]
    if missing:
        raise ValueError(f"wave lacks {missing} (needs {list(WAVE_KEYS)})")
    out = {k: float(wave[k]) for k in WAVE_KEYS}
    bad = [k for k, v in out.items() if not np.isfinite(v)]
    if bad:
        raise ValueError(f"wave values {bad} are not finite")
    for k in ("disp", "pxscale", "slitw"):
        if out[k] <= 0:
            raise ValueError(f"wave {k} = {out[k]} must be > 0")
    return out


def wcs_cards(wave, crpix1):
    """Card images of the linear 2-D WCS (offset along the slit [arcsec], wavelength [um]) and
    the WAVE calibration values; ``crpix1``: FITS (1-based) column of offset 0."""
    w = _wave(wave)
    c = bx._section("SPECTRAL WCS")
    c += [bx._card("CTYPE1", "OFFSET", "Offset along the slit (+x = PA_SLIT), linear"),
          bx._card("CUNIT1", "arcsec", "Unit of axis 1"),
          bx._card("CRPIX1", float(crpix1), "Reference column (1-based)"),
          bx._card("CRVAL1", 0.0, "[arcsec] Offset at CRPIX1"),
          bx._card("CDELT1", w["pxscale"], "[arcsec] Column width along the slit"),
          bx._card("CTYPE2", "WAVE", "Wavelength, linear (rectified rows)"),
          bx._card("CUNIT2", "um", "Unit of axis 2"),
          bx._card("CRPIX2", 1.0, "Reference row (1-based): row 0"),
          bx._card("CRVAL2", w["wave0"], "[um] Wavelength of row 0"),
          bx._card("CDELT2", w["disp"], "[um] Dispersion per row"),
          bx._card("WAVE0", w["wave0"], "[um] Wavelength of row 0 at CENTCOL (WAVE file)"),
          bx._card("DISP", w["disp"], "[um/row] Dispersion (WAVE file)"),
          bx._card("TILT", w["tilt"], "[um/column] Tilt removed by the rectification"),
          bx._card("CENTCOL", w["centcol"], "Slit-centre column (0-based)"),
          bx._card("PXSCALE", w["pxscale"], "[arcsec] Pixel scale along the slit"),
          bx._card("SLITW", w["slitw"], "[arcsec] Slit width")]
    return c


def _identity_cards(version, filetype, what, aot_type=AOT_TYPE):
    return [bx._card("ORIGIN", "skyreduce", "Organization generating this FITS file"),
            bx._card("CREATOR", f"skyreduce {bx._ascii(version)}",
                     "SW version used to create this FITS file"),
            bx._card("TELESCOP", "Spitzer", "SPITZER Space Telescope"),
            bx._card("INSTRUME", "MIPS", "SPITZER Space Telescope instrument ID"),
            bx._card("CHNLNUM", CHNLNUM, "1=24um, 2=70um, 3=160um"),
            bx._card("BANDUM", 70, "[um] MIPS band"),
            bx._card("EXPTYPE", "sci", "Exposure Type"),
            bx._card("FILETYPE", filetype, what),
            bx._card("AOT_TYPE", bx._ascii(aot_type), "Observation template type")]


def _now():
    return Time.now().utc.isot[:19]


def _header(images):
    return fits.Header.fromstring("".join(images))


def _card_images(cards, where):
    """(key, value, comment) triples as card images (the imaging helper: ASCII, one card each,
    strings truncated); ValueError for keywords the writer sets itself."""
    out = []
    for entry in cards:
        if len(entry) != 3:
            raise ValueError(f"{where}: header card {entry!r} is not (key, value, comment)")
        key, value, comment = entry
        key = str(key).upper()
        if _RESERVED.match(key):
            raise ValueError(f"{where}: header card {key} is set by the writer, not by the caller")
        out.append(bx._card(key, _py(value), "" if comment is None else str(comment)))
    return out


def _card_list(cards, where):
    """``_card_images`` as astropy Cards."""
    return [fits.Card.fromstring(image) for image in _card_images(cards, where)]


def _merge(header, cards):
    """``header`` with ``cards`` (astropy Cards): a keyword already there is replaced,
    HISTORY/COMMENT appended, others added after the last keyword (before the HISTORY)."""
    for card in cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            header.append(card, bottom=True)
        elif card.keyword in header:
            header[card.keyword] = (card.value, card.comment)
        else:
            header.append(card)
    return header


def _image(data, shape, name, dtype=np.float32):
    a = np.asarray(data)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    return a.astype(dtype, copy=False)


# ---------------------------------------------------------------- BCDs
def _bcd_meta(meta):
    missing = [k for k in _REQUIRED_META if meta.get(k) is None]
    if missing:
        raise ValueError(f"meta lacks {missing}")
    m = {k: _py(v) for k, v in meta.items() if v is not None}
    for k in ("mjd", "ra_slit", "dec_slit", "pa_slit", "exptime", "chopthrw"):
        if not np.isfinite(float(m[k])):
            raise ValueError(f"meta {k} = {m[k]!r} is not finite")
    if str(m["choppos"]).strip().upper() not in ("ON", "OFF"):
        raise ValueError(f"meta choppos = {m['choppos']!r}, expected 'ON' or 'OFF'")
    return m


def _finite(m, key):
    return key in m and np.isfinite(float(m[key]))


def _bcd_common(m, *, wave, calibration_cards, history, version, date):
    """Card images shared by the three files of one DCE (the FILETYPE card comes later)."""
    c = _identity_cards(version, "bcd", "Basic Calibrated Data: 2-D spectral image",
                        m.get("aot_type", AOT_TYPE))
    c += bx._section("PROPOSAL INFORMATION")
    if "progid" in m:
        c.append(bx._card("PROGID", int(m["progid"]), "Program ID"))

    c += bx._section("TIME AND EXPOSURE INFORMATION")
    mjd = float(m["mjd"])
    c += [bx._card("DATE_OBS", Time(mjd, format="mjd", scale="utc").isot,
                   "Date & time (UTC) at DCE mid-time"),
          bx._card("MJD_OBS", mjd, "[days] MJD (UTC) at DCE mid-time"),
          bx._card("EXPTIME", bx._f32(m["exptime"]), "[sec] Effective integration time per pixel")]
    if "stimflsh" in m:
        c.append(bx._card("STIMFLSH", int(m["stimflsh"]), "1 if the stimulator flashed in this DCE"))

    c += bx._section("TARGET AND POINTING INFORMATION")
    if "object" in m:
        c.append(bx._card("OBJECT", bx._ascii(m["object"]), "Target Name"))
    c += [bx._card("RA_SLIT", float(m["ra_slit"]), "[deg] RA (ICRS) of the slit centre"),
          bx._card("DEC_SLIT", float(m["dec_slit"]), "[deg] Dec (ICRS) of the slit centre"),
          bx._card("PA_SLIT", float(m["pa_slit"]), "[deg] PA of the slit +x direction (E of N)")]
    for key, what in (("ra_rqst", "RA"), ("dec_rqst", "Dec")):
        if _finite(m, key):
            c.append(bx._card(key.upper(), float(m[key]), f"[deg] Requested {what} of slit centre"))
    c += [bx._card("CHOPPOS", str(m["choppos"]).strip().upper(), "Chop position: ON or OFF source"),
          bx._card("CHOPTHRW", bx._f32(m["chopthrw"]), "[arcsec] Chop throw across the slit")]

    c += wcs_cards(wave, _wave(wave)["centcol"] + 1.0)

    c += bx._section("PHOTOMETRY")
    c.append(bx._card("BUNIT", "MJy/sr", "Units of image data"))
    if _finite(m, "responsivity"):
        c.append(bx._card("RESPONSI", bx._f32(m["responsivity"]), "Stim responsivity applied (1 = nominal)"))
    if _finite(m, "responsivity_unc"):
        c.append(bx._card("RESPUNC", bx._f32(m["responsivity_unc"]),
                          "Fractional 1-sigma responsivity error, in _bunc"))

    c += bx._section("DATA FLOW KEYWORDS")
    c += [bx._card("DATE", date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date"),
          bx._card("AORKEY", int(m["aorkey"]), "AOR key. Astrnmy Obs Req"),
          bx._card("EXPID", int(m["expid"]), "Exposure ID (0-9999)"),
          bx._card("DCENUM", int(m["dcenum"]), "DCE number (0-9999)")]
    if "dceid" in m:
        c.append(bx._card("DCEID", int(m["dceid"]), "Data-Collection-Event ID"))
    if "source_file" in m:
        c.append(bx._card("RAWFILE", bx._ascii(Path(str(m["source_file"])).name), "Raw data file name"))
    c.append(bx._card("PIPEVERS", bx._ascii(version), "skyreduce pipeline version"))
    if calibration_cards:
        c.append(bx._card("COMMENT", "Calibration reference files used: CF* name, CS* SHA-256"))
        c += _card_images(calibration_cards, "calibration_cards")

    c += bx._section("PROCESSING HISTORY")
    for line in history:
        c += bx._history(bx._ascii(line))
    return c


def write_sed_bcd(out_dir, *, meta, bcd, unc, mask, wave, mask_bits, calibration_cards, history,
                  version):
    """Write the ``_bcd``, ``_bunc`` and ``_bbmsk`` FITS files of one SED DCE; returns their paths.

    ``bcd``, ``unc``: float32 [27, 16] MJy/sr (rectified rows x slit columns); ``mask``: uint16
    [27, 16] bits of ``mask_bits`` ({name: power of two}; stored as int16 when below 2**15, with
    the BITnn legend of the imaging ``_bbmsk``).  ``meta``: aorkey, expid, dcenum, mjd (DCE
    mid-time, MJD UTC), exptime [s], ra_slit, dec_slit, pa_slit [deg], choppos ('ON'/'OFF'),
    chopthrw [arcsec] (required); dceid, object, progid, ra_rqst, dec_rqst, stimflsh,
    responsivity, responsivity_unc, source_file, aot_type (optional).  ``wave``: wave0, disp,
    tilt [um], centcol, pxscale, slitw [arcsec].  ``calibration_cards``: [(key, value, comment)]
    (CF*/CS* provenance); ``history``: lines for HISTORY.  ValueError on a wrong shape, missing
    meta/wave values or mask bits outside the legend.
    """
    m = _bcd_meta(meta)
    shape = (NROWS, NCOLS)
    image = _image(bcd, shape, "bcd")
    sigma = _image(unc, shape, "unc")
    bits = bx.resolve_mask_bits(None, dict(mask_bits))
    base = sed_bcd_basename(m["aorkey"], m["expid"], m["dcenum"], version)
    mask_data = bx._mask_array(_image(mask, shape, "mask", np.asarray(mask).dtype), bits, base)
    history = list(history) + [f"sed export: SED BCD FITS, skyreduce {bx._ascii(version)}"]
    common = _bcd_common(m, wave=wave, calibration_cards=calibration_cards, history=history,
                         version=version, date=_now())
    filetype = bx._card("FILETYPE", "bcd", "Basic Calibrated Data: 2-D spectral image")
    bunc_type = bx._card("FILETYPE", "bunc", "1-sigma uncertainty of the BCD")
    mask_cards = bx._replace(bx._without_section(common, "PHOTOMETRY"), "FILETYPE",
                             bx._card("FILETYPE", "bbmsk", "Bit mask of the BCD"))
    mask_cards = bx._insert_before_section(mask_cards, "DATA FLOW KEYWORDS", bx._legend_cards(bits))
    files = {"bcd": (bx._replace(common, "FILETYPE", filetype), image),
             "bunc": (bx._replace(common, "FILETYPE", bunc_type), sigma),
             "bbmsk": (mask_cards, mask_data)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, (cards, data) in files.items():
        path = out_dir / f"{base}_{suffix}.fits"
        atomic_write_fits(fits.PrimaryHDU(data, header=_header(cards)), path, checksum=True)
        written.append(path)
    return written


# ---------------------------------------------------------------- 1-D spectrum
def _spectrum_table(row, wavelength, flux_density, error, apcorr):
    """The five columns checked: [row int32, wavelength, flux_density, error, apcorr float64]."""
    arrays = [np.asarray(a) for a in (row, wavelength, flux_density, error, apcorr)]
    n = arrays[0].shape
    for (name, _, _), a in zip(SPECTRUM_COLUMNS, arrays):
        if a.ndim != 1 or a.shape != n or not a.size:
            raise ValueError(f"{name} has shape {a.shape}; all five columns must be 1-D of one "
                             f"length >= 1 (row has {n})")
    rows = arrays[0]
    if not np.all(np.isfinite(rows.astype(float))) or np.any(rows != np.round(rows)):
        raise ValueError(f"row must hold integers (got {rows!r})")
    if np.any(rows < 0) or len(np.unique(rows)) != rows.size:
        raise ValueError("row must hold distinct rows >= 0")
    wav = arrays[1].astype(np.float64)
    if not np.all(np.isfinite(wav)) or np.any(np.diff(wav) <= 0):
        raise ValueError("wavelength must be finite and increasing")
    cols = [rows.astype(np.int32)] + [a.astype(np.float64) for a in arrays[1:]]
    return cols


def _tbl_keywords(cards):
    """IPAC keywords {KEY: {'value': v}} (python scalars; bool as 'T'/'F') and comment lines."""
    keywords, comments = {}, []
    for card in cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            if str(card.value).strip():
                comments.append(f"{card.keyword}: {card.value}"[:78])
            continue
        value = card.value
        if isinstance(value, bool):
            value = "T" if value else "F"
        keywords[card.keyword] = {"value": value}
    return keywords, comments


def write_sed_spectrum(out_dir, *, aorkey, version, row, wavelength, flux_density, error, apcorr,
                       header_cards):
    """Write ``{sed_basename}_sed.tbl`` and ``_sed.fits`` (the extracted 1-D spectrum of one AOR);
    returns [tbl path, fits path].

    Columns (1-D, one length): ``row`` (0-based rectified row, int), ``wavelength`` [um,
    increasing], ``flux_density`` [Jy], ``error`` [Jy, 1-sigma], ``apcorr`` (dimensionless).
    Values that are not finite are 'null' in the IPAC table and NaN in the FITS table.
    ``header_cards``: [(key, value, comment)] for the FITS PRIMARY header and the IPAC keywords
    (HISTORY/COMMENT become IPAC comment lines), after AORKEY, PIPEVERS etc. set here.
    The FITS file: header-only PRIMARY and BinTableHDU 'SPECTRUM' (row 'J'; the others 'D',
    TUNIT 'um', 'Jy', 'Jy'), which ``specutils.Spectrum1D.read(path)`` identifies as
    'tabular-fits': spectral_axis = wavelength [um], flux = flux_density [Jy], uncertainty =
    StdDevUncertainty(error) [Jy].
    """
    cols = _spectrum_table(row, wavelength, flux_density, error, apcorr)
    date = _now()
    primary = _identity_cards(version, "sed", "1-D point-source spectrum")
    primary += [bx._card("AORKEY", int(_py(aorkey)), "AOR key. Astrnmy Obs Req"),
                bx._card("NROWS", int(cols[0].size), "Rows (wavelengths) in the spectrum"),
                bx._card("DATE", date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date"),
                bx._card("PIPEVERS", bx._ascii(version), "skyreduce pipeline version")]
    extra = _card_list(header_cards, "header_cards")
    phdr = _merge(_header(primary), extra)

    base = sed_basename(aorkey, version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # IPAC table: the PRIMARY keywords (not the FITS structure) as \KEY = value
    table = Table()
    for (name, unit, what), values in zip(SPECTRUM_COLUMNS, cols):
        bad = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
        table[name] = MaskedColumn(values, mask=bad, unit=unit, description=what)
    keywords, comments = _tbl_keywords(
        [c for c in phdr.cards if c.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND")])
    table.meta = {"comments": ["MIPS SED 1-D point-source spectrum (skyreduce), rows 0-based",
                               "flux_density = apcorr * Omega * sum of 5 columns of the coadd"]
                  + comments,
                  "keywords": keywords}
    buf = io.StringIO()
    ascii_io.write(table, buf, format="ipac")
    tbl = atomic_write_text(out_dir / f"{base}_sed.tbl", buf.getvalue(), fsync=False)

    columns = [fits.Column(name=name, format="J" if values.dtype.kind == "i" else "D",
                           unit=unit, array=values)
               for (name, unit, _), values in zip(SPECTRUM_COLUMNS, cols)]
    ext = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    for n, (name, _, what) in enumerate(SPECTRUM_COLUMNS, start=1):
        ext.header.comments[f"TTYPE{n}"] = what[:47]
    ext.header["AORKEY"] = (int(_py(aorkey)), "AOR key. Astrnmy Obs Req")
    hdul = fits.HDUList([fits.PrimaryHDU(header=phdr), ext])
    path = atomic_write_fits(hdul, out_dir / f"{base}_sed.fits", checksum=True)
    return [tbl, path]


# ---------------------------------------------------------------- 2-D coadd
def write_sed_coadd(out_dir, *, aorkey, version, diff, diff_unc, depth, on, off, source_column,
                    wave, header_cards):
    """Write ``{sed_basename}_sedcoadd.fits``: the ON - OFF coadd of one AOR; returns its path.

    ``diff``, ``diff_unc``, ``on``, ``off``: [27, ncol] MJy/sr (float32 in the file), ``depth``:
    [27, ncol] frames per pixel (integers >= 0; int16, int32 when larger), all on the aligned
    grid whose column ``source_column`` (0-based, float) holds the source: CRPIX1 =
    source_column + 1 (offset 0 at the source), also SRCCOL.  PRIMARY = diff, ImageHDUs 'UNC',
    'DEPTH', 'ON', 'OFF', each with the WCS (``wcs_cards``).  ``header_cards``: [(key, value,
    comment)] added to the PRIMARY header.
    """
    diff = np.asarray(diff)
    if diff.ndim != 2 or diff.shape[0] != NROWS or diff.shape[1] < 1:
        raise ValueError(f"diff has shape {diff.shape}, expected ({NROWS}, ncol)")
    shape = diff.shape
    depth = np.asarray(depth)
    if depth.shape == shape and (not np.all(np.isfinite(depth)) or np.any(depth < 0)
                                 or np.any(depth != np.round(depth))):
        raise ValueError("depth must hold integers >= 0")
    planes = {"UNC": (_image(diff_unc, shape, "diff_unc"), "MJy/sr", "1-sigma of ON - OFF"),
              "DEPTH": (_image(depth, shape, "depth",
                               np.int16 if depth.size == 0 or depth.max() < 2 ** 15 else np.int32),
                        None, "frames combined per pixel"),
              "ON": (_image(on, shape, "on"), "MJy/sr", "ON coadd"),
              "OFF": (_image(off, shape, "off"), "MJy/sr", "OFF coadd")}
    column = float(_py(source_column))
    if not np.isfinite(column):
        raise ValueError(f"source_column = {source_column!r} is not finite")
    wcs = wcs_cards(wave, column + 1.0)
    date = _now()
    cards = _identity_cards(version, "sedcoadd", "2-D ON - OFF spectral coadd")
    cards += [bx._card("AORKEY", int(_py(aorkey)), "AOR key. Astrnmy Obs Req"),
              bx._card("SRCCOL", column, "Source column (0-based) found from the data")]
    cards += wcs
    cards += [bx._card("BUNIT", "MJy/sr", "Units of image data"),
              bx._card("DATE", date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date"),
              bx._card("PIPEVERS", bx._ascii(version), "skyreduce pipeline version")]
    phdr = _merge(_header(cards), _card_list(header_cards, "header_cards"))
    hdus = [fits.PrimaryHDU(_image(diff, shape, "diff"), header=phdr)]
    for name, (data, unit, what) in planes.items():
        ecards = [bx._card("FILETYPE", "sedcoadd", "2-D ON - OFF spectral coadd"),
                  bx._card("IMAGETYP", name.lower(), what),
                  bx._card("AORKEY", int(_py(aorkey)), "AOR key. Astrnmy Obs Req")] + wcs
        if unit:
            ecards.append(bx._card("BUNIT", unit, "Units of image data"))
        hdus.append(fits.ImageHDU(data, header=_header(ecards), name=name))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_fits(fits.HDUList(hdus), out_dir / f"{sed_basename(aorkey, version)}_sedcoadd.fits",
                             checksum=True)
