"""SWAS level-0.5 ("LH") simulator: writes ``swas_lh_DDDD_SSS.fits`` per ICD §1, with truth.

API::

    plan_swas(*, days=1, seed=0, start_day=1, segments_per_day=None, drifts=None) -> list[SegmentSpec]
    simulate_segment(spec, *, seed, drifts=None) -> (HDUList, truth dict)
    simulate_swas(outdir, *, days=1, seed=0, start_day=1, segments_per_day=None,
                  specs=None, client=None, drifts=None) -> {"files", "truth", "n_scans", "bytes"}

Mission drifts (on by default; reduce.simulate.swas_mission.MissionDrifts, ``drifts=None``: the
defaults, ``MissionDrifts.off()``: none): the AOS gain drifts linearly over the mission
(-2e-4 / -3e-4 per day for 490 / 550 GHz), the receiver temperature steps up (+100 / +150 K)
from mission day 15, F0 moves with TAOS (0.3 MHz per deg C), the gain of each half fluctuates
as a random walk within a segment (total-power Allan times 15 / 25 s for a flat passband), and
on days 3, 13, 23, ... the plan ends the day with a segment holding 3600 continuous OFF scans.

Deterministic: the RNG of a segment is ``SeedSequence([seed, day, segment])``;
no wall-clock keyword is written, so one seed gives byte-identical files.

Truth (never read by the pipeline): ``OUTDIR/swas_truth.json`` =
``{"format": "skyreduce-swas-truth-1", "seed", "npz": "swas_truth.npz", "mission": {...},
"segments": [...]}``; ``mission`` is MissionDrifts.truth() (day1_mjd, gain_scatter, t_rx_scatter,
tsys_step_day, tsys_step_mjd, white_a_flat_s, long_off {scans, first_day, every_days}, per half
under ``halves`` {"490","550"}: gain0_counts_per_k, gain_rate_per_day, t_rx_k, tsys_step_k,
df0_dtaos_hz_per_c, gain_walk_q_per_s, allan_time_tp_flat_s; the models in words) plus
``long_off_segments``: [{file, day, segment, first_scan, n_scans, white_a_s, q_per_s,
allan_time_tp_s}] (the segments' ``long_off`` entries). ``segments`` holds
one entry per segment with (units in the key names)

- ``file``, ``day``, ``segment``, ``object``, ``mode``, ``ra_deg``, ``dec_deg``,
  ``vsource_kms``, ``lo_shift_kms``, ``start_mjd``, ``n_scans``, ``end_cal``;
- ``lofreq_hz`` {"490","550"}: LO = nominal x (1 - lo_shift/c);
- ``dispersion`` {"490","550"}: ``F0_hz`` (at ``taos_ref_c``), ``D1_hz``, ``D2_hz``,
  ``dF0_dTAOS_hz_per_c``, ``taos_ref_c``; per scan
  f_IF(c) = F0 + dF0_dTAOS (TAOS - taos_ref) + D1 (c-362) + D2 (c-362)^2 (TAOS from the file);
- ``t_rx_k``, ``tsys_k`` (= T_rx + J(2.97 K)), ``tsys_step_k`` (the mission step included in
  T_rx), ``gain0_counts_per_k`` (inner-channel mean gain at mid-segment) {"490","550"};
  ``t_bg_k``; ``thot_mean_k``;
- ``long_off``: null, or the continuous OFF run {first_scan, n_scans, white_a_s, q_per_s,
  allan_time_tp_s} ({"490","550"}; T_A = sqrt(3 a / q) for the total power over channels 25..699,
  a from this segment's passband: see reduce.simulate.swas_mission);
- ``lines``: list of {band ("490LSB".."550USB"), species, rest_freq_hz, amp_k (as it appears
  in T_in at (0,0), DSB), v_lsr_kms, fwhm_kms}; ``continuum_k`` (DSB, in T_in at (0,0));
  ``source_fwhm_arcmin``, ``beam_fwhm_arcmin``: the source term of a scan is scaled by
  ``coupling`` (npz) = exp(-4 ln2 r^2/(beam^2+source^2)), r the actual pointing offset;
- ``nod_offset_arcmin``, ``chop_offset_arcmin`` [dlam, dbet]; ``map_grid_arcmin`` (MAP);
- ``chop_ripple`` {"490","550": {amp_k, period_hz, phase_rad}} or null: added to T_in of
  beam-1 scans as amp sin(2 pi f_IF/period + phase) (CHOP: every ON; CHOP_NOD: ON in nod A,
  OFF in nod B, so it cancels in the averaged pairs);
- ``comb``: {spacing_hz, fwhm_hz, amps_k {"490","550": {n: K}}}; ``saturated_scans``;
- ``spikes``: [[scan, half, channel, amp_counts]]; ``baseline_excursions``:
  [{scan, amp_k {"490","550"}, order}] (amp x Legendre P_order over the band, in T_in);
- ``ground_gaps``: [{start_mjd, end_mjd, first_scan_after, hysteresis_frac, tau_s}] (after the
  gap the counts carry hysteresis_frac x G Tsys (1+0.3x) exp(-(t-end)/tau));
- ``lost_reads``: scan indices (INTTIME < 2, QUALITY bit 1);
- ``noise_bandwidth_hz``; ``npz_keys``: names of the arrays in the npz.

``swas_truth.npz`` holds per segment, under ``<file stem>.<name>``: ``time_mjd``, ``v_sc_kms``,
``v_geo_kms`` (v_obs = V + v_geo + v_sc per line), ``coupling``, and at mid-segment
``gain490``/``gain550`` (counts/K) and ``zero490``/``zero550`` (counts), shape (725,).
Scan indices equal the SCAN column (= row index).
"""

import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from reduce.io.atomic import atomic_path
from reduce.io.fitsio import add_checksums

from reduce.simulate import swas_model as M
from reduce.simulate.swas_mission import MissionDrifts, resolve, white_a
from reduce.simulate.orbit import (MISSION_EPOCH_MJD, orbital_period_s, spacecraft_state,
                                   v_geocentre, v_spacecraft)
from reduce.simulate.swas_plan import (REST_FREQ_HZ, SPECIES, SegmentSpec, catalog_entry,
                                       plan_swas)
from reduce.simulate.swas_timeline import COMB, HOT, OFF, ON, SCANTYPES, ZERO, build_timeline
from reduce.simulate.truthio import write_npz

__all__ = ["SegmentSpec", "MissionDrifts", "plan_swas", "simulate_segment", "simulate_swas", "file_name"]

log = logging.getLogger(__name__)
BEAM_FWHM_ARCMIN = 4.0         # (sim) SWAS beam 3.3' x 4.5'
POINT_JITTER_ARCMIN = 0.02     # (sim)


def file_name(day, segment):
    """``swas_lh_DDDD_SSS.fits``."""
    return f"swas_lh_{day:04d}_{segment:03d}.fits"


def _source(spec):
    cont, size, lines = catalog_entry(spec.object)[3:]
    lines = spec.lines if spec.lines is not None else lines
    cont = spec.continuum_k if spec.continuum_k is not None else cont
    size = spec.source_fwhm_arcmin if spec.source_fwhm_arcmin is not None else size
    return float(cont), float(size), tuple(tuple(x) for x in lines)


def _pointing(spec, tl, rng):
    """Actual offsets (arcmin), RA/DEC (deg) and source coupling per scan."""
    n = len(tl["stype"])
    dl = tl["dlam"] + tl["lag_dlam"] + rng.normal(0, POINT_JITTER_ARCMIN, n)
    db = tl["dbet"] + tl["lag_dbet"] + rng.normal(0, POINT_JITTER_ARCMIN, n)
    dec = spec.dec + db / 60.0
    ra = np.mod(spec.ra + dl / (60.0 * np.cos(np.radians(spec.dec))), 360.0)
    return dl, db, ra, dec


def _housekeeping(rng, t0_mjd, t_end_s, phase):
    """HK rows every 10 s over the segment span (also through gaps)."""
    t = np.arange(0.0, t_end_s + 10.0, 10.0)
    w = np.sin(2 * np.pi * t / orbital_period_s() + phase)
    col = lambda base, amp, noise: (base + amp * w + rng.normal(0, noise, len(t))).astype(np.float32)
    return {"TIME": t0_mjd + t / 86400.0,
            "TMIX1": col(rng.uniform(170, 180), 0.5, 0.02), "TMIX2": col(rng.uniform(170, 180), 0.5, 0.02),
            "TLO1": col(rng.uniform(195, 205), 0.8, 0.02), "TLO2": col(rng.uniform(195, 205), 0.8, 0.02),
            "IBIAS1": col(rng.uniform(0.8, 1.2), 0.002, 0.001), "IBIAS2": col(rng.uniform(0.8, 1.2), 0.002, 0.001)}


def _artefacts(spec, rng, stype, n, long_off):
    """Spike list [(scan, half, chan, counts)] and excursion list (none in the long OFF block)."""
    sky = np.flatnonzero(np.isin(stype, (ON, OFF)) & ~long_off)
    n_sp = spec.n_spikes if spec.n_spikes is not None else n // 150 + 1
    spikes = [(int(rng.choice(sky)), str(rng.choice(M.HALVES)), int(rng.integers(30, M.NCHAN - 30)),
               float(rng.uniform(300, 3000))) for _ in range(n_sp)]
    n_ex = spec.n_excursions if spec.n_excursions is not None else int(rng.integers(2, 4))
    ex = [{"scan": int(s), "order": int(rng.integers(1, 3)),
           "amp_k": {h: float(rng.choice([-1, 1]) * rng.uniform(5, 15)) for h in M.HALVES}}
          for s in np.sort(rng.choice(sky, min(n_ex, len(sky)), replace=False))]
    return spikes, ex


def _render_half(h, ctx, rng):
    """AOS counts (n, 725) float64, CONT (n,) and the truth of half ``h``."""
    tl, n = ctx["tl"], len(ctx["tl"]["stype"])
    st = tl["stype"]
    lo = M.lo_frequency(h, ctx["spec"].lo_shift_kms)
    disp = ctx["disp"][h]
    fif = M.if_frequency(disp, ctx["taos"])
    mission = ctx["mission"]
    t_rx = mission.t_rx(h, ctx["spec"].day, rng)
    g0 = mission.gain0(h, ctx["t0"] + ctx["t_mid"] / 86400.0, rng)
    gp = M.passband(rng, ctx["t_s"][-1], g0)
    g = M.gain(gp, ctx["t_s"], ctx["t_mid"], ctx["walk"][h])
    z = M.zero_level(rng)
    j_bg = M.planck_j(M.T_BG_K, lo)
    t_in = np.full((n, M.NCHAN), j_bg)
    t_in[st == HOT] = M.planck_j(ctx["thot"][st == HOT], lo)[:, None]
    src = M.line_temperature(ctx["lines"], h, lo, fif, ctx["v_geo"], ctx["v_sc"]) + ctx["cont"]
    t_in += ctx["coupling"][:, None] * src
    t_in[st == COMB] += M.comb_temperature(fif[st == COMB], ctx["comb"][h])
    rip = ctx["ripple"][h] if ctx["ripple"] else None
    if rip:
        b1 = tl["beam1"]
        t_in[b1] += M.standing_wave(fif[b1], rip["amp_k"], rip["period_hz"], rip["phase_rad"])
    x = (np.arange(M.NCHAN) - M.CREF) / M.CREF
    for ex in ctx["excursions"]:
        t_in[ex["scan"]] += ex["amp_k"][h] * np.polynomial.legendre.Legendre.basis(ex["order"])(x)
    noisy = t_in + t_rx + M.radiometer_noise(rng, t_in + t_rx, tl["inttime"])
    counts = z[None, :] + g * noisy
    zero = st == ZERO
    counts[zero] = z[None, :] + M.ZERO_NOISE_COUNTS * rng.standard_normal((zero.sum(), M.NCHAN))
    tsys = t_rx + j_bg
    for gap in ctx["gaps"]:
        after = ctx["t_s"] >= gap["end_s"]
        decay = np.exp(-(ctx["t_s"][after] - gap["end_s"]) / gap["tau_s"])
        counts[after] += gap["hysteresis_frac"] * tsys * g[after] * (1 + 0.3 * x) * decay[:, None]
    for s, hh, c, a in ctx["spikes"]:
        if hh == h:
            counts[s, c] += a
    # continuum detector: band-averaged T_in, its own zero and gain
    z_r, g_r = rng.uniform(800, 1200), rng.uniform(4, 6) * (1 + 0.005 * (ctx["t_s"] - ctx["t_mid"]) / 1800)
    tbar = t_in.mean(axis=1) + t_rx
    cont = z_r + g_r * tbar * (1 + rng.standard_normal(n) / np.sqrt(M.CONT_BW_HZ * tl["inttime"]))
    cont[zero] = z_r + 0.5 * rng.standard_normal(zero.sum())
    counts = np.clip(counts, 0.0, M.SATURATION)
    truth = {"lo": lo, "t_rx": float(t_rx), "tsys": float(tsys), "g0": g0,
             "gain_mid": M.gain(gp, np.array([ctx["t_mid"]]), ctx["t_mid"])[0], "zero": z}
    return counts, cont, truth


def _context(spec, ss, mission):
    """Draw the segment's timeline, orbit, Doppler and instrument state."""
    r_tl, r_pt, r_inst, r_art = (np.random.default_rng(s) for s in ss.spawn(4))
    tl = build_timeline(spec, r_tl)
    start_s = spec.start_s if spec.start_s is not None else (spec.segment - 1) * 5400.0 + 300.0
    t0 = MISSION_EPOCH_MJD + (spec.day - 1) + start_s / 86400.0
    t_s = tl["t_s"]
    mjd = t0 + t_s / 86400.0
    pos, vel = spacecraft_state(mjd)
    cont, size, lines = _source(spec)
    dl, db, ra, dec = _pointing(spec, tl, r_pt)
    sky = np.isin(tl["stype"], (ON, OFF))
    coupling = np.where(sky, np.exp(-M.FOUR_LN2 * (dl**2 + db**2) / (BEAM_FWHM_ARCMIN**2 + size**2)), 0.0)
    orb_phase = 2 * np.pi * (mjd - MISSION_EPOCH_MJD) * 86400.0 / orbital_period_s()
    taos = r_inst.uniform(18.0, 22.0) + 0.4 * np.sin(orb_phase + r_inst.uniform(0, 2 * np.pi))
    thot = (r_inst.uniform(275.0, 290.0) + 0.3 * np.sin(orb_phase + r_inst.uniform(0, 2 * np.pi))
            + r_inst.normal(0, 0.2) * (t_s - t_s.mean()) / 1800.0)
    disp = M.draw_dispersion(r_inst, mission.df0_dtaos_hz_per_c)
    comb = {h: M.draw_comb_amps(r_inst, disp[h]) for h in M.HALVES}
    ripple = None
    if spec.mode in ("CHOP", "CHOP_NOD"):
        ripple = {h: {"amp_k": float(r_inst.uniform(0.2, 0.5)), "period_hz": float(r_inst.uniform(40e6, 120e6)),
                      "phase_rad": float(r_inst.uniform(0, 2 * np.pi))} for h in M.HALVES}
    gaps = []
    if tl["gap"]:
        gaps.append(dict(tl["gap"], hysteresis_frac=float(r_inst.uniform(0.02, 0.05)),
                         tau_s=float(r_inst.uniform(20.0, 30.0))))
    spikes, excursions = _artefacts(spec, r_art, tl["stype"], len(t_s), tl["long_off"])
    return {"spec": spec, "mission": mission, "tl": tl, "t0": t0, "t_s": t_s, "t_mid": float(t_s.mean()), "mjd": mjd,
            "pos": pos, "vel": vel, "v_sc": v_spacecraft(vel, spec.ra, spec.dec),
            "v_geo": v_geocentre(mjd, spec.ra, spec.dec), "dl": dl, "db": db, "ra": ra, "dec": dec,
            "coupling": coupling, "taos": taos, "thot": thot, "disp": disp, "comb": comb, "ripple": ripple,
            "gaps": gaps, "spikes": spikes, "excursions": excursions, "cont": cont, "size": size,
            "lines": lines, "roll": np.mod(r_inst.uniform(0, 360) + 0.002 * t_s, 360.0),
            "hk_phase": r_inst.uniform(0, 2 * np.pi), "r_hk": np.random.default_rng(ss.spawn(1)[0])}


def _primary(spec, ctx, lofreq, n):
    h = fits.Header()
    cards = [("TELESCOP", "SWAS", "Submillimeter Wave Astronomy Satellite"),
             ("INSTRUME", "SWAS-AOS", "acousto-optical spectrometer"),
             ("LHVERSN", 1, "level-0.5 ICD version"), ("MISSDAY", spec.day, "mission day (1 = 1998-11-01)"),
             ("SEGMENT", spec.segment, "segment number within the day"),
             ("OBSMODE", spec.mode, "observing mode"), ("OBJECT", spec.object, "target name as scheduled"),
             ("RA", float(spec.ra), "[deg] ICRS right ascension of (0,0)"),
             ("DEC", float(spec.dec), "[deg] ICRS declination of (0,0)"),
             ("RADESYS", "ICRS", "reference frame of RA, DEC"),
             ("VSOURCE", float(spec.vsource), "[km/s] catalogue LSRK velocity"),
             ("LOFREQ1", float(lofreq["490"]), "[Hz] LO frequency, 490 GHz receiver"),
             ("LOFREQ2", float(lofreq["550"]), "[Hz] LO frequency, 550 GHz receiver"),
             ("DATE-OBS", Time(ctx["mjd"][0], format="mjd", scale="utc").isot, "first scan mid-time (UTC)"),
             ("TIMESYS", "UTC", "time scale of DATE-OBS and TIME"),
             ("NSCANS", n, "rows in SCANS"),
             ("ORIGIN", "skyreduce simulator", "simulated data, not flight data"),
             ("CREATOR", "reduce.simulate.swas", "program that wrote this file")]
    for k, v, c in cards:
        h[k] = (v, c)
    return fits.PrimaryHDU(header=h)


def _scans_hdu(ctx, quality):
    tl, n = ctx["tl"], len(ctx["t_s"])
    cols = [fits.Column("SCAN", "J", array=np.arange(n, dtype=np.int32)),
            fits.Column("TIME", "D", unit="d", array=ctx["mjd"]),
            fits.Column("SCANTYPE", "4A", array=np.array([SCANTYPES[i] for i in tl["stype"]])),
            fits.Column("INTTIME", "E", unit="s", array=tl["inttime"].astype(np.float32)),
            fits.Column("RA", "D", unit="deg", array=ctx["ra"]),
            fits.Column("DEC", "D", unit="deg", array=ctx["dec"]),
            fits.Column("DLAM", "E", unit="arcmin", array=ctx["dl"].astype(np.float32)),
            fits.Column("DBET", "E", unit="arcmin", array=ctx["db"].astype(np.float32)),
            fits.Column("ROLL", "E", unit="deg", array=ctx["roll"].astype(np.float32)),
            fits.Column("SCPOS", "3D", unit="km", array=ctx["pos"]),
            fits.Column("SCVEL", "3D", unit="km/s", array=ctx["vel"]),
            fits.Column("THOT", "E", unit="K", array=ctx["thot"].astype(np.float32)),
            fits.Column("TAOS", "E", unit="Celsius", array=ctx["taos"].astype(np.float32)),
            fits.Column("CONT", "2E", unit="count", array=ctx["cont_det"].astype(np.float32)),
            fits.Column("QUALITY", "I", array=quality.astype(np.int16))]
    hdu = fits.BinTableHDU.from_columns(cols, name="SCANS")
    hdu.header["TIMESYS"] = ("UTC", "TIME is MJD (UTC)")
    return hdu


def _hk_hdu(hk):
    units = {"TIME": "d", "TMIX1": "K", "TMIX2": "K", "TLO1": "K", "TLO2": "K", "IBIAS1": "mA", "IBIAS2": "mA"}
    cols = [fits.Column(k, "D" if k == "TIME" else "E", unit=units[k], array=v) for k, v in hk.items()]
    return fits.BinTableHDU.from_columns(cols, name="HK")


def simulate_segment(spec: SegmentSpec, *, seed: int, drifts=None):
    """One segment as an in-memory HDUList and its truth dict (arrays under ``"arrays"``);
    ``drifts``: the mission model (reduce.simulate.swas_mission; None: the defaults)."""
    mission = resolve(drifts)
    ctx = _context(spec, np.random.SeedSequence([seed, spec.day, spec.segment]), mission)
    n = len(ctx["t_s"])
    ctx["walk"] = {h: mission.gain_walk(h, ctx["t_s"], ctx["t_mid"], np.random.default_rng(
        np.random.SeedSequence([seed, spec.day, spec.segment, 1 + k, 100]))) for k, h in enumerate(M.HALVES)}
    halves, conts, truths = {}, [], {}
    for k, h in enumerate(M.HALVES):
        rng = np.random.default_rng(np.random.SeedSequence([seed, spec.day, spec.segment, 1 + k]))
        halves[h], c, truths[h] = _render_half(h, ctx, rng)
        conts.append(c)
    ctx["cont_det"] = np.stack(conts, axis=-1)
    quality = np.zeros(n, dtype=np.int16)
    quality[ctx["tl"]["lost"]] |= 1
    sat = np.zeros(n, bool)
    for h in M.HALVES:
        sat |= (halves[h] >= M.SATURATION).any(axis=1)
    quality[sat] |= 2
    quality[ctx["tl"]["settle"]] |= 4
    lofreq = {h: truths[h]["lo"] for h in M.HALVES}
    hk = _housekeeping(ctx["r_hk"], ctx["t0"], float(ctx["t_s"][-1] + 1.0), ctx["hk_phase"])
    hdul = fits.HDUList([_primary(spec, ctx, lofreq, n), _scans_hdu(ctx, quality),
                         fits.ImageHDU(halves["490"].astype(np.float32), name="AOS490"),
                         fits.ImageHDU(halves["550"].astype(np.float32), name="AOS550"), _hk_hdu(hk)])
    for name in ("AOS490", "AOS550"):
        hdul[name].header["BUNIT"] = ("count", "AOS counts")
    return hdul, _truth(spec, ctx, truths, lofreq, sat)


def _truth(spec, ctx, truths, lofreq, sat):
    tl = ctx["tl"]
    line_list = [{"band": b, "species": SPECIES[b], "rest_freq_hz": REST_FREQ_HZ[b], "amp_k": a,
                  "v_lsr_kms": v, "fwhm_kms": w} for b, a, v, w in ctx["lines"]]
    sec = lambda s: ctx["t0"] + s / 86400.0
    t = {"file": file_name(spec.day, spec.segment), "day": spec.day, "segment": spec.segment,
         "object": spec.object, "mode": spec.mode, "ra_deg": spec.ra, "dec_deg": spec.dec,
         "vsource_kms": spec.vsource, "lo_shift_kms": spec.lo_shift_kms, "start_mjd": float(ctx["mjd"][0]),
         "n_scans": len(ctx["t_s"]), "end_cal": tl["end_cal"], "lofreq_hz": lofreq, "dispersion": ctx["disp"],
         "t_rx_k": {h: truths[h]["t_rx"] for h in M.HALVES},
         "tsys_step_k": {h: ctx["mission"].step_k(h, spec.day) for h in M.HALVES},
         "gain0_counts_per_k": {h: truths[h]["g0"] for h in M.HALVES}, "tsys_k": {h: truths[h]["tsys"] for h in M.HALVES},
         "t_bg_k": M.T_BG_K, "thot_mean_k": float(ctx["thot"].mean()), "lines": line_list,
         "continuum_k": ctx["cont"], "source_fwhm_arcmin": ctx["size"], "beam_fwhm_arcmin": BEAM_FWHM_ARCMIN,
         "nod_offset_arcmin": list(tl["nod_offset"]), "chop_offset_arcmin": list(tl["chop_offset"]),
         "chop_ripple": ctx["ripple"],
         "comb": {"spacing_hz": M.COMB_SPACING_HZ, "fwhm_hz": M.COMB_FWHM_HZ,
                  "amps_k": {h: {str(k): v for k, v in ctx["comb"][h].items()} for h in M.HALVES}},
         "saturated_scans": np.flatnonzero(sat).tolist(),
         "spikes": [list(s) for s in ctx["spikes"]], "baseline_excursions": ctx["excursions"],
         "ground_gaps": [{"start_mjd": sec(g["start_s"]), "end_mjd": sec(g["end_s"]),
                          "first_scan_after": g["first_scan_after"], "hysteresis_frac": g["hysteresis_frac"],
                          "tau_s": g["tau_s"]} for g in ctx["gaps"]],
         "lost_reads": tl["lost"].tolist(), "noise_bandwidth_hz": M.NOISE_BW_HZ}
    run = np.flatnonzero(tl["long_off"])
    t["long_off"] = None
    if run.size:
        mission = ctx["mission"]
        a = {h: white_a(truths[h]["gain_mid"]) for h in M.HALVES}
        q = {h: mission.q_per_s(h) for h in M.HALVES}
        t["long_off"] = {"first_scan": int(run[0]), "n_scans": int(run.size), "white_a_s": a, "q_per_s": q,
                         "allan_time_tp_s": {h: float(np.sqrt(3 * a[h] / q[h])) if q[h] > 0 else None
                                             for h in M.HALVES}}
    if spec.mode == "MAP":
        from reduce.simulate.swas_timeline import map_positions
        t["map_grid_arcmin"] = map_positions(spec).tolist()
    t["arrays"] = {"time_mjd": ctx["mjd"], "v_sc_kms": ctx["v_sc"], "v_geo_kms": ctx["v_geo"],
                   "coupling": ctx["coupling"], "gain490": truths["490"]["gain_mid"],
                   "gain550": truths["550"]["gain_mid"], "zero490": truths["490"]["zero"],
                   "zero550": truths["550"]["zero"]}
    return t


def _atomic_write(path, writer):
    with atomic_path(path) as tmp:
        writer(tmp)


def _make_and_write(spec, seed, outdir, drifts=None):
    """Generate one segment, write it atomically; return (name, bytes, truth)."""
    hdul, truth = simulate_segment(spec, seed=seed, drifts=drifts)
    path = Path(outdir) / truth["file"]
    _atomic_write(path, lambda p: add_checksums(hdul).writeto(p))  # with CHECKSUM and DATASUM (ICD 1.1)
    return truth["file"], path.stat().st_size, truth


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def simulate_swas(outdir, *, days=1, seed=0, start_day=1, segments_per_day=None, specs=None, client=None,
                  progress=False, drifts=None):
    """Write the segments of a plan (or ``specs``) and the truth files into ``outdir``.

    With a ``distributed.Client`` one task per segment runs on the cluster (the
    workers write the FITS files, so ``outdir`` must be on a shared file system);
    without one, serially.  ``drifts``: the mission model (reduce.simulate.swas_mission.MissionDrifts;
    None: the defaults; ``MissionDrifts.off()`` or False: none).  Returns {"files", "truth",
    "n_scans", "bytes"}.
    """
    mission = resolve(drifts)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if specs is None:
        specs = plan_swas(days=days, seed=seed, start_day=start_day, segments_per_day=segments_per_day,
                          drifts=mission)
    names = [file_name(s.day, s.segment) for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("simulate_swas: specs contain duplicate (day, segment) pairs")
    if client is None:
        results = [_make_and_write(s, seed, str(outdir), mission) for s in specs]
    else:
        futures = client.map(_make_and_write, specs, seed=seed, outdir=str(outdir), drifts=mission, pure=False)
        if progress and futures:
            from ..progress import Progress, track
            with Progress(f"simulating SWAS into {outdir}", len(futures), unit="segments") as bar:
                for _ in track(futures, bar):
                    pass
        results = client.gather(futures)
    arrays, segs = {}, []
    for name, _, truth in results:
        stem = name[:-5]
        for k, v in truth.pop("arrays").items():
            arrays[f"{stem}.{k}"] = np.asarray(v)
        truth["npz_keys"] = sorted(k.split(".", 1)[1] for k in arrays if k.startswith(stem + "."))
        segs.append(_jsonable(truth))
    block = mission.truth()
    block["long_off_segments"] = [{"file": t["file"], "day": t["day"], "segment": t["segment"], **t["long_off"]}
                                  for t in segs if t.get("long_off")]
    doc = {"format": "skyreduce-swas-truth-1", "seed": seed, "npz": "swas_truth.npz", "mission": block,
           "segments": segs}
    truth_path = outdir / "swas_truth.json"
    _atomic_write(truth_path, lambda p: p.write_text(json.dumps(doc, indent=1)))
    _atomic_write(outdir / "swas_truth.npz", lambda p: write_npz(p, arrays))
    files = [str(outdir / r[0]) for r in results]
    log.info("simulate_swas: wrote %d segments to %s", len(files), outdir)
    return {"files": files, "truth": str(truth_path), "n_scans": int(sum(t["n_scans"] for t in segs)),
            "bytes": int(sum(r[1] for r in results))}
