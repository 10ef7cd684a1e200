"""Outlier rejection across frames (cosmic rays, moving objects), after MOPEX / jwst
``outlier_detection``: the median of the frames on the output grid is blotted back to each
frame and pixels too far from it are rejected; where the stack is too shallow for a median
("dual" mode) a frame's pixels are tested against their own neighbourhood instead.

Two kernels, both on plain numpy arrays and astropy WCS objects, both valid on any sub-grid
(``Grid.tile``) so that the pipeline can compute the median tile by tile and flag each frame
against the cut-out of it that covers the frame:

- :func:`stack_statistics`: per output pixel the median, robust sigma and depth of the
  frames sampled there;
- :func:`flag_frame`: the rejected pixels of one frame.

Rejection rule of :func:`flag_frame` for a pixel of the frame with ``depth >= min_depth``
(all quantities MJy/sr, ``B`` the blotted median)::

    |I - offset - B| > sqrt(nsigma**2 * (unc**2 + pi/2 * sigma**2 / depth) + (scale * D)**2)

``pi/2 * sigma**2 / depth`` is the variance of the median of ``depth`` samples of scatter
``sigma``; ``D`` is the largest absolute difference between ``B`` at the pixel and at its 8
neighbours, the jwst "derivative" term: resampling onto the grid and back misses the peak
of an undersampled point source (FWHM 2.35 px at 24 um) by a fraction of the local
pixel-to-pixel contrast, and ``scale * D`` absorbs that interpolation error (and
registration errors of a small fraction of a pixel). Unlike jwst the term is added in
quadrature, so that it masks less on the wings of sources.

Interpolation (``order``, the same in both kernels): 3 (default) samples the frames with a
cubic spline and blots the median with Keys' cubic convolution (local 4x4, so cut-outs
give the same result); 1 is the bilinear sampling and blot of MOPEX / jwst. On dithered
24 um frames (grid 2.45"/px) the largest interpolation error of a static source, in units
of ``D``, is 0.15 with order 3 and 0.78 with order 1 (tests/mosaic/test_outliers.py,
4 scenes); the defaults ``scale`` 0.2 and 1.0 (``SCALE``) leave a margin. The smaller
tolerance of order 3 is what keeps cosmic rays on the wings of bright sources detectable.

Pixels with ``depth < min_depth`` are, with ``dual=True``, tested spatially: a pixel is a
cosmic-ray candidate where it exceeds the 5x5 median of its own frame by more than
``nsigma`` sigma *and* is sharper than any PSF: the second brightest of its 8 neighbours
(above that local median) is below ``sharp`` (default 0.4) times its own excess. The peak
pixel of a Gaussian PSF of FWHM 2.35 px (24 um) has at least two neighbours >= 0.6 of it
(>= 0.44 at 70 um, FWHM 1.83 px: use ``sharp=0.3`` there); a single pixel or a 2-pixel
streak has at most one bright neighbour.

Both tests use hysteresis (as jwst's second pass): a pixel above the threshold with
``nsigma_low`` (default 2.5) instead of ``nsigma`` is rejected too when it is 8-connected
to a pixel above the ``nsigma`` threshold, which catches the faint wings of moving objects
and the tails of streaks. Negative outliers are rejected by the temporal test only.

Defaults: ``nsigma=4`` (MOPEX uses 3; jwst 5 and 4 in its two passes); ``min_depth=3``
(the MOPEX minimum); ``dual=True``; ``sigma`` from the MAD where ``depth >= 5``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .frames import Grid, Frame, footprint, pixel_map, pixmap

__all__ = ["stack_statistics", "time_split", "TimeSplit", "flag_frame", "MAD_DEPTH", "SCALE"]

SCALE = {1: 1.0, 3: 0.2}  # default interpolation-error factors per interpolation order
MAD_DEPTH = 5  # stacks at least this deep take sigma from the MAD, shallower ones from unc


def _fill_nearest(a, valid):
    """``a`` with every invalid pixel replaced by the nearest valid one (a copy)."""
    if valid.all() or not valid.any():
        return np.array(a, copy=True)
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return a[tuple(idx)]


def _usable(frame):
    return frame.good & np.isfinite(frame.image) & np.isfinite(frame.unc)


def _valid_at(valid, y, x):
    """True where the pixel containing (y, x) lies inside ``valid``'s array and is valid."""
    ny, nx = valid.shape
    iy, ix = np.rint(np.nan_to_num(y, nan=-1)), np.rint(np.nan_to_num(x, nan=-1))
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    ok = np.zeros(np.shape(y), bool)
    ok[inside] = valid[iy[inside].astype(int), ix[inside].astype(int)]
    return ok


def _interp(values, valid, y, x, order=1):
    """``values`` interpolated at (y, x) (0-based pixel coordinates, any shape) from the
    ``valid`` pixels only; NaN where the pixel containing the point is not valid or lies
    outside the array. ``order`` 1: bilinear with the weights of the valid pixels
    renormalised; 3: cubic B-spline (``map_coordinates`` with its prefilter over the whole
    array, invalid pixels first filled with their nearest valid neighbour)."""
    ok = _valid_at(valid, y, x)
    out = np.full(y.shape, np.nan)
    if ok.any():
        c = [y[ok], x[ok]]
        if order == 3:
            out[ok] = ndimage.map_coordinates(_fill_nearest(values, valid), c, order=3, mode="nearest")
            return out
        num = ndimage.map_coordinates(np.where(valid, values, 0.0), c, order=1,
                                      mode="grid-constant", cval=0.0)
        den = ndimage.map_coordinates(valid.astype(np.float64), c, order=1,
                                      mode="grid-constant", cval=0.0)
        out[ok] = num / den
    return out


SPLINE_PAD = 12  # pixels: scipy's own edge padding before the spline prefilter (mode "nearest")


class _Spline:
    """The cubic B-spline of one frame's ``values`` (invalid pixels filled with their nearest
    valid neighbour), prefiltered once: ``sample(y, x)`` gives exactly ``_interp(values, valid,
    y, x, order=3)`` (map_coordinates pads by SPLINE_PAD edge pixels before its prefilter; so
    does this), for the several sub-tiles a frame covers."""

    def __init__(self, values, valid):
        self.valid = valid
        filled = _fill_nearest(np.asarray(values, np.float64), valid)
        self.coeffs = ndimage.spline_filter(np.pad(filled, SPLINE_PAD, mode="edge"), order=3, mode="nearest")

    def sample(self, y, x):
        ok = _valid_at(self.valid, y, x)
        out = np.full(y.shape, np.nan)
        if ok.any():
            out[ok] = ndimage.map_coordinates(self.coeffs, [y[ok] + SPLINE_PAD, x[ok] + SPLINE_PAD], order=3,
                                              mode="nearest", prefilter=False)
        return out


def _keys_weights(t):
    """(4, ...) weights of the taps at -1, 0, 1, 2 of Keys' cubic convolution (a = -0.5)
    for fractional positions ``t`` in [0, 1)."""
    d = np.abs(np.stack([t + 1, t, t - 1, t - 2]))
    return np.where(d <= 1, 1.5 * d ** 3 - 2.5 * d ** 2 + 1, -0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2)


def nanmedian0(cube):
    """The median over axis 0 of ``cube`` (n, ...) ignoring NaN (NaN where every value is NaN):
    ``np.nanmedian(cube, axis=0)``, by one sort along the axis. numpy's nanmedian goes through
    masked arrays for short axes (its ``_nanmedian_small``), which made the stack medians of the
    outlier step a third of its time."""
    cube = np.asarray(cube)
    n = (~np.isnan(cube)).sum(axis=0)
    s = np.sort(np.where(np.isnan(cube), np.inf, cube), axis=0)
    lo = np.take_along_axis(s, ((n - 1) // 2)[None], axis=0)[0]
    hi = np.take_along_axis(s, (n // 2)[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        med = (lo + hi) / 2                      # numpy's mean of the two middle values
    return np.where(n > 0, med, np.nan).astype(cube.dtype if cube.dtype.kind == "f" else np.float64)


def _mad_std0(cube, median):
    """1.4826 x the median absolute deviation over axis 0 ignoring NaN (``astropy.stats.mad_std``
    with ``ignore_nan=True``), given ``median`` = nanmedian0(cube)."""
    return nanmedian0(np.abs(cube - median[None])) * 1.482602218505602


def _taps(shape, y, x):
    """The 16 taps of Keys' cubic convolution at (y, x) on an array of ``shape``: (flat index
    (16, ...) clipped into the array, weight (16, ...), inside (16, ...) bool). Computed once
    per frame and used for every array blotted to its pixels."""
    ny, nx = shape
    y = np.nan_to_num(np.asarray(y, np.float64), nan=-10.0)
    x = np.nan_to_num(np.asarray(x, np.float64), nan=-10.0)
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = _keys_weights(y - y0), _keys_weights(x - x0)
    iy = y0.astype(np.int64)[None] - 1 + np.arange(4).reshape((4,) + (1,) * y.ndim)
    ix = x0.astype(np.int64)[None] - 1 + np.arange(4).reshape((4,) + (1,) * x.ndim)
    iny, inx = (iy >= 0) & (iy < ny), (ix >= 0) & (ix < nx)
    iyc, ixc = np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)
    idx = (iyc[:, None] * nx + ixc[None, :]).reshape((16,) + y.shape)
    w = (wy[:, None] * wx[None, :]).reshape((16,) + y.shape)
    inside = (iny[:, None] & inx[None, :]).reshape((16,) + y.shape)
    return idx, w, inside


def _cubic_conv(values, valid, y, x, taps=None):
    """Keys' cubic convolution of ``values`` at (y, x): a local 4x4 interpolating kernel
    (no prefilter, so a cut-out with a margin of >= 2 pixels gives the same values as the
    whole array); NaN where any of the 16 taps is not ``valid`` or outside the array.
    ``taps``: ``_taps(values.shape, y, x)`` when already computed."""
    idx, w, inside = taps if taps is not None else _taps(values.shape, y, x)
    v = np.where(valid, values, 0.0).ravel()
    ok = (inside & np.asarray(valid).ravel()[idx]).all(axis=0)
    out = np.einsum("k...,k...->...", w, v[idx])
    return np.where(ok, out, np.nan)


def stack_statistics(tile: Grid, frames: list[Frame], offsets=None, *, mad_depth=MAD_DEPTH, order=3, times=None,
                     splines=None):
    """Median, robust sigma and depth of the frames on the pixels of ``tile``.

    Each frame's ``image - offset`` (``offsets[i]``: a float or an array of the frame's
    shape, MJy/sr; None: 0) is sampled at the centre of every pixel of ``tile`` (grid pixel
    -> sky -> frame pixel through the frame's WCS with SIP; only where the pixel containing
    the sample point is good): ``order`` 3 (default) a cubic spline over the frame (bad
    pixels filled with their nearest good neighbour), 1 bilinear over the good pixels.
    The spline misses the peak of a 2.35 px FWHM PSF by ~12x less than bilinear sampling,
    so outliers near bright sources stay detectable (see the module docstring).

    Returns ``(median, sigma, depth)`` of shape ``tile.shape``: ``median`` (float32,
    MJy/sr, NaN where depth 0) the median over the samples; ``sigma`` (float32, MJy/sr)
    the scatter of one sample: ``1.4826 * MAD`` where ``depth >= mad_depth``, else the
    median of the frames' ``unc`` sampled the same way (a MAD of fewer samples is too
    noisy); ``depth`` (int16) the number of frames sampled. Every output pixel depends on
    its own position only, so a tile equals the same cut of the full grid's result.
    Memory: each frame's samples on its bounding box, then one float32 (depth.max(), *tile.shape)
    cube, twice (``_pack``).

    ``times`` (one per frame, MJD): also return the time-split statistics of
    :func:`time_split` as a 4th element, a :class:`TimeSplit`. ``splines``: a dict the caller
    keeps across calls on sub-tiles with the same frames and offsets: each frame's spline is
    prefiltered once (the same numbers).
    """
    ny, nx = tile.shape
    offsets = [0.0] * len(frames) if offsets is None else offsets
    samples = []       # (k, box, values, uncertainties) on each frame's bounding box of the tile
    for k, (f, off) in enumerate(zip(frames, offsets)):
        # bounding box of the frame on the tile (+2 px against SIP curvature and rounding)
        cx, cy = tile.wcs.all_world2pix(*footprint(f.wcs, f.shape).T, 0)
        x0, x1 = max(int(np.floor(cx.min())) - 2, 0), min(int(np.ceil(cx.max())) + 3, nx)
        y0, y1 = max(int(np.floor(cy.min())) - 2, 0), min(int(np.ceil(cy.max())) + 3, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        fmap = pixel_map(tile.wcs, f.wcs, (y1 - y0, x1 - x0), origin=(y0, x0))
        fx, fy = fmap[..., 0], fmap[..., 1]
        use = _usable(f)
        if order == 3 and splines is not None:
            if id(f) not in splines:
                splines[id(f)] = _Spline(np.asarray(f.image - off, np.float64), use)
            v = splines[id(f)].sample(fy, fx)
        else:
            v = _interp(np.asarray(f.image - off, np.float64), use, fy, fx, order)
        u = _interp(np.asarray(f.unc, np.float64), use, fy, fx)
        samples.append((k, (slice(y0, y1), slice(x0, x1)), v.astype(np.float32), u.astype(np.float32)))
    if times is not None:       # packed in time order: the time split needs each pixel's samples so
        t_kept = np.asarray(times, np.float64)[[k for k, *_ in samples]]
        samples = [samples[i] for i in np.argsort(t_kept, kind="stable")]
    cube, tcube = _pack([(box, v) for _k, box, v, _u in samples], tile.shape,
                        None if times is None else [float(times[k]) for k, *_ in samples])
    if cube is None:
        nan = np.full(tile.shape, np.nan, np.float32)
        out = nan, nan.copy(), np.zeros(tile.shape, np.int16)
        return out if times is None else out + (time_split(np.zeros((0,) + tile.shape, np.float32), []),)
    ucube, _ = _pack([(box, u) for _k, box, _v, u in samples], tile.shape)
    if ucube is None:           # no bilinear unc sample anywhere (isolated good pixels): sigma NaN there
        ucube = np.full((1,) + tuple(tile.shape), np.nan, np.float32)
    depth = np.isfinite(cube).sum(axis=0).astype(np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (depth 0)
        median = nanmedian0(cube)
        sigma = np.where(depth >= mad_depth, _mad_std0(cube, median), nanmedian0(ucube))
    out = median.astype(np.float32), sigma.astype(np.float32), depth
    return out if times is None else out + (time_split(cube, tcube),)


def _pack(samples, shape, times=None):
    """The samples of many frames on a tile as a (depth, ny, nx) float32 cube: each pixel's
    finite samples in the order given, in its first ``depth[y, x]`` slots, NaN after them
    (``depth.max()`` slots, not one per frame: most frames of a tile cover a small part of it,
    and the medians of the stack went through a cube mostly NaN). ``samples``: [(box (2 slices),
    values on the box)]; ``times``: one per sample: also the (depth, ny, nx) float64 cube of the
    time of every slot (NaN where empty). Returns (cube, times cube or None), cube None when
    nothing is finite."""
    count = np.zeros(shape, np.int32)
    for box, v in samples:
        count[box] += np.isfinite(v)
    depth = int(count.max()) if count.size else 0
    if depth == 0:
        return None, None
    cube = np.full((depth,) + tuple(shape), np.nan, np.float32)
    tcube = None if times is None else np.full(cube.shape, np.nan)
    count[:] = 0
    for j, (box, v) in enumerate(samples):
        yy, xx = np.nonzero(np.isfinite(v))
        gy, gx = yy + box[0].start, xx + box[1].start
        slot = count[gy, gx]
        cube[slot, gy, gx] = v[yy, xx]
        if tcube is not None:
            tcube[slot, gy, gx] = times[j]
        count[gy, gx] += 1
    return cube, tcube


@dataclass
class TimeSplit:
    """Per output pixel (arrays of the tile's shape): ``early`` / ``late`` (float32, MJy/sr) the
    median of the first / last ``third`` (int16) of the samples in time order, ``t_split``
    (float64, MJD) the time of the middle sample (NaN where depth 0)."""

    early: np.ndarray
    late: np.ndarray
    t_split: np.ndarray
    third: np.ndarray


def time_split(cube, times):
    """The :class:`TimeSplit` of a stack ``cube`` (n, ny, nx; NaN = no sample) of frames taken
    at ``times`` (n,) MJD (or of samples taken at ``times`` (n, ny, nx), in time order along
    axis 0 at each pixel: ``_pack``): per pixel its samples in time order, the median of the first and of
    the last ceil(depth/3) of them, and the time of the middle (ceil(depth/2)-th) one.

    Why: a slow moving object (or anything that changes over minutes) sits at one sky pixel
    in most of the frames of one scan leg that cover it, so the median of all frames there
    holds it; a frame taken in the first half of a pixel's time span compared with the
    median of the last third (and one in the second half with the first third) sees it
    moved away. Where other legs cover the pixel too, the two thirds are mostly other legs'
    frames."""
    shape = cube.shape[1:]
    if cube.shape[0] == 0:
        nan = np.full(shape, np.nan, np.float32)
        return TimeSplit(nan, nan.copy(), np.full(shape, np.nan), np.zeros(shape, np.int16))
    times = np.asarray(times, np.float64)
    if times.ndim == 1:
        order = np.argsort(times, kind="stable")
        c, t = cube[order], np.broadcast_to(times[order].reshape((-1,) + (1,) * len(shape)), cube.shape)
    else:                   # a packed cube (``_pack``): each sample's time, in time order per pixel
        c, t = cube, times
    valid = np.isfinite(c)
    rank = np.cumsum(valid, axis=0)                      # 1-based rank of each sample in time
    depth = rank[-1]
    third = -(-depth // 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (depth 0)
        early = nanmedian0(np.where(valid & (rank <= third), c, np.nan))
        late = nanmedian0(np.where(valid & (rank > depth - third), c, np.nan))
    mid = valid & (rank == -(-depth // 2))
    t_split = np.where(depth > 0, np.take_along_axis(t, np.argmax(mid, axis=0)[None], axis=0)[0], np.nan)
    return TimeSplit(early.astype(np.float32), late.astype(np.float32), t_split, third.astype(np.int16))


def _hysteresis(seeds, candidates):
    """The 8-connected components of ``candidates | seeds`` that contain a seed."""
    lab, _ = ndimage.label(candidates | seeds, structure=np.ones((3, 3)))
    keep = np.unique(lab[seeds])
    return np.isin(lab, keep[keep > 0])


def _sharp(excess, sharp):
    """True where the second brightest of the 8 neighbours of ``excess`` is below ``sharp *
    excess``: sharper than any PSF of FWHM >= 2 px, whose peak pixel has at least two
    neighbours >= ~0.5 of it; a single pixel or a 2-pixel streak has at most one."""
    p = np.pad(excess, 1, mode="reflect")
    ny, nx = excess.shape
    nb = np.stack([p[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    return np.partition(nb, 6, axis=0)[6] < sharp * excess


def _blot(values, have, y, x, order, taps=None):
    """``values`` (grid) at the frame pixels (y, x): Keys' cubic convolution (``order`` 3), bilinear
    next to grid pixels without a value and everywhere with ``order`` 1. ``taps``: see
    ``_cubic_conv``."""
    v = np.asarray(values, np.float64)
    if order != 3:
        return _interp(v, have, y, x)
    out = _cubic_conv(v, have, y, x, taps)
    miss = ~np.isfinite(out)
    if miss.any():
        out[miss] = _interp(v, have, y[miss], x[miss])
    return out


def _temporal(data, unc, blot, sig, dep, use, scale, nsigma, nsigma_low):
    """(seeds, low) of the temporal test against a blotted reference ``blot`` with ``dep`` samples."""
    b = _fill_nearest(blot, np.isfinite(blot))
    deriv = np.maximum(ndimage.maximum_filter(b, size=3) - b, b - ndimage.minimum_filter(b, size=3))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = unc ** 2 + np.pi / 2 * sig ** 2 / np.maximum(dep, 1)
        resid2 = (data - blot) ** 2 - (scale * deriv) ** 2
        return use & (resid2 > nsigma ** 2 * var), use & (resid2 > nsigma_low ** 2 * var)


def flag_frame(frame: Frame, offset, grid: Grid, median, sigma, depth, *, nsigma=4.0,
               min_depth=3, dual=True, grow_px=0, nsigma_low=2.5, scale=None, sharp=0.4,
               order=3, time=None, split: TimeSplit | None = None):
    """The outliers of one frame: bool (ny, nx), True = rejected (only good pixels).

    ``offset``: float or (ny, nx) MJy/sr subtracted from ``frame.image`` (as in
    :func:`stack_statistics`). ``grid``, ``median``, ``sigma``, ``depth``: the output of
    :func:`stack_statistics` on ``grid``, which may be any cut-out (``Grid.tile``) that
    covers the frame with a margin of >= 2 pixels (frame pixels outside it count as depth
    0). The median is blotted to the frame's pixel centres (frame pixel -> sky -> grid
    pixel) with Keys' cubic convolution (``order`` 3, default; bilinear next to grid
    pixels without a median, and everywhere with ``order`` 1), sigma bilinearly, the depth
    from the nearest grid pixel. ``scale``: None takes the default of ``order`` (3: 0.2,
    1: 1.0; use the same ``order`` as :func:`stack_statistics`).

    Where the blotted depth >= ``min_depth``: the temporal test of the module docstring
    (``nsigma``, ``scale``). Elsewhere, if ``dual``: the spatial test (``nsigma``,
    ``sharp``); if not ``dual`` nothing is rejected there. Both with hysteresis down to
    ``nsigma_low``. ``grow_px`` > 0: the rejected pixels grown by that many pixels
    (square).

    ``time`` (the frame's MJD) and ``split`` (:func:`time_split` on the same grid): the temporal
    test is made a second time against the median of the other end of the pixel's time span
    (the last third of its samples where the frame was taken before ``t_split``, else the
    first third; variance with ``third`` samples of the frame's ``unc``), where ``third >=
    min_depth``: a pixel is
    rejected when either test rejects it (slow moving objects, see :func:`time_split`).
    """
    use = _usable(frame)
    data = np.asarray(frame.image - offset, np.float64)
    unc = np.asarray(frame.unc, np.float64)
    pm = pixmap(frame.wcs, frame.shape, grid.wcs)
    y, x = pm[..., 1], pm[..., 0]
    depth = np.asarray(depth)
    have = (depth > 0) & np.isfinite(median) & np.isfinite(sigma)
    taps = _taps(median.shape, y, x) if order == 3 else None
    blot = _blot(median, have, y, x, order, taps)
    scale = SCALE[order] if scale is None else scale
    sig = _interp(np.asarray(sigma, np.float64), have, y, x)
    dep = np.where(np.isfinite(blot), ndimage.map_coordinates(
        np.where(have, depth, 0), [y, x], order=0, mode="grid-constant", cval=0), 0)

    temporal = use & (dep >= min_depth)
    seeds = np.zeros(frame.shape, bool)
    low = np.zeros(frame.shape, bool)
    if temporal.any():
        hi, lo = _temporal(data, unc, blot, sig, dep, temporal, scale, nsigma, nsigma_low)
        seeds |= hi
        low |= lo
    if split is not None and time is not None and temporal.any():
        near = lambda a: ndimage.map_coordinates(np.where(have, a, 0), [y, x], order=0, mode="grid-constant",
                                                 cval=0)
        t_split = near(np.nan_to_num(split.t_split, nan=0.0))
        third = np.where(np.isfinite(blot), near(split.third), 0)
        ok = have & np.isfinite(split.early) & np.isfinite(split.late)
        other = np.where(time <= t_split, _blot(split.late, ok, y, x, order, taps),
                         _blot(split.early, ok, y, x, order, taps))
        # the scatter of one sample from the frame's own uncertainty: the stack's MAD is inflated
        # by the very object this test looks for (7x at the peak of a slow asteroid)
        hi, lo = _temporal(data, unc, other, unc, third, temporal & (third >= min_depth) & np.isfinite(other),
                           scale, nsigma, nsigma_low)
        seeds |= hi
        low |= lo

    spatial = use & (dep < min_depth) if dual else np.zeros(frame.shape, bool)
    if spatial.any():
        filled = _fill_nearest(data, use)
        excess = filled - ndimage.median_filter(filled, size=5, mode="reflect")
        noise = unc * np.sqrt(1 + np.pi / 2 / 25)  # minus a 25-pixel median
        with np.errstate(invalid="ignore"):
            cand = spatial & _sharp(excess, sharp)
            seeds |= cand & (excess > nsigma * noise)
            low |= cand & (excess > nsigma_low * noise)

    out = _hysteresis(seeds, low)
    if grow_px > 0:
        out = ndimage.binary_dilation(out, structure=np.ones((2 * grow_px + 1,) * 2, bool))
    return out & use
