"""Ramp kernels for the MIPS Ge arrays (70 and 160 um): linearity, saturation,
cosmic-ray (jump) detection and segment-fused slope fitting (step ``reduce.mips.steps.ramps``).

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
from dataclasses import dataclass

import numpy as np

from reduce.errors import CalibrationError
from reduce.mips.bcd import DCE_CODES
from reduce.mips.kernels import ramps_numba as _nb

log = logging.getLogger(__name__)

DT_READ = 0.131072  # s between Ge reads
DEFAULT_FLAGS = {"saturated": 1, "cr": 2, "too_few_reads": 4, "no_good_segment": 8}
_STATUS_KEYS = {
    "saturated": _nb.ST_SATURATED,
    "cr": _nb.ST_CR,
    "too_few_reads": _nb.ST_TOO_FEW,
    "no_good_segment": _nb.ST_NO_SEGMENT,
}

__all__ = ["DEFAULT_FLAGS", "DT_READ", "GeParams", "fit_ramps", "fit_ramps_block"]


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


@dataclass(frozen=True)
class GeParams:
    """Ge step parameters (mission defaults: seed 000, INSTRUMENTS.md): the ramp fit's and the
    stim-flash responsivity's (``reduce.mips.steps.responsivity``)."""

    cr_threshold: float = 5.0     # sigma, ramp jump detection
    min_reads: int = 4            # fewest reads of a fitted segment
    dt: float = DT_READ           # s between reads
    resp_method: str = "gp"       # responsivity vs time from the stims: 'gp' (drift model with uncertainty,
                                  #   reduce.mips.kernels.responsivity), or 'linear' / 'nearest' (no uncertainty)
    resp_amp: float = 0.05        # 'gp': prior rms of the responsivity drift (fraction; ICD: several % per hour)
    resp_timescale_s: float = 3600.0  # 'gp': time scale of the drift (s)
    same_pointing_px: float = 0.5  # stim background from DCEs pointed this close (pixels), if any
    keep_cr_reads: bool = False   # also return cr_reads (dce, read, y, x) (tests, notebooks)


def fit_ramps_block(reads, nreads, calset, skip, *, nonlin, satlevel, rdnoise, gain, p, bits):
    """Task body of step ``ramps.fit_ramps``: reads (n, read, y, x) int16 raw DN, per calibration
    set -> slope, error (n, y, x) float32 linear DN/s, mask bits (uint16, ``bits``), ncr (int16),
    dce_code (n,) int16 (all_saturated, no_valid_pixel) [, cr_reads (n, read, y, x) bool when
    ``p.keep_cr_reads``]; skipped DCEs stay NaN."""
    n, nr, ny, nx = reads.shape
    slope = np.full((n, ny, nx), np.nan, np.float32)
    err = np.full((n, ny, nx), np.nan, np.float32)
    rmask = np.zeros((n, ny, nx), np.uint16)
    ncr = np.zeros((n, ny, nx), np.int16)
    code = np.zeros(n, np.int16)
    crr = np.zeros(reads.shape if p.keep_cr_reads else (n, 0, 0, 0), bool)
    flags = {"saturated": bits["saturated"], "cr": bits["cosmic_ray"],
             "too_few_reads": bits["too_few_reads"], "no_good_segment": bits["no_good_segment"]}
    for k in np.unique(calset[~skip]):
        sel = np.flatnonzero((calset == k) & ~skip)
        r = fit_ramps(reads[sel], nreads[sel], coeffs=nonlin[k], satlevel=satlevel[k],
                      rdnoise=rdnoise[k], gain=gain[k], dt=p.dt, cr_threshold=p.cr_threshold,
                      min_reads=p.min_reads, flags=flags)
        slope[sel], err[sel], rmask[sel], ncr[sel] = r["slope"], r["error"], r["mask"], r["ncr"]
        if p.keep_cr_reads:
            crr[sel] = r["cr_reads"]
        none = ~np.isfinite(r["slope"]).any(axis=(1, 2))
        allsat = ((r["mask"] & bits["saturated"]) > 0).all(axis=(1, 2))
        code[sel] |= np.where(none & allsat, DCE_CODES["all_saturated"], 0).astype(np.int16)
        code[sel] |= np.where(none & ~allsat, DCE_CODES["no_valid_pixel"], 0).astype(np.int16)
    return (slope, err, rmask, ncr, code) + ((crr,) if p.keep_cr_reads else ())
