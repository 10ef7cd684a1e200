"""Scan timeline of one simulated SWAS segment: scan types, pointing offsets, times, flags.

All offsets in arcmin (DLAM = delta-alpha cos(dec0), DBET = delta-delta), times in s
from the segment start.  Scan type codes index SCANTYPES.
"""

import numpy as np

SCANTYPES = ("ON", "OFF", "ZERO", "HOT", "COMB")
ON, OFF, ZERO, HOT, COMB = range(5)
SCAN_S = 2.0
NOD_THROW_ARCMIN = 150.0      # (sim) nod to an OFF 2.5 deg away ("up to 3 deg")
CHOP_THROW_ARCMIN = 12.0      # (sim) chopping-secondary throw
SETTLE_MOVE_ARCMIN = 10.0     # a body move larger than this leaves the next scan unsettled
SETTLE_LAG = 0.25             # unsettled scan points this fraction of the way back


def _sci_nod(spec, off, n_block):
    """NOD / PLANCAL: blocks of ON at (0,0) and OFF at the nod position."""
    while True:
        yield from [(ON, 0.0, 0.0, False, 0.0, 0.0)] * n_block
        yield from [(OFF, off[0], off[1], False, off[0], off[1])] * n_block


def _sci_chop(spec, chop):
    """CHOP: ON (beam 1, carries the standing wave) and OFF alternate every scan."""
    while True:
        yield (ON, 0.0, 0.0, True, 0.0, 0.0)
        yield (OFF, chop[0], chop[1], False, 0.0, 0.0)


def _sci_chop_nod(spec, chop):
    """CHOP_NOD: nod A (beam 1 on source) then nod B (beam 2 on source), chop every scan."""
    b = (-chop[0], -chop[1])
    while True:
        for _ in range(spec.nod_scans // 2):
            yield (ON, 0.0, 0.0, True, 0.0, 0.0)
            yield (OFF, chop[0], chop[1], False, 0.0, 0.0)
        for _ in range(spec.nod_scans // 2):
            yield (OFF, b[0], b[1], True, b[0], b[1])
            yield (ON, 0.0, 0.0, False, b[0], b[1])


def map_positions(spec):
    """Grid offsets (arcmin), shape (nx*ny, 2), boustrophedon order."""
    xs = (np.arange(spec.map_nx) - (spec.map_nx - 1) / 2) * spec.map_step_arcmin
    ys = (np.arange(spec.map_ny) - (spec.map_ny - 1) / 2) * spec.map_step_arcmin
    pos = []
    for j, y in enumerate(ys):
        for x in (xs if j % 2 == 0 else xs[::-1]):
            pos.append((float(x), float(y)))
    return np.array(pos)


def _sci_map(spec, off):
    """MAP: OFF blocks shared by a few grid positions of ON scans each."""
    grid = map_positions(spec)
    k = 0
    while True:
        yield from [(OFF, off[0], off[1], False, off[0], off[1])] * spec.map_off_scans
        for _ in range(spec.map_pos_per_off):
            x, y = grid[k % len(grid)]
            k += 1
            yield from [(ON, x, y, False, x, y)] * spec.map_dwell


def _science(spec, n, off, chop):
    gen = {"NOD": lambda: _sci_nod(spec, off, spec.nod_scans),
           "PLANCAL": lambda: _sci_nod(spec, off, max(2, spec.nod_scans // 2)),
           "CHOP": lambda: _sci_chop(spec, chop),
           "CHOP_NOD": lambda: _sci_chop_nod(spec, chop),
           "MAP": lambda: _sci_map(spec, off)}
    if spec.mode not in gen:
        raise ValueError(f"SegmentSpec.mode: expected one of {sorted(gen)}, got {spec.mode!r}")
    it = gen[spec.mode]()
    return [next(it) for _ in range(n)]


def build_timeline(spec, rng):
    """Scan-by-scan plan of a segment.

    Returns a dict of arrays (length spec.n_scans): ``stype`` (int8 codes),
    ``dlam``/``dbet`` (commanded offsets, arcmin), ``beam1`` (bool, chop standing
    wave), ``settle`` (bool, QUALITY bit 4), ``lag_dlam``/``lag_dbet`` (extra
    pointing error of unsettled scans), ``t_s`` (mid times, s), ``inttime`` (s),
    plus ``gap`` (None or dict: first_scan_after, start_s, end_s), the
    offsets ``nod_offset``/``chop_offset`` used and ``long_off`` (bool): the
    ``spec.long_off_scans`` continuous OFF scans at the nod position that follow
    the science scans (no ZERO, COMB or lost read inside; the simulator puts no
    spike or baseline excursion there either).
    """
    pa = rng.uniform(0, 2 * np.pi)
    off = (NOD_THROW_ARCMIN * np.sin(pa), NOD_THROW_ARCMIN * np.cos(pa))
    chop = (CHOP_THROW_ARCMIN, 0.0)
    cal = [(HOT, off[0], off[1], False, off[0], off[1])] * 4 + [(OFF, off[0], off[1], False, off[0], off[1])] * 4
    comb = [(COMB, off[0], off[1], False, off[0], off[1])] * 2
    head = (cal if spec.with_cal else []) + (comb if spec.with_comb else [])
    end_cal = spec.end_cal if spec.end_cal is not None else bool(rng.random() < 0.75)
    tail = (comb[:1] if spec.with_comb else []) + (cal if (spec.with_cal and end_cal) else [])
    n_long = int(spec.long_off_scans)
    n_mid = spec.n_scans - len(head) - len(tail) - n_long
    n_zero_ev = (max(1, n_mid // 300) + int(rng.integers(0, 2))) if spec.with_zero else 0
    n_comb_mid = 2 if (spec.with_comb and n_mid > 400) else 0
    n_sci = n_mid - 2 * n_zero_ev - n_comb_mid
    if n_sci < 20:
        raise ValueError(f"SegmentSpec.n_scans={spec.n_scans} too small for mode {spec.mode}: need >= "
                         f"{spec.n_scans - n_sci + 20}")
    sci = _science(spec, n_sci, off, chop)
    # ZERO and mid-segment COMB scans at irregular places, pointing kept
    inserts = sorted([(int(p), ZERO) for p in rng.choice(np.arange(5, n_sci - 5), n_zero_ev, replace=False)]
                     + ([(int(rng.integers(n_sci // 3, 2 * n_sci // 3)), COMB)] if n_comb_mid else []),
                     reverse=True)
    for p, kind in inserts:
        prev = sci[p - 1]
        sci[p:p] = [(kind, prev[1], prev[2], False, prev[4], prev[5])] * 2
    long_block = [(OFF, off[0], off[1], False, off[0], off[1])] * n_long
    rows = head + sci + long_block + tail
    long_off = np.zeros(len(rows), bool)
    long_off[len(head) + len(sci): len(head) + len(sci) + n_long] = True
    stype = np.array([r[0] for r in rows], dtype=np.int8)
    dl = np.array([r[1] for r in rows]); db = np.array([r[2] for r in rows])
    beam1 = np.array([r[3] for r in rows]); body = np.array([(r[4], r[5]) for r in rows])
    move = np.r_[0.0, np.hypot(*(body[1:] - body[:-1]).T)]
    settle = move > SETTLE_MOVE_ARCMIN
    lag = np.zeros((len(rows), 2))
    idx = np.flatnonzero(settle)
    lag[idx] = SETTLE_LAG * (body[idx - 1] - body[idx])
    t_s = SCAN_S * np.arange(len(rows)) + SCAN_S / 2
    gap = None
    if spec.ground_gap:
        lo = len(head) + n_sci // 4
        g = int(rng.integers(lo, lo + n_sci // 3))
        dur = float(rng.uniform(40.0, 180.0))
        t_s[g:] += dur
        gap = {"first_scan_after": g, "start_s": float(t_s[g - 1] + SCAN_S / 2),
               "end_s": float(t_s[g] - SCAN_S / 2)}
    inttime = np.full(len(rows), SCAN_S)
    n_lost = spec.n_lost if spec.n_lost is not None else max(1, spec.n_scans // 250)
    cand = np.flatnonzero(np.isin(stype, (ON, OFF)) & ~long_off)
    lost = np.sort(rng.choice(cand, min(n_lost, len(cand)), replace=False))
    inttime[lost] = SCAN_S - 0.01 * rng.integers(1, 140, len(lost))
    return {"stype": stype, "dlam": dl, "dbet": db, "beam1": beam1, "settle": settle,
            "lag_dlam": lag[:, 0], "lag_dbet": lag[:, 1], "t_s": t_s, "inttime": inttime,
            "lost": lost, "gap": gap, "long_off": long_off, "nod_offset": off, "chop_offset": chop, "end_cal": end_cal}
