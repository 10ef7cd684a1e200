"""Export of one mosaic: ``{base}_maic.fits`` (surface brightness, MJy/sr), ``{base}_munc.fits``
(1-sigma, MJy/sr), ``{base}_mcov.fits`` (coverage: frames per output pixel) and
``{base}_mptg.tbl`` (IPAC table, one row per frame: pointing correction, background offset,
rejected pixels, status), written atomically with CHECKSUM/DATASUM, read from the mosaic's zarr
group (``steps.images``). ``base`` = ``SPITZER_M{C}_{AORKEY}_{VER}`` (``pipeline.product_base``).

Filtered products (MIPS 70 and 160 um, ``steps.filtering``), as the SSC made them: per frame
used ``{BCD base}_fbcd.fits`` (the BCD minus the running time median of each pixel, MJy/sr;
the BCD's header plus FILTER / FILTWIN / FILTMSK and HISTORY), and the mosaic of those,
``{base}_fmaic.fits`` / ``_fmunc.fits`` / ``_fmcov.fits``. They are for faint point sources:
the filter removes the slow Ge drifts together with the sky and every extended structure
larger than about half the window along the scan, so extended emission must be measured on
the unfiltered ``_bcd`` / ``_maic``."""
from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import numpy as np
from astropy.io import ascii, fits
from astropy.table import Table

from .. import __version__
from ..io.atomic import atomic_write_fits, atomic_write_text
from .arrays import BAND_LABEL, product_base
from .kernels.filtering import odd_window
from .steps import images
from .steps.filtering import FILTER_NAME

KINDS = {"maic": ("sci", "MJy/sr", "surface brightness (post-BCD mosaic)"),
         "munc": ("unc", "MJy/sr", "1-sigma uncertainty of the mosaic"),
         "mcov": ("cov", "frames", "coverage: frames per output pixel")}
FILTERED_KINDS = {"fmaic": ("fsci", "MJy/sr", "filtered mosaic (point sources only)"),
                  "fmunc": ("func", "MJy/sr", "1-sigma uncertainty of the filtered mosaic"),
                  "fmcov": ("fcov", "frames", "coverage of the filtered mosaic")}
ALL_KINDS = dict(KINDS, **FILTERED_KINDS)

HISTORY = [
    "skyreduce level 2 (reduce.mosaic): BCDs of one array on a TAN grid",
    "1 pointing: sources per frame (photutils), per-frame offsets by sparse",
    "  robust least squares (tied to REFCAT when given)",
    "2 background: one additive level per frame from robust differences in",
    "  the overlaps, sparse least squares, offsets sum to zero",
    "3 outliers: median of the frames on the output grid, blotted back to",
    "  each frame; pixels beyond OUTNSIG rejected",
    "4 coadd: drizzle, inverse-variance weights, fatal mask bits excluded",
    "no background or sky subtraction (the frames' mean level is kept)",
]

FILTER_HISTORY = [
    "filtered: per pixel the running median over FILTWIN DCEs of its good,",
    "  not rejected values, sources (FILTMSK sigma) left out, subtracted",
    "  (time-median high-pass: removes the slow Ge drifts for faint point",
    "  sources; it also removes the sky and extended emission: use the",
    "  unfiltered BCDs and mosaic (_bcd, _maic) for extended emission)",
]


def filter_cards(params, h=None):
    """``h`` (a new Header when None) with the filter keywords and HISTORY added."""
    h = fits.Header() if h is None else h
    h["FILTER"] = (FILTER_NAME, "filtered product (point sources only)")
    h["FILTWIN"] = (odd_window(params.filter_window), "[DCEs] running time-median window")
    h["FILTMSK"] = (float(params.filter_mask_nsigma), "[sigma] sources left out of the median")
    for line in FILTER_HISTORY:
        h.add_history(line)
    return h


def _cards(unit, plan, summary, params, rows, kind):
    ok = rows["status"] == "ok"
    refined = ok & (rows["refined"] == 1)
    ids = sorted(str(f) for f in np.asarray(rows["frame_id"])[ok])
    aors = sorted({int(a) for a in np.asarray(rows["aorkey"])[ok]})
    sol = summary["pointing"]
    h = fits.Header()
    h["TELESCOP"] = ("Spitzer", "telescope")
    h["INSTRUME"] = (plan.instrument, "instrument")
    h["CHNLNUM"] = (int(plan.chnlnum), "array / channel")
    h["BAND"] = (BAND_LABEL[(plan.instrument, plan.chnlnum)], "band")
    if len(aors) == 1:
        h["AORKEY"] = (aors[0], "observation request key")
    h["NAORS"] = (len(aors), "AORs combined")
    h["BUNIT"] = (ALL_KINDS[kind][1], ALL_KINDS[kind][2])
    h["PRODTYPE"] = (kind, "maic: mosaic, munc: uncertainty, mcov: coverage" if kind in KINDS
                     else "fmaic/fmunc/fmcov: filtered mosaic")
    h["NFRAMES"] = (int(ok.sum()), "BCD frames combined")
    h["NSKIPPED"] = (int((~ok).sum()), "frames not used (see the _mptg.tbl)")
    h["NREFINE"] = (int(refined.sum()), "frames with refined pointing")
    h["NUNREF"] = (int((ok & ~refined).sum()), "frames kept at the spacecraft pointing")
    h["PTGMODE"] = (str(sol["mode"]), "pointing refinement: absolute, relative, off")
    rms = float(sol["rms"]) if np.isfinite(sol["rms"]) else -1.0
    h["PTGRMS"] = (round(rms, 4), "[arcsec] rms of matched residuals (-1: none)")
    offs = np.hypot(rows["d_east"][refined], rows["d_north"][refined])
    h["OFFRMS"] = (round(float(np.sqrt(np.mean(offs ** 2))) if offs.size else 0.0, 4),
                   "[arcsec] rms of the applied pointing offsets")
    h["NREFMTCH"] = (int(sol["n_ref_matches"]), "sources matched to the reference catalogue")
    h["REFCAT"] = (Path(params.refcat).name if params.refcat else "none", "reference catalogue")
    h["BGMATCH"] = (bool(params.background), "background matching of frame overlaps")
    h["BGPAIRS"] = (int(summary["background"]["pairs_used"]), "overlapping frame pairs used")
    h["BGGROUP"] = ("leg" if getattr(plan, "groups", None) is not None else "frame",
                    "one background offset per scan leg or per frame")
    h["BGRMS"] = (round(float(np.sqrt(np.mean(rows["bg_offset"][ok] ** 2))) if ok.any() else 0.0, 6),
                  "[MJy/sr] rms of the per-frame offsets")
    h["OUTREJ"] = (bool(params.outliers), "outlier rejection across frames")
    h["OUTNSIG"] = (float(params.outlier_nsigma), "outlier threshold (sigma)")
    h["OUTMIND"] = (int(params.outlier_min_depth), "frames needed for the median test")
    h["OUTDUAL"] = (bool(params.outlier_dual), "spatial test where coverage is shallower")
    h["NREJECT"] = (int(rows["n_rejected"][ok].sum()), "pixels rejected as outliers")
    h["PIXFRAC"] = (float(params.pixfrac), "drizzle pixfrac")
    h["BCDSUM"] = (hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32], "SHA-256 of the sorted frame ids")
    h["CREATOR"] = (f"skyreduce {__version__}", "software")
    h["PIPEVERS"] = (__version__, "pipeline version")
    h["DATE"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "file written (UTC)")
    for line in HISTORY:
        h.add_history(line)
    return h


def write_products(store, out: Path, unit, plan, summary, params, rows) -> list[Path]:
    """Write the unit's four products into ``out``; returns their paths."""
    attrs = images.attrs(store, unit.key)
    grid_header = fits.Header.fromstring(attrs["wcs"])
    aor = unit.info.get("aorkey")
    base = product_base(plan.instrument, plan.chnlnum, aor, __version__)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    kinds = ALL_KINDS if summary.get("filtered") else KINDS
    for kind, (name, _unit, _what) in kinds.items():
        data = np.asarray(images.read(store, unit.key, name), dtype=np.float32)
        h = _cards(unit, plan, summary, params, rows, kind)
        if kind in FILTERED_KINDS:
            filter_cards(params, h)
        h.update(grid_header)
        h["RADESYS"] = ("ICRS", "celestial reference system")
        path = out / f"{base}_{kind}.fits"
        atomic_write_fits(fits.PrimaryHDU(data, header=h), path, checksum=True)
        files.append(path)
    t = Table({k: np.asarray(rows[k]) for k in ("frame_id", "aorkey", "time", "d_east", "d_north", "sigma_east",
                                                "sigma_north", "nmatch", "refined", "bg_offset", "bg_sigma",
                                                "n_rejected", "status")})
    for k, u in (("time", "d"), ("d_east", "arcsec"), ("d_north", "arcsec"), ("sigma_east", "arcsec"),
                 ("sigma_north", "arcsec"), ("bg_offset", "MJy/sr"), ("bg_sigma", "MJy/sr")):
        t[k].unit = u
    buf = io.StringIO()
    ascii.write(t, buf, format="ipac")
    path = out / f"{base}_mptg.tbl"
    atomic_write_text(path, buf.getvalue(), fsync=False)
    files.append(path)
    return files


# cards of a BCD header that a filtered BCD does not copy (structure, checksums: written anew)
_NOT_COPIED = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "PCOUNT",
               "GCOUNT", "BSCALE", "BZERO", "CHECKSUM", "DATASUM", "EXTNAME", "EXTVER")


def _copied_header(header) -> fits.Header:
    h = header.copy()
    for k in _NOT_COPIED:
        while k in h:
            del h[k]
    return h


def _store_meta(plan):
    """Per-frame keywords of the store rows of a StoreFrames unit: {column: values}."""
    t = plan.src._table()
    cols = ("aorkey", "expid", "dcenum", "dceid", "time", "exptime", "ra_ref", "dec_ref", "pa_ref", "source_file",
            "object")
    return {k: t[k].values for k in cols if k in t}


def _fbcd_header_from_store(plan, meta, i) -> fits.Header:
    """A filtered BCD's header where its BCD file is not in ``out``: the frame's WCS and the
    essential keywords of the store row."""
    from astropy.time import Time
    h = fits.Header()
    h["TELESCOP"] = ("Spitzer", "SPITZER Space Telescope")
    h["INSTRUME"] = ("MIPS", "SPITZER Space Telescope instrument ID")
    h["CHNLNUM"] = (int(plan.chnlnum), "1=24um, 2=70um, 3=160um")
    h["AORKEY"] = (int(meta["aorkey"][i]), "AOR key. Astrnmy Obs Req")
    h["EXPID"] = (int(meta["expid"][i]), "Exposure ID (0-9999)")
    h["DCENUM"] = (int(meta["dcenum"][i]), "DCE number (0-9999)")
    if "dceid" in meta:
        h["DCEID"] = (int(meta["dceid"][i]), "Data-Collection-Event ID")
    if "object" in meta:
        h["OBJECT"] = (str(meta["object"][i])[:60], "Target Name")
    mjd = float(meta["time"][i])
    if np.isfinite(mjd):
        h["DATE_OBS"] = (Time(mjd, format="mjd", scale="utc").isot, "DCE mid-time (UTC)")
        h["MJD_OBS"] = (mjd, "[days] MJD (UTC) at DCE mid-time")
    if "exptime" in meta:
        h["EXPTIME"] = (float(meta["exptime"][i]), "[sec] Effective integration time per pixel")
    for k in ("ra_ref", "dec_ref", "pa_ref"):
        if k in meta:
            h[k.upper()] = (float(meta[k][i]), "[deg] pointing used for the WCS")
    h.update(fits.Header.fromstring(plan.infos[i].header, sep="\n"))
    if "source_file" in meta:
        h["RAWFILE"] = (Path(str(meta["source_file"][i])).name[:60], "Raw data file name")
    return h


def write_filtered_bcds(store, out: Path, unit, plan, params, rows) -> list[Path]:
    """One ``_fbcd.fits`` per frame used (status ok) of a filtered mosaic, into ``out``.

    Store units: ``{BCD base}_fbcd.fits`` (``reduce.mips.bcd_export.bcd_basename``) with the
    header of ``out/{BCD base}_bcd.fits`` when that file is there (``skyreduce reduce mips``
    writes the BCDs and the mosaics to one folder), else the frame's WCS and the essential
    keywords of its store row. BCD files (``skyreduce mosaic``): ``{input base}_fbcd.fits``
    (the input name less ``_bcd.fits``, or less ``.fits``) with the input's header. Either way
    BUNIT MJy/sr, the filter keywords (``filter_cards``), CHECKSUM/DATASUM, written atomically."""
    from ..mips.bcd_export import bcd_basename
    from .sources import StoreFrames
    ok = np.flatnonzero(np.asarray(rows["status"]) == "ok")
    if not len(ok):
        return []
    out.mkdir(parents=True, exist_ok=True)
    store_src = isinstance(plan.src, StoreFrames)
    meta = _store_meta(plan) if store_src else None
    date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    files = []
    for i in ok:
        i = int(i)
        if store_src:
            base = bcd_basename(plan.chnlnum, meta["aorkey"][i], meta["expid"][i], meta["dcenum"][i], __version__)
            bcd = out / f"{base}_bcd.fits"
            h = _copied_header(fits.getheader(bcd)) if bcd.exists() else _fbcd_header_from_store(plan, meta, i)
        else:
            from .bcdfiles import _read_image
            path = Path(plan.src.files[i].path)
            name = path.name
            base = name[:-len("_bcd.fits")] if name.endswith("_bcd.fits") else name.rsplit(".fits", 1)[0]
            h = _copied_header(_read_image(path)[1])
        data = np.asarray(images.read(store, unit.key, "filtered", (i,)), dtype=np.float32)
        h["BUNIT"] = ("MJy/sr", "Units of image data")
        h["PRODTYPE"] = ("fbcd", "filtered BCD (point sources only)")
        filter_cards(params, h)
        h["PIPEVERS"] = (__version__, "skyreduce pipeline version")
        h["DATE"] = (date, "[YYYY-MM-DDThh:mm:ss UTC] file creation date")
        target = out / f"{base}_fbcd.fits"
        atomic_write_fits(fits.PrimaryHDU(data, header=h), target, checksum=True)
        files.append(target)
    return files

