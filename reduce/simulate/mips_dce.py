"""What the imaging and SED MIPS simulators share about one DCE: the true Ge responsivity, the
pointing settle error, the spacecraft clock epoch and the raw PRIMARY header (ICD 2)."""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.time import Time

from .mips_cal import READTIME_GE, SAMPTIME_SI

SETTLE_SIGMA = 0.3  # (sim) arcsec per axis, true - commanded
RESP_AMP, RESP_PERIOD, RESP_MJD0 = 0.04, 0.25, 53000.0  # (sim)
SCLK_EPOCH = Time("1980-01-01T00:00:00", scale="utc")  # (sim)


def responsivity(chnl, mjd, *, seed=0):
    """True Ge responsivity (1 = nominal) at MJD (array-like)."""
    return 1.0 + RESP_AMP * np.sin(2 * np.pi * (np.asarray(mjd) - RESP_MJD0) / RESP_PERIOD
                                   + _resp_phase(chnl, seed))


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
