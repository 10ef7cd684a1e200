"""SWAS orbit and Doppler terms for the level-0.5 simulator.

The orbit is circular (sim): altitude 640 km, inclination 69.9 deg, period
~97.5 min from astropy's GM_earth and R_earth, with the ascending node
regressing under J2.  Positions and velocities are GCRS, in km and km/s.

Doppler terms follow ICD §1 (positive = observer and source recede):
``v_sc = -SCVEL . n_hat`` and ``v_geo = -(v_geocentre wrt LSRK) . n_hat``, with
n_hat the unit vector toward the target's (RA, DEC).
"""

import logging

import numpy as np
import astropy.units as u
from astropy.constants import GM_earth, R_earth
from astropy.coordinates import LSRK, EarthLocation
from astropy.time import Time

log = logging.getLogger(__name__)

MISSION_EPOCH_MJD = 51118.0      # mission day 1 = 1998-11-01 00:00 UTC
ALTITUDE_KM = 640.0
INCLINATION_DEG = 69.9
RAAN0_DEG = 41.0                 # (sim) ascending node at the mission epoch
ARGLAT0_DEG = 17.0               # (sim) argument of latitude at the mission epoch
J2_EARTH = 1.08263e-3            # Earth's J2 (not in astropy.constants)


def orbit_elements():
    """Return (a_km, n_rad_s, raan_rate_rad_s) of the circular orbit."""
    a = (R_earth + ALTITUDE_KM * u.km).to_value(u.km)
    gm = GM_earth.to_value(u.km**3 / u.s**2)
    n = np.sqrt(gm / a**3)
    re = R_earth.to_value(u.km)
    raan_rate = -1.5 * n * J2_EARTH * (re / a) ** 2 * np.cos(np.radians(INCLINATION_DEG))
    return a, n, raan_rate


def orbital_period_s():
    """Orbital period in seconds (~5850 s)."""
    return 2 * np.pi / orbit_elements()[1]


def spacecraft_state(mjd):
    """GCRS position (km) and velocity (km/s), each shape (N, 3), at UTC MJDs ``mjd``."""
    t = (np.asarray(mjd, dtype=float) - MISSION_EPOCH_MJD) * 86400.0
    a, n, rdot = orbit_elements()
    raan = np.radians(RAAN0_DEG) + rdot * t
    arg = np.radians(ARGLAT0_DEG) + n * t
    inc = np.radians(INCLINATION_DEG)
    cO, sO, cu, su, ci, si = np.cos(raan), np.sin(raan), np.cos(arg), np.sin(arg), np.cos(inc), np.sin(inc)
    pos = a * np.stack([cO * cu - sO * su * ci, sO * cu + cO * su * ci, su * si], axis=-1)
    # d/dt with du/dt = n and dOmega/dt = rdot
    dx_du = np.stack([-cO * su - sO * cu * ci, -sO * su + cO * cu * ci, cu * si], axis=-1)
    dx_dO = np.stack([-sO * cu - cO * su * ci, cO * cu - sO * su * ci, np.zeros_like(cu)], axis=-1)
    vel = a * (n * dx_du + rdot * dx_dO)
    return pos, vel


def unit_vector(ra_deg, dec_deg):
    """ICRS unit vector toward (ra, dec) in degrees, shape (3,)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def v_spacecraft(scvel_kms, ra_deg, dec_deg):
    """v_sc = -SCVEL . n_hat in km/s, shape (N,)."""
    return -(np.asarray(scvel_kms) @ unit_vector(ra_deg, dec_deg))


def geocentre_velocity_lsrk(mjd):
    """Velocity of the geocentre relative to the LSRK (km/s, ICRS axes), shape (N, 3)."""
    t = Time(np.atleast_1d(np.asarray(mjd, dtype=float)), format="mjd", scale="utc")
    geo = EarthLocation.from_geocentric(0.0, 0.0, 0.0, unit=u.m).get_gcrs(t)
    v = geo.transform_to(LSRK()).velocity
    return np.stack([v.d_x.to_value(u.km / u.s), v.d_y.to_value(u.km / u.s),
                     v.d_z.to_value(u.km / u.s)], axis=-1)


def v_geocentre(mjd, ra_deg, dec_deg, *, step_s=600.0):
    """v_geo in km/s, shape (N,): geocentre velocity wrt LSRK, positive away from the source.

    Evaluated with astropy on a grid of ``step_s`` and interpolated linearly
    (the term changes by < 0.01 km/s in 10 min, the interpolation error is < 1 mm/s).
    """
    mjd = np.asarray(mjd, dtype=float)
    lo, hi = float(mjd.min()), float(mjd.max())
    nodes = np.linspace(lo, hi, max(2, int(np.ceil((hi - lo) * 86400.0 / step_s)) + 1))
    vg = -(geocentre_velocity_lsrk(nodes) @ unit_vector(ra_deg, dec_deg))
    return np.interp(mjd, nodes, vg)
