"""Market value types: one bar, one tick, and a symbol's bars held columnar.

Timestamps are int64 nanoseconds. Zone-aware input is converted to UTC (``tz="UTC"``);
naive input keeps the exchange's wall time as if it were UTC (``tz=None``) so that it is
written back exactly as it was read (a naive ``2010-01-04`` stays ``2010-01-04 00:00:00``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

NS_PER_DAY = 86_400_000_000_000
PRICE_FIELDS = ("open", "high", "low", "close")
BAR_FIELDS = ("open", "high", "low", "close", "volume")


class Bar(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV bar of one symbol, as a strategy sees it (a C-level struct: cheap to make)."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One trade or quote update. ``size`` is the traded quantity (0 for a pure quote)."""

    symbol: str
    ts: int
    price: float
    size: float = 0.0
    bid: float = float("nan")
    ask: float = float("nan")
    bid_size: float = 0.0
    ask_size: float = 0.0


@dataclass(frozen=True, eq=False)
class BarSeries:
    """All bars of one symbol, one numpy array per field, sorted by strictly rising ``ts``.

    ``extra`` holds optional per-bar columns the loader found (``pre_close``, ``amount``).
    ``source`` names the file the bars came from, for error messages and the run manifest.
    """

    symbol: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    tz: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in BAR_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.symbol}: column {name} has {len(getattr(self, name))} rows, ts has {n}")
        for name, col in self.extra.items():
            if len(col) != n:
                raise ValueError(f"{self.symbol}: extra column {name} has {len(col)} rows, ts has {n}")

    def __len__(self) -> int:
        return len(self.ts)

    def column(self, name: str) -> np.ndarray:
        """A field by name: one of the OHLCV fields or an ``extra`` column."""
        if name in BAR_FIELDS:
            return getattr(self, name)
        if name == "ts":
            return self.ts
        try:
            return self.extra[name]
        except KeyError:
            raise KeyError(f"{self.symbol}: no column {name!r} (have ts, {', '.join(BAR_FIELDS + tuple(self.extra))})") from None

    def bar(self, i: int) -> Bar:
        """Row ``i`` as a :class:`Bar`."""
        return Bar(self.symbol, int(self.ts[i]), float(self.open[i]), float(self.high[i]),
                   float(self.low[i]), float(self.close[i]), float(self.volume[i]))

    def between(self, start: int | None = None, end: int | None = None) -> "BarSeries":
        """Bars with ``start <= ts < end`` (either bound may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, "left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, "left"))
        return BarSeries(self.symbol, self.ts[lo:hi], self.open[lo:hi], self.high[lo:hi], self.low[lo:hi],
                         self.close[lo:hi], self.volume[lo:hi], {k: v[lo:hi] for k, v in self.extra.items()},
                         self.tz, self.source)
