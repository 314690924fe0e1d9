"""The tick backtest driver: merges tick (and bar) streams into one timeline and feeds the engine.

Design (like the bar driver): every stream stays columnar (``TickSeries`` / ``BarSeries``); the
timeline is merged once, vectorized, by (timestamp, bars before ticks, sequence, symbol); it is cut
into chunks, and a chunk's ticks are made as ``Tick`` structs from C (``map(Tick, columns...)``)
and handed, in C (``map`` drained by a zero-length deque), to one small closure per tick that calls
the strategy's ``on_tick``. Only when something is pending (working orders, notices, a due timer,
orders just placed) does a tick go through the full ``Engine.tick`` (match, risk, notices, timers,
``on_tick``, route). A strategy that does not override ``on_tick`` costs nothing per tick: chunks
without pending work are skipped (no Tick is made), up to the next due timer.

Event order is the live driver's: ``LiveDriver.feed`` flushes the pending bar group before any tick,
so at equal timestamps a bar group goes first, then the ticks, in (seq, symbol) order. Bars should be
stamped when they are complete (their close time), or a bar would show a tick's price before it.

Equity is recorded cheaply: cash and positions are logged at each fill; the curve is rebuilt after
the run at the last tick of every ``sample_ns`` period (default one minute), at every fill's stamp,
at every bar step and at the end, each position marked at its symbol's last trade price (the mid
where the tick has no trade price).
"""
from __future__ import annotations

import math
import time
from collections import deque
from itertools import islice, repeat
from typing import Any, Callable, Sequence

import numpy as np

from tradeloop.brokers.quotes import QuoteRules, QuoteVenue
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import Bar, BarSeries, Tick, TickSeries
from tradeloop.risk.pipeline import RiskPipeline

from tradeloop.engine.drivers.backtest import _user_failure, fewer_gc_passes
from tradeloop.errors import StrategyError
from tradeloop.engine.loop.clock import SimulatedClock, TickClock
from tradeloop.engine.loop.core import Engine
from tradeloop.engine.loop.market import HistoricalMarket
from tradeloop.engine.loop.portfolio import Portfolio, day_ends_of
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.engine.runs.result import BacktestResult

CHUNK = 1 << 14
NS_PER_MINUTE = 60_000_000_000
_NAN = math.nan
_TICK_COLS = ("price", "size", "bid", "ask", "bid_size", "ask_size")


class TickMarket(HistoricalMarket):
    """The bars' market (indicators over bars) plus the last tick of each tick symbol: ``price`` is
    the last trade price, or the mid where the tick has none; without a tick yet, the last close."""

    def __init__(self, bars: Sequence[BarSeries], tick_symbols: Sequence[str],
                 ticks: Sequence[TickSeries] = ()) -> None:
        super().__init__(bars)
        self._bar_symbols = set(self.rows)
        for s in tick_symbols:
            self.rows.setdefault(s, -1)
        self.symbols = sorted(self.rows)
        self.last: dict[str, Tick] = {}
        self.tick_rows = {s: -1 for s in self.symbols}   # set per tick by the driver once tick fields are read
        self._ticks = {t.symbol: t for t in ticks}
        self.tick_reads = False    # a tick field or indicator over ticks was declared: the driver keeps tick_rows
        self.driving = False
        self.current: Callable[[], Tick] | None = None   # the tick being processed, while ``last`` lags (the driver)

    _has_ticks = True

    def _tick_field(self, name: str) -> dict[str, np.ndarray]:
        """A tick column per symbol as float64 (mid and spread computed as live: (bid + ask) * 0.5, ask - bid)."""
        self._declare_ticks()
        vals = self.tick_cols.get(name)
        if vals is None:
            vals = {}
            for sym, t in self._ticks.items():
                if name == "mid":
                    v = (t.bid.astype(np.float64) + t.ask.astype(np.float64)) * 0.5
                elif name == "spread":
                    v = t.ask.astype(np.float64) - t.bid.astype(np.float64)
                else:
                    v = np.ascontiguousarray(getattr(t, name), dtype=np.float64)
                vals[sym] = v
            self.tick_cols[name] = vals
        return vals

    def _build_ticks(self, spec, inputs, args):
        self._declare_ticks()
        return self._build(spec, inputs, args)

    def _declare_ticks(self) -> None:
        if self.driving and not self.tick_reads:
            raise ValueError("declare tick fields and indicators over ticks in on_start (the run keeps per-tick "
                             "rows only for those declared before the first tick)")
        self.tick_reads = True

    def on_tick(self, tick: Tick) -> None:   # Engine.tick: the driver set ``last`` (and ``tick_rows``)
        pass

    def price(self, symbol: str) -> float:
        cur = self.current
        t = cur() if cur is not None else None
        if t is None or t.symbol != symbol:
            t = self.last.get(symbol)
        if t is not None:
            p = t.price
            return p if p == p else (t.bid + t.ask) * 0.5
        return super().price(symbol) if symbol in self._bar_symbols else _NAN

    def trade(self, symbol: str, ts: int, price: float) -> None:   # Engine.tick: the driver set ``last``
        pass

    def prev_close(self, symbol: str) -> float:
        return super().prev_close(symbol) if symbol in self._bar_symbols else _NAN


def merge_ticks(ticks: Sequence[TickSeries], bars: Sequence[BarSeries] = ()
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The merged timeline: (ts, kind (0 bar, 1 tick), stream index (ticks first, then bars), row).

    Order: timestamp, then bars before ticks, then the tick's ``seq``, then the stream's place
    (streams sorted by symbol)."""
    streams = list(ticks) + list(bars)
    ts = np.concatenate([s.ts for s in streams]) if streams else np.empty(0, np.int64)
    kind = np.concatenate([np.full(len(s), 1 if i < len(ticks) else 0, np.int8) for i, s in enumerate(streams)])
    src = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(streams)])
    seq = np.concatenate([s.seq if i < len(ticks) else np.zeros(len(s), np.int64) for i, s in enumerate(streams)])
    row = np.concatenate([np.arange(len(s)) for s in streams])
    order = np.lexsort((src, seq, kind, ts))
    return ts[order], kind[order], src[order], row[order]


def run_tick_backtest(strategy: Strategy, ticks: Sequence[TickSeries], bars: Sequence[BarSeries] = (), *,
                      cash: float = 100_000.0, rules: FillRules | None = None, quotes: QuoteRules | None = None,
                      risk: RiskPipeline | None = None, order_prefix: str = "O", log: Any = None,
                      sample_ns: int = NS_PER_MINUTE,
                      progress: Callable[[int, int], None] | None = None,
                      trade_from: int | None = None, partial_on_failure: bool = False) -> BacktestResult:
    """Run ``strategy`` over tick streams (and bar streams) and return a ``BacktestResult``.

    Ticks go to ``on_tick``, bars to ``on_bar``/``on_bars``; timers fire on both; orders fill on a
    :class:`tradeloop.brokers.quotes.QuoteVenue` (``rules`` for commission and lots, ``quotes`` for the
    tick rules and latency). ``result.bars`` counts the events (ticks + bars); the equity curve is
    sampled (module docstring). ``trade_from`` and ``partial_on_failure`` work as in
    :func:`tradeloop.engine.drivers.backtest.run_backtest` (orders before it refused; a failure of the
    strategy's own code raised as a ``StrategyError`` holding the result up to the failing event).
    """
    t0 = time.perf_counter()
    ticks = sorted(ticks, key=lambda s: s.symbol)
    bars = sorted(bars, key=lambda s: s.symbol)
    names = [s.symbol for s in ticks]
    if len(set(names)) != len(names):
        raise ValueError(f"two tick inputs have the same symbol: {names}")
    tzs = {s.tz for s in [*ticks, *bars]}
    if len(tzs) > 1:
        raise ValueError(f"inputs mix timezones {sorted(map(str, tzs))}: give every file the same tz")
    rules = rules or FillRules()
    market = TickMarket(bars, names, ticks)
    market.tick_tz = ticks[0].tz if ticks else None   # the zone of bars built from ticks (ctx.subscribe)
    venue = QuoteVenue(rules, quotes, tick_symbols=names)
    engine = Engine(strategy, market, Portfolio(cash), rules, risk or RiskPipeline([]), venue=venue,
                    clock=TickClock() if len(ticks) == 1 and not bars else SimulatedClock(),
                    order_prefix=order_prefix, log=log, trade_from=trade_from)
    engine.log_all_marks = True   # futures: the equity curve adds each one's variation since its last mark
    daily = rules.instruments.has_daily_settlement
    single = len(ticks) == 1 and not bars
    if single:
        ev_ts, kind, src, row = ticks[0].ts, None, None, None
    else:
        ev_ts, kind, src, row = merge_ticks(ticks, bars)
    n = len(ev_ts)
    if daily:   # futures settled daily: at the last tick of each trading day that takes Engine.tick's path
        engine.day_ends = day_ends_of(ev_ts, (ticks or bars)[0].tz if (ticks or bars) else None)
    period_last: list[np.ndarray] = []
    failure: StrategyError | None = None
    with fewer_gc_passes():
        try:
            engine.start()
            _drive(engine, ticks, bars, ev_ts, kind, src, row, sample_ns, period_last, progress)
            if daily and n:   # the last trading day settles at its last price (that tick may have been skipped)
                engine.step_index = int(ev_ts[-1])
                engine._settle_futures(int(ev_ts[-1]))
            engine.stop()
        except Exception as e:  # noqa: BLE001 - the strategy's own failure ends the run, recorded so far
            failure = _user_failure(strategy, e) if partial_on_failure else None
            if failure is None:
                raise
            cause = e
    if engine._dirty:
        engine._snapshot()
    if failure is not None:   # the events up to the failing one (its stamp: the clock's)
        n = int(np.searchsorted(ev_ts, engine.clock.now, "right"))
        ev_ts = ev_ts[:n]
        kind = None if kind is None else kind[:n]
        period_last = [p[p <= (ev_ts[-1] if n else -1)] for p in period_last]
    sample = _sample_stamps(ev_ts, kind, period_last, engine.cash_log)
    cash_c, equity, gross = _rebuild(sample, ticks, bars, engine.cash_log, engine.qty_log, float(cash),
                                     engine.portfolio.multipliers, engine.mark_log)
    result = BacktestResult(sorted(market.symbols), (ticks or bars)[0].tz if (ticks or bars) else None, float(cash),
                            sample, cash_c, equity, gross, engine.fills, list(engine.orders.values()),
                            engine.order_events, n, time.perf_counter() - t0, risk_events=list(engine.risk.events),
                            models=engine.models, trade_from=trade_from)
    if failure is not None:
        failure.result = result
        raise failure from cause
    return result


def _drive(engine: Engine, ticks: list[TickSeries], bars: list[BarSeries], ev_ts: np.ndarray, kind, src, row,
           sample_ns: int, period_last: list, progress) -> None:
    strategy, ctx = engine.strategy, engine.ctx
    clock = engine.clock
    market: TickMarket = engine.market   # type: ignore[assignment]
    last = market.last
    venue = engine.venue
    working = venue.working
    notes = engine._notes
    new = ctx._new
    heap = engine.timers.heap
    route = engine._route
    full_tick = engine.tick
    on_tick = strategy.on_tick
    calls = type(strategy).on_tick is not Strategy.on_tick
    nt = len(ticks)
    # risk monitors watch every tick, and bars built from ticks (ctx.subscribe(..., source="ticks")) need
    # every tick: both take the full path (Engine.tick, as live)
    monitors = bool(engine.risk.monitors) or engine.ctx._subs.wants_ticks

    def full(tick: Tick) -> None:
        engine.step_index = tick.ts - 1        # logs keyed by stamp: Engine.tick adds one
        full_tick(tick)

    trows = market.tick_rows if market.tick_reads else None   # tick fields read: keep each symbol's tick row
    market.driving = True

    def one(tick: Tick) -> None:
        ts = tick.ts
        if monitors:                           # risk monitors watch every tick: the full path
            last[tick.symbol] = tick
            full(tick)
            return
        last[tick.symbol] = tick
        if working or notes or new or (heap and heap[0][0] <= ts):
            full(tick)
            return
        if ts > clock.now:
            clock.now = ts
        on_tick(ctx, tick)
        if new:
            route()

    def one_at(tick: Tick, r: int) -> None:
        trows[tick.symbol] = r
        one(tick)

    # one symbol, on_tick overridden, no per-tick rows or monitors: a chunk's Ticks go to the bound on_tick
    # straight from a C-level map (one Python call per tick); the clock and the market read the current tick
    # lazily off the list iterator, and placing an order, a notice or a new timer stops the pass after the
    # current tick (the tick after it is checked for pending work as before)
    fast = kind is None and calls and trows is None and not monitors and isinstance(clock, TickClock)
    if fast:
        cur = _Cursor()
        ctx._new = new = _Watched(ctx._new, cur)
        engine._notes = notes = _Watched(engine._notes, cur)
        engine.timers.on_add = cur.stop
        sym = ticks[0].symbol

    def fast_chunk(ticks_l: list, ts_arr: np.ndarray) -> None:
        m = len(ticks_l)
        i = 0
        while i < m:
            t = ticks_l[i]
            if working or notes or new or (heap and heap[0][0] <= t.ts):
                last[sym] = t
                full(t)
                i += 1
                continue
            j = m
            if heap:   # the pass ends before the next due timer
                j = max(i + 1, int(np.searchsorted(ts_arr, heap[0][0], "left")))
            it = iter(ticks_l)
            if i:
                it.__setstate__(i)
            cur.ticks, cur.it, cur.n, cur.k = ticks_l, it, m, -1
            clock.current = market.current = cur
            try:
                deque(map(on_tick, repeat(ctx), it if j == m else islice(it, j - i)), maxlen=0)
            finally:
                k = cur.k if cur.k >= 0 else m - it.__length_hint__() - 1
                cur.it = clock.current = market.current = None
                if k >= i:
                    t = ticks_l[k]
                    last[sym] = t
                    if t.ts > clock.now:
                        clock.now = t.ts
            if new:
                route()
            i = k + 1

    single = kind is None
    if not single and nt:   # merged tick columns, in timeline order (tick events only are read)
        offsets = np.cumsum([0] + [len(s) for s in ticks])
        gidx_all = None
        tick_cols = {c: np.concatenate([getattr(s, c) for s in ticks]) for c in ("ts", *_TICK_COLS)}
        sym_names = np.array(names_of(ticks), dtype=object)
    n = len(ev_ts)
    if progress is not None:
        progress(0, n)
    a = 0
    while a < n:
        b = min(n, a + CHUNK)
        p = ev_ts[a:b + 1] // sample_ns
        period_last.append(ev_ts[a:b][p[1:] != p[:-1]] if len(p) > b - a else ev_ts[a:b][:0])
        if single:
            s = ticks[0]
            segs = [(1, a, b)]
        else:
            k = kind[a:b]
            cuts = np.flatnonzero(np.diff(k)) + 1
            los = [0, *cuts.tolist()]
            his = [*cuts.tolist(), b - a]
            segs = [(int(k[lo]), a + lo, a + hi) for lo, hi in zip(los, his)]
        for kd, lo, hi in segs:
            if kd == 0:
                _bars(engine, bars, ev_ts, src, row, nt, lo, hi)
                continue
            if single:
                def make(i: int, j: int, s=ticks[0]) -> map:
                    return map(Tick, repeat(s.symbol), s.ts[i:j].tolist(),
                               *(getattr(s, c)[i:j].tolist() for c in _TICK_COLS))
            else:
                def make(i: int, j: int) -> map:
                    g = offsets[src[i:j]] + row[i:j]
                    return map(Tick, sym_names[src[i:j]].tolist(), tick_cols["ts"][g].tolist(),
                               *(tick_cols[c][g].tolist() for c in _TICK_COLS))
            if fast:
                fast_chunk(list(make(lo, hi)), ev_ts[lo:hi])
                continue
            if calls:
                if trows is None:
                    deque(map(one, make(lo, hi)), maxlen=0)
                else:
                    deque(map(one_at, make(lo, hi), range(lo, hi) if single else row[lo:hi].tolist()), maxlen=0)
                continue
            i = lo
            while i < hi:   # no on_tick: skip to the next tick with work (a due timer, working orders)
                if not (working or notes or new or monitors):
                    j = hi
                    if heap:
                        j = max(i, min(hi, lo + int(np.searchsorted(ev_ts[lo:hi], heap[0][0], "left"))))
                    if j > i:
                        for t, r in _last_ticks(make, single, src, row, i, j):
                            last[t.symbol] = t
                            if trows is not None:
                                trows[t.symbol] = r
                        if ev_ts[j - 1] > clock.now:
                            clock.now = int(ev_ts[j - 1])
                        i = j
                        continue
                t = next(make(i, i + 1))
                last[t.symbol] = t
                if trows is not None:
                    trows[t.symbol] = i if single else int(row[i])
                full(t)
                i += 1
        if progress is not None:
            progress(b, n)
        a = b


class _Cursor:
    """The tick being processed in a C-level pass over a list of ticks: read off the list iterator's
    position (``k`` once the pass was told to stop after it)."""

    __slots__ = ("ticks", "it", "n", "k")

    def __init__(self) -> None:
        self.ticks: list = []
        self.it: Any = None
        self.n = 0
        self.k = -1

    def __call__(self) -> Tick:
        k = self.k
        if k < 0:
            k = self.n - self.it.__length_hint__() - 1
        return self.ticks[k]

    def stop(self) -> None:
        """Stop the pass after the current tick (an order placed, a notice, a timer added)."""
        it = self.it
        if it is not None and self.k < 0:
            self.k = self.n - it.__length_hint__() - 1
            it.__setstate__(self.n)


class _Watched(list):
    """A list (the orders placed, the notices) that stops the cursor's pass when something is appended."""

    __slots__ = ("cursor",)

    def __init__(self, items: list, cursor: _Cursor) -> None:
        super().__init__(items)
        self.cursor = cursor

    def append(self, item: Any) -> None:
        list.append(self, item)
        self.cursor.stop()


def names_of(ticks: list[TickSeries]) -> list[str]:
    return [s.symbol for s in ticks]


def _last_ticks(make, single: bool, src, row, i: int, j: int) -> list[tuple[Tick, int]]:
    """The last tick of each symbol among tick events i..j-1, with its row in its stream."""
    if single:
        return [(next(make(j - 1, j)), j - 1)]
    s = src[i:j]
    uniq, first_rev = np.unique(s[::-1], return_index=True)
    out = []
    for r in first_rev:
        k = i + len(s) - 1 - int(r)
        out.append((next(make(k, k + 1)), int(row[k])))
    return out


def _bars(engine: Engine, bars: list[BarSeries], ev_ts, src, row, nt: int, lo: int, hi: int) -> None:
    """Bar events lo..hi-1: one ``Engine.step`` per timestamp, bars in symbol order."""
    i = lo
    while i < hi:
        ts = int(ev_ts[i])
        j = i
        while j < hi and ev_ts[j] == ts:
            j += 1
        group = [bars[int(src[k]) - nt].bar(int(row[k])) for k in range(i, j)]
        engine.step_index = ts - 1
        engine.step(ts, group)
        i = j


def _sample_stamps(ev_ts: np.ndarray, kind, period_last: list[np.ndarray], cash_log) -> np.ndarray:
    parts = [*period_last, np.array([t for t, _ in cash_log], np.int64)]
    if len(ev_ts):
        parts.append(ev_ts[-1:])
    if kind is not None:
        parts.append(ev_ts[kind == 0])
    out = np.unique(np.concatenate(parts).astype(np.int64)) if parts else np.empty(0, np.int64)
    if len(ev_ts):
        out = out[out >= ev_ts[0]]
    return out


def _carry_at(stamps: np.ndarray, log_ts: list[int], values: list[float], start: float) -> np.ndarray:
    """Per stamp, the value logged last at or before it (``start`` before the first entry)."""
    if not log_ts:
        return np.full(len(stamps), start)
    idx = np.searchsorted(np.asarray(log_ts, np.int64), stamps, "right")
    return np.concatenate(([start], np.asarray(values, np.float64)))[idx]


def _rebuild(stamps: np.ndarray, ticks: list[TickSeries], bars: list[BarSeries], cash_log, qty_log,
             start_cash: float, multipliers=None, mark_log=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cash, equity, gross exposure per stamp. A future (``multipliers``) adds ``pending + qty x (price - mark)
    x multiplier`` to equity (its (stamp, symbol, mark, pending) in ``mark_log``) and |notional x multiplier|."""
    cash = _carry_at(stamps, [t for t, _ in cash_log], [c for _, c in cash_log], start_cash)
    equity = cash.copy()
    gross = np.zeros(len(stamps))
    by_symbol: dict[str, tuple[list[int], list[float]]] = {}
    for ts, symbol, qty in qty_log:
        t, q = by_symbol.setdefault(symbol, ([], []))
        t.append(ts)
        q.append(qty)
    tick_of = {s.symbol: s for s in ticks}
    bar_of = {s.symbol: s for s in bars}
    for symbol in sorted(by_symbol):
        t, q = by_symbol[symbol]
        value = _carry_at(stamps, t, q, 0.0)
        s = tick_of.get(symbol)
        if s is not None:
            idx = np.searchsorted(s.ts, stamps, "right") - 1
            ok = idx >= 0
            k = np.maximum(idx, 0)
            mark = s.price[k].astype(np.float64)   # float64 math on compact (float32) columns too
            mid = (s.bid[k].astype(np.float64) + s.ask[k].astype(np.float64)) * 0.5
            mark = np.where(np.isnan(mark), mid, mark)
        else:
            bs = bar_of[symbol]
            idx = np.searchsorted(bs.ts, stamps, "right") - 1
            ok = idx >= 0
            mark = bs.close[np.maximum(idx, 0)]
        mark = np.where(ok, mark, 0.0)
        m = multipliers.get(symbol) if multipliers else None
        if m is not None:   # a future: the variation since its last mark (the rest is in cash)
            log_m = [(t_, mk, pd) for t_, s_, mk, pd in mark_log if s_ == symbol]
            last = _carry_at(stamps, [x[0] for x in log_m], [x[1] for x in log_m], 0.0)
            pend = _carry_at(stamps, [x[0] for x in log_m], [x[2] for x in log_m], 0.0)
            equity += pend + value * (mark - last) * m
            gross += np.abs(value * mark * m)
            continue
        value = value * mark
        equity += value
        gross += np.abs(value)
    return cash, equity, gross
