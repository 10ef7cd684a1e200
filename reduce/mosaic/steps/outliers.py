"""Step: outlier rejection across frames. The median (and robust sigma, depth) of the
background-matched frames on the output grid is computed tile by tile and written to the
mosaic's zarr group; then every block of frames is compared with the median cut-out that
covers it (``kernels.outliers.flag_frame``) and its rejected pixels are written to the
group's ``rejected`` masks (frame, y, x)."""
from __future__ import annotations

import dask
import numpy as np
from astropy.wcs.utils import proj_plane_pixel_scales

from ..kernels import outliers as K
from ..kernels.frames import footprint
from ..kernels.grid import frames_in_tiles, tile_bounds
from . import frames as F
from . import images


SUB_TILE = 128     # output pixels: the stack of one sub-tile holds each overlapping frame's sub-tile only


SPLIT = ("early", "late", "t_split", "third")   # the TimeSplit arrays, in its field order


def _median_tile(src, store, key, members, bound, grid, pointing, background, times, ready):
    """Median, robust sigma and depth of one block of the output grid (``stack_tasks``), computed per sub-tile of SUB_TILE
    pixels over the frames that overlap it (the stack of a tile would hold a whole tile per
    overlapping frame: 5.6 GB for the 568 frames over one tile of a 1,000-BCD scan map)."""
    y0, y1, x0, x1 = bound
    frames = F.usable(F.load(src, members, pointing, background))
    tile = grid.tile(y0, y1, x0, x1)
    subs = tile_bounds(tile.shape, SUB_TILE)
    fps = np.array([footprint(f.wcs, f.shape) for f in frames]).reshape(-1, 4, 2)
    over = frames_in_tiles(fps, tile, subs) if len(frames) else [[] for _ in subs]
    splines = {}     # each frame's spline prefiltered once for all its sub-tiles
    for (a, b, c, d), idx in zip(subs, over):
        sub = [frames[i] for i in idx]
        out = K.stack_statistics(tile.tile(a, b, c, d), sub, splines=splines,
                                 times=None if times is None else [times[f.meta["position"]] for f in sub])
        region = (slice(y0 + a, y0 + b), slice(x0 + c, x0 + d))
        arrays = list(zip(("median", "mad", "depth"), out[:3]))
        if times is not None:
            arrays += [(name, getattr(out[3], name)) for name in SPLIT]
        for name, v in arrays:
            images.write(store, key, name, region, v)
    return True


def _scale(pointing, p, spacecraft_sigma_arcsec, pixel_arcsec):
    """Registration allowance of frame ``p`` for ``flag_frame``: the kernel's default, or 3 x the
    frame's pointing 1-sigma per axis in frame pixels when larger (the refined sigma, else the
    spacecraft's): a source's peak in a frame whose pointing is uncertain by a fraction of a
    pixel is shifted against the median and must not read as an outlier (it did: 6 % of the
    point-source flux was lost in a scan map whose frames kept the spacecraft pointing)."""
    sigma = spacecraft_sigma_arcsec / np.sqrt(2)
    if pointing["refined"][p]:
        sigma = float(np.hypot(pointing["sigma_east"][p], pointing["sigma_north"][p])) / np.sqrt(2)
    return max(K.SCALE[3], 3.0 * sigma / pixel_arcsec) if np.isfinite(sigma) else K.SCALE[3]


def _flag_block(src, store, key, positions, grid, pointing, background, params, sharp, ptg, times, ready):
    counts = {}
    frames = F.load(src, positions, pointing, background)
    masks = np.zeros((len(positions),) + (frames[0].shape if frames else (0, 0)), np.uint8)
    boxes = {}
    for j, f in enumerate(frames):
        if f.wcs is None or not f.good.any():
            counts[f.meta["position"]] = 0
            continue
        corners = np.array(grid.wcs.all_world2pix(*footprint(f.wcs, f.shape).T, 0)).T
        boxes[j] = (int(max(np.floor(corners[:, 1].min()) - 2, 0)),
                    int(min(np.ceil(corners[:, 1].max()) + 3, grid.shape[0])),
                    int(max(np.floor(corners[:, 0].min()) - 2, 0)),
                    int(min(np.ceil(corners[:, 0].max()) + 3, grid.shape[1])))
    if boxes:
        # one read of each array over the block's frames (consecutive in time: close on the sky)
        b = np.array(list(boxes.values()))
        Y0, Y1, X0, X1 = int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max())
        names = ("median", "mad", "depth") + (() if times is None else SPLIT)
        cut = {n: images.read(store, key, n, (slice(Y0, Y1), slice(X0, X1))) for n in names}
    for j, (y0, y1, x0, x1) in boxes.items():
        f = frames[j]
        p = f.meta["position"]
        region = (slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0))
        med, sig, dep = (cut[n][region] for n in ("median", "mad", "depth"))
        split = None if times is None else K.TimeSplit(*(cut[n][region] for n in SPLIT))
        rej = K.flag_frame(f, 0.0, grid.tile(y0, y1, x0, x1), med, sig, dep, nsigma=params.outlier_nsigma,
                           min_depth=params.outlier_min_depth, dual=params.outlier_dual, sharp=sharp,
                           scale=_scale(pointing, p, *ptg), time=None if times is None else times[p],
                           split=split) & f.good
        masks[j] = rej
        counts[p] = int(rej.sum())
    images.write_frames(store, key, "rejected", positions, masks)   # the block is one chunk (chunk_blocks)
    return counts


def stack_tasks(grid, bounds, members, footprints, tile, pad_px):
    """(bounds, members) of the stack-median tasks: the output tiles cut into blocks of
    ``images.stack_block(tile)`` pixels (the stack arrays' chunks), each with the frames of its
    tile whose footprint ((n, 4, 2) deg, by frame position; grown by ``pad_px`` grid pixels for
    the pointing corrections) reaches the block."""
    side = images.stack_block(tile)
    out_b, out_m = [], []
    for (y0, y1, x0, x1), m in zip(bounds, members):
        m = np.asarray(m, np.int64)
        subs = [(y0 + a, y0 + b, x0 + c, x0 + d) for a, b, c, d in tile_bounds((y1 - y0, x1 - x0), side)]
        if footprints is None or side == tile or not len(m):
            hits = [np.arange(len(m))] * len(subs)
        else:
            hits = frames_in_tiles(np.asarray(footprints)[m], grid, subs, pad_px=pad_px)
        for b, h in zip(subs, hits):
            if len(h):
                out_b.append(b)
                out_m.append(m[h])
    return out_b, out_m


def reject(src, store, key, positions, grid, bounds, members, pointing, background, params, *, block, fwhm_px,
           pointing_sigma_arcsec, pixel_arcsec, ready, times=None, footprints=None):
    """Lazy {frame position: pixels rejected}; ``params.outliers`` False: nothing rejected.
    ``times``: MJD of every frame (by position): also the time-split test (``kernels.outliers.time_split``).
    ``footprints``: (n, 4, 2) deg by frame position: the stack medians in blocks of a quarter tile
    (``stack_tasks``), else one task per tile.
    ``fwhm_px``: PSF FWHM in frame pixels (the spatial test of shallow pixels spares PSF peaks:
    a peak's neighbours hold >= 0.44 of it at 70 um, 1.8 px FWHM, so ``sharp`` 0.3 there)."""
    sharp = 0.4 if fwhm_px >= 2.3 else 0.3
    if not params.outliers:
        return dask.delayed(dict)()
    pad = 5.0 * pointing_sigma_arcsec / (3600.0 * float(np.min(proj_plane_pixel_scales(grid.wcs)))) + 2.0
    sb, sm = stack_tasks(grid, bounds, members, footprints, params.tile, pad)
    tiles = [dask.delayed(_median_tile, pure=True)(src, store, key, m, b, grid, pointing, background, times, ready)
             for b, m in zip(sb, sm)]
    ptg = (pointing_sigma_arcsec, pixel_arcsec)
    # each block of frames waits for the stack blocks its frames reach, not for all of them
    reach = {}
    for t, m in enumerate(sm):
        for p in m:
            reach.setdefault(int(p), set()).add(t)
    parts = [dask.delayed(_flag_block, pure=True)(src, store, key, blk, grid, pointing, background, params, sharp,
                                                  ptg, times, [tiles[t] for t in sorted(set().union(
                                                      *(reach.get(int(p), set()) for p in blk)))])
             for blk in F.chunk_blocks(positions, block)]
    return dask.delayed(F.merge, pure=True)(parts)
