"""Rectification ("dispersion correction") of SED frames: flux-conserving resampling of each
column along y onto rows of one wavelength.

With the tilt, detector row y of column x has its centre at wavelength
``WAVE0 + DISP * (y + s(x))``, ``s(x) = TILT * (x - CENTCOL) / DISP`` rows, so it covers the
rectified coordinate interval ``[y + s - 0.5, y + s + 0.5]``; rectified row r (wavelength
``WAVE0 + DISP * r`` in every column) covers ``[r - 0.5, r + 0.5]``. The weight of input y in
output r is the length of the overlap of the two intervals, ``w = max(0, 1 - |r - y - s|)``,
computed for every (r, y) pair, so the resampling is exact for any shift (a few rows too).
Per output pixel, over the valid inputs (finite value and unc, no ``fatal`` mask bit,
``y < valid_rows``)::

    value = sum(w * img) / sum(w)          unc = sqrt(sum(w**2 * unc**2)) / sum(w)

Each input row's weights sum to 1 over the outputs it overlaps, so where every output of a
column has ``sum(w) = 1`` (full coverage) the sum of the column is conserved:
``sum_r value_r = sum_y img_y``. The first moment is conserved too (``sum_r r w = y + s``), so
a line's centroid moves by exactly ``s``.

Mask: the OR of the bits of the inputs that contribute (valid, ``w > 0``), with
``bits['invalid']`` set (and value, unc NaN) where ``sum(w) < 0.5`` and ``bits['partial']``
(new bit, 2048 unless ``bits`` gives it) where ``0.5 <= sum(w) < 1 - 1e-6`` (the edge rows of
tilted columns, neighbours of fatal pixels). Fatal inputs add no bits of their own: their
effect shows as ``partial`` or ``invalid``. Rows ``>= valid_rows`` (27: second order) never
contribute, not even mask bits.
"""
from __future__ import annotations

import numpy as np

from .wavelength import row_shift

__all__ = ["rectify", "rectify_block", "overlap_weights", "PARTIAL", "DEFAULT_BITS", "FATAL_NAMES"]

PARTIAL = 2048
"""Value of the new BCD mask bit ``partial``: output pixel covered by 0.5..1 of its inputs."""
DEFAULT_BITS = {"invalid": 64, "partial": PARTIAL}
FATAL_NAMES = ("dead", "hot", "noisy", "no_flat", "invalid", "too_few_reads")
"""Mask bit names whose pixels are left out by default (those of ``bits`` that exist)."""
_TINY = 1e-9  # overlaps below this (rounding at integer shifts) count as 0


def overlap_weights(s, nrows=27, valid_rows=27):
    """Overlap weights (ncols, nrows, valid_rows) float64: ``w[x, r, y]`` = length of the
    overlap of ``[y + s[x] - 0.5, y + s[x] + 0.5]`` and ``[r - 0.5, r + 0.5]`` (rows)."""
    s = np.asarray(s, dtype=np.float64)[:, None, None]
    r = np.arange(nrows, dtype=np.float64)[None, :, None]
    y = np.arange(valid_rows, dtype=np.float64)[None, None, :]
    w = np.minimum(r + 0.5, y + s + 0.5) - np.maximum(r - 0.5, y + s - 0.5)
    return np.where(w > _TINY, w, 0.0)


def _fatal_default(bits):
    return int(sum(int(bits[n]) for n in FATAL_NAMES if n in bits))


def _bits(bits):
    bits = dict(DEFAULT_BITS if bits is None else bits)
    bits.setdefault("partial", PARTIAL)
    if "invalid" not in bits:
        raise ValueError("bits: no 'invalid' entry")
    return bits


def _rectify_stack(img, unc, mask, s, *, nrows, valid_rows, invalid, partial, fatal):
    """Frames sharing one shift vector ``s`` (ncols,): (n, ny, nx) -> (n, nrows, ncols) x 3."""
    ncols = s.size
    w = overlap_weights(s, nrows, valid_rows)                       # (x, r, y)
    img = np.asarray(img, dtype=np.float64)[:, :valid_rows, :ncols]
    unc = np.asarray(unc, dtype=np.float64)[:, :valid_rows, :ncols]
    m = np.asarray(mask)[:, :valid_rows, :ncols]
    ok = np.isfinite(img) & np.isfinite(unc) & ((m.astype(np.int64) & fatal) == 0)
    sw = np.einsum("xry,nyx->nrx", w, ok.astype(np.float64))
    num = np.einsum("xry,nyx->nrx", w, np.where(ok, img, 0.0))
    var = np.einsum("xry,nyx->nrx", w * w, np.where(ok, unc * unc, 0.0))
    out_mask = np.zeros((img.shape[0], nrows, ncols), dtype=np.int64)
    touch = np.transpose(w > 0, (2, 1, 0))                           # (y, r, x)
    mm = np.where(ok, m.astype(np.int64), 0)
    for y in np.flatnonzero(touch.any(axis=(1, 2))):
        out_mask |= np.where(touch[y][None], mm[:, y, None, :], 0)
    bad = sw < 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(bad, np.nan, num / sw)
        sigma = np.where(bad, np.nan, np.sqrt(var) / sw)
    out_mask[bad] |= invalid
    out_mask[~bad & (sw < 1.0 - 1e-6)] |= partial
    return value, sigma, out_mask


def _per_set(a, calset):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return np.full(np.shape(calset), float(a))
    return a[np.clip(np.asarray(calset, dtype=np.int64), 0, None)]


def rectify_block(bcd, unc, mask, calset, *, disp, tilt, centcol, nrows=27, ncols=16, valid_rows=27,
                  bits=None, fatal=None):
    """Rectify n frames: (bcd_r float32, unc_r float32, mask_r) of shape (n, nrows, ncols).

    ``bcd``, ``unc`` (n, ny, nx) MJy/sr; ``mask`` (n, ny, nx) int bits (the output keeps its
    dtype); ``calset`` (n,) index of each frame's calibration set (negative -> set 0, the
    caller masks); ``disp`` (um/row), ``tilt`` (um/column), ``centcol`` (column): (cset,)
    arrays indexed by ``calset``, or scalars for all frames. ``bits``: mask bit names ->
    values (``reduce.mips.bcd.mask_bits()``; needs 'invalid'; 'partial' defaults to 2048;
    None: only those two). ``fatal``: int bitmask of input bits whose pixels are left out
    (None: the ``FATAL_NAMES`` present in ``bits``). See the module docstring for the
    resampling, the unc and the mask. Frames are independent, so any split of them gives
    the same numbers.
    """
    bits = _bits(bits)
    fatal = _fatal_default(bits) if fatal is None else int(fatal)
    bcd = np.asarray(bcd)
    n = bcd.shape[0]
    if bcd.ndim != 3 or bcd.shape[1] < valid_rows or bcd.shape[2] < ncols:
        raise ValueError(f"rectify: frames {bcd.shape} are not (n, >= {valid_rows}, >= {ncols})")
    mask = np.asarray(mask)
    calset = np.asarray(calset, dtype=np.int64).reshape(n)
    consts = np.stack([_per_set(disp, calset), _per_set(tilt, calset), _per_set(centcol, calset)], axis=1)
    out_v = np.empty((n, nrows, ncols), np.float32)
    out_u = np.empty((n, nrows, ncols), np.float32)
    out_m = np.empty((n, nrows, ncols), mask.dtype)
    if n == 0:
        return out_v, out_u, out_m
    uniq, inverse = np.unique(consts, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(n)
    for k, (d, t, c) in enumerate(uniq):
        sel = np.flatnonzero(inverse == k)
        v, u, m = _rectify_stack(bcd[sel], np.asarray(unc)[sel], mask[sel], row_shift(d, t, c, ncols),
                                 nrows=nrows, valid_rows=valid_rows, invalid=int(bits["invalid"]),
                                 partial=int(bits["partial"]), fatal=fatal)
        out_v[sel], out_u[sel], out_m[sel] = v, u, m.astype(mask.dtype)
    return out_v, out_u, out_m


def rectify(img, unc, mask, *, disp, tilt, centcol, nrows=27, ncols=16, valid_rows=27, bits=None,
            fatal=None):
    """Rectify ONE frame: ``img``, ``unc`` (ny, nx) MJy/sr, ``mask`` (ny, nx) int bits ->
    (img_r float32, unc_r float32, mask_r) (nrows, ncols); arguments as :func:`rectify_block`
    with scalar ``disp`` (um/row), ``tilt`` (um/column), ``centcol``."""
    v, u, m = rectify_block(np.asarray(img)[None], np.asarray(unc)[None], np.asarray(mask)[None], [0],
                            disp=disp, tilt=tilt, centcol=centcol, nrows=nrows, ncols=ncols,
                            valid_rows=valid_rows, bits=bits, fatal=fatal)
    return v[0], u[0], m[0]
