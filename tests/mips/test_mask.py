"""BCD mask kernels (reduce.mips.kernels.mask) of every array: bits, blanking of invalid pixels."""
import numpy as np

from reduce.mips.bcd import mask_bits
from reduce.mips.kernels import mask as km


def test_make_mask_bits():
    pmask = np.array([[0, 1], [2, 12]], np.int16)
    rep = np.array([[[True, False], [False, False]]])
    cr = np.array([[[False, True], [False, False]]])
    inval = np.array([[[False, False], [False, True]]])
    m = km.make_mask(pmask, {"saturated": rep, "cosmic_ray": cr, "invalid": inval})
    assert m.dtype == np.uint16 and m.shape == (1, 2, 2)
    assert m.tolist() == [[[16, 1 | 32], [2, 4 | 8 | 64]]]
    bits = dict(km.DEFAULT_MASK_BITS, saturated=256, dead=1024)
    m2 = km.make_mask(pmask, {"saturated": rep, "cosmic_ray": None}, bits=bits)
    assert m2.tolist() == [[[256, 1024], [2, 12]]]
    assert km.make_mask(pmask, base=np.array([[128, 0], [0, 256]])).tolist() == [[128, 1], [2, 12 | 256]]


def test_default_bits_are_the_schemas():
    assert dict(km.DEFAULT_MASK_BITS) == mask_bits()


def _scene(n=4, seed=0):
    rng = np.random.default_rng(seed)
    bcd = rng.normal(10, 1, (n, 3, 5)).astype(np.float32)
    unc = np.full((n, 3, 5), 0.5, np.float32)
    bcd[0, 1, 2] = np.nan
    unc[1, 0, 0] = np.inf
    pmask = rng.integers(0, 16, (2, 3, 5)).astype(np.int16)
    calset = np.array([0, 1, 1, 0])
    skip = np.array([False, False, True, False])
    return bcd, unc, pmask, calset, skip


def test_mask_block_ge_is_the_ge_mask():
    """Ramp bits, PMASK, no_responsivity, stim flash and invalid pixels, and NaN where invalid."""
    bits = mask_bits()
    bcd, unc, pmask, calset, skip = _scene()
    rng = np.random.default_rng(1)
    rmask = (rng.integers(0, 2, (4, 3, 5)) * bits["cosmic_ray"]).astype(np.uint16)
    resp = np.array([1.0, np.nan, 0.9, 1.1], np.float32)
    stim = np.array([0, 0, 0, 1], np.int8)
    b, u, m = km.mask_block_ge(bcd, unc, rmask, resp, stim, skip, calset, pmask=pmask, bits=bits)
    bad = skip[:, None, None] | ~np.isfinite(bcd) | ~np.isfinite(unc)
    expect = rmask | pmask[calset].astype(np.uint16)                    # PMASK and BCD bits coincide
    expect |= np.where(~np.isfinite(resp)[:, None, None], np.uint16(bits["no_responsivity"]), np.uint16(0))
    expect |= np.where((stim > 0)[:, None, None], np.uint16(bits["stim"]), np.uint16(0))
    expect |= np.where(bad, np.uint16(bits["invalid"]), np.uint16(0))
    assert m.dtype == np.uint16
    np.testing.assert_array_equal(m, expect)
    assert np.isnan(b[bad]).all() and np.isnan(u[bad]).all()
    np.testing.assert_array_equal(b[~bad], bcd[~bad])
    assert b.dtype == np.float32 and u.dtype == np.float32


def test_mask_block_si():
    bits = mask_bits()
    bcd, unc, pmask, calset, skip = _scene(seed=2)
    sat = np.zeros((4, 3, 5), bool)
    sat[3, 2, 4] = True
    cr = np.zeros((4, 3, 5), bool)
    cr[0, 0, 1] = True
    b, u, m = km.mask_block_si(bcd, unc, sat, cr, skip, calset, pmask=pmask, bits=bits)
    bad = skip[:, None, None] | ~np.isfinite(bcd) | ~np.isfinite(unc)
    np.testing.assert_array_equal(m, km.make_mask(pmask[calset], {"saturated": sat, "cosmic_ray": cr,
                                                                  "invalid": bad}, bits=bits))
    assert m[3, 2, 4] & bits["saturated"] and m[0, 0, 1] & bits["cosmic_ray"] and (m[2] & bits["invalid"]).all()
    assert np.isnan(b[bad]).all() and np.isnan(u[bad]).all()
