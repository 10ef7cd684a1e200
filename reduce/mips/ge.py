"""Level-1 steps of the MIPS Ge:Ga arrays (70, 160 um), lazy over chunks of DCEs.

Order (seed 000, issue 4 step 1)::

    ds = fit_ramps_step(ds, cal, p)     # reads -> slope, unc (DN/s): nonlinearity, saturation,
                                        #   CR jumps, segments >= min_reads fused (reduce.mips.ramps)
    ds = subtract_dark(ds, cal)         # slope - dark
    ds = responsivity.track(ds, plan, cal, p)   # per-DCE responsivity from the stim flashes
    ds = apply_responsivity(ds, cal)    # / responsivity, stim signal removed in stim DCEs
    ds = flat_field(ds, cal)            # / flat
    ds = to_surface_brightness(ds, cal) # x FLUXCONV -> bcd, unc in MJy/sr
    ds = make_mask(ds, cal)             # mask bits, NaN for skipped DCEs

Dataset variables: ``reads`` (dce, read, y, x) int16 in; ``rate``/``unc`` (dce, y, x) float32
working rate and 1-sigma error (DN/s); ``rmask`` uint16 ramp bits; ``ncr`` int16;
``dce_code`` (dce,) int16 (bits of DCE_CODES: why a DCE yields nothing). ``skip`` (dce,)
bool marks DCEs the plan already rejected (never computed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ramps
from .steps import mask_bits, per_dce, record, take

DCE_CODES = {"all_saturated": 1, "no_valid_pixel": 2, "no_responsivity": 4}
"""Per-DCE problem bits found in the data (pipeline.py turns them into a reason)."""


@dataclass(frozen=True)
class GeParams:
    """Ge step parameters (mission defaults: seed 000, INSTRUMENTS.md)."""

    cr_threshold: float = 5.0     # sigma, ramp jump detection
    min_reads: int = 4            # fewest reads of a fitted segment
    dt: float = ramps.DT_READ     # s between reads
    resp_method: str = "linear"   # 'nearest' or 'linear' stim interpolation in time
    same_pointing_px: float = 0.5  # stim background from DCEs pointed this close (pixels), if any
    keep_cr_reads: bool = False   # also return cr_reads (dce, read, y, x) (tests, notebooks)


# ---------------------------------------------------------------- ramps
def _ramp_block(reads, nreads, calset, skip, *, nonlin, satlevel, rdnoise, gain, p, bits):
    n, nr, ny, nx = reads.shape
    slope = np.full((n, ny, nx), np.nan, np.float32)
    err = np.full((n, ny, nx), np.nan, np.float32)
    rmask = np.zeros((n, ny, nx), np.uint16)
    ncr = np.zeros((n, ny, nx), np.int16)
    code = np.zeros(n, np.int16)
    crr = np.zeros(reads.shape if p.keep_cr_reads else (n, 0, 0, 0), bool)
    flags = {"saturated": bits["saturated"], "cr": bits["cosmic_ray"],
             "too_few_reads": bits["too_few_reads"], "no_good_segment": bits["no_good_segment"]}
    for k in np.unique(calset[~skip]):
        sel = np.flatnonzero((calset == k) & ~skip)
        r = ramps.fit_ramps(reads[sel], nreads[sel], coeffs=nonlin[k], satlevel=satlevel[k],
                            rdnoise=rdnoise[k], gain=gain[k], dt=p.dt, cr_threshold=p.cr_threshold,
                            min_reads=p.min_reads, flags=flags)
        slope[sel], err[sel], rmask[sel], ncr[sel] = r["slope"], r["error"], r["mask"], r["ncr"]
        if p.keep_cr_reads:
            crr[sel] = r["cr_reads"]
        none = ~np.isfinite(r["slope"]).any(axis=(1, 2))
        allsat = ((r["mask"] & bits["saturated"]) > 0).all(axis=(1, 2))
        code[sel] |= np.where(none & allsat, DCE_CODES["all_saturated"], 0).astype(np.int16)
        code[sel] |= np.where(none & ~allsat, DCE_CODES["no_valid_pixel"], 0).astype(np.int16)
    return (slope, err, rmask, ncr, code) + ((crr,) if p.keep_cr_reads else ())


def fit_ramps_step(ds, cal, p: GeParams):
    """reads -> ``rate`` (linear DN/s), ``unc``, ``rmask``, ``ncr``, ``dce_code`` (lazy)."""
    bits = mask_bits()
    outs = [(("y", "x"), np.float32), (("y", "x"), np.float32), (("y", "x"), np.uint16),
            (("y", "x"), np.int16), ((), np.int16), (("read", "y", "x"), bool)]
    res = per_dce(_ramp_block, [ds.reads, ds.nreads, ds.calset, ds.skip],
                  cal={"nonlin": cal.image("nonlin", fill=0.0), "satlevel": cal.scalar("satlevel"),
                       "rdnoise": cal.scalar("rdnoise"), "gain": cal.scalar("gain")},
                  outputs=outs if p.keep_cr_reads else outs[:5], kwargs={"p": p, "bits": bits})
    new = {"rate": res[0], "unc": res[1], "rmask": res[2], "ncr": res[3], "dce_code": res[4]}
    if p.keep_cr_reads:
        new["cr_reads"] = res[5]
    ds = ds.assign(new)
    ds["rate"].attrs["units"] = "DN/s"
    return record(ds, "ge.fit_ramps", p, cal)


# ---------------------------------------------------------------- calibration
def _dark_block(rate, calset, *, dark):
    return (rate - take(dark, calset)).astype(np.float32)


def subtract_dark(ds, cal):
    """rate -= dark[calset] (DN/s)."""
    rate = per_dce(_dark_block, [ds.rate, ds.calset], cal={"dark": cal.image("dark")},
                   outputs=[(("y", "x"), np.float32)])
    return record(ds.assign(rate=rate), "ge.subtract_dark", None, cal)


def _resp_block(rate, unc, resp, stim, calset, *, stimamp):
    r = resp[:, None, None]
    stimsig = np.where(stim[:, None, None] > 0, take(stimamp, calset), 0.0)
    return (rate / r - stimsig).astype(np.float32), (unc / r).astype(np.float32)


def apply_responsivity(ds, cal):
    """rate / responsivity (per DCE), minus STIMAMP in stim-flash DCEs; unc / responsivity."""
    rate, unc = per_dce(_resp_block, [ds.rate, ds.unc, ds.responsivity, ds.stimflsh, ds.calset],
                        cal={"stimamp": cal.image("stimamp")},
                        outputs=[(("y", "x"), np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "ge.apply_responsivity", None, cal)


def _flat_block(rate, unc, calset, *, flat):
    f = take(flat, calset)
    f = np.where(np.isfinite(f) & (f > 0), f, np.nan)
    return (rate / f).astype(np.float32), (unc / f).astype(np.float32)


def flat_field(ds, cal):
    """rate, unc / flat[calset] (NaN where flat <= 0)."""
    rate, unc = per_dce(_flat_block, [ds.rate, ds.unc, ds.calset], cal={"flat": cal.image("flat")},
                        outputs=[(("y", "x"), np.float32)] * 2)
    return record(ds.assign(rate=rate, unc=unc), "ge.flat_field", None, cal)


def _flux_block(rate, unc, calset, *, fluxconv):
    fc = take(fluxconv, calset)[:, None, None]
    return (rate * fc).astype(np.float32), (unc * fc).astype(np.float32)


def to_surface_brightness(ds, cal):
    """bcd, unc = rate, unc x FLUXCONV[calset] (MJy/sr)."""
    bcd, unc = per_dce(_flux_block, [ds.rate, ds.unc, ds.calset], cal={"fluxconv": cal.scalar("fluxconv")},
                       outputs=[(("y", "x"), np.float32)] * 2)
    ds = ds.assign(bcd=bcd, unc=unc).drop_vars("rate")
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "ge.to_surface_brightness", None, cal)


def _mask_block(bcd, unc, rmask, resp, stim, skip, calset, *, pmask, bits):
    pm = take(pmask, calset).astype(np.int64)
    m = rmask.astype(np.uint16)
    for name in ("dead", "hot", "noisy", "no_flat"):
        m |= np.where(pm & bits[name], np.uint16(bits[name]), np.uint16(0))
    m |= np.where(~np.isfinite(resp)[:, None, None], np.uint16(bits["no_responsivity"]), np.uint16(0))
    m |= np.where((stim > 0)[:, None, None], np.uint16(bits["stim"]), np.uint16(0))
    bad = skip[:, None, None] | ~np.isfinite(bcd) | ~np.isfinite(unc)
    m |= np.where(bad, np.uint16(bits["invalid"]), np.uint16(0))
    nan = np.float32(np.nan)
    return np.where(bad, nan, bcd), np.where(bad, nan, unc), m


def make_mask(ds, cal):
    """mask (uint16, schema bits); bcd/unc NaN wherever invalid (and in skipped DCEs)."""
    bits = mask_bits()
    bcd, unc, mask = per_dce(_mask_block, [ds.bcd, ds.unc, ds.rmask, ds.responsivity, ds.stimflsh, ds.skip,
                                           ds.calset],
                             cal={"pmask": cal.image("pmask", fill=0, dtype=np.int16)},
                             outputs=[(("y", "x"), np.float32)] * 2 + [(("y", "x"), np.uint16)],
                             kwargs={"bits": bits})
    ds = ds.assign(bcd=bcd, unc=unc, mask=mask).drop_vars("rmask")
    ds["bcd"].attrs["units"] = ds["unc"].attrs["units"] = "MJy/sr"
    return record(ds, "ge.make_mask", None, cal)


def pipeline(ds, plan, cal, p: GeParams):
    """All Ge steps in order (lazy)."""
    from . import responsivity

    ds = fit_ramps_step(ds, cal, p)
    ds = subtract_dark(ds, cal)
    ds = responsivity.track(ds, plan, cal, p)
    ds = apply_responsivity(ds, cal)
    ds = flat_field(ds, cal)
    ds = to_surface_brightness(ds, cal)
    return make_mask(ds, cal)
