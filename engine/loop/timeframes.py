"""Higher timeframes of a symbol's bars inside a run: ``ctx.subscribe(symbol, "5m")``.

The run's own bars (the base timeframe) drive the engine as always. Each subscription feeds them
to a streaming :class:`tradeloop.data.resample.Resampler`; a higher bar reaches the strategy only
once it has closed (with ``end`` labels at the step of the base bar stamped with its end, so the
5m bar 09:35 arrives with the 1m bar 09:35), through ``Strategy.on_timeframe_bar(ctx, timeframe,
bar)`` after that step's ``on_bar``/``on_bars``; orders placed there route at the same step. The
same code runs in backtests and live (both call ``Engine.step``), so the bars are the same.

Bars built from ticks (``ctx.subscribe(symbol, "1m", source="ticks")``, or ``Strategy.timeframes =
{"1m": {"source": "ticks"}}``): each subscription feeds the symbol's ticks to a streaming
:class:`tradeloop.data.resample.BarBuilder` (the bars of :func:`~tradeloop.data.resample.bars_from_ticks`).
``engine.tick``, ``engine.step`` and ``engine.stop`` are wrapped, and the tick backtest (every tick through
``Engine.tick`` once a tick subscription exists) and the live driver call the same three, so the rule is
the same in both: a bar closes at the first event (a tick of any symbol, or a bar step) stamped after its
end, or at its symbol's tick that opens the next bucket (``start`` labels: a tick exactly at the end), and
the open bars close at the end of the run, before ``on_stop``. A closed bar is in the view (``.last``)
before that event's callbacks, and reaches ``on_timeframe_bar`` after them (after ``on_tick`` /
``on_bar``); orders placed there route at that event, like ``on_tick``'s. Timers fire only at events, so
they close nothing on their own (the same in a backtest and live).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tradeloop.data.resample import BarBuilder, Resampler, timeframe_ns
from tradeloop.data.schema import BAR_FIELDS, Bar, Bars, OneBar, Tick
from tradeloop.data.sessions import Sessions

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.engine.loop.core import Engine


class TimeframeView:
    """The closed bars of one symbol at one higher timeframe, oldest first (what ``subscribe`` returns)."""

    def __init__(self, symbol: str, timeframe: str, resampler: "Resampler | BarBuilder", source: str = "bars") -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.resampler = resampler      # a BarBuilder for source="ticks"
        self.source = source
        self.bars: list[Bar] = []

    def __len__(self) -> int:
        return len(self.bars)

    @property
    def last(self) -> Bar | None:
        """The latest closed bar (None before the first closes)."""
        return self.bars[-1] if self.bars else None

    def history(self, field: str = "close", n: int = 1) -> np.ndarray:
        """The last ``n`` values of a field (``open``..``volume``, ``amount``, ``ts``) of the closed bars."""
        if field not in (*BAR_FIELDS, "amount", "ts"):
            raise KeyError(f"no bar field {field!r} at {self.timeframe}")
        vals = [getattr(b, field) for b in self.bars[-n:]] if n > 0 else []
        out = np.array(vals, dtype=np.int64 if field == "ts" else np.float64)
        out.flags.writeable = False
        return out

    def __repr__(self) -> str:
        src = " from ticks" if self.source == "ticks" else ""
        return f"TimeframeView({self.symbol} {self.timeframe}{src}, {len(self.bars)} closed)"


def _deliver_closed(engine: "Engine", closed: list[tuple[TimeframeView, Bar]]) -> None:
    """Hand just-closed higher bars to ``on_timeframe_bar``, then act on what that did (notices, orders,
    cash log) as the step does after its own callbacks."""
    ctx, callback = engine.ctx, engine.strategy.on_timeframe_bar
    for view, bar in closed:
        callback(ctx, view.timeframe, bar)
    if engine._notes:
        engine._deliver()
    if ctx._new:
        engine._route()
    if engine._dirty:
        engine._snapshot()


class Subscriptions:
    """Every (symbol, timeframe) a strategy subscribed to; wraps ``engine.step`` on the first one."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.views: dict[tuple[str, str], TimeframeView] = {}
        self.by_symbol: dict[str, list[TimeframeView]] = {}
        self.tick_views: list[TimeframeView] = []   # source="ticks", by (symbol, length)
        self._installed = False
        self._ticks_installed = False
        self._started = False

    @property
    def wants_ticks(self) -> bool:
        """Whether every tick must go through ``Engine.tick`` (bars are built from ticks)."""
        return bool(self.tick_views)

    def subscribe(self, symbol: str, timeframe: str, sessions: "Sessions | str | None" = None, *,
                  label: str | None = None, base: str | None = None, source: str = "bars",
                  price: str = "auto", tz: str | None = None) -> TimeframeView:
        if source not in ("bars", "ticks"):
            raise ValueError(f"subscribe: source must be 'bars' or 'ticks', not {source!r}")
        key = (symbol, timeframe)
        if key in self.views:
            if self.views[key].source != source:
                raise ValueError(f"subscribe: {symbol} {timeframe} is already subscribed from {self.views[key].source}")
            return self.views[key]
        market = self.engine.market
        if symbol not in market.rows:
            raise ValueError(f"subscribe: unknown symbol {symbol!r}; this run trades {', '.join(market.symbols)}")
        if self._started:
            raise RuntimeError("subscribe to timeframes in on_start (or declare Strategy.timeframes)")
        timeframe_ns(timeframe)
        if source == "ticks":
            return self._subscribe_ticks(symbol, timeframe, sessions, label, price, tz)
        series = getattr(market, "series", {}).get(symbol)
        tz = series.tz if series is not None else None
        if base is None and series is not None and len(series) > 1:   # the base bars' length, from the data
            d = np.diff(series.ts[:1000])
            d = d[d > 0]
            base_ns = int(d.min()) if len(d) else None
        else:
            base_ns = timeframe_ns(base) if base is not None else None
        view = TimeframeView(symbol, timeframe, Resampler(symbol, timeframe, sessions, label=label, base=base_ns,
                                                          data_tz=tz))
        self.views[key] = view
        self.by_symbol.setdefault(symbol, []).append(view)
        self.by_symbol[symbol].sort(key=lambda v: (timeframe_ns(v.timeframe) or 1 << 62))
        if not self._installed:
            self._install()
        return view

    def _subscribe_ticks(self, symbol: str, timeframe: str, sessions: Any, label: str | None, price: str,
                         tz: str | None) -> TimeframeView:
        # the ticks' zone: given, or a tick backtest's data (TickMarket.tz); live, naive (wall time) unless given
        data_tz = tz if tz is not None else getattr(self.engine.market, "tick_tz", None)
        view = TimeframeView(symbol, timeframe, BarBuilder(symbol, timeframe, sessions, label=label, price=price,
                                                           data_tz=data_tz), source="ticks")
        self.views[(symbol, timeframe)] = view
        self.tick_views.append(view)
        self.tick_views.sort(key=lambda v: (v.symbol, timeframe_ns(v.timeframe) or 1 << 62, v.timeframe))
        if not self._ticks_installed:
            self._install_ticks()
        return view

    def _install_ticks(self) -> None:
        """Wrap ``engine.tick``/``step``/``stop``: tick-built bars close by the rule of the module docstring."""
        engine = self.engine
        inner_tick, inner_step, inner_stop = engine.tick, engine.step, engine.stop
        views = self.tick_views

        def due(ts: int | None, tick: Tick | None = None) -> list[tuple[TimeframeView, Bar]]:
            closed: list[tuple[TimeframeView, Bar]] = []
            for view in views:
                b = view.resampler
                if b.cur is not None and (ts is None or ts > b.cur.end):
                    done = b.flush(ts)
                else:
                    done = []
                if tick is not None and view.symbol == tick.symbol:
                    done += b.update(tick)
                for bar in done:
                    view.bars.append(bar)
                    closed.append((view, bar))
            return closed

        def deliver(closed: list[tuple[TimeframeView, Bar]]) -> None:
            _deliver_closed(engine, closed)

        def tick(t: Tick) -> None:
            closed = due(t.ts, t)
            inner_tick(t)
            if closed:
                deliver(closed)

        def step(ts: int, bars: Sequence[Bar]) -> None:
            closed = due(ts)
            inner_step(ts, bars)
            if closed:
                deliver(closed)

        def stop() -> None:      # the end of the data closes the open bars (before on_stop)
            closed = due(None)
            if closed:
                deliver(closed)
            inner_stop()

        engine.tick, engine.step, engine.stop = tick, step, stop
        self._ticks_installed = True

    def _install(self) -> None:
        engine = self.engine
        inner = engine.step
        by_symbol = self.by_symbol

        def step(ts: int, bars: Sequence[Bar]) -> None:
            closed: list[tuple[TimeframeView, Bar]] = []
            cls = bars.__class__
            if cls is OneBar:
                mine = [bars[0]] if bars.symbol in by_symbol else []
            elif cls is Bars:
                syms = bars.symbols
                mine = [bars[i] for i, s in enumerate(syms) if s in by_symbol]
            else:
                mine = [b for b in bars if b.symbol in by_symbol]
            for bar in mine:              # the higher bars this bar completes: visible to on_bar already
                for view in by_symbol[bar.symbol]:
                    for done in view.resampler.update(bar):
                        view.bars.append(done)
                        closed.append((view, done))
            inner(ts, bars)
            if closed:
                _deliver_closed(engine, closed)

        engine.step = step
        self._installed = True

    def declare(self, declared: Any) -> None:
        """``Strategy.timeframes``: ``("5m", "30m")`` for every symbol, or ``{"5m": {"sessions": "cn-a"}}``
        (``{"1m": {"source": "ticks"}}``: built from the ticks)."""
        if not declared:
            return
        items = declared.items() if isinstance(declared, dict) else ((tf, {}) for tf in declared)
        for tf, opts in items:
            for sym in self.engine.market.symbols:
                self.subscribe(sym, tf, **dict(opts or {}))

    def started(self) -> None:
        self._started = True
