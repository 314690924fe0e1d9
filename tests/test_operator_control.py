"""The operator command path (risk/control.py) on real SQLite state files, without a session around it.

What a person does through ``tradeloop review`` / ``tradeloop risk`` or the console: answers that race
have exactly one winner, every action is audited, mistakes are one line and exit status 2, halts and
the kill switch act on the engine at its next poll, and a state file from before the audit and
publishing tables still opens.
"""
from __future__ import annotations

import sqlite3
import threading

from tradeloop.brokers.orders import Order, OrderStatus, OrderType, Side
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.cli.main import main
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.risk.control import ActionResult, Operator
from tradeloop.risk.store import MAX_EVENTS, ControlStore

from .helpers import Scripted, series
from .test_live_review import live_parts

OLD_SCHEMA = """
CREATE TABLE reviews (order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL,
    price REAL, notional REAL, reason TEXT NOT NULL, held_ts INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    answered_by TEXT, note TEXT, answered_at TEXT, consumed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE commands (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, arg TEXT NOT NULL DEFAULT '',
    issued_by TEXT NOT NULL DEFAULT '', issued_at TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
"""


def held(store: ControlStore, order_id: str, symbol: str = "X") -> None:
    store.add_review(Order(order_id, symbol, Side.BUY, 1000, created_price=50.0), 0, "notional 50,000.00 >= 10,000.00")


def test_two_people_approving_the_same_order_at_once_one_wins_and_the_other_is_told_who_and_when(tmp_path):
    """50 rounds of two threads (each its own connection, released by a barrier): the CLI's code path
    (``tradeloop review approve``) against a console's Operator, answering the same held order."""
    db = tmp_path / "live.sqlite"
    engine_side = ControlStore(db)
    rounds = 50
    for i in range(rounds):
        held(engine_side, f"O{i:03d}")
    console = ControlStore(db, create=False)
    codes: list[int] = []
    results: list[ActionResult] = []
    for i in range(rounds):
        gate = threading.Barrier(2)
        oid = f"O{i:03d}"

        def cli() -> None:
            gate.wait()
            codes.append(main(["review", "approve", oid, "--state", str(db), "--by", "cli-user"]))

        def web() -> None:
            gate.wait()
            act = Operator(console, "web-user").approve if i % 2 else Operator(console, "web-user").reject
            results.append(act(oid, "from the console"))

        threads = [threading.Thread(target=cli), threading.Thread(target=web)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(codes) == len(results) == rounds
    cli_won = sum(c == 0 for c in codes)
    web_won = sum(r.ok for r in results)
    assert cli_won + web_won == rounds                       # exactly one winner per order
    assert set(codes) <= {0, 2}
    rows = engine_side.audit_trail()
    assert len(rows) == 2 * rounds
    for i in range(rounds):
        oid = f"O{i:03d}"
        mine = [r for r in rows if r["target"] == oid]
        winner = [r for r in mine if r["ok"]]
        loser = [r for r in mine if not r["ok"]]
        assert len(winner) == len(loser) == 1, mine
        status = engine_side.db.execute("SELECT status, answered_by FROM reviews WHERE order_id = ?", (oid,)).fetchone()
        assert status["answered_by"] == winner[0]["who"]
        assert loser[0]["message"].startswith(f"order {oid} is no longer pending: it was {status['status']} by "
                                              f"{winner[0]['who']} at 20")
    for r in results:
        if not r.ok:
            assert "no longer pending" in r.message and "by cli-user at" in r.message


def test_a_state_file_from_before_the_audit_and_publishing_tables_still_opens_and_works(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(OLD_SCHEMA)
    con.execute("INSERT INTO reviews (order_id, symbol, side, qty, price, notional, reason, held_ts) "
                "VALUES ('O1', 'X', 'BUY', 100, 10.0, 1000.0, 'big', 5)")
    con.execute("INSERT INTO commands (kind, arg, issued_by, issued_at) VALUES ('resume', 'X', 'bob', '2026-01-01')")
    con.commit()
    con.close()
    store = ControlStore(db, create=False)
    assert store.reviews()[0]["held_at"] is None                     # the new columns are there, empty
    assert store.take_commands() == [("resume", "X", "bob", "")]     # a queued command survives
    assert Operator(store, "alice").approve("O1") == ActionResult(True, "approved O1; the live engine acts on it at "
                                                                       "its next step")
    assert store.snapshot() is None and store.events() == [e for e in store.events() if e["kind"] == "audit"]
    assert [(r["who"], r["action"], r["target"], r["ok"]) for r in store.audit_trail()] == [("alice", "approve", "O1",
                                                                                             True)]
    ControlStore(db, create=False).close()                           # a second open: nothing left to migrate


def test_operator_mistakes_are_one_line_and_exit_status_2(tmp_path, capsys):
    db = tmp_path / "live.sqlite"
    store = ControlStore(db)
    store.publish({"session": {"symbols": ["X", "Y"], "updated_at": "2026-01-01T00:00:00.000Z"},
                   "orders": [{"id": "O7", "symbol": "X"}], "reviews": [{"order_id": "O8"}]})
    cases = [
        (["review", "approve", "O9"], "no order 'O9' is held for review"),
        (["review", "reject", "O9"], "no order 'O9' is held for review"),
        (["risk", "cancel", "O9"], "no working order 'O9' in the session"),
        (["risk", "cancel", "O8"], "order O8 is held for review, not working at the venue: reject it instead"),
        (["risk", "halt", "NOPE"], "unknown symbol 'NOPE': the session trades X, Y"),
        (["risk", "resume", "NOPE"], "unknown symbol 'NOPE'"),
        (["risk", "kill"], "add --yes to confirm"),
        (["risk", "halt", "--state", str(tmp_path / "missing.sqlite")], "missing.sqlite not found"),
    ]
    for argv, message in cases:
        if "--state" not in argv:
            argv = [*argv, "--state", str(db)]
        assert main([*argv, "--by", "eve"]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("tradeloop: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1, err
    assert main(["risk", "cancel", "O7", "--state", str(db), "--by", "eve"]) == 0
    assert capsys.readouterr().out.startswith("sent cancel of O7")
    # refusals are audited too, with who asked
    trail = store.audit_trail()
    assert [(r["action"], r["target"], r["ok"]) for r in trail] == [
        ("approve", "O9", False), ("reject", "O9", False), ("cancel", "O9", False), ("cancel", "O8", False),
        ("halt", "NOPE", False), ("resume", "NOPE", False), ("cancel", "O7", True)]
    assert {r["who"] for r in trail} == {"eve"}
    assert main(["audit", "--state", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t") == ["id", "at", "who", "action", "target", "ok", "phase", "message"]
    assert len(out) == 1 + len(trail) and out[-1].split("\t")[2:7] == ["eve", "cancel", "O7", "yes", "request"]


def test_halts_resumes_cancel_and_kill_act_at_the_engines_next_poll(tmp_path):
    """The live driver over two symbols, its state file answered by an Operator between bars."""
    hour = NS_PER_DAY // 24
    flat = [(10.0, 10.0, 10.0, 10.0, 1e6)] * 12
    x, y = series("X", flat, step=hour), series("Y", flat, step=hour)
    state = tmp_path / "live.sqlite"
    rules, risk = live_parts(state, "risk.drawdown.max=0.5")
    buy_both = lambda c: (c.buy("X", 10), c.buy("Y", 10))   # noqa: E731
    strat = Scripted({0: lambda c: (buy_both(c), c.buy("X", 10, limit=5.0)), 2: buy_both, 4: buy_both, 6: buy_both,
                      8: buy_both, 10: buy_both})
    driver = LiveDriver(strat, ["X", "Y"], rules=rules, risk=risk)
    risk.symbols = ["X", "Y"]
    op = Operator(ControlStore(state, create=False), "dana")
    script = {1: lambda: op.halt("X", "news pending"), 3: lambda: (op.resume("X"), op.halt(None)),
              5: lambda: (op.resume(None), op.cancel("O00000003"), op.reset_drawdown()),
              8: lambda: op.kill("end of test")}

    async def source():
        for i in range(len(x)):
            if i in script:
                done = script[i]()
                assert all(r.ok for r in (done if isinstance(done, tuple) else [done]))
            yield x.bar(i)
            yield y.bar(i)

    import asyncio
    asyncio.run(driver.run(source()))
    orders = driver.engine.orders
    status = {oid: (o.symbol, o.status.value, o.reason) for oid, o in orders.items()}
    by_bar = lambda n: [status[f"O{k:08d}"] for k in n]   # noqa: E731
    assert by_bar([1, 2])[0][1] == "FILLED" and status["O00000003"][1] == "CANCELLED"
    # bar 2: X halted (operator) -> X refused, Y goes out
    assert by_bar([4, 5]) == [("X", "REJECTED", "operator: operator halt of X by dana: news pending"),
                              ("Y", "FILLED", "")]
    # bar 4: the book halted -> both refused
    assert [s[1] for s in by_bar([6, 7])] == ["REJECTED", "REJECTED"]
    assert status["O00000006"][2] == "operator: operator halt of the book by dana"
    # bar 6: resumed -> both go out
    assert [s[1] for s in by_bar([8, 9])] == ["FILLED", "FILLED"]
    # kill before bar 8: both positions flattened with market orders through the venue, then nothing new goes out
    flat_orders = [o for o in orders.values() if o.tag == "risk:flatten"]
    assert sorted((o.symbol, o.side, o.qty, o.status) for o in flat_orders) == [
        ("X", Side.SELL, 20.0, OrderStatus.FILLED), ("Y", Side.SELL, 30.0, OrderStatus.FILLED)]
    assert all(o.type is OrderType.MARKET for o in flat_orders)
    assert driver.engine.portfolio.position("X") == driver.engine.portfolio.position("Y") == 0
    late = [o for o in orders.values() if o.created_ts > x.ts[7] and o.tag != "risk:flatten"]
    assert len(late) == 4 and all(o.status is OrderStatus.REJECTED and "kill switch by dana: end of test" in o.reason
                                  for o in late)
    ops = [(e.check, e.action, e.symbol) for e in risk.events
           if e.check in ("operator", "drawdown") and e.action != "reject"]
    assert ops[:6] == [("operator", "halt", "X"), ("operator", "resume", "X"), ("operator", "halt", ""),
                       ("operator", "resume", ""), ("operator", "cancel", "X"), ("drawdown", "reset", "")]
    assert ops[-1] == ("operator", "halt", "") and ("operator", "flatten", "Y") in ops
    applied = [(r["action"], r["ok"], r["message"]) for r in op.store.audit_trail() if r["phase"] == "applied"]
    assert applied[0] == ("halt", True, "X halted")
    assert applied[-1] == ("kill", True, "killed: 0 order(s) cancelled, 2 position(s) flattened with market orders, "
                                         "the book halted")
    assert ("reset", True, "drawdown stop reset") in applied


def test_the_event_log_keeps_only_the_newest_rows(tmp_path, monkeypatch):
    import tradeloop.risk.store as store_module
    monkeypatch.setattr(store_module, "MAX_EVENTS", 50)
    monkeypatch.setattr(store_module, "_TRIM_EVERY", 10)
    store = ControlStore(tmp_path / "live.sqlite")
    for i in range(30):
        store.append_events([{"kind": "equity", "data": {"i": i * 10 + k}} for k in range(10)])
    rows = store.events(0, 10_000)
    assert 50 <= len(rows) <= 60 and rows[-1]["data"] == {"i": 299}
    assert [r["id"] for r in store.events(rows[-2]["id"])] == [rows[-1]["id"]]
    assert MAX_EVENTS == 100_000


def test_input_a_web_client_could_send_is_refused_with_a_reason_never_an_exception(tmp_path):
    store = ControlStore(tmp_path / "live.sqlite")
    held(store, "O1")
    op = Operator(store, "mallory")
    cases = [
        (op.approve("O1", "x" * 501), "note is too long (501 characters; at most 500)"),
        (op.approve("O1\x00; DROP TABLE reviews"), "is not a valid order id"),
        (op.reject(""), "is not a valid order id"),
        (op.cancel("O" * 65), "order_id is too long"),
        (op.halt("X\nY"), "is not a valid symbol"),
        (op.kill("r" * 10_000), "reason is too long"),
        (op.approve(12345), "order_id must be text"),   # type: ignore[arg-type]
    ]
    for result, message in cases:
        assert result.ok is False and message in result.message, result
    assert store.reviews()[0]["status"] == "pending" and store.take_commands() == []
    assert len(store.audit_trail()) == len(cases) and all(len(r["target"]) <= 64 for r in store.audit_trail())
    assert store.events(0, -1) == [] and len(store.events(0, 5)) == 5   # SQLite's "no limit" (-1) is not let through
    assert Operator(store, "mallory").approve("O1", "fine").ok


def test_the_snapshot_shows_the_predictors_model_health_and_its_switch_to_the_backup(tmp_path):
    """A real registry model behind the strategy's predictor, made slow: the health monitor switches to the
    backup, and the published snapshot says so (engine/live/publish.py)."""
    from tradeloop.engine.live.publish import Publisher
    from tradeloop.models.health import HealthLimits
    from tests.test_models_health import Slow
    from tests.test_models_support import random_bars, trained
    root, _ = trained("tiny")
    rules, risk = live_parts(tmp_path / "live.sqlite")
    s = random_bars(4, 120)
    driver = LiveDriver(Scripted({}), [s.symbol], rules=rules, risk=risk)
    driver.engine.use_predictor("tiny@v0001", registry=root, backup="tiny@v0002",
                                limits=HealthLimits(p99_ms=30.0, min_latency_samples=5))
    monitor = driver.engine.predictor.model
    pub = Publisher(risk.control, driver.engine, driver.equity, mode="live", run_id="t", strategy="Scripted",
                    status=lambda: {"fix": "n/a", "mqtt": "connected", "paused_for_review": False, "finished": False})
    (before,) = pub.models()
    assert (before["name"], before["state"], before["using_backup"]) == ("tiny@v0001", "ok", False)
    monitor.active = Slow(monitor.active, 0.06)
    driver.start()
    for i in range(len(s)):
        driver.feed(s.bar(i))
        if monitor.events:
            break
    driver.flush()
    pub.flush(force=True)
    (after,) = ControlStore(tmp_path / "live.sqlite", create=False).snapshot()["models"]
    assert after["state"] == "backup" and after["using_backup"] is True and after["version"].startswith("tiny@v0002")
    assert after["p99_ms"] is None or after["p99_ms"] < 30.0
    risk_events = [e for e in ControlStore(tmp_path / "live.sqlite").events(0) if e["kind"] == "risk"]
    assert [(e["data"]["gate"], e["data"]["action"]) for e in risk_events] == [("model_health", "switch")]


def test_a_reader_notices_each_change_by_its_counter_and_reads_only_the_new_events(tmp_path):
    engine_side = ControlStore(tmp_path / "live.sqlite")
    reader = ControlStore(tmp_path / "live.sqlite", create=False)
    seen = reader.change_counter()
    assert reader.change_counter() == seen                         # nothing happened: same number, no re-read
    engine_side.write({"session": {"clock_ts": 1}}, [{"kind": "equity", "data": {"clock_ts": 1, "equity": 1.0}}])
    assert reader.change_counter() > seen
    seen = reader.change_counter()
    Operator(reader, "ann").halt(None)                             # the reader's own write counts too
    assert reader.change_counter() > seen
    first = reader.events()
    assert [e["kind"] for e in first] == ["equity", "audit"] and first[1]["data"]["who"] == "ann"
    engine_side.append_events([{"kind": "fill", "data": {"order_id": "O1"}}])
    assert [e["kind"] for e in reader.events(first[-1]["id"])] == ["fill"]
    assert reader.snapshot() == {"session": {"clock_ts": 1}}
