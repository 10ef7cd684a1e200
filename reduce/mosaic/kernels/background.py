"""Background matching: one additive level per frame so that overlaps agree (no sky subtraction).

The seams of a mosaic come from frame-to-frame level differences (MIPS 24 um: residual
dark/flat/latent levels; Ge: responsivity drifts).  The frames are adjusted so that their
overlap regions are statistically similar, keeping the mean level of every connected set
of frames (the sky is not subtracted):

1. :func:`overlap_pairs` finds the overlapping pairs (k-d tree + exact polygon test);
2. :func:`source_mask` masks sources out of the overlap statistics;
3. :func:`pair_difference` measures the robust level difference ``d_ij`` of each pair;
4. :func:`solve_offsets` solves ``o_i - o_j = d_ij`` in the weighted least-squares sense on
   the sparse graph Laplacian (Huber-reweighted), gauge ``sum(o) = 0`` per connected
   component.  The matched frame is ``image - offset``.  Optionally one offset per group of
   frames (``groups``: the scan legs of a MIPS Ge scan map, :func:`leg_groups`): the design
   matrix is pairs x groups, the gauge sums the frames' offsets to zero.

Time and memory grow with the number of overlapping pairs, never with n**2 (MOPEX inverts
one dense matrix; ``reproject``'s ``match_background`` builds a dense n x n offset matrix).
Units: images, differences and offsets in the image unit (MJy/sr); sky positions in deg.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from reduce.mosaic.kernels.frames import Frame, pixel_map

__all__ = ["overlap_pairs", "pair_correlation", "source_mask", "pair_difference", "pixel_variance", "solve_offsets",
           "leg_groups"]

MEDIAN_SE = 1.2533  # sqrt(pi/2): standard error of a Gaussian median / that of the mean
MAD_SIGMA = 1.4826  # sigma / MAD of a Gaussian


def _unit(ra, dec):
    """Unit vectors (..., 3) of (ra, dec) deg."""
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _centres(corners):
    """Unit vectors (n, 3) of the centres of footprints given as corner unit vectors (n, 4, 3)."""
    c = corners.sum(1)
    return c / np.linalg.norm(c, axis=1)[:, None]


def _tangent_plane(c):
    """Gnomonic projection onto the tangent planes at unit vectors ``c`` (m, 3): a function
    of corner unit vectors (m, k, 3) giving plane coordinates (m, k, 2) (radians)."""
    east = np.cross([0.0, 0.0, 1.0], c)
    polar = np.linalg.norm(east, axis=1) < 1e-12
    east[polar] = [0.0, 1.0, 0.0]
    east /= np.linalg.norm(east, axis=1)[:, None]
    north = np.cross(c, east)

    def plane(v):
        z = np.einsum("mkc,mc->mk", v, c)
        return np.stack([np.einsum("mkc,mc->mk", v, east) / z,
                         np.einsum("mkc,mc->mk", v, north) / z], -1)

    return plane


def overlap_pairs(footprints, *, min_area_frac=0.0, max_neighbours=None, groups=None) -> np.ndarray:
    """Pairs of frames whose footprints overlap.

    ``footprints``: (n, 4, 2) deg, (ra, dec) of each frame's corners (``frames.footprint``).
    Candidates come from a k-d tree on the frames' centre unit vectors
    (``cKDTree.query_pairs`` with the chord of twice the largest centre-to-corner angle: no
    two frames farther apart can overlap); each candidate is then tested exactly: both
    pairs whose circumscribed caps (about the centre) miss are dropped, pairs whose
    inscribed caps meet surely overlap; the rest are projected gnomonically onto the
    tangent plane at the pair's mid point (valid anywhere on the sky, poles and RA = 0
    included) and intersected with shapely's vectorised (C) polygon intersection (invalid,
    e.g. badly ordered, corners are repaired with ``make_valid``).  The caps assume convex
    footprints containing their corner centroid (true of any detector footprint).  A pair is kept when the intersection area exceeds
    ``min_area_frac`` times the smaller footprint's area (default 0: any overlap of
    positive area; frames that only touch along an edge are not pairs).

    ``max_neighbours`` (None: every overlapping pair): candidates are only each frame's
    ``max_neighbours`` nearest frames (``cKDTree.query``) and its successor in the given order,
    so a deep stack at one pointing (every frame overlaps every other) gives O(n k) pairs, not
    n (n - 1) / 2; the successor keeps a time-ordered sequence connected.

    ``groups`` (None: every pair): (n,) int labels of frames that share one offset in
    ``solve_offsets(groups=...)`` (negative: a frame on its own); pairs within a group are
    left out (they constrain nothing there), and with ``max_neighbours`` each frame of a group
    of two or more also gets its ``max_neighbours`` nearest frames of other groups as
    candidates (a k-d tree per group of the frames outside it): a scan leg's nearest frames
    are its own, so the nearest frames alone would leave the legs unlinked.

    Returns (m, 2) int64, ``i < j``, sorted lexicographically.
    """
    import shapely
    from scipy.spatial import cKDTree

    fp = np.asarray(footprints, dtype=np.float64)
    n = len(fp)
    if n < 2:
        return np.empty((0, 2), np.int64)
    corners = _unit(fp[..., 0], fp[..., 1])  # (n, 4, 3)
    centre = _centres(corners)
    # per frame: circumscribed radius (largest centre-to-corner angle) and inscribed radius
    # (smallest centre-to-edge great-circle angle), rad
    rout = np.arccos(np.clip(np.einsum("nkc,nc->nk", corners, centre).min(1), -1, 1))
    normal = np.cross(corners, np.roll(corners, -1, axis=1))
    normal /= np.linalg.norm(normal, axis=2)[..., None]
    rin = np.arcsin(np.clip(np.abs(np.einsum("nkc,nc->nk", normal, centre)).min(1), 0, 1))
    chord = 2.0 * np.sin(min(2.0 * rout.max(), np.pi) / 2.0) * (1 + 1e-9)
    tree = cKDTree(centre)
    if max_neighbours is None:
        cand = tree.query_pairs(chord, output_type="ndarray").astype(np.int64)
    else:
        k = min(int(max_neighbours) + 1, n)
        dist, idx = tree.query(centre, k=k, distance_upper_bound=chord)
        rows = np.repeat(np.arange(n), k)
        near = np.column_stack([rows, idx.ravel()])[np.isfinite(dist.ravel())]
        seq = np.column_stack([np.arange(n - 1), np.arange(1, n)])
        cand = np.concatenate([near, seq] + _other_group_neighbours(centre, groups, k - 1, chord))
        cand = cand[cand[:, 0] != cand[:, 1]]
        cand.sort(axis=1)
        cand = np.unique(cand, axis=0)
    if groups is not None and len(cand):
        g = np.asarray(groups, dtype=np.int64).reshape(n)
        cand = cand[(g[cand[:, 0]] != g[cand[:, 1]]) | (g[cand[:, 0]] < 0)]
    if len(cand) == 0:
        return np.empty((0, 2), np.int64)
    cand.sort(axis=1)
    sep = 2 * np.arcsin(np.clip(np.linalg.norm(centre[cand[:, 0]] - centre[cand[:, 1]],
                                               axis=1) / 2, 0, 1))
    meet = sep < rout[cand[:, 0]] + rout[cand[:, 1]]  # circumscribed caps meet
    cand, sep = cand[meet], sep[meet]
    keep = np.zeros(len(cand), bool)
    if min_area_frac == 0:  # inscribed caps overlap: the frames surely overlap
        keep = sep < rin[cand[:, 0]] + rin[cand[:, 1]]
    test = np.flatnonzero(~keep)
    i, j = cand[test, 0], cand[test, 1]
    # exact test on the tangent plane at each pair's mid point
    c = centre[i] + centre[j]
    c /= np.linalg.norm(c, axis=1)[:, None]
    plane = _tangent_plane(c)
    pi, pj = shapely.polygons(plane(corners[i])), shapely.polygons(plane(corners[j]))
    for p in (pi, pj):
        bad = ~shapely.is_valid(p)
        p[bad] = shapely.make_valid(p[bad])
    area = shapely.area(shapely.intersection(pi, pj))
    keep[test] = (area > 0) & (area > min_area_frac * np.minimum(shapely.area(pi),
                                                                 shapely.area(pj)))
    out = cand[keep]
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def _other_group_neighbours(centre, groups, k, chord):
    """[(m, 2) int64] candidate pairs: each frame of a group of 2+ frames (``groups`` >= 0) with
    its ``k`` nearest frames (centre unit vectors, within ``chord``) outside its group; [] when
    ``groups`` is None."""
    from scipy.spatial import cKDTree

    if groups is None or k < 1:
        return []
    g = np.asarray(groups, dtype=np.int64).reshape(len(centre))
    labels, counts = np.unique(g[g >= 0], return_counts=True)
    out = []
    for u in labels[counts > 1]:
        inn, other = np.flatnonzero(g == u), np.flatnonzero(g != u)
        if len(other) == 0:
            continue
        kk = min(k, len(other))
        dist, idx = cKDTree(centre[other]).query(centre[inn], k=kk, distance_upper_bound=chord)
        dist, idx = dist.reshape(len(inn), kk), idx.reshape(len(inn), kk)
        ok = np.isfinite(dist)
        out.append(np.column_stack([np.repeat(inn, kk)[ok.ravel()], other[idx[ok]]]))
    return out


def leg_groups(aorkey, expid, time, scan) -> np.ndarray:
    """Scan-leg labels (n,) int64 of a mosaic's frames, for ``solve_offsets(groups=...)``.

    A leg: the frames of one scan-map AOR (``scan`` True; one array: a mosaic unit is one
    array) with the same EXPID that follow each other in time (runs of equal (AORKEY, EXPID)
    in the order of (AORKEY, ``time``); NaN times first, in the given order).  The simulator
    (``reduce.simulate.mips``, MipsScan) numbers its legs by EXPID and adds one offset per
    EXPID and array; for the SSC's scan maps EXPID counts the exposures of the observing
    sequence, which this assumes not to span a turnaround (a finer split only costs
    precision).  Frames not of a scan map, or with EXPID < 0 (unknown), get -1: one offset
    each.  ``aorkey``, ``expid``: (n,) int; ``time``: (n,) float; ``scan``: (n,) bool.
    """
    aorkey = np.asarray(aorkey, dtype=np.int64)
    expid = np.asarray(expid, dtype=np.int64)
    time = np.asarray(time, dtype=np.float64)
    scan = np.asarray(scan, bool) & (expid >= 0)
    n = len(aorkey)
    out = np.full(n, -1, np.int64)
    idx = np.flatnonzero(scan)
    if len(idx) == 0:
        return out
    t = np.where(np.isfinite(time[idx]), time[idx], -np.inf)
    order = idx[np.lexsort((np.arange(len(idx)), t, aorkey[idx]))]
    new = np.r_[True, (aorkey[order][1:] != aorkey[order][:-1]) | (expid[order][1:] != expid[order][:-1])]
    out[order] = np.cumsum(new) - 1
    return out


def pair_correlation(footprints, pairs):
    """Correlation matrix of the pair differences that share a frame, from overlap geometry.

    Two pairs ``a = (f, x)`` and ``b = (f, y)`` measure frame f's noise over the same pixels
    where f, x and y all overlap, so their differences are correlated; treating them as
    independent makes ``solve_offsets`` understate ``offsets_sigma`` wherever the sky is
    covered more than twice (measured ~1.5-2x on a scan map of 4-8x coverage).  With each
    difference a mean over its overlap area ``A`` and equal pixel noise in all frames,
    ``corr(d_a, d_b) = s_a s_b A_fxy / (2 sqrt(A_fx A_fy))`` with ``s = +1`` where f is
    the pair's first frame (``d = o_i - o_j``) and -1 where it is the second; areas on the
    tangent plane at f's centre, from the ``footprints`` (n, 4, 2) deg (good pixels and
    masks ignored).  ``pairs``: (m, 2) int, as given to ``solve_offsets``.

    Returns scipy.sparse csr (m, m), unit diagonal; non-zero only for pairs sharing a
    frame (sum over frames of degree**2 entries), for ``solve_offsets(corr=...)``.
    """
    import shapely

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = len(pairs)
    fp = np.asarray(footprints, dtype=np.float64)
    corners = _unit(fp[..., 0], fp[..., 1])
    centre = _centres(corners)
    # incidence: (frame, pair, other frame, sign), grouped by frame
    f = np.r_[pairs[:, 0], pairs[:, 1]]
    a = np.r_[np.arange(m), np.arange(m)]
    other = np.r_[pairs[:, 1], pairs[:, 0]]
    sign = np.r_[np.ones(m), -np.ones(m)]
    order = np.argsort(f, kind="stable")
    f, a, other, sign = f[order], a[order], other[order], sign[order]
    start = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    deg = np.diff(np.r_[start, len(f)])
    p_idx, q_idx = [], []
    for s0, d in zip(start, deg):
        if d > 1:
            p, q = np.triu_indices(d, 1)
            p_idx.append(s0 + p)
            q_idx.append(s0 + q)
    if not p_idx:
        return sp.identity(m, format="csr")
    p, q = np.concatenate(p_idx), np.concatenate(q_idx)
    plane = _tangent_plane(centre[f[p]])
    pf = shapely.polygons(plane(corners[f[p]]))
    px = shapely.polygons(plane(corners[other[p]]))
    py = shapely.polygons(plane(corners[other[q]]))
    fx, fy = shapely.intersection(pf, px), shapely.intersection(pf, py)
    a_fx, a_fy = shapely.area(fx), shapely.area(fy)
    a_fxy = shapely.area(shapely.intersection(fx, py))
    ok = (a_fx > 0) & (a_fy > 0) & (a_fxy > 0)
    rho = sign[p] * sign[q] * a_fxy / (2 * np.sqrt(np.where(ok, a_fx * a_fy, 1.0)))
    r, c, v = a[p][ok], a[q][ok], rho[ok]
    off = sp.coo_matrix((np.r_[v, v], (np.r_[r, c], np.r_[c, r])), shape=(m, m))
    return (off + sp.identity(m)).tocsr()


def source_mask(image, unc, good, *, nsigma=3.0, dilate_px=2, box_px=None, fwhm_px=None) -> np.ndarray:
    """True on pixels of sources: more than ``nsigma * unc`` above a robust local background.

    ``image``, ``unc``: (ny, nx) MJy/sr; ``good``: (ny, nx) bool.  The background is
    photutils' ``Background2D`` (sigma-clipped medians in boxes of ``box_px`` pixels,
    default a quarter of the smaller side but at least 8, 3x3 median filtered).  Strips too
    narrow for boxes (fewer than ``2 box`` rows or columns but at least ``2 box`` along the
    other axis: the 160 um 2 x 20 frames) use a background that follows the strip
    (``_strip_background``: a robust local quadratic along the long axis over
    ``2 ceil(1.5 fwhm_px) + 1`` pixels, 9 at 160 um; 9 when ``fwhm_px`` is None), so that
    cirrus (clouds of 60-180" sigma, tens of MJy/sr over the 320" strip) is not taken for
    sources: one median for the whole strip flagged about half of its pixels on the
    simulated scan maps.  Other frames too small for boxes, or with too few good pixels per
    box, use one sigma-clipped median (``astropy.stats.sigma_clipped_stats``).  Where
    ``unc`` is not a positive number the robust standard deviation of the good pixels
    stands in.  The detections are grown by a disk of radius ``dilate_px`` pixels
    (``scipy.ndimage``).  Bad pixels are never detections (they are excluded by ``good``
    anyway).  Returns bool (ny, nx).
    """
    from astropy.stats import SigmaClip, sigma_clipped_stats
    from photutils.background import Background2D, MedianBackground

    image = np.asarray(image, dtype=np.float64)
    good = np.asarray(good, bool) & np.isfinite(image)
    if good.sum() < 3:
        return np.zeros(image.shape, bool)
    ny, nx = image.shape
    box = box_px or max(8, min(ny, nx) // 4)
    _, med, std = sigma_clipped_stats(image[good], sigma=3.0)
    bkg = np.full(image.shape, med)
    unc = np.asarray(unc, dtype=np.float64)
    noise = np.where(np.isfinite(unc) & (unc > 0), unc, std)
    if min(ny, nx) >= 2 * box:
        try:
            bkg = Background2D(image, box, mask=~good, filter_size=3, exclude_percentile=50,
                               sigma_clip=SigmaClip(sigma=3.0),
                               bkg_estimator=MedianBackground()).background
        except ValueError:  # too few good pixels in the boxes: keep the global median
            pass
    elif max(ny, nx) >= 2 * box:
        win = 2 * int(np.ceil(1.5 * fwhm_px)) + 1 if fwhm_px else 9
        bkg = _strip_background(image, noise, good, win, nsigma)
    det = good & (image - bkg > nsigma * noise)
    if dilate_px > 0 and det.any():
        r = int(np.ceil(dilate_px))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        det = ndimage.binary_dilation(det, structure=xx**2 + yy**2 <= dilate_px**2)
    return det


def _strip_background(image, noise, good, win, nsigma, iterations=3):
    """Background (ny, nx) of a strip along its long axis (x; transposed when it has more rows).

    At each column, a quadratic in x fitted to the usable pixels of every row within
    ``win // 2`` columns (fewer at the ends), refitted up to three times without the pixels
    more than ``nsigma * noise`` above it, and evaluated at the column (a median where fewer
    than 5 pixels or 3 columns remain). Usable: good pixels not yet detected; the detections
    (more than ``nsigma * noise`` above the current background) are renewed up to
    ``iterations`` times. The quadratic follows cirrus curvature (clouds of 60-180" sigma, tens
    of MJy/sr, on the 320" strip), which a flat running median over a window wide enough for
    a 40" source turns into false detections on the clouds' tops; the clipping against the
    known noise keeps a point source from lifting the fit. On simulated 2 x 20 strips (cloud
    40 MJy/sr, 87" sigma, and a 2 Jy source, noise 0.54 MJy/sr) < 1 % of the pixels farther
    than 64" from the source are flagged (one median per strip: 31 %; a running median over
    13 columns: 40 %)."""
    flip = image.shape[0] > image.shape[1]
    if flip:
        image, noise, good = image.T, noise.T, good.T
    ny, nx = image.shape
    half = max(1, int(win) // 2)
    # every column's window at once: axis 0 the column i, axes 1-2 the strip's pixels
    t = np.arange(nx, dtype=np.float64)[None, :] - np.arange(nx)[:, None]
    inwin = (np.abs(t) <= half)[:, None, :]
    tt = np.broadcast_to(t[:, None, :], (nx, ny, nx))
    vv = np.broadcast_to(np.where(good, image, 0.0)[None], (nx, ny, nx))   # bad pixels (NaN) weigh 0
    cut = np.broadcast_to(nsigma * noise[None], (nx, ny, nx))
    fallback = float(np.median(image[good]))
    det = np.zeros(image.shape, bool)
    line = np.full(nx, fallback)
    for _ in range(iterations):
        win_use = inwin & (good & ~det)[None]
        keep, active = win_use, np.ones(nx, bool)
        coef, ok = np.zeros((nx, 3)), np.zeros(nx, bool)
        for _ in range(3):       # fit, clip; a column stops when its clipping no longer changes
            c, o = _quadratic_fits(tt, vv, keep)
            coef[active], ok[active] = c[active], o[active]
            low = win_use & (vv - (c[:, 0, None, None] + c[:, 1, None, None] * tt + c[:, 2, None, None] * tt * tt)
                             < cut)
            enough = (low.sum(axis=(1, 2)) >= 5) & (low.any(axis=1).sum(axis=1) >= 3)
            active &= enough & (low != keep).any(axis=(1, 2))
            if not active.any():
                break
            keep = np.where(active[:, None, None], low, keep)
        line = coef[:, 0].copy()
        for i in np.flatnonzero(~ok):        # too few pixels or columns: their median
            v = image[win_use[i]]
            line[i] = np.median(v) if len(v) else fallback
        new = good & (image - line[None, :] > nsigma * noise)
        if np.array_equal(new, det):
            break
        det = new
    bkg = np.broadcast_to(line[None, :], (ny, nx))
    return bkg.T if flip else bkg


def _quadratic_fits(t, v, use):
    """Least-squares quadratics ``c0 + c1 t + c2 t^2`` of ``v`` on ``t`` over ``use`` (all
    (n, ...)), one per leading index: coefficients (n, 3) and ``ok`` (n,) where at least 5
    points at 3 distinct ``t`` (over the last axis) were used (elsewhere the coefficients
    are 0)."""
    w = use.astype(np.float64)
    tp = [np.ones_like(t)]
    for _ in range(4):
        tp.append(tp[-1] * t)
    m = np.stack([(w * tp[k]).sum(axis=(1, 2)) for k in range(5)], axis=1)
    r = np.stack([(w * v * tp[k]).sum(axis=(1, 2)) for k in range(3)], axis=1)
    ok = (m[:, 0] >= 5) & (use.any(axis=1).sum(axis=1) >= 3)
    a = np.stack([m[:, 0:3], m[:, 1:4], m[:, 2:5]], axis=1)
    a[~ok] = np.eye(3)
    r[~ok] = 0.0
    return np.linalg.solve(a, r[..., None])[..., 0], ok


def pair_difference(fi: Frame, fj: Frame, *, mask_i=None, mask_j=None, min_pixels=20, min_frac=0.2, var_i=None,
                    var_j=None):
    """Robust level difference of frame i minus frame j over their overlap, MJy/sr.

    Frame j is interpolated bilinearly (``scipy.ndimage.map_coordinates``) at the centres
    of frame i's good, unmasked pixels that fall inside j's good unmasked area (inside
    j's outer pixel edges, every j pixel with a non-zero bilinear weight good and
    unmasked; within half a pixel of j's edge the edge pixels' values, which keeps the
    160 um 2-row arrays usable); ``mask_*``: (ny, nx) bool
    source masks, True = exclude (``source_mask``); ``var_*``: ``pixel_variance`` of the
    frames' ``unc`` when the caller has it (a frame is in several pairs).

    Returns ``(diff, sigma, npix)``: ``diff = median(f_i - f_j)`` (an estimate of
    ``o_i - o_j``; NaN when ``npix`` is below ``min_pixels`` or, for small frames, below
    ``min_frac`` of the smaller frame's pixel count, at least 5: two 2 x 20 pixel 160 um
    frames overlap in at most 40 pixels, ~17-19 usable after the interpolation's edge and
    the source masks, so 20 would leave almost no pair; 8 there), ``sigma`` its 1-sigma standard error,
    ``npix`` the number of pixels used.  ``sigma = 1.4826 * MAD * sqrt(R / npix)``,
    ``R = (1.2533**2 V_i + V_j) / sum(v)``: the noise scale comes from the MAD of the
    differences, the rest from ``unc`` (u): ``V_i = sum u_i**2`` is frame i's share of
    ``npix**2`` times the variance of a mean of the differences (independent pixels; the
    median costs ``1.2533 = sqrt(pi / 2)``); ``V_j = sum_k c_k**2 u_k**2`` is frame j's
    share, ``c_k`` the sum of the bilinear weights of j pixel k (each j pixel enters
    several differences smoothly: it averages like a mean); ``v = u_i**2 + sum w**2 u_j**2``
    the variance of one difference.  Checked on pure-noise frames: the scatter of ``diff``
    over realisations / stated sigma = 0.95-1.07 (the textbook
    ``1.2533 * 1.4826 * MAD / sqrt(npix)`` is ~14 % low for a 45 deg rotated pair).
    """
    ok_i = fi.good & np.isfinite(fi.image)
    ok_j = fj.good & np.isfinite(fj.image)
    if mask_i is not None:
        ok_i &= ~np.asarray(mask_i, bool)
    if mask_j is not None:
        ok_j &= ~np.asarray(mask_j, bool)
    yi, xi = np.nonzero(ok_i)
    nyj, nxj = fj.shape
    nan = (np.nan, np.nan, 0)
    if len(xi) == 0 or not ok_j.any():
        return nan
    jmap = pixel_map(fi.wcs, fj.wcs, fi.shape)
    xj, yj = jmap[yi, xi, 0], jmap[yi, xi, 1]
    inside = (xj >= -0.5) & (xj <= nxj - 0.5) & (yj >= -0.5) & (yj <= nyj - 0.5)
    # within half a pixel of j's edge: the edge pixel's value (nearest extension)
    xi, yi = xi[inside], yi[inside]
    xj, yj = np.clip(xj[inside], 0, nxj - 1), np.clip(yj[inside], 0, nyj - 1)
    if len(xi) == 0:
        return nan
    # bilinear taps of j at (yj, xj) (as map_coordinates order 1, mode "nearest", on the clipped points)
    x0 = np.minimum(np.floor(xj).astype(np.int64), max(nxj - 2, 0))
    y0 = np.minimum(np.floor(yj).astype(np.int64), max(nyj - 2, 0))
    fx, fy = xj - x0, yj - y0
    taps = [(np.minimum(y0 + dy, nyj - 1) * nxj + np.minimum(x0 + dx, nxj - 1), w)
            for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                              (1, 0, (1 - fx) * fy), (1, 1, fx * fy))]
    bad_flat = (~ok_j).ravel()
    use = sum(w * bad_flat[k] for k, w in taps) < 1e-9     # every tap with weight good and unmasked
    xi, yi = xi[use], yi[use]
    taps = [(k[use], w[use]) for k, w in taps]
    npix = len(xi)
    if npix < min(min_pixels, max(5, int(np.ceil(min_frac * min(fi.image.size, fj.image.size))))):
        return np.nan, np.nan, npix
    img_j = np.where(ok_j, fj.image, 0.0).ravel()
    d = fi.image[yi, xi] - sum(w * img_j[k] for k, w in taps)
    diff = float(np.median(d))
    mad = float(np.median(np.abs(d - diff)))
    # correlation factor R of the bilinear interpolation (see docstring)
    ui2 = (pixel_variance(fi.unc) if var_i is None else var_i)[yi, xi]
    uj2 = (pixel_variance(fj.unc) if var_j is None else var_j).ravel()
    csum = np.zeros(nyj * nxj)
    w2 = np.zeros(npix)
    for k, w in taps:
        csum += np.bincount(k, w, minlength=nyj * nxj)
        w2 += w**2 * uj2[k]
    var_i, var_j = ui2.sum(), (csum**2 * uj2).sum()
    r = (MEDIAN_SE**2 * var_i + var_j) / (ui2 + w2).sum()
    sigma = MAD_SIGMA * mad * np.sqrt(r / npix)
    return diff, float(sigma), npix


def pixel_variance(unc):
    """Pixel variances (ny, nx) from ``unc``; non-positive / non-finite entries get the median."""
    u = np.asarray(unc, dtype=np.float64)
    ok = np.isfinite(u) & (u > 0)
    fill = np.median(u[ok]) if ok.any() else 1.0
    return np.where(ok, u, fill) ** 2


def _group_labels(n, groups):
    """(n,) compact group ids 0..G-1 and G from ``groups`` (None: one group per frame; a
    negative label: the frame is a group of its own)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups, dtype=np.int64).reshape(n)
    lone = g < 0
    _, g_pos = np.unique(g[~lone], return_inverse=True)
    out = np.empty(n, np.int64)
    out[~lone] = g_pos
    k = int(g_pos.max()) + 1 if len(g_pos) else 0
    out[lone] = k + np.arange(int(lone.sum()))
    return out, k + int(lone.sum())


def solve_offsets(n, pairs, diff, sigma, *, groups=None, huber=2.0, iterations=5, corr=None,
                  exact_sigma_max=2000, nsamples=200):
    """One additive level per frame, or per group of frames, from pairwise level differences
    (sparse, robust).

    Minimises ``sum_ij w_ij (o_i - o_j - d_ij)**2`` with ``w = 1 / sigma**2``, iteratively
    reweighted ``iterations`` times with Huber weights ``min(1, huber / |r_ij|)`` of the
    standardised residuals ``r = (o_i - o_j - d_ij) / sigma`` (``huber=None``: plain least
    squares).  Pairs with a non-finite ``diff`` or ``sigma`` (or ``sigma <= 0``, or
    ``i == j``) are ignored.  Each solve factorises the graph Laplacian ``A^T W A``
    (``scipy.sparse``, SuperLU) with one unknown per connected component pinned to 0, then
    shifts every component so that the sum of its frames' offsets is 0: the gauge
    ``sum(o) = 0`` per component (``scipy.sparse.csgraph.connected_components``), so the
    mean level of every component is kept (no sky subtraction).  Frames without a usable
    pair (of their group) get offset 0.

    ``groups`` (None: one offset per frame): (n,) int labels; frames with the same label share
    one offset (the MIPS Ge scan maps' per-leg offsets, ``leg_groups``), a negative label is a
    group of one frame.  The design matrix is then pairs x groups (``A = A_frames P`` with ``P``
    the n x G membership matrix), pairs within one group are ignored (they constrain nothing),
    and the gauge weighs each group by its number of frames (the frames' offsets sum to 0).
    A frame's offset, sigma and component are its group's.

    ``n``: number of frames; ``pairs``: (m, 2) int; ``diff``, ``sigma``: (m,) MJy/sr,
    ``diff_ij`` estimates ``o_i - o_j`` (``pair_difference``).

    Returns ``(offsets, offsets_sigma, component)``: offsets (n,) MJy/sr (matched frame =
    image - offset); offsets_sigma (n,) MJy/sr, the 1-sigma of each offset in this gauge
    from the final weights: the diagonal of the Laplacian's pseudo-inverse (exact, via
    ``diag(C S C')`` with ``S`` the inverse of the pinned Laplacian and ``C`` the centring,
    from one column solve per unknown with the sparse LU, cost ~ G x nnz(LU)) when the
    unknowns in components number at most ``exact_sigma_max``; above that a Monte Carlo estimate:
    the estimator applied to ``nsamples`` draws of independent Gaussian noise of variance
    ``1 / w`` (final weights; same expectation as the exact diagonal; fixed seed; relative precision ~ 1 / sqrt(2 nsamples), 5 % for 200;
    ``corr`` is then not used); 0 for frames without a pair.
    ``corr``: optional (m, m) sparse correlation matrix of the differences
    (``pair_correlation``); given, the exact offsets_sigma is the sandwich
    ``diag(K C K')`` of the estimator ``o = K d`` (final weights) with the covariance
    ``C = diag(sigma) corr diag(sigma)`` (otherwise the differences count as independent,
    which understates offsets_sigma where the sky is covered more than twice).
    component (n,) int: connected-component id 0..k-1, -1 for frames without a pair.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    diff = np.asarray(diff, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    grp, ng = _group_labels(n, groups)
    cnt = np.bincount(grp, minlength=ng).astype(float)       # frames per unknown (gauge weights)
    gi, gj = grp[pairs[:, 0]], grp[pairs[:, 1]]
    use = np.isfinite(diff) & np.isfinite(sigma) & (sigma > 0) & (gi != gj)
    i, j, d, s = gi[use], gj[use], diff[use], sigma[use]
    m = len(i)
    offsets, osig = np.zeros(ng), np.zeros(ng)
    component = np.full(ng, -1, np.int64)
    if m == 0:
        return offsets[grp], osig[grp], component[grp]

    adj = sp.coo_matrix((np.ones(m), (i, j)), shape=(ng, ng)).tocsr()
    _, lab = connected_components(adj, directed=False)
    linked = np.zeros(ng, bool)
    linked[i] = linked[j] = True
    _, component[linked] = np.unique(lab[linked], return_inverse=True)
    ncomp = component.max() + 1
    comp_l = component[linked]
    cnt_l = cnt[linked]
    nodes = np.flatnonzero(linked)
    first = np.zeros(ng, bool)
    first[nodes[np.unique(comp_l, return_index=True)[1]]] = True  # pinned reference unknowns
    free = linked & ~first
    nfree = int(free.sum())
    size = np.bincount(comp_l, cnt_l, minlength=ncomp)            # frames per component
    A = sp.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (np.r_[np.arange(m), np.arange(m)],
                                                        np.r_[i, j])), shape=(m, ng))
    A = A[:, np.flatnonzero(free)]  # pinned unknowns: o = 0, columns dropped

    def centre(o):        # (ng, ...) -> shifted so that each component's frames sum to 0
        tot = np.stack([np.bincount(comp_l, cnt_l * col, minlength=ncomp)
                        for col in o[linked].reshape(len(comp_l), -1).T], 1)
        o[linked] -= (tot / size[:, None])[comp_l].reshape(o[linked].shape)
        return o

    def solve(w):
        lap = (A.T @ sp.diags(w) @ A).tocsc()
        lu = splu(lap, permc_spec="MMD_AT_PLUS_A")  # nfree >= 1: every component has 2+
        o = np.zeros(ng)
        o[free] = lu.solve(A.T @ (w * d))
        return centre(o), lu

    w0 = 1.0 / s**2
    w = w0
    offsets, lu = solve(w)
    if huber is not None and np.isfinite(huber):
        for _ in range(iterations):
            r = np.abs(offsets[i] - offsets[j] - d) / s
            w = w0 * np.minimum(1.0, huber / np.maximum(r, 1e-300))
            offsets, lu = solve(w)

    if linked.sum() <= exact_sigma_max and corr is not None:
        # sandwich: o = Cc E L^-1 A' W d, var_k = g_k' C g_k, g_k = W A L^-1 E' Cc' e_k
        cov = sp.diags(s) @ sp.csr_matrix(corr)[use][:, use] @ sp.diags(s)
        lk = np.flatnonzero(linked)
        var = np.zeros(len(lk))
        chunk = max(1, min(len(lk), 1_000_000 // max(m, nfree, 1)))
        for a in range(0, len(lk), chunk):
            k = lk[a:a + chunk]
            rhs = np.zeros((ng, len(k)))
            rhs[k, np.arange(len(k))] = 1.0
            # centring Cc' e_k: subtract cnt_l / size on every unknown of the column's component
            rhs[linked] -= (component[linked][:, None] == component[k][None, :]) * cnt_l[:, None] / size[
                component[k]][None, :]
            g = w[:, None] * (A @ lu.solve(rhs[free]))
            var[a:a + chunk] = np.einsum("mk,mk->k", g, cov @ g)
    elif linked.sum() <= exact_sigma_max:
        # diag(C S0 C') with S0 = pinned inverse (zero row/col for the pinned unknowns), c the
        # frame counts: S0_kk - 2 (S0 c)_k / N_c + c' S0 c / N_c**2
        u = np.zeros(ng)
        u[free] = lu.solve(cnt[free])
        tot = np.bincount(comp_l, cnt_l * u[linked], minlength=ncomp)
        dkk = np.zeros(ng)
        chunk = max(1, min(nfree, 1_000_000 // max(nfree, 1)))  # <= 8 MB of columns
        for a in range(0, nfree, chunk):
            b = min(nfree, a + chunk)
            e = np.zeros((nfree, b - a))
            e[np.arange(a, b), np.arange(b - a)] = 1.0
            cols = lu.solve(e)
            dkk[np.flatnonzero(free)[a:b]] = cols[np.arange(a, b), np.arange(b - a)]
        var = dkk[linked] - 2 * u[linked] / size[comp_l] + tot[comp_l] / size[comp_l] ** 2
    else:
        # Monte Carlo: the estimator applied to nsamples draws of independent noise d* ~
        # N(0, 1 / w) (K d* with the final factorisation); var = mean(o*_k**2) -> diag(L+)
        rng = np.random.default_rng(0)
        var = np.zeros(int(linked.sum()))
        batch = max(1, min(nsamples, 1_000_000 // max(m, ng)))  # <= 8 MB per array
        for b0 in range(0, nsamples, batch):
            nb = min(batch, nsamples - b0)
            z = rng.standard_normal((m, nb)) / np.sqrt(w)[:, None]
            o = np.zeros((ng, nb))
            o[free] = lu.solve(A.T @ (w[:, None] * z))
            var += (centre(o)[linked] ** 2).sum(1)
        var /= nsamples
    osig[linked] = np.sqrt(np.maximum(var, 0.0))
    return offsets[grp], osig[grp], component[grp]
