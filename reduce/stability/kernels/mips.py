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
single-frame cosmic-ray flags and pixels with a value; and, from the dark-subtracted rate m
(DN/s) before the jailbar and droop corrections, ``si_droop_jailbar`` (measured, not the
calibration file's DROOP and JAILBAR):

* jailbar offset J (DN/s): the median over the readout-4 pixels (columns x % 4 == 3) of the pixel
  minus the mean of its two neighbours (flat-fielded comparison, ``reduce.mips.kernels.si``; the
  uniform droop and smooth sky cancel, the median rejects stars), error 1.2533 x robust sigma /
  sqrt(n);
* droop: dead pixels (PMASK bit 1) see no light, so once dark-subtracted and with J removed they
  hold only the droop D = R mean(s + d) (the array-wide electronic offset, s the sky signal, d the
  dark); D = their median, and with M the mean of m over the array (J removed), mean(s) = M - D,
  so the droop coefficient R = D / (M - D + mean(d)) (dimensionless: DN/s per DN/s of mean
  signal), its error from D's (1.2533 x robust sigma / sqrt(n dead));
* jailbar amplitude A = J / B (DN/s per DN/s of bright signal) with B the bright signal of
  readout 4: sum over its pixels of max(s - median(s) - JBTHRESH, 0), s = m - D with J removed
  (the threshold is the definition of "bright" in the calibration file); NaN without bright
  signal (B = 0: J is then only a measured offset).
"""
from __future__ import annotations

import functools

import numpy as np

from ...mips.kernels.si import NREADOUTS, _channel_excess, jailbar_bright

NOISY_FACTOR = 4.0     # pixels whose read-noise estimate exceeds this x the median are left out
JAILBAR_CHANNEL = 3    # readout 4 (0-based channel 3): the columns x % 4 == 3
MIN_DEAD = 5           # fewest dead pixels for a droop measurement
MEDIAN_ERR = 1.2533    # error of a median / error of a mean for Gaussian samples
SI_DROOP_FIELDS = ("droop_coeff", "droop_coeff_err", "droop_DN_s", "jailbar_DN_s", "jailbar_DN_s_err",
                   "jailbar_bright_DN_s", "jailbar_amplitude", "jailbar_amplitude_err")


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


def _robust_sigma(x):
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if x.size else np.nan


def droop_jailbar_frame(m, *, dead, flat, dark, thresh):
    """Droop and jailbar of one dark-subtracted 24 um frame ``m`` (ny, nx) DN/s before their
    corrections (module docstring): dict of the ``SI_DROOP_FIELDS``. ``dead`` (ny, nx) bool,
    ``flat`` and ``dark`` (ny, nx) of the frame's calibration set, ``thresh`` JBTHRESH (DN/s)."""
    out = dict.fromkeys(SI_DROOP_FIELDS, np.nan)
    m = np.asarray(m, np.float64)
    exc = _channel_excess(m, JAILBAR_CHANNEL, flat)
    exc = exc[np.isfinite(exc)]
    if exc.size < 3:
        return out
    j = float(np.median(exc))
    out["jailbar_DN_s"], out["jailbar_DN_s_err"] = j, MEDIAN_ERR * _robust_sigma(exc) / np.sqrt(exc.size)
    mj = m.copy()
    mj[:, JAILBAR_CHANNEL::NREADOUTS] -= j
    dv = mj[np.asarray(dead, bool) & np.isfinite(mj)]
    if dv.size >= MIN_DEAD:
        d = float(np.median(dv))
        d_err = MEDIAN_ERR * _robust_sigma(dv) / np.sqrt(dv.size)
        mean_m, mean_d = float(np.nanmean(mj)), float(np.nanmean(dark))
        den = mean_m - d + mean_d
        if den > 0:
            out["droop_DN_s"], out["droop_coeff"] = d, d / den
            out["droop_coeff_err"] = abs((mean_m + mean_d) / den ** 2) * d_err
        s = mj - d
        bright = float(jailbar_bright(s, thresh, channel=JAILBAR_CHANNEL))
        out["jailbar_bright_DN_s"] = bright
        if bright > 0:
            out["jailbar_amplitude"] = j / bright
            out["jailbar_amplitude_err"] = out["jailbar_DN_s_err"] / bright
    return out


def si_droop_jailbar(rate, skip, calset, *, dead, flat, dark, thresh):
    """Per-DCE droop and jailbar of 24 um frames: a tuple of (n,) float64 in the order of
    ``SI_DROOP_FIELDS`` (NaN for skipped DCEs). ``rate`` (n, y, x) dark-subtracted DN/s before the
    jailbar and droop corrections, ``skip`` (n,), ``calset`` (n,) int; per calibration set
    ``dead`` (cset, y, x) bool, ``flat``, ``dark`` (cset, y, x), ``thresh`` (cset,)."""
    n = rate.shape[0]
    out = {k: np.full(n, np.nan) for k in SI_DROOP_FIELDS}
    for i in range(n):
        k = int(calset[i])
        if skip[i] or not np.isfinite(thresh[k]):
            continue
        for name, v in droop_jailbar_frame(rate[i], dead=dead[k], flat=flat[k], dark=dark[k],
                                           thresh=float(thresh[k])).items():
            out[name][i] = v
    return tuple(out[k] for k in SI_DROOP_FIELDS)
