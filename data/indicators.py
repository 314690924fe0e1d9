"""Technical indicators in two bit-identical forms: numba batch kernels and streaming classes.

Batch functions (``sma(x, n)`` ...) take whole float64 arrays and are computed once before a
backtest; streaming classes (``SMA(n).update(x)`` ...) take one bar at a time in live
trading. Both give the same float64 values bit for bit, and value ``t`` depends only on
inputs ``0..t``. Definitions follow backtrader (1.9.78) exactly, in the same float
operation order, so that backtests agree with it to the last bit:

- Windowed sums are ``math.fsum`` (correctly rounded) divided once by ``n``, so equal
  windows give equal SMAs and crossover ties are detected exactly as backtrader does. The
  batch kernel is O(N): an exact int64 fixed-point rolling sum when the data fit one
  binary grid (prices do), else a rolling Shewchuk partials sum (CPython's fsum algorithm).
- StdDev squares and roots with libm ``pow`` as backtrader (CPython) does, not x*x / sqrt.
- Output is NaN while warming up. Leading NaNs in an input mean "no data yet" (as
  backtrader's minimum period): recursive indicators start at the first valid bar.
  A NaN after that propagates as in backtrader (forever for recursive indicators, ``n``
  bars for windowed ones). ``crossover`` is 0.0, not NaN, where it has no signal.
- A window holding NaN, or both +inf and -inf, sums to NaN; +inf (-inf) alone sums to
  +inf (-inf). Finite windows whose running sum overflows (|sum| near 1.8e308) are out of
  contract: ``math.fsum`` raises there, and the forms may then give NaN or the mean.
- Divisions by zero give IEEE results (inf/NaN) instead of raising, except RSI which uses
  backtrader's ``safediv`` values (100 for x/0, 50 for 0/0) where backtrader would raise.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

__all__ = [
    "ATR", "EMA", "INDICATORS", "MACD", "ROC", "RSI", "SMA", "Bollinger", "CrossOver",
    "Highest", "IndicatorSpec", "Lowest", "RollingStd", "atr", "bollinger", "crossover",
    "ema", "highest", "lowest", "macd", "roc", "rolling_std", "rsi", "sma",
]

NAN = math.nan
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


def _fsum(vals: Iterable[float]) -> float:
    """Streaming twin of ``_sum_slice``: math.fsum, NaN/inf decided by counts, NaN on overflow."""
    vals = list(vals)
    try:
        return math.fsum(vals)
    except (OverflowError, ValueError):
        nan = any(v != v for v in vals)
        pinf, ninf = math.inf in vals, -math.inf in vals
        if nan or (pinf and ninf):
            return NAN
        return math.inf if pinf else (-math.inf if ninf else NAN)


def _div(a: float, b: float) -> float:
    """IEEE a / b (inf or NaN on division by zero) like the numba kernels, never raising."""
    if b == 0.0:
        if a != a or a == 0.0:
            return NAN
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


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


@_jit
def _cross_k(a, b):
    """CrossOver kernel: +1/-1 when a crosses b against the last non-zero difference."""
    N = a.shape[0]
    out = np.zeros(N)
    s = -1
    for i in range(N):
        if a[i] == a[i] and b[i] == b[i]:
            s = i
            break
    if s < 0:
        return out
    prev = a[s] - b[s]
    for t in range(s + 1, N):
        if prev < 0.0 and a[t] > b[t]:
            out[t] = 1.0
        elif prev > 0.0 and a[t] < b[t]:
            out[t] = -1.0
        d = a[t] - b[t]
        if d != 0.0:
            prev = d
    return out


# ----------------------------------------------------------------------------------------
# Public batch functions (validate, then call the kernels)
# ----------------------------------------------------------------------------------------


def _arr(x: Any) -> np.ndarray:
    """Input as a contiguous 1-D float64 array, so each kernel compiles for one signature."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"indicator input must be 1-D, got shape {a.shape}")
    return a


def _period(n: Any, name: str = "n") -> int:
    """A window length as int >= 1."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def _ema_alpha(n: int) -> tuple[float, float]:
    """backtrader EMA factors: alpha = 2 / (1 + n), alpha1 = 1 - alpha."""
    a = 2.0 / (1.0 + n)
    return a, 1.0 - a


def _wilder_alpha(n: int) -> tuple[float, float]:
    """backtrader SmoothedMovingAverage factors: alpha = 1 / n, alpha1 = 1 - alpha."""
    a = 1.0 / n
    return a, 1.0 - a


def sma(x: Any, n: int) -> np.ndarray:
    """Simple moving average, exactly math.fsum(window) / n (backtrader SMA, ties exact)."""
    return _rolling_mean(_arr(x), _period(n))


def ema(x: Any, n: int) -> np.ndarray:
    """Exponential moving average, alpha 2/(n+1), seeded with the SMA of the first n values."""
    n = _period(n)
    return _ema_k(_arr(x), n, *_ema_alpha(n))


def rsi(close: Any, n: int = 14) -> np.ndarray:
    """Wilder RSI (backtrader RSI, SMMA of up/down moves); first value at index n."""
    n = _period(n)
    return _rsi_k(_arr(close), n, *_wilder_alpha(n))


def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Average true range (backtrader ATR, Wilder smoothing); first value at index n."""
    n = _period(n)
    h, l, c = _arr(high), _arr(low), _arr(close)
    if not len(h) == len(l) == len(c):
        raise ValueError("high, low and close must have the same length")
    return _atr_k(h, l, c, n, *_wilder_alpha(n))


def macd(close: Any, fast: int = 12, slow: int = 26,
         signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """backtrader MACD(Histo): (ema(fast) - ema(slow), its ema(signal), macd - signal)."""
    fast, slow, signal = _period(fast, "fast"), _period(slow, "slow"), _period(signal, "signal")
    return _macd_k(_arr(close), fast, slow, signal,
                   *_ema_alpha(fast), *_ema_alpha(slow), *_ema_alpha(signal))


def rolling_std(x: Any, n: int) -> np.ndarray:
    """Population std of each window (backtrader StdDev): |mean(x**2) - mean(x)**2| ** 0.5."""
    return _std_k(_arr(x), _period(n), 2.0, 0.5)[1]


def bollinger(close: Any, n: int = 20,
              k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """backtrader BollingerBands: (mid=SMA, upper=mid + k*std, lower=mid - k*std)."""
    return _bollinger_k(_arr(close), _period(n), float(k), 2.0, 0.5)


def highest(x: Any, n: int) -> np.ndarray:
    """Max of the last n values (backtrader Highest); NaN if the window holds a NaN."""
    return _extreme_k(_arr(x), _period(n), True)


def lowest(x: Any, n: int) -> np.ndarray:
    """Min of the last n values (backtrader Lowest); NaN if the window holds a NaN."""
    return _extreme_k(_arr(x), _period(n), False)


def roc(x: Any, n: int) -> np.ndarray:
    """Rate of change (x[t] - x[t-n]) / x[t-n] (backtrader ROC, a ratio, not percent)."""
    return _roc_k(_arr(x), _period(n))


def crossover(a: Any, b: Any) -> np.ndarray:
    """backtrader CrossOver(a, b): +1.0 a crosses above b, -1.0 below, else 0.0."""
    a, b = _arr(a), _arr(b)
    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    return _cross_k(a, b)


# ----------------------------------------------------------------------------------------
# Streaming forms: same float operations, one bar at a time
# ----------------------------------------------------------------------------------------


class _Smoother:
    """Streaming twin of ``_smooth``: exact-mean seed over the first n values, then recursion."""

    __slots__ = ("n", "alpha", "alpha1", "_seed", "value")

    def __init__(self, n: int, alpha: float, alpha1: float) -> None:
        self.n, self.alpha, self.alpha1 = n, alpha, alpha1
        self._seed: list[float] | None = []
        self.value = NAN

    @property
    def ready(self) -> bool:
        """True once the seed has been produced."""
        return self._seed is None

    def update(self, v: float) -> float:
        """Feed one value; the smoothed value (NaN until n values were fed)."""
        if self._seed is not None:
            self._seed.append(v)
            if len(self._seed) < self.n:
                return NAN
            self.value = _fsum(self._seed) / self.n
            self._seed = None
        else:
            self.value = self.value * self.alpha1 + v * self.alpha
        return self.value


class SMA:
    """Streaming simple moving average: math.fsum of the last n values / n."""

    def __init__(self, n: int) -> None:
        self.n = _period(n)
        self._w: deque[float] = deque(maxlen=self.n)

    def update(self, x: float) -> float:
        """Add one value; the SMA (NaN until n values)."""
        self._w.append(float(x))
        return _fsum(self._w) / self.n if len(self._w) == self.n else NAN


class EMA:
    """Streaming EMA (starts at the first non-NaN value)."""

    def __init__(self, n: int) -> None:
        self.n = _period(n)
        self._sm = _Smoother(self.n, *_ema_alpha(self.n))
        self._started = False

    @property
    def ready(self) -> bool:
        """True once the EMA has its seed value."""
        return self._sm.ready

    def update(self, x: float) -> float:
        """Add one value; the EMA (NaN during warm-up)."""
        x = float(x)
        if not self._started:
            if x != x:
                return NAN
            self._started = True
        return self._sm.update(x)


def _rsi_value(a: float, b: float) -> float:
    """RSI from smoothed up a and down b, with backtrader's safediv values at b == 0."""
    rs = (1.0 if a == 0.0 else math.inf) if b == 0.0 else a / b
    return 100.0 - 100.0 / (1.0 + rs)


class RSI:
    """Streaming Wilder RSI."""

    def __init__(self, n: int = 14) -> None:
        self.n = _period(n)
        self._up = _Smoother(self.n, *_wilder_alpha(self.n))
        self._dn = _Smoother(self.n, *_wilder_alpha(self.n))
        self._prev: float | None = None

    def update(self, close: float) -> float:
        """Add one close; the RSI (NaN for the first n bars)."""
        c = float(close)
        if self._prev is None:
            if c == c:
                self._prev = c
            return NAN
        p, self._prev = self._prev, c
        d, e = c - p, p - c
        a = self._up.update(0.0 if 0.0 > d else d)
        b = self._dn.update(0.0 if 0.0 > e else e)
        return _rsi_value(a, b)


class ATR:
    """Streaming average true range."""

    def __init__(self, n: int = 14) -> None:
        self.n = _period(n)
        self._sm = _Smoother(self.n, *_wilder_alpha(self.n))
        self._pc: float | None = None

    def update(self, high: float, low: float, close: float) -> float:
        """Add one bar; the ATR (NaN for the first n bars)."""
        h, l, c = float(high), float(low), float(close)
        if self._pc is None:
            if h == h and l == l and c == c:
                self._pc = c
            return NAN
        pc, self._pc = self._pc, c
        th = pc if pc > h else h
        tl = pc if pc < l else l
        return self._sm.update(th - tl)


class MACD:
    """Streaming MACD: update(close) -> (macd, signal, hist)."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        fast, slow = _period(fast, "fast"), _period(slow, "slow")
        self._f, self._s = EMA(fast), EMA(slow)
        sig = _period(signal, "signal")
        self._sig = _Smoother(sig, *_ema_alpha(sig))

    def update(self, close: float) -> tuple[float, float, float]:
        """Add one close; (macd, signal, hist), NaN while warming up."""
        f, s = self._f.update(close), self._s.update(close)
        if not (self._f.ready and self._s.ready):
            return NAN, NAN, NAN
        m = f - s
        g = self._sig.update(m)
        return m, g, m - g


def _pow(x: float, y: float) -> float:
    """C pow(x, y) as CPython computes x ** y, but inf instead of OverflowError (IEEE)."""
    try:
        return x ** y
    except OverflowError:
        return math.inf


def _std_of(w: deque[float], n: int) -> tuple[float, float]:
    """(mean, backtrader StdDev) of a full window, same operations as ``_std_k``."""
    mean = _fsum(w) / n
    meansq = _fsum(_pow(v, 2.0) for v in w) / n
    return mean, _pow(abs(meansq - _pow(mean, 2.0)), 0.5)


class RollingStd:
    """Streaming population std (backtrader StdDev)."""

    def __init__(self, n: int) -> None:
        self.n = _period(n)
        self._w: deque[float] = deque(maxlen=self.n)

    def update(self, x: float) -> float:
        """Add one value; the std (NaN until n values)."""
        self._w.append(float(x))
        return _std_of(self._w, self.n)[1] if len(self._w) == self.n else NAN


class Bollinger:
    """Streaming Bollinger bands: update(close) -> (mid, upper, lower)."""

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        self.n, self.k = _period(n), float(k)
        self._w: deque[float] = deque(maxlen=self.n)

    def update(self, close: float) -> tuple[float, float, float]:
        """Add one close; (mid, upper, lower), NaN until n values."""
        self._w.append(float(close))
        if len(self._w) < self.n:
            return NAN, NAN, NAN
        mid, sd = _std_of(self._w, self.n)
        dev = self.k * sd
        return mid, mid + dev, mid - dev


class _Extreme:
    """Streaming max/min of the last n values (NaN if any is NaN)."""

    _fn: Callable[[Iterable[float]], float] = max  # builtins do not bind as methods

    def __init__(self, n: int) -> None:
        self.n = _period(n)
        self._w: deque[float] = deque(maxlen=self.n)

    def update(self, x: float) -> float:
        """Add one value; the window extreme (NaN until n values)."""
        self._w.append(float(x))
        if len(self._w) < self.n or any(v != v for v in self._w):
            return NAN
        return self._fn(self._w)


class Highest(_Extreme):
    """Streaming highest of the last n values."""

    _fn = max


class Lowest(_Extreme):
    """Streaming lowest of the last n values."""

    _fn = min


class ROC:
    """Streaming rate of change over n bars."""

    def __init__(self, n: int) -> None:
        self.n = _period(n)
        self._w: deque[float] = deque(maxlen=self.n + 1)

    def update(self, x: float) -> float:
        """Add one value; (x - x[-n]) / x[-n] (NaN for the first n values)."""
        self._w.append(float(x))
        if len(self._w) <= self.n:
            return NAN
        old = self._w[0]
        return _div(self._w[-1] - old, old)


class CrossOver:
    """Streaming backtrader CrossOver: update(a, b) -> +1.0 / -1.0 / 0.0."""

    def __init__(self) -> None:
        self._prev: float | None = None  # last non-zero a - b, None before the seed

    def update(self, a: float, b: float) -> float:
        """Add one pair; the cross signal of this bar."""
        a, b = float(a), float(b)
        if self._prev is None:
            if a == a and b == b:
                self._prev = a - b
            return 0.0
        p = self._prev
        out = 1.0 if (p < 0.0 and a > b) else (-1.0 if (p > 0.0 and a < b) else 0.0)
        d = a - b
        if d != 0.0:
            self._prev = d
        return out


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndicatorSpec:
    """How to build one indicator by name: ``batch(*inputs, **params)`` or ``stream(**params)``.

    ``inputs`` names the series to pass, in order (bar fields, or ``a``/``b`` for crossover);
    ``outputs`` names the returned arrays/values (one name: a single array/float).
    """

    name: str
    batch: Callable[..., Any]
    stream: type
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def n_outputs(self) -> int:
        """Number of output series."""
        return len(self.outputs)

    def compute(self, columns: Mapping[str, Any], **params: Any) -> Any:
        """Batch values from a mapping of input name -> array, defaults overridden by params."""
        return self.batch(*(columns[f] for f in self.inputs), **{**self.defaults, **params})

    def new_stream(self, **params: Any) -> Any:
        """A fresh streaming instance, defaults overridden by params."""
        return self.stream(**{**self.defaults, **params})


def _spec(name: str, batch: Callable[..., Any], stream: type, inputs: tuple[str, ...],
          outputs: tuple[str, ...], **defaults: Any) -> tuple[str, IndicatorSpec]:
    """Registry entry helper."""
    return name, IndicatorSpec(name, batch, stream, inputs, outputs, defaults)


# Defaults are backtrader's (SMA/EMA 30, RSI/ATR 14, MACD 12/26/9, BBands 20/2, StdDev 20,
# ROC 12) except Highest/Lowest, whose backtrader default period of 1 is useless (20 here).
INDICATORS: dict[str, IndicatorSpec] = dict([
    _spec("sma", sma, SMA, ("close",), ("sma",), n=30),
    _spec("ema", ema, EMA, ("close",), ("ema",), n=30),
    _spec("rsi", rsi, RSI, ("close",), ("rsi",), n=14),
    _spec("atr", atr, ATR, ("high", "low", "close"), ("atr",), n=14),
    _spec("macd", macd, MACD, ("close",), ("macd", "signal", "hist"), fast=12, slow=26, signal=9),
    _spec("bollinger", bollinger, Bollinger, ("close",), ("mid", "upper", "lower"), n=20, k=2.0),
    _spec("rolling_std", rolling_std, RollingStd, ("close",), ("std",), n=20),
    _spec("highest", highest, Highest, ("close",), ("highest",), n=20),
    _spec("lowest", lowest, Lowest, ("close",), ("lowest",), n=20),
    _spec("roc", roc, ROC, ("close",), ("roc",), n=12),
    _spec("crossover", crossover, CrossOver, ("a", "b"), ("crossover",)),
])
