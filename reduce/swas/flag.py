"""Step 3, flagging of the switched spectra on derived quantities (seed §2.3).

Criteria are the pluggable ones of :mod:`reduce.swas.flagging` (``FlagParams.criteria``,
register more with ``register_criterion``). Per segment, channels where the median switched
spectrum shows a line (above ``line_nsigma``, widened by the segment's Doppler range) are
not judged by the criteria listed in ``masked_criteria`` (a line moving with the orbit must
not look like a baseline variation); spikes are judged on every channel inside the edges.

Output per pair and half: ``flag{h}`` (pair,) int16 bits (bit i = criterion i of
``criteria``, bit 15 = not usable: NaN or segment failed) and ``flagstat{h}`` (pair, criterion)
float32 statistics, both lazy (one task per batch and half).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import dask
import dask.array as da
import numpy as np
from scipy.ndimage import binary_dilation, median_filter

from reduce.swas import flagging as K_flag
from reduce.swas.physics import N_CHAN
from reduce.swas.steps import outputs

HALVES = ("490", "550")
UNUSABLE = 1 << 15


@K_flag.register_criterion("spikes_fast")
def fast_spike_criterion(spectra, *, sigma, channels, params):
    """stat = max |x - mean of its spike_width - 1 neighbours| / (expected sigma x sqrt(1 + 1/(w-1))).

    Like 'spikes' but with the radiometer noise instead of medians (~10x faster); a noisy pair is
    the 'noise' criterion's business. A very strong narrow line (curvature above the threshold
    within a pair) would be flagged: use 'spikes' for such targets."""
    x = spectra[:, channels]
    k = params.spike_width // 2
    n = x.shape[1]
    if n <= 2 * k:
        return np.zeros(x.shape[0], bool), np.zeros(x.shape[0])
    cs = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
    nb = cs[:, 2 * k + 1:] - cs[:, : n - 2 * k] - x[:, k: n - k]
    r = x[:, k: n - k] - nb / (2 * k)
    stat = np.max(np.abs(r), axis=1) / (np.asarray(sigma) * np.sqrt(1.0 + 1.0 / (2 * k)))
    return ~(stat <= params.spike_nsigma), stat


@dataclass(frozen=True)
class FlagStepParams:
    """Flagging options: the kernel's FlagParams, line-mask threshold [robust sigma of the
    segment median], criteria that skip the line mask's channels."""

    kernel: K_flag.FlagParams = field(default_factory=lambda: K_flag.FlagParams(
        criteria=("noise", "spikes_fast", "baseline")))
    line_nsigma: float = 5.0
    line_baseline_width: int = 61
    masked_criteria: tuple = ("noise", "baseline")


def line_mask(spectra, dilate, params=FlagStepParams(), *, median=None):
    """Bool (n_chan,): channels near a line in the median of spectra (m, n_chan), widened
    by `dilate` channels each side (`median`: that median when already known)."""
    med = K_flag._median(np.asarray(spectra, dtype=float), 0) if median is None else median
    if not np.any(np.isfinite(med)):
        return np.zeros(spectra.shape[1], bool)
    med = np.where(np.isfinite(med), med, np.nanmedian(med))
    r = med - median_filter(med, size=params.line_baseline_width, mode="nearest")
    e = params.kernel.edge_channels
    core = r[e:-e]
    sig = 1.4826 * np.median(np.abs(core - np.median(core)))
    m = np.abs(r) > params.line_nsigma * max(sig, 1e-30)
    m[:e] = m[-e:] = False
    return binary_dilation(m, iterations=max(int(dilate), 1)) if m.any() else m


def flag_segment(spectra, sigma, dilate, params=FlagStepParams()):
    """Flags (m,) int16 and stats (m, n_criteria) of one segment's pairs (plain numpy).

    The criteria run on float32 copies; the median over pairs is computed once and serves
    both the line mask and the 'baseline' reference (its noise added to the expected sigma,
    as the kernel does)."""
    x = np.asarray(spectra, dtype=np.float32)
    kp = params.kernel
    crit = kp.criteria
    flags = np.zeros(x.shape[0], np.int16)
    stats = np.full((x.shape[0], len(crit)), np.nan, np.float32)
    e = kp.edge_channels
    bad = ~np.all(np.isfinite(x[:, e:-e]), axis=1)
    flags[bad] |= np.int16(-32768)  # bit 15: unusable
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return flags, stats
    xg = x[good]
    sig = np.asarray(sigma, dtype=float)[good]
    finite = np.all(np.isfinite(xg), axis=0)
    med = K_flag._median(xg, 0)
    mask = line_mask(xg, dilate, params, median=med.astype(float))
    plain = K_flag.judged_channels(x.shape[1], kp) & finite
    masked = K_flag.judged_channels(x.shape[1], kp, mask) & finite
    resid = None
    for i, name in enumerate(crit):
        ch = masked if name in params.masked_criteria else plain
        if name == "baseline" and kp.reference == "median" and good.size > 1:
            resid = xg - med if resid is None else resid
            f, st = K_flag.CRITERIA[name](resid, sigma=sig * np.sqrt(1.0 + (np.pi / 2.0) / good.size),
                                          channels=ch, params=replace(kp, reference=None))
        else:
            f, st = K_flag.CRITERIA[name](xg, sigma=sig, channels=ch, params=kp)
        flags[good[f]] |= np.int16(1 << i)
        stats[good, i] = st
    return flags, stats


def flag_batch(switched, batch, params=FlagStepParams()):
    """Task body: flags and stats of every segment of one batch (one half)."""
    x = np.asarray(switched)
    n_crit = len(params.kernel.criteria)
    flags = np.zeros(x.shape[0], np.int16)
    stats = np.full((x.shape[0], n_crit), np.nan, np.float32)
    for sp in batch.segs:
        a, b = sp.p0 - batch.p0, sp.p1 - batch.p0
        flags[a:b], stats[a:b] = flag_segment(x[a:b], sp.sigma, sp.dilate, params)
    return {"flags": flags, "stats": stats}


def flag(pairs, plan, params=None):
    """Step 3 (lazy): adds ``flag490/550`` (pair,) int16 and ``flagstat490/550``
    (pair, criterion) float32 to the pairs Dataset. Works on dask- or numpy-backed pairs
    (rechunked to the plan's batches)."""
    params = params or plan.params.flag
    chunks = tuple(b.p1 - b.p0 for b in plan.batches)
    new = {}
    crit = params.kernel.criteria
    for half in HALVES:
        x = pairs[f"switched{half}"].data
        x = (x if isinstance(x, da.Array) else da.from_array(np.asarray(x))).rechunk((chunks, -1))
        blocks = x.to_delayed(optimize_graph=False).ravel()
        tasks = []
        for b, blk in zip(plan.batches, blocks):
            fn = partial(flag_batch, batch=b, params=params)
            tasks.append(dask.delayed(fn, pure=True)(blk, dask_key_name=f"flag{half}-{plan.token}-{b.index}"))
        shapes = [(b.p1 - b.p0,) for b in plan.batches]
        fl = outputs(tasks, "flags", shapes, np.int16, name=f"flag{half}")
        st = outputs(tasks, "stats", [s + (len(crit),) for s in shapes], np.float32, name=f"flag{half}")
        masks = [1 << i for i in range(len(crit))] + [-32768]
        new[f"flag{half}"] = (("pair",), fl, {
            "long_name": f"flagging-step reasons, {half} GHz (0 = good)", "flag_masks": masks,
            "flag_meanings": " ".join(list(crit) + ["unusable"])})
        new[f"flagstat{half}"] = (("pair", "criterion"), st,
                                  {"long_name": "criterion statistic (see reduce.swas.flagging)"})
    out = pairs.assign(new).assign_coords(criterion=list(crit))
    out.attrs["history"] = list(pairs.attrs.get("history", [])) + [plan.provenance["flag"]]
    return out


def flag_statistics(flags, seg_of_pair, criteria):
    """{segment: {half: {criterion: [tested, flagged]}}} from computed flags (numpy)."""
    out = {}
    for half, f in flags.items():
        f = np.asarray(f).astype(np.int32) & 0xFFFF
        for seg in np.unique(seg_of_pair):
            sel = f[seg_of_pair == seg]
            usable = (sel & 0x8000) == 0
            d = out.setdefault(int(seg), {}).setdefault(half, {})
            for i, name in enumerate(criteria):
                d[name] = [int(usable.sum()), int(np.count_nonzero(sel[usable] & (1 << i)))]
            d["any"] = [int(usable.sum()), int(np.count_nonzero(sel[usable] & ((1 << len(criteria)) - 1)))]
    return out
