"""SWAS constants, the Planck radiation temperature J(T), the four bands and the
channel <-> IF dispersion (ICD §1 forward model); shared by the kernels of every step.
A channel c of a band sees sky frequency LO + f_IF(c) (USB) or LO - f_IF(c) (LSB).

All frequencies are in Hz, velocities in km/s, temperatures in K. A channel
is an AOS channel 0..724 of one receiver half; the dispersion is
``f_IF(c) = F0 + D1*(c - 362) + D2*(c - 362)**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import constants as const

C_KMS = const.c.to_value("km/s")  #: speed of light, km/s
H_OVER_K = (const.h / const.k_B).to_value("K s")  #: h/k, K/Hz

N_CHAN = 725  #: channels per AOS half
C_REF = 362  #: reference channel of the dispersion relation
T_BG = 2.97  #: K, cosmic background in the SWAS continuum bands (seed §2.5)
NOISE_BW = 1.5e6  #: Hz, AOS noise bandwidth per channel (radiometer equation)
EDGE_CHANNELS = 25  #: unreliable channels at each end of a coadd (seed §3)
COMB_SPACING = 100e6  #: Hz, comb lines sit at IF = n * 100 MHz exactly
SIDEBANDS = ("USB", "LSB")
HALVES = ("490", "550")


@dataclass(frozen=True)
class Dispersion:
    """Quadratic IF dispersion of one AOS half: f0 [Hz], d1 [Hz/chan], d2 [Hz/chan^2]."""

    f0: float
    d1: float
    d2: float
    c_ref: float = C_REF

    def if_freq(self, channel):
        """IF [Hz] of (fractional) channel(s), any shape."""
        x = np.asarray(channel, dtype=float) - self.c_ref
        return self.f0 + self.d1 * x + self.d2 * x * x

    def slope(self, channel):
        """d f_IF / d channel [Hz/chan] at channel(s)."""
        x = np.asarray(channel, dtype=float) - self.c_ref
        return self.d1 + 2.0 * self.d2 * x

    def channel(self, f_if):
        """Fractional channel of IF(s) [Hz]: the root of the quadratic nearest the linear guess."""
        f = np.asarray(f_if, dtype=float)
        if self.d2 == 0.0:
            return self.c_ref + (f - self.f0) / self.d1
        # numerically stable root of d2 x^2 + d1 x + (f0 - f) = 0 that tends to the linear one
        q = self.d1 * self.d1 - 4.0 * self.d2 * (self.f0 - f)
        x = 2.0 * (f - self.f0) / (self.d1 + np.sign(self.d1) * np.sqrt(q))
        return self.c_ref + x


#: nominal dispersions (ICD §1); the pipeline measures them per segment from COMB scans
NOMINAL_DISPERSION = {
    "490": Dispersion(2.4556e9, 1.0e6, 20.0),
    "550": Dispersion(3.0049e9, 1.0e6, 20.0),
}
#: nominal LO frequencies [Hz] (LOFREQ1, LOFREQ2)
NOMINAL_LO = {"490": 489.5050e9, "550": 553.7311e9}
#: primary-header keyword that holds each half's LO
LO_KEYWORD = {"490": "LOFREQ1", "550": "LOFREQ2"}


@dataclass(frozen=True)
class Band:
    """One of the four SWAS bands: a sideband of one receiver half."""

    name: str
    half: str  # '490' or '550'
    sideband: str  # 'USB' or 'LSB'
    rest_freq: float  # Hz
    line: str


BANDS = (
    Band("O2", "490", "LSB", 487.249376e9, "O2 3,3-1,2"),
    Band("CI", "490", "USB", 492.160651e9, "C I 3P1-3P0"),
    Band("13CO", "550", "LSB", 550.926285e9, "13CO 5-4"),
    Band("H2O", "550", "USB", 556.935988e9, "H2O 1(1,0)-1(0,1)"),
)
BANDS_BY_NAME = {b.name: b for b in BANDS}


def get_band(name):
    """The Band called `name` ('O2', 'CI', '13CO', 'H2O'); KeyError names the choices."""
    try:
        return BANDS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown SWAS band {name!r}; expected one of {sorted(BANDS_BY_NAME)}") from None


def planck_j(temperature, nu):
    """Planck radiation temperature J(T) = (h nu/k) / (exp(h nu / k T) - 1) [K].

    `temperature` [K] and `nu` [Hz] broadcast; J(0) = 0, negative or NaN T give NaN.
    """
    t = np.asarray(temperature, dtype=float)
    t0 = H_OVER_K * np.asarray(nu, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        j = t0 / np.expm1(t0 / t)
    return np.where(t == 0.0, 0.0, np.where(t < 0.0, np.nan, j))
