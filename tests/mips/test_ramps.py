"""Ge ramp kernels (reduce.mips.kernels.ramps) on small synthetic ramps with known truth."""

import numpy as np
import pytest

from reduce.errors import CalibrationError
from reduce.mips.bcd import DCE_CODES, mask_bits
from reduce.mips.kernels.ramps import DEFAULT_FLAGS, DT_READ, GeParams, fit_ramps, fit_ramps_block

COEFFS = np.array([1.0, 2e-6])  # linear DN = d + 2e-6 d^2
RDNOISE, GAIN, BIAS = 10.0, 7.1, -20000.0


def invert_poly(lin, coeffs):
    """Raw d (DN above the first read) whose polynomial gives ``lin`` (Newton)."""
    d = np.array(lin, float)
    for _ in range(20):
        f = sum(c * d ** (k + 1) for k, c in enumerate(coeffs)) - lin
        fp = sum((k + 1) * c * d**k for k, c in enumerate(coeffs))
        d = d - f / fp
    return d


def make_ramps(rng, ndce, nread, ny, nx, *, rate, rdnoise=RDNOISE, gain=GAIN, coeffs=COEFFS,
               satlevel=32767, bias=BIAS, cr=None):
    """int16 raw reads [ndce, nread, ny, nx]: Poisson charge at ``rate`` (linear DN/s),
    ``cr`` steps (linear DN, [ndce, nread, ny, nx], step at that read), read noise, A/D clip."""
    rate = np.broadcast_to(np.asarray(rate, float), (ndce, ny, nx))
    lam = np.broadcast_to(rate * DT_READ * gain, (nread - 1, ndce, ny, nx)).transpose(1, 0, 2, 3)
    q = np.concatenate([np.zeros((ndce, 1, ny, nx)), np.cumsum(rng.poisson(lam) / gain, axis=1)], axis=1)
    if cr is not None:
        q = q + np.cumsum(cr, axis=1)
    raw = np.round(bias + invert_poly(q, coeffs) + rng.normal(0, rdnoise, q.shape))
    return np.minimum(raw, satlevel).astype(np.int16)


def sigma_diff(rate, rdnoise=RDNOISE, gain=GAIN):
    """Noise of one read difference (DN): the 'sigma' of two-point jump detection."""
    return np.sqrt(2 * rdnoise**2 + np.maximum(rate, 0) * DT_READ / gain)


def inject(rng, shape, rate, prob, nsigma):
    """CR steps of ``nsigma`` sigma_diff at random reads (never read 0)."""
    hits = rng.random(shape) < prob
    hits[:, 0] = False
    steps = np.where(hits, nsigma * sigma_diff(rate)[:, None], 0.0)
    return hits, steps


def fit(reads, nreads, **kw):
    opts = dict(coeffs=COEFFS, satlevel=32767, rdnoise=RDNOISE, gain=GAIN) | kw
    return fit_ramps(reads, nreads, **opts)


def test_clean_ramps_unbiased_and_calibrated():
    rng = np.random.default_rng(11)
    rate = rng.uniform(5.0, 3000.0, (12, 16, 16))
    reads = make_ramps(rng, 12, 32, 16, 16, rate=rate)
    out = fit(reads, 32)
    pull = (out["slope"] - rate) / out["error"]
    assert abs(pull.mean()) < 0.1
    assert abs(pull.std() - 1) < 0.05
    assert out["mask"].max() == 0 and out["ncr"].max() == 0
    assert out["slope"].dtype == np.float32 and out["mask"].dtype == np.uint16


def test_cr_corrected_slopes_and_detection_read_noise_regime():
    """Hits of 5 sigma_diff at rates where read noise dominates: found, slopes unbiased."""
    rng = np.random.default_rng(12)
    shape = (16, 32, 16, 16)
    rate = rng.uniform(5.0, 200.0, (16, 16, 16))
    hits, steps = inject(rng, shape, rate, 0.01, 5.0)
    out = fit(make_ramps(rng, *shape, rate=rate, cr=steps), 32)
    det = out["cr_reads"]
    # a 5 sigma_diff hit whose position the ramp cannot pin to one gap (likelihood odds of a
    # neighbouring gap > LOC_ODDS, ~2 % here, mostly a read noise excursion beside it) must
    # pass the two-point test too, so that a step flagged one read off is no false jump
    assert (det & hits).sum() / hits.sum() >= 0.97
    assert (det & ~hits).sum() / (~hits).sum() <= 1e-4
    pull = (out["slope"] - rate) / out["error"]
    assert abs(pull.mean()) < 0.1 and abs(pull.std() - 1) < 0.05
    assert np.array_equal(out["ncr"], det.sum(axis=1))
    # the cr bit also marks pixels corrected for a jump not located to one read (not in ncr)
    crbit = out["mask"] & DEFAULT_FLAGS["cr"] > 0
    assert np.all(crbit[out["ncr"] > 0]) and (crbit & (out["ncr"] == 0)).sum() <= 0.05 * crbit.sum()


def test_cr_completeness_strong_hits_any_rate():
    """Hits of 8 sigma_diff (threshold 5 + 3 sigma) at any rate: >= 99 % found, <= 0.1 % false."""
    rng = np.random.default_rng(13)
    shape = (16, 32, 16, 16)
    rate = rng.uniform(5.0, 3000.0, (16, 16, 16))
    hits, steps = inject(rng, shape, rate, 0.01, 8.0)
    out = fit(make_ramps(rng, *shape, rate=rate, cr=steps), 32)
    det = out["cr_reads"]
    assert (det & hits).sum() / hits.sum() >= 0.99
    assert (det & ~hits).sum() / (~hits).sum() <= 1e-3
    assert abs(((out["slope"] - rate) / out["error"]).mean()) < 0.1


@pytest.mark.parametrize("read", [1, 2, 30, 31])
def test_cr_in_first_and_last_reads(read):
    rng = np.random.default_rng(read)
    rate = np.full((4, 8, 8), 100.0)
    cr = np.zeros((4, 32, 8, 8))
    cr[:, read] = 300.0
    out = fit(make_ramps(rng, 4, 32, 8, 8, rate=rate, cr=cr), 32)
    assert out["cr_reads"][:, read].all()
    assert out["ncr"].max() == 1
    assert np.all(np.abs(out["slope"] - 100.0) < 5 * out["error"])


def test_several_crs_in_one_ramp():
    rng = np.random.default_rng(5)
    cr = np.zeros((4, 80, 8, 8))
    cr[:, [10, 30, 31, 60]] = 400.0
    out = fit(make_ramps(rng, 4, 80, 8, 8, rate=50.0, cr=cr), 80)
    assert np.array_equal(np.flatnonzero(out["cr_reads"].any(axis=(0, 2, 3))), [10, 30, 31, 60])
    assert (out["ncr"] == 4).all()
    assert np.all(np.abs(out["slope"] - 50.0) < 5 * out["error"])


def test_all_saturated_and_too_few_reads():
    rng = np.random.default_rng(6)
    reads = make_ramps(rng, 2, 24, 4, 4, rate=500.0)
    reads[0, :, 0, 0] = 32767  # saturated from the first read
    reads[0, 3:, 1, 1] = 32767  # 3 good reads
    reads[0, 12:, 2, 2] = 32767  # 12 good reads: fine, but flagged saturated
    out = fit(reads, 24)
    f = DEFAULT_FLAGS
    assert np.isnan(out["slope"][0, 0, 0]) and out["mask"][0, 0, 0] == f["saturated"] | f["too_few_reads"] | f["no_good_segment"]
    assert out["mask"][0, 1, 1] == f["saturated"] | f["too_few_reads"] | f["no_good_segment"]
    assert np.isfinite(out["slope"][0, 1, 1])
    assert out["mask"][0, 2, 2] == f["saturated"]
    assert abs(out["slope"][0, 2, 2] - 500.0) < 5 * out["error"][0, 2, 2]
    assert out["mask"][1].max() == 0


def test_three_reads_flagged_and_custom_bits():
    rng = np.random.default_rng(7)
    reads = make_ramps(rng, 1, 3, 2, 2, rate=100.0)
    flags = {"saturated": 256, "cr": 512, "too_few_reads": 1024, "no_good_segment": 2048}
    out = fit(reads, 3, flags=flags)
    assert (out["mask"] == 1024 | 2048).all()
    assert np.isfinite(out["slope"]).all()


def test_padding_beyond_nreads_ignored():
    rng = np.random.default_rng(8)
    rate = rng.uniform(10, 1000, (3, 8, 8))
    reads = make_ramps(rng, 3, 80, 8, 8, rate=rate)
    nreads = np.array([24, 32, 80])
    padded = reads.copy()
    for i, n in enumerate(nreads):
        padded[i, n:] = 0
    full = fit(padded, nreads)
    for i, n in enumerate(nreads):
        alone = fit(reads[i : i + 1, :n], n)
        np.testing.assert_array_equal(full["slope"][i], alone["slope"][0])
        assert not full["cr_reads"][i, n:].any()
    assert full["mask"].max() == 0  # zeros in the padding are not read as anything
    # nor is a saturated value there: no saturation flag, the same slopes
    sat_pad = padded.copy()
    for i, n in enumerate(nreads):
        sat_pad[i, n:] = 32767
    high = fit(sat_pad, nreads)
    assert high["mask"].max() == 0
    np.testing.assert_array_equal(high["slope"], full["slope"])


def test_nonlinearity_corrected_in_the_slopes():
    """Ramps whose raw DN follow the nonlinearity: fitted with the coefficients, the slopes are the
    linear rate (to the rounding of raw reads to whole DN); fitted as linear they are not."""
    rng = np.random.default_rng(9)
    coeffs = np.stack([np.full((4, 4), 1.0), rng.uniform(1e-6, 5e-6, (4, 4)), np.full((4, 4), 1e-11)])
    rate = np.linspace(2000.0, 4000.0, 16).reshape(4, 4)                          # linear DN/s
    truth = rate[None] * DT_READ * np.arange(40)[:, None, None]                  # linear DN, reads 0..39
    d = np.stack([[invert_poly(truth[:, y, x], coeffs[:, y, x]) for x in range(4)] for y in range(4)])
    raw = np.round(BIAS + np.moveaxis(d, -1, 0))[None].astype(np.int16)
    assert (raw[0, -1] - raw[0, 0]).max() > 15000                                # far into the nonlinear range
    out = fit_ramps(raw, 40, coeffs=coeffs, satlevel=32767, rdnoise=1.0, gain=GAIN)
    # raw reads are rounded to whole DN: 0.5 DN x d(lin)/dd (< 1.4) per read at most
    np.testing.assert_allclose(out["slope"][0], rate, rtol=1e-3)
    assert out["mask"].max() == 0 and out["ncr"].max() == 0
    plain = fit_ramps(raw, 40, coeffs=np.array([1.0]), satlevel=32767, rdnoise=1.0, gain=GAIN)
    assert np.all(plain["slope"][0] < (1 - 3e-3) * rate)                         # the correction matters


def test_saturation_at_and_after_the_first_saturated_read():
    """Reads at and after the first raw read >= SATLEVEL are dropped, even when later ones fall
    back below it; the padding beyond NREADS is never read."""
    reads = np.zeros((1, 6, 1, 2), np.int16)
    reads[0, :, 0, 0] = [1, 2, 100, 90, 3, 0]
    reads[0, :, 0, 1] = [1, 2, 3, 4, 5, 6]
    out = fit_ramps(reads, 5, coeffs=np.array([1.0]), satlevel=100, rdnoise=1.0, gain=GAIN, min_reads=2)
    f = DEFAULT_FLAGS
    assert out["mask"][0, 0, 0] == f["saturated"]
    assert out["slope"][0, 0, 0] == pytest.approx(1.0 / DT_READ, rel=1e-6)       # reads 1, 2 only
    assert out["mask"][0, 0, 1] == 0
    assert out["slope"][0, 0, 1] == pytest.approx(1.0 / DT_READ, rel=1e-6)       # reads 1..5, not 6
    assert not out["cr_reads"].any()


def test_jump_on_linear_ramps():
    rng = np.random.default_rng(10)
    lin = np.cumsum(np.full((2, 32, 4, 4), 13.0), axis=1) + rng.normal(0, 10, (2, 32, 4, 4))
    lin[:, 20:] += 200.0
    out = fit_ramps(np.round(BIAS + lin).astype(np.int16), 32, coeffs=np.array([1.0]), satlevel=32767,
                    rdnoise=10.0, gain=GAIN)
    cr = out["cr_reads"]
    assert cr[:, 20].all() and cr.sum() == 32
    assert (out["ncr"] == 1).all() and (out["mask"] == DEFAULT_FLAGS["cr"]).all()
    assert np.all(np.abs(out["slope"] - 13.0 / DT_READ) < 5 * out["error"])


def test_fit_ramps_block_per_calibration_set_and_dce_codes():
    """The step's task body: one fit per calibration set, skipped DCEs untouched, DCE codes."""
    rng = np.random.default_rng(14)
    reads = make_ramps(rng, 4, 24, 4, 4, rate=300.0)
    reads[2] = 32767                                    # every read saturated
    calset = np.array([0, 1, 0, 1])
    skip = np.array([False, False, False, True])
    bits = mask_bits()
    cal = dict(nonlin=np.stack([COEFFS, 2 * COEFFS])[:, :, None, None] * np.ones((1, 1, 4, 4)),
               satlevel=np.array([32767.0, 32767.0]), rdnoise=np.array([RDNOISE, RDNOISE]),
               gain=np.array([GAIN, GAIN]))
    slope, err, rmask, ncr, code = fit_ramps_block(reads, np.full(4, 24), calset, skip, p=GeParams(), bits=bits,
                                                   **cal)
    for i, k in ((0, 0), (1, 1)):
        alone = fit_ramps(reads[i:i + 1], 24, coeffs=cal["nonlin"][k], satlevel=32767, rdnoise=RDNOISE, gain=GAIN)
        np.testing.assert_array_equal(slope[i], alone["slope"][0])
    assert np.isnan(slope[3]).all() and code[3] == 0 and not rmask[3].any()   # skipped: not computed
    assert code.tolist() == [0, 0, DCE_CODES["all_saturated"], 0]
    assert (rmask[2] & bits["saturated"]).all() and (rmask[2] & bits["too_few_reads"]).all()
    out = fit_ramps_block(reads, np.full(4, 24), calset, skip, p=GeParams(keep_cr_reads=True), bits=bits, **cal)
    assert len(out) == 6 and out[5].shape == reads.shape


def test_inputs_not_mutated_and_leading_dims():
    rng = np.random.default_rng(4)
    reads = make_ramps(rng, 6, 24, 4, 4, rate=300.0).reshape(2, 3, 24, 4, 4)
    coeffs = np.broadcast_to(COEFFS[:, None, None], (2, 4, 4)).copy()
    rd = np.full((4, 4), RDNOISE)
    before = (reads.copy(), coeffs.copy(), rd.copy())
    out = fit_ramps(reads, 24, coeffs=coeffs, satlevel=32767, rdnoise=rd, gain=GAIN)
    assert out["slope"].shape == (2, 3, 4, 4) and out["cr_reads"].shape == reads.shape
    for a, b in zip((reads, coeffs, rd), before):
        np.testing.assert_array_equal(a, b)


def test_bad_calibration_shapes_rejected():
    reads = np.zeros((1, 4, 2, 2), np.int16)
    with pytest.raises(CalibrationError, match="rdnoise"):
        fit(reads, 4, rdnoise=np.ones((3, 3)))
    with pytest.raises(CalibrationError, match="nonlinearity"):
        fit(reads, 4, coeffs=np.ones((2, 3, 3)))
    with pytest.raises(CalibrationError, match="gain"):
        fit(reads, 4, gain=0.0)
    with pytest.raises(CalibrationError, match="satlevel"):
        fit(reads, 4, satlevel=np.nan)
    with pytest.raises(ValueError, match="nreads"):
        fit(reads, 5)
