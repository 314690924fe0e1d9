"""The exchange simulator keeps a tick venue's own per-order state through an undone unit and a restart.

With tick rules the venue (brokers/quotes.py QuoteVenue) knows more of an order than the Order says: when it
arrives (a seeded latency draw), whether a limit has rested, its place in the queue. The exchange takes that
state (brokers.base.ResumableVenue) into each unit's undo and into its state file, so:

- a failure contained to one order (while matching it, or while taking a new order) leaves every other
  order's fills exactly as in a run where it did not fail: no queue counted twice, no latency drawn anew;
- an exchange killed mid-session and restarted on its state file fills its working limit orders (arrival,
  rested, queue place) and the orders sent after the restart (the latency sampler goes on) as an
  uninterrupted run does;
- a state file written before this state was kept still loads, and from then on keeps it.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

from tradeloop.brokers.base import ResumableVenue
from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.fix.codec import decode, encode
from tradeloop.brokers.fix.mapping import new_order_single
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.orders import Fill, Order, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.quotes import Latency, QuoteRules, QuoteVenue
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.schema import NS_PER_DAY, Bar, Tick

from .test_exchange_process import HOST, drain, run, simulator, trader, wait_for

T0 = 1_700_006_400_000_000_000
MS = 1_000_000
STEP = 100 * MS                               # one tick every 100 ms
# 50 ms + up to 400 ms of seeded jitter: which tick an order first sees depends on its draw
QUOTES = QuoteRules(latency=Latency(entry_ns=50 * MS, jitter="uniform", jitter_ns=400 * MS, seed=3),
                    queue="risk_averse")


def tick(i: int) -> Tick:
    """Tick ``i``: 10.0 bid for 20 with 3 traded at it (the queue ahead of a 10.0 buy shrinks by 3), an ask
    that changes every tick (a market order's price tells which tick it took)."""
    return Tick("X", T0 + i * STEP, 10.0, 3.0, 10.0, round(10.1 + 0.01 * (i % 7), 2), 20.0, 50.0)


class _BoomOn13:
    """A commission model that fails for a fill of 13: a bug that must cost that order alone."""

    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int) -> float:
        if qty == 13:
            raise RuntimeError("commission model failed")
        return 0.0


def _fills(ex: ExchangeSimulator) -> dict[str, list[tuple[str, str, str]]]:
    """ClOrdID -> its fills (TransactTime, LastQty, LastPx) as the exchange reported them."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for raw in ex.store.messages(1, 10 ** 9).values():
        m = decode(raw)
        if m.msg_type == MsgType.ExecutionReport and m[Tag.ExecType] == "F":
            out.setdefault(m[Tag.ClOrdID], []).append((m[Tag.TransactTime], m[Tag.LastQty], m[Tag.LastPx]))
    return out


def _contained_session(state: Path, fail: bool, monkeypatch) -> ExchangeSimulator:
    """A tick session: A rests in the queue at 10.0, then B and C are market buys, D comes after BOOM.
    ``fail``: B is 13 (its fill's commission raises) and BOOM's entry raises; else B is 12 and no BOOM."""
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state, quotes=QUOTES,
                           rules=FillRules(commission=_BoomOn13()))
    seq = iter(range(1, 100))

    def send(order: Order) -> None:
        ex.on_message(ex.session, decode(encode(MsgType.NewOrderSingle, "TRADER", "EXCH", next(seq),
                                                new_order_single(order))))

    send(Order("A", "X", Side.BUY, 5.0, OrderType.LIMIT, 10.0, created_ts=T0))
    for i in range(1, 6):                     # A arrives (by 450 ms) and joins the queue
        assert ex.on_tick(tick(i))
    send(Order("B", "X", Side.BUY, 13.0 if fail else 12.0, created_ts=T0 + 5 * STEP))
    send(Order("C", "X", Side.BUY, 7.0, created_ts=T0 + 5 * STEP))
    for i in range(6, 11):                    # B fails on the tick it first sees, A's queue moving on it
        assert ex.on_tick(tick(i))
    if fail:
        import tradeloop.brokers.exchange as exchange_module
        real = exchange_module.execution_report

        def failing(order, **kw):
            if kw["clordid"] == "BOOM":
                raise ValueError("report cannot be built")
            return real(order, **kw)
        with monkeypatch.context() as m:
            m.setattr(exchange_module, "execution_report", failing)
            send(Order("BOOM", "X", Side.BUY, 1.0, created_ts=T0 + 10 * STEP))     # drew a latency: undone
    send(Order("D", "X", Side.BUY, 2.0, created_ts=T0 + 10 * STEP))
    for i in range(11, 20):
        assert ex.on_tick(tick(i))
    return ex


def test_a_failure_contained_to_one_order_leaves_every_other_orders_fills_as_without_it(tmp_path, monkeypatch):
    clean = _contained_session(tmp_path / "clean.sqlite", False, monkeypatch)
    failed = _contained_session(tmp_path / "failed.sqlite", True, monkeypatch)
    try:
        want, got = _fills(clean), _fills(failed)
        assert "B" in want and "B" not in got                       # B failed while matching: cancelled, no fill
        assert failed._recs[failed._clordids["B"]].order.status is OrderStatus.CANCELLED
        assert failed._clordids["BOOM"] == ""                        # BOOM was refused at entry
        assert len(want["A"]) >= 2, "A must fill from the queue over several ticks"
        assert {k: want[k] for k in "ACD"} == {k: got[k] for k in "ACD"}
        assert sum(float(q) for _, q, _ in got["A"]) == 5.0
    finally:
        clean.store.close()
        failed.store.close()


def test_both_in_process_venues_hand_out_and_take_back_their_own_order_state():
    """An order put back with its state keeps its arrival, rested flag and queue place and draws no latency."""
    from .test_venue_contract import Recorder
    assert isinstance(SimulatedVenue(FillRules()), ResumableVenue)
    venue = QuoteVenue(quotes=QUOTES, sink=Recorder())
    assert isinstance(venue, ResumableVenue)
    order = Order("A", "X", Side.BUY, 5.0, OrderType.LIMIT, 10.0, created_ts=T0)
    venue.submit(order, T0)
    for i in range(1, 7):
        venue.on_tick("X", *[getattr(tick(i), f) for f in ("ts", "price", "size", "bid", "ask", "bid_size",
                                                            "ask_size")])
    state, sampler = venue.order_state("A"), venue.venue_state()
    assert state is not None and state[2] is True and state[3][0] < 20.0     # rested, the queue ahead shrank
    venue.discard(order)
    venue.restore_order_state("A", None)
    assert venue.order_state("A") is None
    venue.restore_order_state("A", list(state))     # as a state file gives it back
    venue.submit(order, T0)
    assert venue.order_state("A") == state and venue.venue_state() == sampler


# ------------------------------------------------------------------------------------------ restart
async def _send_ticks(bars_port: int, ticks: list[Tick]) -> None:
    reader, writer = await asyncio.open_connection(HOST, bars_port)
    try:
        for t in ticks:
            line = {"symbol": t.symbol, "ts": t.ts, "price": t.price, "size": t.size, "bid": t.bid, "ask": t.ask,
                    "bid_size": t.bid_size, "ask_size": t.ask_size}
            writer.write(json.dumps(line).encode() + b"\n")
            assert await asyncio.wait_for(reader.readline(), 5) == f"ok {t.ts}\n".encode()
    finally:
        writer.close()


def _restart_session(tmp: Path, kill: bool) -> list[tuple[str, int, float, float]]:
    """Two limit buys rest in the queue at 10.0 over ticks 1-6 (``kill``: then SIGKILL, and a restart on the
    state file); a market buy D is sent; ticks 7-24. The fills the trader got, in order."""
    tmp.mkdir()
    rules = write_rules(tmp / "rules.json", FillRules(), QUOTES)
    a = Order("A", "X", Side.BUY, 4.0, OrderType.LIMIT, 10.0, created_ts=T0)
    c = Order("C", "X", Side.BUY, 9.0, OrderType.LIMIT, 10.0, created_ts=T0 + STEP)
    d = Order("D", "X", Side.BUY, 2.0, created_ts=T0 + 6 * STEP)

    async def finish(broker, bars_port: int) -> list[tuple[str, int, float, float]]:
        broker.submit(d)
        await wait_for(lambda: d.status is OrderStatus.ACCEPTED, 10)
        await _send_ticks(bars_port, [tick(i) for i in range(7, 25)])
        await wait_for(lambda: all(o.status is OrderStatus.FILLED for o in (a, c, d)))
        await broker.stop()
        return [(f.order_id, f.ts, f.qty, f.price) for f in drain(broker) if isinstance(f, Fill)]

    async def scenario() -> list[tuple[str, int, float, float]]:
        broker = trader(0, tmp / "trader.sqlite")
        async with simulator(tmp, rules=rules, name="first") as sim:
            fix_port, bars_port = sim.fix_port, sim.bars_port
            broker.port = fix_port
            await broker.start()
            assert await broker.wait_logged_on(5)
            broker.submit(a)
            await wait_for(lambda: a.status is OrderStatus.ACCEPTED)
            await _send_ticks(bars_port, [tick(1)])
            broker.submit(c)
            await wait_for(lambda: c.status is OrderStatus.ACCEPTED)
            await _send_ticks(bars_port, [tick(i) for i in range(2, 7)])
            if not kill:
                return await finish(broker, bars_port)
            sim.kill()
            assert await sim.wait() == -signal.SIGKILL
        await wait_for(lambda: not broker.session.connected)
        async with simulator(tmp, rules=rules, fix_port=fix_port, bars_port=bars_port, name="second") as sim:
            assert await broker.wait_logged_on(10)
            return await finish(broker, bars_port)

    return run(scenario(), 60)


def test_an_exchange_restarted_on_its_state_file_fills_queued_limits_as_an_uninterrupted_run(tmp_path):
    want = _restart_session(tmp_path / "uninterrupted", kill=False)
    got = _restart_session(tmp_path / "restarted", kill=True)
    assert {o for o, *_ in want} == {"A", "C", "D"} and len([f for f in want if f[0] == "A"]) >= 2
    assert got == want


# ------------------------------------------------------------------------------------------ old state files
def _as_old_file(state: Path) -> None:
    """Make ``state`` look like a file from before the venue's state was kept (no column, no table)."""
    with sqlite3.connect(state) as db:
        db.execute("ALTER TABLE exch_order DROP COLUMN venue")
        db.execute("DROP TABLE exch_venue")
    db.close()


def test_a_state_file_without_the_venues_state_loads_and_keeps_it_from_then_on(tmp_path):
    state = tmp_path / "old.sqlite"
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state, quotes=QUOTES)
    ex.on_message(ex.session, decode(encode(MsgType.NewOrderSingle, "TRADER", "EXCH", 1, new_order_single(
        Order("A", "X", Side.BUY, 4.0, OrderType.LIMIT, 10.0, created_ts=T0)))))
    ex.store.close()
    _as_old_file(state)

    again = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state, quotes=QUOTES)
    oid = again._clordids["A"]
    assert [o.id for o in again.venue.open_orders()] == [oid]
    kept = again.venue.order_state(oid)
    assert kept is not None                   # drawn afresh on this load, and written at once
    again.store.close()
    third = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state, quotes=QUOTES)
    assert third.venue.order_state(oid) == kept
    for i in range(1, 12):
        third.on_tick(tick(i))
    assert third._recs[oid].order.status is OrderStatus.FILLED      # queue 20, 3 a tick: filled by tick 9
    third.store.close()
    bars = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=_copy_old(tmp_path))   # and a bar exchange
    assert len(bars.venue.open_orders()) == 1
    bars.store.close()


def _copy_old(tmp: Path) -> Path:
    """Another old-format file with one working limit order, for a bar exchange (no tick rules)."""
    state = tmp / "old-bars.sqlite"
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)
    ex.on_message(ex.session, decode(encode(MsgType.NewOrderSingle, "TRADER", "EXCH", 1, new_order_single(
        Order("A", "X", Side.BUY, 4.0, OrderType.LIMIT, 10.0, created_ts=T0)))))
    ex.store.close()
    _as_old_file(state)
    return state


def test_a_day_order_keeps_its_first_trading_day_across_a_restart_of_a_bar_exchange(tmp_path):
    """The bar venue's own per-order state is a DAY order's first trading day: kept in the state file, the
    order expires on the next day after a restart as it does without one."""
    state = tmp_path / "day.sqlite"
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)
    ex.on_message(ex.session, decode(encode(MsgType.NewOrderSingle, "TRADER", "EXCH", 1, new_order_single(
        Order("A", "X", Side.BUY, 4.0, OrderType.LIMIT, 5.0, tif=TimeInForce.DAY, created_ts=T0)))))
    assert ex.on_bar(Bar("X", T0 + 60 * 10 ** 9, 10, 10, 10, 10, 1000))      # day 1: works, no fill
    ex.store.close()
    again = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=state)
    order = again._recs[again._clordids["A"]].order
    assert order.is_open
    assert again.on_bar(Bar("X", T0 + NS_PER_DAY + 60 * 10 ** 9, 10, 10, 10, 10, 1000))
    assert order.status is OrderStatus.EXPIRED
    again.store.close()
