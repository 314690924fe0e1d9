"""numba kernels behind data.indicators' batch functions, imported only when one is needed.

Importing numba and loading its compiled kernels costs ~0.3 s and ~110 MB (LLVM); a backtest
that uses only ``sma`` and ``crossover`` on price data never needs them (data.indicators has
numpy forms of those). The definitions, and why each is exact, are in data/indicators.py.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_NPARTIALS = 64  # fixed capacity of the exact-sum partials (prices need 2-4)
_jit = numba.njit(cache=True, error_model="numpy")  # IEEE x/0, compiled once per machine
_inline = numba.njit(cache=True, error_model="numpy", inline="always")  # hot inner helpers


# ----------------------------------------------------------------------------------------
# Exact sums (CPython math.fsum, Modules/mathmodule.c) usable in a rolling window
# ----------------------------------------------------------------------------------------


@_inline
def _grow(p, m, x):
    """Add finite x exactly to the m partials p (Shewchuk); new count, or -1 on overflow.

    Knuth's branch-free TwoSum gives the same hi/lo as fsum's ordered FastTwoSum (the
    rounding error of x + y is unique), and zero elimination is branch-free too: speed.
    """
    i = 0
    for j in range(m):
        y = p[j]
        hi = x + y
        b = hi - x
        lo = (x - (hi - b)) + (y - b)
        p[i] = lo
        i += int(lo != 0.0)
        x = hi
    if x != 0.0:
        if not math.isfinite(x) or i >= p.shape[0]:
            return -1
        p[i] = x
        i += 1
    return i


@_inline
def _round(p, m):
    """Nearest double to the exact sum of partials p[:m] (fsum's tail with its half-way fix)."""
    if m <= 0:
        return 0.0
    n = m - 1
    hi = p[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = p[n]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        if y == x - hi:
            hi = x
    return hi


@_inline
def _push(p, m, cnt, v, d):
    """Add d*v (d=+1 entering, -1 leaving) to the partials, or count it as NaN/+inf/-inf."""
    if math.isfinite(v):
        return _grow(p, m, v * d) if m >= 0 else m
    cnt[0 if v != v else (1 if v > 0.0 else 2)] += d
    return m


@_inline
def _has_special(cnt):
    """True if the window holds a NaN or an infinity (counts cnt = [NaN, +inf, -inf])."""
    return cnt[0] > 0 or cnt[1] > 0 or cnt[2] > 0


@_inline
def _special(cnt):
    """fsum of a window with NaN/inf: NaN (also +inf with -inf, where fsum raises), else +-inf."""
    if cnt[0] > 0 or (cnt[1] > 0 and cnt[2] > 0):
        return np.nan
    return np.inf if cnt[1] > 0 else -np.inf


@_inline
def _finish(p, m, cnt):
    """Window sum from its partials and special counts (NaN where fsum would raise)."""
    if _has_special(cnt):
        return _special(cnt)
    return np.nan if m < 0 else _round(p, m)


@_jit
def _sum_slice(x, lo, hi):
    """math.fsum(x[lo:hi]) under the special-value rules above, from fresh partials."""
    p = np.empty(_NPARTIALS)
    cnt = np.zeros(3, np.int64)
    m = 0
    for i in range(lo, hi):
        m = _push(p, m, cnt, x[i], 1)
    return _finish(p, m, cnt)


@_jit
def _rolling_mean_partials(x, n):
    """fsum(x[t-n+1..t]) / n for every full window in O(N): add x[t], add -x[t-n], round."""
    N = x.shape[0]
    out = np.full(N, np.nan)
    p = np.empty(_NPARTIALS)
    cnt = np.zeros(3, np.int64)
    m = 0
    for t in range(N):
        m = _push(p, m, cnt, x[t], 1)
        if t >= n:
            m = _push(p, m, cnt, x[t - n], -1)
        if t >= n - 1:
            if m < 0 and not _has_special(cnt):
                m = 0  # the partials overflowed earlier: rebuild this all-finite window
                for i in range(t - n + 1, t + 1):
                    m = _push(p, m, cnt, x[i], 1)
            out[t] = _finish(p, m, cnt) / n
    return out


_SPLIT = 40  # fixed-point sums split at 2**40: low part sums stay < 2**63 for n < 2**22
_NO_GRID = 1 << 20


@_jit
def _fixed_grid(x, n):
    """Exponent e with every finite x an integer multiple of 2**e and every window sum, cut
    at 2**(e + 40), held exactly in two int64 (high part < 2**52); _NO_GRID if none."""
    bits = x.view(np.int64)
    lo = 2047
    hi = 0
    for b in bits:
        f = (b >> 52) & 0x7FF
        if f == 0x7FF:
            continue  # NaN/inf: counted apart
        if f == 0:
            if b & 0xFFFFFFFFFFFFF:
                return _NO_GRID  # subnormal
            continue  # +-0.0
        lo = min(lo, f)
        hi = max(hi, f)
    if hi == 0:
        return 0
    e = lo - 1075  # ulp of the smallest magnitude
    top = hi - 1022  # every |x| < 2**top
    w = 0
    while (1 << w) <= n + 1:
        w += 1  # bits to hold n + 1 terms
    if e < -1022 or n + 1 >= 1 << 22 or top - e - _SPLIT + w > 52 or top + w > 1023:
        return _NO_GRID
    return e


@_inline
def _fixed_push(v, d, sa, sb, cnt, s1, w1, s0):
    """Add d*v (d=+1 entering, -1 leaving) to the fixed-point sums, or count it as special."""
    if math.isfinite(v):
        a = int(v * s1)
        return sa + d * a, sb + d * int((v - a * w1) * s0)
    cnt[0 if v != v else (1 if v > 0.0 else 2)] += d
    return sa, sb


@_jit
def _rolling_mean_fixed(x, n, e):
    """``_rolling_mean`` in exact int64 fixed point on the grid 2**e (fast: no FP chain).

    x = a * 2**(e+40) + b * 2**e exactly (a = trunc, |b| < 2**40); the window sum is
    A * 2**(e+40) + B * 2**e; after carrying B into A both parts are exact doubles, so one
    IEEE addition is the correctly rounded sum, i.e. exactly math.fsum.
    """
    N = x.shape[0]
    out = np.full(N, np.nan)
    w1 = math.ldexp(1.0, e + _SPLIT)
    s1 = math.ldexp(1.0, -(e + _SPLIT))
    w0 = math.ldexp(1.0, e)
    s0 = math.ldexp(1.0, -e)
    cnt = np.zeros(3, np.int64)
    sa = 0
    sb = 0
    for t in range(N):
        sa, sb = _fixed_push(x[t], 1, sa, sb, cnt, s1, w1, s0)
        if t >= n:
            sa, sb = _fixed_push(x[t - n], -1, sa, sb, cnt, s1, w1, s0)
        if t >= n - 1:
            if _has_special(cnt):
                out[t] = _special(cnt) / n
            else:
                c = sb >> _SPLIT
                out[t] = (float(sa + c) * w1 + float(sb - (c << _SPLIT)) * w0) / n
    return out


@_jit
def _rolling_mean(x, n):
    """fsum(x[t-n+1..t]) / n for each full window: fixed-point path when the data fits a
    grid (prices do), else rolling Shewchuk partials. Both are exact, so they agree."""
    e = _fixed_grid(x, n)
    if e != _NO_GRID:
        return _rolling_mean_fixed(x, n, e)
    return _rolling_mean_partials(x, n)


# ----------------------------------------------------------------------------------------
# Batch kernels
# ----------------------------------------------------------------------------------------


@_jit
def _first_valid(x):
    """Index of the first non-NaN value of x, or -1: where a recursive indicator starts."""
    for i in range(x.shape[0]):
        if x[i] == x[i]:
            return i
    return -1


@_jit
def _smooth(src, start, n, alpha, alpha1):
    """backtrader ExponentialSmoothing of src from index start: exact mean seed, then recursion."""
    N = src.shape[0]
    out = np.full(N, np.nan)
    seed = start + n - 1
    if start < 0 or seed >= N:
        return out
    prev = _sum_slice(src, start, seed + 1) / n
    out[seed] = prev
    for t in range(seed + 1, N):
        prev = prev * alpha1 + src[t] * alpha
        out[t] = prev
    return out


@_jit
def _ema_k(x, n, alpha, alpha1):
    """EMA kernel: smoothing started at the first valid value."""
    return _smooth(x, _first_valid(x), n, alpha, alpha1)


@_jit
def _rsi_k(c, n, alpha, alpha1):
    """RSI kernel: Wilder-smoothed up/down moves, rs with backtrader's safediv values."""
    N = c.shape[0]
    s = _first_valid(c)
    up = np.full(N, np.nan)
    dn = np.full(N, np.nan)
    if s >= 0:
        for t in range(s + 1, N):
            d = c[t] - c[t - 1]
            e = c[t - 1] - c[t]
            up[t] = 0.0 if 0.0 > d else d  # Python max(d, 0.0)
            dn[t] = 0.0 if 0.0 > e else e
    start = s + 1 if s >= 0 else -1
    maup = _smooth(up, start, n, alpha, alpha1)
    madn = _smooth(dn, start, n, alpha, alpha1)
    out = np.empty(N)
    for t in range(N):
        a = maup[t]
        b = madn[t]
        if b == 0.0:
            rs = 1.0 if a == 0.0 else np.inf
        else:
            rs = a / b
        out[t] = 100.0 - 100.0 / (1.0 + rs)
    return out


@_jit
def _atr_k(h, l, c, n, alpha, alpha1):
    """ATR kernel: true range against the previous close, Wilder-smoothed."""
    N = c.shape[0]
    s = -1
    for i in range(N):
        if h[i] == h[i] and l[i] == l[i] and c[i] == c[i]:
            s = i
            break
    tr = np.full(N, np.nan)
    if s >= 0:
        for t in range(s + 1, N):
            pc = c[t - 1]
            th = pc if pc > h[t] else h[t]  # Python max(high, prev_close)
            tl = pc if pc < l[t] else l[t]  # Python min(low, prev_close)
            tr[t] = th - tl
    return _smooth(tr, s + 1 if s >= 0 else -1, n, alpha, alpha1)


@_jit
def _macd_k(c, fast, slow, signal, af, af1, as_, as1, ag, ag1):
    """MACD kernel: EMA(fast) - EMA(slow), its EMA(signal), and their difference."""
    s = _first_valid(c)
    m = _smooth(c, s, fast, af, af1) - _smooth(c, s, slow, as_, as1)
    mstart = s + max(fast, slow) - 1 if s >= 0 else -1
    sig = _smooth(m, mstart, signal, ag, ag1)
    return m, sig, m - sig


@_jit
def _std_k(x, n, two, half):
    """Mean and backtrader StdDev pow(|mean(pow(x, 2)) - pow(mean, 2)|, 0.5) of each window.

    two=2.0 and half=0.5 arrive at run time so that LLVM calls libm pow, as CPython (hence
    backtrader) does, instead of folding it into x*x and sqrt, which differ in the last bit.
    """
    N = x.shape[0]
    sq = np.empty(N)
    for i in range(N):
        sq[i] = x[i] ** two
    mean = _rolling_mean(x, n)
    meansq = _rolling_mean(sq, n)
    sd = np.empty(N)
    for i in range(N):
        sd[i] = abs(meansq[i] - mean[i] ** two) ** half
    return mean, sd


@_jit
def _bollinger_k(x, n, k, two, half):
    """Bollinger kernel: SMA mid, mid +/- (k * StdDev)."""
    mid, sd = _std_k(x, n, two, half)
    dev = k * sd
    return mid, mid + dev, mid - dev


@_jit
def _extreme_k(x, n, want_max):
    """Max (or min) of each full window in O(N) with a monotonic deque; NaN if it holds a NaN."""
    N = x.shape[0]
    out = np.full(N, np.nan)
    q = np.empty(N, np.int64)  # q[head:tail]: indices of decreasing (increasing) values
    head = 0
    tail = 0
    lastnan = -n - 1
    for t in range(N):
        v = x[t]
        if head < tail and q[head] <= t - n:
            head += 1
        if v != v:
            lastnan = t
        else:
            while tail > head and ((x[q[tail - 1]] <= v) if want_max else (x[q[tail - 1]] >= v)):
                tail -= 1
            q[tail] = t
            tail += 1
        if t >= n - 1 and t - lastnan >= n:
            out[t] = x[q[head]]
    return out


@_jit
def _roc_k(x, n):
    """ROC kernel: (x[t] - x[t-n]) / x[t-n]."""
    N = x.shape[0]
    out = np.full(N, np.nan)
    for t in range(n, N):
        out[t] = (x[t] - x[t - n]) / x[t - n]
    return out


