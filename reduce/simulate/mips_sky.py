"""Simulated far-infrared sky for the MIPS simulator: point sources and smooth extended emission.

Point sources: truth catalogue of (ra, dec) deg and flux density in Jy at 24/70/160 um,
rendered with Gaussian PSFs (FWHM 6", 18", 40") integrated over each pixel, so that
sum(image [MJy/sr] * pixel solid angle [sr]) * 1e6 = catalogue flux [Jy].
Extended emission [MJy/sr]: a constant background per band plus Gaussian "clouds"
(centre, sigma, amplitude per band) plus local linear gradients (scan maps: a slope in
MJy/sr per degree along a position angle, inside a disk around the field centre, zero
outside), all (sim). Moving objects (asteroids): point sources moving linearly in the
tangent plane of their reference position; they are not in the static catalogue and are
rendered only when a time is given (``render(..., mjd=...)``).

Truth helpers: ``sky_of`` (Sky from a truth dict/JSON file), ``truth_image`` (static sky on
any WCS grid, what a perfect mosaic shows), ``surface_brightness`` (static sky at arbitrary
(ra, dec), point sources as the PSF sampled there), ``mover_position``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import erf

from .mips_cal import ARRAYS

BANDS = (24, 70, 160)
FWHM = {a.band: a.fwhm for a in ARRAYS.values()}  # arcsec, Gaussian PSF per band
GRADIENT_KEYS = ("ra", "dec", "radius", "pa", "g24", "g70", "g160", "aorkey")
MOVER_KEYS = ("ra", "dec", "mjd0", "rate_east", "rate_north", "flux24", "flux70", "flux160", "aorkey")
BACKGROUND = {24: 20.0, 70: 8.0, 160: 25.0}  # MJy/sr (sim): zodiacal light + cirrus
ARCSEC2_SR = (np.pi / 180.0 / 3600.0) ** 2


@dataclass(frozen=True)
class Sky:
    """Truth sky. ``sources``: dict of 1-d arrays ra, dec, flux24, flux70, flux160 (deg, Jy).
    ``clouds``: dict of 1-d arrays ra, dec, sigma (arcsec), amp24, amp70, amp160 (MJy/sr).
    ``background``: {band: MJy/sr}.
    ``gradients``: dict of 1-d arrays ra, dec (centre, deg), radius (arcsec), pa (deg E of N,
    direction of increasing brightness), g24, g70, g160 (MJy/sr per degree), aorkey.
    ``movers``: dict of 1-d arrays ra, dec (deg, at mjd0), mjd0 (MJD UTC), rate_east,
    rate_north (arcsec/s on the sky), flux24, flux70, flux160 (Jy), aorkey."""

    sources: dict
    clouds: dict
    background: dict
    gradients: dict = field(default_factory=lambda: _empty(GRADIENT_KEYS))
    movers: dict = field(default_factory=lambda: _empty(MOVER_KEYS))

    def to_json(self):
        """JSON-able truth description."""
        return {
            "sources": {k: np.asarray(v).tolist() for k, v in self.sources.items()},
            "extended": {
                "model": "background[band] + sum_clouds amp[band]*exp(-r^2/(2 sigma^2)) + "
                         "sum_gradients g[band]*s/3600 where hypot(e, n) < radius (else 0), MJy/sr; "
                         "r = angular distance from the cloud centre (arcsec); (e, n) = gnomonic "
                         "offsets east/north (arcsec) from the gradient centre, s = e*sin(pa) + n*cos(pa)",
                "background": {str(b): v for b, v in self.background.items()},
                "clouds": {k: np.asarray(v).tolist() for k, v in self.clouds.items()},
                "gradients": {k: np.asarray(v).tolist() for k, v in self.gradients.items()},
            },
            "movers": {
                "model": "moving point sources, not in 'sources': at time mjd the position is the "
                         "gnomonic offset (rate_east, rate_north)*(mjd - mjd0)*86400 arcsec from "
                         "(ra, dec); rendered at each DCE's mid-time (no trailing); flux in Jy",
                **{k: np.asarray(v).tolist() for k, v in self.movers.items()},
            },
        }

    @classmethod
    def from_json(cls, d):
        """Inverse of to_json (the truth JSON's "sky"); older truth without gradients/movers works."""
        ext = d["extended"]
        arr = lambda m, keys: {k: np.asarray(m.get(k, []), float) for k in keys}  # noqa: E731
        return cls({k: np.asarray(v, float) for k, v in d["sources"].items()},
                   {k: np.asarray(v, float) for k, v in ext["clouds"].items()},
                   {int(b): float(v) for b, v in ext["background"].items()},
                   arr(ext.get("gradients", {}), GRADIENT_KEYS), arr(d.get("movers", {}), MOVER_KEYS))


def _empty(keys):
    return {k: np.zeros(0) for k in keys}


def sky_of(truth_or_sky):
    """A Sky from a Sky, a truth dict (``mips_truth.json`` content or its "sky"), or a JSON path."""
    if isinstance(truth_or_sky, Sky):
        return truth_or_sky
    if isinstance(truth_or_sky, (str, Path)):
        truth_or_sky = json.loads(Path(truth_or_sky).read_text())
    return Sky.from_json(truth_or_sky.get("sky", truth_or_sky))


def make_sky(fields, *, seed=0, n_sources=40, bright=True):
    """Sky around ``fields`` (list of (ra, dec, radius_arcsec[, n_sources])); deterministic in seed."""
    src = {k: [] for k in ("ra", "dec", "flux24", "flux70", "flux160")}
    cl = {k: [] for k in ("ra", "dec", "sigma", "amp24", "amp70", "amp160")}
    for i, (ra0, dec0, rad, *n_field) in enumerate(fields):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        n = (n_field[0] if n_field else n_sources) + (1 if bright else 0)
        r = rad * np.sqrt(rng.random(n))
        th = rng.uniform(0, 2 * np.pi, n)
        f24 = 10 ** rng.uniform(np.log10(5e-4), np.log10(3e-2), n)
        f70 = f24 * np.exp(rng.normal(np.log(5.0), 0.5, n))
        f160 = f70 * np.exp(rng.normal(np.log(1.5), 0.4, n))
        if bright:  # one bright source near the field centre: saturates 24 and 70 um
            r[0], f24[0], f70[0], f160[0] = 0.25 * min(rad, 60.0), 0.5, 15.0, 20.0
        ra, dec = _offset(ra0, dec0, r * np.sin(th), r * np.cos(th))
        for k, v in zip(src, (ra, dec, f24, f70, f160)):
            src[k].extend(v)
        m = 2
        cra, cdec = _offset(ra0, dec0, rng.uniform(-rad, rad, m) * 0.5, rng.uniform(-rad, rad, m) * 0.5)
        sig = rng.uniform(60.0, 180.0, m)
        for k, v in zip(cl, (cra, cdec, sig, rng.uniform(1, 3, m), rng.uniform(5, 15, m),
                             rng.uniform(15, 40, m))):
            cl[k].extend(v)
    return Sky({k: np.array(v, float) for k, v in src.items()},
               {k: np.array(v, float) for k, v in cl.items()}, dict(BACKGROUND))


def _offset(ra0, dec0, east, north):
    """Small tangent-plane offsets (arcsec) -> (ra, dec) deg (gnomonic inverse)."""
    xi, eta = np.radians(np.asarray(east) / 3600.0), np.radians(np.asarray(north) / 3600.0)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _tangent(ra0, dec0, ra, dec):
    """Gnomonic offsets (east, north) arcsec of (ra, dec) from (ra0, dec0), and a mask of
    points in the front hemisphere (where the projection is defined)."""
    a0, d0, a, d = (np.radians(v) for v in (ra0, dec0, ra, dec))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    front = cosc > 1e-6
    c = np.where(front, cosc, 1.0)
    xi = np.cos(d) * np.sin(a - a0) / c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / c
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0, front


def _sep_arcsec(ra1, dec1, ra2, dec2):
    """Angular separation (arcsec), haversine; broadcasts."""
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0


def extended(sky, band, ra, dec):
    """Extended emission [MJy/sr] at (ra, dec) deg arrays."""
    out = np.full(np.shape(ra), sky.background[band], float)
    c = sky.clouds
    for i in range(len(c["ra"])):
        r = _sep_arcsec(ra, dec, c["ra"][i], c["dec"][i])
        out += c[f"amp{band}"][i] * np.exp(-0.5 * (r / c["sigma"][i]) ** 2)
    g = sky.gradients
    for i in range(len(g["ra"])):
        e, n, front = _tangent(g["ra"][i], g["dec"][i], ra, dec)
        inside = front & (np.hypot(e, n) < g["radius"][i])
        if inside.any():  # outside: exactly nothing added (other fields stay bit-identical)
            pa = np.radians(g["pa"][i])
            out += np.where(inside, g[f"g{band}"][i] * (e * np.sin(pa) + n * np.cos(pa)) / 3600.0, 0.0)
    return out


def mover_position(truth_or_sky, mjd):
    """(ra, dec) deg arrays [n_movers] of the moving objects at time ``mjd`` (MJD UTC, scalar)."""
    m = sky_of(truth_or_sky).movers
    dt = (float(mjd) - m["mjd0"]) * 86400.0
    ra, dec = _offset(m["ra"], m["dec"], m["rate_east"] * dt, m["rate_north"] * dt)
    return np.asarray(ra, float), np.asarray(dec, float)


def render(sky, band, wcs, shape, fwhm, mjd=None):
    """Sky brightness [MJy/sr], float64 [ny, nx], seen by an array with astropy ``wcs`` (TAN-SIP).

    Extended emission at pixel centres; point sources as pixel-integrated Gaussians in
    pixel coordinates with the local pixel scale (Jacobian at the source), divided by the
    local pixel solid angle, so the image sums back to the catalogue flux. With ``mjd`` (MJD
    UTC) the moving objects at their positions at that time are rendered too, as sources.
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(xx, yy, 0)
    img = extended(sky, band, ra, dec)
    s = sky.sources
    sra, sdec, sflux = s["ra"], s["dec"], s[f"flux{band}"]
    if mjd is not None and len(sky.movers["ra"]):
        mra, mdec = mover_position(sky, mjd)
        sra, sdec = np.concatenate([sra, mra]), np.concatenate([sdec, mdec])
        sflux = np.concatenate([sflux, sky.movers[f"flux{band}"]])
    sig = fwhm / 2.3548200450309493
    cra, cdec = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    half = 0.5 * np.hypot(nx * 20.0, ny * 20.0) + 6 * sig  # generous (pixel <= 20")
    near = _sep_arcsec(sra, sdec, cra[0], cdec[0]) < half
    if not near.any():
        return img
    px, py = wcs.all_world2pix(sra[near], sdec[near], 0)
    flux = sflux[near]
    for x0, y0, f in zip(px, py, flux):
        jx, jy, omega = _local_scale(wcs, x0, y0)
        fx = _pixel_fractions(np.arange(nx), x0, sig / jx)
        fy = _pixel_fractions(np.arange(ny), y0, sig / jy)
        img += np.outer(fy, fx) * (f * 1e-6 / omega)
    return img


def _local_scale(wcs, x, y, h=0.5):
    """Pixel size (arcsec) along x and y and pixel solid angle (sr) at pixel (x, y)."""
    ra, dec = wcs.all_pix2world([x, x + h, x], [y, y, y + h], 0)
    sx = _sep_arcsec(ra[0], dec[0], ra[1], dec[1]) / h
    sy = _sep_arcsec(ra[0], dec[0], ra[2], dec[2]) / h
    return sx, sy, sx * sy * ARCSEC2_SR


def _pixel_fractions(centres, x0, sig):
    """Fraction of a 1-d Gaussian (mean x0, sigma sig, pixels) falling in each unit pixel."""
    z = (np.asarray(centres, float) - x0) / (np.sqrt(2.0) * sig)
    w = 0.5 / (np.sqrt(2.0) * sig)
    return 0.5 * (erf(z + w) - erf(z - w))


def truth_image(truth_or_sky, band, wcs, shape, fwhm=None):
    """Static truth sky [MJy/sr], float64 [ny, nx], on the pixel grid of ``wcs`` (any celestial
    astropy WCS, e.g. a mosaic's): what a perfect mosaic shows. Catalogue sources as
    pixel-integrated Gaussians of ``fwhm`` arcsec (default: the band's PSF) and the extended
    emission (background, clouds, gradients) at pixel centres, exactly as ``render``; no
    moving objects, no instrumental per-leg offsets. ``truth_or_sky``: see ``sky_of``."""
    return render(sky_of(truth_or_sky), band, wcs, shape, FWHM[band] if fwhm is None else fwhm)


def surface_brightness(truth_or_sky, band, ra, dec, fwhm=None):
    """Static truth surface brightness [MJy/sr] at (ra, dec) deg arrays: extended emission plus
    every catalogue source as a Gaussian PSF of ``fwhm`` arcsec (default: the band's), sampled
    at the point (not pixel-integrated); no moving objects, no per-leg offsets. The extended
    emission is not convolved, as in ``render`` (clouds are >= 60" wide, gradients linear)."""
    sky = sky_of(truth_or_sky)
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    out = extended(sky, band, ra, dec)
    sig = (FWHM[band] if fwhm is None else fwhm) / 2.3548200450309493
    s = sky.sources
    peak = s[f"flux{band}"] * 1e-6 / (2 * np.pi * sig ** 2 * ARCSEC2_SR)  # MJy/sr
    for i in np.flatnonzero(peak > 0):
        r = _sep_arcsec(ra, dec, s["ra"][i], s["dec"][i])
        near = r < 8 * sig
        if near.any():
            out[near] += peak[i] * np.exp(-0.5 * (r[near] / sig) ** 2)
    return out
