"""Flagging of switched spectra (seed §2.3): pluggable criteria on derived quantities.

A criterion is a function ``f(spectra, *, sigma, channels, params) -> (flag, stat)``
with spectra (m, n_chan) dimensionless (ON-OFF)/(OFF-ZERO), sigma (m,) the
radiometer-equation noise expected per channel, channels (n_chan,) bool of the
channels to judge, flag (m,) bool (True = reject) and stat (m,) float. Register
new ones with ``@register_criterion("name")`` and list them in FlagParams.criteria.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

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


def flag_pairs(spectra, sigma, *, mask=None, params=FlagParams()):
    """Run every criterion in params.criteria on spectra (m, n_chan) with expected sigma (m,).

    Channels that are NaN in any pair are not judged. Returns (flag (m,) bool = any
    criterion, results {name: (flag (m,), stat (m,))}). Unknown names raise KeyError.
    """
    x = np.asarray(spectra, dtype=float)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), x.shape[:1])
    if x.shape[0] == 0:
        empty = (np.zeros(0, bool), np.zeros(0))
        return np.zeros(0, bool), {name: empty for name in params.criteria}
    ch = judged_channels(x.shape[1], params, mask) & np.all(np.isfinite(x), axis=0)
    results = {}
    for name in params.criteria:
        if name not in CRITERIA:
            raise KeyError(f"unknown flagging criterion {name!r}; registered: {sorted(CRITERIA)}")
        results[name] = CRITERIA[name](x, sigma=sig, channels=ch, params=params)
    flag = np.zeros(x.shape[0], dtype=bool)
    for f, _ in results.values():
        flag |= f
    return flag, results


def flag_summary(results, flag=None):
    """Per-criterion counts: a structured array (criterion, n_flagged, n_total, fraction);
    a last row 'any' is added when the combined flag is given."""
    rows = [(name, int(f.sum()), f.size) for name, (f, _) in results.items()]
    if flag is not None:
        rows.append(("any", int(np.sum(flag)), np.size(flag)))
    out = np.zeros(len(rows), dtype=[("criterion", "U32"), ("n_flagged", "i8"),
                                     ("n_total", "i8"), ("fraction", "f8")])
    for i, (name, nf, nt) in enumerate(rows):
        out[i] = (name, nf, nt, nf / nt if nt else np.nan)
    return out
