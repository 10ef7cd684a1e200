"""Spitzer MIPS level-0 simulator: raw DCE files, calibration files and truth (ICD §2).

Layout written by :func:`simulate_mips` into OUTDIR:
  ``SPITZER_M{C}_{AORKEY}_{EXPID:04d}_{DCENUM:04d}_raw.fits``  raw DCEs (ICD §2),
  ``cal/mips{24,70,160}_*.fits``                              reference files (mips_cal),
  ``mips_truth.json`` + ``mips_truth.npz``                     truth (never read by the pipeline).
SED mode (ICD §3, reduce.simulate.mips_sed): ``cal/mips70sed_*.fits`` always; raw SED DCEs
(CHNLNUM 2, AOT_TYPE 'MipsSed') of ``sed_specs``; their truth entries in "dces" carry
"mode": "sed" (plus choppos, dither, source_column, source_w, pa_slit, chopthrw) and npz
arrays flux/rate/sat as the Ge ones; meta["sed"][aorkey] has the true spectrum (absent when
there are no SED AORs).

Observations. ``MipsPhot``: each array in turn (24, 70, 160 blocks of n_dce DCEs) centred
on the target plus a dither (``dither_positions`` offsets drawn within +-``dither_frac`` of
the half field per axis, ``dces_per_position`` DCEs each; EXPID = position visit,
DCENUM = DCE within it). ``MipsScan``: all arrays simultaneous; the boresight moves along
the array +y axis at ``scan_rate`` "/s in ``n_legs`` alternating legs ``leg_sep`` " apart;
array centres sit ``fp_offset`` " along +y from the boresight (sim: -150/0/+150");
EXPID = leg, DCENUM = DCE in leg. DCE cadence = EXPTIME(Ge) + ``overhead`` s; MJD_OBS is
the mid-time. PA_REF = true PA (no PA error, sim).

Scan maps also carry (all sim, none in MipsPhot AORs, see make_mips_sky / leg_offsets):
- a background gradient: a linear slope of the extended emission over the AOR's field
  (sky.gradients: direction PA uniform, change from the centre to the field radius 5-20 %
  of BACKGROUND per band, zero beyond 1.5 field radii), rendered like all extended emission;
- one moving object (sky.movers, not in the static catalogue): 10-60 "/min in a random
  direction, passing a point near the first array's centre in the middle of a leg; flux24
  0.005-0.015 Jy (below 24 um saturation, ~30 mJy), flux70 = 0.3-0.6 flux24, flux160 =
  0.2-0.4 flux70 (so chiefly a 24 um outlier); rendered at each DCE's mid-time (no trailing);
- per-leg additive offsets at 70/160 um (Ge slow drifts): one value [MJy/sr] per EXPID and
  array, N(0, LEG_OFFSET_FRAC * BACKGROUND) minus the mean over the legs, added to the sky
  signal before the detector model (so it comes out of a BCD as a surface-brightness offset).

Scan map of a chosen size: ``plan_mips(aors=2, scan_dces=N, scan_legs=L, scan_arrays=(1,))``
or directly ``AorSpec(aorkey=..., aot_type="MipsScan", object=..., ra=..., dec=...,
start_mjd=..., n_dce=N, n_legs=L, arrays=(1,), overhead=0.3)`` (n_dce DCEs per array, in L
legs of ceil(N/L) DCEs; step along the scan scan_rate*(EXPTIME+overhead), 22.4" for the
defaults with overhead 0.3; legs leg_sep = 148" apart).

API: plan_mips, AorSpec, write_calibration (mips_cal), simulate_dce, simulate_mips;
helpers: dce_pointing (true and reconstructed pointing of one DCE), make_mips_sky (truth sky
of a list of specs), leg_offsets (per-leg offsets of a scan map), responsivity(chnl, mjd),
mips_cal.array_wcs / load_calibration; truth helpers in mips_sky: sky_of, truth_image,
surface_brightness, mover_position.

Pointing: true = commanded + settle error (0.3" per axis, sim); RA_REF/DEC_REF = true +
Gaussian error of the ICD's 1 sigma radial (sigma/sqrt(2) per axis): 1.4"/1.7"/3.9".

Forward model (ICD §2; constants in mips_cal/mips_detector, "(sim)" = our choice). The cal
files are the exact detector truth (flat, dark, nonlin, STIMAMP, FLUXCONV, GAIN, RDNOISE):
- 24 um: photon = flux/FLUXCONV*flat + dark (Poisson via GAIN); droop = DROOP (0.33, sim) *
  mean(photon) over the array, on every pixel; jailbar = JAILBAR (5e-4, sim) * B added to
  columns x % 4 == 3 (0-based; readout 4), B = sum over those columns of
  max(s - median(s) - JBTHRESH, 0), s = flux/FLUXCONV*flat, JBTHRESH = 200 DN/s (sim; an
  extra keyword of mips24_cal.fits). Droop and jailbar are noiseless (electronic).
  NSAMP = 2*MIPS-s - 1 samples (5/7/19; EXPTIME 2.62/3.67/9.96 s), read noise RDNOISE per
  sample, OLS slope stored in DN/sample (= DN/s * SAMPTIME) from the ramp clipped at
  SATLEVEL*NSAMP DN (so a pixel above 600 DN/sample always has a too-low slope);
  plane 1 = first difference where it exceeds SATLEVEL (noisy, so pixels within a few
  sigma of the threshold may go either way; truth K_sat is the on-board flag).
  CRs (2e-4 per pixel per s, lognormal median 300 DN, sim) add a step to the ramp.
- 70/160 um: r = resp(t)*(flux/FLUXCONV*flat + STIMFLSH*STIMAMP) + dark; resp(t) =
  1 + RESP_AMP*sin(2 pi (MJD - 53000)/RESP_PERIOD + phase_chnl) + RESP_DRIFT*max(MJD - 53750, 0)
  + RESP_JUMP*H(MJD - 53800) (sim: 4 %, 6 h period, i.e. up to ~4 %/h; from MJD 53750 a mission
  drift of -0.5 % per 100 days, and a +3 % jump at MJD 53800.0; mips_dce.responsivity);
  STIMAMP ~3000 DN/s (sim) over the whole DCE; stim flashes in DCEs with
  index % stim_every == 1 (auto: every ~60 s of data); reads = bias + g(L) + read noise,
  rounded, clipped at SATLEVEL = 32767; L = linear charge since the first read (Poisson),
  g = inverse of the _nonlin cubic; bias = -28000 + ZERO_DRIFT*max(MJD - 53750, 0) + N(0, 300) DN
  per pixel and DCE (sim; zero-level mission drift from MJD 53750: +0.5 DN/day at 70 um, +0.3 at
  160 um, mips_dce.zero_drift; before MJD 53750, where the tests observe, no drift);
  CRs (1/60 per pixel per s, lognormal median 80 DN, sim) add a step, and 30 % of them
  raise the pixel's photon responsivity by 2-10 % for the rest of the DCE (sim);
  EXPTIME = NREADS*0.131072 s. Bright sources (one per field: 0.5/15/20 Jy) saturate
  24 um and 70 um pixels.
- PSFs Gaussian, FWHM 6"/18"/40", pixel-integrated, through the TAN-SIP WCS of the
  distortion file (mips_cal.array_wcs) at the TRUE pointing (see mips_sky).

Truth JSON (``mips_truth.json``): {"format": "skyreduce-mips-truth-1", "seed", "calvers",
"sky": {"sources": {ra, dec, flux24, flux70, flux160 [deg, Jy]}, "extended": {model, background,
clouds, gradients}, "movers": {model, ra, dec, mjd0, rate_east, rate_north, flux*, aorkey}}
(mips_sky.Sky; mips_sky.sky_of(truth) rebuilds it),
"leg_offsets": {aorkey: {chnl: [MJy/sr per EXPID]}} (MipsScan AORs, chnl 2 and 3),
"responsivity": {"model", "amp", "period_d", "mjd0", "phase": {chnl: rad}, "drift_per_day",
"mission_mjd0", "jump", "jump_mjd"}, "zero_level": {"model", "bias": {chnl: DN},
"drift_dn_per_day": {chnl: DN/day}, "mission_mjd0", "pixel_sigma_dn"} (mips_dce.mission_truth),
"si": {"droop", "jailbar", "jbthresh"} (the 24 um droop coefficient and jailbar amplitude, constant),
"arrays": {chnl: {band_um, pointing_sigma_arcsec, settle_sigma_arcsec_per_axis, fwhm_arcsec,
cr_rate_per_pixel_s}}, "aors": [AorSpec fields], "injected_sources": {first, count} (only when
simulate_mips got extra_sources: sources[first:first + count] are the injected ones),
"dces": [one entry per raw file: file, chnl, aorkey, expid, dcenum, index, mjd, ra, dec, pa
(true array-centre pointing), ra_ref, dec_ref, ra_rqst, dec_rqst, exptime, nreads, stim,
resp, droop [DN/s], jailbar [DN/s], zero_level [DN, Ge: mean first-read level incl. drift],
n_sat, crs [{read, y, x, amp [DN], dresp; 24 um also
dslope [DN/s] = slope increase}], leg_offset [MJy/sr, added to the sky signal; 0 but for
70/160 um scan maps], movers [{id (index in sky.movers), ra, dec, x, y (0-based pixel, true
pointing)} of the moving objects whose centre is on the array],
npz {"key", "index"}]}. ``read``: first read (24 um: sample) that contains the CR step;
dresp: fractional responsivity change from read+1 on (Ge).
Truth NPZ (``mips_truth.npz``): per group key K = "M{C}_{AORKEY}_{first:05d}":
K_flux float32 [n, ny, nx] brightness the array sees at the pixel centres/integrated PSF
[MJy/sr]: static sky + moving objects + the DCE's leg_offset (mips_sky.truth_image gives
the static sky alone);
K_rate float32 [n, ny, nx] true noiseless rate before CRs [DN/s] (24 um: incl. dark, droop,
jailbar; Ge: incl. dark, stim, at the DCE mid-time responsivity); K_sat: 24 um uint8
on-board first-difference flag, Ge int16 first clipped read (NREADS if none).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from ..io.atomic import atomic_path, atomic_write_text

from . import mips_detector as det
from .mips_cal import (ARRAYS, DROOP, GE_NREADS, JAILBAR, JBTHRESH, MIPS_SECOND, PM_NOISY, NOISY_FACTOR, READTIME_GE,
                       SAMPTIME_SI, array_wcs, atomic_writeto, load_calibration,
                       write_calibration)
from .mips_sky import (BACKGROUND, GRADIENT_KEYS, MOVER_KEYS, _offset, _sep_arcsec, make_sky,
                       mover_position, render)
from .mips_dce import (BIAS_SIGMA, SCLK_EPOCH, SETTLE_SIGMA, _header, mission_truth, responsivity,
                       zero_drift)
from .truthio import zip_array

log = logging.getLogger(__name__)

STIM_PERIOD_S = 60.0  # (sim)
LEG_OFFSET_FRAC = 0.03  # (sim) sigma of the per-leg 70/160 um offsets, fraction of BACKGROUND
GRADIENT_FRAC = (0.05, 0.20)  # (sim) gradient: change centre -> field radius, fraction of BACKGROUND
MOVER_RATE = (10.0, 60.0)  # (sim) "/min, moving-object speed
SCAN_SOURCES_PER_DEG2 = 150.0  # (sim) catalogue density of large scan fields (small ones: 40 sources)
MOVER_FLUX24 = (0.005, 0.015)  # (sim) Jy, log-uniform (24 um saturates at ~30 mJy)
GROUP_SIZE = 100  # DCEs per parallel task / npz key


@dataclass(frozen=True)
class AorSpec:
    """One AOR. Angles in deg, offsets in arcsec, times in MJD (UTC) / s."""

    aorkey: int
    aot_type: str  # 'MipsPhot' or 'MipsScan'
    object: str
    ra: float
    dec: float
    start_mjd: float
    n_dce: int  # DCEs per array
    exptime_ge: float = 3.0  # MIPS-s -> NREADS 24/32/80
    with_stim: bool = True  # False: no stim flash at all (bad input for the pipeline)
    arrays: tuple = (1, 2, 3)
    pa: float = 45.0
    progid: int = 40
    dither_positions: int = 8
    dces_per_position: int = 1
    dither_frac: float = 0.25
    scan_rate: float = 6.5
    n_legs: int = 2
    leg_sep: float = 148.0
    overhead: float = 1.0
    stim_every: int = 0  # 0: auto, every ~STIM_PERIOD_S
    n_sources: int = 0  # catalogue sources in the AOR's field; 0: auto (see _fields)


def plan_mips(*, aors=2, seed=0, scan_dces=30, scan_legs=2, scan_arrays=(1, 2, 3), start_mjd=53500.0,
              span_days=0.0) -> list[AorSpec]:
    """``aors`` small AORs alternating MipsPhot and MipsScan from ``start_mjd``, about 2 h apart,
    or spread evenly over ``span_days`` days when that is larger (a mission whose drifts, jump and
    zero-level drift of mips_dce show: they start at MISSION_MJD0 = 53750) (sim targets).

    MipsScan AORs get ``scan_dces`` DCEs per array in ``scan_legs`` legs with ``scan_arrays``
    (the defaults give the historical plan; the random draws do not depend on them)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    step = max(0.1, float(span_days) / max(aors - 1, 1))
    specs = []
    for i in range(aors):
        phot = i % 2 == 0
        specs.append(AorSpec(
            aorkey=10_000_000 + 1000 * i + int(rng.integers(0, 1000)),
            aot_type="MipsPhot" if phot else "MipsScan",
            object=f"SIMFIELD-{i + 1}", ra=float(rng.uniform(0, 360)),
            dec=float(rng.uniform(-60, 60)), start_mjd=float(start_mjd) + step * i,
            n_dce=24 if phot else scan_dces, pa=float(rng.uniform(0, 360)),
            overhead=1.0 if phot else 0.3, **({} if phot else
                                              {"n_legs": scan_legs, "arrays": tuple(scan_arrays)})))
    return specs


def nsamp_si(aor):
    """24 um samples per DCE: 2 per MIPS-s minus 1 (3 MIPS-s -> 5 samples = 2.62 s)."""
    return int(round(2 * aor.exptime_ge)) - 1


def nreads_ge(aor):
    return GE_NREADS[int(round(aor.exptime_ge))]


def dce_duration(aor):
    """Seconds between DCE starts."""
    return aor.exptime_ge * MIPS_SECOND + aor.overhead


def _array_offsets(aor, chnl, seed):
    """Commanded array-centre offsets (dx, dy) arcsec along array axes, and EXPID, DCENUM."""
    n, a = aor.n_dce, ARRAYS[chnl]
    i = np.arange(n)
    if aor.aot_type == "MipsPhot":
        rng = np.random.default_rng(np.random.SeedSequence([seed, aor.aorkey, 0, 3]))
        half = np.array(a.shape[::-1]) * np.array(a.pxscal) / 2 * aor.dither_frac
        pos = rng.uniform(-1, 1, (aor.dither_positions, 2)) * half
        pos[0] = 0.0
        visit = i // aor.dces_per_position
        dxy = pos[visit % aor.dither_positions]
        return dxy[:, 0], dxy[:, 1], visit, i % aor.dces_per_position
    m = -(-n // aor.n_legs)
    leg, k = i // m, i % m
    step = aor.scan_rate * dce_duration(aor)
    along = (k - (m - 1) / 2) * step * np.where(leg % 2 == 0, 1.0, -1.0)
    cross = (leg - (aor.n_legs - 1) / 2) * aor.leg_sep
    return cross, along + a.fp_offset, leg, k


@functools.lru_cache(maxsize=256)
def _plan(aor, chnl, seed):
    """Per-DCE commanded pointing and timing of one array: dict of arrays [n_dce]."""
    dx, dy, expid, dcenum = _array_offsets(aor, chnl, seed)
    pa = np.radians(aor.pa)
    east = -dx * np.cos(pa) + dy * np.sin(pa)
    north = dx * np.sin(pa) + dy * np.cos(pa)
    ra, dec = _offset(aor.ra, aor.dec, east, north)
    dur = dce_duration(aor)
    block = aor.arrays.index(chnl) * aor.n_dce if aor.aot_type == "MipsPhot" else 0
    mjd = aor.start_mjd + (block + np.arange(aor.n_dce) + 0.5) * dur / 86400.0
    sclk = (Time(mjd, format="mjd", scale="utc") - SCLK_EPOCH).sec
    every = aor.stim_every or max(3, int(round(STIM_PERIOD_S / dur)))
    stim = (np.arange(aor.n_dce) % every == 1) & aor.with_stim & (chnl > 1)
    return {"ra": ra, "dec": dec, "mjd": mjd, "sclk": sclk, "expid": expid, "dcenum": dcenum,
            "stim": stim}


def leg_offsets(aor, chnl, seed=0):
    """Additive per-leg offsets [MJy/sr] of one array, indexed by EXPID (float64 [n legs used]).

    70/160 um scan maps: N(0, LEG_OFFSET_FRAC * BACKGROUND[band]) per leg minus their mean
    (zero mean over the legs); zeros for 24 um and for MipsPhot AORs."""
    return np.array(_leg_offsets(aor, chnl, seed))


@functools.lru_cache(maxsize=256)
def _leg_offsets(aor, chnl, seed):
    n = int(_plan(aor, chnl, seed)["expid"].max()) + 1
    if aor.aot_type != "MipsScan" or chnl == 1:
        return (0.0,) * n
    rng = np.random.default_rng(np.random.SeedSequence([seed, aor.aorkey, chnl, 5, 18]))
    o = rng.normal(0.0, LEG_OFFSET_FRAC * BACKGROUND[ARRAYS[chnl].band], n)
    return tuple(float(v) for v in o - o.mean())


def raw_name(aor, chnl, expid, dcenum):
    return f"SPITZER_M{chnl}_{aor.aorkey}_{int(expid):04d}_{int(dcenum):04d}_raw.fits"


def _rngs(seed, aor, chnl, index):
    ss = np.random.SeedSequence([seed, aor.aorkey, chnl, index])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def dce_pointing(aor, chnl, index, *, seed=0):
    """(true ra, true dec, RA_REF, DEC_REF) deg of the array centre in one DCE."""
    plan = _plan(aor, chnl, seed)
    r_point = _rngs(seed, aor, chnl, index)[0]
    e, n = r_point.normal(0, SETTLE_SIGMA, 2)
    ra_t, dec_t = _offset(plan["ra"][index], plan["dec"][index], e, n)
    e, n = r_point.normal(0, ARRAYS[chnl].pointing_sigma / np.sqrt(2), 2)
    ra_r, dec_r = _offset(ra_t, dec_t, e, n)
    return float(ra_t), float(dec_t), float(ra_r), float(dec_r)


def simulate_dce(aor: AorSpec, chnlnum: int, index: int, *, cal, sky, seed):
    """One raw DCE: (HDUList, truth dict with JSON-able fields and "arrays": flux, rate, sat)."""
    if not isinstance(cal, dict):
        cal = load_calibration(cal)
    a, c, plan = ARRAYS[chnlnum], cal[chnlnum], _plan(aor, chnlnum, seed)
    _, r_noise, r_cr = _rngs(seed, aor, chnlnum, index)
    ra_t, dec_t, ra_r, dec_r = dce_pointing(aor, chnlnum, index, seed=seed)
    wcs = array_wcs(c["dist"], ra_t, dec_t, aor.pa)
    mjd = float(plan["mjd"][index])
    flux = render(sky, a.band, wcs, a.shape, a.fwhm, mjd=mjd)
    expid = int(plan["expid"][index])
    off = float(leg_offsets(aor, chnlnum, seed)[expid])
    if off:
        flux = flux + off
    rdn = np.where(c["pmask"] & PM_NOISY, NOISY_FACTOR, 1.0) * c["rdnoise"]
    sky_rate = flux / c["fluxconv"] * c["flat"]
    tr = {"file": raw_name(aor, chnlnum, plan["expid"][index], plan["dcenum"][index]),
          "chnl": chnlnum, "aorkey": aor.aorkey, "expid": int(plan["expid"][index]),
          "dcenum": int(plan["dcenum"][index]), "index": index, "mjd": mjd,
          "ra": float(ra_t), "dec": float(dec_t), "pa": aor.pa, "ra_ref": float(ra_r),
          "dec_ref": float(dec_r), "ra_rqst": float(plan["ra"][index]),
          "dec_rqst": float(plan["dec"][index]), "leg_offset": off,
          "movers": _movers_on_array(sky, wcs, a.shape, mjd, ra_t, dec_t)}
    if chnlnum == 1:
        data, extra = _si(aor, c, sky_rate, rdn, r_noise, r_cr)
    else:
        stim = bool(plan["stim"][index])
        resp = float(responsivity(chnlnum, mjd, seed=seed))
        data, extra = _ge(aor, chnlnum, c, sky_rate, rdn, r_noise, r_cr, resp, stim,
                          zero=float(zero_drift(chnlnum, mjd)))
    extra["arrays"]["flux"] = flux.astype(np.float32)
    tr.update(extra)
    hdr = _header(aor, chnlnum, index, plan, tr, c)
    return fits.HDUList([fits.PrimaryHDU(data, header=hdr)]), tr


def _movers_on_array(sky, wcs, shape, mjd, ra_c, dec_c):
    """Truth list of the moving objects whose centre falls on the array at ``mjd``."""
    m = sky.movers
    if not len(m["ra"]):
        return []
    ra, dec = mover_position(sky, mjd)
    out = []
    ny, nx = shape
    for j in np.flatnonzero(_sep_arcsec(ra, dec, ra_c, dec_c) < 0.75 * np.hypot(nx * 20.0, ny * 20.0)):
        x, y = (float(v[0]) for v in wcs.all_world2pix([ra[j]], [dec[j]], 0))
        if -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5:
            out.append({"id": int(j), "ra": float(ra[j]), "dec": float(dec[j]), "x": x, "y": y})
    return out


def _si(aor, c, sky_rate, rdn, r_noise, r_cr):
    ns = nsamp_si(aor)
    photon = sky_rate + c["dark"]
    droop = c["droop"] * float(photon.mean())
    s = sky_rate
    bright = np.clip(s - np.median(s) - c["jbthresh"], 0, None)[:, 3::4].sum()
    jail = c["jailbar"] * float(bright)
    elec = np.full(photon.shape, droop)
    elec[:, 3::4] += jail
    crs = det.draw_crs(r_cr, photon.shape, ns, ns * SAMPTIME_SI, det.CR_RATE_SI, det.CR_AMP_SI,
                       resp_change=False)
    w = det.ols_weights(ns)
    for h in crs:  # slope increase of each hit, DN/s
        h["dslope"] = float(h["amp"] * w[h["read"]:].sum() / SAMPTIME_SI)
    slope, diff, clipped = det.si_dce(r_noise, photon, elec, rdn, crs, nsamp=ns, samptime=SAMPTIME_SI,
                                      gain=c["gain"], satlevel=c["satlevel"])
    sat = diff != 0
    extra = {"exptime": ns * SAMPTIME_SI, "nreads": ns, "stim": False, "resp": 1.0,
             "droop": droop, "jailbar": jail, "n_sat": int(sat.sum()), "crs": crs,
             "arrays": {"rate": (photon + elec).astype(np.float32), "sat": sat.astype(np.uint8)}}
    return np.stack([slope, diff]), extra


def _ge(aor, chnl, c, sky_rate, rdn, r_noise, r_cr, resp, stim, *, zero=0.0):
    nr = nreads_ge(aor)
    photon = resp * (sky_rate + (c["stimamp"] if stim else 0.0))
    crs = det.draw_crs(r_cr, photon.shape, nr, nr * READTIME_GE, det.CR_RATE_GE, det.CR_AMP_GE,
                       resp_change=True)
    bias = ARRAYS[chnl].bias + zero + r_noise.normal(0, BIAS_SIGMA, photon.shape)
    reads, first = det.ge_ramp(r_noise, photon, c["dark"], rdn, bias, c["nonlin"], crs, nreads=nr,
                               readtime=READTIME_GE, gain=c["gain"], satlevel=c["satlevel"])
    extra = {"exptime": nr * READTIME_GE, "nreads": nr, "stim": stim, "resp": resp,
             "droop": 0.0, "jailbar": 0.0, "zero_level": ARRAYS[chnl].bias + zero,
             "n_sat": int((first < nr).sum()), "crs": crs,
             "arrays": {"rate": (photon + c["dark"]).astype(np.float32), "sat": first}}
    return reads, extra


def make_mips_sky(specs, *, seed=0, extra_sources=None):
    """The truth sky that simulate_mips uses for these AOR specs (mips_sky.Sky): the static
    sky of every AOR's field (make_sky) plus, per MipsScan AOR, a background gradient and a
    moving object (drawn from their own random streams: the rest of the sky is unchanged).
    ``extra_sources``: injected point sources, a dict of equal-length sequences ra, dec (deg),
    flux24, flux70, flux160 (Jy), appended after the drawn catalogue (None: none)."""
    sky = make_sky(_fields(specs), seed=seed)
    if extra_sources is not None:
        sky = dataclasses.replace(sky, sources={k: np.concatenate([v, np.asarray(extra_sources[k], float)])
                                                for k, v in sky.sources.items()})
    grads, movers = [], []
    for i, s in enumerate(specs):
        if s.aot_type == "MipsScan":
            rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i, 1]))
            grads.append(_scan_gradient(s, rng))
            movers.append(_scan_mover(s, rng, seed))
    cols = lambda rows, keys: {k: np.array([r[k] for r in rows], float) for k in keys}  # noqa: E731
    return dataclasses.replace(sky, gradients=cols(grads, GRADIENT_KEYS), movers=cols(movers, MOVER_KEYS))


def scan_radius(aor):
    """Radius [arcsec] around (aor.ra, aor.dec) of a scan map's sky region: 250" beyond the
    farthest array-footprint corner, or 250" + half the total scan length if smaller (the
    historical radius, which all maps of up to ~60 DCEs in 2 legs keep)."""
    reach = 0.0
    for chnl in aor.arrays:
        dx, dy, _, _ = _array_offsets(aor, chnl, 0)
        a = ARRAYS[chnl]
        half = 0.5 * np.hypot(a.shape[1] * a.pxscal[0], a.shape[0] * a.pxscal[1])
        reach = max(reach, float(np.max(np.hypot(dx, dy))) + half)
    return float(min(250.0 + 0.5 * aor.n_dce * aor.scan_rate * dce_duration(aor), reach + 250.0))


def _scan_gradient(aor, rng):
    """One background gradient over a scan map's field (a row of mips_sky.Sky.gradients)."""
    rad = scan_radius(aor)
    g = {"ra": aor.ra, "dec": aor.dec, "radius": 1.5 * rad, "pa": rng.uniform(0.0, 360.0),
         "aorkey": aor.aorkey}
    for band, bg in BACKGROUND.items():
        g[f"g{band}"] = rng.uniform(*GRADIENT_FRAC) * bg / (rad / 3600.0)  # MJy/sr per deg
    return g


def _scan_mover(aor, rng, seed):
    """One moving object crossing a scan map (a row of mips_sky.Sky.movers): at mjd0 it is
    within a quarter of the half field of the centre of the first array in a mid-leg DCE."""
    chnl = aor.arrays[0]
    plan, a = _plan(aor, chnl, seed), ARRAYS[chnl]
    m = -(-aor.n_dce // aor.n_legs)
    mid = np.flatnonzero(np.abs(plan["dcenum"] - (m - 1) / 2) <= m / 4)
    j = int(rng.choice(mid if mid.size else np.arange(aor.n_dce)))
    half = 0.25 * 0.5 * min(a.shape[1] * a.pxscal[0], a.shape[0] * a.pxscal[1])
    ra, dec = _offset(plan["ra"][j], plan["dec"][j], *rng.uniform(-half, half, 2))
    speed = rng.uniform(*MOVER_RATE) / 60.0  # "/s
    theta = rng.uniform(0.0, 2 * np.pi)
    f24 = 10 ** rng.uniform(*np.log10(MOVER_FLUX24))
    f70 = f24 * rng.uniform(0.3, 0.6)
    return {"ra": float(ra), "dec": float(dec), "mjd0": float(plan["mjd"][j]),
            "rate_east": speed * np.sin(theta), "rate_north": speed * np.cos(theta),
            "flux24": f24, "flux70": f70, "flux160": f70 * rng.uniform(0.2, 0.4), "aorkey": aor.aorkey}


def _fields(specs):
    """(ra, dec, radius arcsec, number of sources) of each AOR's sky region, for make_sky.

    MipsPhot: 250". MipsScan: scan_radius. Sources: ``n_sources`` if set, else 40, or for scan
    maps SCAN_SOURCES_PER_DEG2 times the field's area if more (maps of up to ~60 DCEs in 2
    legs keep their historical sky)."""
    out = []
    for s in specs:
        rad = 250.0 if s.aot_type == "MipsPhot" else scan_radius(s)
        auto = 40 if s.aot_type == "MipsPhot" else max(
            40, int(round(SCAN_SOURCES_PER_DEG2 * np.pi * (rad / 3600.0) ** 2)))
        out.append((s.ra, s.dec, rad, s.n_sources or auto))
    return out


def _groups(specs):
    for s in specs:
        for chnl in s.arrays:
            for first in range(0, s.n_dce, GROUP_SIZE):
                yield s, chnl, first, min(first + GROUP_SIZE, s.n_dce)


def _run_group(aor, chnl, first, stop, *, outdir, cal, sky, seed):
    """Simulate and write DCEs first..stop-1 of one array; return their truth (arrays stacked)."""
    entries, arrays, nbytes = [], {}, 0
    for i in range(first, stop):
        hdul, tr = simulate_dce(aor, chnl, i, cal=cal, sky=sky, seed=seed)
        path = atomic_writeto(hdul, Path(outdir) / tr["file"])
        nbytes += path.stat().st_size
        for k, v in tr.pop("arrays").items():
            arrays.setdefault(k, []).append(v)
        tr["npz"] = {"key": f"M{chnl}_{aor.aorkey}_{first:05d}", "index": i - first}
        entries.append(tr)
    return entries, {k: np.stack(v) for k, v in arrays.items()}, nbytes


def _truth_meta(specs, sky, seed, calvers):
    return {
        "format": "skyreduce-mips-truth-1", "seed": seed, "calvers": calvers,
        "sky": sky.to_json(),
        **mission_truth(seed),
        "si": {"droop": DROOP, "jailbar": JAILBAR, "jbthresh": JBTHRESH},
        "arrays": {str(c): {"band_um": a.band, "pointing_sigma_arcsec": a.pointing_sigma,
                            "settle_sigma_arcsec_per_axis": SETTLE_SIGMA, "fwhm_arcsec": a.fwhm,
                            "cr_rate_per_pixel_s": det.CR_RATE_SI if c == 1 else det.CR_RATE_GE}
                   for c, a in ARRAYS.items()},
        "aors": [dataclasses.asdict(s) for s in specs],
        "leg_offsets": {str(s.aorkey): {str(c): list(_leg_offsets(s, c, seed)) for c in s.arrays if c > 1}
                        for s in specs if s.aot_type == "MipsScan"},
    }


def simulate_mips(outdir, *, aors=2, seed=0, specs=None, client=None, calvers="sim-1", progress=False,
                  sed_specs=None, sed_tilt=0.02, extra_sources=None) -> dict:
    """Write cal/, raw DCE files and truth into ``outdir``; deterministic in ``seed``.

    Also always writes the SED calibration files (mips_sed.write_sed_calibration, TILT
    ``sed_tilt`` um/column) and simulates the SED AORs of ``sed_specs`` (mips_sed.SedSpec;
    None/empty: none; their AORKEYs must differ from the imaging ones). With a
    ``distributed.Client`` the (AOR, array, <=GROUP_SIZE DCEs) groups run as tasks on the
    cluster (each writes its own files); else serially. Returns {"files": [paths],
    "cal": {name: path} (imaging), "sed_cal": {name: path}, "truth": json path, "bytes": total
    bytes written}.

    ``extra_sources`` (default None: none): injected point sources (make_mips_sky), the last
    entries of the truth catalogue; the truth JSON then also has "injected_sources": {"first":
    index of the first, "count"}.
    """
    from . import mips_sed
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    specs = list(specs) if specs is not None else plan_mips(aors=aors, seed=seed)
    sed_specs = list(sed_specs or [])
    keys = [s.aorkey for s in specs] + [s.aorkey for s in sed_specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"AORKEYs must be unique over imaging and SED AORs: {sorted(keys)}")
    cal_paths = write_calibration(outdir, seed=seed, calvers=calvers)
    cal = load_calibration(outdir / "cal")
    sed_cal_paths = mips_sed.write_sed_calibration(outdir, seed=seed, calvers=calvers, tilt=sed_tilt)
    sed_cal = mips_sed.load_sed_cal(outdir / "cal")
    sky = make_mips_sky(specs, seed=seed, extra_sources=extra_sources)
    groups = list(_groups(specs))
    sed_groups = list(mips_sed.sed_groups(sed_specs, GROUP_SIZE))
    kw = {"outdir": str(outdir), "seed": seed}
    if client is None:
        results = itertools.chain((_run_group(*g, cal=cal, sky=sky, **kw) for g in groups),
                                  (mips_sed.run_sed_group(*g, cal=sed_cal, **kw) for g in sed_groups))
    else:
        cal_f, sky_f = client.scatter([cal, sky], broadcast=True)
        futs = [client.submit(_run_group, *g, cal=cal_f, sky=sky_f, pure=False, **kw) for g in groups]
        if sed_groups:
            [sed_f] = client.scatter([sed_cal], broadcast=True)
            futs += [client.submit(mips_sed.run_sed_group, *g, cal=sed_f, pure=False, **kw) for g in sed_groups]
        if progress and futs:
            from ..progress import Progress, track
            with Progress(f"simulating MIPS into {outdir}", len(futs), unit="DCE groups") as bar:
                for _ in track(futs, bar):
                    pass
        results = (f.result() for f in futs)
    meta = _truth_meta(specs, sky, seed, calvers)
    if extra_sources is not None:
        k = len(np.asarray(extra_sources["ra"]))
        meta["injected_sources"] = {"first": len(sky.sources["ra"]) - k, "count": k}
    dces, files, nbytes = [], [], 0
    npz_path = outdir / "mips_truth.npz"
    with atomic_path(npz_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for entries, arrays, nb in results:
            key = entries[0]["npz"]["key"]
            for k, v in arrays.items():
                zip_array(zf, f"{key}_{k}", v)
            dces += entries
            files += [str(outdir / e["file"]) for e in entries]
            nbytes += nb
    meta["dces"] = dces
    if sed_specs:
        meta["sed"] = {str(s.aorkey): mips_sed.sed_truth(s, sed_cal) for s in sed_specs}
    truth = outdir / "mips_truth.json"
    atomic_write_text(truth, json.dumps(meta, indent=1), fsync=False)
    nbytes += sum(Path(p).stat().st_size for p in list(cal_paths.values()) + list(sed_cal_paths.values()))
    nbytes += truth.stat().st_size + npz_path.stat().st_size
    log.info("simulated %d MIPS DCEs in %d AORs (%.1f MB) into %s", len(files), len(specs) + len(sed_specs),
             nbytes / 1e6, outdir)
    return {"files": files, "cal": cal_paths, "sed_cal": sed_cal_paths, "truth": str(truth), "bytes": nbytes}
