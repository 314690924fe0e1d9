"""The predictor's input: 16 features per bar from OHLCV (+ amount), as a declared, hashed spec.

One numba kernel, ``_step``, updates a symbol's state with one bar and writes that bar's 16
features. The batch form (``compute_features``: a whole series, for training and backtests)
loops it over the bars; the streaming forms (``FeatureStream`` for one symbol, ``FeatureBank``
for many, with a ring of the last ``lookback`` rows per symbol) call it bar by bar. Both run the
same float operations in the same order, so they agree bit for bit (property-tested), and row
t reads only bars 0..t. EMA, MACD, RSI and ATR follow ``tradeloop.data.indicators`` exactly (backtrader
definitions, exact ``fsum`` seeds: the kernels reuse its ``_sum_slice``), so those columns equal
expressions over ``tradeloop.data.indicators`` batch values to the last bit (tested).

Features, in column order (c close, o open, h high, l low, v volume, a amount):

==  ==============  ========================================================================
 0  ret_{h1}        log(c_t / c_{t-h1})                       (h1, h2, h3 = horizons: 1, 5, 20)
 1  ret_{h2}        log(c_t / c_{t-h2})
 2  ret_{h3}        log(c_t / c_{t-h3})
 3  range           (h - l) / c
 4  body            (c - o) / (h - l); 0 on a bar with h == l
 5  volume_z        z-score of log1p(v) in the last ``window`` bars (0 when they are all equal)
 6  volume_change   log1p(v_t) - log1p(v_{t-1})
 7  ema_fast        c / EMA(c, ema_fast) - 1
 8  ema_slow        c / EMA(c, ema_slow) - 1
 9  macd            MACD(ema_fast, ema_slow) / c
10  macd_hist       (MACD - signal(macd_signal)) / c
11  rsi             (RSI(rsi) - 50) / 50
12  atr             ATR(atr) / c
13  volatility      population std of ret_1 over the last ``window`` bars
14  vwap_distance   log(c / VWAP over ``window`` bars); VWAP = sum(a) / sum(v) times the window's
                    mean of c*v/a (puts amount units and price adjustments into price units);
                    0 unless every bar of the window has an amount
15  day_position    close within the day's running high-low range so far, in [-1, 1] (intraday
                    bars); for daily bars the close's place in the bar's own range; 0 if flat
==  ==============  ========================================================================

Amount and volume often come in other units (thousands of currency, lots) and, in adjusted
price files, unadjusted: the factor c*v/a per bar carries both, and its window mean converts.
Rows before the warm-up (``spec.warmup`` bars) are NaN; a window is full once ``lookback``
rows after the warm-up exist.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np

from tradeloop.data.indicators import _sum_slice
from tradeloop.data.schema import NS_PER_DAY, BarSeries

from tradeloop.models.errors import FeatureError

__all__ = [
    "N_FEATURES",
    "FeatureBank",
    "FeatureSpec",
    "FeatureStream",
    "compute_features",
    "window_ends",
    "windows_at",
]

N_FEATURES = 16
FEATURES_VERSION = 1  # bump when a kernel's arithmetic changes: it changes every spec hash
_jit = numba.njit(cache=True, error_model="numpy")
_inline = numba.njit(cache=True, error_model="numpy", inline="always")

# -- state layout: fixed slots, then offsets computed from the spec (see _layout) -------------
_T, _PREV_C, _PREV_LV, _DAY, _DAY_HI, _DAY_LO, _FIXED = 0, 1, 2, 3, 4, 5, 6
# lay[] indices
(_L_CLOSES, _L_EF, _L_ES, _L_SIG, _L_UP, _L_DN, _L_ATR, _L_LV, _L_RET, _L_AMT, _L_VOL, _L_FAC, _L_SCR,
 _L_SIZE) = range(14)
# params P[] indices
_P_H1, _P_H2, _P_H3, _P_FAST, _P_SLOW, _P_SIG, _P_RSI, _P_ATR, _P_W, _P_WARM = range(10)


def spec_hash(d: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a feature spec's ``to_dict`` (bar and tick specs alike)."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureSpec:
    """What the features are: parameters, window length and a stable hash of both."""

    lookback: int = 64
    horizons: tuple[int, int, int] = (1, 5, 20)
    ema_fast: int = 12
    ema_slow: int = 26
    macd_signal: int = 9
    rsi: int = 14
    atr: int = 14
    window: int = 20
    version: int = field(default=FEATURES_VERSION)

    kind = "bars"   # class attribute, not a field (the hash is unchanged); TickFeatureSpec's is "ticks"

    def __post_init__(self) -> None:
        object.__setattr__(self, "horizons", tuple(int(h) for h in self.horizons))
        ints = {"lookback": self.lookback, "ema_fast": self.ema_fast, "ema_slow": self.ema_slow,
                "macd_signal": self.macd_signal, "rsi": self.rsi, "atr": self.atr, "window": self.window}
        for name, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FeatureError(f"feature spec: {name} must be an integer >= 1, got {v!r}")
        if self.lookback < 2 or self.window < 2:
            raise FeatureError(f"feature spec: lookback and window must be >= 2, got {self.lookback}, {self.window}")
        h = self.horizons
        if len(h) != 3 or not (0 < h[0] < h[1] < h[2]):
            raise FeatureError(f"feature spec: horizons must be three rising integers >= 1, got {h!r}")
        if not self.ema_fast < self.ema_slow:
            raise FeatureError(f"feature spec: ema_fast ({self.ema_fast}) must be < ema_slow ({self.ema_slow})")
        if self.version != FEATURES_VERSION:
            raise FeatureError(f"feature spec version {self.version} is not this code's ({FEATURES_VERSION}): "
                               "the model was built by another version of tradeloop's feature kernels")

    @property
    def names(self) -> tuple[str, ...]:
        """Column names, in order."""
        h1, h2, h3 = self.horizons
        return (f"ret_{h1}", f"ret_{h2}", f"ret_{h3}", "range", "body", "volume_z", "volume_change",
                "ema_fast", "ema_slow", "macd", "macd_hist", "rsi", "atr", "volatility", "vwap_distance",
                "day_position")

    @property
    def n_features(self) -> int:
        """Number of columns (always 16)."""
        return N_FEATURES

    @property
    def warmup(self) -> int:
        """Bars before the first row with every feature finite (that row is ``warmup - 1``)."""
        first = max(self.horizons[2], self.ema_slow - 1 + self.macd_signal - 1, self.rsi, self.atr,
                    self.window)
        return first + 1

    @property
    def min_bars(self) -> int:
        """Bars needed before the first full window: warm-up plus lookback - 1."""
        return self.warmup + self.lookback - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, names included."""
        d = asdict(self)
        d["horizons"] = list(self.horizons)
        d["names"] = list(self.names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        """Inverse of ``to_dict`` (``names`` is derived, so ignored); a stored spec of either kind:
        ``tick_features.spec_from_dict``."""
        known = {k: v for k, v in d.items() if k != "names"}
        unknown = set(known) - set(cls.__dataclass_fields__)
        if unknown:
            raise FeatureError(f"feature spec: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**known)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the parameters, names and kernel version."""
        return spec_hash(self.to_dict())

    # -- kernel arguments ------------------------------------------------------------------
    def _params(self) -> np.ndarray:
        h1, h2, h3 = self.horizons
        return np.array([h1, h2, h3, self.ema_fast, self.ema_slow, self.macd_signal, self.rsi, self.atr,
                         self.window, self.warmup], np.int64)

    def _alphas(self) -> np.ndarray:
        out = []
        for n, wilder in ((self.ema_fast, False), (self.ema_slow, False), (self.macd_signal, False),
                          (self.rsi, True), (self.atr, True)):
            a = 1.0 / n if wilder else 2.0 / (1.0 + n)  # data.indicators' _wilder_alpha / _ema_alpha
            out += [a, 1.0 - a]
        return np.array(out, np.float64)

    def _layout(self) -> np.ndarray:
        lay = np.zeros(_L_SIZE + 1, np.int64)
        off = _FIXED
        sizes = [(_L_CLOSES, self.horizons[2] + 1), (_L_EF, 2 + self.ema_fast), (_L_ES, 2 + self.ema_slow),
                 (_L_SIG, 2 + self.macd_signal), (_L_UP, 2 + self.rsi), (_L_DN, 2 + self.rsi),
                 (_L_ATR, 2 + self.atr), (_L_LV, 1 + self.window), (_L_RET, 1 + self.window),
                 (_L_AMT, 1 + self.window), (_L_VOL, 1 + self.window),
                 (_L_FAC, 1 + self.window), (_L_SCR, self.window)]
        for slot, size in sizes:
            lay[slot] = off
            off += size
        lay[_L_SIZE] = off
        return lay


# ----------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------


@_inline
def _smooth(st, o, n, a, a1, v):
    """One step of data.indicators._smooth: exact-mean seed over n values, then v*a + prev*a1."""
    cnt = int(st[o + 1])
    if cnt < n:
        st[o + 2 + cnt] = v
        cnt += 1
        st[o + 1] = cnt
        if cnt < n:
            return np.nan
        st[o] = _sum_slice(st[o + 2:o + 2 + n], 0, n) / n
        return st[o]
    st[o] = st[o] * a1 + v * a
    return st[o]


@_inline
def _ring_push(st, o, n, v):
    """Append v to the n-slot ring at o (slot o holds the count); the new count."""
    cnt = int(st[o])
    st[o + 1 + cnt % n] = v
    st[o] = cnt + 1
    return cnt + 1


@_inline
def _ring_mean_std(st, o, n, scr):
    """(mean, population std) of a full n-slot ring: exact fsum means, two-pass variance."""
    vals = st[o + 1:o + 1 + n]
    mean = _sum_slice(vals, 0, n) / n
    for i in range(n):
        d = vals[i] - mean
        st[scr + i] = d * d
    var = _sum_slice(st[scr:scr + n], 0, n) / n
    return mean, math.sqrt(var)


@_jit
def _step(st, P, A, lay, o, h, l, c, v, amt, ts, out):
    """Feed one bar to a symbol's state st; write its 16 features to out. 0, or 1 for a bad bar."""
    if not (o > 0.0 and h > 0.0 and l > 0.0 and c > 0.0 and math.isfinite(o) and math.isfinite(h)
            and math.isfinite(l) and math.isfinite(c) and v >= 0.0 and math.isfinite(v)):
        return 1
    t = int(st[_T])
    st[_T] = t + 1
    # returns from the closes ring
    h3 = P[_P_H3]
    R = h3 + 1
    oc = lay[_L_CLOSES]
    st[oc + t % R] = c
    r1 = np.nan
    for j in range(3):
        k = P[_P_H1 + j]
        if t >= k:
            r = math.log(c / st[oc + (t - k) % R])
            out[j] = r
            if j == 0:
                r1 = r
        else:
            out[j] = np.nan
    if P[_P_H1] != 1:  # volatility always uses the one-bar return
        r1 = math.log(c / st[_PREV_C]) if t >= 1 else np.nan
    # bar shape
    out[3] = (h - l) / c
    out[4] = (c - o) / (h - l) if h > l else 0.0
    # volume
    W = P[_P_W]
    scr = lay[_L_SCR]
    lv = math.log1p(v)
    if _ring_push(st, lay[_L_LV], W, lv) >= W:
        mean, sd = _ring_mean_std(st, lay[_L_LV], W, scr)
        out[5] = (lv - mean) / sd if sd > 0.0 else 0.0
    else:
        out[5] = np.nan
    out[6] = lv - st[_PREV_LV] if t >= 1 else np.nan
    # EMA, MACD (data.indicators._macd_k), RSI (_rsi_k), ATR (_atr_k)
    ef = _smooth(st, lay[_L_EF], P[_P_FAST], A[0], A[1], c)
    es = _smooth(st, lay[_L_ES], P[_P_SLOW], A[2], A[3], c)
    out[7] = c / ef - 1.0
    out[8] = c / es - 1.0
    if t >= max(P[_P_FAST], P[_P_SLOW]) - 1:
        m = ef - es
        g = _smooth(st, lay[_L_SIG], P[_P_SIG], A[4], A[5], m)
        out[9] = m / c
        out[10] = (m - g) / c
    else:
        out[9] = np.nan
        out[10] = np.nan
    rsi = np.nan
    atr = np.nan
    if t >= 1:
        pc = st[_PREV_C]
        d = c - pc
        e = pc - c
        up = _smooth(st, lay[_L_UP], P[_P_RSI], A[6], A[7], 0.0 if 0.0 > d else d)  # noqa: FURB136 (as _rsi_k)
        dn = _smooth(st, lay[_L_DN], P[_P_RSI], A[6], A[7], 0.0 if 0.0 > e else e)  # noqa: FURB136
        if dn == 0.0:
            rs = 1.0 if up == 0.0 else np.inf
        else:
            rs = up / dn
        rsi = 100.0 - 100.0 / (1.0 + rs)
        th = pc if pc > h else h  # noqa: FURB136 (as _atr_k: Python max(high, prev_close))
        tl = pc if pc < l else l  # noqa: FURB136
        atr = _smooth(st, lay[_L_ATR], P[_P_ATR], A[8], A[9], th - tl)
    out[11] = (rsi - 50.0) / 50.0
    out[12] = atr / c
    # volatility of one-bar returns
    if t >= 1 and _ring_push(st, lay[_L_RET], W, r1) >= W:
        out[13] = _ring_mean_std(st, lay[_L_RET], W, scr)[1]
    else:
        out[13] = np.nan
    # VWAP distance: amount/volume in price units via the window's mean close/average-price factor
    has_amt = amt > 0.0 and math.isfinite(amt) and v > 0.0
    n_amt = _ring_push(st, lay[_L_AMT], W, amt if has_amt else 0.0)
    _ring_push(st, lay[_L_VOL], W, v if has_amt else 0.0)
    _ring_push(st, lay[_L_FAC], W, c * v / amt if has_amt else 0.0)
    if n_amt >= W:
        oa = lay[_L_AMT] + 1
        full = True
        for i in range(W):
            if st[oa + i] == 0.0:
                full = False
        if full:
            sa = _sum_slice(st[oa:oa + W], 0, W)
            sv = _sum_slice(st[lay[_L_VOL] + 1:lay[_L_VOL] + 1 + W], 0, W)
            fac = _sum_slice(st[lay[_L_FAC] + 1:lay[_L_FAC] + 1 + W], 0, W) / W
            out[14] = math.log(c / (fac * (sa / sv)))
        else:
            out[14] = 0.0
    else:
        out[14] = np.nan
    # position in the day's running range
    day = float(ts // NS_PER_DAY)
    if t == 0 or day != st[_DAY]:
        st[_DAY] = day
        st[_DAY_HI] = h
        st[_DAY_LO] = l
    else:
        st[_DAY_HI] = max(st[_DAY_HI], h)
        st[_DAY_LO] = min(st[_DAY_LO], l)
    hi = st[_DAY_HI]
    lo = st[_DAY_LO]
    out[15] = 2.0 * (c - lo) / (hi - lo) - 1.0 if hi > lo else 0.0
    st[_PREV_C] = c
    st[_PREV_LV] = lv
    if t + 1 < P[_P_WARM]:
        for j in range(out.shape[0]):
            out[j] = np.nan
    return 0


@_jit
def _batch(st, P, A, lay, o, h, l, c, v, amt, ts, out):
    """Run _step over every bar; -1, or the index of the first bad bar."""
    for i in range(c.shape[0]):
        if _step(st, P, A, lay, o[i], h[i], l[i], c[i], v[i], amt[i], ts[i], out[i]):
            return i
    return -1


@_jit
def _bank_update(states, rings, counts, P, A, lay, idx, bars, ts, row):
    """Feed bars[k] (o, h, l, c, v, amount) to symbol idx[k]; store its row in the symbol's ring.

    Returns -1, or the position k of the first bad bar (symbols before it were updated).
    """
    L = rings.shape[1]
    for k in range(idx.shape[0]):
        s = idx[k]
        b = bars[k]
        if _step(states[s], P, A, lay, b[0], b[1], b[2], b[3], b[4], b[5], ts[k], row):
            return k
        slot = counts[s] % L
        for j in range(row.shape[0]):
            rings[s, slot, j] = row[j]
        counts[s] += 1
    return -1


@_jit
def _bank_gather(rings, counts, idx, out):
    """out[k] = the last L rows of symbol idx[k], oldest first."""
    L = rings.shape[1]
    for k in range(idx.shape[0]):
        s = idx[k]
        n = counts[s]
        for i in range(L):
            slot = (n - L + i) % L
            for j in range(rings.shape[2]):
                out[k, i, j] = rings[s, slot, j]


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------


def _column(series: BarSeries, name: str) -> np.ndarray:
    return np.ascontiguousarray(series.column(name), dtype=np.float64)


def _bad_bar(symbol: str, source: str | None, i: int, ts: int, vals: dict[str, float]) -> FeatureError:
    where = f" ({source})" if source else ""
    shown = ", ".join(f"{k}={v!r}" for k, v in vals.items())
    return FeatureError(f"{symbol}{where}: bar {i} at ts={ts} cannot be featurized: prices must be finite and "
                        f"positive, volume finite and >= 0 ({shown})")


def compute_features(series: BarSeries, spec: FeatureSpec | None = None, *,
                     return_state: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Features of every bar of a series, float64 [N, 16] (NaN rows during the warm-up).

    With ``return_state`` also the symbol's kernel state after the last bar, from which a
    ``FeatureBank`` can continue streaming (``FeatureBank.seed``).
    """
    spec = spec or FeatureSpec()
    n = len(series)
    amount = _column(series, "amount") if "amount" in series.extra else np.full(n, np.nan)
    lay = spec._layout()
    st = np.zeros(lay[_L_SIZE])
    out = np.empty((n, N_FEATURES))
    cols = [_column(series, f) for f in ("open", "high", "low", "close", "volume")]
    bad = _batch(st, spec._params(), spec._alphas(), lay, *cols, amount,
                 np.ascontiguousarray(series.ts, dtype=np.int64), out)
    if bad >= 0:
        raise _bad_bar(series.symbol, series.source, bad, int(series.ts[bad]),
                       {f: float(c[bad]) for f, c in zip(("open", "high", "low", "close", "volume"), cols)})
    return (out, st) if return_state else out


def window_ends(n_bars: int, spec: FeatureSpec) -> np.ndarray:
    """Row indices t at which a full window (rows t-lookback+1..t, all past warm-up) exists."""
    return np.arange(spec.min_bars - 1, n_bars, dtype=np.int64)


def windows_at(features: np.ndarray, ends: np.ndarray, lookback: int) -> np.ndarray:
    """float32 [len(ends), lookback, F]: the rows ending at each index in ``ends`` (oldest first)."""
    ends = np.asarray(ends, dtype=np.int64)
    if len(ends) and (ends.min() < lookback - 1 or ends.max() >= len(features)):
        raise FeatureError(f"window ends must lie in [{lookback - 1}, {len(features) - 1}]")
    view = np.lib.stride_tricks.sliding_window_view(features, (lookback, features.shape[1]))[:, 0]
    return np.ascontiguousarray(view[ends - (lookback - 1)], dtype=np.float32)


class FeatureStream:
    """Streaming features of one symbol: ``update(bar)`` returns that bar's row (float64[16])."""

    def __init__(self, spec: FeatureSpec | None = None, symbol: str = "") -> None:
        self.spec = spec or FeatureSpec()
        self.symbol = symbol
        self._P, self._A, self._lay = self.spec._params(), self.spec._alphas(), self.spec._layout()
        self.state = np.zeros(self._lay[_L_SIZE])
        self.n = 0

    def update(self, open: float, high: float, low: float, close: float, volume: float,
               amount: float = math.nan, ts: int = 0) -> np.ndarray:
        """Feed one bar; its 16 features (NaN during the warm-up)."""
        out = np.empty(N_FEATURES)
        if _step(self.state, self._P, self._A, self._lay, float(open), float(high), float(low), float(close),
                 float(volume), float(amount), int(ts), out):
            raise _bad_bar(self.symbol or "bar", None, self.n, int(ts),
                           {"open": open, "high": high, "low": low, "close": close, "volume": volume})
        self.n += 1
        return out


class FeatureBank:
    """Streaming features for many symbols with each one's last ``lookback`` rows kept in a ring.

    ``update(symbols, bars)`` advances several symbols in one numba call; ``windows(symbols)``
    gathers their windows as float32 [k, lookback, 16]; ``ready(symbol)`` says a window is full.
    """

    def __init__(self, symbols: list[str], spec: FeatureSpec | None = None) -> None:
        self.spec = spec or FeatureSpec()
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise FeatureError("FeatureBank: symbols must be unique")
        self._P, self._A, self._lay = self.spec._params(), self.spec._alphas(), self.spec._layout()
        S, L = len(self.symbols), self.spec.lookback
        self.states = np.zeros((S, self._lay[_L_SIZE]))
        self.rings = np.full((S, L, N_FEATURES), np.nan, np.float32)
        self.counts = np.zeros(S, np.int64)
        self._row = np.empty(N_FEATURES)
        self._need = self.spec.min_bars

    def _idx(self, symbols: list[str]) -> np.ndarray:
        try:
            return np.fromiter((self.index[s] for s in symbols), np.int64, len(symbols))
        except KeyError as e:
            raise FeatureError(f"FeatureBank: unknown symbol {e.args[0]!r}") from None

    def update(self, symbols: list[str], bars: np.ndarray, ts: np.ndarray | list[int] | None = None) -> None:
        """Feed one bar per symbol: ``bars`` float64 [k, 6] = open, high, low, close, volume, amount."""
        idx = self._idx(symbols)
        bars = np.ascontiguousarray(bars, dtype=np.float64).reshape(len(idx), -1)
        if bars.shape[1] == 5:
            bars = np.concatenate([bars, np.full((len(idx), 1), np.nan)], axis=1)
        if bars.shape[1] != 6:
            raise FeatureError(f"FeatureBank.update: bars must have 5 or 6 columns, got {bars.shape[1]}")
        tsa = np.zeros(len(idx), np.int64) if ts is None else np.ascontiguousarray(ts, dtype=np.int64)
        bad = _bank_update(self.states, self.rings, self.counts, self._P, self._A, self._lay, idx, bars, tsa,
                           self._row)
        if bad >= 0:
            s = symbols[bad]
            raise _bad_bar(s, None, int(self.counts[self.index[s]]), int(tsa[bad]),
                           dict(zip(("open", "high", "low", "close", "volume"), bars[bad, :5].tolist())))

    def seed(self, symbol: str, features: np.ndarray, state: np.ndarray) -> None:
        """Continue ``symbol`` from a batch run: its rows (``compute_features``) and final state."""
        i = self._idx([symbol])[0]
        if state.shape != self.states[i].shape:
            raise FeatureError("FeatureBank.seed: state was computed with another feature spec")
        n = len(features)
        self.states[i] = state
        self.counts[i] = n
        L = self.spec.lookback
        for t in range(max(0, n - L), n):
            self.rings[i, t % L] = features[t]

    def ready(self, symbol: str) -> bool:
        """True once ``symbol`` has a full window of post-warm-up rows."""
        return bool(self.counts[self.index[symbol]] >= self._need)

    def ready_mask(self, symbols: list[str]) -> np.ndarray:
        """Boolean mask of ``ready`` over several symbols."""
        return self.counts[self._idx(symbols)] >= self._need

    def windows(self, symbols: list[str]) -> np.ndarray:
        """float32 [k, lookback, 16]: each symbol's last rows, oldest first (check ``ready`` first)."""
        idx = self._idx(symbols)
        out = np.empty((len(idx), self.spec.lookback, N_FEATURES), np.float32)
        _bank_gather(self.rings, self.counts, idx, out)
        return out
