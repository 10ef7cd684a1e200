"""Step 3, flagging of the switched spectra on derived quantities (seed §2.3), kernels:
pluggable criteria, the line mask and the per-segment task body of the lazy step
(:mod:`reduce.swas.steps.flag`).

A criterion is a function ``f(spectra, *, sigma, channels, params) -> (flag, stat)``
with spectra (m, n_chan) dimensionless (ON-OFF)/(OFF-ZERO), sigma (m,) the
radiometer-equation noise expected per channel, channels (n_chan,) bool of the
channels to judge, flag (m,) bool (True = reject) and stat (m,) float. Register
new ones with ``@register_criterion("name")`` and list them in FlagParams.criteria
(the pipeline's list is ``FlagStepParams.kernel.criteria``).

Per segment (:func:`flag_segment`), channels where the median switched spectrum shows a
line (above ``line_nsigma``, widened by the segment's Doppler range) are not judged by
the criteria listed in ``masked_criteria`` (a line moving with the orbit must not look
like a baseline variation); spikes are judged on every channel inside the edges. Flags
are int16 bits per pair (bit i = criterion i of ``criteria``, bit 15 = not usable: NaN
or segment failed) with float32 statistics per pair and criterion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import binary_dilation, median_filter

from reduce.swas.physics import EDGE_CHANNELS, NOISE_BW

log = logging.getLogger(__name__)

CRITERIA = {}


def register_criterion(name):
    """Decorator: make a criterion function available under `name`."""
    def deco(fn):
        CRITERIA[name] = fn
        return fn
    return deco


@dataclass(frozen=True)
class FlagParams:
    """Flagging configuration (thresholds in units of the expected noise unless stated)."""

    criteria: tuple = ("noise", "spikes", "baseline")
    edge_channels: int = EDGE_CHANNELS  # ignored at each end
    bandwidth_hz: float = NOISE_BW
    noise_max: float = 1.3  # measured / expected channel noise
    noise_min: float = 0.5
    spike_nsigma: float = 7.0  # |x - running median| in robust sigmas
    spike_width: int = 7  # running-median width, channels
    reference: str | None = "median"  # subtract the median over pairs before 'baseline'
    baseline_order: int = 0  # polynomial removed per pair before block means
    baseline_block: int = 32  # channels per block
    baseline_nsigma: float = 6.0  # max |block mean| in expected block-mean sigmas


def expected_sigma(inttime_on, inttime_off, *, n_off=1, bandwidth_hz=NOISE_BW):
    """Radiometer noise of (ON-OFF)/(OFF-ZERO) per channel: sqrt(1/(B t_on) + 1/(B t_off n_off)).

    inttime_* [s] (m,); n_off: OFF scans averaged (MAP). Weak-source limit (T_on ~ T_off).
    """
    t_on = np.asarray(inttime_on, dtype=float)
    t_off = np.asarray(inttime_off, dtype=float) * np.asarray(n_off, dtype=float)
    return np.sqrt(1.0 / (bandwidth_hz * t_on) + 1.0 / (bandwidth_hz * t_off))


def _median(x, axis, keepdims=False):
    """np.median when x is all finite (numpy's nanmedian loops row by row: ~50x slower)."""
    if np.all(np.isfinite(x)):
        return np.median(x, axis=axis, keepdims=keepdims)
    return np.nanmedian(x, axis=axis, keepdims=keepdims)


def _robust_sigma(x, axis=-1):
    med = _median(x, axis, keepdims=True)
    return 1.4826 * _median(np.abs(x - med), axis)


@register_criterion("noise")
def noise_criterion(spectra, *, sigma, channels, params):
    """stat = robust channel-to-channel noise (MAD of first differences / sqrt 2) / sigma."""
    d = np.diff(spectra[:, channels], axis=1)
    stat = _robust_sigma(d) / np.sqrt(2.0) / sigma
    flag = ~((stat <= params.noise_max) & (stat >= params.noise_min))
    return flag, stat


@register_criterion("spikes")
def spike_criterion(spectra, *, sigma, channels, params):
    """stat = max |x - median of its neighbours| / robust sigma of that residual.

    The neighbours are the spike_width - 1 channels around each channel (itself excluded,
    so a spike cannot hide in its own median and the residual has no spike of zeros).
    """
    x = spectra[:, channels]
    fp = np.ones((1, params.spike_width), dtype=bool)
    fp[0, params.spike_width // 2] = False
    r = x - median_filter(x, footprint=fp, mode="nearest")
    rs = _robust_sigma(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.nanmax(np.abs(r), axis=1) / rs
    return ~(stat <= params.spike_nsigma), stat


@register_criterion("baseline")
def baseline_criterion(spectra, *, sigma, channels, params):
    """stat = max |block mean| / expected block sigma, after subtracting the median spectrum
    over pairs (params.reference) and a per-pair polynomial of params.baseline_order."""
    x = spectra[:, channels]
    m = x.shape[0]
    var_scale = 1.0
    if params.reference == "median" and m > 1:
        x = x - _median(x, 0)
        var_scale = 1.0 + (np.pi / 2.0) / m  # noise of the median reference
    xc = np.linspace(-1.0, 1.0, x.shape[1])
    a = np.vander(xc, params.baseline_order + 1)
    coef, *_ = np.linalg.lstsq(a, np.nan_to_num(x).T, rcond=None)
    r = x - (a @ coef).T
    nb = x.shape[1] // params.baseline_block
    blocks = r[:, : nb * params.baseline_block].reshape(m, nb, params.baseline_block)
    bmean = np.nanmean(blocks, axis=2)
    bsig = sigma * np.sqrt(var_scale / params.baseline_block)
    stat = np.nanmax(np.abs(bmean), axis=1) / bsig
    return ~(stat <= params.baseline_nsigma), stat


def judged_channels(n_chan, params, mask=None):
    """Bool (n_chan,): channels to judge: not within edge_channels of an end, and not masked
    (mask True = exclude, e.g. known line windows)."""
    ch = np.zeros(n_chan, dtype=bool)
    ch[params.edge_channels : n_chan - params.edge_channels] = True
    if mask is not None:
        ch &= ~np.asarray(mask, dtype=bool)
    return ch


UNUSABLE = 1 << 15  #: flag bit of a pair that cannot be judged (NaN, or its segment failed)


@register_criterion("spikes_fast")
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

    kernel: FlagParams = field(default_factory=lambda: FlagParams(
        criteria=("noise", "spikes_fast", "baseline")))
    line_nsigma: float = 5.0
    line_baseline_width: int = 61
    masked_criteria: tuple = ("noise", "baseline")


def line_mask(spectra, dilate, params=FlagStepParams(), *, median=None):
    """Bool (n_chan,): channels near a line in the median of spectra (m, n_chan), widened
    by `dilate` channels each side (`median`: that median when already known)."""
    med = _median(np.asarray(spectra, dtype=float), 0) if median is None else median
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
    as baseline_criterion does). spectra (m, n_chan) dimensionless, sigma (m,) expected
    radiometer noise per channel, dilate: line-mask widening [channels]."""
    x = np.asarray(spectra, dtype=np.float32)
    kp = params.kernel
    crit = kp.criteria
    unknown = [name for name in crit if name not in CRITERIA]
    if unknown:
        raise KeyError(f"unknown flagging criterion {unknown[0]!r}; registered: {sorted(CRITERIA)}")
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
    med = _median(xg, 0)
    mask = line_mask(xg, dilate, params, median=med.astype(float))
    plain = judged_channels(x.shape[1], kp) & finite
    masked = judged_channels(x.shape[1], kp, mask) & finite
    resid = None
    for i, name in enumerate(crit):
        ch = masked if name in params.masked_criteria else plain
        if name == "baseline" and kp.reference == "median" and good.size > 1:
            resid = xg - med if resid is None else resid
            f, st = CRITERIA[name](resid, sigma=sig * np.sqrt(1.0 + (np.pi / 2.0) / good.size),
                                   channels=ch, params=replace(kp, reference=None))
        else:
            f, st = CRITERIA[name](xg, sigma=sig, channels=ch, params=kp)
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
