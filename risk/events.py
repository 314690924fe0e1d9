"""The risk audit trail: every risk decision and state change as an event, kept and logged.

Actions: ``reject`` and ``hold`` (a check's verdict on a new order), ``approve`` / ``reject`` /
``expire`` (a review's outcome), ``halt`` / ``resume`` (limit-move halts), ``stop`` / ``reset``
(drawdown stop), ``cancel`` / ``flatten`` (orders the risk layer cancelled or placed). An order
that passes every check is not an event here: its ACCEPTED order event says so.
"""
from __future__ import annotations

import math
from typing import Any

import msgspec
import structlog

from tradeloop.brokers.orders import Order


class RiskEvent(msgspec.Struct, frozen=True, gc=False):
    """One risk decision or state change; ``value`` is the number behind it (equity, move), or NaN."""

    ts: int
    order_id: str
    symbol: str
    check: str
    action: str
    reason: str
    value: float = math.nan


class AuditTrail:
    """The events of one run, in the order they happened, each also written to the structured log."""

    def __init__(self, log: Any = None) -> None:
        self.events: list[RiskEvent] = []
        self.log = log or structlog.get_logger("tradeloop.risk")

    def record(self, ts: int, check: str, action: str, reason: str, *, order: Order | None = None,
               symbol: str = "", value: float = math.nan) -> RiskEvent:
        ev = RiskEvent(ts, order.id if order is not None else "", order.symbol if order is not None else symbol,
                       check, action, reason, value)
        self.events.append(ev)
        self.log.info("risk_event", ts=ts, order_id=ev.order_id, symbol=ev.symbol, check=check, action=action,
                      reason=reason, **({} if math.isnan(value) else {"value": value}))
        return ev
