"""Step 4 kernels (reduce.swas.kernels.coadd): band offsets, shift-and-add, coadd grouping and
the LSRK axis, as the step's task body uses them."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.optimize import curve_fit

from reduce.swas.kernels.coadd import (CoaddParams, band_offsets, coadd_group, group_coadds, lsrk_axis,
                                       position_keys, shift_and_add)
from reduce.swas.kernels.doppler import geo_lsrk_velocity
from reduce.swas.physics import C_KMS, NOMINAL_LO, Dispersion, get_band

DISP = Dispersion(2.4571e9, 1.0012e6, 21.0)
DISP3 = np.array([DISP.f0, DISP.d1, DISP.d2])
LO = NOMINAL_LO["490"]
RA, DEC = 83.8221, -5.3911  # Orion KL


def segment(v_sc, *, taos=None, vsource=0.0, df0_dtaos=0.3e6):
    """The fields of a SegmentPlan that the offsets and the axis use (490 GHz receiver at LO)."""
    v_sc = np.atleast_1d(np.asarray(v_sc, float))
    taos = np.zeros(v_sc.size) if taos is None else np.asarray(taos, float)
    return SimpleNamespace(lofreq=np.array([LO, NOMINAL_LO["550"]]), v_sc=v_sc, taos_on=taos, taos_ref=0.0,
                           df0_dtaos=df0_dtaos, vsource=vsource)


def test_usb_and_lsb_shift_in_opposite_directions():
    for v in (-7.5, 3.0, 7.5):
        off_u = band_offsets(segment(v), DISP3, get_band("CI"))[0]  # USB
        off_l = band_offsets(segment(v), DISP3, get_band("O2"))[0]  # LSB
        assert np.sign(off_u) == -np.sign(v) and np.sign(off_l) == np.sign(v)
        assert abs(off_u) == pytest.approx(abs(v) / 0.609, rel=0.02)  # ~0.6 km/s per channel
        assert abs(off_l) == pytest.approx(abs(v) / 0.615, rel=0.02)
    off = band_offsets(segment(5.0), DISP3, get_band("CI"))
    assert coadd_group(np.zeros((1, 725)), np.ones(1), off, "NOD")[3].tolist() == [8]  # the shift undoing it
    # the F0 drift with TAOS (0.3 MHz per deg C) moves every line down by 0.3 channel per deg C
    for band in ("CI", "O2"):
        still = band_offsets(segment(0.0), DISP3, get_band(band))[0]
        warm = band_offsets(segment(0.0, taos=[1.0]), DISP3, get_band(band))[0]
        assert warm - still == pytest.approx(-0.3e6 / DISP.d1, rel=0.02)


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
    """DSB scans with a line in each sideband, spacecraft velocity over the orbit +-7.5 km/s: the
    coadd on the LSRK grid (offsets, shift-and-add, axis, resampling as coadd_batch does them)."""
    rng = np.random.default_rng(7)
    m, v_src, fwhm = 240, 9.3, 2.5
    t_s = np.arange(m) * 0.6 * 5820.0 / m  # scans spread over 0.6 of a 97-min orbit
    t = 51500.0 + t_s / 86400
    v_sc = 7.5 * np.sin(2 * np.pi * t_s / 5820.0)  # mean ~ +3.6 km/s: uncorrected, the line moves
    v_geo = float(geo_lsrk_velocity(t.mean(), RA, DEC))
    ch = np.arange(725)
    spectra = rng.normal(0, 0.05, (m, 725))
    for b, sgn in (("CI", 1.0), ("O2", -1.0)):
        nu0 = get_band(b).rest_freq
        v_ch = C_KMS * (1 - (LO + sgn * DISP.if_freq(ch)) / nu0)  # velocity each channel sees
        # a channel at v_ch sees the line at source velocity v_ch - v_geo - v_sc
        spectra += np.exp(-0.5 * ((v_ch[None] - v_geo - v_sc[:, None] - v_src) / (fwhm / 2.3548)) ** 2)
    bd = get_band(band)
    sp = segment(v_sc, vsource=v_src)
    off = band_offsets(sp, DISP3, bd)
    coadd, _, cov, shifts, rbar = coadd_group(spectra, np.ones(m), off, "NOD")
    assert np.array_equal(shifts, -np.rint(off)) and np.ptp(shifts) >= 18  # the orbit smears ~19 channels
    c_ref, f_ref, cdelt, c_out = lsrk_axis(sp, DISP3, bd, rbar, v_geo)
    spec = np.interp(c_out, ch, coadd, left=np.nan, right=np.nan)
    full = np.interp(c_out, ch, cov, left=0.0, right=0.0) > m - 0.5
    vel = C_KMS * (1 - (f_ref + cdelt * (ch - c_ref)) / bd.rest_freq)  # LSRK velocity of the grid
    assert abs(vel[c_ref] - v_src) < 0.7  # the reference channel holds the line at VSOURCE
    sel = full & (np.abs(vel - v_src) < 15)
    p, _ = curve_fit(_gauss, vel[sel], spec[sel], p0=[1, v_src + 1, 1.0, 0])
    assert abs(p[1] - v_src) < 0.3  # km/s
    assert 2.3548 * abs(p[2]) < fwhm + 1.0  # integer shifts broaden by < ~1 channel


def test_chop_nod_pairs_are_averaged_then_shifted_once():
    rng = np.random.default_rng(3)
    sw = rng.normal(0, 1, (6, 725))
    w = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    off = np.array([2.2, 2.4, 2.6, 2.8, 3.0, 3.2])
    c, wsum, cov, s, rbar = coadd_group(sw, w, off, "CHOP_NOD")
    mo = np.average(off, weights=w)
    assert (s == -np.rint(mo)).all() and rbar == pytest.approx(mo - np.rint(mo))
    np.testing.assert_allclose(c[10:-10], np.roll(np.average(sw, axis=0, weights=w), int(s[0]))[10:-10])
    assert (cov[10:-10] == 6).all() and wsum[10:-10] == pytest.approx(w.sum())


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
