"""Level-1 steps of the MIPS 24 um (Si:As) array, lazy over chunks of DCEs (kernels: reduce.mips.si).

Order (seed 000, issue 4 step 2)::

    ds = replace_saturated(ds, cal)   # raw planes -> slope, difference, replaced (DN/s), sat map
    ds = subtract_dark(ds, cal)       # rate = replaced - dark
    ds = correct_jailbar(ds, cal, p)  # readout-4 column offsets
    ds = correct_droop(ds, cal)       # array-wide droop (R x mean signal)
    ds = uncertainty(ds, cal)         # read + Poisson noise of the ramp slope (DN/s)
    ds = flat_field(ds, cal)          # rate, unc / flat
    ds = flag_cosmic_rays(ds, p)      # single-frame CR flag (flagged, not removed)
    ds = to_surface_brightness(ds, cal)   # x FLUXCONV -> bcd, unc (MJy/sr)
    ds = make_mask(ds, cal)           # mask bits, NaN for skipped DCEs

Variables: ``raw`` (dce, plane, y, x) in; ``slope``, ``difference``, ``replaced`` (DN/s, kept:
the seed's slope, difference and replaced images); working ``rate``/``unc`` (DN/s),
``sat`` and ``crflag`` (bool); ``dce_code`` (dce,) int16; ``skip`` (dce,) from the plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import si
from .ge import DCE_CODES
from .steps import mask_bits, per_dce, record, take

YX = ("y", "x")


@dataclass(frozen=True)
class SiParams:
    """24 um step parameters (defaults: seed 000 / ICD §2)."""

    sample_time: float = si.SAMPLE_TIME  # s per sample
    jailbar: str = "auto"        # 'model' (JAILBAR x bright signal, needs JBTHRESH), 'data', 'auto'
    cr_threshold: float = 5.0    # sigma, single-frame CR flag
    cr_sharpness: float = 2.5
    cr_box: int = 5


def _replace_block(raw, skip, *, sample_time):
    raw = np.where(skip[:, None, None, None], np.nan, raw)
    slope, diff, rep, is_rep = si.replace_saturated(raw[:, 0], raw[:, 1], sample_time=sample_time)
    none = ~np.isfinite(rep).any(axis=(1, 2)) & ~skip
    code = np.where(none, DCE_CODES["no_valid_pixel"], 0).astype(np.int16)
    f = np.float32
    return slope.astype(f), diff.astype(f), rep.astype(f), is_rep, code


def replace_saturated(ds, cal, p: SiParams = SiParams()):
    """raw -> ``slope``, ``difference``, ``replaced`` (DN/s), ``sat`` (replaced pixels), ``dce_code``."""
    slope, diff, rep, sat, code = per_dce(
        _replace_block, [ds.raw, ds.skip],
        outputs=[(YX, np.float32)] * 3 + [(YX, bool), ((), np.int16)],
        kwargs={"sample_time": p.sample_time})
    ds = ds.assign(slope=slope, difference=diff, replaced=rep, sat=sat, dce_code=code).drop_vars("raw")
    for name in ("slope", "difference", "replaced"):
        ds[name].attrs["units"] = "DN/s"
    return record(ds, "si24.replace_saturated", p)


def _dark_block(rate, calset, *, dark):
    return si.subtract_dark(rate, take(dark, calset)).astype(np.float32)


def subtract_dark(ds, cal):
    """rate = replaced - dark[calset] (DN/s)."""
    rate = per_dce(_dark_block, [ds.replaced, ds.calset], cal={"dark": cal.image("dark")},
                   outputs=[(YX, np.float32)])
    return record(ds.assign(rate=rate), "si24.subtract_dark", None, cal)


def _jailbar_block(rate, calset, *, coeff, thresh, flat, mode):
    out = np.array(rate, dtype=np.float32)
    for k in np.unique(calset):
        sel = calset == k
        use_model = mode == "model" or (mode == "auto" and np.isfinite(coeff[k]) and np.isfinite(thresh[k]))
        if use_model:
            out[sel] = si.correct_jailbar(rate[sel], coeff=float(coeff[k]), threshold=float(thresh[k]))
        else:
            out[sel] = si.correct_jailbar(rate[sel], flat=flat[k])
    return out


def correct_jailbar(ds, cal, p: SiParams = SiParams()):
    """Remove the readout-4 ("jailbar") column offsets (model JAILBAR x bright signal, or from the data)."""
    if p.jailbar not in ("auto", "model", "data"):
        raise ValueError(f"SiParams.jailbar must be 'auto', 'model' or 'data', got {p.jailbar!r}")
    rate = per_dce(_jailbar_block, [ds.rate, ds.calset],
                   cal={"coeff": cal.scalar("jailbar"), "thresh": cal.scalar("jbthresh"), "flat": cal.image("flat")},
                   outputs=[(YX, np.float32)], kwargs={"mode": p.jailbar})
    return record(ds.assign(rate=rate), "si24.correct_jailbar", p, cal)


def _droop_block(rate, calset, *, droop, dark):
    out = np.array(rate, dtype=np.float32)
    for k in np.unique(calset):
        sel = calset == k
        out[sel] = si.correct_droop(rate[sel], float(droop[k]), dark=dark[k])
    return out


def correct_droop(ds, cal):
    """Invert the droop: every pixel gained DROOP x mean(sky + dark) over the array."""
    rate = per_dce(_droop_block, [ds.rate, ds.calset],
                   cal={"droop": cal.scalar("droop"), "dark": cal.image("dark")}, outputs=[(YX, np.float32)])
    return record(ds.assign(rate=rate), "si24.correct_droop", None, cal)


def _unc_block(rate, sat, nreads, calset, *, dark, gain, rdnoise, sample_time):
    out = np.full(rate.shape, np.nan, np.float32)
    for k in np.unique(calset):
        for ns in np.unique(nreads[calset == k]):
            sel = (calset == k) & (nreads == ns)
            if ns < 2:
                continue
            out[sel] = si.slope_uncertainty(rate[sel] + dark[k], gain=float(gain[k]), rdnoise=float(rdnoise[k]),
                                            nsamp=int(ns), sample_time=sample_time, replaced=sat[sel])
    return out


def uncertainty(ds, cal, p: SiParams = SiParams()):
    """unc (DN/s): read + Poisson noise of an NREADS-sample slope (two samples where replaced)."""
    unc = per_dce(_unc_block, [ds.rate, ds.sat, ds.nreads, ds.calset],
                  cal={"dark": cal.image("dark"), "gain": cal.scalar("gain"), "rdnoise": cal.scalar("rdnoise")},
                  outputs=[(YX, np.float32)], kwargs={"sample_time": p.sample_time})
    return record(ds.assign(unc=unc), "si24.uncertainty", None, cal)


def _flat_block(rate, unc, calset, *, flat):
    f = take(flat, calset)
    return si.flat_field(rate, f).astype(np.float32), si.flat_field(unc, f).astype(np.float32)


def flat_field(ds, cal):
    """rate, unc / flat[calset] (NaN where flat <= 0)."""
    rate, unc = per_dce(_flat_block, [ds.rate, ds.unc, ds.calset], cal={"flat": cal.image("flat")},
                        outputs=[(YX, np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "si24.flat_field", None, cal)


def _cr_block(rate, unc, *, p):
    # frame by frame: the kernel fills NaN pixels with the median of all it is given, so one
    # frame per call keeps the flags independent of the chunking
    out = np.zeros(rate.shape, bool)
    for i in range(rate.shape[0]):
        if np.isfinite(rate[i]).any():
            out[i] = si.flag_cosmic_rays_single_frame(rate[i], unc[i], p.cr_threshold,
                                                      sharpness=p.cr_sharpness, box=p.cr_box)
    return out


def flag_cosmic_rays(ds, p: SiParams = SiParams()):
    """crflag: single-pixel hits above cr_threshold sigma, sharper than a star (not removed)."""
    cr = per_dce(_cr_block, [ds.rate, ds.unc], outputs=[(YX, bool)], kwargs={"p": p})
    return record(ds.assign(crflag=cr), "si24.flag_cosmic_rays", p)


def _flux_block(rate, unc, calset, *, fluxconv):
    fc = take(fluxconv, calset)[:, None, None]
    return (rate * fc).astype(np.float32), (unc * fc).astype(np.float32)


def to_surface_brightness(ds, cal):
    """bcd, unc = rate, unc x FLUXCONV[calset] (MJy/sr)."""
    bcd, unc = per_dce(_flux_block, [ds.rate, ds.unc, ds.calset], cal={"fluxconv": cal.scalar("fluxconv")},
                       outputs=[(YX, np.float32)] * 2)
    ds = ds.assign(bcd=bcd, unc=unc).drop_vars("rate")
    return record(ds, "si24.to_surface_brightness", None, cal)


def _mask_block(bcd, unc, sat, crflag, skip, calset, *, pmask, bits):
    bad = skip[:, None, None] | ~np.isfinite(bcd) | ~np.isfinite(unc)
    m = si.make_mask(take(pmask, calset), replaced=sat, cosmic_ray=crflag, invalid=bad, bits=bits)
    nan = np.float32(np.nan)
    return np.where(bad, nan, bcd), np.where(bad, nan, unc), m


def make_mask(ds, cal):
    """mask (uint16, schema bits: pmask, saturated, cosmic_ray, invalid); NaN where invalid."""
    bcd, unc, mask = per_dce(_mask_block, [ds.bcd, ds.unc, ds.sat, ds.crflag, ds.skip, ds.calset],
                             cal={"pmask": cal.image("pmask", fill=0, dtype=np.int16)},
                             outputs=[(YX, np.float32)] * 2 + [(YX, np.uint16)], kwargs={"bits": mask_bits()})
    ds = ds.assign(bcd=bcd, unc=unc, mask=mask).drop_vars(["sat", "crflag"])
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "si24.make_mask", None, cal)


def pipeline(ds, plan, cal, p: SiParams):
    """All 24 um steps in order (lazy)."""
    ds = replace_saturated(ds, cal, p)
    ds = subtract_dark(ds, cal)
    ds = correct_jailbar(ds, cal, p)
    ds = correct_droop(ds, cal)
    ds = uncertainty(ds, cal, p)
    ds = flat_field(ds, cal)
    ds = flag_cosmic_rays(ds, p)
    ds = to_surface_brightness(ds, cal)
    return make_mask(ds, cal)
