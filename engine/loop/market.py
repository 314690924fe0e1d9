"""What the strategy may know about the market: bars up to now, and indicators over them.

Two implementations behind one interface. ``HistoricalMarket`` (backtests) holds every bar
columnar and computes each indicator once, as a batch kernel over the whole series;
``StreamingMarket`` (live) appends bars as they arrive and updates streaming indicators.
Both expose only rows up to the symbol's current bar, so a strategy cannot look ahead, and
batch and streaming indicator values are equal by construction (property-tested).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from tradeloop.brokers.settlement import PriorCloses
from tradeloop.data.indicators import INDICATORS
from tradeloop.data.schema import BAR_FIELDS, NS_PER_DAY, Bar, Bars, BarSeries, OneBar

_NAN = math.nan
# what a tick offers as an indicator input (``ctx.indicator("ema", "mid", n=100)``): its columns, the mid
# ``(bid + ask) * 0.5`` and the spread ``ask - bid``, one value per tick of the symbol
TICK_FIELDS = ("price", "size", "bid", "ask", "mid", "spread", "bid_size", "ask_size")


class Series:
    """One indicator output (or bar field) per symbol, read at the symbol's current bar."""

    __slots__ = ("name", "_vals", "_rows", "_market", "_index")

    def __init__(self, name: str, vals: dict[str, np.ndarray], market: "Market") -> None:
        self.name = name
        self._vals = vals
        self._rows = market.rows
        self._market = market
        self._index: dict[int, list[str]] | None = None

    def __getitem__(self, symbol: str) -> float:
        r = self._rows[symbol]
        return self._vals[symbol][r] if r >= 0 else _NAN

    def get(self, symbol: str, ago: int = 0) -> float:
        """The value ``ago`` bars before the current one (NaN before the first bar)."""
        r = self._rows[symbol] - ago
        return float(self._vals[symbol][r]) if r >= 0 else _NAN

    def window(self, symbol: str, n: int) -> np.ndarray:
        """The last ``n`` values up to the current bar (fewer at the start), read-only."""
        r = self._rows[symbol] + 1
        view = self._vals[symbol][max(0, r - n):r]
        view.flags.writeable = False
        return view

    def nonzero_symbols(self) -> "list[str] | tuple[()]":
        """Symbols with a bar at the current timestamp whose value there is non-zero (not NaN), sorted.

        The cheap way to scan many symbols for signals: a backtest answers from an index built
        once per series, a live run checks the symbols that just got a bar.
        """
        index = self._index
        if index is not None:
            return index.get(self._market.now, ())
        return self._market.nonzero_symbols(self)

    def __repr__(self) -> str:
        return f"Series({self.name})"


class TickFieldSeries(Series):
    """A tick field or an indicator over tick fields: one value per tick of the symbol, read at the
    symbol's current tick (``get(symbol, ago=n)``: n ticks before it)."""

    __slots__ = ()

    def __init__(self, name: str, vals: dict[str, np.ndarray], market: "Market") -> None:
        super().__init__(name, vals, market)
        self._rows = market.tick_rows

    def nonzero_symbols(self) -> list[str]:
        """Symbols whose current tick is stamped now and whose value there is non-zero (not NaN), sorted."""
        m = self._market
        now, rows, vals, last = m.now, self._rows, self._vals, m.last
        out = []
        for s in sorted(vals):
            r, t = rows.get(s, -1), last.get(s)
            if r >= 0 and t is not None and t.ts == now:
                v = vals[s][r]
                if v == v and v != 0:
                    out.append(s)
        return out


class Market:
    """Bars and indicators for a fixed, sorted set of symbols; ``rows`` marks 'now' per symbol."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = sorted(symbols)
        self.rows: dict[str, int] = {s: -1 for s in self.symbols}
        self.now = 0  # the stamp of the bars being processed, set by the engine at each event (not the clock)
        self.cols: dict[str, dict[str, np.ndarray]] = {}
        self._fields: dict[str, Series] = {}
        self.tick_rows: dict[str, int] = {s: -1 for s in self.symbols}   # the current tick's row per symbol
        self.tick_cols: dict[str, dict[str, np.ndarray]] = {}
        self.last: dict[str, Any] = {}      # symbol -> its last Tick

    _has_ticks = False   # a market that may see ticks offers TICK_FIELDS

    def on_tick(self, tick: Any) -> None:
        """A tick of ``tick.symbol`` (Engine.tick, before matching): its price becomes the symbol's price."""
        self.trade(tick.symbol, tick.ts, tick.price)

    def trade(self, symbol: str, ts: int, price: float) -> None:
        pass

    def _is_tick_source(self, source: Any) -> bool:
        if isinstance(source, Series):
            return source._rows is self.tick_rows
        return self._has_ticks and isinstance(source, str) and source in TICK_FIELDS and source not in self.cols

    def _tick_field(self, name: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _build_ticks(self, spec, inputs, args) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def field(self, name: str) -> Series:
        """A bar field (``close``, ``volume``, ``pre_close``...) as a per-symbol series."""
        s = self._fields.get(name)
        if s is None and self._is_tick_source(name):
            s = self._fields[name] = TickFieldSeries(name, self._tick_field(name), self)
        if s is None:
            if name not in self.cols:
                raise KeyError(f"no bar field {name!r}; have {', '.join(self.cols)}")
            s = self._fields[name] = Series(name, self.cols[name], self)
        return s

    def price(self, symbol: str) -> float:
        """The symbol's last close (NaN before its first bar)."""
        r = self.rows[symbol]
        return self.cols["close"][symbol].item(r) if r >= 0 else _NAN

    def history(self, symbol: str, field: str, n: int) -> np.ndarray:
        return self.field(field).window(symbol, n)

    def prev_close(self, symbol: str) -> float:
        """The previous session's close at the symbol's current bar (the base of daily price limits)."""
        raise NotImplementedError

    def indicator(self, name: str, *sources: Any, **params: Any) -> Series | tuple[Series, ...]:
        """Declare an indicator on bar fields or other indicators; one Series per output."""
        spec = INDICATORS.get(name)
        if spec is None:
            raise ValueError(f"unknown indicator {name!r}; choose one of {', '.join(sorted(INDICATORS))}")
        if not sources:
            sources = tuple("close" if i in ("x", "a", "values") else i for i in spec.inputs)
        if len(sources) != len(spec.inputs):
            raise ValueError(f"indicator {name!r} takes {len(spec.inputs)} input(s) {spec.inputs}, got {len(sources)}")
        args = {**spec.defaults, **params}
        unknown = set(params) - set(spec.defaults)
        if unknown:
            raise ValueError(f"indicator {name!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
        on_ticks = [self._is_tick_source(s) for s in sources]
        if any(on_ticks) and not all(on_ticks):
            raise ValueError(f"indicator {name!r} mixes tick fields and bar fields: {sources}")
        inputs = [self._input_values(s) for s in sources]
        outs = (self._build_ticks if any(on_ticks) else self._build)(spec, inputs, args)
        label = f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"
        kind = TickFieldSeries if any(on_ticks) else Series
        series = tuple(kind(f"{label}.{o}" if len(outs) > 1 else label, vals, self)
                       for o, vals in zip(spec.outputs, outs))
        return series[0] if len(series) == 1 else series

    def _input_values(self, source: Any) -> dict[str, np.ndarray]:
        if isinstance(source, Series):
            return source._vals
        if isinstance(source, str):
            return self.field(source)._vals
        raise TypeError(f"indicator input must be a field name or a Series, not {type(source).__name__}")

    def _build(self, spec, inputs, args) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def advance(self, bar: Bar) -> None:
        raise NotImplementedError

    def enter(self, bars: Sequence[Bar]) -> None:
        """Make the bars of one timestamp the current ones (before step (1) of ``Engine.step``)."""
        for bar in bars:
            self.advance(bar)

    def nonzero_symbols(self, series: Series) -> "list[str] | tuple[()]":
        raise NotImplementedError


class HistoricalMarket(Market):
    """Every bar known up front; 'now' moves forward one row per bar (backtests)."""

    def __init__(self, series: Iterable[BarSeries]) -> None:
        series = list(series)
        super().__init__(s.symbol for s in series)
        for name in BAR_FIELDS:
            self.cols[name] = {s.symbol: getattr(s, name) for s in series}
        extras = set().union(*(s.extra for s in series)) if series else set()
        for name in sorted(extras):
            self.cols[name] = {s.symbol: s.extra[name] for s in series if name in s.extra}
        self.series = {s.symbol: s for s in series}
        self._prev: dict[str, np.ndarray] = {}

    def prev_close(self, symbol: str) -> float:
        """``pre_close`` where the data has it, else the last close of the prior day (NaN on the first day)."""
        arr = self._prev.get(symbol)
        if arr is None:
            arr = self._prev[symbol] = prior_day_close(self.series[symbol])
        r = self.rows[symbol]
        return float(arr[r]) if r >= 0 else _NAN

    def _build(self, spec, inputs, args):
        outs: list[dict[str, np.ndarray]] = [{} for _ in spec.outputs]
        for sym in self.symbols:
            if not all(sym in vals for vals in inputs):
                continue
            res = spec.batch(*[np.ascontiguousarray(vals[sym], dtype=np.float64) for vals in inputs], **args)
            if not isinstance(res, tuple):
                res = (res,)
            for i, arr in enumerate(res):
                outs[i][sym] = arr
        return outs

    _build_ticks = _build    # TickMarket (engine/drivers/ticks.py): tick columns, one batch kernel per symbol

    def advance(self, bar: Bar) -> None:
        self.rows[bar.symbol] += 1

    def enter(self, bars: Sequence[Bar]) -> None:
        """Move each symbol of ``bars`` to its row; a backtest's ``Bars`` carry the rows (no Bar is made)."""
        if bars.__class__ is OneBar:
            self.rows[bars.symbol] = bars.row
        elif bars.__class__ is Bars:
            c, lo, hi = bars.chunk, bars.lo, bars.hi
            self.rows.update(zip(c.symbol[lo:hi], c.row[lo:hi]))
        else:
            rows = self.rows
            for bar in bars:
                rows[bar.symbol] += 1

    def nonzero_symbols(self, series: Series) -> "list[str] | tuple[()]":
        index = series._index
        if index is None:  # timestamp -> symbols whose bar there has a non-zero value
            index = series._index = {}
            for sym in self.symbols:
                vals = series._vals.get(sym)
                if vals is None:
                    continue
                hits = np.flatnonzero((vals != 0) & ~np.isnan(vals))
                for ts in self.series[sym].ts[hits].tolist():
                    index.setdefault(ts, []).append(sym)
        return index.get(self.now, ())


class _Buffer:
    """Growable float64 column; ``arr`` is replaced when it grows, ``n`` values are valid."""

    __slots__ = ("arr", "n")

    def __init__(self, capacity: int = 1024) -> None:
        self.arr = np.full(capacity, np.nan)
        self.n = 0


class StreamingMarket(Market):
    """Bars arrive one by one; indicators update incrementally (live trading).

    Ticks move the price too: :meth:`trade` records each tick's price, and :meth:`price` is the
    latest of the last bar's close and the last trade, so a tick-driven session marks positions,
    sizes orders and checks risk at the market's price rather than at NaN (no bar yet) or at a
    close minutes old.
    """

    def __init__(self, symbols: Iterable[str], fields: Iterable[str] = BAR_FIELDS) -> None:
        super().__init__(symbols)
        self._bufs: dict[tuple[str, str], _Buffer] = {}
        for name in fields:
            self.cols[name] = {}
            for sym in self.symbols:
                self._new_buffer(name, sym)
        self._updaters: list[tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], dict[str, Any]]] = []
        self._keys: dict[int, str] = {}
        self._last_ts: dict[str, int] = {}
        self._closes = PriorCloses()   # the prior day's close, as the exchange simulator follows it
        self._trades: dict[str, tuple[int, float]] = {}     # symbol -> (ts, price) of its last tick
        # tick fields and indicators over them: recorded from the first declaration (in on_start) on
        self._tick_on = False
        self._tick_updaters: list[tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], dict[str, Any]]] = []
        self._tick_keys: list[str] = []     # per updater output, its tick_cols key

    _has_ticks = True

    def _tick_field(self, name: str) -> dict[str, np.ndarray]:
        if not self._tick_on:
            self._tick_on = True
            for f in TICK_FIELDS:
                self.tick_cols[f] = {}
                for sym in self.symbols:
                    self._new_tick_buffer(f, sym)
        return self.tick_cols[name]

    def _new_tick_buffer(self, key: str, sym: str) -> None:
        buf = self._bufs[("~" + key, sym)] = _Buffer()
        self.tick_cols.setdefault(key, {})[sym] = buf.arr

    def _build_ticks(self, spec, inputs, args):
        outs: list[dict[str, np.ndarray]] = []
        for o in spec.outputs:
            key = f"#{len(self._bufs)}:{spec.name}.{o}"
            for sym in self.symbols:
                self._new_tick_buffer(key, sym)
            outs.append(self.tick_cols[key])
            self._tick_keys.append(key)
        streams = {sym: spec.stream(**args) for sym in self.symbols}
        self._tick_updaters.append((inputs, outs, streams))
        return outs

    def on_tick(self, tick: Any) -> None:
        """A tick: its price becomes the symbol's price; with tick fields declared, its fields are appended
        and the indicators over them updated (the same float operations as the batch forms)."""
        sym = tick.symbol
        self._trades[sym] = (tick.ts, tick.price)
        self.last[sym] = tick
        if not self._tick_on or sym not in self.tick_rows:
            return
        bid, ask = float(tick.bid), float(tick.ask)
        app = self._tick_append
        for name, v in (("price", tick.price), ("size", tick.size), ("bid", bid), ("ask", ask),
                        ("mid", (bid + ask) * 0.5), ("spread", ask - bid), ("bid_size", tick.bid_size),
                        ("ask_size", tick.ask_size)):
            app(name, sym, float(v))
        row = self.tick_rows[sym] + 1
        keys = iter(self._tick_keys)
        for inputs, outs, streams in self._tick_updaters:
            res = streams[sym].update(*[float(vals[sym][row]) for vals in inputs])
            if not isinstance(res, tuple):
                res = (res,)
            for _vals, value in zip(outs, res):
                app(next(keys), sym, value)
        self.tick_rows[sym] = row

    def _tick_append(self, key: str, sym: str, value: float) -> None:
        buf = self._bufs[("~" + key, sym)]
        if buf.n == len(buf.arr):
            grown = np.full(2 * len(buf.arr), np.nan)
            grown[:buf.n] = buf.arr
            buf.arr = grown
            self.tick_cols[key][sym] = grown
        buf.arr[buf.n] = value
        buf.n += 1

    def _new_buffer(self, key: str, sym: str) -> None:
        buf = self._bufs[(key, sym)] = _Buffer()
        self.cols.setdefault(key, {})[sym] = buf.arr

    def _build(self, spec, inputs, args):
        outs: list[dict[str, np.ndarray]] = []
        for o in spec.outputs:
            key = f"#{len(self._bufs)}:{spec.name}.{o}"
            vals: dict[str, np.ndarray] = {}
            for sym in self.symbols:
                buf = self._bufs[(key, sym)] = _Buffer()
                vals[sym] = buf.arr
            self.cols[key] = vals
            self._keys[id(vals)] = key
            outs.append(vals)
        streams = {sym: spec.stream(**args) for sym in self.symbols}
        self._updaters.append((inputs, outs, streams))
        return outs

    def advance(self, bar: Bar) -> None:
        sym = bar.symbol
        for name in BAR_FIELDS:
            self._append(name, sym, getattr(bar, name))
        for inputs, outs, streams in self._updaters:
            row = self.rows[sym] + 1
            res = streams[sym].update(*[float(vals[sym][row]) for vals in inputs])
            if not isinstance(res, tuple):
                res = (res,)
            for vals, value in zip(outs, res):
                self._append(self._keys[id(vals)], sym, value)
        self.rows[sym] += 1
        self._last_ts[sym] = bar.ts
        self._closes.on_bar(sym, bar.ts, bar.close)

    def trade(self, symbol: str, ts: int, price: float) -> None:
        """A tick: ``price`` traded in ``symbol`` at ``ts``."""
        self._trades[symbol] = (ts, price)

    def price(self, symbol: str) -> float:
        """The latest known price: the last trade if it is not older than the last bar, else the last close."""
        t = self._trades.get(symbol)
        if t is not None and t[0] >= self._last_ts.get(symbol, t[0]):
            return t[1]
        return super().price(symbol)

    def prev_close(self, symbol: str) -> float:
        """The last close of the prior day (NaN on the first day seen); bars carry no pre_close."""
        return self._closes.prev_close(symbol)

    def nonzero_symbols(self, series: Series) -> list[str]:
        now, rows, vals = self.now, self.rows, series._vals
        return [s for s in self.symbols if self._last_ts.get(s) == now and vals[s][rows[s]] != 0
                and vals[s][rows[s]] == vals[s][rows[s]]]

    def _append(self, key: str, sym: str, value: float) -> None:
        buf = self._bufs[(key, sym)]
        if buf.n == len(buf.arr):
            grown = np.full(2 * len(buf.arr), np.nan)
            grown[:buf.n] = buf.arr
            buf.arr = grown
            self.cols[key][sym] = grown
        buf.arr[buf.n] = value
        buf.n += 1


def prior_day_close(s: BarSeries) -> np.ndarray:
    """Per bar, the close of the last bar of the previous day (NaN on the first day); ``pre_close`` wins where given."""
    n = len(s)
    out = np.full(n, np.nan)
    if n:
        day = s.ts // NS_PER_DAY
        first = np.flatnonzero(np.concatenate(([True], day[1:] != day[:-1])))  # first row of each day
        day_no = np.cumsum(np.concatenate(([True], day[1:] != day[:-1]))) - 1
        base = np.concatenate(([np.nan], s.close[first[1:] - 1]))                # close before each day
        out = base[day_no]
    pre = s.extra.get("pre_close")
    if pre is not None:
        out = np.where(np.isnan(pre), out, pre)
    return out
