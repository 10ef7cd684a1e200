"""Numba per-pixel kernels behind :mod:`reduce.mips.kernels.ramps` (Ge 70/160 um ramps).

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
LOC_ODDS = 3e-2  # a jump more likely than this (summed odds) at another gap is ambiguous


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
def _locate(y, s2, lo, hi, k0, k1, mu, pois, pv, rv, qv, uv):
    """(gap, odds, adjacent gap): most likely jump gap in k0..k1 (segment reads lo..hi): maximum of the exact
    GLS step significance ``u_k / sqrt((C^-1)_kk)``, ``u = C^-1 (d - mu)`` with C
    the tridiagonal covariance of the segment's differences (O(m); ``pv, rv, qv, uv``
    scratch). This is the maximum-likelihood step position for read + Poisson noise;
    ``odds``: summed likelihood ratios of the gaps within 2 of it to it.
    """
    n = hi - lo
    # forward pivots p and forward-substituted residuals r' (Thomas), differences lo..hi-1
    for t in range(n):
        k = lo + t
        a = pois + s2[k] + s2[k + 1]
        r = y[k + 1] - y[k] - mu
        if t == 0:
            pv[t] = a
            rv[t] = r
        else:
            b = -s2[k]
            f = b / pv[t - 1]
            pv[t] = a - b * f
            rv[t] = r - f * rv[t - 1]
    # backward pivots q and back substitution u = C^-1 r
    for t in range(n - 1, -1, -1):
        k = lo + t
        a = pois + s2[k] + s2[k + 1]
        if t == n - 1:
            qv[t] = a
            uv[t] = rv[t] / pv[t]
        else:
            b = -s2[k + 1]
            qv[t] = a - b * b / qv[t + 1]
            uv[t] = (rv[t] - b * uv[t + 1]) / pv[t]
    best = -1e300
    kbest = k0
    for k in range(max(k0 - 2, lo), min(k1 + 2, hi - 1) + 1):
        t = k - lo
        a = pois + s2[k] + s2[k + 1]
        u = uv[t]
        stat = u * abs(u) * (pv[t] + qv[t] - a)
        rv[t] = stat
        if k0 <= k <= k1 and stat > best:
            best = stat
            kbest = k
    # odds that the step lies at a neighbouring gap instead (flat prior, likelihood
    # ratios); farther gaps are other steps, not other positions of this one
    odds = 0.0
    for k in range(max(kbest - 2, lo), min(kbest + 2, hi - 1) + 1):
        if k != kbest:
            odds += np.exp(0.5 * (min(rv[k - lo], best) - best))
    # the likelier adjacent gap (-1 if none in the segment)
    knext = -1
    if kbest - 1 >= max(k0 - 2, lo):
        knext = kbest - 1
    if kbest + 1 <= min(k1 + 2, hi - 1) and (knext < 0 or rv[kbest + 1 - lo] > rv[knext - lo]):
        knext = kbest + 1
    return kbest, odds, knext


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

    Jumps located to one gap count in ncr; one that cannot be (see LOC_ODDS) is flagged
    at its two likeliest adjacent gaps, both marked ``ws[12, k] = 1`` (not reported).
    Returns (ncr, mu, var_mu, n_used, nflag): rate (DN/read) with its GLS variance over the n_used
    differences; nflag: flagged gaps (located jumps + up to 2 per unlocated one).

    ``ws``: float64 scratch [13, max(nread, MAX_WINDOW) + 1].
    """
    nd = m - 1
    for k in range(nd):
        flagged[k] = False
    if nd < 1:
        return 0, 0.0, 0.0, 0, 0
    d, buf, cp, dp, cy, cs, seg_hi = ws[0], ws[1], ws[2], ws[3], ws[4], ws[5], ws[6]
    invq, wq, rej, amb = ws[7], ws[8], ws[11], ws[12]
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
        rej[k] = 0.0
        amb[k] = 0.0
    ncr = 0
    nflag = 0
    nrej = 0
    thr2 = thr * thr
    mu, var_mu, nu = _rate(y, s2, d, flagged, nd, s2mean, gain, buf, use, cp, dp)
    if nd < 3:
        return 0, mu, var_mu, nu, 0
    # each pass flags a gap or rejects at least one more: bounded, the cap is a guard
    for _ in range(4 * nd):
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
        nhi = 0  # gaps above thr: after a rejection only they are searched again
        for k in range(nd):
            if flagged[k]:
                lo = k + 1
                continue
            if rej[k] != 0.0:
                continue
            z = _step_z2(cy, cs, k, lo, int(seg_hi[k]), w, mu, pois, var_mu, invq, wq)
            if z > thr2:
                nhi += 1
            if z > zmax:
                zmax = z
                kmax = k
                kmax_lo = lo
        # screen at thr/2 (the confirmation refits the rate, which can raise z); after a
        # rejection only candidates above thr itself go on (a weaker one would be noise)
        if kmax < 0 or zmax <= (0.25 if nrej == 0 else 1.0) * thr * thr:
            break
        kmax_hi = int(seg_hi[kmax])
        rej[kmax] = 1.0
        knext = -1
        odds = 0.0
        # the rate fitted without the candidate gap: a hit left inside the rate fit
        # biases the rate and hides itself
        used = use[kmax]
        use[kmax] = False
        mu2, var2 = _gls_rate(y, s2, nd, use, pois, cp, dp)
        if w > 1:
            # quick veto (bounds the test below): no window over the candidate passes
            z2 = -1e300
            for k in range(max(kmax_lo, kmax - w + 1), min(kmax_hi, kmax + w)):
                z2 = max(z2, _step_z(cy, cs, k, kmax_lo, kmax_hi, w, mu2, pois, var2))
            if z2 <= thr:
                use[kmax] = used
                nrej += 1
                if nhi - (zmax > thr2) <= 0:
                    break
                continue
            # a w-read window blurs the position: take the maximum-likelihood gap nearby
            k0 = kmax
            # (on the reads within 3w of it: farther ones hardly move the comparison)
            kmax, odds, knext = _locate(y, s2, max(kmax_lo, kmax - 3 * w), min(kmax_hi, kmax + 3 * w + 1),
                                        kmax - w, kmax + w, mu, pois, cp, dp, ws[9], ws[10])
            if kmax != k0:
                use[k0] = used
                used = use[kmax]
                use[kmax] = False
                mu2, var2 = _gls_rate(y, s2, nd, use, pois, cp, dp)
        # confirm at that gap alone (no look-elsewhere: one test per gap, as a
        # two-point test)
        if _step_z(cy, cs, kmax, kmax_lo, kmax_hi, w, mu2, pois, var2) <= thr:
            # not a jump: never a candidate again (until a jump changes the windows)
            use[kmax] = used
            rej[kmax] = 1.0
            nrej += 1
            if nhi - (zmax > thr2) <= 0:
                break
            continue
        flagged[kmax] = True
        nflag += 1
        if odds > LOC_ODDS and _step_z(cy, cs, kmax, kmax_lo, kmax_hi, 1, mu2, pois, var2) <= thr:
            # a jump the ramp cannot pin to one gap (and that fails the two-point test):
            # reporting it at the wrong read would be a false detection, so it is not
            # reported (amb), but the fit drops the read between it and the likelier
            # adjacent gap, so the slope is right wherever it was
            amb[kmax] = 1.0
            if knext >= 0:
                flagged[knext] = True
                nflag += 1
                amb[knext] = 1.0
        else:
            ncr += 1
        for k in range(nd):
            rej[k] = 0.0
        nrej = 0
        mu, var_mu, nu = _rate(y, s2, d, flagged, nd, s2mean, gain, buf, use, cp, dp)
    return ncr, mu, var_mu, nu, nflag


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
    ws = np.empty((13, max(nread, MAX_WINDOW) + 1))
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
            ncr, mu, var_mu, nu, nflag = _detect_pixel(y, s2, m, g, thr, flagged, use, ws)
            if nflag > 0:
                st |= ST_CR
                for k in range(m - 1):
                    if flagged[k] and ws[12, k] == 0.0:
                        cr[i, k + 1, p] = True
            ncr_out[i, p] = ncr
            if nflag == 0 and nu == m - 1 and m >= min_reads and m >= 3:
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
