"""Point-source extraction and pointing refinement of BCD frames (MOPEX-like relative and
absolute modes).

``extract_sources`` finds point sources in one frame and measures their centroids by a
PSF fit (frames too small for the 2-D fit box, the 2 x 20 pixel MIPS 160 um strips, by a
fit on the box clipped to the frame with a local background along the strip);
``refine_pointing`` solves, from the frames' source lists, one pointing correction
(``d_east``, ``d_north``, arcsec, the ``frames.shift_wcs`` convention) per frame by sparse,
iteratively reweighted least squares. Frames with too few matched sources keep the
spacecraft pointing (offset 0).
"""
from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import sparse
from scipy.ndimage import maximum_filter
from scipy.sparse.csgraph import connected_components
from scipy.optimize import least_squares
from scipy.sparse.linalg import spsolve
from scipy.spatial import cKDTree
from scipy.special import erf

RHO = 180.0 * 3600.0 / np.pi  # arcsec per radian
_RAYLEIGH_MEDIAN = np.sqrt(2.0 * np.log(2.0))  # median of |r|/sigma for a 2-D Gaussian residual
_SOURCE_KEYS = ("x", "y", "flux", "snr", "x_err", "y_err")


# --------------------------------------------------------------------------- extraction

def extract_sources(image, unc, good, fwhm_px, *, nsigma=5.0, max_sources=200, fwhm_xy=None) -> dict:
    """Point sources of one frame, with PSF-fit centroids.

    ``image``, ``unc`` (float, (ny, nx), surface brightness and its 1-sigma uncertainty,
    e.g. MJy/sr), ``good`` (bool, (ny, nx)); ``fwhm_px``: PSF FWHM in pixels.

    Method: the image minus its sigma-clipped median (over good pixels) is searched with
    ``DAOStarFinder`` (threshold ``nsigma`` * median ``unc`` on the peak); every candidate
    whose fit box (side ``2 * ceil(fwhm_px) + 1`` pixels round the peak) leaves the frame or
    holds a bad pixel is dropped, as are blends (two candidates closer than 2 FWHM). The
    centroids come from a fit of a pixel-integrated circular Gaussian (photutils'
    ``CircularGaussianPRF`` model, FWHM fixed, as ``PSFPhotometry`` fits it: ``_fit_prf``),
    weighted by ``unc``: on the undersampled MIPS PSF
    (24 um: 2.4 px FWHM, 70 um: 1.8 px) the DAOStarFinder/IRAF moment centroids carry a
    pixel-phase bias of a few 0.01 px that does not average down with S/N, while the
    integrated-PSF fit is unbiased and supplies position errors.

    Returns a dict of 1-d float64 arrays of equal length, brightest first, at most
    ``max_sources``: ``x``, ``y`` (0-based pixel centroids), ``flux`` (PSF-fit total, image
    unit times pixels, e.g. MJy/sr px), ``snr`` (flux / its error) and ``x_err``, ``y_err``
    (1-sigma centroid errors in pixels, from the fit covariance).

    Narrow frames (fewer rows or columns than the fit box, e.g. the 2 x 20 pixel MIPS 160 um
    strips, where the box is 7 pixels): ``_extract_narrow``, a fit of the pixel-integrated
    Gaussian (FWHM fixed, ``fwhm_xy`` = (along x, along y) pixels for non-square pixels,
    default ``fwhm_px`` for both) plus a local background on the box clipped to the frame;
    the same keys are returned.
    """
    image = np.asarray(image, dtype=np.float64)
    unc = np.asarray(unc, dtype=np.float64)
    good = np.asarray(good, dtype=bool) & np.isfinite(image) & np.isfinite(unc) & (unc > 0)
    empty = {k: np.zeros(0) for k in _SOURCE_KEYS}
    half = max(1, int(np.ceil(fwhm_px)))
    ny, nx = image.shape
    if is_narrow(image.shape, fwhm_px):
        fxy = (float(fwhm_px), float(fwhm_px)) if fwhm_xy is None else tuple(float(v) for v in fwhm_xy)
        return _extract_narrow(image, unc, good, fxy, nsigma=nsigma, max_sources=max_sources)
    if good.sum() < (2 * half + 1) ** 2:
        return empty
    _, bkg, _ = sigma_clipped_stats(image[good], sigma=3.0)
    data = np.where(good, image - bkg, 0.0)
    noise = float(np.median(unc[good]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = DAOStarFinder(nsigma * noise, fwhm_px)(data, mask=~good)
    if found is None or len(found) == 0:
        return empty
    x0 = np.asarray(found["x_centroid"], dtype=np.float64)
    y0 = np.asarray(found["y_centroid"], dtype=np.float64)
    order = np.argsort(-np.asarray(found["flux"], dtype=np.float64))
    x0, y0 = x0[order], y0[order]

    # fit box inside the frame and free of bad pixels
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    keep = (ix >= half) & (ix < nx - half) & (iy >= half) & (iy < ny - half)
    if not good.all():
        bad_near = maximum_filter((~good).astype(np.uint8), size=2 * half + 1, mode="constant") > 0
        keep &= ~bad_near[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)]
    # blends
    if len(x0) > 1:
        d, _ = cKDTree(np.column_stack([x0, y0])).query(np.column_stack([x0, y0]), k=2)
        keep &= d[:, 1] > 2.0 * fwhm_px
    x0, y0 = x0[keep][:max_sources], y0[keep][:max_sources]
    if len(x0) == 0:
        return empty

    err = np.where(good, unc, noise)
    fits = np.array([_fit_prf(data, err, good, x, y, fwhm_px, half) for x, y in zip(x0, y0)]).reshape(-1, 7)
    x, y, flux, flux_err, x_err, y_err, converged = fits.T
    with np.errstate(invalid="ignore"):
        ok = ((converged > 0) & (x >= -0.5) & (y >= -0.5) & (x <= nx - 0.5) & (y <= ny - 0.5) & (flux > 0)
              & (flux_err > 0) & np.isfinite(x_err) & np.isfinite(y_err) & (np.hypot(x - x0, y - y0) < 1.0))
    order = np.argsort(-flux[ok])[:max_sources]
    out = {"x": x, "y": y, "flux": flux, "snr": flux / np.where(flux_err > 0, flux_err, np.inf),
           "x_err": x_err, "y_err": y_err}
    return {k: v[ok][order] for k, v in out.items()}


def _fit_prf(data, err, good, x0, y0, fwhm_px, half):
    """Least-squares fit of a pixel-integrated circular Gaussian (FWHM ``fwhm_px`` fixed; flux,
    x, y free) to the (2 half + 1)^2 box of ``data`` round (x0, y0), weights 1/``err``: the
    model, box, weights and errors of photutils' ``PSFPhotometry(CircularGaussianPRF(fwhm),
    fit_shape, aperture_radius=fwhm)`` with its default fitter (errors from the covariance
    (J^T W J)^-1, not rescaled by chi^2, as astropy's fitters with weights), which agree with it
    within 1e-4 px and 1e-4 relative (tests/mosaic/test_pointing.py; the fitters' stopping
    tolerances), without its per-call tables and models (60 % of a frame's extraction). Returns (x, y, flux, flux_err, x_err, y_err,
    converged): NaN where the box holds a bad pixel or leaves the frame (photutils' flags 1, 64)
    or the covariance is singular (16); ``converged`` 0 where the fit stopped at its evaluation
    limit (8)."""
    nan = (np.nan,) * 6 + (0.0,)
    side = 2 * half + 1
    ys, xs = int(np.ceil(y0 - side / 2.0)), int(np.ceil(x0 - side / 2.0))   # astropy's overlap_slices
    ny, nx = data.shape
    if ys < 0 or xs < 0 or ys + side > ny or xs + side > nx or not good[ys:ys + side, xs:xs + side].all():
        return nan
    yy, xx = np.mgrid[ys:ys + side, xs:xs + side]
    X, Y = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    D = data[ys:ys + side, xs:xs + side].ravel()
    W = 1.0 / err[ys:ys + side, xs:xs + side].ravel()
    s = fwhm_px / _FWHM_SIGMA

    def residual_and_jacobian(p):
        fx, dfx = _pixel_gauss(X, p[1], s)
        fy, dfy = _pixel_gauss(Y, p[2], s)
        return (p[0] * fx * fy - D) * W, np.column_stack([fx * fy, p[0] * dfx * fy, p[0] * fx * dfy]) * W[:, None]

    r2 = (X - x0) ** 2 + (Y - y0) ** 2
    p0 = np.array([max(float(D[r2 <= fwhm_px ** 2].sum()), float(D.max())), float(x0), float(y0)])
    sol = _least_squares(residual_and_jacobian, p0, method="trf", x_scale="jac", max_nfev=100)
    try:
        cov = np.linalg.inv(sol.jac.T @ sol.jac)
    except np.linalg.LinAlgError:
        return nan
    e = np.sqrt(np.diag(cov)) if np.all(np.diag(cov) > 0) else np.full(3, np.nan)
    return sol.x[1], sol.x[2], sol.x[0], e[0], e[1], e[2], float(sol.status > 0)


def is_narrow(shape, fwhm_px) -> bool:
    """True for frames with fewer rows or columns than ``extract_sources``' 2-D fit box
    (``2 ceil(fwhm_px) + 1`` pixels): the MIPS 160 um strips (2 x 20 pixels, box 7)."""
    half = max(1, int(np.ceil(fwhm_px)))
    return min(shape) < 2 * half + 1


_SQRT2 = np.sqrt(2.0)
_FWHM_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
NARROW_MAX_ERR_FWHM = 0.08   # narrow frames: largest centroid error kept, in FWHM along the axis
NARROW_EDGE_PX = 0.5         # narrow frames: farthest a kept centre may lie beyond the outer pixel edge, px


def _least_squares(residual_and_jacobian, p0, **kw):
    """``scipy.optimize.least_squares`` of a function giving (residuals, Jacobian) together,
    evaluated once per parameter vector (least_squares asks for the two separately)."""
    last = {}

    def evaluate(p):
        if "p" not in last or not np.array_equal(p, last["p"]):
            last["p"] = p.copy()
            last["r"], last["j"] = residual_and_jacobian(p)
        return last

    return least_squares(lambda p: evaluate(p)["r"], p0, jac=lambda p: evaluate(p)["j"], **kw)


def _pixel_gauss(c, x0, s):
    """Fractions of a 1-d Gaussian (mean ``x0``, sigma ``s``, pixels) in the unit pixels centred
    on ``c``, and their derivatives with respect to ``x0``."""
    a = (c - x0 + 0.5) / (_SQRT2 * s)
    b = (c - x0 - 0.5) / (_SQRT2 * s)
    return 0.5 * (erf(a) - erf(b)), (np.exp(-b * b) - np.exp(-a * a)) / (np.sqrt(2.0 * np.pi) * s)


def _extract_narrow(image, unc, good, fwhm_xy, *, nsigma, max_sources):
    """``extract_sources`` for frames with fewer rows (or columns) than the 2-D fit box.

    The frame is taken with its long axis as x (transposed when it has more rows than
    columns; the results are transposed back). Let ``h = ceil(FWHM_x)`` pixels.

    Detection: the background along the strip is the running median, over ``4 h + 1``
    columns (fewer at the ends), of the columns' medians over their good pixels; a candidate
    is a column whose largest background-subtracted good pixel exceeds ``nsigma`` times that
    pixel's ``unc`` and is the largest within +-h columns.

    Fit: on the good pixels of the columns within ``h + 1`` of the candidate (the box clipped
    to the frame: every row), ``least_squares`` (Levenberg-Marquardt, analytic Jacobian,
    weights 1/``unc``) of a pixel-integrated elliptical Gaussian of fixed FWHM (``fwhm_xy``,
    separable along the pixel axes: flux, x, y free) plus a background
    ``b0 + bx dx + bxx dx^2 + by dy`` about the candidate. The quadratic term along the strip
    absorbs cirrus curvature, which a plane leaves to the PSF: on the simulated 160 um scan
    maps a plane made detections (S/N 5-9) at the peaks of 90" clouds, the quadratic none.
    Errors: the covariance ``(J^T W J)^-1`` scaled by max(1, reduced chi^2).

    Kept: fits that converged with flux > 0 at S/N >= ``nsigma``, at least 3 degrees of
    freedom, centre at most ``NARROW_EDGE_PX`` (0.5) pixel beyond the frame's outer pixel edges
    ([-1, nx] x [-1, ny]: a source centred farther off the strip is measured by its PSF wings
    alone, where a fixed Gaussian is least trustworthy for a real PSF), centroid errors below
    ``NARROW_MAX_ERR_FWHM`` (0.08) of the FWHM along each axis (0.2 x 0.18 px at 160 um; on
    the simulated 160 um frames the y pulls have unit width below 0.2 px, a width of 2 and up
    to 6 at 0.2-0.3 px, the sources off the strip), and no other kept fit within 2 FWHM
    (blends: both dropped). On the simulated scan maps (seeds 16-19): ~140 sources in ~130 of
    448 frames, none false, pulls of width 0.96-1.12 in x and y against the true positions.
    """
    empty = {k: np.zeros(0) for k in _SOURCE_KEYS}
    fx_px, fy_px = fwhm_xy
    flip = image.shape[0] > image.shape[1]
    if flip:
        image, unc, good, (fx_px, fy_px) = image.T, unc.T, good.T, (fy_px, fx_px)
    ny, nx = image.shape
    h = max(1, int(np.ceil(fx_px)))
    if nx < 2 * h + 1 or not good.any():
        return empty
    sx, sy = fx_px / _FWHM_SIGMA, fy_px / _FWHM_SIGMA
    # background along the strip
    col = np.full(nx, np.nan)
    for i in np.flatnonzero(good.any(axis=0)):
        col[i] = np.median(image[good[:, i], i])
    w = 2 * h
    bkg = np.array([np.nanmedian(col[max(0, i - w):i + w + 1]) if np.isfinite(col[max(0, i - w):i + w + 1]).any()
                    else np.nan for i in range(nx)])
    resid = np.where(good & np.isfinite(bkg)[None, :], image - bkg[None, :], -np.inf)
    row = np.argmax(resid, axis=0)
    peak = resid[row, np.arange(nx)]
    snr = np.where(np.isfinite(peak), peak / unc[row, np.arange(nx)], -np.inf)
    local = peak == maximum_filter(np.where(np.isfinite(peak), peak, -np.inf), size=2 * h + 1, mode="nearest")
    cand = np.flatnonzero(local & (snr > nsigma))
    cand = cand[np.argsort(-peak[cand])]

    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    p00 = _pixel_gauss(np.zeros(1), 0.0, sx)[0][0] * _pixel_gauss(np.zeros(1), 0.0, sy)[0][0]
    yc = (ny - 1) / 2.0
    rows = []
    for c in cand:
        lo, hi = max(0, c - h - 1), min(nx, c + h + 2)
        g = good[:, lo:hi]
        X, Y = xx[:, lo:hi][g], yy[:, lo:hi][g]
        D, U = image[:, lo:hi][g], unc[:, lo:hi][g]
        dx, dy = X - c, Y - yc
        if len(D) < 7 + 3:
            continue

        def residual_and_jacobian(p):
            fxv, dfx = _pixel_gauss(X, p[1], sx)
            fyv, dfy = _pixel_gauss(Y, p[2], sy)
            m = p[0] * fxv * fyv + p[3] + p[4] * dx + p[5] * dx * dx + p[6] * dy
            return (m - D) / U, np.column_stack(
                [fxv * fyv, p[0] * dfx * fyv, p[0] * fxv * dfy, np.ones_like(X), dx, dx * dx, dy]) / U[:, None]

        p0 = np.array([max(peak[c], 0.0) / p00, float(c), float(row[c]), bkg[c], 0.0, 0.0, 0.0])
        try:
            sol = _least_squares(residual_and_jacobian, p0, method="lm", x_scale="jac")
            cov = np.linalg.inv(sol.jac.T @ sol.jac)
        except (np.linalg.LinAlgError, ValueError):
            continue
        dof = len(D) - 7
        chi2 = float(np.sum(sol.fun ** 2))
        err = np.sqrt(np.maximum(np.diag(cov), 0.0) * max(1.0, chi2 / dof))
        f, x, y = sol.x[:3]
        if (sol.success and np.all(np.isfinite(sol.x)) and np.all(np.isfinite(err)) and f > 0 and err[0] > 0
                and f >= nsigma * err[0] and -NARROW_EDGE_PX - 0.5 <= x <= nx - 0.5 + NARROW_EDGE_PX
                and -NARROW_EDGE_PX - 0.5 <= y <= ny - 0.5 + NARROW_EDGE_PX
                and err[1] < NARROW_MAX_ERR_FWHM * fx_px and err[2] < NARROW_MAX_ERR_FWHM * fy_px):
            rows.append((x, y, f, f / err[0], err[1], err[2]))
    if not rows:
        return empty
    out = np.array(rows)
    if len(out) > 1:   # blends: kept fits closer than 2 FWHM
        d = np.hypot((out[:, None, 0] - out[None, :, 0]) / fx_px, (out[:, None, 1] - out[None, :, 1]) / fy_px)
        np.fill_diagonal(d, np.inf)
        out = out[d.min(axis=1) > 2.0]
    out = out[np.argsort(-out[:, 2])][:max_sources]
    res = dict(zip(_SOURCE_KEYS, out.T.copy())) if len(out) else empty
    if flip and len(out):
        res["x"], res["y"], res["x_err"], res["y_err"] = res["y"], res["x"], res["y_err"], res["x_err"]
    return res


# --------------------------------------------------------------------------- refinement

def _unit(ra, dec):
    """(..., 3) unit vectors of (ra, dec) deg."""
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _basis(v):
    """Local east and north unit vectors (..., 3) at unit vectors ``v`` (..., 3)."""
    east = np.stack([-v[..., 1], v[..., 0], np.zeros(v.shape[:-1])], axis=-1)
    norm = np.linalg.norm(east, axis=-1, keepdims=True)
    pole = norm[..., 0] < 1e-12  # at a pole: any east will do
    east[pole] = [0.0, 1.0, 0.0]
    east /= np.where(pole[..., None], 1.0, norm)
    north = np.cross(v, east)
    return east, north


def _match(q, frame, use, ref_tree, radius_rad):
    """Group the detections ``use`` (bool) at positions ``q`` (m, 3) into objects.

    Friends-of-friends over detections of different frames within ``radius_rad``;
    objects with two detections from one frame are ambiguous and dropped. Returns ``lab``
    (m,) object index or -1, ``obj_ref`` (nobj,) index into the reference catalogue or -1.
    """
    m = len(q)
    lab = np.full(m, -1)
    idx = np.flatnonzero(use)
    if len(idx) == 0:
        return lab, np.zeros(0, dtype=int)
    chord = 2.0 * np.sin(radius_rad / 2.0)
    pairs = cKDTree(q[idx]).query_pairs(chord, output_type="ndarray")
    pairs = pairs[frame[idx[pairs[:, 0]]] != frame[idx[pairs[:, 1]]]]
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                              shape=(len(idx), len(idx)))
    _, sub = connected_components(graph, directed=False)
    # ambiguous objects: one frame twice
    key = sub.astype(np.int64) * (frame.max() + 1) + frame[idx]
    uniq, counts = np.unique(key, return_counts=True)
    bad_obj = np.unique(uniq[counts > 1] // (frame.max() + 1))
    sub[np.isin(sub, bad_obj)] = -1
    # object sizes and reference matches
    ok = sub >= 0
    _, sub[ok] = np.unique(sub[ok], return_inverse=True)
    nobj = int(sub.max()) + 1 if ok.any() else 0
    size = np.bincount(sub[ok], minlength=nobj)
    obj_ref = np.full(nobj, -1)
    if ref_tree is not None and nobj:
        centre = np.zeros((nobj, 3))
        np.add.at(centre, sub[ok], q[idx[ok]])
        centre /= np.linalg.norm(centre, axis=1, keepdims=True)
        dist, ri = ref_tree.query(centre, distance_upper_bound=chord)
        hit = np.flatnonzero(np.isfinite(dist))
        hit = hit[np.argsort(dist[hit])]
        _, first = np.unique(ri[hit], return_index=True)  # each reference source once, nearest
        obj_ref[hit[first]] = ri[hit[first]]
    # objects that constrain anything: seen twice, or matched to the reference
    useful = (size >= 2) | (obj_ref >= 0)
    newid = np.full(nobj, -1)
    newid[useful] = np.arange(useful.sum())
    lab[idx[ok]] = newid[sub[ok]]
    return lab, obj_ref[useful]


def refine_pointing(catalogs, centres, *, refcat=None, match_radius_arcsec, min_matches=3,
                    huber=2.0, ref_sigma_arcsec=0.1, n_iter=6) -> dict:
    """Pointing corrections of ``n`` frames from their point-source lists.

    ``catalogs``: list of ``n`` dicts with 1-d arrays ``ra``, ``dec`` (deg, the sources'
    positions through the frame's current WCS) and ``sigma`` (arcsec, 1-sigma positional
    error per axis; a scalar broadcasts); rows with non-finite values or sigma <= 0 are
    ignored. ``centres``: (n, 2) deg, the frames' centres (``frames.frame_centre``).
    ``refcat``: None or ``(ra, dec)`` arrays in deg (e.g. from ``refcat.read_refcat``), each
    position weighted with ``ref_sigma_arcsec`` per axis.

    Model: the corrected position of a source of frame i is its WCS position moved by
    (``d_east[i]``, ``d_north[i]``) arcsec along the east and north directions at the frame
    centre (``frames.shift_wcs``). Detections of different frames within
    ``match_radius_arcsec`` (after the current correction; friends-of-friends on one
    ``cKDTree`` of all detections, so only overlapping frames ever meet; a group holding two
    detections of one frame is ambiguous and dropped) form one source with an unknown true
    position; a source matched to the reference catalogue (nearest within the radius, each
    reference once) is tied to it. Each detection gives two equations (its tangent-plane
    coordinates at the source: frame offset - source position = - observed position),
    weighted by 1/sigma. The source unknowns are eliminated (their normal matrix is
    diagonal), leaving a sparse (2 n_refined)^2 normal system over frames (non-zeros only
    between frames that share sources), solved directly with ``scipy.sparse.linalg.spsolve``
    -- ``lsqr`` on the full system needed minutes at 2,000 frames because of the
    ill-conditioned, near-singular relative gauge. Huber weights (threshold ``huber`` times
    the sigma, itself scaled up by the robust spread of the normalised residuals when that
    exceeds 1) are iterated, and the whole is re-matched and re-solved up to ``n_iter``
    times, stopping when no offset changes by 1e-4 arcsec.

    A frame is refined only when at least ``min_matches`` of its sources are matched (to
    another refined frame or to the reference); otherwise it keeps offset 0 (spacecraft
    pointing), ``refined`` False, sigmas NaN. With ``min_matches=1`` (the 160 um strips,
    ``MosaicParams.min_matches_narrow``) a frame with one matched source has as many
    equations as offset unknowns: its offset is that detection's displacement from the
    source's solved position (the reference's, or the weighted mean of the other frames'
    detections), with nothing to check it against (its residual is zero, so the Huber weights
    cannot act); its sigma is then the detection's sigma combined with that position's
    (conditional) error, sqrt(sigma_det^2 + 1 / (W - w_det)), W the source's total weight:
    pulls of unit width on frames with one source each (tests/mosaic/test_pointing.py).
    Gauge: each connected group of refined frames holding a reference match is absolute; a
    group without one (every group when ``refcat`` is None or matches nothing: then ``mode``
    is 'relative' and ``n_ref_matches`` 0, i.e. a reference that matches nothing falls back to
    the relative solution) has the mean offset of its frames, weighted by the sum of 1/sigma^2
    of their matched sources, set to 0.

    Returns a dict: ``d_east``, ``d_north``, ``sigma_east``, ``sigma_north`` (arcsec, (n,)),
    ``nmatch`` ((n,) int, matched sources per frame; for an unrefined frame the count that
    fell short), ``refined`` ((n,) bool), ``rms``
    (arcsec, per-axis rms of the matched detections about their solved source positions),
    ``n_ref_matches`` (int), ``mode`` ('absolute' | 'relative'). The sigmas are those of a
    frame's offset given its neighbours' offsets (source positions marginalised: 1/sqrt of
    the diagonal of the reduced normal matrix), scaled by sqrt(max(1, reduced chi^2)); they
    leave out errors common to many frames: the slow random-walk drift across a large
    relative-mode mosaic (pulls ~1.8 wide at 2,000 frames) and the reference catalogue's
    common zero point in absolute mode.
    """
    n = len(catalogs)
    centres = np.asarray(centres, dtype=np.float64).reshape(n, 2)
    ra, dec, sig, frame = [], [], [], []
    for i, cat in enumerate(catalogs):
        r = np.asarray(cat["ra"], dtype=np.float64).ravel()
        d = np.asarray(cat["dec"], dtype=np.float64).ravel()
        s = np.broadcast_to(np.asarray(cat["sigma"], dtype=np.float64), r.shape).ravel()
        ok = np.isfinite(r) & np.isfinite(d) & np.isfinite(s) & (s > 0)
        ra.append(r[ok]), dec.append(d[ok]), sig.append(s[ok]), frame.append(np.full(ok.sum(), i))
    ra, dec, sig = (np.concatenate(a) if n else np.zeros(0) for a in (ra, dec, sig))
    frame = np.concatenate(frame).astype(int) if n else np.zeros(0, dtype=int)
    p = _unit(ra, dec)
    fe, fn = _basis(_unit(centres[:, 0], centres[:, 1]))
    ref_v, ref_tree = None, None
    if refcat is not None and len(refcat[0]):
        ref_v = _unit(np.asarray(refcat[0], float), np.asarray(refcat[1], float))
        ref_tree = cKDTree(ref_v)
    radius = match_radius_arcsec / RHO

    off = np.zeros((n, 2))
    out = dict(d_east=np.zeros(n), d_north=np.zeros(n), sigma_east=np.full(n, np.nan),
               sigma_north=np.full(n, np.nan), nmatch=np.zeros(n, dtype=int),
               refined=np.zeros(n, dtype=bool), rms=float("nan"), n_ref_matches=0,
               mode="relative")
    if len(p) == 0:
        return out
    for _ in range(n_iter):
        q = p + (off[frame, :1] * fe[frame] + off[frame, 1:] * fn[frame]) / RHO
        active = np.bincount(frame, minlength=n) > 0
        nmatch = np.zeros(n, dtype=int)
        while True:  # drop frames with too few matches until stable
            lab, obj_ref = _match(q, frame, active[frame], ref_tree, radius)
            nmatch[active] = np.bincount(frame[lab >= 0], minlength=n)[active]
            now = active & (nmatch >= max(1, min_matches))
            if np.array_equal(now, active):
                break
            active = now
        if not active.any():
            off[:] = 0.0
            out.update(nmatch=nmatch)
            return out
        sol = _solve(p, frame, sig, lab, obj_ref, active, fe, fn, ref_v, ref_sigma_arcsec, huber)
        change = np.abs(sol["off"] - off).max()
        off = sol["off"]
        if change < 1e-4:
            break
    out.update(d_east=off[:, 0].copy(), d_north=off[:, 1].copy(), nmatch=nmatch,
               refined=active, rms=sol["rms"], n_ref_matches=sol["n_ref"],
               mode="absolute" if sol["n_ref"] > 0 else "relative")
    out["sigma_east"][active] = sol["sigma"][active, 0]
    out["sigma_north"][active] = sol["sigma"][active, 1]
    return out


def _solve(p, frame, sig, lab, obj_ref, active, fe, fn, ref_v, ref_sigma, huber, n_irls=4):
    """One matched system, solved by IRLS; see ``refine_pointing``.

    Unknowns: the offsets of the active frames and the positions of the objects. The
    objects are eliminated (their normal matrix is diagonal), leaving a sparse (2 nf, 2 nf)
    reduced normal system over frames, solved directly (SuperLU) with one frame per
    reference-less group held at 0; then the gauge is applied.
    """
    n = len(active)
    nobj = len(obj_ref)
    det = np.flatnonzero(lab >= 0)
    fcol = np.full(n, -1)
    fcol[active] = np.arange(active.sum())
    nf = int(active.sum())
    # entries: detections, then the reference positions as fixed pseudo-detections
    ro = np.flatnonzero(obj_ref >= 0)
    o = np.concatenate([lab[det], ro])
    s = np.concatenate([sig[det], np.full(len(ro), float(ref_sigma))])
    pos = np.concatenate([p[det], ref_v[obj_ref[ro]] if len(ro) else np.zeros((0, 3))])
    k, kd = len(o), len(det)
    fd = fcol[frame[det]]  # frame column of each detection
    # object planes: east/north at the mean position; observed coordinates there, arcsec
    centre = np.zeros((nobj, 3))
    np.add.at(centre, o, pos)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    oe, on = _basis(centre)
    obs = RHO * np.column_stack([np.einsum("ij,ij->i", oe[o], pos),
                                 np.einsum("ij,ij->i", on[o], pos)])
    # coef[d, a, b]: d(object-plane axis a of detection d) / d(offset b of its frame)
    coef = np.empty((kd, 2, 2))
    for a, ob in enumerate((oe[o[:kd]], on[o[:kd]])):
        coef[:, a, 0] = np.einsum("ij,ij->i", ob, fe[frame[det]])
        coef[:, a, 1] = np.einsum("ij,ij->i", ob, fn[frame[det]])
    rows = np.repeat(2 * np.arange(kd)[:, None] + np.arange(2), 2, axis=1).ravel()
    cols = np.tile(2 * fd[:, None] + np.arange(2), (1, 2)).ravel()
    a_f = sparse.csr_matrix((coef.ravel(), (rows, cols)), shape=(2 * k, 2 * nf))
    a_o = sparse.csr_matrix((-np.ones(2 * k), (np.arange(2 * k), np.repeat(2 * o, 2) + np.tile([0, 1], k))),
                            shape=(2 * k, 2 * nobj))
    b = -obs.ravel()
    # groups of frames linked by objects; reference-less ones get the relative gauge
    g = sparse.coo_matrix((np.ones(kd), (fd, o[:kd])), shape=(nf, nobj))
    ncomp, comp = connected_components(sparse.bmat([[None, g], [g.T, None]], format="csr"),
                                       directed=False)
    fcomp = comp[:nf]
    has_ref = np.zeros(ncomp, dtype=bool)
    has_ref[comp[nf + o[kd:]]] = True
    rel = ~has_ref[fcomp]
    wf = np.bincount(fd, 1.0 / s[:kd] ** 2, minlength=nf)  # gauge weights
    wsum = np.bincount(fcomp, wf, minlength=ncomp)
    anchor = np.zeros(nf, dtype=bool)
    for c in np.flatnonzero(~has_ref[:ncomp] & (np.bincount(fcomp, minlength=ncomp) > 0)):
        members = np.flatnonzero(fcomp == c)
        anchor[members[np.argmax(wf[members])]] = True
    free = np.flatnonzero(~np.repeat(anchor, 2))

    w = np.ones(k)
    for _ in range(n_irls + 1):
        ww = sparse.diags(np.repeat(w / s ** 2, 2))
        wobj = np.bincount(o, w / s ** 2, minlength=nobj)
        inv_oo = sparse.diags(1.0 / np.repeat(wobj, 2))
        n_fo = a_f.T @ ww @ a_o
        red = (a_f.T @ ww @ a_f - n_fo @ inv_oo @ n_fo.T).tocsc()
        rhs_o = a_o.T @ (ww @ b)
        rhs = a_f.T @ (ww @ b) - n_fo @ (inv_oo @ rhs_o)
        xf = np.zeros(2 * nf)
        xf[free] = spsolve(red[free][:, free], rhs[free]) if len(free) else 0.0
        xo = inv_oo @ (rhs_o - n_fo.T @ xf)
        res = (a_f @ xf + a_o @ xo - b).reshape(k, 2)  # arcsec
        t = np.hypot(res[:, 0], res[:, 1]) / s
        spread = max(1.0, np.median(t) / _RAYLEIGH_MEDIAN)
        w_new = np.where(t <= huber * spread, 1.0, huber * spread / np.maximum(t, 1e-300))
        if np.allclose(w_new, w, atol=1e-3):
            break
        w = w_new
    offs = xf.reshape(nf, 2)
    if rel.any():  # relative gauge: weighted mean offset 0 per group
        for j in (0, 1):
            mean = np.bincount(fcomp[rel], wf[rel] * offs[rel, j], minlength=ncomp) / np.where(wsum > 0, wsum, 1)
            offs[rel, j] -= mean[fcomp[rel]]
    off = np.zeros((n, 2))
    off[active] = offs
    # conditional information of each offset (objects marginalised) -> sigma
    chi2 = float(np.sum(w / s ** 2 * (res ** 2).sum(axis=1)))
    dof = 2 * k - 2 * nf - 2 * nobj + 2 * int(anchor.sum())
    birge = max(1.0, chi2 / dof) if dof > 0 else 1.0
    diag = red.diagonal().reshape(nf, 2)
    sigma = np.full((n, 2), np.nan)
    sigma[active] = np.sqrt(birge / np.where(diag > 0, diag, np.nan))
    rms = float(np.sqrt(np.mean(res[:kd] ** 2)))
    return {"off": off, "sigma": sigma, "rms": rms, "n_ref": int(len(ro))}
