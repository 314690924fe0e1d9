"""The trader's FIX 4.4 adapter: orders out as NewOrderSingle / Cancel / Replace / Status, reports back as Fills.

It connects (and reconnects with backoff) as the session initiator. Each order's ClOrdID is
``Order.id``; cancel and replace requests get ``<id>.C<n>`` / ``<id>.R<n>``. Execution reports
are de-duplicated by ExecID and an order's final status is reported exactly once, so
replays after a reconnect (PossDupFlag=Y) never double a fill or an outcome.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import msgspec
import structlog

from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus
from tradeloop.brokers.base import FillSink
from tradeloop.brokers.fix.codec import Msg
from tradeloop.brokers.fix.mapping import FIX_TO_ORD_STATUS, ExecType, cancel_request, new_order_single, replace_request, status_request
from tradeloop.brokers.fix.session import FixSession, SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import MemoryStore, SequenceStore


class CancelRejected(msgspec.Struct, frozen=True):
    """The venue refused a cancel or replace request (OrderCancelReject, 35=9); the order is unchanged."""

    ts: int
    order_id: str
    request_id: str
    response_to: str  # "cancel" or "replace"
    reason: str


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial_s`` growing by ``factor`` up to ``max_s``, each with +-``jitter`` share."""

    initial_s: float = 0.2
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1

    def delays(self) -> Iterator[float]:
        d = self.initial_s
        while True:
            yield d * (1 + random.uniform(-self.jitter, self.jitter))
            d = min(d * self.factor, self.max_s)


class FixBroker:
    """A FIX 4.4 initiator that trades :class:`Order` objects and reports Fills and OrderEvents."""

    supported = frozenset({MsgType.ExecutionReport, MsgType.OrderCancelReject})

    def __init__(self, config: SessionConfig, host: str, port: int, store: SequenceStore | None = None, *,
                 sink: FillSink | None = None, backoff: Backoff = Backoff(), connect_timeout_s: float = 5.0,
                 log: Any = None) -> None:
        self.host, self.port = host, port
        self.log = (log or structlog.get_logger("fix.client")).bind(venue=f"{host}:{port}")
        self.session = FixSession(config, store or MemoryStore(), self, log=log)
        self.sink = sink
        self.backoff = backoff
        self.connect_timeout_s = connect_timeout_s
        self.orders: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.events: asyncio.Queue[Fill | OrderEvent | CancelRejected] = asyncio.Queue()
        self.logons = 0
        self._root: dict[str, str] = {}      # any ClOrdID we used -> Order.id
        self._current: dict[str, str] = {}   # Order.id -> ClOrdID the venue knows the order by now
        self._requests: dict[str, int] = {}  # Order.id -> cancel/replace requests made
        self._sent: dict[int, str] = {}      # MsgSeqNum of an order message -> its ClOrdID
        self._exec_ids: set[str] = set()
        self._status_waiters: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._connect_loop(), name="fix-client")

    async def wait_logged_on(self, timeout: float | None = None) -> bool:
        return await self.session.wait_logged_on(timeout)

    async def stop(self) -> None:
        """Log out and stop reconnecting."""
        self._stopping = True
        if self.session.connected:
            await self.session.logout()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _connect_loop(self) -> None:
        delays = self.backoff.delays()
        while not self._stopping:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                        self.connect_timeout_s)
            except (OSError, asyncio.TimeoutError) as e:
                delay = next(delays)
                self.log.info("fix.connect_failed", error=repr(e), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            logons = self.logons
            reason = await self.session.run(reader, writer, initiator=True)
            if self._stopping:
                break
            if self.logons > logons:
                delays = self.backoff.delays()
            delay = next(delays)
            self.log.info("fix.reconnecting", reason=reason, retry_in_s=round(delay, 3))
            await asyncio.sleep(delay)

    def restore(self, orders: Iterable[tuple[Order, str, int]], exec_ids: Iterable[str]) -> None:
        """Take back an earlier process's state (from its journal): each order sent, with the ClOrdID the
        venue knows it by now and the cancel/replace requests made, and the ExecIDs already booked, so
        a resent report books nothing twice and no request ID is used twice."""
        for order, clordid, requests in orders:
            self.orders[order.id] = order
            self._root[order.id] = self._root[clordid] = order.id
            self._current[order.id] = clordid
            self._requests[order.id] = requests
            for n in range(1, requests + 1):
                for kind in "CR":
                    self._root[f"{order.id}.{kind}{n}"] = order.id
        self._exec_ids.update(exec_ids)

    def requests(self, order: Order) -> int:
        """How many cancel/replace requests were made for ``order`` (their IDs are ``<id>.C<n>``/``<id>.R<n>``)."""
        return self._requests.get(order.id, 0)

    def clordid(self, order: Order) -> str:
        """The ClOrdID the venue knows ``order`` by now (its id, or that of its last accepted replace)."""
        return self._current.get(order.id, order.id)

    # ------------------------------------------------------------------ orders out
    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders sent and not yet final (optionally of one symbol), as SimulatedVenue.open_orders."""
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def submit(self, order: Order, ts: int = 0) -> None:
        """Send a NewOrderSingle (ClOrdID = ``order.id``); submitting the same order again does nothing."""
        if order.id in self.orders:
            self.log.warning("fix.duplicate_submit_ignored", order_id=order.id)
            return
        self.orders[order.id] = order
        self._root[order.id] = order.id
        self._current[order.id] = order.id
        self._sent[self.session.send(MsgType.NewOrderSingle, new_order_single(order))] = order.id

    def cancel(self, order: Order, ts: int = 0, reason: str = "cancelled") -> bool:
        """Send an OrderCancelRequest; False when the order is unknown here or already final."""
        if order.id not in self.orders or order.status.is_final:
            return False
        clordid = self._request_id(order, "C")
        self._sent[self.session.send(MsgType.OrderCancelRequest,
                                     cancel_request(order, clordid, self._current[order.id]))] = clordid
        return True

    def replace(self, order: Order, *, qty: float | None = None, limit_price: float | None = None,
                stop_price: float | None = None) -> str:
        """Send an OrderCancelReplaceRequest (new total ``qty`` and/or prices); returns its ClOrdID."""
        if order.id not in self.orders or order.status.is_final:
            raise ValueError(f"order {order.id} is not working here")
        clordid = self._request_id(order, "R")
        body = replace_request(order, clordid, self._current[order.id], order.qty if qty is None else qty,
                               order.limit_price if limit_price is None else limit_price,
                               order.stop_price if stop_price is None else stop_price)
        self._sent[self.session.send(MsgType.OrderCancelReplaceRequest, body)] = clordid
        return clordid

    def request_status(self, order: Order) -> None:
        """Send an OrderStatusRequest; the answer is an ExecutionReport with ExecType=I."""
        self.session.send(MsgType.OrderStatusRequest, status_request(order, self._current[order.id]))

    async def status(self, order: Order, timeout: float = 5.0) -> OrderStatus:
        """Ask the venue for ``order``'s status and wait for the answer (the order is reconciled with it)."""
        waiter = self._status_waiters.setdefault(order.id, asyncio.get_running_loop().create_future())
        self.request_status(order)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        finally:
            if waiter.done():
                self._status_waiters.pop(order.id, None)

    def _request_id(self, order: Order, kind: str) -> str:
        n = self._requests.get(order.id, 0) + 1
        self._requests[order.id] = n
        clordid = f"{order.id}.{kind}{n}"
        self._root[clordid] = order.id
        return clordid

    # ------------------------------------------------------------------ Application
    def on_logon(self, session: FixSession) -> None:
        self.logons += 1

    def on_logout(self, session: FixSession, reason: str) -> None:
        self.log.info("fix.session_down", reason=reason)

    def on_message(self, session: FixSession, msg: Msg) -> None:
        if msg.msg_type == MsgType.ExecutionReport:
            self._on_execution_report(msg)
        else:
            self._on_cancel_reject(msg)

    def on_reject(self, session: FixSession, msg: Msg) -> None:
        """A session or business reject of one of our order messages: a rejected NewOrderSingle ends the order."""
        clordid = msg.get(Tag.BusinessRejectRefID) or self._sent.get(msg.int(Tag.RefSeqNum, 0) or 0)
        root = self._root.get(clordid or "")
        if root is None:
            return
        order = self.orders[root]
        text = msg.get(Tag.Text, "rejected by venue")
        if clordid == root and order.status is OrderStatus.NEW:
            self._set_status(order, OrderStatus.REJECTED, time.time_ns(), f"rejected by venue: {text}", force=True)
        elif clordid != root:
            self._emit(CancelRejected(time.time_ns(), root, clordid, "replace" if ".R" in clordid else "cancel", text))

    def _on_execution_report(self, msg: Msg) -> None:
        exec_type = msg[Tag.ExecType]
        clordid, orig = msg.get(Tag.ClOrdID), msg.get(Tag.OrigClOrdID)
        root = self._root.get(clordid or "") or self._root.get(orig or "")
        if root is None:   # not an order of this session: a fill here means the venue's position differs from ours
            level = self.log.error if exec_type == ExecType.TRADE else self.log.warning
            level("fix.unknown_order_report", clordid=clordid, exec_id=msg.get(Tag.ExecID), exec_type=exec_type,
                  symbol=msg.get(Tag.Symbol), last_qty=msg.get(Tag.LastQty), last_px=msg.get(Tag.LastPx),
                  detail="not booked: positions here no longer match the venue's" if exec_type == ExecType.TRADE
                  else "ignored")
            return
        exec_id = msg.get(Tag.ExecID, "")
        if exec_type != ExecType.ORDER_STATUS:
            if exec_id in self._exec_ids:
                self.log.info("fix.duplicate_report_ignored", exec_id=exec_id, order_id=root)
                return
            self._exec_ids.add(exec_id)
        order = self.orders[root]
        ts = msg.time_ns(Tag.TransactTime) or time.time_ns()
        status = FIX_TO_ORD_STATUS.get(msg[Tag.OrdStatus])
        text = msg.get(Tag.Text, "")
        if exec_type == ExecType.REJECTED and msg.get(Tag.OrdRejReason) == "6" and order.status is not OrderStatus.NEW:
            self.log.warning("fix.duplicate_order_reject_ignored", order_id=root)
            return
        if exec_type == ExecType.TRADE:
            if order.status.is_final:
                self.log.error("fix.fill_after_final_status", order_id=root, exec_id=msg[Tag.ExecID])
            if float(msg[Tag.CumQty]) > order.qty + 1e-9:  # booked all the same: the venue says it traded
                self.log.error("fix.overfill", order_id=root, exec_id=exec_id, order_qty=order.qty,
                               cum_qty=float(msg[Tag.CumQty]))
            fill = Fill(root, ts, order.symbol, order.side, float(msg[Tag.LastQty]), float(msg[Tag.LastPx]),
                        msg.float(Tag.Commission, 0.0) or 0.0)
            order.filled_qty = float(msg[Tag.CumQty])
            order.avg_fill_price = float(msg[Tag.AvgPx])
            self.fills.append(fill)
            if self.sink is not None:
                journaled = getattr(self.sink, "on_execution", None)  # a sink that journals wants the ExecID too
                if journaled is not None:
                    journaled(exec_id, fill, order)
                else:
                    self.sink.on_fill(fill, order)
            self._emit(fill)
            if status is not None:
                self._set_status(order, status, ts, text, force=True)
            return
        if exec_type == ExecType.REPLACED:
            order.qty = msg.float(Tag.OrderQty, order.qty) or order.qty
            order.limit_price = msg.float(Tag.Price, order.limit_price)
            order.stop_price = msg.float(Tag.StopPx, order.stop_price)
            self._current[root] = clordid or self._current[root]
            if status is not None:
                self._set_status(order, status, ts, "replaced", force=True)
            return
        if exec_type == ExecType.ORDER_STATUS:
            # reconcile: only a final status, or the first news of an order, changes what we hold
            if status is not None and (status.is_final or order.status is OrderStatus.NEW):
                order.filled_qty = max(order.filled_qty, msg.float(Tag.CumQty, 0.0) or 0.0)
                self._set_status(order, status, ts, text)
        elif status is not None:
            self._set_status(order, status, ts, text, force=True)
        if exec_type == ExecType.ORDER_STATUS:
            waiter = self._status_waiters.pop(root, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(status if status is not None else order.status)

    def _on_cancel_reject(self, msg: Msg) -> None:
        clordid, orig = msg[Tag.ClOrdID], msg[Tag.OrigClOrdID]
        root = self._root.get(clordid) or self._root.get(orig)
        if root is None:
            self.log.warning("fix.unknown_cancel_reject", clordid=clordid)
            return
        response_to = "replace" if msg[Tag.CxlRejResponseTo] == "2" else "cancel"
        self._emit(CancelRejected(time.time_ns(), root, clordid, response_to, msg.get(Tag.Text, "")))
        status = FIX_TO_ORD_STATUS.get(msg[Tag.OrdStatus])
        order = self.orders[root]
        if status is not None and status.is_final and not order.status.is_final:
            self._set_status(order, status, time.time_ns(), msg.get(Tag.Text, ""))

    def _set_status(self, order: Order, status: OrderStatus, ts: int, reason: str, *, force: bool = False) -> None:
        """Move ``order`` to ``status`` and report it; a final status is reported once and never left."""
        if order.status.is_final:
            if status is not order.status:
                self.log.error("fix.conflicting_final_status", order_id=order.id, have=order.status.value,
                               got=status.value)
            return
        if status is order.status and not force:
            return
        order.status = status
        if reason or status.is_final:
            order.reason = reason
        event = OrderEvent(ts, order.id, order.symbol, status, reason)
        if self.sink is not None:
            self.sink.on_order_event(event, order)
        self._emit(event)

    def _emit(self, item: Fill | OrderEvent | CancelRejected) -> None:
        self.events.put_nowait(item)
