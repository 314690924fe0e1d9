"""Per-tick features for a predictor fed ticks: a declared, hashed spec (``TickFeatureSpec``).

One numba kernel, ``_tick_step``, updates a symbol's state with one tick and writes that tick's
row of every known feature; a spec picks its ``fields`` (in its order). The batch form
(``compute_tick_features`` over a :class:`TickSeries`) loops the kernel over the ticks, the
streaming form (``TickFeatureStream``, live, one tick at a time) calls it per tick: same float
operations in the same order, so the two agree bit for bit, and row t reads only ticks 0..t.

The mid is (bid + ask) * 0.5 when both quotes are positive and not crossed (TickMarket's mid),
else the trade price, else the previous mid (a tick with none of them before any mid is refused).

Features (``k`` = ``horizon``, ``W`` = ``window``):

=============  ==========================================================================
mid_ret        log(mid_t / mid_{t-1})
mid_ret_k      log(mid_t / mid_{t-k})
spread         (ask - bid) / mid; 0 without both quotes
imbalance      (bid_size - ask_size) / (bid_size + ask_size); 0 when both are 0
trade_size     log1p(size) (the tick's traded quantity; 0 for a pure quote)
last_vs_mid    (price - mid) / (ask - bid); 0 without a trade price or a positive spread
mid_vol        population std of mid_ret over the last W ticks (fsum means, two passes)
depth_change   log1p(bid_size + ask_size) - the same of the previous tick
=============  ==========================================================================

Rows before the warm-up (``spec.warmup`` ticks) are NaN.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numba
import numpy as np

from tradeloop.data.schema import TickSeries

from tradeloop.models.errors import FeatureError
from tradeloop.models.features import FeatureSpec, _ring_mean_std, _ring_push, spec_hash

__all__ = ["TICK_FEATURES", "TickFeatureSpec", "TickFeatureStream", "compute_tick_features", "spec_from_dict"]

TICK_FEATURES = ("mid_ret", "mid_ret_k", "spread", "imbalance", "trade_size", "last_vs_mid", "mid_vol",
                 "depth_change")
TICK_FEATURES_VERSION = 1   # bump when the kernel's arithmetic changes
_NALL = len(TICK_FEATURES)
_jit = numba.njit(cache=True, error_model="numpy")

# state: fixed slots, then the mids ring (k + 1), the mid_ret ring (1 + W), scratch (W)
_T, _PREV_MID, _PREV_LD, _FIXED = 0, 1, 2, 3


@dataclass(frozen=True)
class TickFeatureSpec:
    """Which tick features, their parameters and the window length; a stable hash of all."""

    lookback: int = 32
    fields: tuple[str, ...] = TICK_FEATURES
    horizon: int = 10
    window: int = 20
    version: int = TICK_FEATURES_VERSION

    kind = "ticks"   # class attribute (not a field): FeatureSpec's is "bars"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(str(f) for f in self.fields))
        for name in ("lookback", "horizon", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FeatureError(f"tick feature spec: {name} must be an integer >= 1, got {v!r}")
        if self.lookback < 2 or self.window < 2:
            raise FeatureError(f"tick feature spec: lookback and window must be >= 2, got {self.lookback}, "
                               f"{self.window}")
        if not self.fields:
            raise FeatureError("tick feature spec: fields is empty")
        bad = [f for f in self.fields if f not in TICK_FEATURES]
        if bad:
            raise FeatureError(f"tick feature spec: unknown field(s) {', '.join(bad)}; known: {', '.join(TICK_FEATURES)}")
        if len(set(self.fields)) != len(self.fields):
            raise FeatureError(f"tick feature spec: fields repeat: {self.fields!r}")
        if self.version != TICK_FEATURES_VERSION:
            raise FeatureError(f"tick feature spec version {self.version} is not this code's "
                               f"({TICK_FEATURES_VERSION})")

    @property
    def names(self) -> tuple[str, ...]:
        return self.fields

    @property
    def n_features(self) -> int:
        return len(self.fields)

    @property
    def warmup(self) -> int:
        """Ticks before the first row with every feature finite (that row is ``warmup - 1``)."""
        return max(self.horizon, self.window) + 1

    @property
    def min_bars(self) -> int:
        """Ticks needed before the first full window (named as FeatureSpec's, for shared code)."""
        return self.warmup + self.lookback - 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fields"] = list(self.fields)
        d["kind"] = "ticks"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TickFeatureSpec:
        known = {k: v for k, v in d.items() if k not in ("kind", "names")}
        unknown = set(known) - set(cls.__dataclass_fields__)
        if unknown:
            raise FeatureError(f"tick feature spec: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**known)

    @property
    def hash(self) -> str:
        return spec_hash(self.to_dict())

    def _params(self) -> np.ndarray:
        return np.array([self.horizon, self.window, self.warmup], np.int64)

    def _cols(self) -> np.ndarray:
        return np.array([TICK_FEATURES.index(f) for f in self.fields], np.int64)

    def _size(self) -> int:
        return _FIXED + (self.horizon + 1) + (1 + self.window) + self.window


@_jit
def _tick_step(st, P, cols, price, size, bid, ask, bsz, asz, full, out):
    """Feed one tick to state st; write its selected features to out. 0, or 1 for a tick with no mid."""
    k, W, warm = P[0], P[1], P[2]
    om = _FIXED
    orr = om + k + 1
    scr = orr + 1 + W
    t = int(st[_T])
    quotes = bid > 0.0 and ask > 0.0 and math.isfinite(bid) and math.isfinite(ask) and ask >= bid
    if quotes:
        mid = (bid + ask) * 0.5
    elif price > 0.0 and math.isfinite(price):
        mid = price
    elif t >= 1:
        mid = st[_PREV_MID]
    else:
        return 1
    st[_T] = t + 1
    st[om + t % (k + 1)] = mid
    r1 = math.log(mid / st[_PREV_MID]) if t >= 1 else np.nan
    full[0] = r1
    full[1] = math.log(mid / st[om + (t - k) % (k + 1)]) if t >= k else np.nan
    sp = ask - bid
    full[2] = sp / mid if quotes else 0.0
    bs = bsz if bsz > 0.0 and math.isfinite(bsz) else 0.0
    as_ = asz if asz > 0.0 and math.isfinite(asz) else 0.0
    full[3] = (bs - as_) / (bs + as_) if bs + as_ > 0.0 else 0.0
    full[4] = math.log1p(size) if size > 0.0 and math.isfinite(size) else 0.0
    full[5] = (price - mid) / sp if quotes and sp > 0.0 and price > 0.0 and math.isfinite(price) else 0.0
    if t >= 1 and _ring_push(st, orr, W, r1) >= W:
        full[6] = _ring_mean_std(st, orr, W, scr)[1]
    else:
        full[6] = np.nan
    ld = math.log1p(bs + as_)
    full[7] = ld - st[_PREV_LD] if t >= 1 else np.nan
    st[_PREV_MID] = mid
    st[_PREV_LD] = ld
    for j in range(cols.shape[0]):
        out[j] = full[cols[j]] if t + 1 >= warm else np.nan
    return 0


@_jit
def _tick_batch(st, P, cols, price, size, bid, ask, bsz, asz, out):
    full = np.empty(8)
    for i in range(price.shape[0]):
        if _tick_step(st, P, cols, price[i], size[i], bid[i], ask[i], bsz[i], asz[i], full, out[i]):
            return i
    return -1


def spec_from_dict(d: dict[str, Any]) -> FeatureSpec | TickFeatureSpec:
    """A stored feature spec of either kind: ``kind: ticks`` gives a TickFeatureSpec, else a FeatureSpec."""
    return TickFeatureSpec.from_dict(d) if d.get("kind") == "ticks" else FeatureSpec.from_dict(d)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def compute_tick_features(ticks: TickSeries, spec: TickFeatureSpec | None = None) -> np.ndarray:
    """Features of every tick, float64 [N, spec.n_features] (NaN rows during the warm-up)."""
    spec = spec or TickFeatureSpec()
    n = len(ticks)
    st = np.zeros(spec._size())
    out = np.empty((n, spec.n_features))
    bad = _tick_batch(st, spec._params(), spec._cols(), _f64(ticks.price), _f64(ticks.size), _f64(ticks.bid),
                      _f64(ticks.ask), _f64(ticks.bid_size), _f64(ticks.ask_size), out)
    if bad >= 0:
        raise FeatureError(f"{ticks.symbol}: tick {bad} at ts={int(ticks.ts[bad])} has no price and no quotes "
                           "before any mid is known")
    return out


class TickFeatureStream:
    """Streaming tick features of one symbol, with its last ``lookback`` rows (float32) in a ring."""

    def __init__(self, spec: TickFeatureSpec | None = None, symbol: str = "") -> None:
        self.spec = spec or TickFeatureSpec()
        self.symbol = symbol
        self._P, self._cols = self.spec._params(), self.spec._cols()
        self.state = np.zeros(self.spec._size())
        self._full = np.empty(_NALL)
        L = self.spec.lookback
        self.ring = np.full((L, self.spec.n_features), np.nan, np.float32)
        self.n = 0

    def update(self, price: float, size: float = 0.0, bid: float = math.nan, ask: float = math.nan,
               bid_size: float = 0.0, ask_size: float = 0.0) -> np.ndarray:
        """Feed one tick; its feature row (float64, NaN during the warm-up)."""
        out = np.empty(self.spec.n_features)
        if _tick_step(self.state, self._P, self._cols, float(price), float(size), float(bid), float(ask),
                      float(bid_size), float(ask_size), self._full, out):
            raise FeatureError(f"{self.symbol or 'tick'}: tick {self.n} has no price and no quotes before any "
                               "mid is known")
        self.ring[self.n % self.spec.lookback] = out   # float32, as windows_at casts the batch rows
        self.n += 1
        return out

    @property
    def ready(self) -> bool:
        return self.n >= self.spec.min_bars

    def window(self) -> np.ndarray:
        """float32 [1, lookback, F]: the last rows, oldest first."""
        L = self.spec.lookback
        idx = (np.arange(self.n - L, self.n)) % L
        return self.ring[idx][None]
