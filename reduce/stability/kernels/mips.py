"""Per-DCE stability reductions of the MIPS arrays (plain numpy; the lazy wrapper is
``reduce.stability.mips``).

Ge arrays (70, 160 um), raw ramps ``reads`` (n, read, y, x) int16 DN with ``nreads`` (n,):

* zero level: the array median of the first read (raw DN: the bias / zero-signal level);
* read noise (raw DN per read) from the ramp residuals: in the first differences d_k of a ramp,
  read noise s gives Var(d_k) = 2 s^2 and Cov(d_k, d_k+1) = -s^2 while the photon (Poisson) noise
  P is white; after removing a straight line in k from the differences of each pixel (rate and
  non-linearity), the residuals' lag-0 and lag-1 sums Q0 = sum r_k^2 and Q1 = sum r_k r_k+1 have
  expectations linear in (s^2, P) with exactly known coefficients (traces of the residual-maker
  M with the covariance matrices), which are solved per pixel for an unbiased s^2; the DCE's value
  is sqrt of the mean over its clean pixels (no saturated read, no jump found, finite slope),
  pixels above 4x the median (noisy pixels) left out;
* saturated fraction: pixels with a read at or above the A/D limit (the ramp fit's saturated bit)
  over all pixels;
* jumps (cosmic rays) found by the Ge ramp fit, and the pixels with a slope (their exposure).

24 um (Si:As, on-board slopes): saturated fraction (pixels replaced by the first difference),
single-frame cosmic-ray flags and pixels with a value.
"""
from __future__ import annotations

import functools

import numpy as np

NOISY_FACTOR = 4.0     # pixels whose read-noise estimate exceeds this x the median are left out


@functools.lru_cache(maxsize=64)
def _coefficients(m):
    """2x2 matrix mapping (s^2, P) to the expectations of (Q0, Q1) for m first differences."""
    k = np.arange(m, dtype=np.float64)
    x = np.column_stack([np.ones(m), k - k.mean()])
    h = x @ np.linalg.solve(x.T @ x, x.T)
    mm = np.eye(m) - h
    t = 2 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    a = 0.5 * (np.eye(m, k=1) + np.eye(m, k=-1))
    mam = mm @ a @ mm
    return np.array([[np.trace(mm @ t), np.trace(mm)], [np.trace(mam @ t), np.trace(mam)]])


def read_noise_pixels(reads):
    """Unbiased read-noise variance (DN^2) of each pixel from its ramp ``reads`` (nread, npix)
    (clean: no saturated read, no jump); NaN with fewer than 4 reads."""
    reads = np.asarray(reads, np.float64)
    m = reads.shape[0] - 1
    if m < 3:
        return np.full(reads.shape[1], np.nan)
    d = np.diff(reads, axis=0)
    k = np.arange(m, dtype=np.float64) - (m - 1) / 2
    slope = (k @ d) / (k @ k)
    r = d - d.mean(axis=0) - k[:, None] * slope
    q0 = (r * r).sum(axis=0)
    q1 = (r[1:] * r[:-1]).sum(axis=0)
    sol = np.linalg.solve(_coefficients(m), np.vstack([q0, q1]))
    return sol[0]


def ge_dce_stats(reads, nreads, skip, rate, rmask, ncr, *, sat_bit):
    """Per-DCE statistics of Ge ramps: (zero level DN, read noise DN, saturated fraction, jumps,
    pixels with a slope), each (n,) float64 (NaN / 0 for skipped DCEs).

    ``reads`` (n, read, y, x) int16 raw DN, ``nreads`` (n,), ``skip`` (n,) bool; from the ramp fit
    ``rate`` (n, y, x) (finite = has a slope), ``rmask`` (n, y, x) uint16 (``sat_bit`` = saturated),
    ``ncr`` (n, y, x) jumps per pixel."""
    n = reads.shape[0]
    npix = reads.shape[2] * reads.shape[3]
    zero, rdn, satf, jumps, good = (np.full(n, np.nan) for _ in range(5))
    for i in range(n):
        if skip[i]:
            continue
        nr = int(nreads[i])
        r = reads[i, :nr].reshape(nr, npix)
        zero[i] = float(np.median(r[0])) if nr else np.nan
        sat = (np.asarray(rmask[i]).reshape(npix) & sat_bit) > 0
        fin = np.isfinite(np.asarray(rate[i]).reshape(npix))
        hits = np.asarray(ncr[i]).reshape(npix)
        satf[i] = sat.mean()
        jumps[i] = float(hits[fin].sum())
        good[i] = float(fin.sum())
        clean = fin & ~sat & (hits == 0)
        if clean.sum() >= 3 and nr >= 4:
            v = read_noise_pixels(r[:, clean])
            v = v[np.isfinite(v)]
            med = np.median(v) if v.size else np.nan
            keep = v[v <= NOISY_FACTOR * med] if med > 0 else v
            rdn[i] = float(np.sqrt(keep.mean())) if keep.size and keep.mean() > 0 else np.nan
    return zero, rdn, satf, jumps, good


def si_dce_stats(skip, rate, sat, crflag):
    """Per-DCE statistics of 24 um frames: (saturated fraction, cosmic-ray flags, pixels with a
    value), each (n,) float64; ``rate`` (n, y, x), ``sat`` and ``crflag`` (n, y, x) bool."""
    n = rate.shape[0]
    satf, crs, good = (np.full(n, np.nan) for _ in range(3))
    for i in range(n):
        if skip[i]:
            continue
        fin = np.isfinite(rate[i])
        satf[i] = float(np.mean(sat[i]))
        crs[i] = float(np.sum(crflag[i] & fin))
        good[i] = float(fin.sum())
    return satf, crs, good
