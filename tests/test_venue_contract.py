"""Specification of the venue contract (brokers.base): one interface for every venue, one T+1 state.

- The simulated venue and the remote (FIX) venue both implement ``Venue``, with the same signatures.
- Working orders are published as a read-only, live view per symbol, for both venues.
- The engine runs on any object that implements the contract, and only through it; it needs one.
- T+1 (what was bought today, what may be sold) is one class, ``brokers.settlement.Settlement``,
  used by the backtest engine and by the exchange simulator, which hold the same sell the same way.
"""
from __future__ import annotations

import asyncio
import inspect
import math
from types import MappingProxyType
from typing import Mapping

import pytest

from tradeloop.brokers.base import Account, FillSink, Venue
from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, Side
from tradeloop.brokers.profiles import ChinaAShares
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.brokers.settlement import PriorCloses, Settlement
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.schema import NS_PER_DAY, Bar
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.loop.core import Engine
from tradeloop.engine.loop.market import StreamingMarket
from tradeloop.engine.loop.portfolio import Portfolio
from tradeloop.risk.pipeline import RiskPipeline

from .helpers import DAY0, Scripted, series
from .test_exchange_sim import session_pair

CONTRACT = ("bind", "submit", "cancel", "open_orders", "on_bar", "on_close")


def remote_venue() -> RemoteVenue:
    """A RemoteVenue over a FIX adapter that is never started (no connection is made)."""
    return RemoteVenue(FixBroker(SessionConfig("TRADER", "EXCH"), "127.0.0.1", 1))


class Recorder:
    """A FillSink and Account that records what the venue tells it and answers like an open account."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.events: list[OrderEvent] = []

    def on_fill(self, fill: Fill, order: Order) -> None:
        self.fills.append(fill)

    def on_order_event(self, event: OrderEvent, order: Order) -> None:
        self.events.append(event)

    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        return None

    def sellable(self, symbol: str) -> float:
        return math.inf

    def pre_close(self, symbol: str) -> float:
        return math.nan


# ------------------------------------------------------------------------------------------ the contract

@pytest.mark.parametrize("make", [lambda: SimulatedVenue(FillRules()), remote_venue], ids=["simulated", "remote"])
def test_both_venues_implement_the_contract_with_its_signatures(make):
    venue = make()
    assert isinstance(venue, Venue)
    for name in CONTRACT:
        declared = list(inspect.signature(getattr(Venue, name)).parameters)[1:]
        assert list(inspect.signature(getattr(venue, name)).parameters) == declared, name
    assert isinstance(venue.working, Mapping) and isinstance(venue.working, MappingProxyType)
    with pytest.raises(TypeError):
        venue.working["X"] = []   # type: ignore[index]


def test_the_engine_and_the_exchange_answer_the_venue_as_sink_and_account():
    from tradeloop.brokers.exchange import _ReportSink

    driver = LiveDriver(Scripted({}), ["X"])
    assert isinstance(driver.engine, FillSink) and isinstance(driver.engine, Account)
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"))
    try:
        assert isinstance(ex.venue.sink, _ReportSink) and isinstance(ex.venue.sink, FillSink)
        assert isinstance(ex.venue.account, Account)
    finally:
        ex.store.close()


def test_the_simulated_venue_publishes_its_working_orders_as_a_live_read_only_view():
    sink = Recorder()
    venue = SimulatedVenue(FillRules(), sink)
    view = venue.working
    assert not view
    a, b = Order("A", "X", Side.BUY, 10.0), Order("B", "Y", Side.SELL, 5.0)
    venue.submit(a, 1)
    venue.submit(b, 1)
    assert view is venue.working and sorted(view) == ["X", "Y"] and list(view["X"]) == [a]
    venue.on_bar("X", 2, 10.0, 10.0, 10.0, 10.0, 100.0)          # A fills: X leaves the view (no bar of Y)
    assert sorted(view) == ["Y"] and [f.order_id for f in sink.fills] == ["A"]
    assert venue.cancel(b, 3, "done") and not view
    assert [e.status for e in sink.events] == [OrderStatus.ACCEPTED, OrderStatus.ACCEPTED, OrderStatus.FILLED,
                                               OrderStatus.CANCELLED]


def test_the_remote_venue_publishes_orders_sent_until_the_broker_reports_them_final():
    venue = remote_venue()
    sink = Recorder()
    venue.bind(sink, sink)
    order = Order("O1", "X", Side.BUY, 10.0)
    venue.submit(order, 1)                     # stored for resend: the session is not connected
    assert list(venue.working) == ["X"] and venue.open_orders() == [order]
    venue.on_bar("X", 2, 10.0, 10.0, 10.0, 10.0, 100.0)   # matching is the broker's: nothing happens here
    assert order.status is OrderStatus.NEW and list(venue.working) == ["X"]
    order.status = OrderStatus.FILLED
    venue.on_order_event(OrderEvent(3, "O1", "X", OrderStatus.FILLED), order)
    assert not venue.working and [e.status for e in sink.events] == [OrderStatus.FILLED]


# ------------------------------------------------------------------------------------------ the engine

class NextOpenVenue:
    """The smallest venue: the contract and nothing else (slots: reading anything more raises)."""

    __slots__ = ("_book", "working", "sink", "bars_seen")

    def __init__(self) -> None:
        self._book: dict[str, list[Order]] = {}
        self.working = MappingProxyType(self._book)
        self.bars_seen = 0

    def bind(self, sink: FillSink, account: Account) -> None:
        self.sink = sink

    def submit(self, order: Order, ts: int) -> None:
        order.status = OrderStatus.ACCEPTED
        self._book.setdefault(order.symbol, []).append(order)
        self.sink.on_order_event(OrderEvent(ts, order.id, order.symbol, OrderStatus.ACCEPTED), order)

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        return False

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for s, orders in self._book.items() if symbol in (None, s) for o in orders]

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        self.bars_seen += 1
        for order in self._book.pop(symbol, []):
            order.filled_qty, order.avg_fill_price, order.status = order.qty, o, OrderStatus.FILLED
            self.sink.on_fill(Fill(order.id, ts, symbol, order.side, order.qty, o, 1.0), order)
            self.sink.on_order_event(OrderEvent(ts, order.id, symbol, OrderStatus.FILLED), order)

    def on_close(self, symbol: str, ts: int, c: float, v: float) -> None:
        pass


def test_the_engine_trades_through_any_object_that_implements_the_contract():
    venue = NextOpenVenue()
    assert isinstance(venue, Venue)
    strategy = Scripted({0: lambda c: c.buy("X", 10), 2: lambda c: c.sell("X", 4)})
    driver = LiveDriver(strategy, ["X"], cash=1_000.0, venue=venue)
    for i, price in enumerate([10.0, 11.0, 12.0, 13.0, 14.0]):
        driver.feed(Bar("X", DAY0 + i * NS_PER_DAY, price, price, price, price, 100.0))
    driver.finish()
    engine = driver.engine
    assert [(f.side, f.qty, f.price) for f in engine.fills] == [(Side.BUY, 10, 11.0), (Side.SELL, 4, 13.0)]
    assert engine.portfolio.position("X") == 6 and engine.portfolio.cash == pytest.approx(1_000 - 110 + 52 - 2)
    assert venue.bars_seen == 2           # asked to match only where it had working orders
    assert [type(o).__name__ for o in strategy.fills] == ["Fill", "Fill"]


def test_an_engine_needs_a_venue_built_by_its_caller():
    market = StreamingMarket(["X"])
    with pytest.raises(TypeError, match="venue"):
        Engine(Scripted({}), market, Portfolio(1.0), FillRules(), RiskPipeline([]))  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------ T+1 state

def test_settlement_keeps_todays_buys_out_of_the_sellable_quantity_until_the_next_day():
    t1 = Settlement(t_plus_1=True)
    t1.on_fill(Fill("A", DAY0 + 1, "X", Side.BUY, 300.0, 10.0, 0.0))
    t1.on_fill(Fill("B", DAY0 + 2, "X", Side.BUY, 100.0, 10.0, 0.0))
    t1.on_fill(Fill("C", DAY0 + 3, "X", Side.SELL, 50.0, 10.0, 0.0))   # sells do not touch it
    assert t1.bought_today("X", DAY0 + 5) == 400 and t1.sellable("X", 1_000.0, DAY0 + 5) == 600
    assert t1.sellable("X", 1_000.0, DAY0 + NS_PER_DAY) == 1_000 and t1.sellable("Y", 7.0, DAY0) == 7
    t1.on_fill(Fill("D", DAY0 + NS_PER_DAY, "X", Side.BUY, 20.0, 10.0, 0.0))   # a new day starts a new count
    assert t1.state("X") == (DAY0 // NS_PER_DAY + 1, 20.0)
    again = Settlement(t_plus_1=True)
    again.restore("X", *t1.state("X"))
    assert again.sellable("X", 100.0, DAY0 + NS_PER_DAY) == 80
    off = Settlement(t_plus_1=False)
    off.on_fill(Fill("A", DAY0, "X", Side.BUY, 300.0, 10.0, 0.0))
    assert off.sellable("X", 300.0, DAY0) == 300


def test_prior_closes_roll_at_the_first_bar_of_a_day():
    closes = PriorCloses()
    assert math.isnan(closes.prev_close("X"))
    closes.on_bar("X", DAY0, 10.0)
    closes.on_bar("X", DAY0 + 1, 11.0)
    assert math.isnan(closes.prev_close("X"))          # the first day seen has no prior close
    closes.on_bar("X", DAY0 + NS_PER_DAY, 12.0)
    closes.on_bar("X", DAY0 + NS_PER_DAY + 1, 13.0)
    assert closes.prev_close("X") == 11.0
    copy = PriorCloses()
    copy.restore("X", *closes.state("X"))
    copy.on_bar("X", DAY0 + 2 * NS_PER_DAY, 9.0)
    assert copy.prev_close("X") == 13.0


THREE_A_DAY = NS_PER_DAY // 3
# buy 300 at bar 0 (fills at bar 1, day 0), sell 200 at bar 1: held through bar 2, filled at bar 3 (day 1)
SELLABLE = [0.0, 0.0, 0.0, 100.0, 100.0, 100.0]   # after each bar's matching
T1_RULES = FillRules(lot_size=100, market=ChinaAShares())


def t1_bars() -> list[Bar]:
    return [Bar("600000.SH", DAY0 + i * THREE_A_DAY, 10.0, 10.0, 10.0, 10.0, 1e6) for i in range(6)]


def test_a_sell_of_shares_bought_the_same_day_waits_for_the_next_day_in_the_backtest():
    """No pre-trade checks: the venue itself limits the sell to the sellable quantity (none today)."""
    bars = t1_bars()
    data = series("600000.SH", [(10.0, 10.0, 10.0, 10.0, 1e6)] * 6, step=THREE_A_DAY)
    seen = []
    script = {i: (lambda c: seen.append(c.sellable("600000.SH"))) for i in range(6)}
    script[0] = lambda c: (seen.append(c.sellable("600000.SH")), c.buy("600000.SH", 300))
    script[1] = lambda c: (seen.append(c.sellable("600000.SH")), c.sell("600000.SH", 200))
    res = run_backtest(Scripted(script), [data], cash=1e6, rules=T1_RULES, risk=RiskPipeline([]))
    assert [(f.side, f.qty, f.ts) for f in res.fills] == [(Side.BUY, 300, bars[1].ts), (Side.SELL, 200, bars[3].ts)]
    assert seen == SELLABLE


def test_the_exchange_simulator_holds_the_same_sell_the_same_way_with_the_same_settlement_class():
    bars = t1_bars()
    plan = {0: (Side.BUY, 300.0), 1: (Side.SELL, 200.0)}

    async def scenario():
        async with session_pair(T1_RULES) as (ex, broker):
            assert type(ex.settlement) is Settlement and ex.settlement.t_plus_1
            sellable = []
            for i, bar in enumerate(bars):
                ex.on_bar(bar)
                sellable.append(ex.venue.account.sellable(bar.symbol))
                if i in plan:
                    side, qty = plan[i]
                    order = Order(f"O{i}", bar.symbol, side, qty, created_ts=bar.ts)
                    broker.submit(order)
                    while order.status is OrderStatus.NEW:
                        await asyncio.sleep(0.002)
            await broker.status(order, timeout=3)   # a round trip: every earlier report has arrived
            return list(broker.fills), sellable, dict(ex.positions)

    fills, sellable, positions = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [(f.side, f.qty, f.ts) for f in fills] == [(Side.BUY, 300, bars[1].ts), (Side.SELL, 200, bars[3].ts)]
    assert sellable == SELLABLE and positions == {"600000.SH": 100.0}
    driver = LiveDriver(Scripted({}), ["600000.SH"], rules=T1_RULES)
    assert type(driver.engine.settlement) is Settlement   # the engine's T+1 state is the same class
