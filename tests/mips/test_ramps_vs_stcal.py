"""Golden comparison of the Ge ramp kernels with STScI's stcal (two-point jump
detection + OLS_C ramp fitting) on the same ramps."""

import logging

import numpy as np
import pytest

from reduce.mips.kernels.ramps import DT_READ, fit_ramps
from test_ramps import COEFFS, GAIN, RDNOISE, inject, make_ramps

pytest.importorskip("stcal")

# JWST data-quality bits, as stcal's own tests spell them
DQFLAGS = {
    "GOOD": 0, "DO_NOT_USE": 1, "SATURATED": 2, "JUMP_DET": 4, "DROPOUT": 8, "PERSISTENCE": 32,
    "AD_FLOOR": 64, "CHARGELOSS": 128, "UNRELIABLE_ERROR": 256, "NON_SCIENCE": 512,
    "NO_GAIN_VALUE": 2**19, "UNRELIABLE_SLOPE": 2**24, "REFERENCE_PIXEL": 2**31,
}


def linearize(reads, nreads, coeffs):
    """Linear DN relative to the first read, sum_k C[k-1] d^k with d = read - read0 (the ramp
    model of ICD §2), NaN beyond nreads: stcal's input, computed independently of our kernel."""
    d = reads.astype(np.float64) - reads[:, :1]
    lin = sum(c * d ** (k + 1) for k, c in enumerate(coeffs))
    valid = np.arange(reads.shape[1])[None, :, None, None] < np.asarray(nreads).reshape(-1, 1, 1, 1)
    return np.where(valid, lin, np.nan)


def flag_saturation(reads, nreads, satlevel):
    """Bool per read: at and after the first read with raw DN >= satlevel (padding False)."""
    valid = np.arange(reads.shape[1])[None, :, None, None] < np.asarray(nreads).reshape(-1, 1, 1, 1)
    return np.logical_or.accumulate((reads >= satlevel) & valid, axis=1) & valid


def stcal_layout(reads, nreads, satlevel=32767):
    """Our raw DCE ramps -> stcal's (data [1, ngroups, ny, nx] float32 DN, groupdq) per DCE."""
    lin = linearize(reads, nreads, COEFFS)
    sat = flag_saturation(reads, nreads, satlevel)
    out = []
    for i in range(reads.shape[0]):
        n = int(np.broadcast_to(nreads, reads.shape[:1])[i])
        data = np.nan_to_num(lin[i : i + 1, :n]).astype(np.float32)
        gdq = np.where(sat[i : i + 1, :n], DQFLAGS["SATURATED"] | DQFLAGS["DO_NOT_USE"], 0).astype(np.uint8)
        out.append((data, gdq))
    return out


def stcal_jumps(data, gdq, *, rdnoise, gain, threshold):
    """stcal.jump two-point difference detection; returns the new groupdq."""
    from stcal.jump.jump import detect_jumps_data
    from stcal.jump.jump_class import JumpData

    ny, nx = data.shape[-2:]
    jd = JumpData(gain2d=np.full((ny, nx), gain, np.float32),
                  rnoise2d=np.full((ny, nx), np.sqrt(2) * rdnoise, np.float32), dqflags=DQFLAGS)
    jd.init_arrays_from_arrays(data.copy(), gdq.copy(), np.zeros((ny, nx), np.uint32))
    jd.nframes = 1
    jd.dt_group = np.ones(1)
    jd.n_reads_groupdiff = np.ones(1) * 2
    jd.rejection_thresh = jd.four_grp_thresh = jd.three_grp_thresh = threshold
    jd.flag_4_neighbors = False  # Ge pixels are independent detectors
    jd.max_cores = "none"
    gdq_out, _, _, _ = detect_jumps_data(jd)
    return gdq_out


def stcal_ols(data, gdq, *, rdnoise, gain, dt=DT_READ):
    """stcal OLS_C ramp fit (optimal weighting); returns slope and err (DN/s) [ny, nx]."""
    from stcal.ramp_fitting.ramp_fit import ramp_fit_data
    from stcal.ramp_fitting.ramp_fit_class import RampData

    ny, nx = data.shape[-2:]
    rd = RampData()
    rd.set_arrays(data, gdq, np.zeros((ny, nx), np.uint32), np.zeros((ny, nx), np.float32))
    rd.set_meta(name="MIPS", frame_time=dt, group_time=dt, groupgap=0, nframes=1, drop_frames1=None)
    rd.algorithm = "OLS_C"
    rd.set_dqflags(DQFLAGS)
    rd.start_row, rd.num_rows = 0, ny
    rn = np.full((ny, nx), np.sqrt(2) * rdnoise, np.float32)  # stcal: CDS read noise
    g = np.full((ny, nx), gain, np.float32)
    image, _, _ = ramp_fit_data(rd, False, rn, g, "OLS_C", "optimal", "none")
    return image["slope"], image["err"]


def run_stcal(reads, nreads, *, threshold=5.0):
    """Jump detection + OLS_C per DCE, as the JWST pipeline runs them."""
    slopes, errs, jumps = [], [], []
    for data, gdq in stcal_layout(reads, nreads):
        gdq = stcal_jumps(data, gdq, rdnoise=RDNOISE, gain=GAIN, threshold=threshold)
        s, e = stcal_ols(data, gdq, rdnoise=RDNOISE, gain=GAIN)
        slopes.append(s)
        errs.append(e)
        jumps.append((gdq[0] & DQFLAGS["JUMP_DET"]) > 0)
    return np.array(slopes), np.array(errs), np.array(jumps)


@pytest.fixture(scope="module")
def ramps():
    rng = np.random.default_rng(21)
    shape = (6, 32, 16, 16)
    rate = rng.uniform(5.0, 3000.0, shape[:1] + shape[2:])
    hits, steps = inject(rng, shape, rate, 0.005, 8.0)
    small_hits, small_steps = inject(rng, shape, rate, 0.005, 5.0)
    reads = make_ramps(rng, *shape, rate=rate, cr=steps + small_steps)
    logging.getLogger("stcal").setLevel(logging.WARNING)
    return reads, rate, hits | small_hits, run_stcal(reads, 32), fit_ramps(
        reads, 32, coeffs=COEFFS, satlevel=32767, rdnoise=RDNOISE, gain=GAIN, cr_threshold=5.0)


def test_slopes_agree_with_stcal_on_cr_free_pixels(ramps):
    reads, rate, hits, (s_slope, s_err, s_jump), ours = ramps
    clean = ~hits.any(axis=1) & ~s_jump.any(axis=1) & (ours["ncr"] == 0)
    assert clean.sum() > 1000
    z = np.abs(ours["slope"] - s_slope)[clean] / s_err[clean]
    # two different unbiased estimators (exact GLS vs Fixsen-weighted OLS) differ by
    # ~0.1 sigma typically; over several seeds the worst of ~1000 pixels reached 1.26
    assert z.mean() < 0.15
    assert np.percentile(z, 99) < 1.0
    assert z.max() < 1.5
    # both estimate the truth without bias, ours with no larger scatter
    ours_pull = ((ours["slope"] - rate) / ours["error"])[clean]
    assert abs(ours_pull.mean()) < 0.1
    assert np.std(ours["slope"][clean] - rate[clean]) <= 1.02 * np.std(s_slope[clean] - rate[clean])


def test_jump_detection_at_least_as_good_as_stcal(ramps):
    reads, rate, hits, (s_slope, s_err, s_jump), ours = ramps
    det = ours["cr_reads"]
    ours_found, stcal_found = (det & hits).sum(), (s_jump & hits).sum()
    ours_false, stcal_false = (det & ~hits).sum(), (s_jump & ~hits).sum()
    print(f"found ours {ours_found} stcal {stcal_found} of {hits.sum()}; false ours {ours_false} stcal {stcal_false}")
    assert ours_found >= stcal_found
    assert ours_false <= stcal_false
    # and CR-hit pixels come out closer to the truth than stcal's
    hit_pix = hits.any(axis=1)
    ours_err = np.abs(ours["slope"] - rate)[hit_pix] / ours["error"][hit_pix]
    stcal_err = np.abs(s_slope - rate)[hit_pix] / ours["error"][hit_pix]
    assert np.median(ours_err) <= np.median(stcal_err)


# (nread, ndce) of 32x32-pixel ramps, one seed each: ~2e6 reads each, ~1.2e7 pooled
POOLED = ((24, 80), (32, 60), (80, 24)) * 2


def test_pooled_false_detections_and_completeness_vs_stcal():
    """Issue 4 criterion, pooled over seeds and ramp lengths at the same threshold (5 sigma):
    our jumps are at least as complete as stcal.jump's and no more of them are false.

    Hits as the Ge arrays see them (one per pixel per 35 s, half 5 and half 10 sigma_diff)
    at rates 5-3000 DN/s; a flag at a read without a hit (including one read off a true
    hit) is false.
    """
    found = {"ours": 0, "stcal": 0}
    false = {"ours": 0, "stcal": 0}
    nhit = nclean = 0
    p_hit = DT_READ / 35 / 2
    for seed, (nread, ndce) in enumerate(POOLED):
        rng = np.random.default_rng(400 + seed)
        shape = (ndce, nread, 32, 32)
        rate = rng.uniform(5.0, 3000.0, (ndce, 32, 32))
        hits5, steps5 = inject(rng, shape, rate, p_hit, 5.0)
        hits10, steps10 = inject(rng, shape, rate, p_hit, 10.0)
        hits = hits5 | hits10
        reads = make_ramps(rng, *shape, rate=rate, cr=steps5 + steps10)
        ours = fit_ramps(reads, nread, coeffs=COEFFS, satlevel=32767, rdnoise=RDNOISE, gain=GAIN,
                         cr_threshold=5.0)["cr_reads"]
        stcal = run_stcal(reads, nread, threshold=5.0)[2]
        for name, det in (("ours", ours), ("stcal", stcal)):
            found[name] += int((det & hits).sum())
            false[name] += int((det & ~hits).sum())
        nhit += int(hits.sum())
        nclean += int((~hits).sum())
    print(f"pooled {nclean} hit-free reads, {nhit} hits: found {found}, false {false}")
    assert nclean >= 10_000_000
    # enough false stcal jumps that "no more than stcal" is a real bound, not 0 <= 0
    assert false["stcal"] >= 10
    assert false["ours"] <= false["stcal"]
    assert found["ours"] >= found["stcal"]
