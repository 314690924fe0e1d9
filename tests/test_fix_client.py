"""The trader's FIX adapter against the exchange simulator: orders in, execution reports out, exactly once."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from typing import AsyncIterator

import structlog

from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fix.client import Backoff, CancelRejected, FixBroker
from tradeloop.brokers.fix.codec import decode, encode
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import Bar

HOST = "127.0.0.1"
PASSWORD = "hunter2-but-longer"
T0 = 1_700_000_000_000_000_000
MIN = 60_000_000_000


def run(coro, timeout: float = 15.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def venue(*, state=None, port: int = 0, rules: FillRules | None = None) -> AsyncIterator[ExchangeSimulator]:
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER", password=PASSWORD, logout_timeout_s=0.5),
                           state=state, rules=rules, host=HOST, port=port)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


@contextlib.asynccontextmanager
async def trader(port: int, store=None) -> AsyncIterator[FixBroker]:
    broker = FixBroker(SessionConfig("TRADER", "EXCH", heartbeat_s=5, password=PASSWORD, logout_timeout_s=0.5),
                       HOST, port, store, backoff=Backoff(0.05, 0.3))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def connected(**venue_options) -> AsyncIterator[tuple[ExchangeSimulator, FixBroker]]:
    """A venue and a trader logged on to it."""
    async with venue(**venue_options) as ex, trader(ex.port) as broker:
        assert await broker.wait_logged_on(3)
        yield ex, broker


async def accepted(broker: FixBroker, o: Order) -> list:
    """Submit ``o`` and wait for the venue's acknowledgement; the events up to it."""
    broker.submit(o)
    return await until(broker, lambda evs: statuses(evs) == [OrderStatus.ACCEPTED])


def bar(i: int, o: float, h: float, l: float, c: float, v: float = 1_000.0, symbol: str = "X") -> Bar:
    return Bar(symbol, T0 + i * MIN, o, h, l, c, v)


def order(oid: str, side: Side = Side.BUY, qty: float = 10.0, *, limit: float | None = None,
          stop: float | None = None, tif: TimeInForce = TimeInForce.GTC, placed_at: int = 0) -> Order:
    kind = (OrderType.STOP_LIMIT if limit and stop else OrderType.LIMIT if limit else
            OrderType.STOP if stop else OrderType.MARKET)
    return Order(oid, "X", side, qty, kind, limit, stop, tif, created_ts=T0 + placed_at * MIN)


async def until(broker: FixBroker, done, timeout: float = 3.0) -> list:
    """Events from the broker until ``done(events)`` holds."""
    got: list = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(got):
        got.append(await asyncio.wait_for(broker.events.get(), max(deadline - loop.time(), 0.001)))
    return got


def statuses(events, oid: str | None = None) -> list[OrderStatus]:
    return [e.status for e in events if isinstance(e, OrderEvent) and (oid is None or e.order_id == oid)]


def finals(events) -> Counter:
    return Counter(e.order_id for e in events if isinstance(e, OrderEvent) and e.status.is_final)


def final_seen(oid: str):
    return lambda evs: any(isinstance(e, OrderEvent) and e.order_id == oid and e.status.is_final for e in evs)


# ---------------------------------------------------------------------------------- round trips
def test_market_order_is_acknowledged_then_filled_at_the_next_bar_open():
    async def scenario():
        async with connected() as (ex, broker):
            ex.on_bar(bar(0, 10, 10, 10, 10))
            o = order("O1")
            ack = await accepted(broker, o)
            assert ack[0].ts == o.created_ts
            ex.on_bar(bar(1, 11, 12, 10.5, 11.5))
            evs = await until(broker, final_seen("O1"))
            fills = [e for e in evs if isinstance(e, Fill)]
            assert [(f.order_id, f.ts, f.qty, f.price, f.side) for f in fills] == \
                [("O1", T0 + MIN, 10.0, 11.0, Side.BUY)]
            assert statuses(evs) == [OrderStatus.FILLED]
            assert (o.status, o.filled_qty, o.avg_fill_price) == (OrderStatus.FILLED, 10.0, 11.0)
    run(scenario())


def test_partial_fills_follow_the_participation_cap_and_carry_cum_qty_and_avg_price():
    async def scenario():
        async with connected(rules=FillRules(participation=0.5)) as (ex, broker):
            o = order("O1", qty=10)
            evs = await accepted(broker, o)
            ex.on_bar(bar(1, 10, 10, 10, 10, v=12))
            ex.on_bar(bar(2, 12, 12, 12, 12, v=100))
            evs += await until(broker, final_seen("O1"))
            assert [(f.qty, f.price) for f in evs if isinstance(f, Fill)] == [(6.0, 10.0), (4.0, 12.0)]
            assert statuses(evs) == [OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED]
            assert o.avg_fill_price == (6 * 10 + 4 * 12) / 10
    run(scenario())


def test_cancel_ends_a_working_order_once_and_a_second_cancel_is_refused_locally():
    async def scenario():
        async with connected() as (ex, broker):
            o = order("O1", limit=5.0)
            await accepted(broker, o)
            assert broker.cancel(o)
            evs = await until(broker, final_seen("O1"))
            assert statuses(evs) == [OrderStatus.CANCELLED]
            assert not broker.cancel(o)
            assert ex.venue.open_orders() == []
    run(scenario())


def test_cancel_that_arrives_after_the_fill_is_rejected_as_too_late():
    async def scenario():
        async with connected() as (ex, broker):
            o = order("O1")
            await accepted(broker, o)
            ex.on_bar(bar(1, 10, 10, 10, 10))   # fills at the exchange; the trader has not heard yet
            assert broker.cancel(o)
            evs = await until(broker, lambda evs: any(isinstance(e, CancelRejected) for e in evs))
            rej = next(e for e in evs if isinstance(e, CancelRejected))
            assert (rej.order_id, rej.response_to) == ("O1", "cancel") and "Too late" in rej.reason
            assert o.status is OrderStatus.FILLED and finals(evs) == Counter({"O1": 1})
    run(scenario())


def test_replace_changes_quantity_and_limit_and_the_new_terms_are_what_fills():
    async def scenario():
        async with connected() as (ex, broker):
            o = order("O1", qty=10, limit=9.0)
            await accepted(broker, o)
            new_id = broker.replace(o, qty=20, limit_price=9.5)
            evs = await until(broker, lambda evs: any(getattr(e, "reason", "") == "replaced" for e in evs))
            assert new_id == "O1.R1" and (o.qty, o.limit_price) == (20.0, 9.5)
            ex.on_bar(bar(1, 10, 10.2, 9.4, 9.8))
            evs = await until(broker, final_seen("O1"))
            assert [(f.order_id, f.qty, f.price) for f in evs if isinstance(f, Fill)] == [("O1", 20.0, 9.5)]
    run(scenario())


def test_status_request_answers_with_the_current_state():
    async def scenario():
        async with connected(rules=FillRules(participation=0.5)) as (ex, broker):
            o = order("O1", qty=10)
            await accepted(broker, o)
            ex.on_bar(bar(1, 10, 10, 10, 10, v=10))
            await until(broker, lambda evs: OrderStatus.PARTIALLY_FILLED in statuses(evs))
            assert await broker.status(o, timeout=2) is OrderStatus.PARTIALLY_FILLED
            assert broker.events.empty()  # an unchanged status is not reported again
    run(scenario())


def test_an_order_the_venue_cannot_take_is_rejected_with_the_reason():
    async def scenario():
        async with connected() as (ex, broker):
            o = order("O1", qty=0.0)
            broker.submit(o)
            evs = await until(broker, final_seen("O1"))
            assert statuses(evs) == [OrderStatus.REJECTED] and "OrderQty" in o.reason
    run(scenario())


def test_a_replayed_execution_report_is_applied_once():
    broker = FixBroker(SessionConfig("TRADER", "EXCH"), HOST, 1)
    o = order("O1")
    broker.orders["O1"], broker._root["O1"], broker._current["O1"] = o, "O1", "O1"
    fields = [(37, "X1"), (11, "O1"), (17, "E1"), (150, "F"), (39, "2"), (55, "X"), (54, "1"), (38, 10.0),
              (32, 10.0), (31, 11.0), (151, 0.0), (14, 10.0), (6, 11.0)]
    report = decode(encode(MsgType.ExecutionReport, "EXCH", "TRADER", 5, fields))
    broker.on_message(broker.session, report)
    broker.on_message(broker.session, report)
    assert [f.qty for f in broker.fills] == [10.0]
    assert broker.events.qsize() == 2  # one Fill, one FILLED


def test_a_fill_beyond_the_order_quantity_is_booked_and_logged_as_an_error():
    """The venue's word on what traded is booked (positions must match the venue), and an operator
    is told at once: an overfill means the venue and this side disagree about the order."""
    from structlog.testing import capture_logs

    broker = FixBroker(SessionConfig("TRADER", "EXCH"), HOST, 1)
    o = order("O1")
    broker.orders["O1"], broker._root["O1"], broker._current["O1"] = o, "O1", "O1"
    fields = [(37, "X1"), (11, "O1"), (17, "E9"), (150, "F"), (39, "2"), (55, "X"), (54, "1"), (38, 10.0),
              (32, 12.0), (31, 11.0), (151, 0.0), (14, 12.0), (6, 11.0)]
    with capture_logs() as logs:
        broker.on_message(broker.session, decode(encode(MsgType.ExecutionReport, "EXCH", "TRADER", 5, fields)))
    assert [f.qty for f in broker.fills] == [12.0] and o.filled_qty == 12.0
    (err,) = [e for e in logs if e["event"] == "fix.overfill"]
    assert err["log_level"] == "error" and (err["order_qty"], err["cum_qty"]) == (10.0, 12.0)


def test_a_fill_of_an_order_this_side_does_not_know_is_an_error_saying_positions_now_differ():
    """A manual trade on the same account, or another session's order: not booked (no order to book
    it to), but the operator must hear that the venue's position no longer matches this one."""
    from structlog.testing import capture_logs

    broker = FixBroker(SessionConfig("TRADER", "EXCH"), HOST, 1)
    fields = [(37, "X7"), (11, "MANUAL-1"), (17, "E7"), (150, "F"), (39, "2"), (55, "X"), (54, "1"), (38, 5.0),
              (32, 5.0), (31, 11.0), (151, 0.0), (14, 5.0), (6, 11.0)]
    with capture_logs() as logs:
        broker.on_message(broker.session, decode(encode(MsgType.ExecutionReport, "EXCH", "TRADER", 5, fields)))
    assert broker.fills == []
    (err,) = [e for e in logs if e["event"] == "fix.unknown_order_report"]
    assert err["log_level"] == "error" and (err["clordid"], err["symbol"], err["last_qty"]) == ("MANUAL-1", "X", "5")
    assert "positions here no longer match" in err["detail"]


# ---------------------------------------------------------------------------------- connections
def test_the_adapter_keeps_retrying_with_backoff_until_the_venue_is_up():
    async def scenario():
        port = free_port()
        async with trader(port) as broker:
            await asyncio.sleep(0.4)
            assert not broker.session.connected
            async with venue(port=port):
                assert await broker.wait_logged_on(3)
    run(scenario())


def test_reports_made_while_the_trader_is_disconnected_arrive_after_reconnect_exactly_once():
    async def scenario():
        async with connected() as (ex, broker):
            o = order("O1", limit=10.0)
            await accepted(broker, o)
            ex.session.drop("simulated network failure")
            ex.on_bar(bar(1, 9.8, 10, 9.5, 9.9))  # fills while nobody is connected
            evs = await until(broker, final_seen("O1"), timeout=5)
            assert [(f.qty, f.price) for f in evs if isinstance(f, Fill)] == [(10.0, 9.8)]
            assert broker.logons == 2 and finals(evs) == Counter({"O1": 1})
    run(scenario())


def test_orders_placed_while_the_venue_is_down_are_delivered_by_resend_after_it_returns(tmp_path):
    state = tmp_path / "exchange.sqlite"

    async def scenario():
        port = free_port()
        async with trader(port) as broker:
            async with venue(state=state, port=port) as ex:
                await broker.wait_logged_on(3)
                broker.submit(order("A", limit=5.0))
                await until(broker, lambda evs: statuses(evs) == [OrderStatus.ACCEPTED])
            # the venue is down: these are numbered and stored, not sent
            broker.submit(order("B"))
            broker.cancel(broker.orders["A"])
            async with venue(state=state, port=port) as ex:
                evs = await until(broker, lambda evs: final_seen("A")(evs) and
                                  OrderStatus.ACCEPTED in statuses(evs, "B"), timeout=5)
                ex.on_bar(bar(1, 10, 10, 10, 10))
                evs += await until(broker, final_seen("B"))
            assert statuses(evs, "A") == [OrderStatus.CANCELLED]
            assert statuses(evs, "B") == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
            assert finals(evs) == Counter({"A": 1, "B": 1})
    run(scenario())


def test_the_password_is_never_logged():
    capture = structlog.testing.LogCapture()
    log = structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)  # every level

    async def scenario():
        ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER", password=PASSWORD), host=HOST, log=log)
        await ex.start()
        broker = FixBroker(SessionConfig("TRADER", "EXCH", password=PASSWORD), HOST, ex.port, log=log)
        await broker.start()
        await broker.wait_logged_on(3)
        await broker.stop()
        await ex.stop()
    run(scenario())
    assert sum("554=***" in str(e.get("msg", "")) for e in capture.entries) == 2  # sent and received
    assert not any(PASSWORD in repr(e) for e in capture.entries)
    assert PASSWORD not in repr(SessionConfig("A", "B", password=PASSWORD))
