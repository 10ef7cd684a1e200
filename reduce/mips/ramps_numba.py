"""Numba per-pixel kernels behind :mod:`reduce.mips.ramps` (Ge 70/160 um ramps).

Layout used here: reads ``(ndce, nread, npix)`` int16, calibration per pixel
``(npix,)`` (coefficients ``(K, npix)``). All noise terms are in *linear* DN.
Every function is compiled with ``cache=True``; nothing mutates its inputs.

Noise model of one pixel (linear DN, reads i = 0..m-1 of one segment):
``y_i = a + mu*i + R_i + e_i`` with ``R`` a random walk of step variance
``P = mu/gain`` (Poisson, DN^2 per read interval) and ``e_i`` white read noise
of standard deviation ``s_i``. First differences ``d_k = y_{k+1} - y_k`` then
have a tridiagonal covariance (diagonal ``P + s_k^2 + s_{k+1}^2``, off-diagonal
``-s_{k+1}^2``), which makes the generalised least-squares slope exact in O(m).
"""

import numpy as np
from numba import njit

# internal pixel status bits (mapped onto the caller's flag values in ramps.py)
ST_SATURATED = 1
ST_CR = 2
ST_TOO_FEW = 4
ST_NO_SEGMENT = 8
MAX_WINDOW = 8
CLIP = 3.0  # sigma clip of differences for the rate estimate
MEDIAN_MAX = 32  # at most this many differences set the clipping centre


@njit(cache=True, error_model="numpy")
def _poly(d, c, p):
    """Linear DN sum_k c[k-1, p] d^k (Horner) and its derivative d(lin)/dd."""
    K = c.shape[0]
    val = 0.0
    der = 0.0
    for k in range(K - 1, -1, -1):
        der = der * d + val
        val = val * d + c[k, p]
    return val * d, val + der * d


@njit(cache=True, error_model="numpy")
def linearize_kernel(reads, nreads, coeffs):
    """Linear DN relative to the first read; NaN beyond nreads. float32 (ndce, nread, npix)."""
    ndce, nread, npix = reads.shape
    out = np.empty((ndce, nread, npix), np.float32)
    for i in range(ndce):
        n = nreads[i]
        for p in range(npix):
            r0 = float(reads[i, 0, p])
            for j in range(nread):
                if j < n:
                    out[i, j, p] = _poly(float(reads[i, j, p]) - r0, coeffs, p)[0]
                else:
                    out[i, j, p] = np.nan
    return out


@njit(cache=True, error_model="numpy")
def _select(x, n, k):
    """k-th smallest of x[:n], partially reordering x in place (quickselect)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        piv = x[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while x[i] < piv:
                i += 1
            while x[j] > piv:
                j -= 1
            if i <= j:
                t = x[i]
                x[i] = x[j]
                x[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return x[k]


@njit(cache=True, error_model="numpy")
def _median(x, n):
    """Median of x[:n] (x is scratch: reordered in place)."""
    upper = _select(x, n, n // 2)
    if n % 2 == 1:
        return upper
    lower = x[0]
    for i in range(1, n // 2):
        if x[i] > lower:
            lower = x[i]
    return 0.5 * (lower + upper)


@njit(cache=True, error_model="numpy")
def _rate_estimate(d, flagged, nd, s2mean, gain, buf, use):
    """Rate mu (DN/read): mean of unflagged differences within 3 sigma of their median
    (of all of them when none lies 3 sigma from their mean).

    Marks the differences used in ``use``; returns (mu, var_mu, n_used, sum_used).
    """
    n = 0
    tot = 0.0
    dmax = -1e300
    dmin = 1e300
    nruns = 0
    prev = False
    for k in range(nd):
        use[k] = not flagged[k]
        if use[k]:
            buf[n] = d[k]
            n += 1
            tot += d[k]
            dmax = max(dmax, d[k])
            dmin = min(dmin, d[k])
            if not prev:
                nruns += 1
        prev = use[k]
    if n == 0:
        return 0.0, 0.0, 0, 0.0
    # fast path: nothing deviates by CLIP sigma from the mean, so nothing is clipped
    mu = tot / n
    pois = max(mu, 0.0) / gain
    sd = np.sqrt(2.0 * s2mean + pois)
    if dmax <= mu + CLIP * sd and dmin >= mu - CLIP * sd:
        return mu, (2.0 * s2mean * nruns / n + pois) / n, n, tot
    # the clipping centre need not be exact: long ramps use every step-th difference
    step = (n + MEDIAN_MAX - 1) // MEDIAN_MAX
    if step > 1:
        n = 0
        for k in range(0, nd):
            if not flagged[k]:
                if n % step == 0:
                    buf[n // step] = d[k]
                n += 1
        n = (n + step - 1) // step
    med = _median(buf, n)
    sd = np.sqrt(2.0 * s2mean + max(med, 0.0) / gain)
    lo_clip = med - CLIP * sd
    hi_clip = med + CLIP * sd
    tot = 0.0
    nu = 0
    nruns = 0
    prev = False
    for k in range(nd):
        use[k] = (not flagged[k]) and lo_clip <= d[k] <= hi_clip
        if use[k]:
            tot += d[k]
            nu += 1
            if not prev:
                nruns += 1
        prev = use[k]
    if nu == 0:
        return med, sd * sd, 0, 0.0
    mu = tot / nu
    pois = max(mu, 0.0) / gain
    # read noise telescopes within each run of consecutive used differences
    return mu, (2.0 * s2mean * nruns / nu + pois) / nu, nu, tot


@njit(cache=True, error_model="numpy")
def _best_window(s2mean, pois, var_mu):
    """Window half-width w (reads) minimising the step-estimate variance."""
    best_w = 1
    best_v = 1e300
    for w in range(1, MAX_WINDOW + 1):
        v = 2.0 * s2mean / w + pois * (1.0 + (w - 1.0) * (2.0 * w - 1.0) / (3.0 * w))
        if v < best_v:
            best_v = v
            best_w = w
    return best_w


@njit(cache=True, error_model="numpy")
def _step_z(cy, cs, k, lo, hi, w, mu, pois, var_mu):
    """Significance of a positive step between reads k and k+1 (segment reads lo..hi).

    ``cy``, ``cs``: prefix sums of y and of the read-noise variances (length m + 1).
    """
    b0 = max(lo, k - w + 1)
    a1 = min(hi, k + w)
    w1 = k - b0 + 1
    w2 = a1 - k
    mb = (cy[k + 1] - cy[b0]) / w1
    ma = (cy[a1 + 1] - cy[k + 1]) / w2
    dt_mean = 0.5 * (w1 + w2)
    step = ma - mb - mu * dt_mean
    # Poisson weights: sum_{q<w} (q/w)^2 = (w-1)(2w-1)/(6w) on each side
    wsum = 1.0 + (w1 - 1.0) * (2.0 * w1 - 1.0) / (6.0 * w1) + (w2 - 1.0) * (2.0 * w2 - 1.0) / (6.0 * w2)
    var = (cs[k + 1] - cs[b0]) / (w1 * w1) + (cs[a1 + 1] - cs[k + 1]) / (w2 * w2)
    var += pois * wsum + var_mu * dt_mean * dt_mean
    return step / np.sqrt(var)


@njit(cache=True, error_model="numpy")
def _step_z2(cy, cs, k, lo, hi, w, mu, pois, var_mu, invq, wq):
    """Signed squared significance of a step between reads k and k+1 (as ``_step_z``).

    ``invq[q] = 1/q`` and ``wq[q] = (q-1)(2q-1)/(6q)`` (tables, q = 1..MAX_WINDOW)
    spare the divisions in this innermost loop.
    """
    b0 = max(lo, k - w + 1)
    a1 = min(hi, k + w)
    w1 = k - b0 + 1
    w2 = a1 - k
    i1 = invq[w1]
    i2 = invq[w2]
    dt_mean = 0.5 * (w1 + w2)
    step = (cy[a1 + 1] - cy[k + 1]) * i2 - (cy[k + 1] - cy[b0]) * i1 - mu * dt_mean
    var = (cs[k + 1] - cs[b0]) * i1 * i1 + (cs[a1 + 1] - cs[k + 1]) * i2 * i2
    var += pois * (1.0 + wq[w1] + wq[w2]) + var_mu * dt_mean * dt_mean
    return step * abs(step) / var


@njit(cache=True, error_model="numpy")
def _refine(y, k, lo, hi, w, mu):
    """Most likely step position near k: change-point maximum of n1*n2/n*(m2-m1)^2."""
    L = max(lo, k - 2 * w + 1)
    R = min(hi, k + 2 * w)
    tot = 0.0
    for i in range(L, R + 1):
        tot += y[i] - mu * i
    n = R - L + 1
    best = -1.0
    kbest = k
    s1 = 0.0
    for j in range(L, R):
        s1 += y[j] - mu * j
        if j < k - w + 1 or j > k + w - 1:
            continue
        n1 = j - L + 1
        n2 = n - n1
        diff = (tot - s1) / n2 - s1 / n1
        if diff <= 0.0:
            continue
        stat = n1 * n2 / n * diff * diff
        if stat > best:
            best = stat
            kbest = j
    return kbest


@njit(cache=True, error_model="numpy")
def _gls_rate(y, s2, nd, use, pois, cp, dp):
    """GLS rate (DN/read) and its variance over the runs of used differences."""
    sw = 0.0
    swx = 0.0
    a = -1
    for k in range(nd + 1):
        if k < nd and use[k]:
            if a < 0:
                a = k
        elif a >= 0:
            sl, var = _segment_fit(y, s2, a, k, pois, cp, dp)
            swx += sl / var
            sw += 1.0 / var
            a = -1
    if sw == 0.0:
        return 0.0, 0.0
    return swx / sw, 1.0 / sw


@njit(cache=True, error_model="numpy")
def _rate(y, s2, d, flagged, nd, s2mean, gain, buf, use, cp, dp):
    """Robust rate: clipped differences, then GLS over what is left. (mu, var_mu, n_used)."""
    mu, var_mu, nu, tot = _rate_estimate(d, flagged, nd, s2mean, gain, buf, use)
    if nu >= 2:
        mu, var_mu = _gls_rate(y, s2, nd, use, max(mu, 0.0) / gain, cp, dp)
    return mu, var_mu, nu


@njit(cache=True, error_model="numpy")
def _detect_pixel(y, s2, m, gain, thr, flagged, use, ws):
    """Flag jumps in diffs 0..m-2 (flagged[k]: jump between reads k and k+1).

    Returns (ncr, mu, var_mu, n_used): rate (DN/read) with its GLS variance over the n_used differences.

    ``ws``: float64 scratch [9, max(nread, MAX_WINDOW) + 1].
    """
    nd = m - 1
    for k in range(nd):
        flagged[k] = False
    if nd < 1:
        return 0, 0.0, 0.0, 0
    d, buf, cp, dp, cy, cs, seg_hi = ws[0], ws[1], ws[2], ws[3], ws[4], ws[5], ws[6]
    invq, wq = ws[7], ws[8]
    s2mean = 0.0
    cy[0] = 0.0
    cs[0] = 0.0
    for i in range(m):
        s2mean += s2[i]
        cy[i + 1] = cy[i] + y[i]
        cs[i + 1] = cs[i] + s2[i]
    s2mean /= m
    for k in range(nd):
        d[k] = y[k + 1] - y[k]
    ncr = 0
    mu, var_mu, nu = _rate(y, s2, d, flagged, nd, s2mean, gain, buf, use, cp, dp)
    if nd < 3:
        return 0, mu, var_mu, nu
    for _ in range(nd):
        if nu < 2:
            break
        pois = max(mu, 0.0) / gain
        w = _best_window(s2mean, pois, var_mu)
        for q in range(1, w + 1):
            invq[q] = 1.0 / q
            wq[q] = (q - 1.0) * (2.0 * q - 1.0) / (6.0 * q)
        hi = m - 1
        for k in range(nd - 1, -1, -1):
            if flagged[k]:
                hi = k
            seg_hi[k] = hi
        zmax = -1e300
        kmax = -1
        kmax_lo = 0
        lo = 0
        for k in range(nd):
            if flagged[k]:
                lo = k + 1
                continue
            z = _step_z2(cy, cs, k, lo, int(seg_hi[k]), w, mu, pois, var_mu, invq, wq)
            if z > zmax:
                zmax = z
                kmax = k
                kmax_lo = lo
        if kmax < 0 or zmax <= 0.25 * thr * thr:
            break
        kmax_hi = int(seg_hi[kmax])
        if w > 1:
            kmax = _refine(y, kmax, kmax_lo, kmax_hi, w, mu)
        # re-test with the rate fitted around the candidate: a hit left inside
        # the rate fit biases the rate and hides itself
        use[kmax] = False
        mu2, var2 = _gls_rate(y, s2, nd, use, pois, cp, dp)
        z2 = -1e300
        for k in range(max(kmax_lo, kmax - w + 1), min(kmax_hi, kmax + w)):
            z2 = max(z2, _step_z(cy, cs, k, kmax_lo, kmax_hi, w, mu2, pois, var2))
        if z2 <= thr:
            break
        flagged[kmax] = True
        ncr += 1
        mu, var_mu, nu = _rate(y, s2, d, flagged, nd, s2mean, gain, buf, use, cp, dp)
    return ncr, mu, var_mu, nu


@njit(cache=True, error_model="numpy")
def _segment_fit(y, s2, a, b, pois, cp, dp):
    """GLS slope (DN/read) and variance of segment reads a..b (b - a >= 1)."""
    n = b - a
    # Thomas algorithm for T x = 1, T tridiagonal symmetric (one division per row)
    off_prev = 0.0
    c_prev = 0.0
    d_prev = 0.0
    for k in range(n):
        off_next = -s2[a + k + 1]
        inv = 1.0 / (pois + s2[a + k] - off_next - off_prev * c_prev)
        c_prev = off_next * inv
        d_prev = (1.0 - off_prev * d_prev) * inv
        cp[k] = c_prev
        dp[k] = d_prev
        off_prev = off_next
    x_next = dp[n - 1]
    sx = x_next
    sxd = x_next * (y[a + n] - y[a + n - 1])
    for k in range(n - 2, -1, -1):
        xk = dp[k] - cp[k] * x_next
        sx += xk
        sxd += xk * (y[a + k + 1] - y[a + k])
        x_next = xk
    return sxd / sx, 1.0 / sx


@njit(cache=True, error_model="numpy")
def fit_kernel(reads, nreads, coeffs, satlevel, rdnoise, gain, dt, thr, min_reads):
    """Saturation, linearity, jump detection and segment-fused GLS slopes.

    Returns slope, error (DN/s, float32 (ndce, npix)), status bits (uint8),
    ncr (int16) and cr_reads (bool (ndce, nread, npix), True at the first read after a jump).
    """
    ndce, nread, npix = reads.shape
    slope = np.full((ndce, npix), np.nan, np.float32)
    error = np.full((ndce, npix), np.nan, np.float32)
    status = np.zeros((ndce, npix), np.uint8)
    ncr_out = np.zeros((ndce, npix), np.int16)
    cr = np.zeros((ndce, nread, npix), np.bool_)
    y = np.empty(nread)
    s2 = np.empty(nread)
    flagged = np.zeros(max(nread, 1), np.bool_)
    use = np.zeros(max(nread, 1), np.bool_)
    ws = np.empty((9, max(nread, MAX_WINDOW) + 1))
    for i in range(ndce):
        n = min(nreads[i], nread)
        for p in range(npix):
            st = 0
            m = 0
            r0 = float(reads[i, 0, p]) if n > 0 else 0.0
            for j in range(n):
                raw = float(reads[i, j, p])
                if raw >= satlevel[p]:
                    st |= ST_SATURATED
                    break
                val, der = _poly(raw - r0, coeffs, p)
                y[m] = val
                s2[m] = (rdnoise[p] * der) ** 2
                m += 1
            if m < min_reads:
                st |= ST_TOO_FEW
            g = gain[p]
            ncr, mu, var_mu, nu = _detect_pixel(y, s2, m, g, thr, flagged, use, ws)
            if ncr > 0:
                st |= ST_CR
                for k in range(m - 1):
                    if flagged[k]:
                        cr[i, k + 1, p] = True
            ncr_out[i, p] = ncr
            if ncr == 0 and nu == m - 1 and m >= min_reads and m >= 3:
                # one segment, every difference used: the rate fit is the answer
                slope[i, p] = mu / dt
                error[i, p] = np.sqrt(var_mu) / dt
                status[i, p] = st
                continue
            pois = max(mu, 0.0) / g
            # segments: reads a..b between jumps; fuse those with >= min_reads reads
            swsum = 0.0
            wsum = 0.0
            best_len = 0
            best_a = 0
            a = 0
            for b in range(m):
                if b == m - 1 or flagged[b]:
                    length = b - a + 1
                    if length >= min_reads and length >= 2:
                        sl, var = _segment_fit(y, s2, a, b, pois, ws[2], ws[3])
                        swsum += sl / var
                        wsum += 1.0 / var
                    if length > best_len:
                        best_len = length
                        best_a = a
                    a = b + 1
            if wsum == 0.0:
                st |= ST_NO_SEGMENT
                if best_len >= 2:
                    sl, var = _segment_fit(y, s2, best_a, best_a + best_len - 1, pois, ws[2], ws[3])
                    swsum = sl / var
                    wsum = 1.0 / var
            if wsum > 0.0:
                slope[i, p] = swsum / wsum / dt
                error[i, p] = np.sqrt(1.0 / wsum) / dt
            status[i, p] = st
    return slope, error, status, ncr_out, cr


@njit(cache=True, error_model="numpy")
def jumps_kernel(lin, ngood, rdnoise, gain, thr):
    """Jump mask (bool (ndce, nread, npix)) from linear DN of the good-read prefix."""
    ndce, nread, npix = lin.shape
    cr = np.zeros((ndce, nread, npix), np.bool_)
    y = np.empty(nread)
    s2 = np.empty(nread)
    flagged = np.zeros(max(nread, 1), np.bool_)
    use = np.zeros(max(nread, 1), np.bool_)
    ws = np.empty((9, max(nread, MAX_WINDOW) + 1))
    for i in range(ndce):
        for p in range(npix):
            m = ngood[i, p]
            for j in range(m):
                y[j] = lin[i, j, p]
                s2[j] = rdnoise[p] ** 2
            ncr = _detect_pixel(y, s2, m, gain[p], thr, flagged, use, ws)[0]
            for k in range(m - 1):
                if flagged[k]:
                    cr[i, k + 1, p] = True
    return cr
