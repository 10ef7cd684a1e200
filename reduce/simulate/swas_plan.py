"""Segment specifications, target catalogue and the observing plan of the SWAS simulator.

A :class:`SegmentSpec` holds everything needed to make one level-0.5 segment
deterministically (with a seed).  :func:`plan_swas` lays out days of segments:
each day follows a 12-segment template (every mode, the PLANCAL special mode,
a ground-support gap, LO-shifted and path-unsafe target names), rotated and
jittered per day; on the long-OFF days of the mission model
(reduce.simulate.swas_mission: days 3, 13, 23, ... by default) the last segment
of the day is a NOD segment ending in a two-hour continuous OFF block.
"""

import logging
from dataclasses import dataclass, replace

import numpy as np

from reduce.simulate import swas_model

log = logging.getLogger(__name__)

MODES = ("NOD", "CHOP", "CHOP_NOD", "MAP", "PLANCAL")
BANDS = ("490LSB", "490USB", "550LSB", "550USB")
REST_FREQ_HZ = swas_model.REST_FREQ_HZ   # ICD §1, the lines of the four bands
SPECIES = {"490LSB": "O2", "490USB": "CI", "550LSB": "13CO", "550USB": "H2O"}


@dataclass(frozen=True)
class SegmentSpec:
    """Everything needed to make one segment deterministically.

    Offsets in arcmin, velocities km/s, times s.  ``lines`` overrides the
    catalogue: a tuple of (band, amp_K, v_lsr_kms, fwhm_kms), band one of BANDS.
    ``None`` fields are drawn from the segment RNG or the catalogue.
    """
    day: int
    segment: int
    mode: str
    object: str
    ra: float
    dec: float
    vsource: float
    n_scans: int
    lo_shift_kms: float = 0.0
    with_cal: bool = True
    with_comb: bool = True
    with_zero: bool = True
    ground_gap: bool = False
    start_s: float | None = None        # first scan start, s after 00:00 UTC of the day
    end_cal: bool | None = None         # CAL at the end (None: 75 % chance)
    nod_scans: int = 10                 # scans per nod/chop-nod block (~20 s)
    map_nx: int = 5
    map_ny: int = 5
    map_step_arcmin: float = 3.2
    map_dwell: int = 5                  # ON scans per map position
    map_pos_per_off: int = 3            # map positions between OFF blocks
    map_off_scans: int = 4
    lines: tuple | None = None
    continuum_k: float | None = None
    source_fwhm_arcmin: float | None = None
    n_spikes: int | None = None
    n_excursions: int | None = None
    n_lost: int | None = None
    long_off_scans: int = 0             # one continuous OFF block after the science scans (Allan runs)


# name -> (ra, dec, vsource, continuum_K, source_fwhm_arcmin, lines); lines as in SegmentSpec
CATALOG = {
    "OMC-1": (83.8096, -5.3758, 9.0, 0.5, 6.0, (
        ("490USB", 4.0, 9.0, 4.0), ("550LSB", 12.0, 9.0, 5.0), ("550LSB", 2.0, 9.0, 25.0),
        ("550USB", 5.0, 8.0, 20.0), ("550USB", 2.0, 9.0, 4.0))),
    "SGRA": (266.4168, -29.0078, 0.0, 1.0, 8.0, (
        ("490USB", 1.5, 50.0, 25.0), ("490USB", 0.8, -135.0, 40.0),
        ("550LSB", 3.0, 50.0, 25.0), ("550LSB", 1.0, -135.0, 40.0),
        ("550USB", 1.0, 50.0, 25.0), ("550USB", 0.6, -135.0, 40.0))),
    "G34.3+0.15/A": (283.3279, 1.2494, 58.0, 1.5, 0.0, (
        ("490USB", 2.0, 58.0, 6.0), ("550LSB", 6.0, 58.0, 6.0), ("550USB", -1.0, 58.0, 5.0))),
    "IC443B": (94.1808, 22.5400, -5.0, 0.1, 2.0, (
        ("490USB", 1.0, -5.0, 20.0), ("550LSB", 2.0, -5.0, 25.0), ("550USB", 1.5, -10.0, 30.0))),
    "NGC 7538 IRS1": (348.4387, 61.4703, -57.0, 0.8, 0.0, (
        ("490USB", 3.0, -57.0, 4.0), ("550LSB", 8.0, -57.0, 4.0), ("550USB", 1.5, -57.0, 8.0))),
    "W3(OH)": (36.7660, 61.8736, -46.0, 0.6, 0.0, (
        ("490USB", 2.0, -46.0, 4.0), ("550LSB", 6.0, -46.0, 5.0), ("550USB", 1.0, -46.0, 6.0))),
    "JUPITER": (None, None, 0.0, 20.0, 0.0, ()),
}
GENERIC = (0.2, 0.0, (("490USB", 1.0, 0.0, 5.0), ("550LSB", 3.0, 0.0, 5.0), ("550USB", 1.0, 0.0, 5.0)))


def catalog_entry(name):
    """(ra, dec, vsource, continuum_K, size_arcmin, lines) for a target name.

    An LO-shift suffix (``SGRA-150``, ``IC443B-60``) maps to the base target.
    """
    if name in CATALOG:
        return CATALOG[name]
    base, _, tail = name.rpartition("-")
    if base in CATALOG and tail.isdigit():
        return CATALOG[base]
    return (None, None, 0.0) + GENERIC


def jupiter_radec(mjd):
    """Apparent geocentric (ra, dec) of Jupiter in ICRS deg (astropy builtin ephemeris)."""
    from astropy.coordinates import ICRS, get_body
    from astropy.time import Time
    c = get_body("jupiter", Time(mjd, format="mjd", scale="utc")).transform_to(ICRS())
    return float(c.ra.deg), float(c.dec.deg)


# template of one day: (object, mode, n_scans, lo_shift_kms, ground_gap)
DAY_TEMPLATE = (
    ("OMC-1", "NOD", 1350, 0.0, True),
    ("SGRA", "NOD", 700, 0.0, False),
    ("SGRA-150", "NOD", 700, -150.0, False),
    ("G34.3+0.15/A", "CHOP", 500, 0.0, False),
    ("IC443B-60", "NOD", 600, -60.0, False),
    ("OMC-1", "MAP", 1000, 0.0, False),
    ("NGC 7538 IRS1", "CHOP_NOD", 600, 0.0, False),
    ("JUPITER", "PLANCAL", 200, 0.0, False),
    ("W3(OH)", "NOD", 400, 0.0, False),
    ("SGRA", "CHOP_NOD", 500, 0.0, False),
    ("IC443B-60", "MAP", 400, -60.0, False),
    ("OMC-1", "CHOP", 300, 0.0, False),
)


def make_spec(day, segment, obj, mode, n_scans, *, lo_shift_kms=0.0, start_s=None, **kw):
    """A SegmentSpec for a catalogue target (position and VSOURCE from the catalogue)."""
    from reduce.simulate.orbit import MISSION_EPOCH_MJD
    ra, dec, vs = catalog_entry(obj)[:3]
    if ra is None:   # a planet: its position at the segment start
        s0 = (segment - 1) * 5400.0 if start_s is None else start_s
        ra, dec = jupiter_radec(MISSION_EPOCH_MJD + day - 1 + s0 / 86400.0)
    return SegmentSpec(day=day, segment=segment, mode=mode, object=obj, ra=ra, dec=dec, vsource=vs,
                       n_scans=int(n_scans), lo_shift_kms=lo_shift_kms, start_s=start_s, **kw)


LONG_OFF_SCIENCE_SCANS = 300   #: NOD science scans of a long-OFF segment before its OFF block


def plan_swas(*, days=1, seed=0, start_day=1, segments_per_day=None, drifts=None):
    """Segment specs for ``days`` mission days from ``start_day``.

    Each day runs the 12-entry DAY_TEMPLATE (rotated by day, repeated or cut to
    ``segments_per_day``, default 12); the first day of a plan keeps the template
    order and sizes, later days jitter n_scans by +-20 %.  Segments follow each
    other with 5 min pauses and always fit in the day.  On a long-OFF day of the
    mission model ``drifts`` (reduce.simulate.swas_mission.MissionDrifts; None: the
    defaults) the last segment is a W3(OH) NOD segment of LONG_OFF_SCIENCE_SCANS
    science scans followed by ``long_off_scans`` continuous OFF scans, and the
    other segments share the rest of the day.
    """
    from reduce.simulate.swas_mission import resolve
    mission = resolve(drifts)
    n_seg = len(DAY_TEMPLATE) if segments_per_day is None else int(segments_per_day)
    specs = []
    for day in range(start_day, start_day + days):
        rng = np.random.default_rng(np.random.SeedSequence([seed, day, 0]))
        rot = (day - start_day) % len(DAY_TEMPLATE)
        long_off = mission.is_long_off_day(day)
        n_long = LONG_OFF_SCIENCE_SCANS + mission.long_off_scans + 30   # + CAL, COMB, ZERO scans
        n_short = n_seg - 1 if long_off else n_seg
        free = 86400.0 - ((2.0 * n_long + 1000.0) if long_off else 0.0)
        slot = free / max(n_short, 1)               # seconds available per segment
        t = 300.0
        for k in range(n_short):
            obj, mode, n, shift, gap = DAY_TEMPLATE[(k + rot) % len(DAY_TEMPLATE)]
            if day != start_day:
                n = int(n * rng.uniform(0.8, 1.2))
                gap = gap or bool(rng.random() < 0.05)
            n = int(max(120, min(n, 1350, (slot - 1000.0) / 2.0)))
            specs.append(make_spec(day, k + 1, obj, mode, n, lo_shift_kms=shift,
                                   ground_gap=gap, start_s=t))
            t += 2.0 * n + 300.0 + (300.0 if gap else 0.0)
        if long_off:
            specs.append(make_spec(day, n_seg, "W3(OH)", "NOD", n_long, start_s=t,
                                   long_off_scans=mission.long_off_scans))
    return specs


def with_overrides(spec, **kw):
    """A copy of ``spec`` with fields replaced (frozen dataclass helper)."""
    return replace(spec, **kw)
