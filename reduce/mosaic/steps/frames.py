"""Frame loading for the mosaic tasks: one block of frames read from its source, with the
pointing correction and the background offset of each frame applied when they are known."""
from __future__ import annotations

import numpy as np

from ..kernels.frames import shift_wcs


def load(src, positions, pointing=None, background=None):
    """Frames at ``positions`` (unit frame indices) of ``src`` (``reduce.mosaic.sources``).

    ``pointing``: the refine step's solution (d_east/d_north arcsec per frame), applied to each
    frame's WCS; ``background``: (offsets MJy/sr per frame, ...) subtracted from each image."""
    positions = [int(p) for p in positions]
    frames = src.load(positions) if positions else []
    for p, f in zip(positions, frames):
        if pointing is not None and f.wcs is not None:
            de, dn = float(pointing["d_east"][p]), float(pointing["d_north"][p])
            if de or dn:
                f.wcs = shift_wcs(f.wcs, de, dn)
        if background is not None:
            f.image = f.image - float(background["offsets"][p])
        f.meta["position"] = p
    return frames


def blocks(positions, size):
    """``positions`` cut into consecutive lists of at most ``size``."""
    positions = list(positions)
    return [positions[i:i + size] for i in range(0, len(positions), size)]


def usable(frames):
    """The frames that have a WCS and at least one good pixel."""
    return [f for f in frames if f.wcs is not None and np.any(f.good)]


def chunk_blocks(positions, size):
    """``positions`` grouped by ``p // size`` (the frame chunks of the mosaic's zarr arrays), so
    that no two tasks write one chunk."""
    out = {}
    for p in positions:
        out.setdefault(int(p) // size, []).append(int(p))
    return list(out.values())


def merge(parts):
    """One dict of the per-block dicts {frame position: value}."""
    out = {}
    for p in parts:
        out.update(p)
    return out
