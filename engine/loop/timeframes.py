"""Higher timeframes of a symbol's bars inside a run: ``ctx.subscribe(symbol, "5m")``.

The run's own bars (the base timeframe) drive the engine as always. Each subscription feeds them
to a streaming :class:`tradeloop.data.resample.Resampler`; a higher bar reaches the strategy only
once it has closed (with ``end`` labels at the step of the base bar stamped with its end, so the
5m bar 09:35 arrives with the 1m bar 09:35), through ``Strategy.on_timeframe_bar(ctx, timeframe,
bar)`` after that step's ``on_bar``/``on_bars``; orders placed there route at the same step. The
same code runs in backtests and live (both call ``Engine.step``), so the bars are the same.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tradeloop.data.resample import Resampler, timeframe_ns
from tradeloop.data.schema import BAR_FIELDS, Bar, Bars, OneBar
from tradeloop.data.sessions import Sessions

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.engine.loop.core import Engine


class TimeframeView:
    """The closed bars of one symbol at one higher timeframe, oldest first (what ``subscribe`` returns)."""

    def __init__(self, symbol: str, timeframe: str, resampler: Resampler) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.resampler = resampler
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
        return f"TimeframeView({self.symbol} {self.timeframe}, {len(self.bars)} closed)"


class Subscriptions:
    """Every (symbol, timeframe) a strategy subscribed to; wraps ``engine.step`` on the first one."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.views: dict[tuple[str, str], TimeframeView] = {}
        self.by_symbol: dict[str, list[TimeframeView]] = {}
        self._installed = False
        self._started = False

    def subscribe(self, symbol: str, timeframe: str, sessions: "Sessions | str | None" = None, *,
                  label: str | None = None, base: str | None = None) -> TimeframeView:
        key = (symbol, timeframe)
        if key in self.views:
            return self.views[key]
        market = self.engine.market
        if symbol not in market.rows:
            raise ValueError(f"subscribe: unknown symbol {symbol!r}; this run trades {', '.join(market.symbols)}")
        if self._started:
            raise RuntimeError("subscribe to timeframes in on_start (or declare Strategy.timeframes)")
        timeframe_ns(timeframe)
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

    def _install(self) -> None:
        engine = self.engine
        inner = engine.step
        by_symbol = self.by_symbol
        strategy, ctx = engine.strategy, engine.ctx
        callback = strategy.on_timeframe_bar

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
                for view, done in closed:
                    callback(ctx, view.timeframe, done)
                if engine._notes:
                    engine._deliver()
                if ctx._new:
                    engine._route()
                if engine._dirty:
                    engine._snapshot()

        engine.step = step
        self._installed = True

    def declare(self, declared: Any) -> None:
        """``Strategy.timeframes``: ``("5m", "30m")`` for every symbol, or ``{"5m": {"sessions": "cn-a"}}``."""
        if not declared:
            return
        items = declared.items() if isinstance(declared, dict) else ((tf, {}) for tf in declared)
        for tf, opts in items:
            for sym in self.engine.market.symbols:
                self.subscribe(sym, tf, **dict(opts or {}))

    def started(self) -> None:
        self._started = True
