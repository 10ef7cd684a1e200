"""Time-median high-pass filter of Ge (70 / 160 um) BCDs: the SSC's "filtered BCDs".

The Ge:Ga pixels drift slowly (responsivity, the level after a stim flash, the offset of a
whole scan leg); a point source crosses a pixel of a scan map in about one DCE. Subtracting,
per pixel, the running median of its own values over the DCEs around each one removes what
varies slowly in time and keeps what varies quickly::

    filtered[i] = bcd[i] - median{ bcd[j] : |j - i| <= window // 2, good[j], not source[j] }

on the frames of one AOR in time order (the window is truncated at the first and last DCEs,
so it holds ``window // 2 + 1`` DCEs there). What it keeps and removes:

- kept: point sources that cross a pixel within a few DCEs: the median of 15 values of which
  at most ~3 see the source is the sky's. Aperture fluxes (sky from an annulus) are kept
  within 1 % for sources masked in every frame they are on (S/N of the peak >= ~10 per
  frame), 3-4 % at S/N 5 per frame; a source too faint to be masked at all loses about
  (DCEs it spends on the aperture) / window of its flux to the medians, as a shallow trough
  along its track +-window/2 DCEs long, which a local sky annulus mostly takes back
  (tests/mosaic/test_filtering.py);
- removed: slow drifts and per-leg offsets of the detector, the zodiacal and cirrus
  background, and every extended structure larger than about half the window's length along
  the scan (7 DCEs x 22.4" = 160" for the 70 um scan maps of the simulator; 7 DCEs x scan
  speed x DCE cadence in general). Extended emission comes out of the filtered products
  distorted or gone: **use the unfiltered BCDs and mosaic (``_bcd``, ``_maic``) for extended
  emission**, as the SSC said of its filtered products; the filtered ones are for faint point
  sources.

Limits: a step of the level (a leg's offset at a turnaround) is followed from window/2 DCEs
after it on; closer to it the window holds both levels and the DCEs next to the step are off
by up to half the step (when the window holds as many values from each side). In the first
and last window/2 DCEs of an AOR the truncated window lags a drift of slope s per DCE by up to
s * window / 4. A pixel's level is followed only as well as the noise of m values allows
(below).

Sources: values in ``source_mask`` (and not ``good``) are left out of the median, so a
bright source that sits on a pixel for several DCEs does not raise the median and dig a
negative hole around itself in the other DCEs (``compact_source_mask`` finds them per frame:
above the frame's own running spatial median, so neither the sky level nor gradients nor
wide extended emission are masked). Where fewer than ``min_values`` values are left in the
window, the window is widened (``window`` + 2, ..., up to ``max_window``) for those pixels
alone; where none are left even then, the median of the good values of the window including
the masked ones is taken (a source that never leaves a pixel cannot be told from a drift).
Every result depends only on the frames within ``max_window // 2`` of it, so a sequence cut
into blocks with that margin gives the same numbers as the whole.

Default window 15 DCEs (``DEFAULT_WINDOW``), from the simulated data: a 70 um scan map
steps 22.4" per DCE (6.5 "/s, 3.45 s cadence) over 9.85" pixels with an 18" PSF, so a source
is on a pixel above a few % of its peak for <= 3 DCEs: <= 3 of 15 values even unmasked,
which moves the median by < 0.2 sigma of the noise; the slow drifts (responsivity a few %
per hour, leg offsets: steps at the turnarounds, 30+ DCEs apart) are constant or linear
over 15 DCEs (52 s), which the median follows; a longer window would keep more extended
emission and spread a step over more DCEs, a shorter one would let more of a source into its
own median; the median of 15 values adds 10 % to the variance (below).

Uncertainty (``filtered_uncertainty``): with sigma the pixel's uncertainty and m the values
in its median, the median has variance c(m) sigma^2 / m (c = pi/2 for large m, 1 for m <= 2,
the normal-sample efficiency of the median) and covariance sigma^2 / m with each value in it,
so::

    var(filtered) = sigma^2 * (1 + c(m)/m - 2/m)   if the pixel's own value is in the median,
    var(filtered) = sigma^2 * (1 + c(m)/m)          if it is not (masked, rejected).

The medians of neighbouring DCEs share most of their values, so the filtered values of one
pixel are correlated in time (the uncertainty of a sum over DCEs of one pixel is larger than
the sum of the variances says; a mosaic pixel of a scan map combines different detector
pixels, whose medians are independent).
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["DEFAULT_WINDOW", "running_median", "highpass_time_median", "filtered_uncertainty", "compact_source_mask",
           "default_min_values", "default_max_window", "odd_window", "median_box"]

DEFAULT_WINDOW = 15


def default_min_values(window: int) -> int:
    """Values a median needs before the window is widened: a third of the window, at least 3."""
    return max(3, int(window) // 3)


def default_max_window(window: int) -> int:
    """The widest window tried where sources leave too few values: 3 x ``window`` (odd)."""
    w = 3 * int(window)
    return w if w % 2 else w + 1


def odd_window(window) -> int:
    """``window`` as the filter uses it: odd (an even one gets one DCE more), >= 1."""
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return window if window % 2 else window + 1


def _window_median(values, half, sel):
    """nanmedian and count of the finite ``values`` ((n, P) float, NaN = left out) within
    ``half`` of each row, for the entries ``sel`` ((n, P) bool) only: (median (k,), count (k,))."""
    pad = np.full((half,) + values.shape[1:], np.nan)
    view = sliding_window_view(np.concatenate([pad, values, pad]), 2 * half + 1, axis=0)   # (n, P, w)
    idx = np.nonzero(sel)
    win = view[idx]                                                                       # (k, w) copy
    count = np.isfinite(win).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # all-NaN windows
        med = np.nanmedian(win, axis=1) if len(win) else np.zeros(0)
    return med, count


def running_median(stack, good, window=DEFAULT_WINDOW, *, source_mask=None, min_values=None, max_window=None):
    """The baseline of :func:`highpass_time_median`.

    ``stack``: (n, ny, nx) (or (n, ...)) values of one pixel grid in time order; ``good``: bool
    like ``stack``; ``source_mask``: bool like ``stack`` or None, True = leave out of the median
    (still filtered); ``window``: DCEs (odd; an even one is made odd by one more);
    ``min_values`` (default a third of the window, >= 3), ``max_window`` (default 3 x window):
    see the module docstring.

    Returns ``(baseline, n_used, own)``: baseline float64 like ``stack`` (NaN where the window
    has no good value at all); n_used int16, the values in each median; own bool, whether the
    value itself is one of them (for :func:`filtered_uncertainty`).
    """
    window = odd_window(window)
    min_values = default_min_values(window) if min_values is None else int(min_values)
    max_window = max(odd_window(default_max_window(window) if max_window is None else max_window), window)
    stack = np.asarray(stack, dtype=np.float64)
    shape = stack.shape
    n = shape[0]
    flat = stack.reshape(n, -1)
    ok = (np.asarray(good, bool) & np.isfinite(stack)).reshape(n, -1)
    use = ok.copy()
    if source_mask is not None:
        use &= ~np.asarray(source_mask, bool).reshape(n, -1)
    base = np.full(flat.shape, np.nan)
    count = np.zeros(flat.shape, np.int64)
    if n == 0:
        return base.reshape(shape), count.astype(np.int16).reshape(shape), use.reshape(shape)
    vals = np.where(use, flat, np.nan)
    todo = np.ones(flat.shape, bool)
    for w in range(window, max_window + 1, 2):
        med, cnt = _window_median(vals, w // 2, todo)
        idx = np.nonzero(todo)
        enough = cnt >= min_values
        last = w + 2 > max_window
        take = enough | (last & (cnt > 0))
        base[idx[0][take], idx[1][take]] = med[take]
        count[idx[0][take], idx[1][take]] = cnt[take]
        todo[idx[0][take], idx[1][take]] = False
        if not todo.any():
            break
    if todo.any():              # nothing unmasked even in the widest window: the masked values too
        med, cnt = _window_median(np.where(ok, flat, np.nan), window // 2, todo)
        idx = np.nonzero(todo)
        base[idx] = med
        count[idx] = cnt
        use[idx] = ok[idx]
    own = use & (count > 0)
    return base.reshape(shape), count.astype(np.int16).reshape(shape), own.reshape(shape)


def highpass_time_median(stack, good, window=DEFAULT_WINDOW, *, source_mask=None, min_values=None,
                         max_window=None):
    """Filtered frames: ``stack - running_median(...)`` (see the module docstring); float64
    like ``stack``, NaN where the pixel is not good or its window has no good value."""
    base, _, _ = running_median(stack, good, window, source_mask=source_mask, min_values=min_values,
                                max_window=max_window)
    out = np.asarray(stack, dtype=np.float64) - base
    return np.where(np.asarray(good, bool) & np.isfinite(out), out, np.nan)


def _median_efficiency(m):
    """c(m): variance of the median of m normal values in units of sigma^2 / m (1 for m <= 2,
    pi/2 for large m; the exact small-m values are within 10 % of pi/2 from m = 3 on)."""
    m = np.asarray(m)
    return np.where(m <= 2, 1.0, np.pi / 2)


def filtered_uncertainty(unc, n_used, own):
    """1-sigma of the filtered values (module docstring): ``unc`` times
    sqrt(1 + c(m)/m - 2/m) where the value is in its own median, sqrt(1 + c(m)/m) where not;
    NaN where m = 0."""
    unc = np.asarray(unc, dtype=np.float64)
    m = np.asarray(n_used, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 1.0 + _median_efficiency(m) / m - np.where(own, 2.0 / m, 0.0)
        out = unc * np.sqrt(np.maximum(f, 0.0))
    return np.where(m > 0, out, np.nan)



def _fill_nearest(a, valid):
    from scipy import ndimage
    if valid.all() or not valid.any():
        return np.array(a, dtype=np.float64)
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return np.asarray(a, dtype=np.float64)[tuple(idx)]


def median_box(shape, box=5) -> tuple:
    """The (by, bx) box of :func:`compact_source_mask` on frames of ``shape``: ``box`` x ``box``,
    on a frame thinner than ``box`` (160 um: 2 x 20) its full height x ``2 box - 1`` (so that a
    PSF covers well under half of the box: the median stays the background's)."""
    ny, nx = shape
    by = min(int(box), ny)
    bx = int(box) if by == int(box) else 2 * int(box) - 1
    return by, min(bx, nx if nx % 2 else nx - 1)


def compact_source_mask(image, unc, good, *, nsigma=3.0, box=5, dilate_px=1):
    """Compact sources of one frame: True where the image exceeds its own running spatial
    median (``median_box(shape, box)``, bad pixels filled with their nearest good one) by more
    than ``nsigma * unc``, grown by a disk of ``dilate_px`` pixels. A point source (70 um PSF
    1.8 px FWHM in a 5 x 5 box) stands out of the median; smooth emission (gradients, the sky
    level, extended structure much wider than the box) does not, so the mask does not follow
    the sky or the drifts (a threshold over the frame's level would flag the bright side of a
    gradient and bias the medians). ``image``, ``unc``, ``good``: (ny, nx); bool (ny, nx)."""
    from scipy import ndimage
    good = np.asarray(good, bool) & np.isfinite(image)
    if good.sum() < 3:
        return np.zeros(np.shape(image), bool)
    filled = _fill_nearest(image, good)
    excess = filled - ndimage.median_filter(filled, size=median_box(filled.shape, box), mode="nearest")
    unc = np.asarray(unc, np.float64)
    noise = np.where(np.isfinite(unc) & (unc > 0), unc, np.inf)
    with np.errstate(invalid="ignore"):
        det = good & (excess > nsigma * noise)
    if dilate_px > 0 and det.any():
        r = int(np.ceil(dilate_px))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        det = ndimage.binary_dilation(det, structure=xx ** 2 + yy ** 2 <= dilate_px ** 2)
    return det
