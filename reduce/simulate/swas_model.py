"""Forward model of the SWAS AOS (ICD §1): frequencies, temperatures, counts.

Plain numpy kernels on arrays; shapes are (n_scans, 725) unless stated.
Frequencies in Hz, temperatures in K, velocities in km/s, times in s.
"""

import numpy as np
import astropy.units as u
from astropy.constants import c as C_LIGHT, h as H_PLANCK, k_B


REST_FREQ_HZ = {  # ICD §1
    "490LSB": 487.249376e9,   # O2
    "490USB": 492.160651e9,   # C I
    "550LSB": 550.926285e9,   # 13CO(5-4)
    "550USB": 556.935988e9,   # H2O 1_10-1_01
}
NCHAN = 725
CREF = 362
HALVES = ("490", "550")
LO_NOMINAL_HZ = {"490": 489.5050e9, "550": 553.7311e9}
F0_NOMINAL_HZ = {"490": 2.4556e9, "550": 3.0049e9}
D1_NOMINAL_HZ = 1.0e6
D2_NOMINAL_HZ = 20.0           # 2e-5 MHz per channel^2
DF0_DTAOS_HZ = 0.3e6           # F0 drift per deg C of TAOS
TAOS_REF_C = 20.0              # F0 in the truth is at this TAOS
T_BG_K = 2.97
NOISE_BW_HZ = 1.5e6
CONT_BW_HZ = 1.0e9             # (sim) continuum detector noise bandwidth
COMB_SPACING_HZ = 100e6
COMB_FWHM_HZ = 1.5e6
ZERO_NOISE_COUNTS = 2.0        # (sim) read noise while the blanking switch is engaged
SATURATION = 65535.0
C_KMS = C_LIGHT.to_value(u.km / u.s)
FOUR_LN2 = 4.0 * np.log(2.0)


def planck_j(t_k, nu_hz):
    """Rayleigh-Jeans equivalent temperature J(T) = (h nu/k)/(exp(h nu/k T) - 1), K."""
    t0 = (H_PLANCK * nu_hz * u.Hz / k_B).to_value(u.K)
    return t0 / np.expm1(t0 / np.asarray(t_k, dtype=float))


def lo_frequency(half, lo_shift_kms):
    """LO (Hz) of a receiver shifted so that a line at ``lo_shift_kms`` sits where V=0 would."""
    return LO_NOMINAL_HZ[half] * (1.0 - lo_shift_kms / C_KMS)


def draw_dispersion(rng, df0_dtaos_hz=DF0_DTAOS_HZ):
    """Per-segment (F0 at TAOS_REF_C, D1, D2) per half, Hz; F0 moves by ``df0_dtaos_hz`` per deg C."""
    return {h: {"F0_hz": F0_NOMINAL_HZ[h] + rng.normal(0, 0.5e6),
                "D1_hz": D1_NOMINAL_HZ * (1 + rng.normal(0, 0.003)),
                "D2_hz": D2_NOMINAL_HZ * (1 + rng.normal(0, 0.1)),
                "dF0_dTAOS_hz_per_c": float(df0_dtaos_hz), "taos_ref_c": TAOS_REF_C} for h in HALVES}


def if_frequency(disp, taos_c):
    """f_IF(c) per scan, Hz, shape (n, 725): F0 + k (TAOS - ref) + D1 (c-362) + D2 (c-362)^2."""
    x = np.arange(NCHAN) - CREF
    f0 = disp["F0_hz"] + disp["dF0_dTAOS_hz_per_c"] * (np.asarray(taos_c) - disp["taos_ref_c"])
    return f0[:, None] + (disp["D1_hz"] * x + disp["D2_hz"] * x**2)[None, :]


def line_temperature(lines, half, lo_hz, fif, v_geo, v_sc):
    """DSB line antenna temperature (K) of a source at (0,0), shape like ``fif``.

    A line at LSRK velocity V appears at nu0 (1 - (V + v_geo + v_sc)/c); the
    sky frequency of a channel is LO + f_IF (USB) or LO - f_IF (LSB).
    """
    out = np.zeros_like(fif)
    vshift = (v_geo + v_sc)[:, None]
    for band, amp, v0, fwhm in lines:
        if not band.startswith(half):
            continue
        side = 1.0 if band.endswith("USB") else -1.0
        nu0 = REST_FREQ_HZ[band]
        v_app = C_KMS * (1.0 - (lo_hz + side * fif) / nu0) - vshift
        out += amp * np.exp(-FOUR_LN2 * ((v_app - v0) / fwhm) ** 2)
    return out


def comb_temperature(fif, amps):
    """Comb lines at IF = n x 100 MHz (dict n -> K), Gaussian FWHM 1.5 MHz."""
    out = np.zeros_like(fif)
    for n, a in amps.items():
        out += a * np.exp(-FOUR_LN2 * ((fif - n * COMB_SPACING_HZ) / COMB_FWHM_HZ) ** 2)
    return out


def draw_comb_amps(rng, disp):
    """Comb amplitudes (K) for the teeth inside the band; the two brightest saturate."""
    x = np.array([-CREF, NCHAN - 1 - CREF])
    f = disp["F0_hz"] + disp["D1_hz"] * x + disp["D2_hz"] * x**2
    teeth = np.arange(int(np.ceil(f[0] / COMB_SPACING_HZ)), int(np.floor(f[1] / COMB_SPACING_HZ)) + 1)
    amps = rng.uniform(1500.0, 4000.0, len(teeth))
    amps[rng.choice(len(teeth), min(2, len(teeth)), replace=False)] = 12000.0
    return {int(n): float(a) for n, a in zip(teeth, amps)}


def passband(rng, n_t, g0):
    """Passband parameters of one half (``g0``: counts/K, the inner-channel mean gain at mid-segment,
    from reduce.simulate.swas_mission); evaluated by :func:`gain`."""
    return {"g0": float(g0), "tilt": rng.normal(0, 0.05), "curv": rng.normal(0, 0.05),
            "ripple_amp": rng.uniform(0.01, 0.02), "ripple_period_ch": rng.uniform(25, 60),
            "ripple_phase": rng.uniform(0, 2 * np.pi), "ripple_rate": rng.uniform(-0.2, 0.2) / max(n_t, 1.0)}


def gain(p, t_s, t_mid, walk=None):
    """G(c, t) in counts/K, shape (n, 725): smooth shape with edge roll-off (normalised to mean 1
    over the inner channels 25..699, so that g0 is their mean gain), a slowly moving ripple, and
    the relative gain fluctuation 1 + ``walk`` (n,) (None: 0; reduce.simulate.swas_mission)."""
    x = (np.arange(NCHAN) - CREF) / CREF
    shape = (1 - 0.35 * x**8) * (1 + p["tilt"] * x + p["curv"] * x**2)
    shape = shape / shape[25:NCHAN - 25].mean()
    phase = p["ripple_phase"] + p["ripple_rate"] * (np.asarray(t_s) - t_mid)
    rip = 1 + p["ripple_amp"] * np.sin(2 * np.pi * np.arange(NCHAN)[None, :] / p["ripple_period_ch"]
                                       + phase[:, None])
    fluct = 1.0 if walk is None else (1.0 + np.asarray(walk, dtype=float))[:, None]
    return p["g0"] * shape[None, :] * rip * fluct


def zero_level(rng):
    """Z(c) in counts, shape (725,), stable (ZERO scans are stable for months)."""
    x = (np.arange(NCHAN) - CREF) / CREF
    return rng.uniform(1500, 2500) * (1 + rng.normal(0, 0.05) * x + rng.normal(0, 0.03) * x**2)


def standing_wave(fif, amp, period_hz, phase):
    """CHOP standing-wave ripple (K) in the beam-1 scans."""
    return amp * np.sin(2 * np.pi * fif / period_hz + phase)


def radiometer_noise(rng, t_sys_in, inttime):
    """Gaussian noise (K) with sigma = (T_in + T_rx)/sqrt(B t), same shape as ``t_sys_in``."""
    sigma = t_sys_in / np.sqrt(NOISE_BW_HZ * np.asarray(inttime))[:, None]
    return sigma * rng.standard_normal(t_sys_in.shape)
