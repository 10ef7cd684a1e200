"""What the imaging and SED MIPS simulators share about one DCE: the true Ge responsivity and
first-read (zero) level with their slow mission drifts, the pointing settle error, the spacecraft
clock epoch and the raw PRIMARY header (ICD 2).

Mission drifts (all sim), functions of absolute MJD, so any subset of AORs shows the same model.
The instrument is stable until MISSION_MJD0 = 53750.0 (2006-01-15) and drifts linearly in
max(mjd - MISSION_MJD0, 0) from then on (the test suite's AORs observe in MJD 53400-53705, before
it: their data are unchanged by the drifts):

* responsivity (70, 160 um): ``responsivity(chnl, mjd)`` = 1 + RESP_AMP sin(2 pi (mjd - RESP_MJD0) /
  RESP_PERIOD + phase[chnl]) + RESP_DRIFT max(mjd - MISSION_MJD0, 0) + RESP_JUMP H(mjd -
  RESP_JUMP_MJD): a 4 % 6 h oscillation, a slow drift of -0.5 % per 100 days (both arrays) and a
  +3 % jump at MJD 53800.0 (2006-03-06, 0h UTC);
* zero level (first read of imaging Ge DCEs; the SED simulator keeps a constant one): the mean
  bias ARRAYS[chnl].bias (-28000 DN) + ``zero_drift(chnl, mjd)`` = ZERO_DRIFT[chnl] max(mjd -
  MISSION_MJD0, 0) DN (+0.5 DN/day at 70 um, +0.3 DN/day at 160 um: +183 DN after a year,
  0.3 % of the A/D headroom), plus N(0, 300) DN per pixel and DCE.

The SED simulator (mips_sed) draws its responsivity from the same function."""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.time import Time

from .mips_cal import ARRAYS, READTIME_GE, SAMPTIME_SI

SETTLE_SIGMA = 0.3  # (sim) arcsec per axis, true - commanded
RESP_AMP, RESP_PERIOD, RESP_MJD0 = 0.04, 0.25, 53000.0  # (sim)
MISSION_MJD0 = 53750.0  # (sim) MJD from which the slow mission drifts run (zero before)
RESP_DRIFT = -5.0e-5  # (sim) responsivity change per day (-0.5 % per 100 days)
RESP_JUMP, RESP_JUMP_MJD = 0.03, 53800.0  # (sim) responsivity jump and its MJD (UTC)
ZERO_DRIFT = {2: 0.5, 3: 0.3}  # (sim) Ge zero-level (first-read bias) drift, DN per day
BIAS_SIGMA = 300.0  # (sim) DN, Ge first-read level scatter per pixel and DCE
SCLK_EPOCH = Time("1980-01-01T00:00:00", scale="utc")  # (sim)


def responsivity(chnl, mjd, *, seed=0):
    """True Ge responsivity (1 = nominal) at MJD (array-like): oscillation + mission drift + jump."""
    t = np.asarray(mjd, np.float64)
    return (1.0 + RESP_AMP * np.sin(2 * np.pi * (t - RESP_MJD0) / RESP_PERIOD + _resp_phase(chnl, seed))
            + RESP_DRIFT * _since_mission_mjd0(t) + RESP_JUMP * (t >= RESP_JUMP_MJD))


def _since_mission_mjd0(t):
    """Days since MISSION_MJD0 (0 before it)."""
    return np.maximum(np.asarray(t, np.float64) - MISSION_MJD0, 0.0)


def zero_drift(chnl, mjd):
    """Mission drift [DN] of the Ge first-read (zero) level at MJD, added to ARRAYS[chnl].bias."""
    return ZERO_DRIFT[chnl] * _since_mission_mjd0(mjd)


def mission_truth(seed=0):
    """The "responsivity" and "zero_level" blocks of the truth JSON (module docstring)."""
    return {"responsivity": {
        "model": "1 + amp*sin(2*pi*(mjd - mjd0)/period_d + phase[chnl]) + drift_per_day*max(mjd - mission_mjd0, 0)"
                 " + jump*(mjd >= jump_mjd)",
        "amp": RESP_AMP, "period_d": RESP_PERIOD, "mjd0": RESP_MJD0,
        "phase": {str(c): _resp_phase(c, seed) for c in (2, 3)},
        "drift_per_day": RESP_DRIFT, "mission_mjd0": MISSION_MJD0, "jump": RESP_JUMP,
        "jump_mjd": RESP_JUMP_MJD},
        "zero_level": {
            "model": "bias[chnl] + drift_dn_per_day[chnl]*max(mjd - mission_mjd0, 0)"
                     " + N(0, pixel_sigma_dn) per pixel and DCE",
            "bias": {str(c): ARRAYS[c].bias for c in (2, 3)},
            "drift_dn_per_day": {str(c): v for c, v in ZERO_DRIFT.items()},
            "mission_mjd0": MISSION_MJD0, "pixel_sigma_dn": BIAS_SIGMA}}


def _resp_phase(chnl, seed):
    return float(np.random.default_rng(np.random.SeedSequence([seed, 0, chnl, 2])).uniform(0, 2 * np.pi))


def _header(aor, chnl, index, plan, tr, c):
    """PRIMARY header cards of a raw DCE (ICD §2)."""
    h = fits.Header()
    mid = Time(tr["mjd"], format="mjd", scale="utc")
    cards = [
        ("TELESCOP", "Spitzer", "observatory"), ("INSTRUME", "MIPS", "instrument"),
        ("CHNLNUM", chnl, "1=24um 2=70um 3=160um"), ("AORKEY", aor.aorkey, "observation request"),
        ("EXPID", tr["expid"], "exposure counter"), ("DCENUM", tr["dcenum"], "DCE within exposure"),
        ("DCEID", aor.aorkey * 100_000 + (chnl - 1) * 20_000 + index, "DCE identifier"),
        ("AOT_TYPE", aor.aot_type, "observation template"), ("OBJECT", aor.object, "target"),
        ("PROGID", aor.progid, "program"), ("EXPTIME", tr["exptime"], "[s] exposure time"),
        ("SAMPTIME", SAMPTIME_SI if chnl == 1 else READTIME_GE, "[s] sample/read interval"),
        ("NREADS", tr["nreads"], "samples (24um) or reads per DCE"),
        ("MJD_OBS", tr["mjd"], "[d] DCE mid-time, MJD UTC"),
        ("DATE-OBS", mid.isot, "DCE mid-time, UTC"),
        ("SCLK_OBS", float(plan["sclk"][index]), "[s] spacecraft clock at mid-time"),
        ("RA_RQST", tr["ra_rqst"], "[deg] commanded array centre"),
        ("DEC_RQST", tr["dec_rqst"], "[deg] commanded array centre"),
        ("RA_REF", tr["ra_ref"], "[deg] reconstructed array centre"),
        ("DEC_REF", tr["dec_ref"], "[deg] reconstructed array centre"),
        ("PA_REF", float(aor.pa), "[deg] PA of array +y axis, E of N"),
        ("RADESYS", "ICRS", "frame of RA/DEC keywords"),
    ]
    if chnl > 1:
        cards.append(("STIMFLSH", int(tr["stim"]), "1 if the stimulator flashed"))
    cards += [("CALVERS", c["calvers"], "calibration set used by the simulator"),
              ("BUNIT", "DN/sample" if chnl == 1 else "DN", "plane 0 / reads"),
              ("ORIGIN", "skyreduce simulator", "reduce.simulate.mips")]
    for k, v, com in cards:
        h[k] = (v, com)
    return h
