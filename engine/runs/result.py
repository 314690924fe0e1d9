"""What a finished run produced, in memory: the result every driver returns and the recorder writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tradeloop.brokers.orders import Fill, Order, OrderEvent
from tradeloop.risk.events import RiskEvent


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
    models: list[dict[str, Any]] = field(default_factory=list)   # predictor models used (version, runtime)
    #: int64 ns: the traded span starts at the first bar at or after it (the bars before only warmed up,
    #: orders refused); metrics are computed from there (engine.metrics.performance.traded_span). None: all bars
    trade_from: int | None = None
    #: corporate actions applied (Engine.actions_log): ts, symbol, dividend, split, qty_before, qty_after, cash,
    #: cancelled; written as the run folder's actions.parquet when there are any
    actions: list[dict[str, Any]] = field(default_factory=list)
    #: futures: initial margin in use at every step (None: no futures accounting in the run)
    margin: np.ndarray | None = None
    #: futures rolls done (Engine.rolls_log): ts, old, new, at, qty, orders (tagged "roll")
    rolls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_value(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.start_cash
