"""The backtest driver: merges the symbols' bars into one timeline and feeds the engine.

Speed comes from the data layout: each symbol's bars stay columnar (numpy); timelines are
merged once with a vectorized sort; bars are turned into Python objects chunk by chunk just
before the strategy sees them; the equity curve is rebuilt after the run, vectorized, from
the cash and positions recorded at the steps that had fills, and the day's closes.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from itertools import repeat
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from brokers.orders import Fill, Order, OrderEvent
from brokers.sim import FillRules
from data.schema import Bar, BarSeries
from risk.events import RiskEvent
from risk.pipeline import RiskPipeline

from .core import Engine
from .market import HistoricalMarket
from .portfolio import Portfolio
from .strategy import Strategy

CHUNK = 1 << 14


@dataclass
class BacktestResult:
    """What a backtest produced: the equity curve per timestamp, orders, fills, events."""

    symbols: list[str]
    tz: str | None
    start_cash: float
    ts: np.ndarray
    cash: np.ndarray
    equity: np.ndarray
    gross_exposure: np.ndarray
    fills: list[Fill]
    orders: list[Order]
    order_events: list[OrderEvent]
    bars: int
    elapsed_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    risk_events: list[RiskEvent] = field(default_factory=list)

    @property
    def final_value(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.start_cash


def merge_timeline(series: list[BarSeries]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """All bars in (timestamp, symbol) order: (ts, symbol index, [open, high, low, close, volume])."""
    if len(series) == 1:
        s = series[0]
        return s.ts, np.zeros(len(s), np.int32), [s.open, s.high, s.low, s.close, s.volume]
    first = series[0].ts
    fields = ("open", "high", "low", "close", "volume")
    if all(len(s) == len(first) and np.array_equal(s.ts, first) for s in series[1:]):  # one calendar: interleave
        n = len(series)
        return (np.repeat(first, n), np.tile(np.arange(n, dtype=np.int32), len(first)),
                [np.stack([getattr(s, f) for s in series], axis=1).ravel() for f in fields])
    ts = np.concatenate([s.ts for s in series])
    sym = np.repeat(np.arange(len(series), dtype=np.int32), [len(s) for s in series])
    order = np.lexsort((sym, ts))
    cols = [np.concatenate([getattr(s, f) for s in series])[order] for f in fields]
    return ts[order], sym[order], cols


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
                 progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    """Run ``strategy`` over ``series`` and return the result (nothing is written to disk)."""
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
    engine = Engine(strategy, market, portfolio, rules, risk, order_prefix=order_prefix, log=log)
    ev_ts, ev_sym, cols = merge_timeline(series)
    n = len(ev_ts)
    with fewer_gc_passes():
        engine.start()
        _drive(engine, names, ev_ts, ev_sym, cols, progress)
        engine.stop()
    steps = ev_ts if len(series) == 1 else np.unique(ev_ts)
    cash_c, equity, gross = rebuild_equity(steps, series, engine.cash_log, engine.qty_log, cash)
    return BacktestResult(names, series[0].tz if series else None, float(cash), steps, cash_c, equity, gross,
                          engine.fills, list(engine.orders.values()), engine.order_events, n,
                          time.perf_counter() - t0, risk_events=list(risk.events))


def _drive(engine: Engine, names: list[str], ev_ts: np.ndarray, ev_sym: np.ndarray, cols: list[np.ndarray],
           progress: Callable[[int, int], None] | None) -> None:
    """Hand every bar to ``engine.step``, grouped by timestamp, building Bar structs chunk by chunk.

    Chunks end on a timestamp boundary, so each group is a slice of the chunk's list of bars.
    """
    n = len(ev_ts)
    step = engine.step
    single = len(names) == 1
    starts = None if single else np.flatnonzero(np.diff(ev_ts)) + 1
    a = 0
    while a < n:
        b = min(n, a + CHUNK)
        if starts is not None and b < n:  # move the cut to the next timestamp boundary
            k = int(np.searchsorted(starts, b))
            b = int(starts[k]) if k < len(starts) else n
        syms = repeat(names[0], b - a) if single else map(names.__getitem__, ev_sym[a:b].tolist())
        bars = list(map(Bar, syms, ev_ts[a:b].tolist(), *(c[a:b].tolist() for c in cols)))
        if single:
            for bar in bars:
                step(bar.ts, [bar])
        else:
            lo = np.searchsorted(starts, a, "right")
            hi = np.searchsorted(starts, b, "left")
            cuts = (starts[lo:hi] - a).tolist()
            g0 = 0
            for g1 in cuts:
                step(bars[g0].ts, bars[g0:g1])
                g0 = g1
            step(bars[g0].ts, bars[g0:])
        if progress is not None:
            progress(b, n)
        a = b


def rebuild_equity(steps: np.ndarray, series: list[BarSeries], cash_log: list[tuple[int, float]],
                   qty_log: list[tuple[int, str, float]], start_cash: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cash, equity and gross exposure at every step, from the cash and quantity logs of the fills.

    Equity is summed in the same order as ``Portfolio.equity`` (cash, then symbols sorted),
    so it equals what the strategy saw as ``ctx.equity`` at each step, bit for bit.
    """
    g = len(steps)
    k = np.arange(g)
    cash = np.full(g, start_cash)
    if cash_log:
        at = np.searchsorted(np.fromiter((c[0] for c in cash_log), np.int64, len(cash_log)), k, "right")
        cash = np.concatenate(([start_cash], np.fromiter((c[1] for c in cash_log), np.float64, len(cash_log))))[at]
    equity = cash.copy()
    gross = np.zeros(g)
    by_symbol: dict[str, list[tuple[int, float]]] = {}
    for step, symbol, qty in qty_log:
        by_symbol.setdefault(symbol, []).append((step, qty))
    for s in series:  # sorted by symbol
        log = by_symbol.get(s.symbol)
        if not log:
            continue
        at = np.searchsorted(np.fromiter((x[0] for x in log), np.int64, len(log)), k, "right")
        value = np.concatenate(([0.0], np.fromiter((x[1] for x in log), np.float64, len(log))))[at]
        del at
        if len(s.ts) == g and np.array_equal(s.ts, steps):
            mark = s.close
        else:
            idx = np.searchsorted(s.ts, steps, side="right") - 1
            mark = np.where(idx >= 0, s.close[np.maximum(idx, 0)], 0.0)
            del idx
        np.multiply(value, mark, out=value)
        equity += value
        np.abs(value, out=value)
        gross += value
    return cash, equity, gross
