"""The engine's venue in a live run: orders go out through a FIX broker adapter, fills come back from it.

It implements the same :class:`tradeloop.brokers.base.Venue` contract as :class:`~tradeloop.brokers.sim.SimulatedVenue`,
so ``Engine`` and the risk layer see one interface, but the matching happens at the broker:
``on_bar``/``on_close`` do nothing, and ``working`` holds the orders sent and not yet final, as the
broker's reports leave them. Each order is journaled in the same transaction as the NewOrderSingle
that sends it; each fill with the ExecID that reported it (see engine/live/journal.py).
"""
from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import structlog

from tradeloop.brokers.base import Account, FillSink
from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, Side


class RemoteVenue:
    """Adapts a :class:`FixBroker` to the :class:`tradeloop.brokers.base.Venue` contract and journals what passes through.

    To the broker it is the :class:`tradeloop.brokers.base.FillSink` (it journals, then passes each report on
    to the sink it is bound to: the engine).
    """

    def __init__(self, broker: FixBroker, journal: Any = None, log: Any = None) -> None:
        self.broker = broker
        self.journal = journal
        self.log = log or structlog.get_logger("tradeloop.venue")
        self._book: dict[str, list[Order]] = {}
        self.working: Mapping[str, Sequence[Order]] = MappingProxyType(self._book)   # read-only, live
        self.engine: FillSink | None = None
        self._changed = asyncio.Event()
        broker.sink = self

    def bind(self, sink: FillSink, account: Account | None = None) -> None:
        """Report fills and order events to ``sink`` from now on (the broker keeps the account)."""
        self.engine = sink

    # ---------------------------------------------------------------- engine -> broker
    def submit(self, order: Order, ts: int) -> None:
        with self.broker.session.unit():     # journal row + NewOrderSingle: one transaction
            if self.journal is not None:
                self.journal.order(order, order.id, 0)
            self.broker.submit(order, ts)
        if order.is_open:   # not refused while it was being sent
            self._book.setdefault(order.symbol, []).append(order)

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Ask the broker to cancel; the outcome arrives later as an order event."""
        with self.broker.session.unit():
            sent = self.broker.cancel(order, ts, reason)
            if sent and self.journal is not None:
                self.journal.order(order, self.broker.clordid(order), self.broker.requests(order))
        return sent

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """The orders sent and not yet final (of ``symbol``, or all), as a new list."""
        if symbol is not None:
            return [o for o in self._book.get(symbol, ()) if o.is_open]
        return [o for orders in self._book.values() for o in orders if o.is_open]

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """Nothing: matching happens at the broker."""

    def on_close(self, symbol: str, ts: int, c: float, v: float) -> None:
        """Nothing: matching happens at the broker."""

    def restore(self, orders: list[Order]) -> None:
        """Working orders recovered from the journal go back in the book."""
        for order in orders:
            if order.is_open:
                self._book.setdefault(order.symbol, []).append(order)

    async def acknowledged(self, orders: list[Order], timeout: float = 10.0) -> None:
        """Wait until the broker has answered each of ``orders`` (accepted, filled, rejected...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(o.status is OrderStatus.NEW for o in orders):
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                waiting = [o.id for o in orders if o.status is OrderStatus.NEW]
                raise TimeoutError(f"the broker did not acknowledge orders {', '.join(waiting)} in {timeout:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    # ---------------------------------------------------------------- broker -> engine (FillSink)
    def on_execution(self, exec_id: str, fill: Fill, order: Order) -> None:
        """A fill, inside the FIX transaction that consumes its report: journal, then book."""
        if self.journal is not None:
            self.journal.fill(exec_id, fill)
            self.journal.order(order, self.broker.clordid(order), self.broker.requests(order))
        if self.engine is not None:
            self.engine.on_fill(fill, order)
        self._changed.set()

    def on_fill(self, fill: Fill, order: Order) -> None:
        self.on_execution("", fill, order)

    def on_order_event(self, event: OrderEvent, order: Order) -> None:
        if self.journal is not None and not order.is_open:   # a working order's news is asked again at restart
            self.journal.order(order, self.broker.clordid(order), self.broker.requests(order))
        if not order.is_open:
            book = self._book.get(order.symbol)
            if book is not None and order in book:
                book.remove(order)
                if not book:
                    del self._book[order.symbol]
        if self.engine is not None:
            self.engine.on_order_event(event, order)
        self._changed.set()

    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        """None: the broker checks buying power; the pre-trade checks ran before the order left."""
        return None
