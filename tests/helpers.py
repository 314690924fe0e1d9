"""Small builders shared by the engine tests: bars made in code and a scripted strategy."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tradeloop.data.schema import NS_PER_DAY, BarSeries
from tradeloop import Context, Strategy

DAY0 = int(np.datetime64("2024-01-02", "ns").astype(np.int64))


def series(symbol: str, rows: list[tuple[float, float, float, float, float]], *, step: int = NS_PER_DAY,
           start: int = DAY0) -> BarSeries:
    """A BarSeries from (open, high, low, close, volume) rows, one ``step`` apart."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    ts = start + step * np.arange(len(a), dtype=np.int64)
    return BarSeries(symbol, ts, a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), a[:, 4].copy())


class Scripted(Strategy):
    """Runs ``script[i](ctx)`` at the i-th timestamp; records what it was told."""

    def __init__(self, script: dict[int, Callable[[Context], Any]]) -> None:
        super().__init__()
        self.script = script
        self.i = -1
        self.fills: list = []
        self.orders: list = []
        self.seen_equity: list[float] = []

    def on_bars(self, ctx: Context, bars) -> None:
        self.i += 1
        self.seen_equity.append(ctx.equity)
        action = self.script.get(self.i)
        if action is not None:
            action(ctx)

    def on_fill(self, ctx: Context, fill) -> None:
        self.fills.append(fill)

    def on_order(self, ctx: Context, order) -> None:
        self.orders.append((order.id, order.status.value, order.reason))
