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
- The kernels live in data/kernels.py and are compiled by numba; numba is imported only when
  one is called. ``sma`` on grid data and ``crossover`` have numpy forms (the same integer and
  float operations, vectorised), so a backtest using only those never loads numba (~0.3 s and
  ~110 MB of LLVM).
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

import numpy as np

__all__ = [
    "ATR", "EMA", "INDICATORS", "MACD", "ROC", "RSI", "SMA", "Bollinger", "CrossOver",
    "Highest", "IndicatorSpec", "Lowest", "RollingStd", "atr", "bollinger", "crossover",
    "ema", "highest", "lowest", "macd", "roc", "rolling_std", "rsi", "sma",
]

NAN = math.nan
_SPLIT = 40  # as data.kernels._SPLIT: fixed-point sums split at 2**40


def _nb():
    """data.kernels (numba), imported on first use."""
    from tradeloop.data import kernels
    return kernels


def __getattr__(name: str) -> Any:
    """The numba kernels by their old names here (``_sum_slice``, ``_rolling_mean_fixed``...)."""
    if name.startswith("_") and not name.startswith("__"):
        k = _nb()
        if hasattr(k, name):
            return getattr(k, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------
# numpy forms of the fixed-point SMA and of crossover (bit-identical to the kernels)
# ----------------------------------------------------------------------------------------


def _grid(x: np.ndarray, n: int) -> int | None:
    """kernels._fixed_grid, vectorised: the exponent e of the fixed-point grid, or None if none fits."""
    bits = x.view(np.int64)
    f = (bits >> 52) & 0x7FF
    if ((f == 0) & ((bits & 0xFFFFFFFFFFFFF) != 0)).any():
        return None  # subnormal
    normal = (f != 0) & (f != 0x7FF)
    if not normal.any():
        return 0
    lo = int(np.where(normal, f, 2047).min())
    hi = int(np.where(normal, f, 0).max())
    e = lo - 1075
    top = hi - 1022
    w = (n + 1).bit_length()  # bits to hold n + 1 terms
    if e < -1022 or n + 1 >= 1 << 22 or top - e - _SPLIT + w > 52 or top + w > 1023:
        return None
    return e


def _window(c: np.ndarray, n: int) -> np.ndarray:
    """Turn a cumulative sum into the sums of every full window of n (rows n-1..), in place.

    numpy computes an overlapping in-place ufunc as if from a copy of its input; int64 wraps,
    and the wrap cancels out in the difference when the true window sum fits.
    """
    c[n:] -= c[:-n]
    return c[n - 1:]


def _rolling_mean_grid(x: np.ndarray, n: int, e: int) -> np.ndarray:
    """kernels._rolling_mean_fixed in numpy: x = a*2**(e+40) + b*2**e in int64, window sums by
    cumsum differences, then one IEEE addition of the two exact parts: the correctly rounded
    sum, i.e. math.fsum. In-place steps: this runs over every series of a backtest."""
    N = len(x)
    out = np.full(N, np.nan)
    if N < n:
        return out
    w1, s1 = math.ldexp(1.0, e + _SPLIT), math.ldexp(1.0, -(e + _SPLIT))
    w0, s0 = math.ldexp(1.0, e), math.ldexp(1.0, -e)
    finite = bool(np.isfinite(x).all())
    v = x if finite else np.where(np.isfinite(x), x, 0.0)
    t = v * s1
    a = t.astype(np.int64)  # truncation, as int() in the kernel
    np.multiply(a, w1, out=t)
    np.subtract(v, t, out=t)
    t *= s0
    b = t.astype(np.int64)
    sa = _window(np.cumsum(a, out=a), n)
    sb = _window(np.cumsum(b, out=b), n)
    c = sb >> _SPLIT
    sa += c
    c <<= _SPLIT
    sb -= c
    res = out[n - 1:]
    np.multiply(sa, w1, out=res)
    part = t[n - 1:]
    np.multiply(sb, w0, out=part)
    res += part
    res /= n
    if not finite:  # windows holding NaN/inf: NaN, or +-inf alone
        nan, pinf, ninf = (_window(np.cumsum(m, dtype=np.int64), n) > 0
                           for m in (np.isnan(x), x == np.inf, x == -np.inf))
        special = np.where(nan | (pinf & ninf), np.nan, np.where(pinf, np.inf, -np.inf)) / n
        np.copyto(res, special, where=nan | pinf | ninf)
    return out


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The crossover in numpy: the sign at t is taken against the last non-zero a - b before t."""
    N = len(a)
    out = np.zeros(N)
    valid = (a == a) & (b == b)
    if not valid.any():
        return out
    s = int(np.argmax(valid))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in the kernel
        d = a - b
    keep = d != 0.0  # NaN counts as non-zero, as in the kernel
    keep[:s] = False
    keep[s] = True  # the seed difference, even if zero
    last = np.maximum.accumulate(np.where(keep, np.arange(N), -1))
    prev = d[last[s:N - 1]]  # for t = s+1..N-1
    at, bt = a[s + 1:], b[s + 1:]
    out[s + 1:] = np.where((prev < 0.0) & (at > bt), 1.0, np.where((prev > 0.0) & (at < bt), -1.0, 0.0))
    return out


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
    x, n = _arr(x), _period(n)
    e = _grid(x, n)
    return _nb()._rolling_mean_partials(x, n) if e is None else _rolling_mean_grid(x, n, e)


def ema(x: Any, n: int) -> np.ndarray:
    """Exponential moving average, alpha 2/(n+1), seeded with the SMA of the first n values."""
    n = _period(n)
    return _nb()._ema_k(_arr(x), n, *_ema_alpha(n))


def rsi(close: Any, n: int = 14) -> np.ndarray:
    """Wilder RSI (backtrader RSI, SMMA of up/down moves); first value at index n."""
    n = _period(n)
    return _nb()._rsi_k(_arr(close), n, *_wilder_alpha(n))


def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Average true range (backtrader ATR, Wilder smoothing); first value at index n."""
    n = _period(n)
    h, l, c = _arr(high), _arr(low), _arr(close)
    if not len(h) == len(l) == len(c):
        raise ValueError("high, low and close must have the same length")
    return _nb()._atr_k(h, l, c, n, *_wilder_alpha(n))


def macd(close: Any, fast: int = 12, slow: int = 26,
         signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """backtrader MACD(Histo): (ema(fast) - ema(slow), its ema(signal), macd - signal)."""
    fast, slow, signal = _period(fast, "fast"), _period(slow, "slow"), _period(signal, "signal")
    return _nb()._macd_k(_arr(close), fast, slow, signal,
                   *_ema_alpha(fast), *_ema_alpha(slow), *_ema_alpha(signal))


def rolling_std(x: Any, n: int) -> np.ndarray:
    """Population std of each window (backtrader StdDev): |mean(x**2) - mean(x)**2| ** 0.5."""
    return _nb()._std_k(_arr(x), _period(n), 2.0, 0.5)[1]


def bollinger(close: Any, n: int = 20,
              k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """backtrader BollingerBands: (mid=SMA, upper=mid + k*std, lower=mid - k*std)."""
    return _nb()._bollinger_k(_arr(close), _period(n), float(k), 2.0, 0.5)


def highest(x: Any, n: int) -> np.ndarray:
    """Max of the last n values (backtrader Highest); NaN if the window holds a NaN."""
    return _nb()._extreme_k(_arr(x), _period(n), True)


def lowest(x: Any, n: int) -> np.ndarray:
    """Min of the last n values (backtrader Lowest); NaN if the window holds a NaN."""
    return _nb()._extreme_k(_arr(x), _period(n), False)


def roc(x: Any, n: int) -> np.ndarray:
    """Rate of change (x[t] - x[t-n]) / x[t-n] (backtrader ROC, a ratio, not percent)."""
    return _nb()._roc_k(_arr(x), _period(n))


def crossover(a: Any, b: Any) -> np.ndarray:
    """backtrader CrossOver(a, b): +1.0 a crosses above b, -1.0 below, else 0.0."""
    a, b = _arr(a), _arr(b)
    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    return _cross(a, b)


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
