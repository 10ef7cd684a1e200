"""Step 2 kernels (reduce.swas.kernels.pair): ON/OFF, CAL and ZERO pairing on synthetic
timelines; the switched spectrum."""

import numpy as np
import pytest

from reduce.errors import CalibrationError
from reduce.swas.kernels.check import SCANTYPES, check_segment
from reduce.swas.kernels.pair import (PairParams, mean_rows, pair_cal, pair_map, pair_on_off, scan_mask,
                                      stable_zeros, switched_spectrum)
from reduce.swas.physics import NOMINAL_LO

T0 = 51500.0
SEC = 1.0 / 86400.0


def nod_timeline(n_blocks=6, block=10, dt=2.0):
    """NOD: alternating ON/OFF blocks of `block` 2-s scans; first scan after a nod has bit 4."""
    types, q = [], []
    for b in range(n_blocks):
        kind = "ON" if b % 2 == 0 else "OFF"
        types += [kind] * block
        q += [4] + [0] * (block - 1)
    n = len(types)
    return T0 + np.arange(n) * dt * SEC, np.array(types), np.array(q, np.int16)


def checked_usable(time, types, quality):
    """Usable scans as the pipeline decides them: the checking step's flags are 0."""
    n = time.size
    meta = {"time": time, "scan": np.arange(n), "scantype": np.array([SCANTYPES.index(t) for t in types]),
            "mode": np.zeros(n, int), "inttime": np.full(n, 2.0), "quality": quality, "scvel": np.zeros((n, 3)),
            "cont": np.ones((n, 2)), "thot": np.full(n, 285.0), "dlam": np.zeros(n), "dbet": np.zeros(n)}
    header = {"obsmode": "NOD", "mode_code": 0, "lofreq": (NOMINAL_LO["490"], NOMINAL_LO["550"]),
              "target_ra": 83.8, "target_dec": -5.4, "vsource": 9.0}
    flags, reason, _ = check_segment(meta, header)
    assert reason == ""
    return flags == 0


def check_pairs(time, types, on, off, window):
    assert len(set(off.tolist())) == off.size, "an OFF was used twice"
    assert len(set(on.tolist())) == on.size
    assert np.all(types[on] == "ON") and np.all(types[off] == "OFF")
    assert np.all(np.abs(time[on] - time[off]) * 86400 <= window + 1e-6)
    assert np.all(np.diff(time[on]) > 0), "pairs not ordered by time"


def test_nod_pairs_every_usable_scan_within_window():
    t, types, q = nod_timeline()
    use = checked_usable(t, types, q)
    on, off = pair_on_off(t, types, usable=use)
    check_pairs(t, types, on, off, 30.0)
    assert on.size == 27  # 3 ON blocks x 9 usable scans, all pairable within 30 s
    assert not np.any(q[on] & 4) and not np.any(q[off] & 4)
    # greedy nearest-first would lose the block edges; in-order pairing keeps dt = 20 s
    assert np.allclose(np.abs(t[on] - t[off]) * 86400, 20.0)


def test_chop_pairs_adjacent_scans():
    n = 40
    t = T0 + np.arange(n) * 2 * SEC
    types = np.where(np.arange(n) % 2 == 0, "ON", "OFF")
    on, off = pair_on_off(t, types)
    check_pairs(t, types, on, off, 30.0)
    assert on.size == 20
    assert np.allclose(np.abs(t[on] - t[off]) * 86400, 2.0)


def test_unequal_counts_and_window():
    # 12 ONs, 7 OFFs after them, then 5 ONs 200 s later with no OFF nearby
    t = T0 + np.r_[np.arange(12) * 2, 24 + np.arange(7) * 2, 400 + np.arange(5) * 2] * SEC
    types = np.array(["ON"] * 12 + ["OFF"] * 7 + ["ON"] * 5)
    on, off = pair_on_off(t, types, params=PairParams(window_s=30.0))
    check_pairs(t, types, on, off, 30.0)
    assert on.size == 7
    assert not np.any(on >= 19)  # the late ONs have no OFF within 30 s
    on2, off2 = pair_on_off(t, types, params=PairParams(window_s=10.0))
    check_pairs(t, types, on2, off2, 10.0)
    assert on2.size < on.size


def test_no_on_or_no_off_gives_empty():
    t = T0 + np.arange(5) * 2 * SEC
    on, off = pair_on_off(t, np.array(["ON"] * 5))
    assert on.size == 0 and off.size == 0


def test_map_pairs_nearest_k_offs():
    # pattern: OFF, 6 ONs (positions), OFF, 6 ONs, OFF ...; 2-s scans
    kinds = (["OFF"] + ["ON"] * 6) * 6 + ["OFF"]
    types = np.array(kinds)
    t = T0 + np.arange(types.size) * 2 * SEC
    on, offs, n_off = pair_map(t, types, params=PairParams(window_s=30.0, map_k=3))
    assert on.size == np.sum(types == "ON")
    assert offs.shape == (on.size, 3)
    ioff = np.flatnonzero(types == "OFF")
    for i, row, k in zip(on, offs, n_off):
        valid = row[row >= 0]
        assert valid.size == k
        assert np.all(types[valid] == "OFF")
        assert np.all(np.abs(t[valid] - t[i]) * 86400 <= 30.0)
        d = np.abs(t[ioff] - t[i]) * 86400
        expect = np.sort(d[d <= 30.0])[:3]
        assert np.allclose(np.sort(np.abs(t[valid] - t[i]) * 86400), expect)
    data = np.arange(types.size, dtype=float)[:, None] * np.ones((1, 4))
    m = mean_rows(data, offs)
    assert np.allclose(m[:, 0], [np.mean(r[r >= 0]) for r in offs])


def test_cal_pairs_and_missing_cal():
    types = np.array(["HOT", "OFF"] * 5 + ["ON", "OFF"] * 10)
    t = T0 + np.arange(types.size) * 2 * SEC
    hot, off = pair_cal(t, types)
    assert hot.size == 5 and np.all(types[hot] == "HOT") and np.all(types[off] == "OFF")
    assert len(set(off.tolist())) == 5
    with pytest.raises(CalibrationError, match="no usable CAL pair"):
        pair_cal(t, np.array(["ON", "OFF"] * 15))


def test_stable_zeros():
    """The ZERO level is the mean of the stable ZERO scans of the segment (pair_segment)."""
    types = np.array(["ON"] * 50, dtype="U4")
    types[[3, 20, 41]] = "ZERO"
    levels = np.full(50, 1000.0) + np.random.default_rng(1).normal(0, 1, 50)
    levels[20] = 1100.0  # hysteresis-affected ZERO
    st = stable_zeros(levels, types == "ZERO")
    assert st.tolist().count(True) == 2 and not st[20]
    assert np.flatnonzero(st).tolist() == [3, 41]
    usable = np.ones(50, bool)
    usable[3] = False
    assert np.flatnonzero(stable_zeros(levels, types == "ZERO", usable=usable)).tolist() == [20, 41]
    with pytest.raises(CalibrationError, match="no usable ZERO"):
        stable_zeros(levels, np.zeros(50, bool))
    with pytest.raises(CalibrationError, match="no usable ZERO"):
        stable_zeros(levels, types == "ZERO", usable=np.zeros(50, bool))


def test_switched_spectrum_forward_model():
    rng = np.random.default_rng(2)
    z = 1000 + rng.normal(0, 5, 725)
    g = 8 * (1 + 0.2 * np.sin(np.arange(725) / 50))
    trx, t_off = 2500.0, 0.02
    line = 3.0 * np.exp(-0.5 * ((np.arange(725) - 300) / 4) ** 2)
    off = z + g * (t_off + trx)
    on = z + g * (t_off + trx + line)
    s = switched_spectrum(on[None], off[None], z)
    assert np.allclose(s[0], line / (t_off + trx), rtol=1e-9, atol=1e-12)
    s_bad = switched_spectrum(on, z, z)  # OFF == ZERO -> NaN, not inf
    assert np.all(np.isnan(s_bad))
    assert scan_mask(np.array(["ON  ", "OFF "]), "ON").tolist() == [True, False]
