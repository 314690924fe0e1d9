"""The backtest driver: merges the symbols' bars into one timeline and feeds the engine.

Speed comes from the data layout: each symbol's bars stay columnar (numpy); timelines are
merged once with a vectorized sort; each timestamp's bars reach the strategy as a lazy group
that makes Bar objects only if they are looked at; the equity curve is rebuilt after the run,
vectorized, from the cash and positions recorded at the steps that had fills, and the day's closes.
"""
from __future__ import annotations

import gc
import time
import traceback
from collections import deque
from contextlib import contextmanager
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.actions import ActionTable
from tradeloop.data.schema import BarChunk, Bars, BarSeries, OneBar
from tradeloop.risk.pipeline import RiskPipeline

from tradeloop.engine.loop.clock import SimulatedClock
from tradeloop.engine.loop.core import Engine
from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.loop.market import HistoricalMarket
from tradeloop.engine.loop.portfolio import Portfolio, day_ends_of
from tradeloop.engine.loop.strategy import Strategy, one_line, strategy_failure
from tradeloop.errors import StrategyError

CHUNK = 1 << 14


def merge_timeline(series: list[BarSeries]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """All bars in (timestamp, symbol) order: (ts, symbol index, [open, high, low, close, volume])."""
    ts, sym, columns = _merge(series)
    return ts, sym, columns(0, len(ts))


FIELDS = ("open", "high", "low", "close", "volume")


def _merge(series: list[BarSeries]
           ) -> tuple[np.ndarray, np.ndarray, Callable[[int, int], list[np.ndarray]]]:
    """``merge_timeline`` with the columns as ``columns(a, b)``: the OHLCV of merged bars a..b-1.

    With one shared calendar the columns are interleaved chunk by chunk when asked for, not
    all at once: a million fresh float64s per field cost more in page faults than the copy.
    """
    if len(series) == 1:
        s = series[0]
        return s.ts, np.zeros(len(s), np.int32), lambda a, b: [getattr(s, f)[a:b] for f in FIELDS]
    first = series[0].ts
    n = len(series)
    if all(len(s) == len(first) and np.array_equal(s.ts, first) for s in series[1:]):  # one calendar: interleave
        def interleaved(a: int, b: int) -> list[np.ndarray]:
            lo, hi = a // n, -(-b // n)  # the timestamps holding bars a..b-1
            return [np.stack([getattr(s, f)[lo:hi] for s in series], axis=1).ravel()[a - lo * n:b - lo * n]
                    for f in FIELDS]
        return np.repeat(first, n), np.tile(np.arange(n, dtype=np.int32), len(first)), interleaved
    ts = np.concatenate([s.ts for s in series])
    sym = np.repeat(np.arange(n, dtype=np.int32), [len(s) for s in series])
    order = np.lexsort((sym, ts))
    cols = [np.concatenate([getattr(s, f) for s in series])[order] for f in FIELDS]
    return ts[order], sym[order], lambda a, b: [c[a:b] for c in cols]


@contextmanager
def fewer_gc_passes(young: int = 100_000):
    """Collect young objects less often while the loop runs (it allocates many short-lived ones)."""
    old = gc.get_threshold()
    gc.set_threshold(young, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run_backtest(strategy: Strategy, series: list[BarSeries], *, cash: float = 100_000.0,
                 rules: FillRules | None = None, risk: RiskPipeline | None = None,
                 order_prefix: str = "O", log: Any = None,
                 progress: Callable[[int, int], None] | None = None,
                 trade_from: int | None = None, partial_on_failure: bool = False,
                 actions: Mapping[str, ActionTable] | None = None,
                 rolls: Sequence[Any] | None = None) -> BacktestResult:
    """Run ``strategy`` over ``series`` and return the result (nothing is written to disk).

    With ``trade_from`` (int64 ns) the strategy sees every bar but its orders placed before that
    timestamp are rejected: earlier bars only warm up indicators and features.

    With ``partial_on_failure``, when the strategy's own code raises (any callback, ``on_start`` to
    ``on_stop``) or the model it declares cannot be opened, a :class:`StrategyError` naming the
    strategy's file and line is raised instead, its ``result`` holding everything up to the failing
    step (the assembly records it as a failed run). Without it the exception propagates as raised.

    ``actions``: symbol -> the corporate actions to apply (``data.actions.resolve``; the assembly builds
    them from the run's settings): dividends and splits at their ex-date's open, before matching. None
    (the default) applies none, whatever columns the series hold.

    ``rolls``: futures rolls (engine/loop/rolls.py ``Roll``): the position in the old contract is closed and
    reopened in the new one by two market orders tagged ``roll``; what was done is ``result.rolls``.
    """
    t0 = time.perf_counter()
    series = sorted(series, key=lambda s: s.symbol)
    names = [s.symbol for s in series]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two inputs have the same symbol {', '.join(dup)}; name them with --symbol")
    tzs = {s.tz for s in series}
    if len(tzs) > 1:
        raise ValueError(f"inputs mix timezones {sorted(map(str, tzs))}: give every file the same tz")
    rules = rules or FillRules()
    risk = risk or RiskPipeline([])
    market = HistoricalMarket(series)
    portfolio = Portfolio(cash)
    engine = Engine(strategy, market, portfolio, rules, risk, venue=SimulatedVenue(rules), clock=SimulatedClock(),
                    order_prefix=order_prefix, log=log, trade_from=trade_from, actions=_by_ts(actions, names),
                    rolls=rolls)
    ev_ts, ev_sym, columns = _merge(series)
    n = len(ev_ts)
    if rules.instruments.has_daily_settlement:   # futures settled daily: at each trading day's last step
        engine.day_ends = day_ends_of(ev_ts, series[0].tz if series else None)
    failure: StrategyError | None = None
    with fewer_gc_passes():
        try:
            engine.start()
            _drive(engine, names, ev_ts, ev_sym, columns, progress)
            engine.stop()
        except Exception as e:  # noqa: BLE001 - the strategy's own failure ends the run, recorded so far
            failure = _user_failure(strategy, e) if partial_on_failure else None
            if failure is None:
                raise
            cause = e
    steps = ev_ts if len(series) == 1 else ev_ts[np.concatenate(([True], np.diff(ev_ts) != 0))]  # sorted: no np.unique
    if failure is not None:   # the steps up to the failing one, with what that step had filled
        if engine._dirty:
            engine._snapshot()
        steps = steps[:max(engine.step_index + 1, 0)]
        n = int(np.searchsorted(ev_ts, steps[-1], "right")) if len(steps) else 0
    cash_c, equity, gross = rebuild_equity(steps, series, engine.cash_log, engine.qty_log, cash,
                                           engine.portfolio.multipliers, engine.mark_log)
    result = BacktestResult(names, series[0].tz if series else None, float(cash), steps, cash_c, equity, gross,
                            engine.fills, list(engine.orders.values()), engine.order_events, n,
                            time.perf_counter() - t0, risk_events=list(risk.events), models=engine.models,
                            trade_from=trade_from, actions=engine.actions_log)
    if engine._futures:
        result.margin = rebuild_margin(steps, series, engine.qty_log, rules.instruments)
    result.rolls = engine.rolls_log
    if failure is not None:
        failure.result = result
        raise failure from cause
    return result


def _by_ts(actions: Mapping[str, ActionTable] | None, names: list[str]
           ) -> dict[int, list[tuple[str, float, float]]] | None:
    """The engine's view of ``actions``: bar ts -> [(symbol, dividend, ratio)] in symbol order (inputs only)."""
    if not actions:
        return None
    out: dict[int, list[tuple[str, float, float]]] = {}
    for symbol in names:   # sorted
        table = actions.get(symbol)
        for ts, (dividend, ratio) in sorted(table.by_ts.items()) if table is not None else ():
            out.setdefault(ts, []).append((symbol, dividend, ratio))
    return out or None


def _user_failure(strategy: Strategy, e: Exception) -> StrategyError | None:
    """The StrategyError of an exception from the strategy's code, or of its declared model not opening;
    None for anything else (an engine fault, raised as it is)."""
    failure = strategy_failure(strategy, e)
    if failure is None:
        from tradeloop.models.errors import ModelError   # no model package work: just the error types
        if isinstance(e, ModelError):
            failure = StrategyError(f"strategy error: {type(strategy).__name__}.predictor "
                                    f"{getattr(strategy, 'predictor', None)!r}: {one_line(e)}",
                                    "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    return failure


def no_steps(series: list[BarSeries], cash: float) -> BacktestResult:
    """The result of a run that stopped before its first bar (its strategy could not be made)."""
    e = np.empty(0)
    series = sorted(series, key=lambda s: s.symbol)
    return BacktestResult([s.symbol for s in series], series[0].tz if series else None, float(cash),
                          np.empty(0, np.int64), e, e.copy(), e.copy(), [], [], [], 0, 0.0)


def _drive(engine: Engine, names: list[str], ev_ts: np.ndarray, ev_sym: np.ndarray,
           columns: Callable[[int, int], list[np.ndarray]], progress: Callable[[int, int], None] | None) -> None:
    """Hand every timestamp's bars to ``tradeloop.engine.step`` as a lazy ``Bars`` group, chunk by chunk.

    Chunks end on a timestamp boundary and hold views of the columns; a group is just (chunk,
    lo, hi): no Bar is made unless the strategy asks for one. The loop itself runs in C (``map``
    drained by a zero-length deque), so a timestamp costs one Python call, ``step``'s.
    """
    n = len(ev_ts)
    step = engine.step
    single = len(names) == 1
    starts = None if single else np.flatnonzero(np.diff(ev_ts)) + 1
    rows = None if single else _event_rows(ev_sym, len(names))
    sym_names = np.array(names, dtype=object)
    a = 0
    if progress is not None:
        progress(0, n)   # the total, before the first chunk: progress can say "0/n" while it runs
    while a < n:
        b = min(n, a + CHUNK)
        if starts is not None and b < n:  # move the cut to the next timestamp boundary
            k = int(np.searchsorted(starts, b))
            b = int(starts[k]) if k < len(starts) else n
        ts = ev_ts[a:b].tolist()
        chunk = BarChunk([names[0]] * (b - a) if single else sym_names[ev_sym[a:b]].tolist(), ts,
                         *columns(a, b), range(a, b) if single else rows[a:b].tolist())
        if single:
            groups = map(OneBar, repeat(chunk), range(b - a), range(1, b - a + 1), repeat(names[0]), range(a, b))
            stamps = ts
        else:
            cuts = (starts[np.searchsorted(starts, a, "right"):np.searchsorted(starts, b, "left")] - a).tolist()
            los, his = [0, *cuts], [*cuts, b - a]
            groups, stamps = map(Bars, repeat(chunk), los, his), [ts[i] for i in los]
        deque(map(step, stamps, groups), maxlen=0)
        if progress is not None:
            progress(b, n)
        a = b


def _event_rows(ev_sym: np.ndarray, n_symbols: int) -> np.ndarray:
    """Each event's row in its own symbol's series: how many earlier events have its symbol."""
    n, k = len(ev_sym), len(ev_sym) // n_symbols
    if k * n_symbols == n and np.array_equal(ev_sym, np.tile(np.arange(n_symbols, dtype=ev_sym.dtype), k)):
        return np.repeat(np.arange(k), n_symbols)  # one calendar, interleaved: the row is the timestamp's number
    order = np.argsort(ev_sym, kind="stable")
    counts = np.bincount(ev_sym, minlength=n_symbols)
    rows = np.empty(n, np.int64)
    rows[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows


def rebuild_equity(steps: np.ndarray, series: list[BarSeries], cash_log: list[tuple[int, float]],
                   qty_log: list[tuple[int, str, float]], start_cash: float,
                   multipliers: Mapping[str, float] | None = None,
                   mark_log: Sequence[tuple[int, str, float, float]] = ()
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cash, equity and gross exposure at every step, from the cash and quantity logs of the fills.

    Equity is summed in the same order as ``Portfolio.equity`` (cash, then symbols sorted),
    so it equals what the strategy saw as ``ctx.equity`` at each step, bit for bit.
    ``multipliers``: the futures (symbol -> contract multiplier). They are settled into cash at every
    step (the engine logs that cash), so they add nothing to equity and ``|qty x close x multiplier|``
    to the gross exposure. A future settled daily (``mark_log``: its (step, symbol, mark, pending) after each
    step that moved them) adds ``pending + qty x (close - mark) x multiplier``, as ``Portfolio.equity`` does.
    """
    g = len(steps)
    marks: dict[str, list[tuple[int, float, float]]] = {}
    for step, symbol, mk, pend in mark_log:
        marks.setdefault(symbol, []).append((step, mk, pend))
    cash = np.full(g, start_cash)
    if cash_log:
        cash = _carry(g, cash_log, start_cash)
    equity = cash.copy()
    gross = np.zeros(g)
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for step, symbol, qty in qty_log:
        by_symbol.setdefault(symbol, []).append((step, qty))
    for s in series:  # sorted by symbol
        log = by_symbol.get(s.symbol)
        if not log:
            continue
        value = _carry(g, log, 0.0)
        m = multipliers.get(s.symbol) if multipliers else None
        if len(s.ts) == g and np.array_equal(s.ts, steps):
            mark = s.close
        else:
            idx = np.searchsorted(s.ts, steps, side="right") - 1
            mark = np.where(idx >= 0, s.close[np.maximum(idx, 0)], 0.0)
            del idx
        if s.symbol in marks:   # a future settled daily: its unsettled variation
            log_m = marks[s.symbol]
            last = _carry(g, [(st, mk) for st, mk, _ in log_m], 0.0)
            pend = _carry(g, [(st, pd) for st, _, pd in log_m], 0.0)
            var = value * (mark - last) * m
            equity += pend + var
        np.multiply(value, mark, out=value)
        if m is None:
            equity += value
        else:   # a future: its variation is in cash already; the notional counts x multiplier
            np.multiply(value, m, out=value)
        np.abs(value, out=value)
        gross += value
    return cash, equity, gross


def rebuild_margin(steps: np.ndarray, series: list[BarSeries], qty_log: list[tuple[int, str, float]],
                   instruments: Any) -> np.ndarray:
    """Initial margin in use at every step: sum over futures of |qty| x close x multiplier x margin rate, from
    the quantity log (what ``Engine.margin_in_use`` answers after each step)."""
    g = len(steps)
    out = np.zeros(g)
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for step, symbol, qty in qty_log:
        by_symbol.setdefault(symbol, []).append((step, qty))
    for s in series:
        log = by_symbol.get(s.symbol)
        fut = instruments.future(s.symbol) if instruments else None
        if not log or fut is None:
            continue
        idx = np.searchsorted(s.ts, steps, side="right") - 1
        mark = np.where(idx >= 0, s.close[np.maximum(idx, 0)], 0.0)
        out += np.abs(_carry(g, log, 0.0)) * mark * fut.multiplier * fut.margin_rate
    return out


def _carry(g: int, log: list[tuple[int, float]], start: float) -> np.ndarray:
    """Per step 0..g-1, the value logged last at or before it (``start`` before the first).

    ``log`` holds (step, value) pairs with steps that never decrease. Each logged step gets the
    1-based position of its last entry and a running maximum carries it forward: O(g), no search.
    """
    steps = np.array(list(map(itemgetter(0), log)), dtype=np.int64)
    np.maximum(steps, 0, out=steps)  # a step -1 (before the first bar) counts from step 0
    last = np.append(steps[1:] != steps[:-1], True)  # the last entry of each logged step
    idx = np.zeros(g, np.int64)
    idx[steps[last]] = np.flatnonzero(last) + 1
    np.maximum.accumulate(idx, out=idx)
    values = np.array(list(map(itemgetter(1), log)), dtype=np.float64)
    return np.concatenate(([start], values))[idx]
