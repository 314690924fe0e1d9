"""Hostile peers never corrupt trading: the exchange simulator (a real process) against bad order values,
a failing order, idle / garbage / wrong-password connections, bad bars, stray and future-stamped MQTT
market data, and a bounded seeded fuzz run of all of it while a real trader keeps trading.

One failure class per test; the exchange is ``python -m tradeloop.brokers.exchange``, the broker a real
Mosquitto (tests/mosquitto.py), the trader the production FIX adapter (brokers/fix/client.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fix.client import Backoff, FixBroker
from tradeloop.brokers.fix.codec import decode, encode, utc_timestamp
from tradeloop.brokers.fix.mapping import new_order_single
from tradeloop.brokers.fix.rawpeer import RawPeer
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import MemoryStore, SQLiteSequenceStore
from tradeloop.brokers.orders import Order, OrderEvent, OrderStatus, OrderType, Side
from tradeloop.brokers.sim import FillRules
from tradeloop.data.mqtt import (Ack, MqttFeed, bar_topic, clock_topic, encode_bar, encode_eos, encode_mark,
                                 encode_tick, eos_topic, tick_topic)
from tradeloop.data.schema import Bar, Tick
from tests import live_procs
from tests.mosquitto import mosquitto  # noqa: F401  (the fixture, used by name)

HOST = "127.0.0.1"
PASSWORD = "hostile peers pass phrase"
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_006_400_000_000_000
MIN = 60_000_000_000
HOUR = 60 * MIN


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Exchange:
    """The simulator process: its ready line, a JSON-lines bars connection, its log, its last line."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict, log: Path) -> None:
        self.proc, self.log = proc, log
        self.fix_port, self.bars_port = ready["fix_port"], ready["bars_port"]
        self.final: dict = {}
        self._bars: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send_bar(self, line: bytes | dict) -> str:
        """One JSON line on the bars port; the simulator's reply (``ok <ts>`` or ``error <why>``)."""
        if self._bars is None:
            self._bars = await asyncio.open_connection(HOST, self.bars_port)
        reader, writer = self._bars
        writer.write((json.dumps(line).encode() if isinstance(line, dict) else line) + b"\n")
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()

    async def bar(self, ts: int, o: float, h: float, lo: float, c: float, v: float = 1000.0,
                  symbol: str = "X") -> str:
        return await self.send_bar({"symbol": symbol, "ts": ts, "open": o, "high": h, "low": lo, "close": c,
                                    "volume": v})

    async def stop(self) -> int:
        """SIGTERM, then its exit status; ``final`` holds its ``stopped`` line (market data dropped by reason)."""
        if self._bars is not None:
            self._bars[1].close()
        self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), 15)
        for line in out.decode().splitlines():
            event = json.loads(line)
            if event.get("event") == "stopped":
                self.final = event
        return await asyncio.wait_for(self.proc.wait(), 10)

    def events(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]


@contextlib.asynccontextmanager
async def exchange(tmp: Path, *extra: str, name: str = "exch") -> AsyncIterator[Exchange]:
    log = tmp / f"{name}.log"
    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeloop.brokers.exchange", "--port", "0", "--bars-port", "0", "--sender", "EXCH",
            "--target", "TRADER", "--password-env", "EXCH_PW", "--state", str(tmp / f"{name}.sqlite"), "--log-json",
            *extra, cwd=ROOT, env={**os.environ, "EXCH_PW": PASSWORD}, stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, f"exchange exited: {log.read_text()[-3000:]}"
        yield Exchange(proc, json.loads(line), log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def trader(port: int, store: Path | None = None) -> FixBroker:
    config = SessionConfig("TRADER", "EXCH", heartbeat_s=5, password=PASSWORD, logout_timeout_s=1.0)
    return FixBroker(config, HOST, port, SQLiteSequenceStore(store, "TRADER->EXCH") if store else MemoryStore(),
                     backoff=Backoff(0.05, 0.25))


async def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def nos(clordid: str, qty: object, ord_type: str = "1", price: object = None, stop: object = None,
        symbol: str = "X", side: str = "1") -> list[tuple[int, object]]:
    """A NewOrderSingle body with exactly the given (possibly hostile) values."""
    return [(Tag.ClOrdID, clordid), (Tag.HandlInst, "1"), (Tag.Symbol, symbol), (Tag.Side, side),
            (Tag.TransactTime, utc_timestamp(T0)), (Tag.OrderQty, qty), (Tag.OrdType, ord_type),
            (Tag.Price, price), (Tag.StopPx, stop), (Tag.TimeInForce, "1")]


# ------------------------------------------------------------------------------------------ 1. values
def test_out_of_range_quantities_and_prices_are_rejected_one_by_one_and_the_session_stays_up(tmp_path):
    """1e308 and 400-digit (infinite) quantities and prices, zero and negative values: each order gets an
    ExecutionReport 39=8 naming the field; a malformed number gets a session Reject; a good order placed
    after all of them is accepted and filled at the bar's price (an infinite price used to stay in the
    book and stop every other order's reports)."""
    huge, infinite = "1" + "0" * 308, "9" * 400

    async def scenario():
        async with exchange(tmp_path) as ex:
            peer = await RawPeer().connect(HOST, ex.fix_port)
            await peer.logon(password=PASSWORD)
            refused = {"Q1": nos("Q1", huge), "Q2": nos("Q2", infinite), "Q3": nos("Q3", "-5"),
                       "Q4": nos("Q4", "0"), "P1": nos("P1", 10, "2", infinite), "P2": nos("P2", 10, "2", huge),
                       "P3": nos("P3", 10, "2", "-1"), "S1": nos("S1", 10, "3", None, infinite),
                       "S2": nos("S2", 10, "4", 10, "0")}
            for clordid, body in refused.items():
                await peer.send(MsgType.NewOrderSingle, body)
                er = await peer.expect(MsgType.ExecutionReport)
                assert er[Tag.ClOrdID] == clordid and er[Tag.OrdStatus] == "8" and er[Tag.ExecType] == "8", er
                field = {"Q": "OrderQty(38)", "P": "Price(44)", "S": "StopPx(99)"}[clordid[0]]
                assert field in er[Tag.Text] and "finite" in er[Tag.Text], er
                assert er[Tag.OrdRejReason] == ("13" if clordid[0] == "Q" else "99")
            await peer.send(MsgType.NewOrderSingle, nos("F1", "12abc"))          # not a number at all
            reject = await peer.expect(MsgType.Reject)
            assert reject[Tag.RefTagID] == str(Tag.OrderQty) and reject[Tag.SessionRejectReason] == "6"
            await peer.send(MsgType.NewOrderSingle, nos("G1", 10, "2", "10.5"))   # a good limit buy
            er = await peer.expect(MsgType.ExecutionReport)
            assert er[Tag.ClOrdID] == "G1" and er[Tag.OrdStatus] == "0"
            assert await ex.bar(T0 + MIN, 10, 10.2, 9.8, 10) == f"ok {T0 + MIN}"
            fill = await peer.expect(MsgType.ExecutionReport)
            assert fill[Tag.ExecType] == "F" and fill[Tag.LastPx] == "10" and fill[Tag.OrdStatus] == "2"
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "STILL-UP")])
            assert (await peer.expect(MsgType.Heartbeat))[Tag.TestReqID] == "STILL-UP"
            await peer.close()
            assert await ex.stop() == 0
        assert not [e for e in ex.events() if e["event"] in ("exchange.order_failed", "fix.application_error")]
    run(scenario())


def test_an_overlong_clordid_is_refused_and_never_remembered(tmp_path):
    """Every ClOrdID seen is kept for duplicate checks, so one past 64 characters (a 100 kB one here) is
    refused for what it is, new order and cancel alike, and a later order may not collide with it."""
    long_id = "L" * 100_000

    async def scenario():
        async with exchange(tmp_path) as ex:
            peer = await RawPeer().connect(HOST, ex.fix_port)
            await peer.logon(password=PASSWORD)
            await peer.send(MsgType.NewOrderSingle, nos(long_id, 10, "2", "10.5"))
            er = await peer.expect(MsgType.ExecutionReport)
            assert er[Tag.OrdStatus] == "8" and "ClOrdID longer than 64 characters" in er[Tag.Text]
            await peer.send(MsgType.OrderCancelRequest, [
                (Tag.OrigClOrdID, long_id), (Tag.ClOrdID, "C1"), (Tag.Symbol, "X"), (Tag.Side, "1"),
                (Tag.TransactTime, utc_timestamp(T0))])
            rej = await peer.expect(MsgType.OrderCancelReject)
            assert "OrigClOrdID longer than 64 characters" in rej[Tag.Text]
            await peer.send(MsgType.NewOrderSingle, nos("C1", 10, "2", "10.5"))   # C1 was never remembered
            assert (await peer.expect(MsgType.ExecutionReport))[Tag.OrdStatus] == "0"
            await peer.close()
            assert await ex.stop() == 0
        with sqlite3.connect(tmp_path / "exch.sqlite") as db:
            assert max(len(c) for (c,) in db.execute("SELECT clordid FROM exch_clordid")) <= 64
    run(scenario())


# ------------------------------------------------------------------------------------------ 2. containment
class _BoomOn13:
    """A commission model that fails for one order (qty 13): a bug that must cost that order alone."""

    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int) -> float:
        if qty == 13:
            raise RuntimeError("commission model failed")
        return 0.0


def _sent(ex: ExchangeSimulator) -> list:
    return [decode(raw) for raw in ex.store.messages(1, 10 ** 9).values()]


def test_an_exception_in_one_order_is_contained_undone_and_reported_for_that_order_alone(tmp_path, monkeypatch):
    state = tmp_path / "x.sqlite"
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state, rules=FillRules(commission=_BoomOn13()))
    seq = iter(range(1, 100))

    def send(order: Order) -> None:
        raw = encode(MsgType.NewOrderSingle, "TRADER", "EXCH", next(seq), new_order_single(order))
        ex.on_message(ex.session, decode(raw))

    for oid, qty in (("A", 5.0), ("B", 13.0), ("C", 7.0)):
        send(Order(oid, "X", Side.BUY, qty, created_ts=T0))
    assert ex.on_bar(Bar("X", T0 + MIN, 10, 10, 10, 10, 1000))          # B fails while matching; A and C fill
    reports = {(m[Tag.ClOrdID], m[Tag.ExecType]): m for m in _sent(ex) if m.msg_type == MsgType.ExecutionReport}
    assert reports[("A", "F")][Tag.LastPx] == "10" and reports[("C", "F")][Tag.LastQty] == "7"
    cancelled = reports[("B", "4")]
    assert cancelled[Tag.OrdStatus] == "4" and "internal error" in cancelled[Tag.Text]
    assert ("B", "F") not in reports and ex.positions["X"] == 12.0

    # a failure while taking a new order: undone (no order, no book entry), that order alone rejected
    import tradeloop.brokers.exchange as exchange_module
    real = exchange_module.execution_report

    def failing(order, **kw):
        if kw["clordid"] == "BOOM":
            raise ValueError("report cannot be built")
        return real(order, **kw)
    monkeypatch.setattr(exchange_module, "execution_report", failing)
    send(Order("BOOM", "X", Side.BUY, 1.0, OrderType.LIMIT, 9.0, created_ts=T0 + MIN))
    send(Order("D", "X", Side.BUY, 2.0, OrderType.LIMIT, 9.0, created_ts=T0 + MIN))
    boom = [m for m in _sent(ex) if m.get(Tag.ClOrdID) == "BOOM"]
    assert [(m.msg_type, m[Tag.OrdStatus]) for m in boom] == [(MsgType.ExecutionReport, "8")]
    assert "exchange error" in boom[0][Tag.Text]
    assert [o.id for o in ex.venue.open_orders()] == [ex._clordids["D"]] and ex._clordids["BOOM"] == ""
    send(Order("BOOM", "X", Side.BUY, 1.0, created_ts=T0 + MIN))           # its ClOrdID stays used
    assert [m for m in _sent(ex) if m.get(Tag.ClOrdID) == "BOOM"][-1][Tag.OrdRejReason] == "6"
    ex.store.close()

    again = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)   # what the file holds agrees
    status = {rec.clordid: rec.order.status for rec in again._recs.values()}
    assert status == {"A": OrderStatus.FILLED, "B": OrderStatus.CANCELLED, "C": OrderStatus.FILLED,
                      "D": OrderStatus.ACCEPTED}
    assert again.positions["X"] == 12.0 and [o.id for o in again.venue.open_orders()] == [again._clordids["D"]]
    again.store.close()


# ------------------------------------------------------------------------------------------ 3. connections
async def _closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the exchange closes the connection within ``timeout`` seconds."""
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except (TimeoutError, asyncio.TimeoutError):
        return False
    except (ConnectionError, OSError):
        pass
    return True


def test_idle_garbage_half_logon_and_wrong_password_connections_never_delay_the_traders_logon(tmp_path):
    """Today's bug: one idle TCP connection took the session and locked the trader out. Now 70 idle
    sockets (past the 64 that may wait), garbage, a half-sent Logon and a wrong password are all
    served at once and closed; the trader logs on at once and trades; a second good Logon is refused."""
    timeout = 2.0

    async def scenario():
        async with exchange(tmp_path, "--logon-timeout", str(timeout)) as ex:
            idle = [await asyncio.open_connection(HOST, ex.fix_port) for _ in range(70)]
            garbage = await asyncio.open_connection(HOST, ex.fix_port)
            garbage[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            half = await asyncio.open_connection(HOST, ex.fix_port)
            logon = RawPeer().build(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30),
                                                   (Tag.Password, PASSWORD)])
            half[1].write(logon[:len(logon) // 2])
            wrong = await RawPeer().connect(HOST, ex.fix_port)
            await wrong.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, "guess")])
            started = time.monotonic()
            broker = trader(ex.fix_port)
            await broker.start()
            assert await broker.wait_logged_on(timeout), "the trader's logon waited on hostile connections"
            waited = time.monotonic() - started
            assert waited < timeout, waited
            assert "password" in (await wrong.expect(MsgType.Logout))[Tag.Text] and await wrong.closed(1)
            assert await _closed_within(garbage[0], 1.0)
            second = await RawPeer().connect(HOST, ex.fix_port)          # the right password, session taken
            await second.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30),
                                              (Tag.Password, PASSWORD)])
            assert "already logged on" in (await second.expect(MsgType.Logout))[Tag.Text]
            closed = await asyncio.gather(*(_closed_within(r, timeout + 2) for r, _ in [*idle, half]))
            assert all(closed), f"{closed.count(False)} unauthenticated connections still open"
            order = Order("T1", "X", Side.BUY, 3.0, created_ts=T0)
            broker.submit(order)
            await wait_for(lambda: order.status is OrderStatus.ACCEPTED)
            await ex.bar(T0 + MIN, 10, 10, 10, 10)
            await wait_for(lambda: order.status is OrderStatus.FILLED)
            assert broker.session.logged_on and broker.logons == 1
            await broker.stop()
            assert await ex.stop() == 0
        events = Counter(e["event"] for e in ex.events())
        assert events["exchange.logon_timeout"] >= 1 and events["exchange.pending_connection_evicted"] >= 6
        assert events["exchange.logon_refused"] >= 2 and events["exchange.second_connection_refused"] == 1
        assert PASSWORD not in ex.log.read_text() and "guess" not in ex.log.read_text()
    run(scenario())


# ------------------------------------------------------------------------------------------ 4. bars port
def test_the_bars_port_refuses_bars_the_loaders_would_refuse_and_never_matches_them(tmp_path):
    async def scenario():
        async with exchange(tmp_path) as ex:
            broker = trader(ex.fix_port)
            await broker.start()
            assert await broker.wait_logged_on(5)
            order = Order("M1", "X", Side.BUY, 4.0, created_ts=T0)
            broker.submit(order)
            await wait_for(lambda: order.status is OrderStatus.ACCEPTED)
            bad = [(T0 + MIN, -10, 10, -10, -10), (T0 + MIN, 10, 9, 11, 10), (T0 + MIN, 12, 11, 9, 10),
                   (T0 + MIN, 1e13, 1e13, 1e13, 1e13)]
            for ts, o, h, lo, c in bad:
                reply = await ex.bar(ts, o, h, lo, c)
                assert reply.startswith("error refused bar"), reply
            assert (await ex.send_bar(b'{"symbol":"X","ts":1,"open":1e999,"high":1,"low":1,"close":1,'
                                      b'"volume":1}')).startswith("error")
            assert (await ex.send_bar(b"not json")).startswith("error")
            future = time.time_ns() + 3 * 86_400 * 10 ** 9     # past the bar skew (one 1d interval)
            assert await ex.bar(future, 999, 999, 999, 999) == f"ok {future}"   # taken off the wire, dropped
            assert await ex.bar(T0 + 2 * MIN, 10, 10.5, 9.5, 10) == f"ok {T0 + 2 * MIN}"
            await wait_for(lambda: order.status is OrderStatus.FILLED)
            assert order.avg_fill_price == 10.0 and [f.price for f in broker.fills] == [10.0]
            await broker.stop()
            assert await ex.stop() == 0
        md = ex.final["market_data"]
        assert md["dropped"] == {"future": 1} and md["feeds"]["JsonLineBarServer"]["refused"] == 6
    run(scenario())


# ------------------------------------------------------------------------------------------ 5. MQTT data
def test_stray_and_future_stamped_mqtt_data_never_moves_the_exchange_clock_or_fills(mosquitto, tmp_path):
    """A bar on another symbol's topic stamped now used to move the exchange's clock past every order
    (no fill ever again); one stamped 12 h ahead filled an order at its fake price. Now: data of a symbol
    with no orders never moves the clock, data stamped ahead by more than the skew (1 bar interval = 1 min
    here, 5 s for ticks) is dropped, and the drops are counted by reason."""
    venue = "h"

    async def scenario():
        async with exchange(tmp_path, "--mqtt", mosquitto.url, "--venue", venue, "--interval", "1m") as ex, \
                MqttFeed(mosquitto.url, [], venue=venue, interval="1m", acks=["exchange"]) as marks:
            await marks.wait_ready()
            broker = trader(ex.fix_port)
            await broker.start()
            assert await broker.wait_logged_on(5)

            async def publish(*events: Bar | Tick, clock: int) -> None:
                """Publish, then a $clock mark; return once the exchange acked it (all before it is matched)."""
                for e in events:
                    topic = bar_topic(venue, e.symbol, "1m") if isinstance(e, Bar) else tick_topic(venue, e.symbol)
                    await marks.publish(topic, encode_bar(e) if isinstance(e, Bar) else encode_tick(e))
                await marks.publish(clock_topic(venue), encode_mark(clock))
                async with asyncio.timeout(10):
                    async for ev in marks:
                        if isinstance(ev, Ack) and ev.ts >= clock:
                            return

            a = Order("A", "X", Side.BUY, 5.0, created_ts=T0)
            broker.submit(a)
            await wait_for(lambda: a.status is OrderStatus.ACCEPTED)
            now = time.time_ns()
            await publish(Bar("Y", now, 1, 1, 1, 1, 1), clock=1)               # stray: no order on Y
            b = Order("B", "X", Side.BUY, 6.0, created_ts=T0)                  # placed after the stray bar
            broker.submit(b)
            await wait_for(lambda: b.status is OrderStatus.ACCEPTED)
            await publish(Bar("X", now + 12 * HOUR, 999, 999, 999, 999, 1e6),   # 12 h ahead: a fake price
                          Tick("X", now + 60 * 10 ** 9, 998.0, 10.0), clock=2)
            assert a.status is OrderStatus.ACCEPTED and b.status is OrderStatus.ACCEPTED
            await publish(Bar("X", T0 + MIN, 10, 10.5, 9.5, 10, 1e6), clock=3)
            await wait_for(lambda: a.status is b.status is OrderStatus.FILLED)
            assert sorted((f.order_id, f.price) for f in broker.fills) == [("A", 10.0), ("B", 10.0)]
            await broker.stop()
            assert await ex.stop() == 0
        md = ex.final["market_data"]
        assert md["feeds"]["MqttBarFeed"]["dropped"] == {"future": 2}, md
    run(scenario())


def test_the_live_runner_counts_dropped_market_data_in_its_metrics_and_manifest(mosquitto, tmp_path):
    """``tradeloop live`` drops a future-stamped bar with the same setting and reports the drops by reason
    in metrics.json (``live``) and the manifest (``details.session``)."""
    venue = "lv"
    exch, port = live_procs.exchange(tmp_path, mosquitto.url, venue=venue, interval="1m")
    out = tmp_path / "run"
    try:
        runner = live_procs.live(tmp_path, ["tests.live_strategies:Churn", "--cash", "1000000", "--mqtt",
                                            mosquitto.url, "--fix", f"127.0.0.1:{port}", "--state",
                                            str(tmp_path / "live.sqlite"), "--symbols", "X", "--venue", venue,
                                            "--interval", "1m", "--out", str(out)])
        now = time.time_ns()

        async def feed() -> None:
            async with MqttFeed(mosquitto.url, [], venue=venue, interval="1m") as pub:
                await pub.wait_ready()
                for bar in (Bar("X", T0, 10, 10, 10, 10, 1000), Bar("X", now + 12 * HOUR, 99, 99, 99, 99, 1),
                            Bar("X", T0 + MIN, 10, 10, 10, 10, 1000)):
                    await pub.publish(bar_topic(venue, "X", "1m"), encode_bar(bar))
                await pub.publish(eos_topic(venue), encode_eos(3, T0 + MIN))
        run(feed(), 20)
        assert runner.wait(60) == 0, runner.tail()
    finally:
        exch.stop()
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert manifest["details"]["session"]["market_data_dropped"] == {"future": 1}
    assert metrics["live"]["market_data_dropped"] == {"future": 1} and metrics["live"]["bars"] == 2


# ------------------------------------------------------------------------------------------ 6. fuzz
SEED = 20240607
ROUNDS = 150                 # trader orders, each followed by 3 to 8 hostile messages (bounded: ~10 s here)
HOSTILE_VALUES = ["1" + "0" * 308, "9" * 400, "-5", "0", "0.0", "-0", "1e5", "nan", "inf", "abc", "", " ",
                  "0.000000000001", "123456789012345678901234567890", "12.5.5", "\x7f", "=", "-"]
SKIP_TAGS = {8, 9, 10, 34, 35, 43, 49, 52, 56, 97, 122}   # header and trailer: the session's to set


def fuzz_message(rng: random.Random, n: int, trader_ids: list[str], fuzz_ids: list[str]) -> tuple[str, list]:
    """One hostile application message: a well-formed order message (new, cancel, replace, status, or a
    type the exchange does not take) with 0 to 3 mutations: a field's value replaced by garbage or an
    out-of-range number, a required field missing, a field repeated, a bad or unknown tag, an unknown
    symbol, a TransactTime ahead or malformed; ClOrdIDs repeat, cancels aim at unknown orders. Never a
    session message (35=0..5, A): those are the session's own."""
    mt = rng.choice([MsgType.NewOrderSingle] * 5 + [MsgType.OrderCancelRequest] * 2 +
                    [MsgType.OrderCancelReplaceRequest] * 2 + [MsgType.OrderStatusRequest, "V", "AE", "zz", "Q"])
    clordid = rng.choice([f"FZ{n}"] * 6 + fuzz_ids[-5:] + trader_ids[-3:] + ["x" * 300])
    if mt != MsgType.NewOrderSingle and clordid in trader_ids:
        clordid = f"FZ{n}"   # a NewOrderSingle may reuse the trader's ClOrdID (refused); cancels never aim at its orders
    ord_type = rng.choice(["1", "2", "3", "4"])
    price = f"{rng.uniform(5, 15):.2f}"
    body: list[tuple[object, object]] = [(Tag.ClOrdID, clordid)]
    if mt in (MsgType.OrderCancelRequest, MsgType.OrderCancelReplaceRequest):
        body.append((Tag.OrigClOrdID, rng.choice(fuzz_ids[-5:] + ["NOPE", f"U{n}"])))
    body += [(Tag.HandlInst, "1"), (Tag.Symbol, rng.choice(["X", "Y"])), (Tag.Side, rng.choice(["1", "2"])),
             (Tag.TransactTime, utc_timestamp(T0)), (Tag.OrderQty, str(rng.randint(1, 50))), (Tag.OrdType, ord_type)]
    if ord_type in "24":
        body.append((Tag.Price, price))
    if ord_type in "34":
        body.append((Tag.StopPx, price))
    body.append((Tag.TimeInForce, rng.choice(["0", "1", "3"])))
    if mt == MsgType.OrderStatusRequest:
        body = [f for f in body if f[0] in (Tag.ClOrdID, Tag.Symbol, Tag.Side)]
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        mutation = rng.choice(["value", "value", "value", "missing", "repeat", "tag", "symbol", "time", "enum"])
        i = rng.randrange(len(body)) if body else 0
        if mutation == "value" and body:
            body[i] = (body[i][0], rng.choice(HOSTILE_VALUES))
        elif mutation == "missing" and body:
            body.pop(i)
        elif mutation == "repeat" and body:
            body.append(body[i])
        elif mutation == "tag":
            body.insert(i, (rng.choice(["abc", "0", "-1", "07", "99999", "5000"]), "v"))
        elif mutation == "symbol":
            body = [(t, rng.choice(["ZZZ", "\x7f", "y" * 80, "x"]) if t == Tag.Symbol else v) for t, v in body]
        elif mutation == "time":
            body = [(t, rng.choice(["20991231-23:59:59.000", "20231345-99:99:99", "yesterday"])
                     if t == Tag.TransactTime else v) for t, v in body]
        elif mutation == "enum":
            tag = rng.choice([Tag.Side, Tag.OrdType, Tag.TimeInForce, Tag.HandlInst])
            body = [(t, rng.choice(["3", "9", "Q", "6", "Z"]) if t == tag else v) for t, v in body]
    return mt, [(t, v) for t, v in body if t not in SKIP_TAGS]


async def _hostile_connection(kind: str, seed: int, port: int, timeout: float) -> tuple[str, float]:
    """One hostile connection of ``kind``; returns the kind and how long the exchange took to close it."""
    rng = random.Random(seed)
    body = [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, "guess" if kind == "wrong_password"
                                                             else PASSWORD)]
    peer = RawPeer(target="NOT-EXCH") if kind == "wrong_compid" else RawPeer()
    logon = peer.build(MsgType.Logon, body)
    data = {"idle": b"", "garbage": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))),
            "half_logon": logon[:rng.randrange(1, len(logon) - 1)], "wrong_password": logon,
            "wrong_compid": logon, "garbled_logon": logon[:-4] + b"999\x01"}[kind]
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        closed = await _closed_within(reader, timeout + 3)
    except (ConnectionError, OSError):
        closed = True
    writer.close()
    assert closed, f"a {kind} connection was never closed"
    return kind, time.monotonic() - started


KINDS = ["idle", "garbage", "half_logon", "wrong_password", "wrong_compid", "garbled_logon"]


def test_a_bounded_seeded_fuzz_run_never_disturbs_a_trading_session(tmp_path):
    """Seeded hostile application messages (sent in the trader's own session, so they are sequenced and
    reach the order handling) and hostile connections, while the trader keeps placing, cancelling and
    filling orders: the exchange process survives and contains every failure, the trader's session
    never drops, each of the trader's orders ends with exactly one final outcome, and its re-logon in
    the middle of the storm is not delayed beyond the logon timeout."""
    rng = random.Random(SEED)
    timeout = 2.0

    async def scenario():
        async with exchange(tmp_path, "--logon-timeout", str(timeout), "--symbols", "X,Y") as ex:
            store = tmp_path / "trader.sqlite"
            broker = trader(ex.fix_port, store)
            await broker.start()
            assert await broker.wait_logged_on(5)
            storm_over = asyncio.Event()
            outcomes: list[tuple[str, float]] = []

            async def storm(worker: int) -> None:
                """Hostile connections one after another: every kind once (shuffled), then at random."""
                wrng = random.Random(SEED + worker)
                kinds = wrng.sample(KINDS, len(KINDS))
                while not storm_over.is_set():
                    kind = kinds.pop() if kinds else wrng.choice(KINDS)
                    outcomes.append(await _hostile_connection(kind, wrng.randrange(10 ** 9), ex.fix_port, timeout))
            storm_task = asyncio.gather(*(storm(w) for w in range(1, 6)))

            orders: list[Order] = []
            events: list = []
            trader_ids: list[str] = []
            fuzz_ids: list[str] = ["FZ-none"]
            sent: Counter = Counter()
            bar_i = 0
            relogon_s = None
            for n in range(1, ROUNDS + 1):
                # the trader's own orders: market buys, resting limits it cancels, and ones the exchange refuses
                kind, oid = n % 4, f"T{n}"
                o = {0: lambda: Order(oid, "X", Side.BUY, float(rng.randint(1, 9)), created_ts=T0),
                     1: lambda: Order(oid, "X", Side.BUY, 2.0, OrderType.LIMIT, 1.0, created_ts=T0),
                     2: lambda: Order(oid, "Y", Side.SELL, 1e308, created_ts=T0),     # out of range
                     3: lambda: Order(oid, "Q", Side.BUY, 1.0, created_ts=T0)}[kind]()  # not served here
                orders.append(o)
                trader_ids.append(oid)
                broker.submit(o)
                for _ in range(rng.randrange(3, 9)):
                    mt, body = fuzz_message(rng, n * 100 + sum(sent.values()), trader_ids, fuzz_ids)
                    broker.session.send(mt, body)
                    sent[mt] += 1
                    clordid = next((v for t, v in body if t == Tag.ClOrdID), "")
                    if mt == MsgType.NewOrderSingle and clordid.startswith("FZ"):
                        fuzz_ids.append(clordid)
                if n % 5 == 0:
                    bar_i += 1
                    assert await ex.bar(T0 + bar_i * MIN, 10, 10.5, 9.5, 10) == f"ok {T0 + bar_i * MIN}"
                    assert (await ex.bar(T0 + bar_i * MIN, -1, 1, -1, 1)).startswith("error refused bar")
                if n % 7 == 0:
                    for w in [o for o in orders if o.type is OrderType.LIMIT and o.status is OrderStatus.ACCEPTED]:
                        broker.cancel(w)
                if n == ROUNDS // 2:                     # log out and back on in the middle of the storm
                    await broker.stop()
                    while not broker.events.empty():
                        events.append(broker.events.get_nowait())
                    old, broker = broker, trader(ex.fix_port, store)
                    broker.restore([(o, old.clordid(o), old.requests(o)) for o in orders], old._exec_ids)
                    started = time.monotonic()
                    await broker.start()
                    assert await broker.wait_logged_on(timeout + 1)
                    relogon_s = time.monotonic() - started
                await asyncio.sleep(0.03)
            storm_over.set()
            await storm_task
            for o in orders:                             # end every order: cancel what rests, a last bar fills
                if o.type is OrderType.LIMIT and o.is_open:
                    broker.cancel(o)
            bar_i += 1
            await ex.bar(T0 + bar_i * MIN, 10, 10.5, 9.5, 10)
            await wait_for(lambda: all(o.status.is_final for o in orders), 20,
                           f"final outcomes ({[o.id for o in orders if not o.status.is_final]})")
            await broker.session.ping(5)
            assert broker.session.logged_on and broker.logons == 1      # this session never dropped
            await broker.stop()
            while not broker.events.empty():
                events.append(broker.events.get_nowait())
            assert ex.proc.returncode is None
            assert await ex.stop() == 0
            return orders, events, sent, outcomes, relogon_s

    started = time.monotonic()
    orders, events, sent, outcomes, relogon_s = run(scenario(), 120)
    elapsed = time.monotonic() - started
    assert relogon_s is not None and relogon_s < timeout, relogon_s
    want = {0: OrderStatus.FILLED, 1: OrderStatus.CANCELLED, 2: OrderStatus.REJECTED, 3: OrderStatus.REJECTED}
    assert [o.id for o in orders if o.status is not want[int(o.id[1:]) % 4]] == []
    finals = Counter(e.order_id for e in events if isinstance(e, OrderEvent) and e.status.is_final)
    assert {o.id: finals[o.id] for o in orders if finals[o.id] != 1} == {}        # exactly one outcome each
    fills = Counter(e.order_id for e in events if not isinstance(e, OrderEvent) and hasattr(e, "price"))
    assert all(fills[o.id] >= 1 for o in orders if o.status is OrderStatus.FILLED)
    assert sum(sent.values()) > 600 and sent[MsgType.NewOrderSingle] > 250, sent
    assert len(outcomes) > 20 and {k for k, _ in outcomes} == set(KINDS), Counter(k for k, _ in outcomes)
    assert max(t for _, t in outcomes) < timeout + 2
    assert elapsed < 40, elapsed
    log = (tmp_path / "exch.log").read_text()
    failures = [e for e in (json.loads(x) for x in log.splitlines() if x.startswith("{"))
                if e["event"] in ("exchange.order_failed", "fix.internal_error", "fix.application_error")]
    assert not failures, failures[:3]
    assert PASSWORD not in log
