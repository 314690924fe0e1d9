"""The same risk layer in the live driver: a held order waits, a person answers from another process.

The live driver runs as an asyncio task over the simulated venue; the review queue is the SQLite
state file, and answers come from ``tradeloop review ...`` run as a real subprocess.
"""
from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from tradeloop.brokers.orders import OrderStatus
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.assembly.build import build_risk, build_rules

from .helpers import Scripted, series

ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)


async def cli(*args: str) -> tuple[int, str, str]:
    """``tradeloop ARGS`` in a separate process, as an operator would run it."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tradeloop", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


def live_parts(state: Path, *settings: str):
    cfg = RunConfig()
    cfg.live.state = str(state)
    for item in settings:
        cfg.override(item)
    rules = build_rules(cfg)
    return rules, build_risk(cfg, rules, live=True)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")
def test_a_held_order_waits_in_wall_clock_time_is_approved_from_the_cli_then_fills_and_an_unanswered_one_expires(
        tmp_path):
    s = load_bars(SHARED / "qbot" / "600519_unadjusted.csv")
    s = s.between(int(s.ts[0]), int(s.ts[16]))   # 16 trading days of 600519, ~170 CNY a share
    sym = s.symbol
    state = tmp_path / "live.db"
    rules, risk = live_parts(state, "risk.review.notional=10000", "risk.review.timeout=1.5")   # wall-clock seconds
    strat = Scripted({1: lambda c: c.buy(sym, 100), 8: lambda c: c.buy(sym, 100)})
    driver = LiveDriver(strat, [sym], cash=1_000_000.0, rules=rules, risk=risk)
    engine = driver.engine
    seen: dict[str, object] = {}

    async def source():
        for i in range(len(s)):
            if i == 4:   # three bars after it was held: still waiting, never filled
                first = engine.orders["O00000001"]
                seen["waiting"] = (first.status, list(engine.fills))
                seen["list"] = await cli("review", "list", "--state", str(state))
                seen["approve"] = await cli("review", "approve", "O00000001", "--state", str(state), "--by", "alice",
                                            "--note", "sized right")
            if i == 12:   # the second order (held at bar 8) waits 1.5 s of the wall clock, however many bars pass
                seen["held_at_12"] = engine.orders["O00000002"].status
                await asyncio.sleep(1.6)
            await asyncio.sleep(0)
            yield s.bar(i)

    asyncio.run(driver.run(source()))

    assert seen["waiting"] == (OrderStatus.HELD, [])
    code, out, _ = seen["list"]
    row = "O00000001\t600519_unadjusted\tBUY\t100\t169.44\t16,944.00\t2010-01-05 00:00:00\tpending"
    assert code == 0 and row in out
    code, out, _ = seen["approve"]
    assert code == 0 and out.startswith("approved O00000001")
    first, second = engine.orders["O00000001"], engine.orders["O00000002"]
    assert first.status is OrderStatus.FILLED
    (fill,) = engine.fills
    assert (fill.order_id, fill.ts, fill.price) == ("O00000001", s.ts[4], s.open[4])   # the next bar after the answer
    assert seen["held_at_12"] is OrderStatus.HELD   # four days of the run's clock later: still waiting
    assert second.status is OrderStatus.REJECTED
    assert second.reason == "review: no answer within 1.5 s (wall clock)"
    expiry = next(e for e in risk.events if e.action == "expire")
    assert expiry.ts == s.ts[12]   # expired at the first poll after 1.5 s of the wall clock
    actions = [(e.order_id, e.action) for e in risk.events]
    assert actions == [("O00000001", "hold"), ("O00000001", "approve"), ("O00000002", "hold"),
                       ("O00000002", "expire")]
    assert risk.events[1].reason == "approved by alice: sized right"
    statuses = [(e.order_id, e.status.value) for e in engine.order_events]
    assert statuses[:3] == [("O00000001", "HELD"), ("O00000001", "ACCEPTED"), ("O00000001", "FILLED")]
    # the state file keeps the record; an expired review can no longer be approved
    code, out, err = asyncio.run(cli("review", "approve", "O00000002", "--state", str(state)))
    assert code == 2 and "order O00000002 is no longer pending: it was expired at 20" in err
    rows = dict(sqlite3.connect(state).execute("SELECT order_id, status FROM reviews").fetchall())
    assert rows == {"O00000001": "approved", "O00000002": "expired"}


def test_an_operator_resumes_a_halted_symbol_from_the_cli(tmp_path):
    hour = NS_PER_DAY // 24
    rows = [(10.0, 10.0, 10.0, 10.0, 1e6)] * 4 + [(11.0, 11.0, 11.0, 11.0, 1e6)] * 4
    s = series("X", rows, step=6 * hour)                 # 4 bars a day; day 2 trades +10%
    state = tmp_path / "live.db"
    rules, risk = live_parts(state, "risk.halt.move=0.05")
    strat = Scripted({4: lambda c: c.buy("X", 1), 6: lambda c: c.buy("X", 1)})
    driver = LiveDriver(strat, ["X"], rules=rules, risk=risk)
    answers = []

    async def source():
        for i in range(len(s)):
            if i == 6:
                answers.append(await cli("risk", "resume", "X", "--state", str(state), "--by", "bob"))
            yield s.bar(i)

    asyncio.run(driver.run(source()))
    assert answers[0][0] == 0 and answers[0][1].startswith("sent resume X")
    assert [o.status for o in driver.engine.orders.values()] == [OrderStatus.REJECTED, OrderStatus.FILLED]
    assert [e.action for e in risk.events] == ["halt", "reject", "resume"]
    assert risk.events[2].reason == "X resumed by bob"


def test_live_reviews_need_a_state_file():
    cfg = RunConfig()
    cfg.override("risk.review.notional=1000")
    rules = build_rules(cfg)
    with pytest.raises(ConfigError, match=r"a live run needs live.state \(--state FILE\)"):
        build_risk(cfg, rules, live=True)


@pytest.mark.parametrize("argv, message", [
    (["review", "list"], "no state file: give --state FILE"),
    (["review", "list", "--state", "{tmp}/missing.db"], "missing.db not found"),
    (["review", "approve", "O9", "--state", "{db}"], "no order 'O9' is held for review"),
    (["risk", "reset", "--state", "{tmp}/missing.db"], "missing.db not found"),
])
def test_review_cli_errors_are_clear(tmp_path, capsys, argv, message):
    from tradeloop.engine.cli.main import main
    from tradeloop.risk.store import ControlStore
    ControlStore(tmp_path / "s.db").close()
    argv = [a.format(tmp=tmp_path, db=tmp_path / "s.db") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
