"""Read BCD FITS files (ours or the SSC's, MIPS or IRAC) into mosaic ``Frame``s.

``find_bcds(paths)`` turns files and folders into ``BcdFile`` records (header facts only, no
pixel data) and one problem line per file it cannot use; ``load_frame(bcd)`` reads one BCD
with its companions into a ``reduce.mosaic.kernels.frames.Frame``; ``group_bcds`` splits a
set by array (and AOR), ``mixed_arrays`` says why a set of several arrays cannot make one
mosaic.

Companions follow the SSC naming beside ``<base>_bcd.fits`` (or the SSC's ``<base>_cbcd.fits``):
uncertainty ``<base>_bunc.fits`` (``_cbunc`` first for a ``_cbcd``), mask ``<base>_bbmsk.fits``
(MIPS; also the older ``_bmsk``) or ``<base>_bimsk.fits`` (IRAC).  Our own exports
(``reduce.mips.bcd_export``: ``SPITZER_M{C}_{AORKEY}_{EXPID}_{DCENUM}_{VER}_bcd|bunc|bbmsk``)
follow the same scheme.

Pixel masks: ``good`` is False where the mask has a *fatal* bit, where the image is NaN and
where the uncertainty is not finite and positive.  Fatal bits (``fatal_bits``):

- our MIPS exports (legend ``BITnn = 2**nn / name: meaning``, names of schemas/mips_bcd.yaml):
  dead, hot, no_flat, invalid, too_few_reads, stim (a stim-flash calibration DCE), as for
  the store's BCDs (``OUR_FATAL_NAMES``).  Not fatal: noisy, saturated
  (24 um: slope replaced by the first difference; Ge: slope from the unsaturated reads),
  cosmic_ray (24 um: flagged, not removed, left to the outlier rejection across frames;
  70/160 um: jumps found and fused), no_good_segment, no_responsivity (nominal responsivity
  used): the value is a valid measurement.
- IRAC ``_bimsk`` (legend of the real file: 2 ghost, 3 stray light, 4 saturation corrected,
  5 muxbleed, 6 banding, 7 pulldown, 8 crosstalk, 9 radhit, 10 latent, 11 flat not applied,
  12 not linear, 13 uncorrected saturation, 14 bad or missing): the SSC's recommended
  ``DCE_Status_Mask_Fatal_BitPattern = 32520`` (bits 3, 8-14; SSC IRAC imask page).
- SSC MIPS ``_bbmsk`` with a BITnn legend: a bit is fatal when its meaning says the value is
  bad (bad, missing, dead, pmask, radhit/cosmic, latent, flat not applied, non-linear,
  uncorrected / beyond-correction saturation, no usable planes); without a legend the
  Si:As BMask heritage shared with IRS: bits 8 (no flat), 11 (missing in downlink),
  13 (no usable planes), 14 (pmask) = 26880.

Uncertainty without a ``_bunc`` (``unc_source = 'estimated'``, and a warning line):

- a 2-D BCD: one value for the whole frame, the robust pixel-to-pixel noise
  ``mad_std(dx, dy) / sqrt(2)`` of the differences of horizontally and vertically adjacent
  good pixels (exact for white noise, insensitive to smooth backgrounds and to the few
  pixels on sources), raised to the read-noise floor ``RONOISE / GAIN / EXPTIME * FLUXCONV``
  when the header has those SSC keywords (RONOISE in electrons; IRAC: 7.2 MJy/sr at 3.6 um,
  0.08 s).
- an IRAC subarray cube (NAXIS3 planes): per pixel the sigma-clipped standard deviation of
  the planes / sqrt(n good planes) (the standard error of the clipped mean).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.stats import mad_std, sigma_clip
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from reduce.mips.bcd_reader import parse_bunit
from reduce.mosaic.kernels.frames import Frame

BANDS = {"MIPS": {1: "24um", 2: "70um", 3: "160um"},
         "IRAC": {1: "3.6um", 2: "4.5um", 3: "5.8um", 4: "8.0um"}}
"""Known arrays: INSTRUME -> {CHNLNUM: band}."""

MASK_SUFFIXES = {"MIPS": ("_bbmsk", "_bmsk"), "IRAC": ("_bimsk",)}

IRAC_FATAL = 32520
"""SSC-recommended fatal bits of the IRAC ``_bimsk``: 3, 8-14."""
MIPS_SSC_FATAL = (1 << 8) | (1 << 11) | (1 << 13) | (1 << 14)
"""Fatal bits of an SSC MIPS mask without a BITnn legend (Si:As BMask heritage, see above)."""
OUR_FATAL_NAMES = frozenset({"dead", "hot", "no_flat", "invalid", "too_few_reads", "stim"})
"""Mask bit names (schemas/mips_bcd.yaml) of our MIPS BCDs that make a pixel unusable in a mosaic,
the same whether the BCD is read from the store (``sources.StoreFrames``) or from its exported
files, for every array. Not fatal: noisy (a valid value with its larger uncertainty; leaving the
noisy 24 um pixels out costs the pointing refinement matches: 75 % instead of > 80 % of the scan
map's frames refined), and a 24 um cosmic_ray bit: the hit is flagged, not removed, and the
outlier rejection across frames rejects it with the ones the single-frame flagging missed
(>= 99 % of those above 5 sigma, tests/mosaic/test_mips_scanmap.py)."""
_FATAL_WORDS = re.compile(r"bad|missing|dead|pmask|radhit|cosmic|latent|flat[- ]field was not|"
                          r"flat field could not|not flat|not linear|non-?linear|uncorrected sat|"
                          r"beyond correct|no usable", re.I)
_NOT_FATAL = re.compile(r"corrected in|reserved", re.I)

CLIP_SIGMA = 4.0
"""Planes of a cube further than this many robust sigma (mad_std) from the pixel's median are
rejected (iterated at most ``CLIP_MAXITERS`` times).  4 sigma: a Gaussian pixel loses a good
plane with probability 6e-5, so the clipped mean is the plain mean almost everywhere."""
CLIP_MAXITERS = 5
MIN_PLANES = 2
"""A cube pixel needs at least this many good planes (a scatter needs two)."""

_BIT = re.compile(r"^BIT(\d\d)$")
_WCS_NAMES = (r"WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|"
              r"PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|A_\w+|B_\w+|AP_\w+|BP_\w+")
_WCS_KEY = re.compile(rf"^({_WCS_NAMES})$")
"""The header cards a celestial WCS with SIP is made of (astropy parses a 1700-card SSC
header ~10x slower than these)."""
_CBCD = re.compile(r"^(?P<base>.*)_(?P<c>c?)bcd\.fits$")


@dataclass(frozen=True)
class BcdFile:
    """One BCD file and what its header says (no pixel data).

    ``shape``: (ny, nx) of one plane; ``nplanes``: 1, or NAXIS3 of an IRAC subarray cube
    (64); ``pixel_scale_arcsec``: sqrt of the pixel area at CRPIX (arcsec); ``mjd``: MJD_OBS
    (or from DATE_OBS), None when neither is there; ``wcs_header``: the WCS cards of the BCD
    header (CTYPE, CRPIX, CRVAL, CD, SIP A/B/AP/BP, RADESYS, ...) as text, one card per line,
    as the file spells them; ``wcs()`` builds the 2-axis celestial WCS from them.
    """

    path: Path
    unc_path: Path | None
    mask_path: Path | None
    instrument: str
    chnlnum: int
    band: str
    aorkey: int | None
    expid: int | None
    dcenum: int | None
    shape: tuple
    nplanes: int
    bunit: str
    pixel_scale_arcsec: float
    mjd: float | None
    wcs_header: str
    aot_type: str = ""        # AOT_TYPE ("" when absent): scan maps get per-leg background offsets

    @property
    def array(self):
        """(instrument, chnlnum): the detector array."""
        return self.instrument, self.chnlnum

    def wcs(self) -> WCS:
        """The 2-axis celestial WCS (origin 0 in ``all_pix2world(x, y, 0)``), a copy of its own."""
        return wcs_of_text(self.wcs_header).deepcopy()


# ------------------------------------------------------------------ header level
def _why(exc, limit=160):
    """An exception as one short line: 'Type: message' (whitespace collapsed, cut at limit)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _image_hdu(hdul):
    """The first HDU holding an image of >= 2 axes (header only), or None."""
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.header.get("NAXIS", 0) >= 2:
            return hdu
    return None


def wcs_cards(header):
    """The WCS cards of ``header`` (CTYPE, CRPIX, CRVAL, CD/PC/CDELT, SIP, RADESYS, ...) as a
    Header, in the file's own spelling."""
    return fits.Header([c for c in header.cards if _WCS_KEY.match(c.keyword)])


@lru_cache(maxsize=4096)
def wcs_of_text(text):
    """The WCS of a header text of WCS cards (``BcdFile.wcs_header``, ``FrameInfo.header``),
    parsed once per process: finding the BCDs, planning the mosaic and loading the frames ask
    for it (3 parses of each BCD's WCS were 4.5 % of a mosaic's time). The object is shared:
    never change it in place (``kernels.frames.shift_wcs`` returns a copy)."""
    return wcs_from_cards(fits.Header.fromstring(text, sep="\n"))


def wcs_from_cards(h):
    """The 2-axis celestial WCS (SIP included) of a header of WCS cards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(h, naxis=2, relax=True)


def _celestial_wcs(header):
    """(WCS cards, 2-axis celestial WCS, None) or (None, None, reason) for an image header:
    the WCS must be celestial, its CD matrix finite and regular, and the pixel <-> sky
    transforms finite and inverse to each other (0.01 pixel) at the corners and centre."""
    h = wcs_cards(header)
    try:
        w = wcs_of_text(h.tostring(sep="\n", endcard=False, padding=False))
    except Exception as exc:                           # noqa: BLE001 - any WCS failure
        return None, None, f"no usable celestial WCS ({_why(exc)})"
    if not w.has_celestial or w.naxis != 2:
        return None, None, (f"no usable celestial WCS (CTYPE1/2 = {header.get('CTYPE1')!r}/"
                      f"{header.get('CTYPE2')!r})")
    cd = w.pixel_scale_matrix
    if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0:
        return None, None, "no usable celestial WCS (singular or non-finite CD/PC matrix)"
    ny, nx = header.get("NAXIS2", 1), header.get("NAXIS1", 1)
    x = np.array([0, nx - 1, nx - 1, 0, (nx - 1) / 2])
    y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ra, dec = w.all_pix2world(x, y, 0)
            xb, yb = w.all_world2pix(ra, dec, 0)
    except Exception as exc:                           # noqa: BLE001
        return None, None, f"no usable celestial WCS (transform fails: {_why(exc)})"
    if not (np.all(np.isfinite([ra, dec, xb, yb]))
            and np.allclose(xb, x, atol=0.01) and np.allclose(yb, y, atol=0.01)):
        return None, None, ("no usable celestial WCS (pixel <-> sky transform not finite or "
                            "not invertible)")
    return h, w, None


def _mjd(get):
    """MJD_OBS (or MJD-OBS), else DATE_OBS (or DATE-OBS) as MJD UTC, else None.
    ``get``: key -> header value."""
    for key in ("MJD_OBS", "MJD-OBS"):
        try:
            return float(get(key))
        except (TypeError, ValueError):
            pass
    for key in ("DATE_OBS", "DATE-OBS"):
        try:
            return float(Time(str(get(key)).strip(), scale="utc").mjd)
        except ValueError:
            pass
    return None


def _int(get, key):
    try:
        return int(get(key))
    except (TypeError, ValueError):
        return None


def companions(path, instrument):
    """(uncertainty, mask) paths beside a ``*_bcd.fits`` / ``*_cbcd.fits`` file (None when
    absent or when the file is named otherwise)."""
    path = Path(path)
    m = _CBCD.match(path.name)
    if m is None:
        return None, None
    base, c = m.group("base"), m.group("c")
    uncs = [f"{base}_{c}bunc.fits"] + ([f"{base}_bunc.fits"] if c else [])
    masks = [f"{base}{s}.fits" for s in MASK_SUFFIXES.get(instrument, ())]
    unc = next((path.with_name(n) for n in uncs if path.with_name(n).is_file()), None)
    mask = next((path.with_name(n) for n in masks if path.with_name(n).is_file()), None)
    return unc, mask


_HEADER_KEY = re.compile(rf"^({_WCS_NAMES}|SIMPLE|BITPIX|NAXIS\d*|INSTRUME|CHNLNUM|AORKEY|EXPID|"
                         r"DCENUM|MJD_OBS|MJD-OBS|DATE_OBS|DATE-OBS|BUNIT|AOT_TYPE)$")
"""The cards ``read_bcd_header`` needs."""


def _fast_primary(path, max_blocks=400):
    """The cards of the primary header that ``read_bcd_header`` needs, read straight from the
    file (a 1700-card SSC header: 1 ms instead of 10 ms through astropy), or None when the file
    does not start like FITS or the header is not plain ASCII (astropy then reads it)."""
    cards = []
    with open(path, "rb") as fh:
        for _ in range(max_blocks):
            block = fh.read(2880)
            if len(block) < 2880 or (not cards and not block.startswith(b"SIMPLE  =")):
                return None
            for i in range(0, 2880, 80):
                card = block[i:i + 80]
                if card.startswith(b"END") and not card[3:].strip():
                    try:
                        text = b"".join(c for c in cards
                                        if _HEADER_KEY.match(c[:8].decode("ascii").rstrip()))
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            return fits.Header.fromstring(text.decode("ascii"))
                    except Exception:                  # noqa: BLE001 - let astropy judge it
                        return None
                cards.append(card)
    return None


def _headers(path):
    """(header of the first image HDU or None, primary header); raises when not FITS."""
    fast = _fast_primary(path)
    if fast is not None and fast.get("NAXIS", 0) >= 2:
        return fast, fast
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        hdu = _image_hdu(hdul)
        return (None if hdu is None else hdu.header), hdul[0].header


def read_bcd_header(path):
    """(BcdFile, None) or (None, one-line problem naming the file) for one file."""
    path = Path(path)
    try:
        header, primary = _headers(path)
    except Exception as exc:                           # noqa: BLE001 - not FITS, truncated, ...
        return None, f"{path}: unreadable file ({_why(exc)})"
    if header is None:
        return None, f"{path}: no image (no HDU with NAXIS >= 2)"

    def get(key, default=None):                        # image in an extension: keywords above
        return header.get(key, primary.get(key, default))

    instrument = str(get("INSTRUME", "")).strip().upper()
    chnlnum = _int(get, "CHNLNUM")
    if instrument not in BANDS:
        return None, f"{path}: unknown instrument INSTRUME={get('INSTRUME')!r} (MIPS or IRAC)"
    if chnlnum not in BANDS[instrument]:
        return None, f"{path}: unknown {instrument} channel CHNLNUM={get('CHNLNUM')!r}"
    cards, w, reason = _celestial_wcs(header)
    if w is None:
        return None, f"{path}: {reason}"
    naxis = header["NAXIS"]
    nplanes = int(np.prod([header.get(f"NAXIS{k}", 1) for k in range(3, naxis + 1)]))
    unc, mask = companions(path, instrument)
    return BcdFile(
        path=path, unc_path=unc, mask_path=mask, instrument=instrument, chnlnum=chnlnum,
        band=f"{instrument} {BANDS[instrument][chnlnum]}", aorkey=_int(get, "AORKEY"),
        expid=_int(get, "EXPID"), dcenum=_int(get, "DCENUM"),
        shape=(int(header["NAXIS2"]), int(header["NAXIS1"])), nplanes=nplanes,
        bunit=str(get("BUNIT", "")).strip(),
        pixel_scale_arcsec=float(np.sqrt(proj_plane_pixel_area(w)) * 3600.0),
        mjd=_mjd(get), wcs_header=cards.tostring(sep="\n", endcard=False, padding=False),
        aot_type=str(get("AOT_TYPE", "")).strip()), None


def find_bcds(paths, client=None, batch=64):
    """BCDs among ``paths`` (files or folders) -> (list of ``BcdFile``, list of problem lines).

    Folders are searched recursively for ``*_bcd.fits``; a file given by name is taken as it
    is (e.g. an SSC ``*_cbcd.fits``).  Each file that cannot be used (unreadable, no image,
    no usable celestial WCS, unknown instrument or channel) gives one line naming it and is
    left out; so does a path that does not exist and a folder without BCDs.  The BCDs come
    sorted by path, each file once.  ``client``: the headers are read by the cluster's
    workers, ``batch`` files per task (the same result; reading them here took 3.4 ms per
    BCD, 3.4 s of a 1,000-BCD mosaic on 2 workers before any worker had work).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*_bcd.fits") if q.is_file())
            if not found:
                problems.append(f"{p}: folder holds no *_bcd.fits files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    unique, seen = [], set()
    for f in sorted(files):
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if client is None or len(unique) <= batch:
        read = _read_headers(unique)
    else:
        parts = [unique[i:i + batch] for i in range(0, len(unique), batch)]
        read = [r for part in client.gather(client.map(_read_headers, parts, pure=False)) for r in part]
    bcds = []
    for bcd, problem in read:
        if bcd is None:
            problems.append(problem)
        else:
            bcds.append(bcd)
    return bcds, problems


def _read_headers(files):
    """[``read_bcd_header(f)``] of ``files`` (one task of ``find_bcds``)."""
    return [read_bcd_header(f) for f in files]


# ------------------------------------------------------------------ grouping
def _order(b):
    keys = (b.aorkey, b.expid, b.dcenum, b.mjd)
    return tuple(-1 if v is None else v for v in keys) + (str(b.path),)


def group_bcds(bcds, per_aor=False):
    """{(instrument, chnlnum): [BcdFile]} or, with ``per_aor``, {(instrument, chnlnum,
    aorkey): [...]}; keys sorted, each list in (AORKEY, EXPID, DCENUM, MJD, path) order."""
    groups = {}
    for b in bcds:
        key = (b.instrument, b.chnlnum) + ((b.aorkey,) if per_aor else ())
        groups.setdefault(key, []).append(b)
    return {k: sorted(groups[k], key=_order)
            for k in sorted(groups, key=lambda k: tuple(-1 if v is None else v for v in k))}


def mixed_arrays(bcds):
    """None when every BCD is of one array, else a one-line reason naming the arrays and
    their counts (``skyreduce mosaic`` without --per-aor makes one mosaic of one array)."""
    groups = group_bcds(bcds)
    if len(groups) <= 1:
        return None
    parts = ", ".join(f"{v[0].band} ({len(v)} BCDs)" for v in groups.values())
    return (f"BCDs of {len(groups)} arrays given: {parts}; one mosaic holds one array: give "
            f"one array's BCDs, or use --per-aor")


# ------------------------------------------------------------------ pixels
def _read_image(path):
    """(data as stored, header) of the image HDU of ``path``; an image in an extension gets
    the primary header's photometry keywords it lacks."""
    with fits.open(path, memmap=False) as hdul:
        hdu = _image_hdu(hdul)
        if hdu is None:
            raise ValueError("no image (no HDU with NAXIS >= 2)")
        header = hdu.header
        missing = [k for k in ("BUNIT", "FLUXCONV", "GAIN", "RONOISE", "EXPTIME")
                   if k not in header and k in hdul[0].header] if hdu is not hdul[0] else []
        if missing:                  # a copy only then (copying a header was a third of reading a BCD)
            header = header.copy()
            for key in missing:
                header[key] = hdul[0].header[key]
        return np.asarray(hdu.data), header


def mask_legend(header):
    """{bit number: meaning} from the mask header's ``BITnn`` cards (comment = meaning)."""
    return {int(m.group(1)): str(card.comment).strip()
            for card in header.cards if (m := _BIT.match(card.keyword))}


def fatal_bits(instrument, chnlnum, legend):
    """The fatal bit pattern (int) of a mask with ``legend`` {bit: meaning} (module docstring)."""
    names = {b: text.split(":")[0].strip() for b, text in legend.items() if ":" in text}
    if legend and len(names) == len(legend):           # our exports: 'name: meaning'
        return sum(1 << b for b, n in names.items() if n in OUR_FATAL_NAMES)
    if instrument == "IRAC":
        return IRAC_FATAL
    if legend:
        return sum(1 << b for b, text in legend.items()
                   if _FATAL_WORDS.search(text) and not _NOT_FATAL.search(text))
    return MIPS_SSC_FATAL


def to_mjy_per_sr(bunit, header):
    """Factor that turns data in ``bunit`` into MJy/sr.  Accepted: any unit astropy converts to
    MJy/sr; DN/s with FLUXCONV (MJy/sr per DN/s); e-/s with FLUXCONV and GAIN (e/DN).
    Anything else raises ValueError."""
    text = str(bunit).strip()
    try:
        unit = parse_bunit(text)
    except ValueError:
        raise ValueError(f"BUNIT {text!r} is not a unit; MJy/sr expected") from None
    try:
        return float(unit.to(u.MJy / u.sr))
    except u.UnitConversionError:
        pass
    fluxconv, gain = header.get("FLUXCONV"), header.get("GAIN")
    if unit.is_equivalent(u.adu / u.s) and fluxconv:
        return float(unit.to(u.adu / u.s)) * float(fluxconv)
    if unit.is_equivalent(u.electron / u.s) and fluxconv and gain:
        return float(unit.to(u.electron / u.s)) * float(fluxconv) / float(gain)
    raise ValueError(f"BUNIT {text!r} is not surface brightness and the header has no "
                     "conversion to MJy/sr (FLUXCONV for DN/s; FLUXCONV and GAIN for e-/s)")


def read_noise_floor(header):
    """The read-noise floor of one frame in MJy/sr (RONOISE/GAIN/EXPTIME*FLUXCONV), or 0."""
    try:
        ron, gain, t, conv = (float(header[k]) for k in ("RONOISE", "GAIN", "EXPTIME", "FLUXCONV"))
    except (KeyError, TypeError, ValueError):
        return 0.0
    value = ron / gain / t * conv
    return value if np.isfinite(value) and value > 0 else 0.0


def frame_noise(image, good=None):
    """Robust white-noise level of a 2-D ``image`` (same unit): mad_std of the differences of
    horizontally and vertically adjacent good pixels / sqrt(2).  NaN if < 10 pairs."""
    img = np.where(np.isfinite(image) & (True if good is None else good), image, np.nan)
    d = np.concatenate([np.diff(img, axis=1).ravel(), np.diff(img, axis=0).ravel()])
    d = d[np.isfinite(d)]
    return float(mad_std(d) / np.sqrt(2)) if d.size >= 10 else float("nan")


def coadd_planes(cube, unc=None, bad=None):
    """Coadd a cube (n, ny, nx) along its planes with outlier rejection.

    ``bad``: bool (n, ny, nx) planes-pixels never used (fatal mask bits; NaNs are dropped too).
    Planes are sigma-clipped per pixel (``CLIP_SIGMA`` about the median, mad_std, at most
    ``CLIP_MAXITERS`` passes).  Returns (mean of the kept planes, its 1-sigma uncertainty,
    number of kept planes (ny, nx) int): the uncertainty is sqrt(sum unc**2) / n over the kept
    planes when ``unc`` is given, else the clipped std (ddof=1) / sqrt(n).  Pixels with fewer
    than ``MIN_PLANES`` kept planes are NaN.
    """
    data = np.asarray(cube, dtype=np.float64)
    drop = ~np.isfinite(data) if bad is None else (~np.isfinite(data) | bad)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        clipped = sigma_clip(np.ma.masked_array(data, drop), sigma=CLIP_SIGMA,
                             maxiters=CLIP_MAXITERS, cenfunc="median", stdfunc="mad_std", axis=0)
        keep = ~np.ma.getmaskarray(clipped)
        n = keep.sum(axis=0)
        mean = np.where(keep, data, 0.0).sum(axis=0) / n
        if unc is not None:
            u2 = np.where(keep, np.asarray(unc, dtype=np.float64) ** 2, 0.0).sum(axis=0)
            err = np.sqrt(u2) / n
        else:
            resid = np.where(keep, data - mean, 0.0)
            err = np.sqrt((resid ** 2).sum(axis=0) / (n - 1)) / np.sqrt(n)
    few = n < MIN_PLANES
    mean[few], err[few] = np.nan, np.nan
    return mean, err, n


def _companion(path, what, shape, warnings_out):
    """Data of a companion file, or None with a warning line when it cannot be used."""
    try:
        data, header = _read_image(path)
    except Exception as exc:                           # noqa: BLE001
        warnings_out.append(f"{path}: {what} unreadable ({_why(exc)}); ignored")
        return None, None
    if data.shape != shape:
        warnings_out.append(f"{path}: {what} shape {data.shape} differs from the BCD's {shape}; "
                            "ignored")
        return None, None
    return data, header


def load_frame(bcd: BcdFile):
    """Read one BCD and its companions -> (``Frame``, list of warning lines).

    Frame: ``image`` float64 (ny, nx) in MJy/sr (converted by ``to_mjy_per_sr``; other units
    raise ValueError naming the file), ``unc`` float64 (ny, nx) MJy/sr 1-sigma from the
    ``_bunc`` file or estimated (module docstring; a warning line names the BCD), ``good``
    bool (ny, nx): no fatal mask bit (``fatal_bits``), finite image, finite positive unc; a
    missing mask gives a warning and only those tests.  ``wcs``: ``wcs_of_text(bcd.wcs_header)`` (shared).  A cube
    (nplanes > 1) is coadded by ``coadd_planes`` (fatal bits of the mask cube drop single
    plane-pixels).  ``meta``: path, name, instrument, chnlnum, band, aorkey, expid, dcenum, mjd,
    nplanes, unc_source ('bunc' | 'estimated'), fatal_bits, n_planes_used (cube: (ny, nx)).
    """
    out = []
    data, header = _read_image(bcd.path)
    try:
        scale = to_mjy_per_sr(header.get("BUNIT", bcd.bunit), header)
    except ValueError as exc:
        raise ValueError(f"{bcd.path}: {exc}") from None
    data = data.astype(np.float64) * scale
    file_shape = data.shape
    cube = data.ndim > 2
    if cube:
        data = data.reshape((-1,) + data.shape[-2:])
    if data.shape[-2:] != tuple(bcd.shape):
        raise ValueError(f"{bcd.path}: image shape {file_shape} differs from the header's "
                         f"{bcd.shape}")

    unc = None
    if bcd.unc_path is None:
        out.append(f"{bcd.path}: no uncertainty file (_bunc); uncertainty estimated from the "
                   + ("scatter of the planes" if cube else "frame's pixel-to-pixel noise"))
    else:
        unc, _ = _companion(bcd.unc_path, "uncertainty", file_shape, out)
        if unc is not None:
            unc = unc.astype(np.float64).reshape(data.shape) * scale

    fatal, bad = 0, np.zeros(data.shape, bool)
    if bcd.mask_path is None:
        out.append(f"{bcd.path}: no mask file ({' or '.join(MASK_SUFFIXES[bcd.instrument])}); "
                   "only NaN pixels are masked")
    else:
        mask, mheader = _companion(bcd.mask_path, "mask", file_shape, out)
        if mask is not None:
            fatal = fatal_bits(bcd.instrument, bcd.chnlnum, mask_legend(mheader))
            bad = (mask.astype(np.int64).reshape(data.shape) & fatal) != 0

    meta = {"path": str(bcd.path), "name": bcd.path.name, "instrument": bcd.instrument,
            "chnlnum": bcd.chnlnum, "band": bcd.band, "aorkey": bcd.aorkey, "expid": bcd.expid,
            "dcenum": bcd.dcenum, "mjd": bcd.mjd, "nplanes": bcd.nplanes,
            "unc_source": "bunc" if unc is not None else "estimated", "fatal_bits": fatal}
    if cube:
        image, err, meta["n_planes_used"] = coadd_planes(data, unc, bad)
        good = np.isfinite(image)
    else:
        image = data
        good = np.isfinite(image) & ~bad
        if unc is not None:
            err = unc
        else:
            err = np.full(image.shape, max(frame_noise(image, good), read_noise_floor(header)))
    good &= np.isfinite(err) & (err > 0)
    return Frame(image=image, unc=err, good=good, wcs=wcs_of_text(bcd.wcs_header), meta=meta), out
