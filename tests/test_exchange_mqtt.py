"""The exchange simulator fed over MQTT: matches like the backtest venue, acks each clock after its reports.

A real Mosquitto, the simulator as a child process (``python -m brokers.exchange --mqtt URL``), a
FIX trader (``FixBroker``) and a lockstep replay of real bars; the test itself plays the runner:
it places orders on a clock, waits until the exchange has accepted them, then acks.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.fix.codec import decode, encode
from tradeloop.brokers.fix.mapping import new_order_single
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType
from tradeloop.brokers.orders import Fill, Order, OrderStatus, OrderType, Side
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.loaders import load_bars
from tradeloop.data.mqtt import Ack, ClockMark, MqttFeed
from tradeloop.data.replay import replay
from tradeloop.data.schema import Bar, BarSeries
from tests.mosquitto import mosquitto  # noqa: F401  (the fixture, used by name)
from tests.test_exchange_process import trader, wait_for

HOST = "127.0.0.1"
PASSWORD = "lockstep pass phrase"
ROOT = Path(__file__).resolve().parents[1]
RATE = 0.001


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def orcl(shared_data: Path) -> BarSeries:
    s = load_bars(shared_data / "backtrader" / "orcl-2014.txt", "ORCL")
    return BarSeries("ORCL", s.ts[:8], s.open[:8], s.high[:8], s.low[:8], s.close[:8], s.volume[:8])


@contextlib.asynccontextmanager
async def exchange_process(tmp: Path, url: str) -> AsyncIterator[tuple[dict, Path]]:
    """``python -m brokers.exchange --mqtt URL`` with JSON debug logs; yields its ready line and log path."""
    log = tmp / "exchange.log"
    rules = write_rules(tmp / "rules.json", FillRules(commission=PercentCommission(RATE)))
    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeloop.brokers.exchange", "--port", "0", "--sender", "EXCH", "--target", "TRADER",
            "--password-env", "EXCH_PW", "--state", str(tmp / "x.sqlite"), "--mqtt", url, "--venue", "sim",
            "--interval", "1d", "--rules", str(rules), "--log-json", "--log-level", "debug",
            cwd=ROOT, env={**os.environ, "EXCH_PW": PASSWORD}, stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line, f"exchange exited: {log.read_text()[-2000:]}"
        yield json.loads(line), log
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def plan_orders(bars: BarSeries) -> dict[int, list[Order]]:
    """Orders placed on the close of bar i: a market buy, a limit sell above, a stop sell below."""
    c1, c3 = float(bars.close[1]), float(bars.close[3])
    return {1: [Order("B1", "ORCL", Side.BUY, 300.0, created_ts=int(bars.ts[1]))],
            3: [Order("S1", "ORCL", Side.SELL, 100.0, OrderType.LIMIT, round(c3 * 1.004, 2),
                      created_ts=int(bars.ts[3])),
                Order("S2", "ORCL", Side.SELL, 100.0, OrderType.STOP, stop_price=round(c1 * 0.99, 2),
                      created_ts=int(bars.ts[3]))]}


class _Collect:
    """A FillSink for the backtest venue that only records fills."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []

    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        return None

    def on_fill(self, fill: Fill, order: Order) -> None:
        self.fills.append(fill)

    def on_order_event(self, event, order) -> None:
        pass

    def pre_close(self, symbol: str) -> float:
        return math.nan

    def sellable(self, symbol: str) -> float:
        return math.inf


def backtest_fills(bars: BarSeries) -> list[Fill]:
    """The same orders through brokers.sim.SimulatedVenue, bar by bar (match first, then place)."""
    sink = _Collect()
    venue = SimulatedVenue(FillRules(commission=PercentCommission(RATE)), sink)
    plan = plan_orders(bars)
    for i in range(len(bars)):
        ts = int(bars.ts[i])
        venue.on_bar("ORCL", ts, float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
                     float(bars.close[i]), float(bars.volume[i]))
        for o in plan.get(i, []):
            venue.submit(Order(o.id, o.symbol, o.side, o.qty, o.type, o.limit_price, o.stop_price, o.tif,
                               created_ts=o.created_ts), ts)
    return sink.fills


def key(fills: list[Fill]) -> list[tuple]:
    return [(f.order_id, f.ts, f.side, f.qty, f.price, f.commission) for f in fills]


def test_exchange_over_mqtt_fills_like_the_backtest_venue_and_acks_each_clock_after_the_reports(
        mosquitto, orcl, tmp_path):
    expected = backtest_fills(orcl)
    assert {f.order_id for f in expected} >= {"B1"}  # the scenario trades at all

    async def scenario():
        async with exchange_process(tmp_path, mosquitto.url) as (ready, log):
            assert ready["mqtt"] == mosquitto.url
            broker = trader(ready["fix_port"], tmp_path / "trader.sqlite", PASSWORD)
            await broker.start()
            assert await broker.wait_logged_on(5)
            plan = plan_orders(orcl)
            index = {int(t): i for i, t in enumerate(orcl.ts)}
            acks: list[tuple[int, list[tuple]]] = []   # (acked ts, fills the trader had booked by then)
            async with MqttFeed(mosquitto.url, ["ORCL"], clock=True, acks=["exchange"]) as feed:
                await feed.wait_ready()
                publisher = asyncio.create_task(
                    replay([orcl], mosquitto.url, lockstep=["exchange", "runner"], lockstep_timeout=10))
                async for event in feed:
                    if isinstance(event, ClockMark):
                        placed = plan.get(index[event.ts], [])
                        for o in placed:
                            broker.submit(o)
                        await wait_for(lambda placed=placed: all(o.status is not OrderStatus.NEW for o in placed))
                        await feed.ack("runner", event.ts)
                    elif isinstance(event, Ack):
                        due = [f for f in key(expected) if f[1] <= event.ts]
                        # the report was written to the trader's socket before the ack was published:
                        # it is there to be read (the trader's session task may need a turn of the loop)
                        await wait_for(lambda ts=event.ts, due=due: [f for f in key(broker.fills) if f[1] <= ts] == due,
                                       1.0)
                        acks.append((event.ts, key(broker.fills)))
                stats = await publisher
            await broker.stop()
        return acks, key(broker.fills), stats, log

    acks, fills, stats, log = run(scenario())
    assert fills == key(expected)
    assert [ts for ts, _ in acks] == [int(t) for t in orcl.ts] and stats.clocks == len(orcl)

    # in the exchange's own log, each fill's ExecutionReport (35=8, 150=F) is sent before the ack of its bar
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    order = [("fill", e["msg"]) if e["event"] == "fix.send" else ("ack", e["ts"]) for e in events
             if (e["event"] == "fix.send" and "|35=8|" in e["msg"] and "|150=F|" in e["msg"])
             or e["event"] == "exchange.mqtt_ack"]
    for f in expected:
        first_ack = next(i for i, (kind, ts) in enumerate(order) if kind == "ack" and ts >= f.ts)
        assert any(kind == "fill" and f"|11={f.order_id}|" in msg for kind, msg in order[:first_ack])


def test_market_data_at_or_before_the_last_processed_is_ignored_even_after_a_restart(tmp_path):
    """Bars re-published after a restart must not be matched twice; ticks may share a stamp."""
    state = tmp_path / "x.sqlite"
    day = 86_400 * 10 ** 9
    b = [Bar("X", 1_700_006_400_000_000_000 + i * day, 10.0, 11.0, 9.0, 10.5, 1000.0) for i in range(4)]
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)
    assert [ex.on_bar(b[0]), ex.on_bar(b[1]), ex.on_bar(b[1]), ex.on_bar(b[0])] == [True, True, False, False]
    ex.store.close()

    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)
    nos = encode(MsgType.NewOrderSingle, "TRADER", "EXCH", 1,
                 new_order_single(Order("O1", "X", Side.BUY, 5.0, created_ts=b[1].ts)))
    ex.on_message(ex.session, decode(nos))
    [order] = ex.venue.open_orders()
    assert not ex.on_bar(b[1]) and order.status is OrderStatus.ACCEPTED  # the replayed bar does not fill it
    assert ex.on_bar(b[2]) and order.status is OrderStatus.FILLED and order.avg_fill_price == b[2].open
    assert ex.ignored == 1 and ex.clock == b[2].ts
    ex.store.close()
