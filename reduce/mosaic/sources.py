"""Where a mosaic's frames come from: BCDs kept in a MIPS store, or BCD FITS files.

Both give the same two things to the mosaic steps:

- ``infos()``: per frame small facts (``FrameInfo``: id, AOR, array, time, the WCS header
  text, shape), read on the worker that builds the unit's graph, never on the client;
- ``load(positions)``: the ``Frame`` objects (image, unc, good, WCS) of some of the frames,
  called inside the graph's tasks, so a unit of 10,000 frames is read a block at a time.

A store frame's WCS is the BCD's (``reduce.mips.kernels.wcs.wcs_header`` from the distortion
of its calibration set and RA_REF/DEC_REF/PA_REF), exactly what its FITS file carries.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.wcs import WCS

from .kernels.frames import Frame

# BCD mask bits that make a pixel unusable in a mosaic: bcdfiles.OUR_FATAL_NAMES, the same for the
# store's BCDs and their exported files. Kept: noisy, saturated (24 um: replaced by the first difference;
# Ge: ramp before the A/D limit), cosmic_ray (24 um: flagged, not removed, left to the outlier
# rejection across frames; Ge: jump fused), no_good_segment (a slope from a shorter segment),
# no_responsivity (the nominal responsivity used).


# Bits kept in the mosaic but left out of source extraction (a flagged cosmic ray is no source).
SUSPECT = 32 | 16      # cosmic_ray, saturated


@dataclass(frozen=True)
class FrameInfo:
    """Small per-frame facts: ``frame_id`` (DCEID or file path), ``header`` (WCS cards as text)."""

    frame_id: str
    aorkey: int
    chnlnum: int
    time: float
    header: str          # WCS cards, one per line ("" when the frame has no usable WCS)
    shape: tuple
    name: str
    expid: int = -1      # EXPID (-1: unknown); with ``aot_type``, the scan legs (kernels.background.leg_groups)
    aot_type: str = ""   # AOT_TYPE ("" when unknown)

    def wcs(self) -> WCS:
        return wcs_from_text(self.header)


def wcs_from_text(text: str) -> WCS:
    """The celestial WCS (with SIP) of a header's text (``bcdfiles.wcs_of_text``: parsed once per
    process and shared, never to be changed in place)."""
    from .bcdfiles import wcs_of_text
    return wcs_of_text(text)


def fatal_mask(mask, bits: dict) -> np.ndarray:
    """uint mask -> bool (ny, nx) True where a fatal bit (bcdfiles.OUR_FATAL_NAMES) is set."""
    from .bcdfiles import OUR_FATAL_NAMES
    value = sum(int(bits[b]) for b in OUR_FATAL_NAMES if b in bits)
    return (np.asarray(mask).astype(np.int64) & value) != 0


@dataclass(frozen=True)
class StoreFrames:
    """The BCDs of one unit of the MIPS BCD pipeline: rows [start, start + count) of the store
    table bcd24/bcd70/bcd160 (the unit's slot, ``reduce.runner``)."""

    store: str
    chnlnum: int
    start: int
    count: int

    def _table(self):
        import xarray as xr
        from ..io.store import _quiet_zarr
        from ..mips.pipeline import TABLES
        with _quiet_zarr():
            ds = xr.open_zarr(self.store, group=TABLES[self.chnlnum].path, consolidated=False, chunks=None)
        return ds.isel(dce=slice(self.start, self.start + self.count))

    def infos(self) -> list[FrameInfo]:
        from ..mips.calib import CalTable
        from ..mips.bcd import RAW_GROUPS
        from ..io.store import open_committed
        from ..mips.kernels.wcs import wcs_header
        t = self._table()
        c = {k: t[k].values for k in ("dceid", "aorkey", "time", "ra_ref", "dec_ref", "pa_ref", "calset", "status",
                                       "source_file", "expid", "aot_type")}
        cal = CalTable.load(open_committed(self.store, RAW_GROUPS[self.chnlnum]).attrs.get("calibration_sets", []),
                            self.chnlnum)
        shape = (t.sizes["y"], t.sizes["x"])
        out = []
        for i in range(self.count):
            k = int(c["calset"][i])
            cs = cal.sets[k] if 0 <= k < len(cal.sets) else None
            ok = str(c["status"][i]) == "ok" and cs is not None
            header = wcs_header(cs.distortion, c["ra_ref"][i], c["dec_ref"][i], c["pa_ref"][i]).tostring(sep="\n") if ok else ""
            out.append(FrameInfo(str(int(c["dceid"][i])), int(c["aorkey"][i]), self.chnlnum, float(c["time"][i]),
                                 header, shape, str(c["source_file"][i]), int(c["expid"][i]), str(c["aot_type"][i])))
        return out

    def load(self, positions) -> list[Frame]:
        from ..mips.bcd import mask_bits
        t = self._table().isel(dce=np.asarray(positions, dtype=np.int64))
        bcd, unc, mask = (t[k].values for k in ("bcd", "unc", "mask"))
        bits = mask_bits()
        infos = self.infos_cached()
        frames = []
        for j, p in enumerate(positions):
            good = ~fatal_mask(mask[j], bits) & np.isfinite(bcd[j]) & np.isfinite(unc[j]) & (unc[j] > 0)
            info = infos[p]
            suspect = (mask[j].astype(np.int64) & SUSPECT) != 0
            frames.append(Frame(bcd[j].astype(np.float64), unc[j].astype(np.float64), good,
                                wcs_from_text(info.header) if info.header else None,
                                {"frame_id": info.frame_id, "name": info.name, "suspect": suspect}))
        return frames

    def infos_cached(self):
        return _store_infos(self)


@lru_cache(maxsize=64)
def _store_infos(src: StoreFrames):
    return src.infos()


@dataclass(frozen=True)
class FileFrames:
    """BCD FITS files (``reduce.mosaic.bcdfiles.BcdFile``), ours or the SSC's."""

    files: tuple

    def infos(self) -> list[FrameInfo]:
        out = []
        for b in self.files:
            out.append(FrameInfo(str(b.path), -1 if b.aorkey is None else int(b.aorkey), int(b.chnlnum),
                                 np.nan if b.mjd is None else float(b.mjd), b.wcs_header, tuple(b.shape),
                                 str(b.path), -1 if b.expid is None else int(b.expid), b.aot_type))
        return out

    def load(self, positions) -> list[Frame]:
        frames = []
        for p in positions:
            f, _warnings = _load_file(self.files[p])
            frames.append(Frame(f.image.copy(), f.unc, f.good, f.wcs, dict(f.meta, frame_id=str(self.files[p].path))))
        return frames


@lru_cache(maxsize=1024)
def _load_file(bcd):
    """(Frame, warnings) of one BCD file, cached: every step of a mosaic reads its frames, and an
    IRAC cube is coadded from 64 planes with clipping each time it is read."""
    from .bcdfiles import load_frame
    return load_frame(bcd)

