"""Simulated far-infrared sky for the MIPS simulator: point sources and smooth extended emission.

Point sources: truth catalogue of (ra, dec) deg and flux density in Jy at 24/70/160 um,
rendered with Gaussian PSFs (FWHM 6", 18", 40") integrated over each pixel, so that
sum(image [MJy/sr] * pixel solid angle [sr]) * 1e6 = catalogue flux [Jy].
Extended emission [MJy/sr]: a constant background per band plus Gaussian "clouds"
(centre, sigma, amplitude per band), all (sim).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

BANDS = (24, 70, 160)
BACKGROUND = {24: 20.0, 70: 8.0, 160: 25.0}  # MJy/sr (sim): zodiacal light + cirrus
ARCSEC2_SR = (np.pi / 180.0 / 3600.0) ** 2


@dataclass(frozen=True)
class Sky:
    """Truth sky. ``sources``: dict of 1-d arrays ra, dec, flux24, flux70, flux160 (deg, Jy).
    ``clouds``: dict of 1-d arrays ra, dec, sigma (arcsec), amp24, amp70, amp160 (MJy/sr)."""

    sources: dict
    clouds: dict
    background: dict

    def to_json(self):
        """JSON-able truth description."""
        return {
            "sources": {k: np.asarray(v).tolist() for k, v in self.sources.items()},
            "extended": {
                "model": "background[band] + sum_clouds amp[band]*exp(-r^2/(2 sigma^2)), MJy/sr, "
                         "r = angular distance from the cloud centre (arcsec)",
                "background": {str(b): v for b, v in self.background.items()},
                "clouds": {k: np.asarray(v).tolist() for k, v in self.clouds.items()},
            },
        }


def make_sky(fields, *, seed=0, n_sources=40, bright=True):
    """Sky around ``fields`` (list of (ra, dec, radius_arcsec)); deterministic in seed."""
    src = {k: [] for k in ("ra", "dec", "flux24", "flux70", "flux160")}
    cl = {k: [] for k in ("ra", "dec", "sigma", "amp24", "amp70", "amp160")}
    for i, (ra0, dec0, rad) in enumerate(fields):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        n = n_sources + (1 if bright else 0)
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
    return out


def render(sky, band, wcs, shape, fwhm):
    """Sky brightness [MJy/sr], float64 [ny, nx], seen by an array with astropy ``wcs`` (TAN-SIP).

    Extended emission at pixel centres; point sources as pixel-integrated Gaussians in
    pixel coordinates with the local pixel scale (Jacobian at the source), divided by the
    local pixel solid angle, so the image sums back to the catalogue flux.
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(xx, yy, 0)
    img = extended(sky, band, ra, dec)
    s = sky.sources
    sig = fwhm / 2.3548200450309493
    cra, cdec = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    half = 0.5 * np.hypot(nx * 20.0, ny * 20.0) + 6 * sig  # generous (pixel <= 20")
    near = _sep_arcsec(s["ra"], s["dec"], cra[0], cdec[0]) < half
    if not near.any():
        return img
    px, py = wcs.all_world2pix(s["ra"][near], s["dec"][near], 0)
    flux = s[f"flux{band}"][near]
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
