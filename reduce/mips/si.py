"""Kernels of the 24 um (Si:As) level-1 pipeline, on plain arrays.

Every kernel takes arrays shaped ``(ndce, ny, nx)`` (a single ``(ny, nx)``
frame works too where noted), returns new arrays and never mutates its
inputs.  Rates are in DN/s unless stated.  Order of use in a pipeline::

    slope, diff, rate, replaced = replace_saturated(plane0, plane1)
    rate = subtract_dark(rate, dark)
    rate = correct_jailbar(rate, flat=flat)          # relative column offsets first
    rate = correct_droop(rate, R, dark=dark)         # then the array-wide droop
    err = slope_uncertainty(rate + dark, gain=..., rdnoise=..., nsamp=..., replaced=replaced)
    rate, err = flat_field(rate, flat), flat_field(err, flat)
    cr = flag_cosmic_rays_single_frame(rate, err, threshold=5)
    img, err = to_surface_brightness(rate, fluxconv), to_surface_brightness(err, fluxconv)
    mask = make_mask(pmask, replaced=replaced, cosmic_ray=cr, invalid=~isfinite(img))
"""
from __future__ import annotations

import logging
from types import MappingProxyType

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

SAMPLE_TIME = 0.524288
"""Seconds per 24 um sample (the unit of raw plane 0 and of the first difference)."""

NREADOUTS = 4
"""Readout channels of the 24 um array: column x is read by channel ``x % 4``."""

DEFAULT_MASK_BITS = MappingProxyType({
    "dead": 1, "hot": 2, "noisy": 4, "no_flat": 8,      # permanent (pmask, ICD §2)
    "saturated": 16,       # slope replaced by the first difference
    "cosmic_ray": 32,      # single-frame cosmic-ray flag
    "invalid": 64,         # no finite value (bad input, flat <= 0, ...)
})
"""Mask bit values; the schema's mapping should be passed in by the step wrapper."""

PMASK_BITS = MappingProxyType({"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8})
"""Bit values of the permanent-mask calibration file (ICD §2)."""


def _as_float(a):
    return np.asarray(a, dtype=np.result_type(np.asarray(a).dtype, np.float32))


def replace_saturated(slope, diff, *, sample_time=SAMPLE_TIME):
    """Raw planes -> (slope, difference, replaced, is_replaced).

    ``slope``: on-board slope, DN/sample; ``diff``: first difference (DN),
    non-zero only where the on-board rate exceeded the threshold.  Returns
    the slope image, the difference image and the replaced image in DN/s
    (replaced = slope, except where the difference is non-zero, there the
    first difference divided by one sample time), plus the boolean map of
    replaced pixels.
    """
    slope = _as_float(slope)
    diff = _as_float(diff)
    if slope.shape != diff.shape:
        raise ValueError(f"slope {slope.shape} and difference {diff.shape} planes differ in shape")
    is_replaced = (diff != 0) & np.isfinite(diff)
    slope_rate = slope / sample_time
    diff_rate = diff / sample_time
    replaced = np.where(is_replaced, diff_rate, slope_rate)
    return slope_rate, diff_rate, replaced, is_replaced


def slope_uncertainty(rate, *, gain, rdnoise, nsamp, sample_time=SAMPLE_TIME, replaced=None):
    """1-sigma uncertainty (DN/s) of a sample-up-the-ramp slope.

    Read noise ``rdnoise`` (DN per sample) and Poisson noise (``gain`` e-/DN)
    of a least-squares slope through ``nsamp`` equally spaced samples:
    var = 12 rn^2 / (N (N^2-1) dt^2) + 6 (N^2+1) / (5 N (N^2-1)) * rate / (gain dt).
    Pixels flagged in ``replaced`` have a two-sample slope (first difference):
    var = 2 rn^2 / dt^2 + rate / (gain dt).  Negative rates add no Poisson term.
    ``rate`` is the charge rate (sky + dark, DN/s): droop and jailbar are
    noiseless electronic offsets, so pass the rate after removing them.
    """
    rate = _as_float(rate)
    n = float(nsamp)
    if n < 2:
        raise ValueError(f"nsamp must be >= 2, got {nsamp}")
    dt = float(sample_time)
    pois = np.clip(rate, 0, None) / (gain * dt)
    var = (12 * rdnoise**2 / (n * (n * n - 1) * dt * dt)
           + 6 * (n * n + 1) / (5 * n * (n * n - 1)) * pois)
    if replaced is not None:
        var2 = 2 * rdnoise**2 / (dt * dt) + pois
        var = np.where(np.asarray(replaced, bool), var2, var)
    return np.sqrt(var)


def subtract_dark(rate, dark):
    """Rate minus the dark rate (DN/s); ``dark`` is (ny, nx), broadcast over DCEs."""
    return _as_float(rate) - np.asarray(dark)


def correct_droop(rate, droop, *, dark=None):
    """Invert the droop: every pixel gained ``droop`` x mean signal over the array.

    ``rate`` is dark-subtracted (DN/s), shaped (..., ny, nx).  Forward model:
    m = s + R * mean(s + d) where ``d`` is the dark included in the signal
    that drives the droop (``dark=None``: droop driven by the sky signal only,
    d = 0).  Averaging over the array, mean(s) = (mean(m) - R mean(d)) / (1 + R),
    so the exact correction is s = m - R (mean(m) + mean(d)) / (1 + R).  The
    mean is a plain mean over finite pixels of each frame.
    """
    rate = _as_float(rate)
    mean_m = np.nanmean(rate, axis=(-2, -1), keepdims=True)
    mean_d = 0.0 if dark is None else float(np.nanmean(dark))
    return rate - droop * (mean_m + mean_d) / (1.0 + droop)


def _channel_excess(rate, channel, flat=None):
    """(…, ny, ncol) excess of the channel's columns over the mean of their two neighbours.

    With a flat, the neighbours are compared in flat-fielded units and the
    excess scaled back by the pixel's flat, so pixel-to-pixel response does
    not add scatter: e = (m/f - mean(m_l/f_l, m_r/f_r)) * f.
    """
    nx = rate.shape[-1]
    if flat is not None:
        flat = np.asarray(flat, dtype=rate.dtype)
        flat = np.where(np.isfinite(flat) & (flat > 0), flat, np.nan)
        rate = rate / flat
    cols = np.arange(channel, nx, NREADOUTS)
    left = np.clip(cols - 1, 0, nx - 1)
    right = np.clip(cols + 1, 0, nx - 1)
    left = np.where(cols - 1 < 0, right, left)          # array edge: use the one neighbour
    right = np.where(cols + 1 > nx - 1, left, right)
    excess = rate[..., cols] - 0.5 * (rate[..., left] + rate[..., right])
    return excess if flat is None else excess * flat[..., cols]


def jailbar_offsets(rate, *, channels=(3,), per_row=False, flat=None):
    """Estimate the extra offset (DN/s) of each readout channel's columns.

    The offset of channel c is the median, over its pixels, of the pixel minus
    the mean of its left and right neighbours; the coupling between listed
    neighbouring channels is solved for (unlisted channels are the offset-free
    reference; with all four listed, a common offset is unobservable and the
    offsets returned have zero mean).  Pass the ``flat`` (ny, nx) to keep
    pixel-to-pixel response out of the estimate (the offset is additive, before
    the flat).  Returns (…, len(channels)) or, with
    ``per_row``, (…, ny, len(channels)).  Smooth sky, stars and the uniform
    droop cancel in the difference; the median rejects point sources.
    """
    rate = _as_float(rate)
    axis = -1 if per_row else (-2, -1)
    d = np.stack([np.nanmedian(_channel_excess(rate, c, flat), axis=axis) for c in channels],
                 axis=-1)
    # excess_c = o_c - (o_{c-1} + o_{c+1}) / 2 with unlisted channels at 0: solve for o
    # (all four channels: singular in the common offset, pinv gives the zero-mean solution).
    m = np.eye(len(channels))
    for i, c in enumerate(channels):
        for j, k in enumerate(channels):
            if k in ((c - 1) % NREADOUTS, (c + 1) % NREADOUTS) and k != c:
                m[i, j] -= 0.5
    return d @ np.linalg.pinv(m).T


def jailbar_bright(signal, threshold, *, channel=3):
    """Bright signal (DN/s) in one readout per frame: sum over its pixels of
    max(s - median(s) - threshold, 0), the median over the whole frame.  Shape (…,)."""
    signal = _as_float(signal)
    med = np.nanmedian(signal, axis=(-2, -1), keepdims=True)
    excess = np.clip(signal[..., channel::NREADOUTS] - med - threshold, 0, None)
    return np.nansum(excess, axis=(-2, -1))


def correct_jailbar(rate, coeff=None, *, threshold=None, bright=None, channels=(3,),
                    per_row=False, flat=None, niter=5):
    """Remove the readout-channel ("jailbar") offsets from rate images (DN/s).

    Default (``coeff`` None): estimate each listed channel's offset from the
    data (``jailbar_offsets``) and subtract it from that channel's columns;
    needs no model of the effect.  Model mode (``coeff`` given, one channel):
    offset = ``coeff`` x bright signal in the readout, ``bright`` (…,) given or
    computed as ``jailbar_bright(rate - offset, threshold)`` by fixed-point
    iteration (the offset itself lifts the readout's pixels).  Returns a new array.
    """
    rate = _as_float(rate)
    if coeff is not None:
        if per_row or len(channels) != 1:
            raise ValueError("model (coeff x bright) offsets are per frame and for one channel")
        if bright is not None:
            off = coeff * np.asarray(bright, dtype=rate.dtype)
        elif threshold is None:
            raise ValueError("model jailbar correction needs bright or threshold")
        else:
            off = np.zeros(rate.shape[:-2], dtype=rate.dtype)
            for _ in range(niter):
                fixed = rate.copy()
                fixed[..., channels[0]::NREADOUTS] -= off[..., None, None]
                off = coeff * jailbar_bright(fixed, threshold, channel=channels[0])
        off = np.asarray(off)[..., None]
    else:
        off = jailbar_offsets(rate, channels=channels, per_row=per_row, flat=flat)
    out = rate.copy()
    nx = rate.shape[-1]
    for i, c in enumerate(channels):
        cols = np.arange(c, nx, NREADOUTS)
        o = off[..., i]
        o = o[..., :, None] if per_row else o[..., None, None]
        out[..., cols] = rate[..., cols] - o
    return out


def flat_field(rate, flat):
    """Divide by the flat (relative response, mean 1); NaN where flat <= 0 or not finite."""
    rate = _as_float(rate)
    flat = np.asarray(flat, dtype=rate.dtype)
    good = np.isfinite(flat) & (flat > 0)
    return rate / np.where(good, flat, np.nan)


def to_surface_brightness(rate, fluxconv):
    """DN/s (flat-fielded) -> MJy/sr with FLUXCONV (MJy/sr per DN/s)."""
    return _as_float(rate) * float(fluxconv)


def flag_cosmic_rays_single_frame(rate, error, threshold=5.0, *, sharpness=2.5, box=5):
    """Flag single-pixel cosmic-ray hits in each frame (boolean, same shape).

    A pixel is flagged when its excess over the local background (median of a
    ``box`` x ``box`` neighbourhood) exceeds ``threshold`` x ``error`` and is
    sharp: more than ``sharpness`` times the mean excess of its four direct
    neighbours.  A star (PSF FWHM ~2.3 pixels at 24 um) puts >= 50 % of its
    peak into those neighbours, a cosmic ray (nearly) nothing, so stars are
    not flagged.  Nothing is removed.
    """
    rate = _as_float(rate)
    error = np.broadcast_to(np.asarray(error, dtype=rate.dtype), rate.shape)
    size = (1,) * (rate.ndim - 2) + (box, box)
    filled = np.where(np.isfinite(rate), rate, np.nanmedian(rate))
    # The box median is at least the box minimum, so excess > threshold*error needs
    # filled - min > threshold*error: compute medians only there and at the four
    # neighbours the sharpness test uses (the same result as a full median filter).
    low = ndimage.minimum_filter(filled, size=size, mode="nearest")
    candidate = filled - low > threshold * error
    need = ndimage.binary_dilation(candidate, structure=_cross(rate.ndim)) if candidate.any() else candidate
    excess = np.zeros_like(filled)
    excess[need] = filled[need] - _box_median_at(filled, need, box)
    kern = np.zeros((3, 3))
    kern[[0, 1, 1, 2], [1, 0, 2, 1]] = 0.25
    kern = kern.reshape((1,) * (rate.ndim - 2) + (3, 3))
    neigh = ndimage.convolve(excess, kern, mode="nearest")
    flag = candidate & (excess > threshold * error) & (excess > sharpness * np.clip(neigh, 0, None))
    return flag & np.isfinite(rate) & np.isfinite(error)


def _cross(ndim):
    """The pixel and its four direct neighbours, in the last two axes."""
    cross = np.zeros((3, 3), bool)
    cross[[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]] = True
    return cross.reshape((1,) * (ndim - 2) + (3, 3))


def _box_median_at(image, where, box):
    """Median of the box x box neighbourhood (edges repeated) at the pixels ``where`` (bool)."""
    half = box // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(half, half), (half, half)]
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(image, pad, mode="edge"), (box, box), axis=(-2, -1))
    return np.median(windows[where], axis=(-2, -1))


def make_mask(pmask, *, shape=None, replaced=None, cosmic_ray=None, invalid=None,
              bits=DEFAULT_MASK_BITS, pmask_bits=PMASK_BITS):
    """Build the uint16 mask image from the permanent mask and per-DCE flags.

    ``pmask`` (ny, nx) carries ICD bits ``pmask_bits``; each of its bits is
    re-mapped to ``bits`` under the same name.  ``replaced``, ``cosmic_ray`` and
    ``invalid`` (boolean, broadcastable) set bits 'saturated', 'cosmic_ray' and
    'invalid'.  ``shape`` defaults to the broadcast shape of the inputs.
    """
    pmask = np.asarray(pmask).astype(np.int64)
    flags = {"saturated": replaced, "cosmic_ray": cosmic_ray, "invalid": invalid}
    shapes = [pmask.shape] + [np.shape(v) for v in flags.values() if v is not None]
    shape = shape or np.broadcast_shapes(*shapes)
    mask = np.zeros(shape, dtype=np.uint16)
    for name, value in pmask_bits.items():
        if name in bits:
            mask |= np.where(pmask & value, np.uint16(bits[name]), np.uint16(0))
    for name, value in flags.items():
        if value is not None:
            mask |= np.where(np.asarray(value, bool), np.uint16(bits[name]), np.uint16(0))
    return mask
