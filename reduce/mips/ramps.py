"""Ramp kernels for the MIPS Ge arrays (70 and 160 um): linearity, saturation,
cosmic-ray (jump) detection and segment-fused slope fitting.

Plain-array kernels (numpy front ends over numba loops in ``ramps_numba``):
no xarray, dask or I/O, inputs never mutated. Layout as in the store:
``reads[..., read, y, x]`` int16 raw DN, leading dims = DCEs, with a per-DCE
``nreads`` (reads at index >= nreads are padding and ignored).

Method (seed 000 / INSTRUMENTS.md: "robust ramp fit, segments between CR hits,
>= 4 reads each, noise-weighted fusion; Hesselroth et al. 2000 hit detection"):

* linear DN ``L = sum_k C[k-1] d^k``, ``d = read - first read``;
* saturation: every read at or after the first raw read >= SATLEVEL;
* jumps: a matched-filter generalisation of two-point differences. For each
  read gap the step ``mean(w reads after) - mean(w reads before) - mu*(w1+w2)/2``
  is compared with its exact noise (read noise, Poisson random walk, error of
  the clipped-mean rate ``mu``); ``w`` (1..8) minimises that noise per pixel
  (``w = 1`` is the classic two-point difference, chosen when Poisson noise
  dominates). The most significant step above ``cr_threshold`` sigma is
  flagged, the rate is re-estimated without it, windows stop at flagged
  gaps, and the search repeats (Hesselroth-style one hit at a time). A
  candidate (screened at ``cr_threshold``/2) is placed at the maximum-
  likelihood gap near it (exact GLS step significance, read + Poisson
  covariance) and confirmed by the windowed test *at that gap alone* at
  ``cr_threshold``, with the rate fitted without that gap (a hit left inside
  the rate fit biases the rate and hides itself). One test per gap, as in
  two-point detection: no look-elsewhere over positions. When the likelihood
  odds of the gaps beside it exceed ``ramps_numba.LOC_ODDS`` = 0.03 (the ramp
  cannot pin the step to one read), the jump must also pass the two-point
  test; if it does not, it is not reported (a flag one read off would be a
  false detection) but the fit still drops the read between the two likeliest
  gaps, so the slope is right either way. A rejected candidate is not retried
  until a jump changes the windows. The rate is the GLS slope over
  differences within 3 sigma of their median. Only
  positive steps are hits (a cosmic ray adds charge).
* slopes: each segment between hits and saturation with >= ``min_reads``
  reads is fitted by generalised least squares with the exact covariance of
  read + Poisson noise (tridiagonal in first differences, O(n)); segment
  slopes are fused with inverse-variance weights (this is the CR correction).
"""

import logging

import numpy as np

from reduce.errors import CalibrationError
from reduce.mips import ramps_numba as _nb

log = logging.getLogger(__name__)

DT_READ = 0.131072  # s between Ge reads
DEFAULT_FLAGS = {"saturated": 1, "cr": 2, "too_few_reads": 4, "no_good_segment": 8}
_STATUS_KEYS = {
    "saturated": _nb.ST_SATURATED,
    "cr": _nb.ST_CR,
    "too_few_reads": _nb.ST_TOO_FEW,
    "no_good_segment": _nb.ST_NO_SEGMENT,
}

__all__ = ["DEFAULT_FLAGS", "DT_READ", "linearize", "flag_saturation", "detect_jumps", "fit_ramps"]


def _flatten(reads, nreads):
    """(…, nread, ny, nx) -> int16 (ndce, nread, npix), int64 nreads (ndce,), lead shape."""
    reads = np.asarray(reads)
    if reads.ndim < 3:
        raise ValueError(f"reads: expected dims (..., read, y, x), got shape {reads.shape}")
    if not np.issubdtype(reads.dtype, np.integer):
        raise ValueError(f"reads: expected integer raw DN, got dtype {reads.dtype}")
    lead = reads.shape[:-3]
    nread, ny, nx = reads.shape[-3:]
    flat = np.ascontiguousarray(reads.reshape((-1, nread, ny * nx)), dtype=np.int16)
    nr = np.broadcast_to(np.asarray(nreads, dtype=np.int64), lead).reshape(-1)
    if np.any(nr < 0) or np.any(nr > nread):
        raise ValueError(f"nreads: expected 0..{nread} per DCE, got {np.unique(nr)}")
    return flat, np.ascontiguousarray(nr), lead, (ny, nx)


def _per_pixel(value, name, yx):
    """A scalar or (ny, nx) calibration value as float64 (npix,)."""
    arr = np.asarray(value, dtype=np.float64)
    try:
        arr = np.broadcast_to(arr, yx)
    except ValueError:
        raise CalibrationError(f"{name}: expected a scalar or shape {yx}, got {arr.shape}") from None
    positive = name in ("gain", "rdnoise")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0 if positive else arr < 0):
        raise CalibrationError(f"{name}: expected finite values {'> 0' if positive else '>= 0'}")
    return np.ascontiguousarray(arr.reshape(-1))


def _coeffs(coeffs, yx):
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None, None]
    if c.ndim != 3 or c.shape[0] < 1:
        raise CalibrationError(f"nonlinearity coefficients: expected [K, ny, nx], got {c.shape}")
    try:
        c = np.broadcast_to(c, (c.shape[0],) + tuple(yx))
    except ValueError:
        raise CalibrationError(f"nonlinearity coefficients: expected [K, {yx[0]}, {yx[1]}], got {c.shape}") from None
    if not np.all(np.isfinite(c)):
        raise CalibrationError("nonlinearity coefficients: non-finite values")
    return np.ascontiguousarray(c.reshape(c.shape[0], -1))


def linearize(reads, nreads, coeffs):
    """Linear DN relative to the first read, float32 of the shape of ``reads``.

    ``coeffs``: [K, ny, nx] (or [K]), linear DN = sum_k C[k-1] d^k, d = read - read0.
    Reads beyond ``nreads`` (padding) come out NaN.
    """
    flat, nr, lead, yx = _flatten(reads, nreads)
    out = _nb.linearize_kernel(flat, nr, _coeffs(coeffs, yx))
    return out.reshape(np.shape(reads))


def flag_saturation(reads, nreads, satlevel):
    """Bool per read: True at and after the first read with raw DN >= ``satlevel``.

    ``satlevel``: scalar or [ny, nx] DN (A/D limit). Padding reads are False.
    """
    reads = np.asarray(reads)
    nread = reads.shape[-3]
    sat = np.asarray(satlevel)
    valid = np.arange(nread)[:, None, None] < np.asarray(nreads)[..., None, None, None]
    hit = (reads >= sat) & valid
    return np.logical_or.accumulate(hit, axis=-3) & valid


def detect_jumps(lin, ngood, *, rdnoise, gain, cr_threshold=5.0):
    """Bool mask [..., read, y, x], True at the first read after a (located) jump.

    ``lin``: linear DN [..., read, y, x]; ``ngood``: number of usable leading
    reads per DCE and pixel ([..., y, x] or [...]); ``rdnoise`` DN per read and
    ``gain`` e-/DN, scalar or [ny, nx]; ``cr_threshold`` in sigma.
    """
    lin = np.asarray(lin, dtype=np.float64)
    lead, (nread, ny, nx) = lin.shape[:-3], lin.shape[-3:]
    flat = np.ascontiguousarray(lin.reshape((-1, nread, ny * nx)))
    ng = np.asarray(ngood, dtype=np.int64)
    if ng.ndim == len(lead):
        ng = ng[..., None, None]
    ng = np.ascontiguousarray(np.broadcast_to(ng, lead + (ny, nx)).reshape(-1, ny * nx))
    cr = _nb.jumps_kernel(
        flat, ng, _per_pixel(rdnoise, "rdnoise", (ny, nx)), _per_pixel(gain, "gain", (ny, nx)), float(cr_threshold)
    )
    return cr.reshape(lin.shape)


def fit_ramps(
    reads,
    nreads,
    *,
    coeffs,
    satlevel,
    rdnoise,
    gain,
    dt=DT_READ,
    cr_threshold=5.0,
    min_reads=4,
    flags=None,
):
    """Fit Ge ramps: linearity, saturation, jumps, segment-fused GLS slopes.

    Parameters
    ----------
    reads : int array [..., read, y, x], raw DN (leading dims = DCEs)
    nreads : int or int array [...], valid reads per DCE (the rest is padding)
    coeffs : [K, y, x] nonlinearity coefficients; satlevel : DN (raw, A/D limit);
    rdnoise : DN per read (raw); gain : e-/DN. Calibrations are scalars or [y, x].
    dt : s between reads; cr_threshold : jump threshold in sigma;
    min_reads : fewest reads a fitted segment must have;
    flags : mapping of mask names to bit values (default ``DEFAULT_FLAGS``).

    Returns
    -------
    dict with ``slope`` (float32 [..., y, x], linear DN/s; NaN when no segment
    has >= 2 reads), ``error`` (float32, 1-sigma DN/s, read + Poisson noise),
    ``mask`` (uint16 [..., y, x], OR of ``flags`` values: saturated = some read
    saturated, cr = a jump was found, too_few_reads = fewer than ``min_reads``
    unsaturated reads, no_good_segment = no segment with ``min_reads`` reads, so
    the slope, if any, comes from the longest shorter segment; cr is also set
    for a jump corrected but not located to one read), ``ncr`` (int16
    [..., y, x], located jumps per pixel) and ``cr_reads`` (bool, shape of
    ``reads``, True at the first read after each located jump).
    """
    flags = DEFAULT_FLAGS if flags is None else flags
    missing = set(_STATUS_KEYS) - set(flags)
    if missing:
        raise ValueError(f"flags: missing mask bits {sorted(missing)}")
    flat, nr, lead, yx = _flatten(reads, nreads)
    slope, error, status, ncr, cr = _nb.fit_kernel(
        flat,
        nr,
        _coeffs(coeffs, yx),
        _per_pixel(satlevel, "satlevel", yx),
        _per_pixel(rdnoise, "rdnoise", yx),
        _per_pixel(gain, "gain", yx),
        float(dt),
        float(cr_threshold),
        int(min_reads),
    )
    mask = np.zeros(status.shape, np.uint16)
    for name, bit in _STATUS_KEYS.items():
        mask |= np.where(status & bit, np.uint16(flags[name]), np.uint16(0))
    shape2 = lead + yx
    return {
        "slope": slope.reshape(shape2),
        "error": error.reshape(shape2),
        "mask": mask.reshape(shape2),
        "ncr": ncr.reshape(shape2),
        "cr_reads": cr.reshape(np.shape(reads)),
    }
