"""MIPS array definitions and calibration reference files (ICD §2, "Calibration reference files").

The simulated detectors are *exactly* described by the files written here: the
simulator reads them back (:func:`load_calibration`) and uses them as the truth
of its forward model, so a pipeline that applies them perfectly recovers the
truth. Numbers marked (sim) are our choices where the public record gives none
(see ``shared/INSTRUMENTS.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from reduce.io.atomic import atomic_write_fits
from reduce.io.fitsio import add_checksums

SAMPTIME_SI = 0.524288  # s, one 24 um sample
READTIME_GE = 0.131072  # s, Ge read interval
MIPS_SECOND = 1.048576  # s
GE_NREADS = {3: 24, 4: 32, 10: 80}  # MIPS-s -> reads per Ge DCE


@dataclass(frozen=True)
class ArrayDef:
    """One MIPS array: geometry, detector and calibration constants."""

    chnl: int
    band: int  # um
    shape: tuple  # (ny, nx)
    pxscal: tuple  # arcsec/pixel along x, y
    gain: float  # e-/DN
    rdnoise: float  # DN per read (24 um: per sample)
    fluxconv: float  # MJy/sr per DN/s at nominal responsivity
    satlevel: float  # DN (24 um: DN/sample first-difference threshold)
    dark: float  # DN/s, mean dark rate
    fwhm: float  # arcsec, Gaussian PSF
    pointing_sigma: float  # arcsec, 1 sigma radial RA_REF error
    sip: dict  # SIP A/B coefficients, order 2
    fp_offset: float  # arcsec along array +y of the array centre from the boresight (scan maps)
    stimamp: float = 0.0  # DN/s, mean stim signal (Ge)
    nonlin: tuple = ()  # mean (c2, c3) of the nonlinearity polynomial (Ge)
    bias: float = 0.0  # DN, mean first-read level (Ge)


ARRAYS = {
    1: ArrayDef(1, 24, (128, 128), (2.55, 2.55), gain=5.1, rdnoise=8.0, fluxconv=0.0447,
                satlevel=600.0, dark=1.5, fwhm=6.0, pointing_sigma=1.4,
                sip={"A_2_0": 1.2e-5, "A_1_1": -6e-6, "A_0_2": 4e-6,
                     "B_2_0": -5e-6, "B_1_1": 9e-6, "B_0_2": 1.1e-5},
                fp_offset=-150.0),
    2: ArrayDef(2, 70, (32, 32), (9.85, 9.85), gain=7.1, rdnoise=15.0, fluxconv=0.05,
                satlevel=32767.0, dark=5.0, fwhm=18.0, pointing_sigma=1.7,
                sip={"A_2_0": 1.5e-4, "A_1_1": -8e-5, "A_0_2": 6e-5,
                     "B_2_0": -7e-5, "B_1_1": 1.2e-4, "B_0_2": 1.6e-4},
                fp_offset=0.0, stimamp=3000.0, nonlin=(3.0e-6, 1.0e-11), bias=-28000.0),
    3: ArrayDef(3, 160, (2, 20), (16.0, 18.0), gain=7.1, rdnoise=15.0, fluxconv=0.1,
                satlevel=32767.0, dark=10.0, fwhm=40.0, pointing_sigma=3.9,
                sip={"A_2_0": 4e-4, "A_1_1": -2e-4, "A_0_2": 1e-4,
                     "B_2_0": -3e-4, "B_1_1": 2e-4, "B_0_2": 2e-4},
                fp_offset=150.0, stimamp=3000.0, nonlin=(2.5e-6, 1.5e-11), bias=-28000.0),
}
# (sim): gains 5.1/7.1/7.1, 24 um FLUXCONV 0.0447, pixel scales, pointing sigmas and
# 24 um dark 1.5 DN/s are from INSTRUMENTS.md; read noises, 70/160 FLUXCONV (0.05, 0.1),
# Ge darks, stim amplitudes, nonlinearity, bias levels, SIP terms and offsets are (sim).
DROOP = 0.33  # (sim) R: every 24 um pixel gains R * mean true signal
JAILBAR = 5.0e-4  # (sim) readout-4 offset [DN/s] per DN/s of bright signal in that readout
JBTHRESH = 200.0  # (sim) DN/s above the array median that counts as "bright" for the jailbar
BADFRAC = {1: (0.002, 0.002, 0.002), 2: (0.02, 0.01, 0.01), 3: (0.025, 0.0, 0.025)}  # dead, hot, noisy
PM_DEAD, PM_HOT, PM_NOISY, PM_NOFLAT = 1, 2, 4, 8
NOISY_FACTOR = 4.0  # (sim) read noise multiplier of noisy pixels


def cal_names(chnl):
    """File base names of one array's reference files, keyed by REFTYPE-ish short name."""
    band = ARRAYS[chnl].band
    names = ["dark", "flat", "pmask", "distortion", "cal"] + (["nonlin"] if chnl > 1 else [])
    return {n: f"mips{band}_{n}.fits" for n in names}


def atomic_writeto(hdul, path):
    """Write ``hdul`` to ``path`` with CHECKSUM and DATASUM in every HDU (ICD 1.1), via a temporary
    file in the same folder and os.replace."""
    return atomic_write_fits(add_checksums(hdul), path)


def _primary(chnl, reftype, calvers, data=None):
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    h["TELESCOP"] = ("Spitzer", "observatory")
    h["INSTRUME"] = ("MIPS", "instrument")
    h["CHNLNUM"] = (chnl, "1=24um 2=70um 3=160um")
    h["REFTYPE"] = (reftype, "calibration reference type")
    h["CALVERS"] = (calvers, "calibration set version")
    h["ORIGIN"] = ("skyreduce simulator", "written by reduce.simulate.mips_cal")
    return hdu


def _bad_pixels(rng, a):
    """int16 [ny, nx] permanent bad-pixel bits: dead (+no flat), hot, noisy."""
    ny, nx = a.shape
    pm = np.zeros((ny, nx), np.int16)
    u = rng.random((ny, nx))
    fd, fh, fn = BADFRAC[a.chnl]
    pm[u < fd] |= PM_DEAD | PM_NOFLAT
    pm[(u >= fd) & (u < fd + fh)] |= PM_HOT
    pm[(u >= fd + fh) & (u < fd + fh + fn)] |= PM_NOISY
    return pm


def make_calibration(chnl, *, seed=0):
    """Arrays of one array's calibration (the simulated detector's truth).

    Returns dict: dark [DN/s], flat, pmask (int16), stimamp [DN/s] (Ge), nonlin [K, ny, nx] (Ge).
    """
    a = ARRAYS[chnl]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, chnl, 1]))
    ny, nx = a.shape
    pm = _bad_pixels(rng, a)
    good = pm == 0
    flat = rng.normal(1.0, 0.02 if chnl == 1 else 0.05, (ny, nx))
    flat[pm & PM_DEAD > 0] = 0.0
    flat /= flat[good].mean()
    dark = np.clip(rng.normal(a.dark, 0.1 * a.dark, (ny, nx)), 0, None)
    dark[pm & PM_HOT > 0] *= 20.0
    out = {"dark": dark.astype(np.float32), "flat": flat.astype(np.float32), "pmask": pm}
    if chnl > 1:
        out["stimamp"] = (a.stimamp * rng.normal(1.0, 0.08, (ny, nx)) * (flat > 0)).astype(np.float32)
        c2 = a.nonlin[0] * rng.normal(1.0, 0.1, (ny, nx))
        c3 = a.nonlin[1] * rng.uniform(0.5, 1.5, (ny, nx))
        out["nonlin"] = np.stack([np.ones((ny, nx)), c2, c3]).astype(np.float32)
    return out


def distortion_header(chnl):
    """fits.Header of the TAN-SIP distortion file (CRVAL placeholders 0)."""
    a = ARRAYS[chnl]
    ny, nx = a.shape
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"] = 0.0, 0.0
    h["CRPIX1"] = ((nx + 1) / 2.0, "array centre, x")
    h["CRPIX2"] = ((ny + 1) / 2.0, "array centre, y")
    h["PXSCAL1"] = (a.pxscal[0], "[arcsec/pixel] along x")
    h["PXSCAL2"] = (a.pxscal[1], "[arcsec/pixel] along y")
    h["A_ORDER"], h["B_ORDER"] = 2, 2
    for k, v in a.sip.items():
        h[k] = v
    return h


def array_wcs(dist_header, ra, dec, pa):
    """astropy WCS of an array whose centre (CRPIX) is at (ra, dec) deg with +y at PA deg E of N."""
    s1, s2 = dist_header["PXSCAL1"], dist_header["PXSCAL2"]
    c, s = np.cos(np.radians(pa)), np.sin(np.radians(pa))
    h = fits.Header()
    for k in ("WCSAXES", "CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "A_ORDER", "B_ORDER"):
        h[k] = dist_header[k]
    for k in dist_header:
        if k[:2] in ("A_", "B_") and k[2:3].isdigit():
            h[k] = dist_header[k]
    h["CRVAL1"], h["CRVAL2"] = float(ra), float(dec)
    h["CD1_1"], h["CD1_2"] = -s1 * c / 3600.0, s2 * s / 3600.0
    h["CD2_1"], h["CD2_2"] = s1 * s / 3600.0, s2 * c / 3600.0
    h["RADESYS"] = "ICRS"
    return WCS(h)


def _cal_hdul(chnl, arrays, calvers):
    a = ARRAYS[chnl]
    p = _primary(chnl, "CAL", calvers)
    h = p.header
    h["FLUXCONV"] = (a.fluxconv, "[MJy/sr per DN/s] at nominal responsivity")
    h["GAIN"] = (a.gain, "[e-/DN]")
    h["RDNOISE"] = (a.rdnoise, "[DN] per read" if chnl > 1 else "[DN] per sample")
    h["SATLEVEL"] = (a.satlevel, "[DN] A/D limit" if chnl > 1 else "[DN/sample] first-diff threshold")
    hdus = [p]
    if chnl == 1:
        h["DROOP"] = (DROOP, "droop R: DN/s per DN/s of mean array signal")
        h["JAILBAR"] = (JAILBAR, "readout-4 offset per DN/s of bright signal")
        h["JBTHRESH"] = (JBTHRESH, "[DN/s] bright = above array median + this")
    else:
        st = fits.ImageHDU(arrays["stimamp"], name="STIMAMP")
        st.header["BUNIT"] = ("DN/s", "stim signal at nominal responsivity")
        hdus.append(st)
    return fits.HDUList(hdus)


def write_calibration(outdir, *, seed=0, calvers="sim-1"):
    """Write OUTDIR/cal/mips{24,70,160}_*.fits; return {file name: path}."""
    caldir = Path(outdir) / "cal"
    caldir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for chnl in ARRAYS:
        arr = make_calibration(chnl, seed=seed)
        names = cal_names(chnl)
        hduls = {
            "dark": fits.HDUList([_primary(chnl, "DARK", calvers, arr["dark"])]),
            "flat": fits.HDUList([_primary(chnl, "FLAT", calvers, arr["flat"])]),
            "pmask": fits.HDUList([_primary(chnl, "PMASK", calvers, arr["pmask"])]),
            "cal": _cal_hdul(chnl, arr, calvers),
        }
        hduls["dark"][0].header["BUNIT"] = "DN/s"
        pm = hduls["pmask"][0].header
        for bit, name in ((0, "dead"), (1, "hot"), (2, "noisy"), (3, "no flat")):
            pm[f"BIT{bit:02d}"] = (name, f"value {1 << bit}")
        dist = _primary(chnl, "DISTORT", calvers)
        dist.header.extend(distortion_header(chnl))
        hduls["distortion"] = fits.HDUList([dist])
        if chnl > 1:
            nl = _primary(chnl, "NONLIN", calvers, arr["nonlin"])
            nl.header["COMMENT"] = "linear DN = sum_k C[k-1]*d**k, d = read - first read (DN)"
            hduls["nonlin"] = fits.HDUList([nl])
        for key, name in names.items():
            paths[name] = str(atomic_writeto(hduls[key], caldir / name))
    return paths


def load_calibration(caldir):
    """Read the reference files back: {chnl: {dark, flat, pmask, nonlin, stimamp, header values, dist}}."""
    caldir = Path(caldir)
    cal = {}
    for chnl in ARRAYS:
        names = cal_names(chnl)
        c = {}
        for key in ("dark", "flat", "pmask", "nonlin"):
            if key in names:
                c[key] = fits.getdata(caldir / names[key])
        with fits.open(caldir / names["cal"]) as hd:
            h = hd[0].header
            for k in ("FLUXCONV", "GAIN", "RDNOISE", "SATLEVEL", "DROOP", "JAILBAR", "JBTHRESH",
                      "CALVERS"):
                if k in h:
                    c[k.lower()] = h[k]
            if chnl > 1:
                c["stimamp"] = hd["STIMAMP"].data.copy()
        c["dist"] = fits.getheader(caldir / names["distortion"])
        cal[chnl] = c
    return cal
