"""The live runner survives its own crash and the market-data broker's restart, losing and doubling nothing.

Real processes throughout: Mosquitto, the exchange simulator, ``tradeloop live`` and a paced
``tradeloop replay``. The runner trades on almost every bar (tests/live_strategies.py: Churn), so
orders are in flight whenever something is killed.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.orders import Fill, Order
from tradeloop.brokers.sim import FillRules
from tests import live_procs
from tests.live_procs import SHARED, wait_until
from tests.mosquitto import mosquitto  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")

ORCL = SHARED / "backtrader" / "orcl-1995-2014.txt"
SYMBOL = "ORCL"
PACE = str(86400 * 40)   # daily bars at ~40 per second


def journal(state: Path) -> tuple[list[Order], list[Fill]]:
    with sqlite3.connect(state) as db:
        orders = [msgspec.msgpack.decode(d, type=Order) for (d,) in db.execute("SELECT data FROM live_order")]
        fills = [msgspec.msgpack.decode(d, type=Fill) for (d,) in db.execute("SELECT data FROM live_fill ORDER BY n")]
    return orders, fills


def exchange_book(state: Path) -> tuple[dict[str, str], float]:
    """The exchange's ClOrdID -> OrderID map and the trader's position in SYMBOL, from its state file."""
    with sqlite3.connect(state) as db:
        clordids = dict(db.execute("SELECT clordid, order_id FROM exch_clordid"))
        row = db.execute("SELECT data FROM exch_symbol WHERE symbol=?", (SYMBOL,)).fetchone()
    return clordids, msgspec.msgpack.decode(row[0])[3] if row else 0.0


def exchange_open(folder: Path) -> set[str]:
    """ClOrdIDs of the orders still working at the exchange."""
    with sqlite3.connect(folder / "exchange.sqlite") as db:
        return {c for c, is_open in db.execute("SELECT clordid, open FROM exch_order") if is_open}


def position(fills: list[Fill]) -> float:
    return sum(f.signed_qty for f in fills)


def exchange(tmp: Path, url: str, *, port: int = 0, name: str = "exchange") -> tuple[live_procs.Proc, int]:
    """The exchange simulator every test here trades against (venue k, daily bars, 0.1% commission)."""
    rules = FillRules(commission=PercentCommission(0.001))
    return live_procs.exchange(tmp, url, venue="k", interval="1d", rules=rules, port=port, name=name)


def paced_replay(tmp: Path, url: str, name: str = "replay") -> live_procs.Proc:
    """ORCL daily bars at ~40 per second, with no end-of-stream mark (the test ends the session)."""
    return live_procs.replay(tmp, ["--data", f"{SYMBOL}={ORCL}", "--mqtt", url, "--venue", "k", "--interval", "1d",
                                   "--speed", PACE, "--no-eos"], name=name)


def runner_args(url: str, port: int, tmp: Path, *extra: str) -> list[str]:
    return ["tests.live_strategies:Churn", "--cash", "10000000", "--commission", "0.001", "--mqtt", url,
            "--fix", f"127.0.0.1:{port}", "--state", str(tmp / "live.sqlite"), "--symbols", SYMBOL,
            "--venue", "k", "--interval", "1d", *extra]


def test_a_runner_killed_with_sigkill_recovers_from_its_journal_and_sends_no_order_twice(mosquitto, tmp_path):
    exch, port = exchange(tmp_path, mosquitto.url)
    state = tmp_path / "live.sqlite"
    try:
        first = live_procs.live(tmp_path, runner_args(mosquitto.url, port, tmp_path))
        rep = paced_replay(tmp_path, mosquitto.url)
        wait_until(lambda: len(journal(state)[1]) >= 20, 60, "20 fills before the crash")

        def frozen_with_an_order_in_flight() -> bool:
            """SIGSTOP the runner; keep it stopped if its journal shows a working order, else let it go on."""
            os.kill(first.proc.pid, signal.SIGSTOP)
            if any(o.is_open for o in journal(state)[0]):
                return True
            os.kill(first.proc.pid, signal.SIGCONT)
            return False
        wait_until(frozen_with_an_order_in_flight, 60, "an order in flight", every=0.003)
        first.kill()                                           # SIGKILL: no goodbye, an order in flight
        _, fills_before = journal(state)
        time.sleep(0.5)
        second = live_procs.live(tmp_path, runner_args(mosquitto.url, port, tmp_path), name="live2")
        recovered = second.ready["recovered"]
        assert recovered["recovered_fills"] >= len(fills_before) and recovered["replayed_bars"] > 0
        assert recovered["open_at_start"] >= 1                 # reconciled with an OrderStatusRequest
        wait_until(lambda: len(journal(state)[1]) >= len(fills_before) + 20, 60, "20 fills after the restart")
        rep.stop()                                             # market data ends; the last reports come in
        wait_until(lambda: position(journal(state)[1]) == exchange_book(tmp_path / "exchange.sqlite")[1], 10,
                   "the runner's position to match the exchange's")
        second.stop()
        assert second.proc.returncode == 0, second.tail()
    finally:
        exch.stop()
    orders, fills = journal(state)
    clordids, exch_position = exchange_book(tmp_path / "exchange.sqlite")
    # trading resumed after the restart, from the recovered state
    assert len(fills) >= len(fills_before) + 20 and fills[:len(fills_before)] == fills_before
    # no order reached the exchange twice: every journaled order is one exchange order, and no NewOrderSingle
    # was refused as a duplicate ClOrdID
    sent = {o.id for o in orders}
    exchange_orders = {c: oid for c, oid in clordids.items() if "." not in c}
    assert sent == set(exchange_orders) and len(set(exchange_orders.values())) == len(sent)
    assert "Duplicate ClOrdID" not in (tmp_path / "exchange.log").read_text()
    # and nothing was booked twice: positions agree with the exchange's and with the fills
    assert position(fills) == exch_position
    assert len({(f.order_id, f.ts, f.qty, f.price) for f in fills}) == len(fills)
    log = (tmp_path / "live2.log").read_text()
    assert "live.recovered" in log and "live.reconciled_all" in log


def test_market_data_broker_restart_halts_stale_symbols_then_trading_resumes(mosquitto, tmp_path):
    exch, port = exchange(tmp_path, mosquitto.url)
    state = tmp_path / "live.sqlite"
    try:
        runner = live_procs.live(tmp_path, runner_args(mosquitto.url, port, tmp_path, "--stale-after", "0.5"))
        rep = paced_replay(tmp_path, mosquitto.url, "replay1")
        wait_until(lambda: len(journal(state)[1]) >= 10, 60, "fills before the broker restart")
        rep.kill()
        mosquitto.kill()                                       # the broker goes away; data stops
        time.sleep(1.5)                                        # > stale_after: the symbol is halted
        mosquitto.start()                                      # same port; the runner's feed reconnects
        before = len(journal(state)[1])
        rep = paced_replay(tmp_path, mosquitto.url, "replay2")
        # the replay starts from the beginning again: old bars are dropped, trading resumes past them
        wait_until(lambda: len(journal(state)[1]) >= before + 10, 90, "fills after the broker restart")
        rep.stop()
        runner.stop()
    finally:
        exch.stop()
    events = [json.loads(line) for line in (tmp_path / "live.log").read_text().splitlines() if line.startswith("{")]
    stale = [(e["action"], e["ts"]) for e in events if e.get("event") == "risk_event" and e["check"] == "stale_data"]
    halted_mid_session = [i for i, (action, ts) in enumerate(stale) if action == "halt" and ts > 0]
    assert halted_mid_session, stale                          # halted while the broker was away...
    assert ("resume", stale[halted_mid_session[0]][1]) in stale[halted_mid_session[0]:]   # ...resumed after
    assert any(e.get("event") == "mqtt.connect_failed" for e in events)           # it did go away


def test_an_exchange_killed_and_restarted_mid_session_leaves_every_order_with_one_outcome(mosquitto, tmp_path):
    exch, port = exchange(tmp_path, mosquitto.url)
    state = tmp_path / "live.sqlite"
    try:
        runner = live_procs.live(tmp_path, runner_args(mosquitto.url, port, tmp_path))
        rep = paced_replay(tmp_path, mosquitto.url)
        wait_until(lambda: len(journal(state)[1]) >= 20, 60, "fills before the exchange dies")
        exch.kill()                                            # SIGKILL the counterparty mid-session
        time.sleep(0.5)                                        # bars go on; orders queue in the FIX store
        exch, _ = exchange(tmp_path, mosquitto.url, port=port, name="exchange2")
        before = len(journal(state)[1])
        wait_until(lambda: len(journal(state)[1]) >= before + 20, 60, "fills after the exchange restarted")
        rep.stop()
        wait_until(lambda: position(journal(state)[1]) == exchange_book(tmp_path / "exchange.sqlite")[1], 10,
                   "the runner's position to match the exchange's")
        wait_until(lambda: {o.id for o in journal(state)[0] if o.is_open} == exchange_open(tmp_path), 10,
                   "the runner and the exchange to agree on which orders still work")
        runner.stop()
    finally:
        exch.stop()
    orders, fills = journal(state)
    # exactly one outcome each: final orders are final at both ends, working ones work at both
    assert {o.id for o in orders if o.is_open} == exchange_open(tmp_path) and len(exchange_open(tmp_path)) <= 1
    by_order: dict[str, float] = {}
    for f in fills:
        by_order[f.order_id] = by_order.get(f.order_id, 0.0) + f.qty
    assert all(by_order.get(o.id, 0.0) == o.filled_qty for o in orders)   # ...and no fill twice
    clordids, exch_position = exchange_book(tmp_path / "exchange.sqlite")
    assert position(fills) == exch_position
    assert {o.id for o in orders} == {c for c in clordids if "." not in c}
    assert "fix.reconnecting" in runner.tail(1_000_000) or "fix.connect_failed" in runner.tail(1_000_000)
