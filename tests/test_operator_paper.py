"""Operators acting on a real paper session (Mosquitto, the exchange simulator process, the live runner, a
lockstep replay): ``tradeloop paper`` runs as its own process, and a person answers through its state file,
from the CLI (another process) or an Operator here, while the session runs.

A held order waits in wall-clock time and the replay pauses meanwhile; the snapshot and the event log the
console reads are checked after each session.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import subprocess
import sys
import time

import pytest

from tradeloop.engine.live.paper import free_port, mosquitto_binary
from tradeloop.risk.control import Operator
from tradeloop.risk.store import ControlStore

from tests.live_procs import ENV, ROOT, SHARED, Proc, wait_until

DATA = SHARED / "qbot" / "600519_unadjusted.csv"
SYM = "600519_unadjusted"
SNAPSHOT_KEYS = {"session", "account", "positions", "orders", "reviews", "models"}
SESSION_KEYS = {"mode", "run_id", "strategy", "started_at", "updated_at", "clock_ts", "fix", "mqtt", "stale", "halted",
                "book_halted", "drawdown_stop", "paused_for_review", "finished", "symbols"}


@pytest.fixture(autouse=True)
def _needs_mosquitto_and_data() -> None:
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if not DATA.exists():
        pytest.skip(f"{DATA} is not there")


def start_paper(folder, *settings: str, args: tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> tuple[Proc, ControlStore]:
    """``tradeloop paper`` of BigOrders on 600519 in January 2010 (20 bars); its state file once it published."""
    out = folder / "session"
    argv = ["-m", "tradeloop", "paper", "tests.operator_strategies:BigOrders", "--data", str(DATA),
            "--set", "run.start=2010-01-01", "--set", "run.end=2010-01-31", "--cash", "10000000",
            "--set", "risk.review.notional=100000", "--out", str(out), "--log-json", "--quiet", *args]
    for s in settings:
        argv += ["--set", s]
    p = Proc("paper", argv, folder, env)
    state = out / "live.sqlite"
    wait_until(lambda: state.exists() or p.proc.poll() is not None, 60, "the session's state file")
    store = ControlStore(state, create=False)
    wait_until(lambda: store.snapshot() is not None or p.proc.poll() is not None, 60, "the first snapshot")
    assert p.proc.poll() is None, p.tail()
    return p, store


def pending(store: ControlStore, order_id: str) -> bool:
    snap = store.snapshot()
    return any(r["order_id"] == order_id for r in snap["reviews"])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradeloop", *args], cwd=ROOT, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def iso(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def order_events(store: ControlStore) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for e in store.events(0, 100_000):
        if e["kind"] == "order":
            out.setdefault(e["data"]["order_id"], []).append((e["data"]["status"], e["data"]["reason"]))
    return out


def test_a_held_order_waits_for_a_person_in_wall_clock_time_while_the_replay_pauses(tmp_path):
    """Three large orders: the first approved from the CLI (it goes out and fills), the second rejected by a
    console's Operator, the third left to expire after risk.review.timeout seconds of the wall clock."""
    p, store = start_paper(tmp_path, "risk.review.timeout=6")
    try:
        wait_until(lambda: pending(store, "O00000005"), 30, "the first large order held")
        snap = store.snapshot()
        (review,) = snap["reviews"]
        assert (review["symbol"], review["side"], review["qty"]) == (SYM, "BUY", 1000.0)
        assert review["notional"] == pytest.approx(1000 * review["price"]) and review["notional"] >= 100_000
        assert iso(review["deadline_at"]) - iso(review["held_at"]) == pytest.approx(6.0, abs=0.002)
        assert 0 < review["seconds_left"] <= 6.0
        assert snap["session"]["paused_for_review"] is True
        clock = snap["session"]["clock_ts"]
        time.sleep(0.5)   # the replay is paused: the run's clock does not move, the countdown does
        later = store.snapshot()
        assert later["session"]["clock_ts"] == clock and later["reviews"][0]["seconds_left"] < review["seconds_left"]

        done = cli("review", "approve", "O00000005", "--state", str(store.path), "--by", "alice", "--note", "ok")
        assert done.returncode == 0 and done.stdout.startswith("approved O00000005"), done.stderr
        wait_until(lambda: pending(store, "O00000006"), 30, "the second large order held")
        assert Operator(store, "bob").reject("O00000006", "too big today").ok
        wait_until(lambda: pending(store, "O00000007"), 30, "the third large order held")
        held_at = iso(store.snapshot()["reviews"][0]["held_at"])
        wait_until(lambda: not pending(store, "O00000007"), 30, "the third order to expire")
        assert time.time() - held_at >= 5.9   # it waited its 6 s of the wall clock
        assert p.wait(60) == 0, p.tail()
    finally:
        p.stop()

    orders = order_events(store)
    assert orders["O00000005"][-1][0] == "FILLED"
    assert orders["O00000006"][-1] == ("REJECTED", "review: rejected by bob: too big today")
    assert orders["O00000007"][-1] == ("REJECTED", "review: no answer within 6 s (wall clock)")
    events = store.events(0, 100_000)
    (fill,) = [e["data"] for e in events if e["kind"] == "fill" and e["data"]["order_id"] == "O00000005"]
    assert set(fill) == {"order_id", "symbol", "side", "qty", "price", "commission", "clock_ts"} and fill["qty"] == 1000
    assert {e["kind"] for e in events} == {"fill", "order", "risk", "equity", "audit", "session"}
    risk = [(e["data"]["gate"], e["data"]["action"], e["data"]["order_id"]) for e in events if e["kind"] == "risk"]
    assert risk == [("review", a, f"O0000000{n}") for n, a in ((5, "hold"), (5, "approve"), (6, "hold"),
                                                                (6, "reject"), (7, "hold"), (7, "expire"))]
    equity = [e["data"] for e in events if e["kind"] == "equity"]
    assert len(equity) == 20 and all(set(q) == {"clock_ts", "equity", "cash"} for q in equity)
    pauses = [e["data"]["paused_for_review"] for e in events
              if e["kind"] == "session" and "paused_for_review" in e["data"]]
    assert pauses == [True, False] * 3
    trail = [(r["who"], r["action"], r["target"], r["ok"]) for r in store.audit_trail()]
    assert trail == [("alice", "approve", "O00000005", True), ("bob", "reject", "O00000006", True)]
    log = p.log.read_text()
    assert log.count('"live.paused_for_review"') == 3 and log.count('"live.resumed_after_review"') == 3
    snap = store.snapshot()
    assert set(snap) == SNAPSHOT_KEYS and set(snap["session"]) == SESSION_KEYS
    s = snap["session"]
    assert (s["mode"], s["run_id"], s["finished"], s["fix"], s["paused_for_review"]) == ("paper", "session", True,
                                                                                         "down", False)
    (pos,) = snap["positions"]
    assert (pos["symbol"], pos["qty"]) == (SYM, 1300.0)
    assert snap["account"]["equity"] == pytest.approx(snap["account"]["cash"] + 1300 * pos["last"])
    assert [o["id"] for o in snap["orders"]] == ["O00000003"] and snap["reviews"] == []


def test_halt_resume_cancel_reset_and_the_kill_switch_in_a_paused_paper_session(tmp_path):
    """While the first large order waits (the replay paused), a person halts and resumes the symbol and the
    book, cancels the resting order and resets the drawdown stop; then the kill switch (CLI, --yes) cancels
    the held order, flattens the position at market and halts the book: nothing new goes out after it."""
    p, store = start_paper(tmp_path, "risk.review.timeout=60", "risk.drawdown.max=0.9")
    op = Operator(store, "carol")
    try:
        wait_until(lambda: pending(store, "O00000005"), 30, "the large order held")

        def session() -> dict:
            return store.snapshot()["session"]

        assert op.halt(SYM, "news").ok
        wait_until(lambda: session()["halted"] == [SYM], 10, "the symbol halted")
        assert op.resume(SYM).ok
        wait_until(lambda: session()["halted"] == [], 10, "the symbol resumed")
        assert op.halt(None).ok
        wait_until(lambda: session()["book_halted"], 10, "the book halted")
        assert op.resume(None).ok
        wait_until(lambda: not session()["book_halted"], 10, "the book resumed")
        assert op.cancel("O00000003").ok
        wait_until(lambda: store.snapshot()["orders"] == [], 10, "the resting order cancelled")
        assert op.reset_drawdown().ok
        bad = cli("risk", "halt", "NOPE", "--state", str(store.path))
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown symbol 'NOPE'" in bad.stderr
        assert cli("risk", "kill", "--state", str(store.path)).returncode == 2   # no --yes: nothing sent
        kill = cli("risk", "kill", "--yes", "--reason", "drill", "--state", str(store.path), "--by", "dave")
        assert kill.returncode == 0 and kill.stdout.startswith("sent kill"), kill.stderr
        assert p.wait(60) == 0, p.tail()
    finally:
        p.stop()

    snap = store.snapshot()
    assert snap["positions"][0]["qty"] == 0 and snap["orders"] == [] and snap["session"]["book_halted"] is True
    orders = order_events(store)
    assert orders["O00000003"][-1][0] == "CANCELLED"
    assert orders["O00000005"][-1] == ("CANCELLED", "operator: kill switch by dave: drill")
    flatten = [oid for oid, evs in orders.items() if evs[-1][0] == "FILLED" and oid > "O00000005"]
    assert len(flatten) == 1
    later = [evs[-1] for oid, evs in orders.items() if oid > flatten[0]]
    assert len(later) == 2 and all(e == ("REJECTED", "operator: kill switch by dave: drill") for e in later)
    applied = [(r["who"], r["action"], r["ok"], r["message"]) for r in store.audit_trail() if r["phase"] == "applied"]
    assert applied == [("carol", "halt", True, f"{SYM} halted"), ("carol", "resume", True, f"resumed {SYM}"),
                       ("carol", "halt", True, "the book halted"), ("carol", "resume", True, "resumed the book"),
                       ("carol", "cancel", True, "cancel of O00000003 sent to the venue"),
                       ("carol", "reset", True, "drawdown stop reset"),
                       ("dave", "kill", True, "killed: 1 order(s) cancelled, 1 position(s) flattened with market "
                                              "orders, the book halted")]
    requests = [(r["who"], r["action"], r["ok"]) for r in store.audit_trail() if r["phase"] == "request"]
    assert requests[-2:] == [(getpass.getuser(), "halt", False), ("dave", "kill", True)]   # --by defaults to the login
    manifest = json.loads((tmp_path / "session" / "manifest.json").read_text())
    assert manifest["config"]["live"]["console"] is None


def test_paper_with_console_serves_it_stays_open_after_the_replay_and_stops_both_on_sigterm(tmp_path):
    """``--console HOST:PORT`` starts ``python -m tradeloop.engine.console`` beside the session (its token from
    the environment), logs its URL, keeps the session open once the replay is over, and ends both on SIGTERM;
    the manifest records the bind address only."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    p, store = start_paper(tmp_path, "risk.review.notional=none", args=("--console", bind, "--pace", "0.02"),
                           env={"TRADELOOP_CONSOLE_TOKEN": "trader-token-for-the-test-0123456789"})
    try:
        wait_until(lambda: store.snapshot()["session"]["finished"], 30, "the replay to finish")
        assert p.proc.poll() is None   # still open for operators
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status < 500
        conn.close()
        assert Operator(store, "erin").halt(None, "after hours").ok   # operators still act on a finished session
        wait_until(lambda: store.snapshot()["session"]["book_halted"], 10, "the halt applied after the replay")
        p.proc.terminate()
        assert p.wait(30) == 0, p.tail()
    finally:
        p.stop()
    log = [json.loads(x) for x in p.log.read_text().splitlines() if x.startswith("{")]
    (started,) = [e for e in log if e.get("event") == "live.console"]
    assert started["url"] == f"http://{bind}"
    assert any(e.get("event") == "live.finished_still_serving" for e in log)
    import socket
    with socket.socket() as s:   # the console is gone with the session
        assert s.connect_ex(("127.0.0.1", port)) != 0
    manifest = json.loads((tmp_path / "session" / "manifest.json").read_text())
    assert manifest["config"]["live"]["console"] == bind and "TOKEN" not in json.dumps(manifest).upper()


def test_sigterm_while_paused_for_a_review_ends_the_session_promptly_and_leaves_no_processes(tmp_path):
    """A session paused for a person (its replay waiting for an ack that will not come) still stops at once on
    SIGTERM: the replay is cancelled, the console, exchange and broker processes end with it."""
    import psutil
    port = free_port()
    p, store = start_paper(tmp_path, "risk.review.timeout=600", args=("--console", f"127.0.0.1:{port}"),
                           env={"TRADELOOP_CONSOLE_TOKEN": "trader-token-for-the-test-0123456789"})
    try:
        wait_until(lambda: store.snapshot()["session"]["paused_for_review"], 60, "a pause for a review")
        children = psutil.Process(p.proc.pid).children(recursive=True)
        assert children   # mosquitto, the exchange simulator, the console
        t0 = time.monotonic()
        p.proc.terminate()
        assert p.wait(30) == 0, p.tail()
        assert time.monotonic() - t0 < 20
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        p.stop()


def test_a_console_that_cannot_start_stops_the_session_with_one_line(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        done = cli("paper", "tests.operator_strategies:BigOrders", "--data", str(DATA), "--set", "run.end=2010-01-10",
                   "--set", "run.start=2010-01-01",
                   "--console", bind, "--out", str(tmp_path / "s"), "--quiet",
                   env={"TRADELOOP_CONSOLE_TOKEN": "trader-token-for-the-test-0123456789"})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tradeloop: error: live.console {bind}: the console exited with status 2 before "
                           "listening: ") and last.endswith("live.sqlite.console.log)")
    assert "Traceback" not in done.stderr and done.stderr.count("tradeloop: error") == 1
    bad = cli("paper", "tests.operator_strategies:BigOrders", "--data", str(DATA), "--console", "localhost",
              "--out", str(tmp_path / "t"), "--quiet")
    assert bad.returncode == 2 and bad.stderr.strip() == ("tradeloop: error: live.console: expected HOST:PORT "
                                                          "(e.g. 127.0.0.1:8080), got 'localhost'")
