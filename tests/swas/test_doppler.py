"""Doppler velocities along the line of sight (reduce.swas.kernels.doppler)."""

import numpy as np
from astropy import units as u
from astropy.coordinates import LSRK, EarthLocation, SkyCoord
from astropy.time import Time

from reduce.swas.kernels.doppler import geo_lsrk_velocity, sc_los_velocity, unit_vector

RA, DEC = 83.8221, -5.3911  # Orion KL


def test_sc_velocity_sign():
    n_hat = unit_vector(RA, DEC)
    scvel = np.array([7.0 * n_hat, -3.0 * n_hat, [0.0, 0.0, 0.0]])
    assert np.allclose(sc_los_velocity(scvel, RA, DEC), [-7.0, 3.0, 0.0])  # toward source < 0


def test_geo_lsrk_velocity_matches_radial_velocity_correction():
    """Independent route: astropy's barycentric radial_velocity_correction at a site on the
    Earth, minus the site's rotation velocity, plus the LSRK motion of a barycentric-rest
    source (SkyCoord transform)."""
    t = Time([51200.0, 51500.0, 51700.3, 52500.7, 53000.1], format="mjd", scale="utc")
    site = EarthLocation.from_geodetic(0 * u.deg, 0 * u.deg, 0 * u.m)
    for ra, dec in [(RA, DEC), (266.4168, -29.0078), (10.0, 80.0), (300.0, 40.0)]:
        sc = SkyCoord(ra * u.deg, dec * u.deg)
        rvc = sc.radial_velocity_correction("barycentric", obstime=t, location=site).to_value("km/s")
        v_rot = site.get_gcrs_posvel(t)[1].xyz.to_value("km/s").T @ unit_vector(ra, dec)
        src = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, distance=1 * u.kpc, pm_ra_cosdec=0 * u.mas / u.yr,
                       pm_dec=0 * u.mas / u.yr, radial_velocity=0 * u.km / u.s)
        v_sun = src.transform_to(LSRK()).radial_velocity.to_value("km/s")
        expect = -(rvc - v_rot) - v_sun
        got = geo_lsrk_velocity(t.mjd, ra, dec)
        assert np.max(np.abs(got - expect)) < 0.01
    # sanity: Sun recedes from Orion in the LSRK, Earth's orbit modulates by ~+-30 km/s
    v = geo_lsrk_velocity(51200 + np.arange(0, 365, 5.0), RA, DEC)
    assert 20 < np.ptp(v) < 62
