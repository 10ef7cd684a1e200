"""SWAS level-1 export: IRAF- and CLASS-flavoured FITS spectra, sorted into one folder per target.

Input: the computed level-1 coadd Dataset (``/work/notes/swas_level1.md``: dims ``coadd`` x
``channel`` (725), ``ta`` in K, per-coadd coordinates, attrs ``software``, ``history``,
``flag_statistics``). Output layout (every product is ONE spectrum in the primary HDU,
like both real reference files: that is the form CLASS ``FITS READ`` and IRAF onedspec
read without extension syntax)::

    OUT/targets.tsv                                   folder<TAB>original target name, all targets
    OUT/<target_folder>/target.json                   the original OBJECT of this folder
    OUT/<target_folder>/iraf/sDDDD_SSS_BAND_pPPP_nKK.fits    nominal coadds (<= 3 min ON time)
    OUT/<target_folder>/class/sDDDD_SSS_BAND_pPPP_nKK.fits   the same coadds, CLASS flavour
    OUT/<target_folder>/class/sDDDD_SSS_BAND_pPPP_total.fits total coadd per band, position, segment

DDDD = mission day, SSS = segment number, BAND in O2/CI/13CO/H2O, PPP = map position
(000 outside MAP mode), KK = nominal coadd number in time order (1-based). See
``reduce.swas.targets`` for the folder rule.

Flavours (the spectral axis is linear and exact at the reference channel, from the level-1
``crpix``, ``freq_ref``/``cdelt_freq`` (LSRK frame, Hz) and ``vlsr_ref``/``cdelt_vel``
(LSRK, radio convention, km/s); LSB axes run opposite to USB ones):

* CLASS: the keyword set and axis convention of a CLASS-written file: NAXIS=4 (channels,
  RA---GLS, DEC--GLS, STOKES), CTYPE1='FREQ' with CRVAL1=0 (offset from RESTFREQ, i.e. the
  rest-frequency scale of CLASS: f = RESTFREQ + (i - CRPIX1) CDELT1 for a source at
  VELO-LSR), VELO-LSR and DELTAV in m/s (DELTAV = -CDELT1 c / RESTFREQ), IMAGFREQ, TSYS,
  OBSTIME, LINE, AZIMUTH. The map offset of the spectrum is (1 - CRPIX2) CDELT2 and
  (1 - CRPIX3) CDELT3 (CLASS writes CRPIXn=0, CDELTn=offset); a zero offset is written as
  CRPIXn=1 with CDELTn = -/+ 1 arcmin so no CDELT is zero. BITPIX=-32, NaN where no scan
  covered a channel.
* IRAF: a 1-D onedspec image (APFORMAT='onedspec', DC-FLAG=0 linear, DISPAXIS=1, W0/WPC)
  whose axis is the LSRK-frame frequency in Hz (CTYPE1='FREQ', CUNIT1='Hz',
  CRVAL1/CDELT1/CRPIX1, WAT1_001 units=Hz), SPECSYS='LSRK', RESTFREQ, and an alternate WCS
  'V' with the LSRK radio velocity in km/s (CTYPE1V='VRAD'). Frequency, not velocity, is the
  IRAF axis because IRAF's onedspec treats 'km/s' as a unit relative to a reference
  wavelength: with a km/s axis, fitprofs and splot stop with "Error in velocity reference
  wavelength" (and crash), while Hz is a native IRAF unit. Channels with no data are written
  as 0 (IRAF reads IEEE NaN as 0 anyway) and counted in NBLANK.

Common keywords: OBJECT, TELESCOP ('s506006 NOD': mission day, segment, mode), LINE,
RESTFREQ, IMAGFREQ, TSYS (K, DSB, shared by USB and LSB), OBSTIME and EXPTIME (ON time
only, s), AZIMUTH (= spacecraft roll, deg), DATE-OBS/MJD-OBS (start), DATE-AVG/MJD-AVG, DATE-END/MJD-END, UT,
DATE (the reduction time: the ONLY wall-clock value, so a re-run differs in DATE alone),
SOFTWARE, EDGECHAN/GOODLO/GOODHI (unreliable edge channels and the reliable 1-based range),
SWAS bookkeeping (SEGMENT, MISSDAY, SEGNUM, OBSMODE, BAND, RECEIVER, SIDEBAND, LOFREQ,
COADD, COADDNUM, NSCANS, MAPPOS, DLAM, DBET, SRC-VLSR), and HISTORY with the step provenance
(level-1 attrs ``history``) and this segment's flag statistics.
"""

from __future__ import annotations

import json
import logging
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time

from reduce import __version__
from reduce.errors import ReduceError, SchemaError
from reduce.io.atomic import atomic_write_fits
from reduce.swas.targets import write_target_index, write_top_index

_log = logging.getLogger(__name__)

IRAF_DIR = "iraf"
CLASS_DIR = "class"
ARCMIN_DEG = 1.0 / 60.0

#: CLASS LINE names (12 characters at most, as CLASS stores them)
LINE_NAMES = {"O2": "O2(33-12)", "CI": "CI(1-0)", "13CO": "13CO(5-4)", "H2O": "H2O(110-101)"}

#: per-coadd coordinates the export needs (swas_level1.md)
REQUIRED_COORDS = (
    "segment", "missday", "segment_number", "object", "obsmode", "band", "receiver", "sideband", "kind",
    "dlam", "dbet", "position", "on_time", "n_scans", "time_start", "time_mid", "time_end", "tsys", "roll",
    "ra", "dec", "vsource", "restfreq", "imagfreq", "lofreq", "crpix", "freq_ref", "cdelt_freq", "vlsr_ref",
    "cdelt_vel", "edge_channels",
)


@dataclass(frozen=True)
class Coadd:
    """One level-1 spectrum with its metadata (a row of the level-1 Dataset); units as in swas_level1.md."""

    index: int  # position along the level-1 `coadd` dim
    ta: np.ndarray  # (channel,) float32 K
    meta: dict  # coordinate name -> python scalar
    number: int  # nominal coadd number within (segment, band, position), 1-based; 0 for 'total'

    @property
    def product_name(self) -> str:
        return product_name(self.meta["missday"], self.meta["segment_number"], self.meta["band"],
                            self.meta["position"], self.meta["kind"], self.number)


def product_name(missday, segment_number, band, position, kind, number) -> str:
    """File name of one product: ``s0506_006_CI_p000_n01.fits`` or ``..._total.fits``."""
    tail = "total" if kind == "total" else f"n{int(number):02d}"
    return f"s{int(missday):04d}_{int(segment_number):03d}_{band}_p{int(position):03d}_{tail}.fits"


def telescop(missday, segment_number, obsmode) -> str:
    """The TELESCOP string of the SWAS convention: ``'s506006 NOD'`` (day 506, segment 6, nodding)."""
    return f"s{int(missday):03d}{int(segment_number):03d} {obsmode}"


def velocity_axis(meta, n_channels) -> np.ndarray:
    """LSRK radio velocity [km/s] of channels 0..n-1 (FITS pixel = channel + 1): the axis both flavours encode."""
    pix = np.arange(1, n_channels + 1, dtype=float)
    return float(meta["vlsr_ref"]) + (pix - float(meta["crpix"])) * float(meta["cdelt_vel"])


def frequency_axis(meta, n_channels) -> np.ndarray:
    """LSRK-frame frequency [Hz] of channels 0..n-1 (FITS pixel = channel + 1)."""
    pix = np.arange(1, n_channels + 1, dtype=float)
    return float(meta["freq_ref"]) + (pix - float(meta["crpix"])) * float(meta["cdelt_freq"])


# ---------------------------------------------------------------------------------------------- helpers


def _ascii(text) -> str:
    """FITS strings hold printable ASCII only; anything else becomes '?' (the exact name is in target.json)."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def _scalar(value):
    if isinstance(value, np.float32):  # shortest decimal that is this float32: 123.4, not 123.4000015258789
        return float(str(value))
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


def _isot(mjd) -> str:
    return Time(float(mjd), format="mjd", scale="utc", precision=3).isot


def _reduction_date(reduction_time) -> str:
    """ISO UTC (seconds) of the reduction time; now when None."""
    if reduction_time is None:
        when = datetime.now(timezone.utc)
    elif isinstance(reduction_time, Time):
        return reduction_time.utc.isot[:19]
    elif isinstance(reduction_time, datetime):
        when = reduction_time
    else:
        when = datetime.fromisoformat(str(reduction_time))
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def _history_entries(attrs) -> list[str]:
    history = attrs.get("history", [])
    if isinstance(history, str):
        try:
            parsed = json.loads(history)
            history = parsed if isinstance(parsed, list) else [history]
        except ValueError:
            history = history.splitlines()
    out = []
    for entry in list(history):
        out.append(entry if isinstance(entry, str) else json.dumps(entry, sort_keys=True, default=str))
    return out


def _flag_text(value) -> str:
    if isinstance(value, dict) and {"tested", "flagged"} <= set(value):
        rest = {k: v for k, v in value.items() if k not in ("tested", "flagged")}
        extra = f" {json.dumps(rest, sort_keys=True, default=str)}" if rest else ""
        return f"{value['flagged']}/{value['tested']} flagged{extra}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[1]}/{value[0]} flagged"
    return json.dumps(value, sort_keys=True, default=str)


def _flag_lines(attrs, meta) -> list[str]:
    """This segment's (and receiver's) flag statistics as HISTORY lines: ``flag <criterion>: flagged/tested``.

    Accepts the pipeline's ``{segment: {receiver half: {criterion: [tested, flagged]}}}`` (JSON
    string or dict), also without the half level or with ``{"tested": n, "flagged": m}`` values.
    """
    stats = attrs.get("flag_statistics")
    if stats is None:
        return ["flag statistics: none recorded"]
    if isinstance(stats, str):
        try:
            stats = json.loads(stats)
        except ValueError:
            return [f"flag statistics: {stats}"]
    seg = None
    if isinstance(stats, dict):
        for key in (str(meta["segment"]), f"{meta['missday']:04d}_{meta['segment_number']:03d}", meta["segment"]):
            if key in stats:
                seg = stats[key]
                break
    if seg is None:
        return ["flag statistics: none recorded for this segment"]
    if not isinstance(seg, dict):
        return [f"flag statistics: {_flag_text(seg)}"]
    label = ""
    half = seg.get(str(meta["receiver"]))
    if isinstance(half, dict) and not ({"tested", "flagged"} <= set(half)):
        seg, label = half, f" ({meta['receiver']} GHz receiver)"
    lines = [f"flag statistics of segment {meta['missday']:04d}_{meta['segment_number']:03d}{label}:"]
    lines += [f"flag {criterion}: {_flag_text(seg[criterion])}" for criterion in sorted(seg, key=str)]
    return lines


def _emit(log, level, message) -> None:
    if log is None:
        _log.log(level, message)
    elif isinstance(log, logging.Logger):
        log.log(level, message)
    else:
        log(message)


# ---------------------------------------------------------------------------------------------- headers


def _common_cards(meta, n_channels):
    """(key, value, comment) cards shared by both flavours (after the flavour's axis cards)."""
    band = meta["band"]
    edge = int(meta["edge_channels"])
    start = _isot(meta["time_start"])
    return [
        ("LINE", LINE_NAMES.get(band, _ascii(band)), "Line name"),
        ("RESTFREQ", float(meta["restfreq"]), "[Hz] Rest frequency"),
        ("VELO-LSR", float(meta["vlsr_ref"]) * 1000.0, "[m/s] LSRK velocity of reference channel"),
        ("DELTAV", float(meta["cdelt_vel"]) * 1000.0, "[m/s] Velocity spacing of channels"),
        ("IMAGFREQ", float(meta["imagfreq"]), "[Hz] Image frequency (at reference channel)"),
        ("TSYS", float(meta["tsys"]), "[K] DSB system temperature of the receiver"),
        ("OBSTIME", float(meta["on_time"]), "[s] Integration time: ON scans only"),
        ("EXPTIME", float(meta["on_time"]), "[s] Integration time: ON scans only"),
        ("AZIMUTH", float(meta["roll"]), "[deg] SWAS: spacecraft roll angle"),
        ("TIMESYS", "UTC", "Time scale of DATE-OBS, MJD-*"),
        ("DATE-OBS", start, "Start of the first ON scan (UTC)"),
        ("MJD-OBS", float(meta["time_start"]), "[d] Start of the first ON scan (UTC)"),
        ("MJD-AVG", float(meta["time_mid"]), "[d] Mid time of the coadd (UTC)"),
        ("DATE-AVG", _isot(meta["time_mid"]), "Mid time of the coadd (UTC)"),
        ("MJD-END", float(meta["time_end"]), "[d] End of the last ON scan (UTC)"),
        ("DATE-END", _isot(meta["time_end"]), "End of the last ON scan (UTC)"),
        ("UT", " " + start[11:], "Universal time at start"),
        ("INSTRUME", "SWAS AOS", "Submillimeter Wave Astronomy Satellite"),
        ("SEGMENT", int(meta["segment"]), "Mission day * 1000 + segment number"),
        ("MISSDAY", int(meta["missday"]), "Day of mission"),
        ("SEGNUM", int(meta["segment_number"]), "Observing segment number"),
        ("OBSMODE", _ascii(meta["obsmode"]), "Observing mode"),
        ("BAND", _ascii(band), "SWAS band"),
        ("RECEIVER", int(meta["receiver"]), "Receiver (490 or 550 GHz)"),
        ("SIDEBAND", _ascii(meta["sideband"]), "Sideband of the line"),
        ("LOFREQ", float(meta["lofreq"]), "[Hz] Local oscillator frequency"),
        ("COADD", _ascii(meta["kind"]), "nominal (<= 3 min ON) or total (segment)"),
        ("NSCANS", int(meta["n_scans"]), "Number of 2-s ON scans coadded"),
        ("MAPPOS", int(meta["position"]), "Map position index (0 unless MAP)"),
        ("DLAM", float(meta["dlam"]), "[arcmin] Pointing offset in longitude"),
        ("DBET", float(meta["dbet"]), "[arcmin] Pointing offset in latitude"),
        ("SRC-VLSR", float(meta["vsource"]), "[km/s] Source LSR velocity"),
        ("EDGECHAN", edge, "Unreliable channels at each end"),
        ("GOODLO", edge + 1, "First reliable channel (1-based)"),
        ("GOODHI", n_channels - edge, "Last reliable channel (1-based)"),
    ]


def _software(attrs) -> str:
    """'skyreduce <version>' from the level-1 ``software`` attr (a bare version or already prefixed)."""
    software = str(attrs.get("software") or __version__)
    return software if software.startswith("skyreduce") else f"skyreduce {software}"


def _history_cards(attrs, meta, flavour) -> list[tuple[str, str]]:
    lines = [f"SWAS level-1 {flavour} flavour written by {_software(attrs)}", *_history_entries(attrs),
             *_flag_lines(attrs, meta)]
    out = []
    for text in lines:
        for line in textwrap.wrap(_ascii(text), width=70, subsequent_indent="  ", break_long_words=True,
                                  break_on_hyphens=False) or [""]:
            out.append(("HISTORY", line))
    return out


def _tail_cards(meta, attrs, flavour, reduction_date, nblank):
    return [
        ("NBLANK", int(nblank), "Channels without data (NaN in CLASS, 0 in IRAF)"),
        ("SOFTWARE", _ascii(_software(attrs)), "Reduction software"),
        ("DATE", reduction_date, "Date reduced (UTC)"),
        *_history_cards(attrs, meta, flavour),
    ]


def _data_range(data):
    finite = data[np.isfinite(data)]
    if not finite.size:
        return []
    return [("DATAMIN", float(finite.min()), "[K] Minimum data value"),
            ("DATAMAX", float(finite.max()), "[K] Maximum data value")]


def _hdu(data, cards) -> fits.PrimaryHDU:
    """Primary HDU from the data and (key, value[, comment]) cards, built in one go (no per-card search)."""
    header = fits.Header([fits.Card(*card) for card in cards])
    return fits.PrimaryHDU(data, header=header)


def _offset_axis(offset_arcmin, sign):
    """(CRPIX, CDELT) so that the world offset at pixel 1, (1 - CRPIX) * CDELT, is the map offset [deg]."""
    if offset_arcmin == 0.0:
        return 1.0, sign * ARCMIN_DEG
    return 0.0, float(offset_arcmin) * ARCMIN_DEG


def class_hdu(coadd: Coadd, attrs, reduction_date) -> fits.PrimaryHDU:
    """The CLASS-flavoured primary HDU of one spectrum (shape (1, 1, 1, n_channels))."""
    meta = coadd.meta
    data = np.asarray(coadd.ta, dtype=">f4")
    n = data.size
    crpix2, cdelt2 = _offset_axis(float(meta["dlam"]), -1.0)
    crpix3, cdelt3 = _offset_axis(float(meta["dbet"]), 1.0)
    common = _common_cards(meta, n)
    common[7:7] = [("SCAN-NUM", float(meta["segment_number"]), "Scan number (SWAS segment)"),
                   ("TAU-ATM", 0.0, "Atmospheric opacity (none in orbit)"),
                   ("ORIGIN", "skyreduce", "")]
    cards = [
        ("BUNIT", "K", "Ta* (DSB antenna temperature)"),
        *_data_range(data),
        ("CTYPE1", "FREQ", ""),
        ("CRVAL1", 0.0, "Offset frequency"),
        ("CDELT1", float(meta["cdelt_freq"]), "Frequency resolution"),
        ("CRPIX1", float(meta["crpix"]), ""),
        ("CTYPE2", "RA---GLS", ""),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "ICRS", ""),
        ("CRVAL2", float(meta["ra"]), ""),
        ("CDELT2", cdelt2, "offset = (1 - CRPIX2) * CDELT2"),
        ("CRPIX2", crpix2, ""),
        ("CTYPE3", "DEC--GLS", ""),
        ("CRVAL3", float(meta["dec"]), ""),
        ("CDELT3", cdelt3, "offset = (1 - CRPIX3) * CDELT3"),
        ("CRPIX3", crpix3, ""),
        ("CTYPE4", "STOKES", ""),
        ("CRVAL4", 1.0, ""),
        ("CDELT4", 1.0, ""),
        ("CRPIX4", 1.0, ""),
        ("TELESCOP", telescop(meta["missday"], meta["segment_number"], meta["obsmode"]), "SWAS segment, mode"),
        ("OBJECT", _ascii(meta["object"]), ""),
        *common,
        ("COADDNUM", coadd.number, "Nominal coadd number (0 = total)"),
        *_tail_cards(meta, attrs, "CLASS", reduction_date, np.count_nonzero(~np.isfinite(data))),
    ]
    return _hdu(data.reshape(1, 1, 1, n), cards)


def iraf_hdu(coadd: Coadd, attrs, reduction_date) -> fits.PrimaryHDU:
    """The IRAF-flavoured (onedspec) primary HDU of one spectrum (1-D, LSRK frequency axis in Hz)."""
    meta = coadd.meta
    data = np.asarray(coadd.ta, dtype=">f4").copy()
    blank = ~np.isfinite(data)
    data[blank] = 0.0
    n = data.size
    freq = frequency_axis(meta, n)
    ra = Angle(float(meta["ra"]), u.deg).to_string(unit=u.hour, sep=":", precision=3, pad=True)
    dec = Angle(float(meta["dec"]), u.deg).to_string(unit=u.deg, sep=":", precision=2, pad=True, alwayssign=True)
    cards = [
        ("OBJECT", _ascii(meta["object"]), ""),
        ("ORIGIN", "skyreduce", ""),
        ("TELESCOP", telescop(meta["missday"], meta["segment_number"], meta["obsmode"]), "SWAS segment, mode"),
        ("BUNIT", "K", "Ta* (DSB antenna temperature)"),
        ("DISPAXIS", 1, ""),
        ("APFORMAT", "onedspec", ""),
        ("APNUM1", "1 1", ""),
        ("DC-FLAG", 0, "Linear dispersion"),
        ("WCSDIM", 1, ""),
        ("CTYPE1", "FREQ", "Frequency, LSRK frame"),
        ("CUNIT1", "Hz", ""),
        ("CRVAL1", float(meta["freq_ref"]), "[Hz] at CRPIX1"),
        ("CDELT1", float(meta["cdelt_freq"]), "[Hz] per channel"),
        ("CRPIX1", float(meta["crpix"]), ""),
        ("W0", float(freq[0]), "[Hz] first channel"),
        ("WPC", float(meta["cdelt_freq"]), "[Hz] per channel"),
        ("WAT0_001", "system=world", ""),
        ("WAT1_001", "wtype=linear label=Frequency units=Hz", ""),
        ("SPECSYS", "LSRK", ""),
        ("WCSNAMEV", "VRAD-LSRK", "Alternate axis: LSRK radio velocity"),
        ("CTYPE1V", "VRAD", ""),
        ("CUNIT1V", "km/s", ""),
        ("CRVAL1V", float(meta["vlsr_ref"]), "[km/s] at CRPIX1V"),
        ("CDELT1V", float(meta["cdelt_vel"]), "[km/s] per channel"),
        ("CRPIX1V", float(meta["crpix"]), ""),
        ("SPECSYSV", "LSRK", ""),
        ("RESTFRQV", float(meta["restfreq"]), "[Hz]"),
        ("RA", ra, "Target (0,0) right ascension (ICRS)"),
        ("DEC", dec, "Target (0,0) declination (ICRS)"),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "ICRS", ""),
        *_data_range(data),
        *_common_cards(meta, n),
        *_tail_cards(meta, attrs, "IRAF", reduction_date, np.count_nonzero(blank)),
    ]
    return _hdu(data, cards)


# ---------------------------------------------------------------------------------------------- writing


def _atomic_writeto(hdu, path: Path, fsync: bool = False) -> None:
    """Write to a temporary name in the same folder (fsync'ed if asked), then os.replace: a reader (or a
    crash) never sees a partial product."""
    atomic_write_fits(hdu, path, fsync=fsync, output_verify="exception")


def coadds_of(level1) -> list[Coadd]:
    """The level-1 rows as Coadd records, numbered per (segment, band, position) in time order.

    ``level1`` must be computed (numpy-backed); a dask-backed one is computed here once.
    """
    missing = [name for name in (*REQUIRED_COORDS, "ta") if name not in level1.variables]
    if missing:
        raise SchemaError(f"level-1 dataset lacks {missing} (see swas_level1.md)")
    if level1.sizes.get("coadd", 0) == 0:
        return []
    if any(getattr(level1[name].variable, "chunks", None) for name in (*REQUIRED_COORDS, "ta")):
        level1 = level1.compute()
    columns = {name: level1[name].values for name in REQUIRED_COORDS}
    ta = np.asarray(level1["ta"].transpose("coadd", "channel").values)
    rows = []
    for i in range(ta.shape[0]):
        meta = {name: _scalar(col[i]) for name, col in columns.items()}
        for name in ("object", "obsmode", "band", "sideband", "kind"):
            meta[name] = str(meta[name])
        rows.append((i, meta))
    rows.sort(key=lambda r: (r[1]["segment"], r[1]["band"], r[1]["position"], r[1]["kind"], r[1]["time_start"], r[0]))
    out, counter = [], {}
    for i, meta in rows:
        key = (meta["segment"], meta["band"], meta["position"], meta["kind"])
        counter[key] = counter.get(key, 0) + 1
        number = 0 if meta["kind"] == "total" else counter[key]
        out.append(Coadd(i, ta[i], meta, number))
    return out


def _check(coadd: Coadd) -> None:
    meta = coadd.meta
    what = (f"segment {meta['missday']:04d}_{meta['segment_number']:03d} ({meta['object']}) "
            f"band {meta['band']} coadd {coadd.index}")
    if meta["kind"] not in ("nominal", "total"):
        raise ReduceError(f"{what}: unknown coadd kind {meta['kind']!r}")
    for name in ("crpix", "freq_ref", "cdelt_freq", "vlsr_ref", "cdelt_vel", "restfreq", "tsys", "on_time"):
        if not np.isfinite(meta[name]):
            raise ReduceError(f"{what}: {name} is not finite")
    if meta["cdelt_freq"] == 0 or meta["cdelt_vel"] == 0:
        raise ReduceError(f"{what}: zero channel spacing")
    if not (0 < meta["tsys"] < 5000):
        raise ReduceError(f"{what}: implausible TSYS {meta['tsys']} K (uncalibrated segments get no product)")


def write_products(level1, out_dir, *, log=None, reduction_time=None, failures=None, fsync=False,
                   top_index=True) -> list[Path]:
    """Write every level-1 coadd as IRAF- and CLASS-flavoured FITS under ``out_dir`` (layout: module doc).

    ``level1``: the computed level-1 Dataset (swas_level1.md). ``log``: a logging.Logger, a
    callable taking one line, or None (this module's logger). ``reduction_time``: datetime, ISO
    string or astropy Time for the DATE keyword (default: ``level1.attrs['reduction_time']``, else
    now). A coadd whose metadata is unusable gets one line in the log (and a ``(segment, reason)``
    in ``failures`` if a list is given) and no product; the rest are written. Every product is
    written under a temporary name and renamed into place (``fsync=True`` also syncs each file to
    disk first: durable against power loss, ~8 ms more per file here). A product that cannot be
    written (e.g. a file where its target folder should be) is one failure like the others.
    ``top_index``: also rewrite ``out_dir/targets.tsv`` (the runner does it once at the end).
    Returns the FITS paths written, sorted.
    """
    out_dir = Path(out_dir)
    attrs = dict(level1.attrs)
    date = _reduction_date(reduction_time if reduction_time is not None else attrs.get("reduction_time"))
    written: list[Path] = []
    folders: dict[str, Path] = {}
    seen: set[tuple[Path, str]] = set()
    for coadd in coadds_of(level1):
        meta = coadd.meta
        try:
            _check(coadd)
            name = meta["object"]
            if name not in folders:
                folders[name] = None          # one failure line per target whose folder cannot be made
                try:
                    folders[name] = write_target_index(out_dir, name)
                except (ReduceError, OSError) as exc:
                    raise ReduceError(f"target {name!r}: no products written: {exc}") from exc
            folder = folders[name]
            if folder is None:
                continue
            if (folder, coadd.product_name) in seen:
                raise ReduceError(f"segment {meta['missday']:04d}_{meta['segment_number']:03d} ({name}): a second "
                                  f"coadd {coadd.index} for {coadd.product_name} (kind {meta['kind']}); not written")
            seen.add((folder, coadd.product_name))
            flavours = [(CLASS_DIR, class_hdu)]
            if meta["kind"] == "nominal":
                flavours.insert(0, (IRAF_DIR, iraf_hdu))
            for sub, make in flavours:
                path = folder / sub / coadd.product_name
                path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_writeto(make(coadd, attrs, date), path, fsync)
                written.append(path)
        except (ReduceError, OSError) as exc:
            _emit(log, logging.ERROR, f"EXPORT FAILED {exc}")
            if failures is not None:
                failures.append((int(meta["segment"]), str(exc)))
    folders = {k: v for k, v in folders.items() if v is not None}
    if folders and top_index:
        write_top_index(out_dir)
    n_iraf = sum(p.parent.name == IRAF_DIR for p in written)
    _emit(log, logging.INFO, f"export: {n_iraf} IRAF and {len(written) - n_iraf} CLASS spectra "
                             f"for {len(folders)} target(s) under {out_dir}")
    return sorted(written)
