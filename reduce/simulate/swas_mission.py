"""Mission model of the SWAS simulator: slow instrument drifts and events to recover (issue 10).

:class:`MissionDrifts` (frozen; ``MissionDrifts()`` = the defaults, on in every simulation;
``MissionDrifts.off()`` = no drift, no step, no gain fluctuation) gives, in absolute mission days
(day 1 = 1998-11-01 = MJD 51118, so any subset of days shows the same model), per receiver half
h in (490, 550) (tuples are (490, 550)):

- **AOS gain drift**: the gain at mid-segment averaged over the inner channels (25..699; the
  passband shape of a segment is normalised to mean 1 there) is
  ``g0 = G_h (1 + rate_h (t_day - 1)) (1 + N(0, gain_scatter))`` counts/K, t_day - 1 = MJD(mid
  segment) - 51118. Defaults G = (8.0, 7.5) counts/K, rate = (-2e-4, -3e-4) per day, scatter
  2e-4 (0.02 %).
- **Tsys step**: ``T_rx = T_h (1 + N(0, t_rx_scatter)) + step_h`` for segments of mission day
  >= ``tsys_step_day`` (None: no step). Defaults T = (2300, 2650) K, scatter 0.5 %, step day 15,
  step (+100, +150) K; Tsys (DSB) = T_rx + J(2.97 K) as before.
- **Dispersion with TAOS**: F0 moves by ``df0_dtaos_hz_per_c`` (0.3 MHz per deg C) of the AOS
  temperature TAOS about 20 deg C (reduce.simulate.swas_model).
- **Gain fluctuations**: within a segment the gain of a half is multiplied by 1 + w(t), w a random
  walk (a power-law spectrum S(f) ~ f^-2, exponent 2) of diffusion q_h (variance q_h dt over dt
  seconds; w = 0 at mid-segment), common to all channels of the half and on top of the
  radiometric noise. For the estimator of reduce.stability.kernels.allan it gives a total-power
  Allan variance ``sigma_A^2(T) = a / T + q T / 3`` (Schieder & Kramer's beta = 1), minimal at
  the **Allan time** ``T_A = sqrt(3 a / q)``; a [s] is the white part: the total power is the mean
  over the inner channels 25..699 of counts - ZERO, normalised to mean 1, so a = dt sum(g_c^2) /
  (sum g_c)^2 / (B t_int) with the gain g_c of those channels (1 / (675 B) for a flat passband,
  B = 1.5 MHz, t_int = dt = 2 s). ``allan_time_tp_s`` = (15, 25) s sets q_h = 3 a_flat / T_A^2
  for the flat passband; each long-OFF segment's truth states its own a and T_A (its passband).
  The spectroscopic Allan variance (channel differences) does not see w: no spectroscopic Allan
  time is injected.
- **Long OFF runs**: on mission days ``long_off_first_day`` + k ``long_off_every_days`` (3, 13,
  23, ...) the last segment of the day in :func:`reduce.simulate.swas_plan.plan_swas` is a NOD
  segment with ``long_off_scans`` (3600 = 2 h) continuous OFF scans after its science scans
  (no ZERO, COMB, spike, excursion or lost read inside), so that an Allan time exists.

The simulator writes the model into ``swas_truth.json`` under ``"mission"`` (:meth:`truth`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reduce.simulate import swas_model as M
from reduce.simulate.orbit import MISSION_EPOCH_MJD as DAY1_MJD   # mission day 1 (1998-11-01 00:00 UTC)

INNER = slice(25, M.NCHAN - 25)   #: channels of the total power (reduce.stability.swas.INNER)
N_INNER = M.NCHAN - 50
SCAN_S = 2.0


def _pair(v):
    return {h: float(x) for h, x in zip(M.HALVES, v)}


@dataclass(frozen=True)
class MissionDrifts:
    """Slow drifts and events of a simulated SWAS mission (module docstring); tuples per half
    (490, 550)."""

    gain0_counts_per_k: tuple = (8.0, 7.5)
    gain_rate_per_day: tuple = (-2e-4, -3e-4)
    gain_scatter: float = 2e-4
    t_rx_k: tuple = (2300.0, 2650.0)
    t_rx_scatter: float = 0.005
    tsys_step_day: int | None = 15
    tsys_step_k: tuple = (100.0, 150.0)
    df0_dtaos_hz_per_c: float = M.DF0_DTAOS_HZ
    allan_time_tp_s: tuple | None = (15.0, 25.0)
    long_off_scans: int = 3600
    long_off_first_day: int = 3
    long_off_every_days: int = 10

    @classmethod
    def off(cls):
        """No gain drift, no Tsys step, no gain fluctuation (per-segment scatter, the TAOS
        dispersion and the long OFF segments of the plan stay)."""
        return cls(gain_rate_per_day=(0.0, 0.0), tsys_step_day=None, allan_time_tp_s=None)

    def with_(self, **kw):
        return replace(self, **kw)

    # ---------------------------------------------------------------- per segment
    def gain0(self, half, mjd_mid, rng):
        """g0 [counts/K] of ``half`` for a segment whose mid time is ``mjd_mid``."""
        k = M.HALVES.index(half)
        drift = 1.0 + self.gain_rate_per_day[k] * (mjd_mid - DAY1_MJD)
        return float(self.gain0_counts_per_k[k] * drift * (1.0 + rng.normal(0.0, self.gain_scatter)))

    def step_k(self, half, day):
        """The Tsys step [K] in effect on mission ``day``."""
        if self.tsys_step_day is None or day < self.tsys_step_day:
            return 0.0
        return float(self.tsys_step_k[M.HALVES.index(half)])

    def t_rx(self, half, day, rng):
        """Receiver temperature [K] of ``half`` for a segment of mission ``day``."""
        k = M.HALVES.index(half)
        return float(self.t_rx_k[k] * (1.0 + rng.normal(0.0, self.t_rx_scatter)) + self.step_k(half, day))

    def q_per_s(self, half):
        """Diffusion q [1/s] of the relative-gain random walk of ``half`` (0: none)."""
        if self.allan_time_tp_s is None:
            return 0.0
        t_a = self.allan_time_tp_s[M.HALVES.index(half)]
        return 3.0 * white_a(None) / t_a ** 2

    def gain_walk(self, half, t_s, t_mid, rng):
        """w(t) (n,) at scan mid times ``t_s`` [s]: the random walk, 0 at ``t_mid``."""
        t = np.asarray(t_s, dtype=float)
        q = self.q_per_s(half)
        if q <= 0 or t.size == 0:
            return np.zeros(t.size)
        dt = np.diff(t, prepend=t[0])
        w = np.cumsum(np.sqrt(q * dt) * rng.standard_normal(t.size))
        return w - np.interp(t_mid, t, w)

    def is_long_off_day(self, day):
        return (self.long_off_scans > 0 and day >= self.long_off_first_day
                and (day - self.long_off_first_day) % self.long_off_every_days == 0)

    def truth(self):
        """The ``"mission"`` block of swas_truth.json (without the per-run list)."""
        halves = {}
        for h in M.HALVES:
            k = M.HALVES.index(h)
            q = self.q_per_s(h)
            halves[h] = {
                "gain0_counts_per_k": float(self.gain0_counts_per_k[k]),
                "gain_rate_per_day": float(self.gain_rate_per_day[k]),
                "t_rx_k": float(self.t_rx_k[k]),
                "tsys_step_k": float(self.tsys_step_k[k]) if self.tsys_step_day is not None else 0.0,
                "df0_dtaos_hz_per_c": float(self.df0_dtaos_hz_per_c),
                "gain_walk_q_per_s": q,
                "allan_time_tp_flat_s": float(np.sqrt(3 * white_a(None) / q)) if q > 0 else None}
        return {
            "day1_mjd": DAY1_MJD,
            "gain_model": "g0 = gain0 (1 + rate (MJD_mid - day1_mjd)) (1 + N(0, gain_scatter)); g0 = inner-channel "
                          "(25..699) mean gain at mid-segment [counts/K]",
            "gain_scatter": float(self.gain_scatter),
            "t_rx_model": "T_rx = t_rx (1 + N(0, t_rx_scatter)) + tsys_step (mission day >= tsys_step_day)",
            "t_rx_scatter": float(self.t_rx_scatter),
            "tsys_step_day": self.tsys_step_day,
            "tsys_step_mjd": None if self.tsys_step_day is None else DAY1_MJD + self.tsys_step_day - 1,
            "gain_walk": "relative gain x (1 + w(t)), w a random walk (S ~ f^-2) of diffusion q, w(mid) = 0, common "
                         "to the channels of a half; total-power Allan variance (mean over channels 25..699 of "
                         "counts - ZERO, normalised to mean 1; reduce.stability.kernels.allan) a / T + q T / 3, "
                         "Allan time sqrt(3 a / q)",
            "white_a_flat_s": white_a(None),
            "long_off": {"scans": int(self.long_off_scans), "first_day": int(self.long_off_first_day),
                         "every_days": int(self.long_off_every_days)},
            "halves": halves}


DEFAULT = MissionDrifts()


def white_a(gain_row, *, dt=SCAN_S, inttime=SCAN_S):
    """White part a [s] of the total-power Allan variance (module docstring) for a gain row
    (725,) [counts/K]; None: a flat passband (1 / (675 B) for dt = t_int)."""
    if gain_row is None:
        return dt / (N_INNER * M.NOISE_BW_HZ * inttime)
    g = np.asarray(gain_row, dtype=float)[INNER]
    return float(dt * np.sum(g * g) / np.sum(g) ** 2 / (M.NOISE_BW_HZ * inttime))


def resolve(drifts):
    """The MissionDrifts to use: ``None`` -> the defaults; False -> :meth:`MissionDrifts.off`."""
    if drifts is None:
        return DEFAULT
    if drifts is False:
        return MissionDrifts.off()
    if not isinstance(drifts, MissionDrifts):
        raise TypeError(f"drifts: expected a MissionDrifts, None or False, got {type(drifts).__name__}")
    return drifts
