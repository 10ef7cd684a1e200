"""Step 1, checking (seed §2.1), kernels: validate per-scan and per-segment header parameters.

Works on the small per-scan metadata only (no AOS pixels; the lazy step is
:mod:`reduce.swas.steps.check`). Every problem is kept
per scan as a bit of a flag-coded reason (``SCAN_FLAGS``); a scan with any bit set
does not enter the pairing. Segment-level problems (a special mode, an LO out of
range, no scans) are returned as a reason string. Times are MJD (UTC), gaps in s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reduce.swas.physics import NOMINAL_LO

#: reason bits of the per-scan check flag (flag_masks / flag_meanings of `scan_flag`)
SCAN_FLAGS = {
    "packet_fill": 1,  # QUALITY bit 1: scan incomplete
    "aos_overflow": 2,  # QUALITY bit 2 (not applied to COMB scans: their comb lines saturate)
    "not_settled": 4,  # QUALITY bit 4: attitude not settled
    "inttime": 8,  # INTTIME outside [inttime_min, inttime_max]
    "after_gap": 16,  # within drop_after_gap scans after a ground-support gap
    "time_order": 32,  # TIME not increasing or SCAN not consecutive
    "bad_metadata": 64,  # non-finite TIME, SCVEL, CONT, THOT, DLAM/DBET
    "special_mode": 128,  # segment in a special mode (PLANCAL, MATRIX, ...): excluded
    "bad_header": 256,  # segment header invalid (LO out of range, ...)
    "mode_mismatch": 512,  # per-scan mode differs from the segment's OBSMODE
    "unknown_scantype": 1024,
}
NORMAL_MODES = ("NOD", "CHOP", "MAP", "CHOP_NOD")
SCANTYPES = ("ON", "OFF", "ZERO", "HOT", "COMB")


@dataclass(frozen=True)
class CheckParams:
    """Checking options: INTTIME range [s], gap threshold [s], scans dropped after a gap,
    allowed LO ranges [Hz] per receiver (+- lo_tolerance around the nominal LO)."""

    inttime_min: float = 1.9
    inttime_max: float = 2.1
    gap_s: float = 10.0
    drop_after_gap: int = 50
    lo_tolerance: float = 2e-3  # relative: +-0.2 % (+-600 km/s) around the nominal LO


def check_segment(meta, header, params=CheckParams()):
    """Flags (n,) int32 of one segment's scans and a segment-level reason ('' if fine).

    meta: dict of per-scan numpy arrays: time [MJD], scan, scantype (int codes 0-4),
    mode (int codes), inttime [s], quality, scvel (n,3), cont (n,2), thot, dlam, dbet;
    header: dict with obsmode, mode_code, lofreq (2,) [Hz], target_ra/dec, vsource.
    Returns (flags, reason, counts {flag name: n scans}), reason non-empty when the whole
    segment cannot enter the normal processing (special mode or a bad header).
    """
    n = meta["time"].size
    f = np.zeros(n, np.int32)
    q = meta["quality"].astype(np.int64)
    stype = meta["scantype"].astype(np.int64)
    comb = stype == SCANTYPES.index("COMB")
    f |= np.where(q & 1, SCAN_FLAGS["packet_fill"], 0)
    f |= np.where((q & 2) & ~comb, SCAN_FLAGS["aos_overflow"], 0)
    f |= np.where(q & 4, SCAN_FLAGS["not_settled"], 0)
    it = meta["inttime"].astype(float)
    f |= np.where(~((it >= params.inttime_min) & (it <= params.inttime_max)), SCAN_FLAGS["inttime"], 0)
    f |= np.where((stype < 0) | (stype >= len(SCANTYPES)), SCAN_FLAGS["unknown_scantype"], 0)
    finite = np.isfinite(meta["time"]) & np.all(np.isfinite(meta["scvel"]), axis=1)
    finite &= np.all(np.isfinite(meta["cont"]), axis=1) & np.isfinite(meta["thot"])
    finite &= np.isfinite(meta["dlam"]) & np.isfinite(meta["dbet"])
    f |= np.where(~finite, SCAN_FLAGS["bad_metadata"], 0)
    f |= np.where(meta["mode"] != header["mode_code"], SCAN_FLAGS["mode_mismatch"], 0)
    if n > 1:
        dt = np.diff(meta["time"]) * 86400.0
        back = np.r_[False, ~(dt > 0)] | np.r_[False, np.diff(meta["scan"]) != 1]
        f |= np.where(back, SCAN_FLAGS["time_order"], 0)
        gaps = np.flatnonzero(dt >= params.gap_s) + 1  # first scan after each gap
        after = np.zeros(n, bool)
        for g in gaps:
            after[g: g + params.drop_after_gap] = True
        f |= np.where(after, SCAN_FLAGS["after_gap"], 0)
    reason = ""
    if header["obsmode"] not in NORMAL_MODES:
        reason = f"special mode {header['obsmode']!r}: noted and excluded from normal processing"
        f |= SCAN_FLAGS["special_mode"]
    else:
        bad = []
        for k, (half, lo) in enumerate(zip(("490", "550"), header["lofreq"])):
            nom = NOMINAL_LO[half]
            if not (np.isfinite(lo) and abs(lo / nom - 1.0) <= params.lo_tolerance):
                bad.append(f"LOFREQ{k + 1} = {lo:.6g} Hz outside {nom * (1 - params.lo_tolerance):.6g}"
                           f"..{nom * (1 + params.lo_tolerance):.6g} Hz")
        for key in ("target_ra", "target_dec", "vsource"):
            if not np.isfinite(header[key]):
                bad.append(f"{key} is not finite")
        if n == 0:
            bad.append("no scans")
        if bad:
            reason = "bad header: " + "; ".join(bad)
            f |= SCAN_FLAGS["bad_header"]
    counts = {name: int(np.count_nonzero(f & bit)) for name, bit in SCAN_FLAGS.items()}
    return f, reason, counts


def describe_flags(flags):
    """'name: n, ...' of the reasons present in flags (n,) (for reports)."""
    parts = [f"{name} {int(np.count_nonzero(flags & bit))}" for name, bit in SCAN_FLAGS.items()
             if np.any(flags & bit)]
    return ", ".join(parts) if parts else "none"

