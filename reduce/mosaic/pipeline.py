"""Level 2 on the runner: post-BCD mosaics (``MipsMosaic`` over a MIPS store's BCDs, after
``MipsBcd``; ``FileMosaic`` over BCD FITS files for ``skyreduce mosaic``).

A unit is one mosaic: one AOR of one array (the SSC's post-BCD product), or for
``skyreduce mosaic`` one array over every AOR given (``--per-aor``: per AOR and array). Its
lazy graph (``build``), in order, each step a module of ``reduce.mosaic.steps``:

1. pointing: sources per frame, per-frame offsets by sparse robust least squares, tied to a
   reference catalogue when one is given (``--refcat``), relative otherwise;
2. background: additive levels from the overlaps of frame pairs (sum zero), one per frame, or
   one per scan leg for the MIPS 70/160 um scan maps (``MosaicParams.background_groups``);
3. outliers: median of the frames on the output grid per tile, each frame compared with it;
4. coadd: drizzle per output tile (inverse-variance weights), tiles written to zarr;
5. filtered (MIPS 70 and 160 um only, ``MosaicParams.filtered``): the SSC's filtered BCDs, per
   pixel the running time median over ``filter_window`` DCEs subtracted (``steps.filtering``),
   and a second coadd of them on the same tiles with the same rejected pixels: for faint
   point sources; the unfiltered mosaic is the one for extended emission.

Per-frame results go to the store table ``mosaic_frames`` (schemas/mosaic.yaml), the images
to the zarr group ``level2/<key>``; ``export_unit`` writes ``*_maic.fits`` (MJy/sr),
``*_munc.fits``, ``*_mcov.fits`` and ``*_mptg.tbl`` (the per-frame table) from there, and for
the Ge arrays ``*_fmaic.fits``, ``*_fmunc.fits``, ``*_fmcov.fits`` and one ``*_fbcd.fits`` per
frame used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
from astropy.wcs.utils import proj_plane_pixel_scales

from .. import __version__
from ..runner import Pipeline, TableSpec, Unit, UnitResult, compute_graph, hash_strings, read_records, run
from .arrays import BAND_LABEL, FWHM, PIXEL_SCALE, POINTING_SIGMA
from .kernels.background import leg_groups, overlap_pairs
from .kernels.frames import footprint, frame_centre
from .kernels.grid import frames_in_tiles, output_grid, tile_bounds
from .kernels.pointing import is_narrow
from .sources import FileFrames, StoreFrames
from .steps import background as bg_step
from .steps import coadd as coadd_step
from .steps import filtering as filter_step
from .steps import images
from .steps import outliers as outlier_step
from .steps import pointing as pointing_step

FRAMES = TableSpec("frames", "mosaic", "mosaic_frames")

@dataclass(frozen=True)
class MosaicParams:
    """Parameters of the level-2 step (defaults documented in the README)."""

    pixel_scale: float | None = None      # arcsec; None: PIXEL_SCALE of the array
    refcat: str | None = None             # reference catalogue file (absolute pointing)
    refcat_sha256: str = ""
    refine: bool = True
    min_matches: int = 3                  # matched sources a frame needs to be refined
    min_matches_narrow: int = 1           # the same for frames narrower than the source-fit box (160 um)
    background: bool = True
    outliers: bool = True
    outlier_nsigma: float = 4.0
    outlier_min_depth: int = 3
    outlier_dual: bool = True
    outlier_time_split: bool = True       # also test against the other end of each pixel's time span
    pixfrac: float = 1.0
    tile: int = 512                       # output tile side (pixels)
    frame_block: int = 64                 # frames per task
    max_neighbours: int = 12              # overlapping frames per frame in the background solve
    background_groups: str = "auto"       # "frame", "leg" or "auto": see background_groups_for
    filtered: bool = True                 # MIPS 70/160 um: also the filtered BCDs and mosaic
    filter_window: int = 15               # DCEs in the running time median (odd)
    filter_mask_nsigma: float = 3.0       # sources above this (per frame) left out of the median

    def min_matches_for(self, shape, fwhm_px) -> int:
        """Matched sources a frame of ``shape`` needs to be refined: ``min_matches_narrow`` for
        frames with fewer rows or columns than the source-fit box (``kernels.pointing.is_narrow``:
        the MIPS 160 um strips, 2 x 20 pixels, 320" x 36", where a frame rarely holds more than
        one source; one source fitted to ~0.5" fixes the frame's 2-D offset, its sigma that
        source's centroid error, with no redundancy to reject a bad match), ``min_matches``
        otherwise. With or without a reference catalogue (without one, the source is tied to
        its detections in the other frames: the simulated 160 um scan map of
        tests/mosaic/test_mips_level2_160 at seed 16 has 129 of 448 frames refined either
        way, centroids 0.44" rms with the catalogue, 0.60" without)."""
        return self.min_matches_narrow if is_narrow(shape, fwhm_px) else self.min_matches

    def background_groups_for(self, instrument, chnlnum) -> str:
        """"leg" or "frame": what one background offset covers. "auto" (the default): "leg" for the
        MIPS 70 and 160 um arrays (their slow drifts give one additive offset per scan leg, as the
        simulator's +-0.9 MJy/sr per leg at 160 um), "frame" for the other arrays (24 um: residual
        dark/flat levels per frame). "leg" applies to the frames of scan-map AORs only
        (``kernels.background.leg_groups``: AOT_TYPE with "scan", legs by EXPID); frames of other
        AORs keep one offset each. Per leg, each offset is fitted from every cross-leg overlap of a
        leg's 60-200 frames, where per frame a 2 x 20 pixel 160 um strip's offset carries
        0.1-0.2 MJy/sr of its own noise and sources and its nearest frames are on its own leg
        (tests/mosaic/test_mips_level2_160, seeds 16-19: frames' offsets 0.52-0.64 MJy/sr rms off
        the simulated per-leg ones per frame, legs within 0.10 per leg); at 70 um
        (tests/mosaic/test_mips_scanmap, 4 legs) 0.030 MJy/sr rms per frame, 0.007 per leg."""
        if self.background_groups != "auto":
            return self.background_groups
        return "leg" if (instrument, chnlnum) in (("MIPS", 2), ("MIPS", 3)) else "frame"

    def with_refcat(self, path):
        if path is None:
            return self
        from dataclasses import replace
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return replace(self, refcat=str(Path(path).resolve()), refcat_sha256=sha)


# ---------------------------------------------------------------- the graph of one unit
@dataclass
class Plan:
    """What the builder knows before anything is computed: frames, geometry, tiles, pairs."""

    src: object
    infos: list
    positions: list        # frames with a WCS
    grid: object
    bounds: list
    members: list
    pairs: np.ndarray
    centres: np.ndarray
    footprints: np.ndarray   # (n, 4, 2) deg, NaN for frames without a WCS
    groups: np.ndarray | None  # (n,) background-offset group of each frame (scan legs), None: per frame
    instrument: str
    chnlnum: int
    fwhm_px: float
    pixel_arcsec: float


def plan(src, instrument, chnlnum, params: MosaicParams) -> Plan:
    """Geometry of a mosaic from the frames' WCS (small per-frame facts, no pixels)."""
    infos = src.infos()
    positions = [i for i, f in enumerate(infos) if f.header]
    key = (instrument, chnlnum)
    n = len(infos)
    centres = np.full((n, 2), np.nan)
    fps = np.zeros((len(positions), 4, 2))
    native = np.nan
    for k, i in enumerate(positions):
        w = infos[i].wcs()
        fps[k] = footprint(w, infos[i].shape)
        centres[i] = frame_centre(w, infos[i].shape)
        if not np.isfinite(native):
            native = float(np.mean(proj_plane_pixel_scales(w)) * 3600.0)
    scale = params.pixel_scale or PIXEL_SCALE[key]
    margin = int(np.ceil(5 * POINTING_SIGMA[key] / scale)) + 2    # room for the refined pointing
    allfps = np.full((n, 4, 2), np.nan)
    allfps[positions] = fps
    groups = None
    if params.background_groups_for(instrument, chnlnum) == "leg":
        groups = leg_groups([f.aorkey for f in infos], [f.expid for f in infos], [f.time for f in infos],
                            ["scan" in f.aot_type.lower() for f in infos])
        groups = groups if (groups >= 0).any() else None
    if not positions:
        return Plan(src, infos, [], None, [], [], np.zeros((0, 2), np.int64), centres, allfps, groups, instrument,
                    chnlnum, 0, 0)
    grid = output_grid(fps, scale, margin_px=margin)
    bounds = tile_bounds(grid.shape, params.tile)
    members = [np.asarray(positions)[np.asarray(m, dtype=np.int64)]
               for m in frames_in_tiles(fps, grid, bounds, pad_px=margin)]
    pairs = overlap_pairs(fps, max_neighbours=params.max_neighbours,
                          groups=None if groups is None else groups[positions])
    pairs = np.asarray(positions)[pairs] if len(pairs) else np.zeros((0, 2), np.int64)
    return Plan(src, infos, positions, grid, bounds, members, pairs, centres, allfps, groups, instrument, chnlnum,
                FWHM[key] / native, native)


def build(plan_: Plan, store, key, params: MosaicParams, refcat=None):
    """The unit's lazy graph: a dask.delayed of the summary dict (nothing computed)."""
    p = plan_
    n = len(p.infos)
    if not p.positions:
        return dask.delayed(_empty)(n)
    key_ = (p.instrument, p.chnlnum)
    shape = p.infos[p.positions[0]].shape
    filt = filter_step.wanted(p.instrument, p.chnlnum, params)
    ready = dask.delayed(images.create, pure=True)(
        str(store), key, p.grid.shape, params.tile, n, shape, params.frame_block,
        {"wcs": p.grid.wcs.to_header().tostring(), "shape": list(p.grid.shape)}, filt)
    match_radius = max(3.0 * POINTING_SIGMA[key_], 0.5 * FWHM[key_])
    # the frame source once in the graph, not walked by dask for every task (a FileFrames holds
    # one dataclass per BCD: walking it was 5 % of a mosaic's time)
    src = dask.delayed(p.src, pure=True, traverse=False)
    sol = pointing_step.refine(src, p.positions, n, p.centres, fwhm_px=p.fwhm_px, pixel_arcsec=p.pixel_arcsec,
                               refcat=refcat, match_radius_arcsec=match_radius,
                               min_matches=params.min_matches_for(shape, p.fwhm_px),
                               block=params.frame_block, enabled=params.refine, ready=ready,
                               masks=bg_step.SourceMasks(str(store), key, fwhm_px=p.fwhm_px) if params.background
                               else None)
    bg = bg_step.match(src, str(store), key, p.pairs, n, sol, p.footprints, enabled=params.background,
                       groups=p.groups)
    times = np.array([f.time for f in p.infos], np.float64)   # an array: dask does not walk it
    rejected = outlier_step.reject(src, str(store), key, p.positions, p.grid, p.bounds, p.members, sol, bg,
                                   params, block=params.frame_block, fwhm_px=p.fwhm_px,
                                   times=times if params.outlier_time_split and np.isfinite(times).all() else None,
                                   pointing_sigma_arcsec=POINTING_SIGMA[key_], pixel_arcsec=p.pixel_arcsec,
                                   ready=ready, footprints=p.footprints)
    tiles = coadd_step.coadd(src, str(store), key, p.grid, p.bounds, p.members, sol, bg, pixfrac=params.pixfrac,
                             ready=[ready, rejected])
    ftiles = []
    if filt:
        done = filter_step.highpass(src, str(store), key, p.infos, p.positions, params, block=params.frame_block,
                                    ready=[ready, rejected])
        ftiles = coadd_step.coadd(src, str(store), key, p.grid, p.bounds, p.members, sol, None,
                                  pixfrac=params.pixfrac, ready=done, filtered=True)
    return dask.delayed(_summary, pure=True)(n, sol, bg, rejected, tiles, ftiles, filt)


def _empty(n):
    return {"n": n, "pointing": pointing_step._zero(n), "background": bg_step._zero(n, 0), "rejected": {},
            "pixels": 0, "filtered": False, "fpixels": 0}


def _summary(n, sol, bg, rejected, tiles, ftiles=(), filtered=False):
    return {"n": n, "pointing": sol, "background": bg, "rejected": rejected, "pixels": int(sum(tiles)),
            "filtered": bool(filtered), "fpixels": int(sum(ftiles))}


# ---------------------------------------------------------------- the pipelines
class _MosaicBase(Pipeline):
    """What both mosaic pipelines share: the frames table, computing and exporting a unit."""

    store_schema = ""

    def tables(self):
        return [FRAMES]

    def table_attrs(self, store):
        return {FRAMES.name: {"pipeline_version": __version__, "store_schema": "mosaic"}}

    def source(self, store, unit):
        raise NotImplementedError

    def _refcat(self):
        if not self.params.refcat:
            return None
        from .kernels.refcat import read_refcat
        return read_refcat(self.params.refcat)

    def build_unit(self, store, unit):
        src = self.source(store, unit)
        p = plan(src, unit.info["instrument"], unit.info["chnlnum"], self.params)
        return [build(p, store, unit.key, self.params, self._refcat())]

    def compute_unit(self, store, unit):
        src = self.source(store, unit)
        p = plan(src, unit.info["instrument"], unit.info["chnlnum"], self.params)
        summary, = compute_graph(build(p, store, unit.key, self.params, self._refcat()))
        rows = _frame_rows(p, summary)
        label = BAND_LABEL[(p.instrument, p.chnlnum)]
        notes = _notes(unit, p, summary, rows, self.params)
        used = int((rows["status"] == "ok").sum())
        counts = {f"{label} mosaics": 1 if used else 0, f"{label} frames used": used,
                  f"{label} frames refined": int(rows["refined"].sum()), f"{label} frames not used": len(rows["status"]) - used}
        if not used:
            return UnitResult(status="excluded", reason="no usable frame", rows={FRAMES.name: rows}, counts=counts)
        return UnitResult(rows={FRAMES.name: rows}, counts=counts, notes=notes,
                          context={"summary": _small(summary), "plan": p})

    def export_unit(self, store, out, unit, result, slots):
        from .export import write_products
        from .export import write_filtered_bcds
        files = write_products(store, Path(out), unit, result.context["plan"], result.context["summary"],
                               self.params, result.rows[FRAMES.name])
        if result.context["summary"].get("filtered"):
            files += write_filtered_bcds(store, Path(out), unit, result.context["plan"], self.params,
                                         result.rows[FRAMES.name])
        return len(files), []

    def describe(self, summary):
        c = summary.counts
        lines = []
        for label in dict.fromkeys(BAND_LABEL.values()):
            if f"{label} frames used" in c:
                lines.append(f"  {label:>6}: {c[f'{label} mosaics']} mosaics from {c[f'{label} frames used']} frames "
                             f"({c[f'{label} frames refined']} pointing-refined, {c[f'{label} frames not used']} not used)")
        return lines


def _notes(unit, p: Plan, summary, rows, params) -> list[str]:
    """Lines for the user about what the mosaic could not do (not failures)."""
    ok = rows["status"] == "ok"
    name = f"{unit.label}:"
    notes = []
    if ok.sum() == 1:
        notes.append(f"{name} only one usable frame: no pointing refinement or background matching across frames")
        return notes
    bg = summary["background"]
    alone = [p.infos[i].name for i in np.flatnonzero(ok) if bg["component"][i] < 0] if params.background else []
    for nm in alone[:20]:
        notes.append(f"{name} frame {nm} overlaps no other frame: its level is not matched")
    if len(alone) > 20:
        notes.append(f"{name} ... {len(alone) - 20} more frames overlap no other frame")
    unref = int((ok & (rows["refined"] == 0)).sum())
    if params.refine and unref:
        need = params.min_matches_for(p.infos[p.positions[0]].shape, p.fwhm_px)
        notes.append(f"{name} {unref} of {int(ok.sum())} frames kept the spacecraft pointing (fewer than "
                     f"{need} matched source{'s' if need != 1 else ''})")
    if params.refcat and summary["pointing"]["mode"] != "absolute":
        notes.append(f"{name} reference catalogue {params.refcat} matched no source: pointing refined relative "
                     "to the frames only")
    return notes


def _small(summary):
    return {"pointing": {k: summary["pointing"][k] for k in ("rms", "n_ref_matches", "mode")},
            "background": {k: summary["background"][k] for k in ("pairs", "pairs_used")},
            "pixels": summary["pixels"], "filtered": summary.get("filtered", False),
            "fpixels": summary.get("fpixels", 0)}


def _frame_rows(p: Plan, summary):
    """The unit's rows of the table mosaic_frames (numpy, one per frame)."""
    n = len(p.infos)
    sol, bg, rej = summary["pointing"], summary["background"], summary["rejected"]
    status = np.array(["ok"] * n, dtype=object)
    for i, info in enumerate(p.infos):
        if not info.header:
            status[i] = "no WCS (BCD skipped or calibration set unusable)"
        elif sol["nsources"][i] < 0:
            status[i] = "no usable pixel (a stim-flash DCE, or every pixel masked)"
    rows = {
        "frame_id": np.array([f.frame_id for f in p.infos], dtype=object),
        "aorkey": np.array([f.aorkey for f in p.infos], dtype=np.int64),
        "chnlnum": np.full(n, p.chnlnum, dtype=np.int16),
        "time": np.array([f.time for f in p.infos], dtype=np.float64),
        "d_east": np.asarray(sol["d_east"], np.float32), "d_north": np.asarray(sol["d_north"], np.float32),
        "sigma_east": np.asarray(sol["sigma_east"], np.float32),
        "sigma_north": np.asarray(sol["sigma_north"], np.float32),
        "nmatch": np.asarray(sol["nmatch"], np.int32), "refined": np.asarray(sol["refined"], np.int8),
        "bg_offset": np.asarray(bg["offsets"], np.float32), "bg_sigma": np.asarray(bg["sigma"], np.float32),
        "n_rejected": np.array([int(rej.get(i, 0)) for i in range(n)], np.int32),
    }
    rows["status"] = status.astype(str)
    return rows


@dataclass(frozen=True)
class MipsMosaic(_MosaicBase):
    """Post-BCD mosaics of a MIPS store: one unit per done unit of the BCD pipeline (AOR, array)."""

    params: MosaicParams = MosaicParams()
    name = "mips_mosaic"
    store_schema = "mips_store"

    def units(self, store, client=None):
        from ..mips.pipeline import TABLES
        units = []
        for key, rec in sorted(read_records(store, "mips_bcd").items()):
            if rec.get("status") != "done":
                continue
            band, aor = key[1:].split("-")
            chnl = {24: 1, 70: 2, 160: 3}[int(band)]
            table = TABLES[chnl].name
            start = int(rec["slots"][table][0])
            count = int(rec["rows"].get(table, 0))
            if not count:
                continue
            h = hash_strings([rec["input_hash"], rec["params_hash"], self.params.refcat_sha256])
            units.append(Unit(key, f"MIPS {band} um AOR {aor} mosaic", h,
                              {"instrument": "MIPS", "chnlnum": chnl, "aorkey": int(aor), "start": start,
                               "count": count}, sizes={FRAMES.name: count}))
        return units

    def source(self, store, unit):
        return StoreFrames(str(store), unit.info["chnlnum"], unit.info["start"], unit.info["count"])


@dataclass(frozen=True)
class FileMosaic(_MosaicBase):
    """Mosaics of BCD FITS files (``skyreduce mosaic``): one unit per array, or per AOR and array."""

    groups: tuple = ()            # ((key, instrument, chnlnum, aorkey or None, (BcdFile, ...)), ...)
    params: MosaicParams = MosaicParams()
    name = "mosaic"
    store_schema = "mosaic_work"

    def params_hash(self):
        return hashlib.sha256(repr(self.params).encode()).hexdigest()[:16]

    def units(self, store, client=None):
        units = []
        for key, instrument, chnl, aor, files in self.groups:
            h = hash_strings([_file_id(b.path) for b in files] + [self.params.refcat_sha256])
            label = BAND_LABEL.get((instrument, chnl), f"{instrument} {chnl}")
            units.append(Unit(key, f"{instrument} {label} {'AOR ' + str(aor) if aor else 'all AORs'} mosaic", h,
                              {"instrument": instrument, "chnlnum": chnl, "aorkey": aor, "files": len(files)},
                              sizes={FRAMES.name: len(files)}))
        return units

    def source(self, store, unit):
        for key, _i, _c, _a, files in self.groups:
            if key == unit.key:
                return FileFrames(tuple(files))
        raise KeyError(unit.key)


def reduce_mips_level2(store, out, *, client=None, progress=False, report=print, params=MosaicParams(), wait=0.0,
                       redo=False, redo_failed=False):
    """Post-BCD mosaics of every AOR and array of a MIPS store whose BCDs are done: a RunSummary."""
    return run(MipsMosaic(params), store, out, client=client, progress=progress, report=report, redo=redo,
               redo_failed=redo_failed, wait=wait)


def _file_id(path) -> str:
    import os
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
