"""Market value types: one bar, one tick, and a symbol's bars held columnar.

Timestamps are int64 nanoseconds. Zone-aware input is converted to UTC (``tz="UTC"``);
naive input keeps the exchange's wall time as if it were UTC (``tz=None``) so that it is
written back exactly as it was read (a naive ``2010-01-04`` stays ``2010-01-04 00:00:00``).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    amount: float | None = None    # traded value where the source has it (A-share data; VWAP features)


class BarChunk:
    """A run of consecutive bars of a merged timeline: symbols and stamps as lists, prices and
    volumes as numpy views (made into floats only when read), and each bar's row in its series."""

    __slots__ = ("symbol", "ts", "open", "high", "low", "close", "volume", "row")

    def __init__(self, symbol: list[str], ts: list[int], open: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, volume: np.ndarray, row: Sequence[int]) -> None:
        self.symbol, self.ts, self.open, self.high, self.low = symbol, ts, open, high, low
        self.close, self.volume, self.row = close, volume, row

    def bars(self, lo: int, hi: int) -> Iterator[Bar]:
        """Bar objects of rows lo..hi-1."""
        return map(Bar, self.symbol[lo:hi], self.ts[lo:hi], self.open[lo:hi].tolist(), self.high[lo:hi].tolist(),
                   self.low[lo:hi].tolist(), self.close[lo:hi].tolist(), self.volume[lo:hi].tolist())


class Bars(msgspec.Struct, frozen=True, gc=False, eq=False):
    """The bars of one timestamp in a backtest (chunk rows lo..hi-1): a read-only sequence of Bar.

    A backtest hands these to ``Engine.step`` instead of lists: most strategies never look at
    the bars themselves (they read indicators), so a Bar is made only when one is asked for.
    A msgspec struct because the driver makes one per timestamp from C (no Python __init__).
    Symbols within a group are sorted and distinct.
    """

    chunk: BarChunk
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo

    def __iter__(self) -> Iterator[Bar]:
        return self.chunk.bars(self.lo, self.hi)

    def __getitem__(self, i: int | slice) -> Bar | list[Bar]:
        if isinstance(i, slice):
            return list(self)[i]
        n = self.hi - self.lo
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("bar index out of range")
        return next(self.chunk.bars(self.lo + i, self.lo + i + 1))

    def __reversed__(self) -> Iterator[Bar]:
        return reversed(list(self))

    def __contains__(self, bar: object) -> bool:
        return bar in list(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (Bars, list, tuple)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Bars({list(self)!r})"

    def index(self, bar: Bar) -> int:
        return list(self).index(bar)

    def count(self, bar: Bar) -> int:
        return list(self).count(bar)

    @property
    def symbols(self) -> list[str]:
        """The symbols of these bars, sorted (no Bar is made)."""
        return self.chunk.symbol[self.lo:self.hi]


class OneBar(Bars, frozen=True, gc=False, eq=False):
    """The one bar of a single-symbol backtest's timestamp, with its symbol and row at hand
    (``Engine.step`` moves the market with one dict store)."""

    symbol: str
    row: int


Sequence.register(Bars)


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
        amount = self.extra.get("amount")
        return Bar(self.symbol, int(self.ts[i]), float(self.open[i]), float(self.high[i]),
                   float(self.low[i]), float(self.close[i]), float(self.volume[i]),
                   float(amount[i]) if amount is not None else None)

    def between(self, start: int | None = None, end: int | None = None) -> "BarSeries":
        """Bars with ``start <= ts < end`` (either bound may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, "left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, "left"))
        return BarSeries(self.symbol, self.ts[lo:hi], self.open[lo:hi], self.high[lo:hi], self.low[lo:hi],
                         self.close[lo:hi], self.volume[lo:hi], {k: v[lo:hi] for k, v in self.extra.items()},
                         self.tz, self.source)


TICK_FIELDS = ("price", "size", "bid", "ask", "bid_size", "ask_size")


@dataclass(frozen=True, eq=False)
class TickSeries:
    """All ticks of one symbol, columnar, in (``ts``, ``seq``) order: trades and/or level-1 quotes.

    A trade-only file has NaN ``bid``/``ask`` (0 sizes); a quote-only file NaN ``price`` (0 ``size``);
    a snapshot file (vn.py) has both. ``seq`` is the tick's place in its file, so ticks with equal
    stamps keep file order; ``side`` is +1 buyer-initiated, -1 seller-initiated, 0 unknown.
    """

    symbol: str
    ts: np.ndarray          # int64 ns, never decreasing
    seq: np.ndarray         # int64, rising
    price: np.ndarray       # float64 last trade price
    size: np.ndarray        # float64 last trade size
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    side: np.ndarray        # int8
    tz: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("seq", *TICK_FIELDS, "side"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.symbol}: tick column {name} has {len(getattr(self, name))} rows, ts has {n}")

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def has_quotes(self) -> bool:
        return bool(len(self.ts)) and not np.isnan(self.bid).all()

    @property
    def has_trades(self) -> bool:
        return bool(len(self.ts)) and not np.isnan(self.price).all()

    def tick(self, i: int) -> Tick:
        """Row ``i`` as a :class:`Tick`."""
        return Tick(self.symbol, int(self.ts[i]), float(self.price[i]), float(self.size[i]), float(self.bid[i]),
                    float(self.ask[i]), float(self.bid_size[i]), float(self.ask_size[i]))

    def between(self, start: int | None = None, end: int | None = None) -> "TickSeries":
        """Ticks with ``start <= ts < end`` (either bound may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, "left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, "left"))
        return TickSeries(self.symbol, *(getattr(self, f)[lo:hi] for f in ("ts", "seq", *TICK_FIELDS, "side")),
                          tz=self.tz, source=self.source)
