"""Doppler velocities along the line of sight (kernel helper of steps 4 and of the planning):
the spacecraft's (from SCVEL) and the geocentre's relative to the LSRK.

Velocities in km/s, positive when source and observer recede (ICD §1):
v_obs = V_lsrk + v_geo + v_sc, observed nu = nu0 (1 - v_obs / c). Shift-and-add and the
coadd axis are in :mod:`reduce.swas.kernels.coadd`.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, LSRK, CartesianDifferential
from astropy.coordinates import get_body_barycentric_posvel
from astropy.time import Time

log = logging.getLogger(__name__)


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
