"""Point-source extraction from a rectified SED image (nrows, ncol) in MJy/sr.

``source_column``: the column of the source from the profile along the slit, the flux summed
over rows 1..19 (the SSC's rows 2-20, 1-based): the peak column refined by a 3-point Gaussian
fit (a parabola through the logarithms of the peak and its two neighbours, exact for a
Gaussian profile and within 0.005 column for a Gaussian of FWHM >= 1.3 columns integrated
over the columns; a plain 3-point centroid would be biased towards the peak by up to 0.16
column at FWHM 2.5). Where one of the three is not positive it falls back to a parabola
through the values.

``extract``: ``F_L(row) = APCORR(row) * Omega * 1e6 * sum over the 5 columns round(column) - 2
.. round(column) + 2`` (ICD section 3; Jy from MJy/sr and sr), its error the square root of
the sum of the squared uncertainties times the same factor (independent pixels).
"""
from __future__ import annotations

import numpy as np

__all__ = ["column_profile", "source_column", "extract"]


def column_profile(image, unc, rows=slice(1, 20)):
    """Profile along the slit: (flux (ncol,), sigma (ncol,)) float64, MJy/sr summed over ``rows``.

    A column with NaN pixels in ``rows`` gets the mean of its finite ones times the number
    of rows (so that isolated holes do not make a dip); a column without any finite pixel
    gets NaN. Pixels count when value and unc are both finite.
    """
    im = np.asarray(image, dtype=np.float64)[rows]
    un = np.asarray(unc, dtype=np.float64)[rows]
    ok = np.isfinite(im) & np.isfinite(un)
    cnt = ok.sum(axis=0)
    nr = im.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(cnt > 0, np.sum(np.where(ok, im, 0.0), axis=0) * nr / cnt, np.nan)
        sigma = np.where(cnt > 0, np.sqrt(np.sum(np.where(ok, un, 0.0) ** 2, axis=0)) * nr / cnt, np.nan)
    return flux, sigma


def _vertex(p, a, b, c, sa, sb, sc):
    """Vertex (column) of the parabola through (p-1, a), (p, b), (p+1, c) and its sigma from
    the sigmas of a, b, c (linear propagation)."""
    den = a - 2 * b + c
    num = a - c
    x = p + 0.5 * num / den
    da = 0.5 * (den - num) / den ** 2
    db = 0.5 * 2 * num / den ** 2
    dc = 0.5 * (-den - num) / den ** 2
    return x, np.sqrt((da * sa) ** 2 + (db * sb) ** 2 + (dc * sc) ** 2)


def source_column(image, unc, rows=slice(1, 20)):
    """Column of a point source (0-based, float) and its 1-sigma (columns).

    ``image``, ``unc`` (nrows, ncol) MJy/sr. From :func:`column_profile` over ``rows``
    (default rows 1..19): the peak of the finite columns, refined by the 3-point Gaussian
    fit of the module docstring. A peak in the first or last column (or next to a NaN
    column) is returned as it is, with sigma NaN. ValueError when no column is finite.
    """
    flux, sigma = column_profile(image, unc, rows)
    if not np.isfinite(flux).any():
        raise ValueError("source_column: no finite column in the rows summed")
    p = int(np.nanargmax(flux))
    if p == 0 or p == flux.size - 1 or not np.all(np.isfinite(flux[p - 1:p + 2])):
        return float(p), float("nan")
    a, b, c = flux[p - 1:p + 2]
    sa, sb, sc = sigma[p - 1:p + 2]
    if min(a, b, c) > 0:
        # parabola through the logs: d(ln f) = df / f
        x, s = _vertex(p, np.log(a), np.log(b), np.log(c), sa / a, sb / b, sc / c)
    else:
        x, s = _vertex(p, a, b, c, sa, sb, sc)
    return float(x), float(s)


def extract(image, unc, column, *, apcorr, omega_sr, width=5):
    """Aperture extraction: (flux_jy (nrows,), error_jy (nrows,)) float64.

    ``image``, ``unc`` (nrows, ncol) MJy/sr; ``column`` the source column (float, 0-based);
    ``apcorr`` (nrows,) or a scalar: the point-source correction of a ``width``-column
    aperture; ``omega_sr``: SLITW * PXSCALE in sr. Sums the columns ``round(column) -
    width//2 .. round(column) + width//2`` (halves round up), times ``apcorr * omega_sr *
    1e6``; the error is ``sqrt(sum unc**2)`` times the same. NaN rows where any aperture
    pixel (value or unc) is not finite. ValueError when the aperture leaves the image.
    """
    im = np.asarray(image, dtype=np.float64)
    un = np.asarray(unc, dtype=np.float64)
    if not np.isfinite(column):
        raise ValueError(f"extract: source column {column} not finite")
    c0 = int(np.floor(float(column) + 0.5))
    lo, hi = c0 - width // 2, c0 - width // 2 + width
    if lo < 0 or hi > im.shape[1]:
        raise ValueError(f"extract: aperture columns {lo}..{hi - 1} outside the image's 0..{im.shape[1] - 1}")
    a, u = im[:, lo:hi], un[:, lo:hi]
    good = np.all(np.isfinite(a) & np.isfinite(u), axis=1)
    factor = np.asarray(apcorr, dtype=np.float64) * float(omega_sr) * 1e6
    flux = np.where(good, a.sum(axis=1) * factor, np.nan)
    err = np.where(good, np.sqrt((u ** 2).sum(axis=1)) * factor, np.nan)
    return flux, err


def fill_from_coadd(frames, frames_unc, coadd, coadd_unc):
    """Aligned frames (m, nrows, ncol) with their missing pixels (value or unc not finite) taken
    from the coadd (nrows, ncol) of the others (a dead or hot pixel, or one left out by the
    rectification, moves to another column with each dither, so the coadd has it)."""
    miss = ~(np.isfinite(frames) & np.isfinite(frames_unc))
    return (np.where(miss, coadd[None], frames), np.where(miss, coadd_unc[None], frames_unc))


def row_background(image, unc, column, *, gap=4):
    """Residual background per row (nrows,) and its 1-sigma, MJy/sr: the inverse-variance mean of
    the columns at least ``gap`` columns from the source ``column`` (NaN where none is finite).
    In an ON - OFF image it is the OFF position's extra emission (ICD 3: constant along the slit)."""
    im = np.asarray(image, np.float64)
    un = np.asarray(unc, np.float64)
    far = np.abs(np.arange(im.shape[1]) - np.floor(float(column) + 0.5)) >= gap
    ok = far[None, :] & np.isfinite(im) & np.isfinite(un) & (un > 0)
    w = np.where(ok, 1.0 / np.where(ok, un, 1.0) ** 2, 0.0)
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw > 0, (w * np.where(ok, im, 0.0)).sum(axis=1) / sw, np.nan), 1.0 / np.sqrt(sw)


def extract_block(onoff, onoff_unc, frames, frames_unc, *, apcorr, omega_sr, width=5, rows=(1, 20),
                  nsigma=4.0, min_depth=3, background=True):
    """Task body of step ``extract.extract_spectrum``: (flux_jy, error_jy (nrows,) float64, frames
    used per row (nrows,) int16, source column, its 1-sigma, row background (nrows,) MJy/sr,
    the error scale of :func:`scatter_scale` applied to the frames' combined error).

    The column comes from the ON - OFF coadd ``onoff``/``onoff_unc`` (nrows, ncol) MJy/sr (flux
    summed over rows [rows[0], rows[1])). With ``background``, the residual background of each
    row (:func:`row_background` of the coadd: the OFF position's difference) is subtracted
    first, its error added to the result's. The same ``width``-column aperture is extracted
    from every aligned ON - OFF frame ``frames``/``frames_unc`` (m, nrows, ncol; missing pixels
    filled from the coadd, :func:`fill_from_coadd`); the frames' row fluxes are tested for
    outliers across frames (``coadd.clip_stack``: a cosmic-ray residual in one frame's aperture)
    and combined row by row with per-frame inverse-variance weights (``coadd.combine``); the
    combined error is scaled up where the frames scatter more than their errors say. An
    aperture sum hardly depends on where in its column the source sits, so frames whose source
    sits a fraction of a column apart agree, where single pixels near the peak do not (and
    rejecting those would bias the row).
    """
    from .coadd import clip_stack, combine
    column, sigma = source_column(onoff, onoff_unc, rows=slice(*rows))
    nrows = np.shape(onoff)[0]
    bg, bg_err = row_background(onoff, onoff_unc, column, gap=width // 2 + 2) if background else (
        np.zeros(nrows), np.zeros(nrows))
    bg, bg_err = np.where(np.isfinite(bg), bg, 0.0), np.where(np.isfinite(bg_err), bg_err, 0.0)
    coadd = np.asarray(onoff, np.float64) - bg[:, None]
    frames, frames_unc = fill_from_coadd(np.asarray(frames, np.float64) - bg[None, :, None],
                                         np.asarray(frames_unc, np.float64), coadd, np.asarray(onoff_unc, np.float64))
    per = [extract(f, u, column, apcorr=apcorr, omega_sr=omega_sr, width=width) for f, u in zip(frames, frames_unc)]
    flux = np.array([p[0] for p in per]).reshape(len(per), -1)
    err = np.array([p[1] for p in per]).reshape(len(per), -1)
    rejected = clip_stack(flux, err, nsigma=nsigma, min_depth=min_depth)
    mean, unc, depth = combine(flux, err, rejected)
    scale = scatter_scale(flux, err, rejected, mean)
    bg_jy = width * bg_err * np.asarray(apcorr, np.float64) * float(omega_sr) * 1e6
    unc = np.hypot(unc.astype(np.float64) * scale, bg_jy)
    return mean.astype(np.float64), unc, depth, float(column), float(sigma), bg, scale


def scatter_scale(flux, err, rejected, mean):
    """Factor (>= 1) by which the frames' row fluxes scatter about their mean beyond their errors:
    sqrt(chi^2 / degrees of freedom) pooled over the rows (``flux``, ``err`` (m, nrows), the
    frames' extractions; ``rejected`` (m, nrows) bool; ``mean`` (nrows,)). The errors of a
    ramp fit miss what cosmic rays leave in a Ge pixel (a responsivity change after a hit), so
    the spectrum's error is scaled by it (the SSC's mosaics offered the scatter of the frames
    as an uncertainty for the same reason); 1 where the errors already explain the scatter."""
    f, e = np.asarray(flux, np.float64), np.asarray(err, np.float64)
    use = np.isfinite(f) & np.isfinite(e) & (e > 0) & ~np.asarray(rejected, bool) & np.isfinite(mean)[None]
    n = use.sum(axis=0)
    dof = int(np.sum(np.maximum(n - 1, 0)))
    if dof < 5:
        return 1.0
    chi2 = float(np.sum(np.where(use, ((f - np.asarray(mean)[None]) / np.where(use, e, 1.0)) ** 2, 0.0)))
    return max(1.0, float(np.sqrt(chi2 / dof)))
