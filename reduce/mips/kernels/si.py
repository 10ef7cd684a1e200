"""Kernels of the 24 um (Si:As) steps (``reduce.mips.steps.si``), on plain arrays: slope,
difference and replaced images, jailbar, droop and single-frame cosmic-ray flags, with the
task bodies (``*_block``) the lazy steps run per chunk of DCEs.

Every kernel takes arrays shaped ``(ndce, ny, nx)`` (a single ``(ny, nx)``
frame works too where noted), returns new arrays and never mutates its
inputs.  Rates are in DN/s unless stated.  Order of use in the 24 um pipeline
(the steps shared with the Ge arrays have their own kernel modules)::

    slope, diff, rate, replaced = replace_saturated(plane0, plane1)
    rate = dark.subtract_dark(rate, dark)
    rate = correct_jailbar(rate, flat=flat)          # relative column offsets first
    rate = correct_droop(rate, R, dark=dark)         # then the array-wide droop
    err = uncertainty.slope_uncertainty(rate + dark, gain=..., rdnoise=..., nsamp=..., replaced=replaced)
    rate, err = flat.flat_field(rate, flat), flat.flat_field(err, flat)
    cr = flag_cosmic_rays_single_frame(rate, err, threshold=5)
    img, err = fluxcal.to_surface_brightness(rate, fluxconv), fluxcal.to_surface_brightness(err, fluxconv)
    mask = mask.make_mask(pmask, {"saturated": replaced, "cosmic_ray": cr, "invalid": ~isfinite(img)})
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..bcd import DCE_CODES
from .arrays import as_float

log = logging.getLogger(__name__)

SAMPLE_TIME = 0.524288
"""Seconds per 24 um sample (the unit of raw plane 0 and of the first difference)."""

NREADOUTS = 4
"""Readout channels of the 24 um array: column x is read by channel ``x % 4``."""


def replace_saturated(slope, diff, *, sample_time=SAMPLE_TIME):
    """Raw planes -> (slope, difference, replaced, is_replaced).

    ``slope``: on-board slope, DN/sample; ``diff``: first difference (DN),
    non-zero only where the on-board rate exceeded the threshold.  Returns
    the slope image, the difference image and the replaced image in DN/s
    (replaced = slope, except where the difference is non-zero, there the
    first difference divided by one sample time), plus the boolean map of
    replaced pixels.
    """
    slope = as_float(slope)
    diff = as_float(diff)
    if slope.shape != diff.shape:
        raise ValueError(f"slope {slope.shape} and difference {diff.shape} planes differ in shape")
    is_replaced = (diff != 0) & np.isfinite(diff)
    slope_rate = slope / sample_time
    diff_rate = diff / sample_time
    replaced = np.where(is_replaced, diff_rate, slope_rate)
    return slope_rate, diff_rate, replaced, is_replaced


def correct_droop(rate, droop, *, dark=None):
    """Invert the droop: every pixel gained ``droop`` x mean signal over the array.

    ``rate`` is dark-subtracted (DN/s), shaped (..., ny, nx).  Forward model:
    m = s + R * mean(s + d) where ``d`` is the dark included in the signal
    that drives the droop (``dark=None``: droop driven by the sky signal only,
    d = 0).  Averaging over the array, mean(s) = (mean(m) - R mean(d)) / (1 + R),
    so the exact correction is s = m - R (mean(m) + mean(d)) / (1 + R).  The
    mean is a plain mean over finite pixels of each frame.
    """
    rate = as_float(rate)
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
    rate = as_float(rate)
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
    signal = as_float(signal)
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
    rate = as_float(rate)
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


def flag_cosmic_rays_single_frame(rate, error, threshold=5.0, *, sharpness=2.5, box=5):
    """Flag single-pixel cosmic-ray hits in each frame (boolean, same shape).

    A pixel is flagged when its excess over the local background (median of a
    ``box`` x ``box`` neighbourhood) exceeds ``threshold`` x ``error`` and is
    sharp: more than ``sharpness`` times the mean excess of its four direct
    neighbours.  A star (PSF FWHM ~2.3 pixels at 24 um) puts >= 50 % of its
    peak into those neighbours, a cosmic ray (nearly) nothing, so stars are
    not flagged.  Nothing is removed.
    """
    rate = as_float(rate)
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


# ---------------------------------------------------------------- parameters and task bodies
@dataclass(frozen=True)
class SiParams:
    """24 um step parameters (defaults: seed 000 / ICD §2)."""

    sample_time: float = SAMPLE_TIME  # s per sample
    jailbar: str = "auto"        # 'model' (JAILBAR x bright signal, needs JBTHRESH), 'data', 'auto'
    cr_threshold: float = 5.0    # sigma, single-frame CR flag
    cr_sharpness: float = 2.5
    cr_box: int = 5


def replace_saturated_block(raw, skip, *, sample_time):
    """Task body of step ``si.replace_saturated``: raw (n, plane=2, y, x) -> slope, difference,
    replaced (n, y, x) float32 DN/s, replaced-pixel map (bool) and dce_code (n,) int16."""
    raw = np.where(skip[:, None, None, None], np.nan, raw)
    slope, diff, rep, is_rep = replace_saturated(raw[:, 0], raw[:, 1], sample_time=sample_time)
    none = ~np.isfinite(rep).any(axis=(1, 2)) & ~skip
    code = np.where(none, DCE_CODES["no_valid_pixel"], 0).astype(np.int16)
    f = np.float32
    return slope.astype(f), diff.astype(f), rep.astype(f), is_rep, code


def jailbar_block(rate, calset, *, coeff, thresh, flat, mode):
    """Task body of step ``si.correct_jailbar``: rate (n, y, x) DN/s, per calibration set the model
    (JAILBAR coeff x bright signal above JBTHRESH) or the offsets estimated from the data."""
    out = np.array(rate, dtype=np.float32)
    for k in np.unique(calset):
        sel = calset == k
        use_model = mode == "model" or (mode == "auto" and np.isfinite(coeff[k]) and np.isfinite(thresh[k]))
        if use_model:
            out[sel] = correct_jailbar(rate[sel], coeff=float(coeff[k]), threshold=float(thresh[k]))
        else:
            out[sel] = correct_jailbar(rate[sel], flat=flat[k])
    return out


def droop_block(rate, calset, *, droop, dark):
    """Task body of step ``si.correct_droop``: rate (n, y, x) DN/s, DROOP and dark per calibration set."""
    out = np.array(rate, dtype=np.float32)
    for k in np.unique(calset):
        sel = calset == k
        out[sel] = correct_droop(rate[sel], float(droop[k]), dark=dark[k])
    return out


def cosmic_ray_block(rate, unc, *, p):
    """Task body of step ``si.flag_cosmic_rays``: bool (n, y, x), frame by frame."""
    # frame by frame: the kernel fills NaN pixels with the median of all it is given, so one
    # frame per call keeps the flags independent of the chunking
    out = np.zeros(rate.shape, bool)
    for i in range(rate.shape[0]):
        if np.isfinite(rate[i]).any():
            out[i] = flag_cosmic_rays_single_frame(rate[i], unc[i], p.cr_threshold,
                                                   sharpness=p.cr_sharpness, box=p.cr_box)
    return out
