"""Stale-data halt: a symbol whose market data stopped arriving takes no new orders until it resumes.

The live feed decides staleness (no valid message for ``live.stale_after`` seconds inside the
trading session, see data/mqtt/feed.py) and calls :meth:`StaleGuard.halt` / :meth:`resume`;
this check refuses orders for a halted symbol and records both transitions as risk events.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tradeloop.brokers.orders import Order

from tradeloop.risk.pipeline import BatchState, Verdict, reject

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.risk.pipeline import RiskPipeline


class StaleGuard:
    """Refuses orders in symbols whose data went stale; the feed halts and resumes them."""

    name = "stale_data"

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.reset(None)

    def reset(self, pipeline: RiskPipeline | None) -> None:
        self.pipe = pipeline
        self.halted: set[str] = set()

    def halt(self, ts: int, symbol: str) -> None:
        if symbol in self.halted:
            return
        self.halted.add(symbol)
        if self.pipe is not None:
            self.pipe.record(ts, self.name, "halt", f"no market data for {symbol} for {self.after_s:g} s; "
                             "new orders refused until it resumes", symbol=symbol)

    def resume(self, ts: int, symbol: str) -> None:
        if symbol not in self.halted:
            return
        self.halted.discard(symbol)
        if self.pipe is not None:
            self.pipe.record(ts, self.name, "resume", f"market data for {symbol} resumed", symbol=symbol)

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if order.symbol in self.halted:
            return reject(f"{order.symbol}: market data is stale (none for {self.after_s:g} s)")
        return None
