"""Doppler velocities, integer-channel shift-and-add, coadd grouping, LSRK velocity axis.

Velocities in km/s, positive when source and observer recede (ICD §1):
v_obs = V_lsrk + v_geo + v_sc, observed nu = nu0 (1 - v_obs / c).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, LSRK, CartesianDifferential
from astropy.coordinates import get_body_barycentric_posvel
from astropy.time import Time

from reduce.swas.physics import C_KMS, channel_of_sky, doppler_freq, sky_freq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoaddParams:
    """Coadd options: max ON time per coadd [s], time gap that always starts a new coadd [s]."""

    max_on_time_s: float = 180.0
    max_gap_s: float = 600.0


def unit_vector(ra_deg, dec_deg):
    """Unit vector(s) (..., 3) toward (ra, dec) [deg], ICRS axes."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def sc_los_velocity(scvel, ra_deg, dec_deg):
    """Spacecraft velocity away from the source: v_sc = -SCVEL . n_hat [km/s], shape (n,).

    scvel: (n, 3) km/s GCRS; ra, dec: deg, scalars or (n,).
    """
    return -np.sum(np.asarray(scvel, dtype=float) * unit_vector(ra_deg, dec_deg), axis=-1)


def geo_lsrk_velocity(time_mjd, ra_deg, dec_deg):
    """Geocentre velocity relative to the LSRK along the line of sight, + away from the source.

    Earth's barycentric velocity (astropy ephemeris) carried into the LSRK frame with
    astropy's ICRS -> LSRK transform. time_mjd: MJD UTC scalar or (n,); returns km/s, same shape.
    """
    t = Time(np.asarray(time_mjd, dtype=float), format="mjd", scale="utc")
    pos, vel = get_body_barycentric_posvel("earth", t)
    rep = pos.with_differentials(CartesianDifferential(vel.xyz))
    v = ICRS(rep).transform_to(LSRK()).velocity.d_xyz.to_value(u.km / u.s)  # (3, ...)
    n_hat = unit_vector(ra_deg, dec_deg)
    return -np.sum(np.moveaxis(v, 0, -1) * n_hat, axis=-1)


def line_channel_offset(v_kms, rest_freq, dispersion, lo, sideband):
    """Channels (float) by which a line at rest_freq [Hz] moves when observed at velocity v
    [km/s] instead of 0 (positive = toward higher channel). USB and LSB have opposite signs."""
    c0 = channel_of_sky(rest_freq, dispersion, lo, sideband)
    return channel_of_sky(doppler_freq(rest_freq, v_kms), dispersion, lo, sideband) - c0


def correction_shifts(v_kms, rest_freq, dispersion, lo, sideband):
    """Integer shifts (int, shape of v) that undo velocity v for shift_and_add (= -round(offset))."""
    off = line_channel_offset(v_kms, rest_freq, dispersion, lo, sideband)
    return -np.rint(off).astype(np.int64)


def shift_and_add(spectra, shifts, weights=None):
    """Integer-channel shift and weighted coadd, no wrap-around.

    spectra (m, n_chan); shifts (m,) int: out[c] takes spectra[i, c - shifts[i]];
    weights (m,) (default 1). NaN inputs count as missing. Returns (coadd (n_chan,),
    weight_sum (n_chan,), coverage (n_chan,) int = number of spectra that contributed,
    full (n_chan,) bool = every spectrum contributed). Channels with no coverage are NaN.
    """
    x = np.asarray(spectra, dtype=float)
    m, n = x.shape
    s = np.asarray(shifts).astype(np.int64).reshape(m)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float).reshape(m)
    src = np.arange(n)[None, :] - s[:, None]
    inside = (src >= 0) & (src < n)
    g = np.take_along_axis(x, np.clip(src, 0, n - 1), axis=1)
    ok = inside & np.isfinite(g)
    wg = np.where(ok, w[:, None], 0.0)
    wsum = wg.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        coadd = np.where(wsum > 0, np.sum(np.where(ok, g, 0.0) * wg, axis=0) / wsum, np.nan)
    coverage = ok.sum(axis=0)
    return coadd, wsum, coverage, coverage == m


def group_coadds(time_mjd, inttime, *, use=None, keys=None, params=CoaddParams()):
    """Coadd group id (n,) for pairs/scans in time order: a new group starts when the summed
    ON time would exceed max_on_time_s, after a gap > max_gap_s, or when `keys` changes
    between consecutive members of a key (keys: (n,) int labels, e.g. map positions; each
    key is grouped separately). Unused entries (use False) get -1. Ids are 0.. in order
    of each group's first time."""
    t = np.asarray(time_mjd, dtype=float) * 86400.0
    tint = np.asarray(inttime, dtype=float)
    n = t.size
    use = np.ones(n, bool) if use is None else np.asarray(use, dtype=bool)
    keys = np.zeros(n, np.int64) if keys is None else np.asarray(keys)
    gid = np.full(n, -1, np.int64)
    starts = []
    for key in np.unique(keys[use]):
        idx = np.flatnonzero(use & (keys == key))
        idx = idx[np.argsort(t[idx], kind="stable")]
        acc, last, cur = 0.0, None, []
        for i in idx:
            if cur and (acc + tint[i] > params.max_on_time_s + 1e-9 or t[i] - last > params.max_gap_s):
                starts.append(cur)
                cur, acc = [], 0.0
            cur.append(i)
            acc += tint[i]
            last = t[i]
        if cur:
            starts.append(cur)
    for g, members in enumerate(sorted(starts, key=lambda mem: t[mem[0]])):
        gid[members] = g
    return gid


def position_keys(dlam, dbet, *, tol_arcmin=0.5):
    """Integer label (n,) per MAP pointing offset: offsets rounded to a tol_arcmin grid."""
    q = np.stack([np.rint(np.asarray(dlam, float) / tol_arcmin),
                  np.rint(np.asarray(dbet, float) / tol_arcmin)], axis=1)
    _, labels = np.unique(q, axis=0, return_inverse=True)
    return labels.reshape(-1)


def velocity_axis(dispersion, lo, sideband, rest_freq, *, v_frame_kms=0.0, n_chan=725):
    """LSRK velocity [km/s] of each channel (n_chan,) of a coadd.

    v_frame_kms is the part of v_obs the shifts did not remove (v_geo when the shifts
    corrected v_sc only): V = c (1 - nu_c / nu0) - v_frame.
    """
    nu = sky_freq(np.arange(n_chan), dispersion, lo, sideband)
    return C_KMS * (1.0 - nu / rest_freq) - v_frame_kms


def lsrk_velocity_axis(dispersion, lo, sideband, rest_freq, time_mjd, ra_deg, dec_deg,
                       *, n_chan=725):
    """LSRK velocity axis [km/s] (n_chan,) of a coadd made to the geocentre frame
    (v_sc removed); v_geo is taken at time_mjd (the coadd's mean time)."""
    v_geo = float(geo_lsrk_velocity(time_mjd, ra_deg, dec_deg))
    return velocity_axis(dispersion, lo, sideband, rest_freq, v_frame_kms=v_geo, n_chan=n_chan)
