"""The operator console over plain HTTP: who may log in, what each role may do, and what a hostile client gets.

A real console process (``python -m tradeloop.engine.console``) serves a real SQLite state file; the test
stands in for the engine by publishing a snapshot and holding orders for review in that file
(risk/store.py), and acts as a browser would (cookies, Origin, CSRF token) or as an attacker would not.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tradeloop.brokers.orders import Order, Side
from tradeloop.risk.store import ControlStore, wall_iso

ROOT = Path(__file__).resolve().parents[1]
TRADER = "trader-token-0123456789"
VIEWER = "viewer-token-0123456789"
TOKENS = {"TRADELOOP_CONSOLE_TOKEN": TRADER, "TRADELOOP_CONSOLE_VIEWER_TOKEN": VIEWER}
HEAD_S = 1.0   # the shared console's --header-timeout-s: a request line and headers must arrive within it


# ------------------------------------------------------------------------------------ helpers
def held(store: ControlStore, order_id: str, symbol: str = "AAA", qty: float = 1000.0, price: float = 50.0,
         timeout_s: float = 300.0) -> None:
    """Hold an order for review, as the engine's review gate does."""
    order = Order(order_id, symbol, Side.BUY, qty, created_price=price)
    now = time.time()
    store.add_review(order, 1_600_000_000_000_000_000, "notional at or above the review threshold",
                     wall_iso(now), wall_iso(now + timeout_s))


def snapshot(store: ControlStore, **session: object) -> dict:
    """Publish a snapshot in the contract's shape (what a session of two symbols would show)."""
    reviews = [{"order_id": r["order_id"], "symbol": r["symbol"], "side": r["side"], "qty": r["qty"],
                "price": r["price"], "notional": r["notional"], "reason": r["reason"], "held_at": r["held_at"],
                "deadline_at": r["deadline_at"], "seconds_left": 300.0} for r in store.reviews()]
    snap = {"session": {"mode": "paper", "run_id": "t1", "strategy": "test", "started_at": wall_iso(),
                        "updated_at": wall_iso(), "clock_ts": 1_600_000_000_000_000_000, "fix": "logged_on",
                        "mqtt": "connected", "stale": [], "halted": [], "book_halted": False, "drawdown_stop": False,
                        "paused_for_review": bool(reviews), "finished": False, "symbols": ["AAA", "BBB"], **session},
            "account": {"cash": 1e6, "equity": 1e6, "realized_pnl": 0.0, "unrealized_pnl": 0.0},
            "positions": [{"symbol": "AAA", "qty": 100.0, "avg_price": 50.0, "last": 51.0, "unrealized_pnl": 100.0,
                           "realized_pnl": 0.0}],
            "orders": [{"id": "W1", "symbol": "BBB", "side": "BUY", "type": "LIMIT", "qty": 10.0, "filled": 0.0,
                        "limit_price": 9.5, "status": "NEW"}],
            "reviews": reviews, "models": []}
    store.publish(snap)
    return snap


class Console:
    """``python -m tradeloop.engine.console`` on a free loopback port, started as an operator would."""

    def __init__(self, tmp: Path, state: Path, *args: str, env: dict[str, str] | None = None,
                 name: str = "console") -> None:
        self.log = tmp / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOOP_CONSOLE_")}
        full_env = {**base, "PYTHONPATH": str(ROOT), **(TOKENS if env is None else env)}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tradeloop.engine.console", "--state", str(state),
                                          "--bind", "127.0.0.1:0", *args], cwd=ROOT, env=full_env,
                                         stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = self.proc.stdout.readline().decode() if sel.select(30) else ""
        m = re.fullmatch(r"console listening on (https?)://127\.0\.0\.1:(\d+)\n", line)
        if m is None:
            self.stop()
            raise AssertionError(f"console did not start: {line!r}; log:\n{self.log.read_text()[-3000:]}")
        self.scheme, self.port = m.group(1), int(m.group(2))
        self.origin = f"{self.scheme}://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers with lower-case names, body)."""
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                                                            context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            hdrs: dict[str, str] = {}
            for k, v in r.getheaders():
                hdrs[k.lower()] = f"{hdrs[k.lower()]}\n{v}" if k.lower() in hdrs else v
            return r.status, hdrs, data
        finally:
            conn.close()

    def login(self, secret: str, user: str = "") -> "Client":
        """Log in through the form, as a browser on the console's page does; the client holds cookie and CSRF token."""
        from urllib.parse import urlencode
        status, hdrs, body = self.request("POST", "/login", urlencode({"user": user, "secret": secret}),
                                          {"Origin": self.origin, "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, (status, body[:300])
        cookie = re.match(r"tl_console=([^;]+)", hdrs["set-cookie"]).group(1)
        client = Client(self, cookie, hdrs["set-cookie"])
        status, _, page = client.get("/")
        assert status == 200
        client.csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()
        client.page = page.decode()
        return client

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the console did not stop within 15 s of SIGTERM") from None
        return self.proc.returncode


class Client:
    """A logged-in browser session: its cookie and its page's CSRF token."""

    def __init__(self, console: Console, cookie: str, set_cookie: str) -> None:
        self.console, self.cookie, self.set_cookie = console, cookie, set_cookie
        self.csrf = ""
        self.page = ""

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return self.console.request("GET", path, headers={"Cookie": f"tl_console={self.cookie}"})

    def act(self, body: dict | bytes | str, *, csrf: str | None = None, origin: str | None = "",
            referer: str | None = None) -> tuple[int, dict]:
        """POST /api/action as the page's script does (Origin, CSRF header, JSON); override any part to forge it."""
        headers = {"Cookie": f"tl_console={self.cookie}", "Content-Type": "application/json"}
        if origin is not None:
            headers["Origin"] = origin or self.console.origin
        if referer is not None:
            headers["Referer"] = referer
        token = self.csrf if csrf is None else csrf
        if token:
            headers["X-CSRF-Token"] = token
        data = json.dumps(body) if isinstance(body, dict) else body
        status, _, out = self.console.request("POST", "/api/action", data, headers)
        try:
            return status, json.loads(out)
        except ValueError:
            return status, {"raw": out.decode(errors="replace")}


def dribble_until_closed(port: int, head: bytes, per_byte_s: float = 1.0, give_up_s: float = 8.0) -> tuple[float, int]:
    """Send ``head`` one byte every ``per_byte_s`` until the server closes the connection:
    (seconds from connect to the close, bytes sent). AssertionError if it is still open after ``give_up_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        for sent, byte in enumerate(head, start=1):
            try:
                s.sendall(bytes([byte]))
                s.settimeout(per_byte_s)
                if s.recv(1) == b"":                   # the server closed it: no answer, just the end
                    return time.monotonic() - t0, sent
            except TimeoutError:
                if time.monotonic() - t0 > give_up_s:
                    break
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - t0, sent
    raise AssertionError(f"a request head dribbled for {time.monotonic() - t0:.1f} s is still being waited for")


def wait_closed(socks: list[socket.socket], within_s: float) -> list[socket.socket]:
    """The sockets of ``socks`` that the server has not closed within ``within_s`` seconds (all closed: [])."""
    deadline = time.monotonic() + within_s
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        s = open_[0]
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(1) == b"":
                open_.pop(0)
        except (ConnectionResetError, BrokenPipeError):
            open_.pop(0)
        except TimeoutError:
            break
    return open_


def commands(state: Path) -> list[tuple]:
    """The operator commands queued in the state file: (kind, arg, issued_by)."""
    store = ControlStore(state, create=False)
    try:
        return [tuple(r) for r in store.db.execute("SELECT kind, arg, issued_by FROM commands ORDER BY id")]
    finally:
        store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One console over a state file with a published snapshot and three held orders."""
    tmp = tmp_path_factory.mktemp("console")
    state = tmp / "live.sqlite"
    store = ControlStore(state)
    for oid in ("R1", "R2", "R3"):
        held(store, oid)
    snapshot(store)
    console = Console(tmp, state, "--header-timeout-s", str(HEAD_S))
    try:
        yield console, state, store
    finally:
        assert console.stop() == 0
        store.close()


# ------------------------------------------------------------------------------------ login and roles
def test_a_token_login_sets_a_strict_httponly_cookie_and_every_page_carries_the_security_headers(served):
    console, _, _ = served
    status, hdrs, _ = console.request("GET", "/")
    assert status == 303 and hdrs["location"] == "/login"     # nothing without a login
    trader = console.login(TRADER)
    cookie = trader.set_cookie.lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie              # plain http on loopback: a Secure cookie would never come back
    status, hdrs, page = trader.get("/")
    assert status == 200 and b"trader (trader)" in page
    csp = hdrs["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert hdrs["x-frame-options"] == "DENY" and hdrs["cache-control"] == "no-store"
    assert hdrs["x-content-type-options"] == "nosniff"
    assert b"<script>" not in page and b" style=" not in page   # nothing inline for the CSP to allow
    for path in ("/api/state", "/events", "/nowhere"):          # data, the stream and errors: never cached
        status, hdrs, _ = console.request("GET", path)
        assert status in (401, 404) and hdrs["cache-control"] == "no-store" and hdrs["x-frame-options"] == "DENY"
    status, hdrs, body = trader.get("/api/state")
    state = json.loads(body)
    assert (state["user"], state["role"]) == ("trader", "trader")
    assert [r["order_id"] for r in state["snapshot"]["reviews"]] == ["R1", "R2", "R3"]


def test_logging_out_needs_the_pages_csrf_token_and_ends_the_session(served):
    console, _, _ = served
    trader = console.login(TRADER)
    cookie = {"Cookie": f"tl_console={trader.cookie}", "Origin": console.origin}
    assert console.request("POST", "/logout", "csrf=wrong", cookie)[0] == 403     # a forged logout does nothing
    assert trader.get("/api/state")[0] == 200
    status, hdrs, _ = console.request("POST", "/logout", f"csrf={trader.csrf}", cookie)
    assert status == 303 and hdrs["location"] == "/login" and "max-age=0" in hdrs["set-cookie"].lower()
    assert trader.get("/api/state")[0] == 401                                     # the old cookie is worth nothing


def test_a_viewer_sees_only_disabled_controls_and_a_forged_action_is_refused_and_changes_nothing(served):
    console, state, store = served
    viewer = console.login(VIEWER)
    assert 'data-role="viewer"' in viewer.page
    buttons = re.findall(r"<button id=\"[^\"]+\"[^>]*>", viewer.page)
    assert len(buttons) >= 7 and all("disabled" in b for b in buttons), buttons
    before = (commands(state), store.reviews())
    for body in ({"action": "approve", "order_id": "R1"}, {"action": "halt", "symbol": ""},
                 {"action": "kill", "confirm": "KILL"}, {"action": "reset_drawdown"}):
        status, out = viewer.act(body)   # a well-formed request with the viewer's own valid CSRF token
        assert status == 403 and out == {"ok": False, "message": "refused: viewer is a viewer; only a trader may act"}
    assert (commands(state), store.reviews()) == before


def test_wrong_secrets_are_refused_and_the_log_names_the_user_but_never_the_secret(served):
    console, _, _ = served
    from urllib.parse import urlencode
    attempt = "not-the-token-but-long-enough"
    status, _, body = console.request("POST", "/login", urlencode({"user": "mallory", "secret": attempt}),
                                      {"Origin": console.origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and b"wrong user or password/token" in body and b"set-cookie" not in body
    status, _, _ = console.request("POST", "/login", urlencode({"user": "viewer", "secret": TRADER}),
                                   {"Origin": console.origin})   # the trader token is not the viewer's
    assert status == 401
    time.sleep(0.2)
    log = console.log.read_text()
    assert "console.login_failed" in log and "mallory" in log
    assert attempt not in log and TRADER not in log


# ------------------------------------------------------------------------------------ CSRF and origin
def test_actions_need_the_csrf_token_and_the_consoles_own_origin(served):
    console, state, _ = served
    trader = console.login(TRADER)
    body = {"action": "halt", "symbol": "AAA", "note": "csrf test"}
    before = commands(state)
    assert trader.act(body, csrf="") == (403, {"ok": False, "message": "refused: missing or wrong CSRF token "
                                                                          "(reload the page)"})
    other = console.login(TRADER)                                     # another session's token is not this one's
    assert trader.act(body, csrf=other.csrf)[0] == 403
    assert trader.act(body, origin="http://evil.example")[0] == 403
    assert trader.act(body, origin="null")[0] == 403
    assert trader.act(body, origin=f"https://127.0.0.1:{console.port}")[0] == 403   # another scheme is another origin
    assert trader.act(body, origin=None)[0] == 403                                   # neither Origin nor Referer
    assert trader.act(body, origin=None, referer="http://evil.example/x")[0] == 403
    assert commands(state) == before
    status, out = trader.act(body, origin=None, referer=f"{console.origin}/")        # a same-origin Referer will do
    assert status == 200 and out["ok"], out
    assert commands(state)[-1] == ("halt", "AAA", "trader")
    # the login form too: a cross-origin login is refused
    status, _, _ = console.request("POST", "/login", f"secret={TRADER}", {"Origin": "http://evil.example"})
    assert status == 403


def test_a_foreign_host_header_is_refused_on_loopback(served):
    console, _, _ = served
    status, hdrs, _ = console.request("GET", "/login", headers={"Host": "attacker.example:80"})
    assert status == 421 and hdrs["x-frame-options"] == "DENY"
    assert console.request("GET", "/login", headers={"Host": f"localhost:{console.port}"})[0] == 200


# ------------------------------------------------------------------------------------ hostile input
def test_hostile_bodies_are_answered_with_a_reason_and_the_console_keeps_serving(served):
    console, state, _ = served
    stalled = socket.create_connection(("127.0.0.1", console.port))   # half a request, then nothing
    stalled.sendall(b"POST /api/action HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n{")
    t0 = time.monotonic()
    trader = console.login(TRADER)
    before = commands(state)
    status, _ = trader.act(b"x" * (2 << 20))                          # 2 MiB: refused before it is read
    assert status == 413
    assert trader.act(b"{not json")[0] == 400
    assert trader.act(b"\xff\xfe\x00garbage")[0] == 400
    status, out = trader.act({"action": "format_disk"})
    assert status == 400 and "action" in out["message"]
    status, out = trader.act({"action": "halt", "symbol": "AAA", "extra": 1})
    assert status == 400 and "extra" in out["message"]
    status, out = trader.act({"action": "approve", "order_id": "R1", "note": "n" * 5000})
    assert status == 400 and "note" in out["message"]
    status, out = trader.act({"action": "approve"})
    assert status == 400 and "order_id" in out["message"]
    status, out = trader.act({"action": "kill"})                        # the kill switch needs its second step
    assert status == 400 and "KILL" in out["message"]
    assert trader.act(b"[1,2,3]")[0] == 400
    flood = "&".join(f"f{i}=x" for i in range(50))                    # a login form of 50 fields
    assert console.request("POST", "/login", flood, {"Origin": console.origin})[0] == 401
    assert commands(state) == before                                     # nothing of the above reached the engine
    status, out = trader.act({"action": "approve", "order_id": "NOPE"})   # well-formed, but no such order
    assert status == 409 and out == {"ok": False, "message": f"no order 'NOPE' is held for review in {state}"}
    status, out = trader.act({"action": "halt", "symbol": "ZZZ"})
    assert status == 409 and "unknown symbol 'ZZZ'" in out["message"]
    status, out = trader.act({"action": "cancel", "order_id": "W404"})
    assert status == 409 and "no working order 'W404'" in out["message"]
    # a raw socket sending garbage, and one that sends half a request and stalls, do not stop others
    with socket.create_connection(("127.0.0.1", console.port)) as s1:
        s1.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert trader.get("/api/state")[0] == 200
        huge_header = "a" * (64 << 10)
        status = console.request("GET", "/login", headers={"X-Big": huge_header})[0]
        assert status in (400, 431)
    assert trader.get("/api/state")[0] == 200
    stalled.settimeout(10)
    answer = stalled.recv(1000)                                # the stalled body is given up on, not waited for forever
    assert answer.startswith(b"HTTP/1.1 408") and 4 < time.monotonic() - t0 < 9
    stalled.close()
    assert console.proc.poll() is None


def test_a_request_head_dribbled_a_byte_a_second_is_cut_off_at_the_header_deadline_while_others_are_served(served):
    console, _, _ = served
    answers: list[int] = []
    done = threading.Event()

    def normal_client() -> None:                        # served, every 0.2 s, while the dribble goes on
        while not done.is_set():
            answers.append(console.request("GET", "/login")[0])
            done.wait(0.2)

    normal = threading.Thread(target=normal_client)
    normal.start()
    try:
        seconds, sent = dribble_until_closed(console.port, b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    finally:
        done.set()
        normal.join()
    assert HEAD_S - 0.1 < seconds < HEAD_S + 1.5 and sent <= 3, (seconds, sent)
    assert len(answers) >= 3 and set(answers) == {200}, answers
    assert console.request("GET", "/login")[0] == 200   # and after
    assert console.proc.poll() is None


def test_fifty_slow_header_clients_are_all_cut_off_and_never_keep_a_normal_client_out(served):
    console, _, _ = served
    head = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe: slowloris-marker-4711"   # never finished
    slow = [socket.create_connection(("127.0.0.1", console.port), timeout=5) for _ in range(50)]
    try:
        t0 = time.monotonic()
        for s in slow:
            s.sendall(head)
        assert console.request("GET", "/login")[0] == 200             # served while they hold their connections
        assert wait_closed(slow, within_s=HEAD_S + 3) == []            # every one is closed, none answered
        assert time.monotonic() - t0 < HEAD_S + 3
        assert console.request("GET", "/login")[0] == 200             # and served after
    finally:
        for s in slow:
            s.close()
    log = console.log.read_text()
    cut = [line for line in log.splitlines() if "http_head_timeout" in line and f"bytes_received={len(head)}" in line]
    assert len(cut) >= 50 and all("warning" in line for line in cut)
    assert "slowloris-marker" not in log                                # logged without the bytes


# ------------------------------------------------------------------------------------ the live stream
def test_the_stream_sends_the_state_so_far_then_each_update(served):
    console, state, store = served
    trader = console.login(TRADER)
    conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10)
    conn.request("GET", "/events", headers={"Cookie": f"tl_console={trader.cookie}"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")

    def message() -> dict:
        while True:
            line = r.fp.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[6:])

    first = message()
    assert first["reset"] is True and first["snapshot"]["session"]["run_id"] == "t1"
    store.append_events([{"kind": "fill", "data": {"order_id": "F1", "symbol": "AAA", "side": "BUY", "qty": 5.0,
                                                   "price": 50.5, "commission": 0.1, "clock_ts": 1}}])
    for _ in range(20):
        m = message()
        fills = [e for e in m.get("events", []) if e["kind"] == "fill"]
        if fills:
            break
    assert fills[0]["data"]["order_id"] == "F1"
    conn.close()
    assert console.request("GET", "/events")[0] == 401                   # no stream without a login


# ------------------------------------------------------------------------------------ one winner
RACER = """
import os, sys, time
from tradeloop.engine.cli.main import main
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.0005)
sys.exit(main(sys.argv[2:]))
"""


def test_a_console_user_and_a_cli_user_answering_the_same_order_at_once_have_exactly_one_winner(served, tmp_path):
    console, state, store = served
    trader = console.login(TRADER)
    for n, oid in enumerate(("R2", "R3")):
        go = tmp_path / f"go-{oid}"
        cli = subprocess.Popen([sys.executable, "-c", RACER, str(go), "review", "reject" if n else "approve", oid,
                                "--state", str(state), "--by", "cli-user", "--note", "from the shell"],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)                                    # the CLI has imported tradeloop and waits for the go
        answer: dict = {}
        web = threading.Thread(target=lambda: answer.update(zip(("status", "out"), trader.act(
            {"action": "approve", "order_id": oid, "note": "from the page"}))))
        go.touch()
        web.start()
        out, err = cli.communicate(timeout=30)
        web.join(30)
        cli_ok = cli.returncode == 0
        web_ok = answer["status"] == 200 and answer["out"]["ok"]
        assert cli_ok != web_ok, (cli.returncode, out, err, answer)      # exactly one of the two won
        row = next(r for r in store.reviews(pending_only=False) if r["order_id"] == oid)
        if web_ok:
            assert row["answered_by"] == "trader" and row["status"] == "approved"
            assert cli.returncode == 2 and err.decode().count("\n") == 1
            assert f"order {oid} is no longer pending: it was approved by trader at" in err.decode()
        else:
            assert row["answered_by"] == "cli-user"
            assert answer["status"] == 409
            assert answer["out"]["message"].startswith(f"order {oid} is no longer pending: it was "
                                                       f"{row['status']} by cli-user at ")
        trail = [r for r in store.audit_trail() if r["target"] == oid]
        assert sorted((r["who"], r["ok"]) for r in trail) == sorted([("trader", web_ok), ("cli-user", cli_ok)])


# ------------------------------------------------------------------------------------ separate consoles
def test_failed_logins_are_limited_per_client_then_answered_429(tmp_path):
    state = tmp_path / "live.sqlite"
    ControlStore(state).close()
    console = Console(tmp_path, state)
    try:
        for _ in range(5):
            assert console.request("POST", "/login", "secret=wrong-wrong-wrong", {"Origin": console.origin})[0] == 401
        status, hdrs, body = console.request("POST", "/login", f"secret={TRADER}", {"Origin": console.origin})
        assert status == 429 and int(hdrs["retry-after"]) > 0 and b"too many failed logins" in body  # the right one too
        assert "console.login_limited" in console.log.read_text()
    finally:
        assert console.stop() == 0


def test_sessions_expire_when_idle_and_the_stream_ends_with_them(tmp_path):
    state = tmp_path / "live.sqlite"
    ControlStore(state).close()
    console = Console(tmp_path, state, "--idle-minutes", "0.04")   # 2.4 s
    try:
        trader = console.login(TRADER)
        assert trader.get("/api/state")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10)
        conn.request("GET", "/events", headers={"Cookie": f"tl_console={trader.cookie}"})
        r = conn.getresponse()
        t0 = time.monotonic()
        r.read()                                         # returns when the server ends the stream
        assert 1.5 < time.monotonic() - t0 < 6
        conn.close()
        status, _, body = trader.get("/api/state")
        assert status == 401 and b"expired" in body
        assert trader.act({"action": "reset_drawdown"})[0] == 401
    finally:
        assert console.stop() == 0


def test_a_session_ends_after_its_lifetime_even_when_busy(tmp_path):
    state = tmp_path / "live.sqlite"
    ControlStore(state).close()
    console = Console(tmp_path, state, "--session-hours", "0.0005")   # 1.8 s
    try:
        trader = console.login(TRADER)
        deadline = time.monotonic() + 6
        while trader.get("/api/state")[0] == 200:        # used all the time, still ends
            assert time.monotonic() < deadline, "the session outlived its lifetime"
            time.sleep(0.2)
    finally:
        assert console.stop() == 0


def _refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None, state: bool = True) -> str:
    """Run the console expecting a refusal: exit 2 and exactly one line on stderr, returned."""
    path = tmp_path / "live.sqlite"
    if state:
        ControlStore(path).close()
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOOP_CONSOLE_")}
    r = subprocess.run([sys.executable, "-m", "tradeloop", "console", "--state", str(path), *args], cwd=ROOT,
                       env={**base, "PYTHONPATH": str(ROOT), **(TOKENS if env is None else env)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (r.returncode, r.stdout, r.stderr)
    return r.stderr


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    assert "not a loopback address" in _refused(tmp_path, "--bind", "0.0.0.0:0") and "--tls-cert" in \
        _refused(tmp_path, "--bind", "0.0.0.0:0")
    assert "no console users" in _refused(tmp_path, env={})
    assert "at least 12" in _refused(tmp_path, env={"TRADELOOP_CONSOLE_TOKEN": "short"})
    assert "the same token" in _refused(tmp_path, env={"TRADELOOP_CONSOLE_TOKEN": TRADER,
                                                        "TRADELOOP_CONSOLE_VIEWER_TOKEN": TRADER})
    assert "expected HOST:PORT" in _refused(tmp_path, "--bind", "127.0.0.1")
    assert "no such file" in _refused(tmp_path, "--state", str(tmp_path / "missing.sqlite"), state=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert "cannot listen there" in _refused(tmp_path, "--bind", f"127.0.0.1:{taken.getsockname()[1]}")
    assert "both --tls-cert and --tls-key" in _refused(tmp_path, "--tls-cert", "x.pem")
    assert "--header-timeout-s 0: must be positive" in _refused(tmp_path, "--header-timeout-s", "0")


def test_a_users_file_holds_salted_hashes_must_be_0600_and_gives_each_user_its_role(tmp_path):
    users = tmp_path / "users"
    for name, role, secret in (("alice", "trader", "alice-password-1"), ("bob", "viewer", "bob-password-22")):
        r = subprocess.run([sys.executable, "-m", "tradeloop", "console", "--users", str(users), "--add-user",
                            f"{name}:{role}"], input=secret + "\n", cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert r.returncode == 0, r.stderr
    text = users.read_text()
    assert (users.stat().st_mode & 0o777) == 0o600
    assert "alice-password-1" not in text and text.count("scrypt$") == 2
    salts = re.findall(r"scrypt\$\d+\$\d+\$\d+\$([0-9a-f]+)\$", text)
    assert len(set(salts)) == 2                                           # salted: each its own
    state = tmp_path / "live.sqlite"
    store = ControlStore(state)
    snapshot(store)
    console = Console(tmp_path, state, "--users", str(users), env={})     # no tokens: the file alone
    try:
        alice = console.login("alice-password-1", "alice")
        assert "alice (trader)" in alice.page
        status, out = alice.act({"action": "halt", "symbol": "BBB", "note": "file user"})
        assert status == 200 and commands(state)[-1] == ("halt", "BBB", "alice")
        bob = console.login("bob-password-22", "bob")
        assert bob.act({"action": "resume", "symbol": "BBB"})[0] == 403
        assert console.request("POST", "/login", "user=alice&secret=bob-password-22",
                               {"Origin": console.origin})[0] == 401     # a password is its user's only
    finally:
        assert console.stop() == 0
        store.close()
    users.chmod(0o644)
    assert "must be 0600" in _refused(tmp_path, "--users", str(users), env={})
    users.chmod(0o600)
    users.write_text("alice trader not-a-hash\n")
    assert f"{users}:1: bad password hash" in _refused(tmp_path, "--users", str(users), env={})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_with_tls_the_console_serves_https_and_its_cookie_is_secure(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    key.chmod(0o644)
    assert "must be 0600" in _refused(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    key.chmod(0o600)
    state = tmp_path / "live.sqlite"
    store = ControlStore(state)
    snapshot(store)
    console = Console(tmp_path, state, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert console.scheme == "https"
        trader = console.login(TRADER)
        assert "; secure" in trader.set_cookie.lower()
        status, hdrs, _ = trader.get("/api/state")
        assert status == 200 and hdrs["strict-transport-security"].startswith("max-age=")
        assert trader.act({"action": "halt", "symbol": "AAA"})[0] == 200
    finally:
        assert console.stop() == 0
        store.close()


def test_sigterm_stops_the_console_cleanly_with_a_page_connected(tmp_path):
    state = tmp_path / "live.sqlite"
    store = ControlStore(state)
    snapshot(store)
    console = Console(tmp_path, state)
    try:
        trader = console.login(TRADER)
        conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10)
        conn.request("GET", "/events", headers={"Cookie": f"tl_console={trader.cookie}"})
        r = conn.getresponse()
        while not r.fp.readline().startswith(b"data: "):   # the first message (after the chunk's size line)
            pass
        t0 = time.monotonic()
        assert console.stop() == 0 and time.monotonic() - t0 < 5
        r.fp.read()                   # the stream ended with the process (a hang would time out)
        assert "console.stopped" in console.log.read_text()
        conn.close()
    finally:
        console.stop()
        store.close()


def test_a_state_file_that_turns_unreadable_is_shown_and_a_new_one_at_the_path_is_picked_up(tmp_path):
    state = tmp_path / "live.sqlite"
    store = ControlStore(state)
    snapshot(store)
    store.close()
    console = Console(tmp_path, state)
    try:
        trader = console.login(TRADER)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        state.write_bytes(b"this is not a database" * 100)

        def error() -> str:
            return json.loads(trader.get("/api/state")[2])["error"]

        deadline = time.monotonic() + 10
        while not error():
            assert time.monotonic() < deadline, "the console did not notice"
            time.sleep(0.1)
        assert error().startswith(f"cannot read the state file {state}")
        status, out = trader.act({"action": "halt", "symbol": ""})
        assert status == 503 and out["ok"] is False and str(state) in out["message"]
        state.unlink()                                     # a new session starts at the same path
        fresh = ControlStore(state)
        snapshot(fresh, run_id="t2")
        fresh.close()
        deadline = time.monotonic() + 10
        while error() or (json.loads(trader.get("/api/state")[2])["snapshot"] or {}).get("session", {}).get(
                "run_id") != "t2":
            assert time.monotonic() < deadline, "the console did not pick the new file up"
            time.sleep(0.1)
    finally:
        assert console.stop() == 0
