"""Walk-forward stitching: cut each window's backtest to its test span and join the spans into one run.

Rules (the module docstring of :mod:`tradeloop.engine.research.walkforward` explains why):

- A window's backtest reads bars from its warm-up start, but only its test span is kept: the
  equity rows, fills, orders, order events and risk events stamped at or after ``test_start``.
  Orders the strategy placed during the warm-up were refused by the engine (``run.trade_from``)
  and are counted, not kept.
- Every window starts flat with the previous window's ending equity as cash, so the stitched
  equity curve is continuous. Positions still open at a window's last bar are handed off to cash
  at that bar's closes, with no commission or slippage: one fill per symbol with order id
  ``W<k>-HANDOFF`` (k 1-based), so round trips close inside their window. The last window keeps
  its open positions, as any backtest does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tradeloop.brokers.orders import Fill, Side
from tradeloop.data.schema import BarSeries

from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.metrics.performance import compute_metrics, traded_span
from tradeloop.engine.research.windows import Window

HANDOFF = "HANDOFF"


@dataclass
class Span:
    """One window's test span: its backtest cut to the span, the warm-up orders refused, the hand-off fills."""

    window: Window
    result: BacktestResult            # rows and records stamped in the test span; the window's start cash
    refused: int                      # orders placed during the warm-up, refused
    handoff: list[Fill] = field(default_factory=list)
    warmup_from: int | None = None    # the first bar the window's backtest saw (its warm-up start), int64 ns
    periods_per_year: int = 252       # the run's P (brokers/instruments.periods_per_year): 365 for 24/7 symbols

    @property
    def final_value(self) -> float:
        return self.result.final_value

    def metrics(self) -> dict[str, Any]:
        """This span's metrics alone (the traded span: the warm-up is already cut off), from the equity
        before its first bar (hand-off fills included)."""
        r = self.result
        return compute_metrics(r.ts, r.equity, r.start_cash, r.fills + self.handoff, gross_exposure=r.gross_exposure,
                               periods_per_year=self.periods_per_year)


def cut_span(result: BacktestResult, window: Window) -> Span:
    """The test span of ``result`` (a backtest of [warmup_start, test_end) trading from test_start)."""
    t0 = window.test_start
    keep = result.ts >= t0
    if not keep.any():
        raise ValueError(f"window {window.index + 1}: no bar in its test span")
    # the traded span starts from the equity at the last warm-up bar (the cash: nothing could trade)
    _, start = traded_span(result.ts, result.equity, result.start_cash, t0)
    refused = sum(o.created_ts < t0 for o in result.orders)
    if any(f.ts < t0 for f in result.fills):  # the engine refuses warm-up orders; this cannot happen
        raise AssertionError(f"window {window.index + 1}: a fill before the test span")
    cut = BacktestResult(
        symbols=result.symbols, tz=result.tz, start_cash=start, ts=result.ts[keep],
        cash=result.cash[keep], equity=result.equity[keep], gross_exposure=result.gross_exposure[keep],
        fills=list(result.fills), orders=[o for o in result.orders if o.created_ts >= t0],
        order_events=[e for e in result.order_events if e.ts >= t0], bars=int(keep.sum()),
        elapsed_s=result.elapsed_s, risk_events=[e for e in result.risk_events if e.ts >= t0], models=result.models)
    return Span(window, cut, int(refused), warmup_from=int(result.ts[0]))


def handoff_fills(span: Span, series: list[BarSeries]) -> list[Fill]:
    """Fills that turn the positions open at the span's last bar into cash at that bar's closes (no costs)."""
    held: dict[str, float] = {}
    for f in span.result.fills:
        held[f.symbol] = held.get(f.symbol, 0.0) + f.signed_qty
    last = int(span.result.ts[-1])
    closes = {s.symbol: s for s in series}
    out = []
    for symbol in sorted(held):
        qty = held[symbol]
        if not qty:
            continue
        s = closes[symbol]
        i = int(np.searchsorted(s.ts, last, "right")) - 1
        out.append(Fill(f"W{span.window.index + 1:03d}-{HANDOFF}", last, symbol, Side.SELL if qty > 0 else Side.BUY,
                        abs(qty), float(s.close[i]), 0.0))
    return out


def stitch(spans: list[Span], start_cash: float, symbols: list[str], tz: str | None) -> BacktestResult:
    """The spans (in time order, non-overlapping) as one backtest result starting from ``start_cash``."""
    results = [s.result for s in spans]

    def cat(name: str, dtype: Any) -> np.ndarray:
        parts = [getattr(r, name) for r in results]
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

    ts = cat("ts", np.int64)
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise AssertionError("stitched test spans overlap")
    return BacktestResult(
        symbols=symbols, tz=tz, start_cash=float(start_cash), ts=ts, cash=cat("cash", np.float64),
        equity=cat("equity", np.float64), gross_exposure=cat("gross_exposure", np.float64),
        fills=[f for s in spans for f in (s.result.fills + s.handoff)], orders=[o for r in results for o in r.orders],
        order_events=[e for r in results for e in r.order_events], bars=len(ts), elapsed_s=0.0,
        risk_events=[e for r in results for e in r.risk_events], models=[m for r in results for m in r.models])
