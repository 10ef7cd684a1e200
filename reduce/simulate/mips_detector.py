"""Detector kernels of the MIPS simulator (plain numpy; inputs never mutated).

24 um (Si:As): ``si_dce`` integrates a ramp of NSAMP samples (t_j = (j+1)*SAMPTIME),
Poisson charge from photon+dark rate, noiseless droop+jailbar ramp, cosmic-ray steps,
read noise per sample; then computes what the on-board electronics send: the OLS slope
[DN/sample] of the ramp clipped at its usable range SATLEVEL*NSAMP DN (sim: the on-board
threshold is the rate that just fills it, so every pixel above it has a wrong slope and
no pixel below it saturates), and the first difference (samples clipped only at the
16-bit A/D limit SI_ADMAX, sim) where it exceeds SATLEVEL.

70/160 um (Ge:Ga): ``ge_ramp`` integrates linear charge L (DN) from the first read,
Poisson per read interval, CR steps (and responsivity changes after the hit); reads =
bias + g(L) with g the inverse of the _nonlin polynomial P(d) = sum_k C[k-1] d^k, read
noise, rounding, clip at the A/D limit.
"""
from __future__ import annotations

import numpy as np

SI_ADMAX = 65535.0  # (sim) DN, 16-bit A/D limit of single 24 um samples
CR_RATE_SI = 2.0e-4  # (sim) hits per pixel per s, 24 um
CR_RATE_GE = 1.0 / 60.0  # (sim) hits per pixel per s (ICD: up to 1 per 35 s)
CR_AMP_SI = (300.0, 0.8)  # (sim) lognormal median DN, sigma_ln
CR_AMP_GE = (80.0, 0.8)  # (sim)
CR_RESP_PROB, CR_RESP_RANGE = 0.3, (0.02, 0.10)  # (sim) P(responsivity change), fractional change


def draw_crs(rng, shape, nreads, duration, rate, amp, *, resp_change):
    """Cosmic-ray hits: list of dicts read (first read/sample containing the step), y, x,
    amp (DN), dresp (fractional responsivity change for later reads; 0 for none)."""
    ny, nx = shape
    n = rng.poisson(rate * duration * ny * nx)
    ys, xs = rng.integers(0, ny, n), rng.integers(0, nx, n)
    ks = rng.integers(1, nreads, n)
    amps = amp[0] * np.exp(amp[1] * rng.standard_normal(n))
    dr = np.where(rng.random(n) < CR_RESP_PROB, rng.uniform(*CR_RESP_RANGE, n), 0.0)
    if not resp_change:
        dr[:] = 0.0
    return [{"read": int(k), "y": int(y), "x": int(x), "amp": float(a), "dresp": float(d)}
            for k, y, x, a, d in zip(ks, ys, xs, amps, dr)]


def ols_weights(n):
    """Weights w [n] with slope = sum(w * v) for unit-spaced samples 0..n-1."""
    j = np.arange(n, dtype=float)
    j -= j.mean()
    return j / np.sum(j * j)


def si_dce(rng, photon, elec, rdnoise, crs, *, nsamp, samptime, gain, satlevel):
    """24 um DCE. photon, elec [DN/s] (ny, nx); rdnoise [DN/sample] (ny, nx) or scalar.

    Returns slope [DN/sample] float32, first difference float32 (0 unless > satlevel),
    and the ramp-clipped mask (bool).
    """
    shape = photon.shape
    lam = np.clip(photon, 0, None) * samptime * gain
    charge = np.cumsum(rng.poisson(lam, (nsamp,) + shape) / gain, axis=0)
    ramp = charge + np.arange(1, nsamp + 1)[:, None, None] * (elec * samptime)
    for h in crs:
        ramp[h["read"]:, h["y"], h["x"]] += h["amp"]
    full = satlevel * nsamp
    clipped = ramp[-1] > full
    noise = rng.standard_normal(ramp.shape) * rdnoise
    slope = np.tensordot(ols_weights(nsamp), np.minimum(ramp, full) + noise, axes=1)
    first2 = np.minimum(ramp[:2], SI_ADMAX) + noise[:2]
    fd = first2[1] - first2[0]
    diff = np.where(fd > satlevel, fd, 0.0)
    return slope.astype(np.float32), diff.astype(np.float32), clipped


def _poly(d, c):
    """P(d) = sum_k c[k-1] d^k and P'(d), Horner; c [K, ...] broadcastable with d."""
    k_max = c.shape[0]
    q, dp = c[k_max - 1] + 0 * d, k_max * c[k_max - 1] + 0 * d
    for k in range(k_max - 1, 0, -1):
        q = q * d + c[k - 1]
        dp = dp * d + k * c[k - 1]
    return q * d, dp


def nonlin_inverse(lin, coeffs, iters=50):
    """Solve P(d) = lin for d (raw DN from the first read) by Newton; coeffs [K, ny, nx]."""
    lin = np.asarray(lin, float)
    c = np.asarray(coeffs, float)
    d = lin / c[0]
    for _ in range(iters):
        p, dp = _poly(d, c)
        step = (p - lin) / dp
        d = d - step
        if np.max(np.abs(step)) < 1e-9 * max(1.0, np.max(np.abs(lin))):
            break
    return d


def nonlin_apply(d, coeffs):
    """P(d) = sum_k coeffs[k-1] d^k: raw difference from the first read -> linear DN."""
    d = np.asarray(d, float)
    out = np.zeros_like(d)
    for k in range(np.shape(coeffs)[0], 0, -1):
        out = (out + coeffs[k - 1]) * d
    return out


def ge_ramp(rng, photon, dark, rdnoise, bias, coeffs, crs, *, nreads, readtime, gain, satlevel):
    """Ge DCE reads, int16 [nreads, ny, nx].

    photon: responsivity-weighted photon rate [DN/s] (sky + stim), dark [DN/s], rdnoise [DN/read],
    bias [DN] first-read level, coeffs [K, ny, nx]. Returns (reads, first clipped read index,
    nreads where never clipped, int16 [ny, nx]).
    """
    shape = photon.shape
    mult = np.ones((nreads,) + shape)
    steps = np.zeros((nreads,) + shape)
    for h in crs:
        mult[h["read"] + 1:, h["y"], h["x"]] *= 1.0 + h["dresp"]
        steps[h["read"]:, h["y"], h["x"]] += h["amp"]
    lam = (np.clip(photon, 0, None) * mult[1:] + dark) * readtime * gain
    lin = np.zeros((nreads,) + shape)
    lin[1:] = np.cumsum(rng.poisson(lam) / gain, axis=0)
    lin += steps
    raw = bias + nonlin_inverse(lin, coeffs)
    raw = np.rint(raw + rng.standard_normal(raw.shape) * rdnoise)
    over = raw > satlevel
    raw = np.clip(raw, -32768, satlevel)
    first = np.where(over.any(axis=0), over.argmax(axis=0), nreads).astype(np.int16)
    return raw.astype(np.int16), first
