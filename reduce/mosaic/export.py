"""Export of one mosaic: ``{base}_maic.fits`` (surface brightness, MJy/sr), ``{base}_munc.fits``
(1-sigma, MJy/sr), ``{base}_mcov.fits`` (coverage: frames per output pixel) and
``{base}_mptg.tbl`` (IPAC table, one row per frame: pointing correction, background offset,
rejected pixels, status), written atomically with CHECKSUM/DATASUM, read from the mosaic's zarr
group (``steps.images``). ``base`` = ``SPITZER_M{C}_{AORKEY}_{VER}`` (``pipeline.product_base``)."""
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
from .kernels.frames import Grid
from .steps import images

KINDS = {"maic": ("sci", "MJy/sr", "surface brightness (post-BCD mosaic)"),
         "munc": ("unc", "MJy/sr", "1-sigma uncertainty of the mosaic"),
         "mcov": ("cov", "frames", "coverage: frames per output pixel")}

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
    h["BUNIT"] = (KINDS[kind][1], KINDS[kind][2])
    h["PRODTYPE"] = (kind, "maic: mosaic, munc: uncertainty, mcov: coverage")
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
    for kind, (name, _unit, _what) in KINDS.items():
        data = np.asarray(images.read(store, unit.key, name), dtype=np.float32)
        h = _cards(unit, plan, summary, params, rows, kind)
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


def grid_of(store, key) -> Grid:
    """The output Grid of a mosaic in the store."""
    from astropy.wcs import WCS
    a = images.attrs(store, key)
    return Grid(WCS(fits.Header.fromstring(a["wcs"])), tuple(a["shape"]))
