"""Spitzer MIPS SED-mode simulator: raw SED DCEs, SED calibration files and truth (ICD §3).

The 70 um Ge:Ga array (32x32) behind a slit and a grating: rows y are the spectral axis,
columns x run along the slit. Rows and columns are 0-based. Centre wavelength of pixel
(y, x): lam_c = WAVE0 + DISP*y + TILT*(x - CENTCOL) [um].

Forward model (ICD §3; rate in DN/s, B in MJy/sr, F in Jy):
  rate(y, x) = resp(t) * [ B_L(lam_c) (1 + delta if OFF) / FLUXCONV(y) * ILLUM(y, x)
                           + (ON) F_L(lam_c) T(lam_c, w) G(x; u, lam_c) / (Omega*1e6) / FLUXCONV(y) * ILLUM(y, x)
                           + STIMFLSH * STIMAMP(y, x) ] + dark(y, x)
rows 27..31 also receive 0.3 * the same terms at lam_c/2 (second order; T and G at lam_c/2).
B_L, F_L: continuum (power laws) convolved with the LSF (Gaussian FWHM LSF_FWHM = 3.4 um,
Gauss-Hermite quadrature, see :func:`lsf_convolve`) plus Gaussian lines of FWHM 3.4 um with
the given peak (already LSF-convolved). T: fraction of the across-slit Gaussian (FWHM
18" lam/71 um) inside +-SLITW/2 for a source at w arcsec across the slit; G: fraction of the
along-slit Gaussian in column x for a source centred at column u (float).
The Ge ramp (nonlinearity, Poisson, cosmic rays with responsivity changes, read noise,
rounding, A/D clip, bias) is the 70 um imaging one (mips_detector.ge_ramp); columns 16..31
have NOISY_FACTOR times the read noise (sim: "too noisy to use").

Sequence (sim, ICD §3): cycle k = EXPID (0..n_cycles-1), DCENUM 0 stim flash at ON, 1 ON,
2 OFF, 3 ON, 4 OFF; with_stim=False: DCENUM 0 is an ON DCE without a flash; with_off=False:
no DCENUM 2 and 4. ON dither d = (0, +1, -1)[k % 3]: the commanded slit centre is the source
moved by -d*PXSCALE along the slit (+x at PA_SLIT), so the source sits in column CENTCOL + d.
OFF: the commanded ON centre moved CHOPTHRW across the slit (towards PA_SLIT + 90).
True slit centre = commanded + settle error (mips.SETTLE_SIGMA per axis); RA_REF/DEC_REF =
true + the 70 um pointing error (1.7" radial), as mips.dce_pointing. PA_REF = PA_SLIT - 90
(mod 360). Cadence: EXPTIME + SED_OVERHEAD s; MJD_OBS is the mid-time.
saturate_on=True adds SATURATE_MJYSR of slit-filling emission to every ON DCE (stim DCE
included), so every illuminated pixel clips at read 1 (read 0 is the reset level): bad input.

Calibration files (cal/mips70sed_*.fits) are the exact detector truth: see
:func:`make_sed_calibration` for the (sim) numbers. Default AOR (3 Jy at 70 um, 6 cycles of
10 s): noise-free S/N of the 5-column ON - OFF extraction 460-750 per row (test_mips_sed).

Truth (merged by mips.simulate_mips into mips_truth.json/npz): per DCE the imaging fields plus
mode 'sed', choppos, dither, source_column (true column of the source centre), source_w
(arcsec across the slit), pa_slit, chopthrw; npz K_flux [n, 32, 32] MJy/sr (sky_brightness),
K_rate [n, 32, 32] DN/s (noiseless, incl. dark and stim, mid-time responsivity, before CRs),
K_sat (first clipped read, NREADS if none); per AOR :func:`sed_truth`.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from scipy.special import erf

from . import mips_detector as det
from .mips_cal import (ARRAYS, BADFRAC, GE_NREADS, MIPS_SECOND, NOISY_FACTOR, PM_DEAD, PM_HOT,
                       PM_NOFLAT, PM_NOISY, READTIME_GE, _primary, atomic_writeto)
from .mips_dce import SCLK_EPOCH, SETTLE_SIGMA, _header, responsivity
from .mips_sky import _offset, _tangent

CHNL = 2
SHAPE = (32, 32)  # (rows = spectral, columns = along the slit)
NROWS, NCOLS = 27, 16  # calibrated window: rows 0..26, columns 0..15
WAVE0, DISP = 53.65, 1.7  # um, um per row
CENTCOL, PXSCALE, SLITW = 7.0, 9.98, 19.96  # column, arcsec per column, arcsec
LSF_FWHM = 3.4  # um (2.0 rows)
PSF_FWHM_70 = 18.0  # arcsec at 71 um; FWHM(lam) = 18" * lam / 71 um
ARCSEC_RAD = 206264.806
OMEGA_SR = SLITW * PXSCALE / ARCSEC_RAD ** 2  # slit pixel solid angle, sr
SECOND_ORDER = 0.3  # fraction of the lam_c/2 light on rows 27..31
PM_OUTSIDE = 16  # pmask bit: outside the calibrated window
FLUXCONV_RANGE = (0.6, 1.2)  # (sim) MJy/sr per DN/s, rows 0 -> 31, linear
ILLUM_SLIT_SIGMA = 20.0  # (sim) columns, Gaussian slit illumination about CENTCOL
ILLUM_BLAZE = 0.06  # (sim) row modulation amplitude of the illumination
ILLUM_PIXEL = 0.05  # (sim) pixel-to-pixel response scatter
SED_OVERHEAD = 1.0  # (sim) s between DCEs
SATURATE_MJYSR = 1.0e7  # (sim) slit-filling emission added to ON DCEs when saturate_on
DITHERS = (0, 1, -1)
SEED_TAG = 11  # separates the SED random streams from the imaging ones
SED_FILES = {"DARK": "mips70sed_dark.fits", "ILLUM": "mips70sed_illum.fits",
             "NONLIN": "mips70sed_nonlin.fits", "PMASK": "mips70sed_pmask.fits",
             "CAL": "mips70sed_cal.fits", "WAVE": "mips70sed_wave.fits"}
DEFAULT_LINES = (("[N III]", 57.34, 1.0), ("[O I]", 63.18, 0.8), ("[O III]", 88.36, 2.5))


@dataclass(frozen=True)
class SedSpec:
    """One SED AOR. Source at (ra, dec) deg; spectrum F = continuum_jy (lam/70)^alpha Jy plus
    lines (name, um, peak Jy after the LSF); background B = background_70 (lam/70)^1.5 MJy/sr plus
    extended lines ``background_lines`` (name, um, peak MJy/sr after the LSF),
    (1 + off_delta) at the OFF position; chopthrw arcsec across the slit; pa_slit deg E of N."""

    aorkey: int
    object: str
    ra: float
    dec: float
    start_mjd: float
    n_cycles: int = 6
    exptime: float = 10.0  # MIPS-s: 3 -> 24 reads, 10 -> 80 reads
    chopthrw: float = 60.0
    pa_slit: float = 30.0
    continuum_jy: float = 3.0
    alpha: float = 1.0
    lines: tuple = DEFAULT_LINES
    background_70: float = 15.0
    background_lines: tuple = ()  # extended lines (name, um, peak MJy/sr after the LSF), filling the slit
    off_delta: float = 0.01
    with_stim: bool = True
    with_off: bool = True
    saturate_on: bool = False
    progid: int = 40


def plan_sed(n=1, *, seed=0, start_mjd=53500.5) -> list[SedSpec]:
    """``n`` SED AORs with the default spectrum, 0.1 d apart, random position and PA_SLIT; AORKEYs 40_000_000 + 1000 i + r
    (r < 1000), a range plan_mips (10_000_000 + 1000 i + r) does not reach below 30000 AORs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SEED_TAG, 1]))
    return [SedSpec(aorkey=40_000_000 + 1000 * i + int(rng.integers(0, 1000)), object=f"SIMSED-{i + 1}",
                    ra=float(rng.uniform(0, 360)), dec=float(rng.uniform(-60, 60)),
                    start_mjd=start_mjd + 0.1 * i, pa_slit=float(rng.uniform(0, 360)))
            for i in range(n)]


# ---------------------------------------------------------------- spectra and profiles

def _gauss_sigma(fwhm):
    return fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))


_GH_X, _GH_W = np.polynomial.hermite.hermgauss(40)


def lsf_convolve(func, lam, fwhm=LSF_FWHM):
    """(func * Gaussian LSF of FWHM ``fwhm`` um)(lam) by 40-point Gauss-Hermite quadrature
    (exact for polynomials of degree < 80; power laws over 25-110 um to ~1e-15, checked
    against adaptive quadrature). lam um, any shape."""
    lam = np.asarray(lam, float)
    t = np.sqrt(2.0) * _gauss_sigma(fwhm) * _GH_X
    vals = func(np.clip(lam[..., None] + t, 1e-3, None))
    return np.sum(vals * _GH_W, axis=-1) / np.sqrt(np.pi)


def _lines(lines, lam):
    s = _gauss_sigma(LSF_FWHM)
    out = np.zeros(np.shape(lam))
    for _, l0, peak in lines:
        out = out + peak * np.exp(-0.5 * ((np.asarray(lam, float) - l0) / s) ** 2)
    return out


def source_spectrum(spec, lam):
    """F_L(lam) [Jy]: LSF-convolved continuum plus lines of the point source; lam um."""
    cont = lsf_convolve(lambda v: spec.continuum_jy * (v / 70.0) ** spec.alpha, lam)
    return cont + _lines(spec.lines, lam)


def background_spectrum(spec, lam):
    """B_L(lam) [MJy/sr]: LSF-convolved background continuum plus the extended lines ``background_lines``
    (ON position; OFF: times 1 + off_delta)."""
    return lsf_convolve(lambda v: spec.background_70 * (v / 70.0) ** 1.5, lam) + _lines(spec.background_lines, lam)


def profile_sigma(lam):
    """Sigma [arcsec] of the Gaussian point-source profile along and across the slit at lam um."""
    return _gauss_sigma(PSF_FWHM_70 * np.asarray(lam, float) / 71.0)


def _phi(z):
    return 0.5 * (1.0 + erf(z / np.sqrt(2.0)))


def slit_fraction(lam, w, slitw=SLITW):
    """T(lam, w): fraction of the across-slit profile inside +-slitw/2, source at w arcsec."""
    s = profile_sigma(lam)
    return _phi((slitw / 2.0 - w) / s) - _phi((-slitw / 2.0 - w) / s)


def column_fraction(x, u, lam, pxscale=PXSCALE):
    """G(x; u, lam): fraction of the along-slit profile (centre at column u) in column x."""
    s = profile_sigma(lam) / pxscale
    x = np.asarray(x, float)
    return _phi((x + 0.5 - u) / s) - _phi((x - 0.5 - u) / s)


def apcorr(wave, *, slitw=SLITW, pxscale=PXSCALE, width=5):
    """APCORR(lam) = 1 / (T(lam, 0) * sum over ``width`` columns of G) for a source centred on
    a column centre (so the aperture is symmetric); wave um, any shape."""
    wave = np.asarray(wave, float)
    h = width // 2
    g = sum(column_fraction(k, 0.0, wave, pxscale) for k in range(-h, h + 1))
    return 1.0 / (slit_fraction(wave, 0.0, slitw) * g)


def pixel_wavelengths(wave0, disp, tilt, centcol, shape=SHAPE):
    """lam_c(y, x) [um], (ny, nx)."""
    y, x = np.indices(shape, dtype=float)
    return wave0 + disp * y + tilt * (x - centcol)


# ---------------------------------------------------------------- calibration files

def make_sed_calibration(*, seed=0, tilt=0.02):
    """Arrays and constants of the SED calibration (the simulated detector's truth).

    (sim): FLUXCONV(y) linear from 0.6 (row 0) to 1.2 (row 31) MJy/sr per DN/s; ILLUM =
    exp(-0.5 ((x - CENTCOL)/20)^2) * (1 + 0.06 sin(pi y / 31)) * N(1, 0.05) per pixel, 0 for
    dead pixels, normalised to mean 1 over the window (rows 0..26, columns 0..15) pixels with
    ILLUM > 0; dark N(5, 0.5) DN/s (hot pixels x20); STIMAMP 3000 N(1, 0.08) DN/s (0 where
    dead); nonlinearity as 70 um imaging; bad pixels with the 70 um fractions; GAIN, RDNOISE,
    SATLEVEL as mips70_cal."""
    a = ARRAYS[CHNL]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, CHNL, SEED_TAG]))
    ny, nx = SHAPE
    pm = np.zeros(SHAPE, np.int16)
    u = rng.random(SHAPE)
    fd, fh, fn = BADFRAC[CHNL]
    pm[u < fd] |= PM_DEAD | PM_NOFLAT
    pm[(u >= fd) & (u < fd + fh)] |= PM_HOT
    pm[(u >= fd + fh) & (u < fd + fh + fn)] |= PM_NOISY
    y, x = np.indices(SHAPE, dtype=float)
    illum = (np.exp(-0.5 * ((x - CENTCOL) / ILLUM_SLIT_SIGMA) ** 2) * (1 + ILLUM_BLAZE * np.sin(np.pi * y / 31))
             * rng.normal(1.0, ILLUM_PIXEL, SHAPE))
    illum[pm & PM_DEAD > 0] = 0.0
    window = np.zeros(SHAPE, bool)
    window[:NROWS, :NCOLS] = True
    illum /= illum[window & (illum > 0)].mean()
    pm[~window] |= PM_OUTSIDE
    dark = np.clip(rng.normal(a.dark, 0.1 * a.dark, SHAPE), 0, None)
    dark[pm & PM_HOT > 0] *= 20.0
    stimamp = a.stimamp * rng.normal(1.0, 0.08, SHAPE) * (illum > 0)
    c2 = a.nonlin[0] * rng.normal(1.0, 0.1, SHAPE)
    c3 = a.nonlin[1] * rng.uniform(0.5, 1.5, SHAPE)
    fluxconv = np.linspace(*FLUXCONV_RANGE, ny)
    rows = np.arange(NROWS)
    wave = WAVE0 + DISP * rows
    return {"dark": dark.astype(np.float32), "illum": illum.astype(np.float32), "pmask": pm,
            "nonlin": np.stack([np.ones(SHAPE), c2, c3]).astype(np.float32),
            "stimamp": stimamp.astype(np.float32), "fluxconv": fluxconv.astype(np.float32),
            "gain": a.gain, "rdnoise": a.rdnoise, "satlevel": a.satlevel,
            "wave0": WAVE0, "disp": DISP, "tilt": float(tilt), "centcol": CENTCOL, "pxscale": PXSCALE,
            "slitw": SLITW, "apcorr_row": rows, "apcorr_wave": wave, "apcorr": apcorr(wave)}


def write_sed_calibration(outdir, *, seed=0, calvers="sim-1", tilt=0.02) -> dict:
    """Write OUTDIR/cal/mips70sed_{dark,illum,nonlin,pmask,cal,wave}.fits (ICD §3); return
    {file name: path}."""
    c = make_sed_calibration(seed=seed, tilt=tilt)
    caldir = Path(outdir) / "cal"
    caldir.mkdir(parents=True, exist_ok=True)
    dark = _primary(CHNL, "DARK", calvers, c["dark"])
    dark.header["BUNIT"] = "DN/s"
    illum = _primary(CHNL, "ILLUM", calvers, c["illum"])
    illum.header["COMMENT"] = "mean 1 over rows 0..26 x columns 0..15 with ILLUM > 0; 0 = dead"
    nl = _primary(CHNL, "NONLIN", calvers, c["nonlin"])
    nl.header["COMMENT"] = "linear DN = sum_k C[k-1]*d**k, d = read - first read (DN)"
    pm = _primary(CHNL, "PMASK", calvers, c["pmask"])
    for bit, name in ((0, "dead"), (1, "hot"), (2, "noisy"), (3, "no flat"), (4, "outside window")):
        pm.header[f"BIT{bit:02d}"] = (name, f"value {1 << bit}")
    cal = _primary(CHNL, "CAL", calvers)
    cal.header["GAIN"] = (c["gain"], "[e-/DN]")
    cal.header["RDNOISE"] = (c["rdnoise"], "[DN] per read")
    cal.header["SATLEVEL"] = (c["satlevel"], "[DN] A/D limit")
    fc = fits.ImageHDU(c["fluxconv"], name="FLUXCONV")
    fc.header["BUNIT"] = ("MJy/sr/(DN/s)", "per row, nominal responsivity, slit-filling")
    st = fits.ImageHDU(c["stimamp"], name="STIMAMP")
    st.header["BUNIT"] = ("DN/s", "stim signal at nominal responsivity")
    wv = _primary(CHNL, "WAVE", calvers)
    for k, unit in (("WAVE0", "um"), ("DISP", "um per row"), ("TILT", "um per column"),
                    ("CENTCOL", "0-based slit-centre column"), ("PXSCALE", "arcsec per column"),
                    ("SLITW", "arcsec, slit width")):
        wv.header[k] = (float(c[k.lower()]), unit)
    tab = fits.BinTableHDU.from_columns([
        fits.Column(name="ROW", format="I", array=c["apcorr_row"].astype(np.int16)),
        fits.Column(name="WAVE", format="E", unit="um", array=c["apcorr_wave"].astype(np.float32)),
        fits.Column(name="APCORR", format="E", array=c["apcorr"].astype(np.float32))], name="APCORR")
    hduls = {"DARK": [dark], "ILLUM": [illum], "NONLIN": [nl], "PMASK": [pm], "CAL": [cal, fc, st],
             "WAVE": [wv, tab]}
    return {SED_FILES[k]: str(atomic_writeto(fits.HDUList(h), caldir / SED_FILES[k]))
            for k, h in hduls.items()}


def load_sed_cal(caldir) -> dict:
    """Read the SED reference files back into the dict make_sed_calibration returns (plus calvers)."""
    caldir = Path(caldir)
    c = {"dark": fits.getdata(caldir / SED_FILES["DARK"]), "illum": fits.getdata(caldir / SED_FILES["ILLUM"]),
         "nonlin": fits.getdata(caldir / SED_FILES["NONLIN"]), "pmask": fits.getdata(caldir / SED_FILES["PMASK"])}
    with fits.open(caldir / SED_FILES["CAL"]) as hd:
        for k in ("GAIN", "RDNOISE", "SATLEVEL", "CALVERS"):
            c[k.lower()] = hd[0].header[k]
        c["fluxconv"] = hd["FLUXCONV"].data.copy()
        c["stimamp"] = hd["STIMAMP"].data.copy()
    with fits.open(caldir / SED_FILES["WAVE"]) as hd:
        for k in ("WAVE0", "DISP", "TILT", "CENTCOL", "PXSCALE", "SLITW"):
            c[k.lower()] = float(hd[0].header[k])
        t = hd["APCORR"].data
        c["apcorr_row"], c["apcorr_wave"], c["apcorr"] = (np.array(t[k]) for k in ("ROW", "WAVE", "APCORR"))
    return c


# ---------------------------------------------------------------- observing sequence

def nreads(spec):
    return GE_NREADS[int(round(spec.exptime))]


def dce_duration(spec):
    """Seconds between DCE starts."""
    return spec.exptime * MIPS_SECOND + SED_OVERHEAD


def sequence(spec):
    """The AOR's DCEs in time order: list of (expid, dcenum, choppos, stim, dither)."""
    out = []
    for k in range(spec.n_cycles):
        d = DITHERS[k % 3]
        for dcenum, pos in enumerate(("ON", "ON", "OFF", "ON", "OFF")):
            if pos == "OFF" and not spec.with_off:
                continue
            out.append((k, dcenum, pos, dcenum == 0 and spec.with_stim, d))
    return out


def raw_name(spec, expid, dcenum):
    return f"SPITZER_M{CHNL}_{spec.aorkey}_{int(expid):04d}_{int(dcenum):04d}_raw.fits"


def _rngs(seed, spec, index):
    ss = np.random.SeedSequence([seed, spec.aorkey, CHNL, index, SEED_TAG])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def _along_across(pa):
    """Unit (east, north) vectors of the slit +x direction (PA) and of +w (PA + 90)."""
    p = np.radians(pa)
    return (np.sin(p), np.cos(p)), (np.cos(p), -np.sin(p))


def dce_pointing(spec, index, *, seed=0):
    """Slit-centre pointing of DCE ``index``: dict ra_rqst, dec_rqst (commanded), ra, dec (true),
    ra_ref, dec_ref (reconstructed) deg, and the source's true position in the slit:
    source_column (float column), source_w (arcsec across the slit, +w towards PA_SLIT + 90)."""
    expid, dcenum, pos, stim, d = sequence(spec)[index]
    (ae, an), (ce, cn) = _along_across(spec.pa_slit)
    s = -d * PXSCALE
    ra_c, dec_c = _offset(spec.ra, spec.dec, s * ae, s * an)
    if pos == "OFF":
        ra_c, dec_c = _offset(ra_c, dec_c, spec.chopthrw * ce, spec.chopthrw * cn)
    r_point = _rngs(seed, spec, index)[0]
    ra_t, dec_t = _offset(ra_c, dec_c, *r_point.normal(0, SETTLE_SIGMA, 2))
    ra_r, dec_r = _offset(ra_t, dec_t, *r_point.normal(0, ARRAYS[CHNL].pointing_sigma / np.sqrt(2), 2))
    e, n, _ = _tangent(ra_t, dec_t, spec.ra, spec.dec)
    return {"ra_rqst": float(ra_c), "dec_rqst": float(dec_c), "ra": float(ra_t), "dec": float(dec_t),
            "ra_ref": float(ra_r), "dec_ref": float(dec_r),
            "source_column": float(CENTCOL + (e * ae + n * an) / PXSCALE), "source_w": float(e * ce + n * cn)}


def dce_times(spec, index):
    """(MJD mid-time, SCLK s) of DCE ``index``."""
    mjd = spec.start_mjd + (index + 0.5) * dce_duration(spec) / 86400.0
    return float(mjd), float((Time(mjd, format="mjd", scale="utc") - SCLK_EPOCH).sec)


# ---------------------------------------------------------------- forward model

def sky_brightness(spec, cal, *, choppos, source_column, source_w):
    """Surface brightness [MJy/sr] (32, 32) each pixel receives (background with the OFF delta,
    point source when ON, second order on rows 27..31; saturate_on glare when ON), the term the
    forward model divides by FLUXCONV(y) and multiplies by ILLUM."""
    lam = pixel_wavelengths(cal["wave0"], cal["disp"], cal["tilt"], cal["centcol"])
    x = np.broadcast_to(np.arange(SHAPE[1], dtype=float), SHAPE)
    bfac = 1.0 + spec.off_delta if choppos == "OFF" else 1.0

    def order(lm):
        b = background_spectrum(spec, lm) * bfac
        if choppos == "ON":
            src = (source_spectrum(spec, lm) * slit_fraction(lm, source_w, cal["slitw"])
                   * column_fraction(x, source_column, lm, cal["pxscale"]))
            b = b + src / (OMEGA_SR * 1e6)
        return b

    bright = order(lam)
    bright[NROWS:] += SECOND_ORDER * order(lam / 2.0)[NROWS:]
    if spec.saturate_on and choppos == "ON":
        bright = bright + SATURATE_MJYSR
    return bright


def simulate_sed_dce(spec: SedSpec, index: int, *, cal, seed):
    """One raw SED DCE: (HDUList, truth dict with JSON-able fields and "arrays": flux [MJy/sr],
    rate [DN/s, noiseless, incl. dark and stim, mid-time responsivity, before CRs], sat [first
    clipped read, NREADS if none])."""
    if not isinstance(cal, dict):
        cal = load_sed_cal(cal)
    expid, dcenum, pos, stim, d = sequence(spec)[index]
    pt = dce_pointing(spec, index, seed=seed)
    mjd, sclk = dce_times(spec, index)
    _, r_noise, r_cr = _rngs(seed, spec, index)
    resp = float(responsivity(CHNL, mjd, seed=seed))
    bright = sky_brightness(spec, cal, choppos=pos, source_column=pt["source_column"], source_w=pt["source_w"])
    sky_rate = bright / cal["fluxconv"][:, None] * cal["illum"]
    photon = resp * (sky_rate + (cal["stimamp"] if stim else 0.0))
    nr = nreads(spec)
    rdn = np.where(cal["pmask"] & PM_NOISY, NOISY_FACTOR, 1.0) * cal["rdnoise"]
    rdn[:, NCOLS:] = NOISY_FACTOR * cal["rdnoise"]
    crs = det.draw_crs(r_cr, SHAPE, nr, nr * READTIME_GE, det.CR_RATE_GE, det.CR_AMP_GE, resp_change=True)
    bias = ARRAYS[CHNL].bias + r_noise.normal(0, 300.0, SHAPE)
    reads, first = det.ge_ramp(r_noise, photon, cal["dark"], rdn, bias, cal["nonlin"], crs, nreads=nr,
                               readtime=READTIME_GE, gain=cal["gain"], satlevel=cal["satlevel"])
    pa_ref = (spec.pa_slit - 90.0) % 360.0
    tr = {"file": raw_name(spec, expid, dcenum), "chnl": CHNL, "aorkey": spec.aorkey, "expid": expid,
          "dcenum": dcenum, "index": index, "mjd": mjd, "ra": pt["ra"], "dec": pt["dec"], "pa": pa_ref,
          "ra_ref": pt["ra_ref"], "dec_ref": pt["dec_ref"], "ra_rqst": pt["ra_rqst"], "dec_rqst": pt["dec_rqst"],
          "leg_offset": 0.0, "movers": [], "exptime": nr * READTIME_GE, "nreads": nr, "stim": bool(stim),
          "resp": resp, "droop": 0.0, "jailbar": 0.0, "n_sat": int((first < nr).sum()), "crs": crs,
          "mode": "sed", "choppos": pos, "dither": d, "source_column": pt["source_column"],
          "source_w": pt["source_w"], "pa_slit": float(spec.pa_slit), "chopthrw": float(spec.chopthrw),
          "arrays": {"flux": bright.astype(np.float32), "rate": (photon + cal["dark"]).astype(np.float32),
                     "sat": first}}
    aor = types.SimpleNamespace(aorkey=spec.aorkey, aot_type="MipsSed", object=spec.object,
                                progid=spec.progid, pa=pa_ref)
    h = _header(aor, CHNL, index, {"sclk": {index: sclk}}, tr, cal)
    h.set("CHOPPOS", pos, "scan-mirror chop position", after="STIMFLSH")
    h.set("CHOPTHRW", float(spec.chopthrw), "[arcsec] chop throw across the slit", after="CHOPPOS")
    h.set("PA_SLIT", float(spec.pa_slit), "[deg] PA of the slit +x direction, E of N", after="CHOPTHRW")
    for k, what in (("RA_RQST", "commanded"), ("DEC_RQST", "commanded"), ("RA_REF", "reconstructed"),
                    ("DEC_REF", "reconstructed")):
        h.comments[k] = f"[deg] {what} slit centre"
    h.comments["PA_REF"] = "[deg] PA of array +y = PA_SLIT - 90, E of N"
    h["ORIGIN"] = ("skyreduce simulator", "reduce.simulate.mips_sed")
    return fits.HDUList([fits.PrimaryHDU(reads, header=h)]), tr


def sed_truth(spec, cal) -> dict:
    """meta["sed"][str(aorkey)] of mips_truth.json: constants, the rectified row wavelengths
    and the LSF-convolved source spectrum [Jy] and background [MJy/sr] there."""
    rows = np.arange(NROWS)
    wave = cal["wave0"] + cal["disp"] * rows
    return {"wave0": cal["wave0"], "disp": cal["disp"], "tilt": cal["tilt"], "centcol": cal["centcol"],
            "pxscale": cal["pxscale"], "slitw": cal["slitw"], "rows": rows.tolist(),
            "wavelength": [float(v) for v in wave],
            "flux_density_jy": [float(v) for v in source_spectrum(spec, wave)],
            "background_mjysr": [float(v) for v in background_spectrum(spec, wave)],
            "off_delta": spec.off_delta, "lines": [list(v) for v in spec.lines],
            "spec": dataclasses.asdict(spec)}


def sed_groups(specs, group_size=100):
    """(spec, first, stop) DCE-index groups of the SED AORs (one npz key each)."""
    for s in specs:
        n = len(sequence(s))
        for first in range(0, n, group_size):
            yield s, first, min(first + group_size, n)


def run_sed_group(spec, first, stop, *, outdir, cal, seed):
    """Simulate and write SED DCEs first..stop-1 of one AOR; return (truth entries, stacked
    arrays, bytes written), as mips._run_group."""
    entries, arrays, nbytes = [], {}, 0
    for i in range(first, stop):
        hdul, tr = simulate_sed_dce(spec, i, cal=cal, seed=seed)
        path = atomic_writeto(hdul, Path(outdir) / tr["file"])
        nbytes += path.stat().st_size
        for k, v in tr.pop("arrays").items():
            arrays.setdefault(k, []).append(v)
        tr["npz"] = {"key": f"M{CHNL}_{spec.aorkey}_{first:05d}", "index": i - first}
        entries.append(tr)
    return entries, {k: np.stack(v) for k, v in arrays.items()}, nbytes
