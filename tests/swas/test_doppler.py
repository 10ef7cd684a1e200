"""Doppler velocities, shift-and-add, coadd grouping and the LSRK axis."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import LSRK, EarthLocation, SkyCoord
from astropy.time import Time
from scipy.optimize import curve_fit

from reduce.swas.doppler import (CoaddParams, correction_shifts, geo_lsrk_velocity,
                                 group_coadds, line_channel_offset, position_keys,
                                 sc_los_velocity, shift_and_add, unit_vector, velocity_axis)
from reduce.swas.physics import C_KMS, NOMINAL_LO, Dispersion, get_band, sky_freq

DISP = Dispersion(2.4571e9, 1.0012e6, 21.0)
LO = NOMINAL_LO["490"]
RA, DEC = 83.8221, -5.3911  # Orion KL


def test_sc_velocity_sign():
    n_hat = unit_vector(RA, DEC)
    scvel = np.array([7.0 * n_hat, -3.0 * n_hat, [0.0, 0.0, 0.0]])
    assert np.allclose(sc_los_velocity(scvel, RA, DEC), [-7.0, 3.0, 0.0])  # toward source < 0


def test_usb_and_lsb_shift_in_opposite_directions():
    for v in (-7.5, 3.0, 7.5):
        off_u = line_channel_offset(v, get_band("CI").rest_freq, DISP, LO, "USB")
        off_l = line_channel_offset(v, get_band("O2").rest_freq, DISP, LO, "LSB")
        assert np.sign(off_u) == -np.sign(v) and np.sign(off_l) == np.sign(v)
        assert abs(off_u) == pytest.approx(abs(v) / 0.609, rel=0.02)  # ~0.6 km/s per channel
        assert abs(off_l) == pytest.approx(abs(v) / 0.615, rel=0.02)
    assert correction_shifts(np.array([5.0]), 492.160651e9, DISP, LO, "USB")[0] == 8


def test_shift_and_add_coverage_without_wraparound():
    x = np.tile(np.arange(10.0), (2, 1))
    coadd, wsum, cov, full = shift_and_add(x, np.array([0, 3]), np.array([1.0, 3.0]))
    assert cov.tolist() == [1, 1, 1] + [2] * 7
    assert full.tolist() == [False] * 3 + [True] * 7
    assert coadd[0] == 0.0  # only the unshifted spectrum: nothing wrapped in from the end
    assert coadd[5] == pytest.approx((5 * 1 + 2 * 3) / 4)
    assert wsum[5] == 4.0
    y = x.copy()
    y[0, 4] = np.nan  # missing channel is not counted
    _, _, cov2, _ = shift_and_add(y, np.array([0, 0]))
    assert cov2[4] == 1


def _gauss(v, a, v0, s, b):
    return a * np.exp(-0.5 * ((v - v0) / s) ** 2) + b


@pytest.mark.parametrize("band", ["CI", "O2"])
def test_shift_and_add_recovers_line_centre(band):
    """DSB scans with a line in each sideband, spacecraft velocity over the orbit +-7.5 km/s."""
    rng = np.random.default_rng(7)
    m, v_src, fwhm = 240, 9.3, 2.5
    t_s = np.arange(m) * 0.6 * 5820.0 / m  # scans spread over 0.6 of a 97-min orbit
    t = 51500.0 + t_s / 86400
    v_sc = 7.5 * np.sin(2 * np.pi * t_s / 5820.0)  # mean ~ +3.6 km/s: uncorrected, the line moves
    v_geo = float(geo_lsrk_velocity(t.mean(), RA, DEC))
    ch = np.arange(725)
    spectra = rng.normal(0, 0.05, (m, 725))
    for b, sb in (("CI", "USB"), ("O2", "LSB")):
        nu0 = get_band(b).rest_freq
        v_ch = C_KMS * (1 - sky_freq(ch, DISP, LO, sb) / nu0)  # velocity each channel sees
        # a channel at v_ch sees the line at source velocity v_ch - v_geo - v_sc
        spectra += np.exp(-0.5 * ((v_ch[None] - v_geo - v_sc[:, None] - v_src) / (fwhm / 2.3548)) ** 2)
    bd = get_band(band)
    shifts = correction_shifts(v_sc, bd.rest_freq, DISP, LO, bd.sideband)
    assert np.ptp(shifts) >= 18  # the orbit really smears the line over ~19 channels
    coadd, _, _, full = shift_and_add(spectra, shifts)
    vel = velocity_axis(DISP, LO, bd.sideband, bd.rest_freq, v_frame_kms=v_geo)
    sel = full & (np.abs(vel - v_src) < 15)
    p, _ = curve_fit(_gauss, vel[sel], coadd[sel], p0=[1, v_src + 1, 1.0, 0])
    assert abs(p[1] - v_src) < 0.3  # km/s
    assert 2.3548 * abs(p[2]) < fwhm + 1.0  # integer shifts broaden by < ~1 channel


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


def test_group_coadds_three_minutes_gaps_and_keys():
    n = 200
    t = 51500.0 + np.arange(n) * 4.0 / 86400  # one pair every 4 s, 2-s ON time each
    t[120:] += 1000.0 / 86400  # a ground-support gap
    tint = np.full(n, 2.0)
    gid = group_coadds(t, tint)
    for g in np.unique(gid):
        assert tint[gid == g].sum() <= 180.0
    assert np.bincount(gid).tolist() == [90, 30, 80]  # 90 x 2 s, then gap splits
    use = np.ones(n, bool)
    use[:10] = False
    gid2 = group_coadds(t, tint, use=use, params=CoaddParams(max_on_time_s=60.0))
    assert np.all(gid2[:10] == -1) and gid2[10] == 0
    keys = position_keys(np.tile([0.0, 3.0, 3.1, 6.0], 50), np.zeros(n), tol_arcmin=0.5)
    assert np.unique(keys).size == 3  # 3.0 and 3.1 arcmin are one position
    gid3 = group_coadds(t, tint, keys=keys)
    for g in np.unique(gid3):
        assert np.unique(keys[gid3 == g]).size == 1
