"""The zarr group of one mosaic (``level2/<unit key>`` in the store): images on the output grid
(``sci``, ``unc``, ``cov``; the outlier step's ``median``, ``mad``, ``depth`` and its time split
``early``, ``late``, ``t_split`` [MJD], ``third``: ``kernels.outliers.time_split``), chunked by output
tile so that tiles are written in parallel, and the per-frame ``rejected`` masks
(frame, y, x) chunked by frame block. Mosaics of the Ge arrays (``filtered=True``) also hold
the filtered frames ``filtered`` / ``filtered_unc`` (frame, y, x; ``steps.filtering``) and
the filtered mosaic ``fsci``, ``func``, ``fcov``. ``srcmask`` (frame, y, x) holds each frame's
source mask for the background step, computed once where the pointing step has the frame loaded
(``steps.background.SourceMasks``)."""
from __future__ import annotations

from pathlib import Path

import zarr

from ...io.store import _quiet_zarr

GRID_ARRAYS = {"sci": ("float32", float("nan")), "unc": ("float32", float("nan")), "cov": ("float32", 0.0)}
STACK_ARRAYS = {"median": ("float32", float("nan")), "mad": ("float32", float("nan")), "depth": ("int16", 0),
                "early": ("float32", float("nan")), "late": ("float32", float("nan")),
                "t_split": ("float64", float("nan")), "third": ("int16", 0)}
FILTERED_GRID_ARRAYS = {"fsci": ("float32", float("nan")), "func": ("float32", float("nan")),
                        "fcov": ("float32", 0.0)}
FILTERED_FRAME_ARRAYS = ("filtered", "filtered_unc")


def group_path(key: str) -> str:
    return f"level2/{key}"


def _root(store, key) -> str:
    """The directory of the unit's group: ``STORE/level2/<key>``, a zarr hierarchy of its own.
    ``STORE/level2`` holds no group metadata, so the store's consolidated metadata (rewritten at
    every commit, and read by the client) does not list the mosaics' 16+ arrays: with them it
    grew by 55 kB per AOR and the client's memory by 0.43 MB per AOR. ``zarr.open_array(STORE,
    path="level2/<key>/<name>")`` still opens an array."""
    return str(Path(store) / group_path(key))


def stack_block(tile: int) -> int:
    """Side (pixels) of the blocks of the outlier step's stack arrays (``STACK_ARRAYS``), their
    zarr chunks and tasks: half an output tile where that divides it, so that the stack medians
    are computed in 4 tasks per tile (a tile of a scan map can hold 500 frames; its one task
    was the step's longest)."""
    return tile // 2 if tile >= 256 and tile % 2 == 0 else tile


def create(store, key, grid_shape, tile, n_frames, frame_shape, frame_block, attrs, filtered=False):
    """(Re)create the unit's arrays, empty (a unit done again starts from nothing);
    ``filtered``: also the arrays of the filtered frames and mosaic."""
    grid = {name: (dtype, fill, tile) for name, (dtype, fill) in
            dict(GRID_ARRAYS, **(FILTERED_GRID_ARRAYS if filtered else {})).items()}
    grid.update({name: (dtype, fill, stack_block(tile)) for name, (dtype, fill) in STACK_ARRAYS.items()})
    (Path(store) / "level2" / "zarr.json").unlink(missing_ok=True)   # a group there (older stores) lists them all
    with _quiet_zarr():
        g = zarr.open_group(_root(store, key), mode="w", use_consolidated=False)
        g.attrs.update(attrs)
        for name, (dtype, fill, side) in grid.items():
            g.create_array(name, shape=tuple(grid_shape), chunks=(side, side), dtype=dtype, fill_value=fill,
                           dimension_names=("y", "x"))
        frame = {"rejected": ("uint8", 0), "srcmask": ("uint8", 0)}
        if filtered:
            frame.update({name: ("float32", float("nan")) for name in FILTERED_FRAME_ARRAYS})
        for name, (dtype, fill) in frame.items():
            g.create_array(name, shape=(max(n_frames, 1),) + tuple(frame_shape),
                           chunks=(frame_block,) + tuple(frame_shape), dtype=dtype, fill_value=fill,
                           dimension_names=("frame", "fy", "fx"))
    return True


def write(store, key, name, region, values):
    with _quiet_zarr():
        zarr.open_array(_root(store, key), path=name, mode="r+")[region] = values
    return True


def write_frames(store, key, name, positions, values):
    """Write ``values`` (len(positions), ny, nx) at the frame ``positions`` of the (frame, y, x)
    array ``name``: one write when the positions are consecutive (a block of ``F.chunk_blocks``
    is one chunk), else one per frame with anything set (the array's fill is 0)."""
    import numpy as np
    pos = np.asarray(positions, np.int64)
    if not len(pos) or not np.any(values):
        return
    if np.all(np.diff(pos) == 1):
        write(store, key, name, (slice(int(pos[0]), int(pos[-1]) + 1),), values)
        return
    for j, p in enumerate(pos):
        if np.any(values[j]):
            write(store, key, name, (int(p),), values[j])


def read(store, key, name, region=()):
    with _quiet_zarr():
        return zarr.open_array(_root(store, key), path=name, mode="r")[region]


def read_frames(store, key, name, positions):
    """The (frame, y, x) array ``name`` at the frame ``positions``, in one read (len(positions), ny, nx)."""
    import numpy as np
    with _quiet_zarr():
        arr = zarr.open_array(_root(store, key), path=name, mode="r")
        return arr.get_orthogonal_selection((np.asarray(positions, np.int64),))


def attrs(store, key) -> dict:
    with _quiet_zarr():
        return dict(zarr.open_group(_root(store, key), mode="r", use_consolidated=False).attrs)
