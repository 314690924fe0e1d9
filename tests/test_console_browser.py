"""The operator console in a real browser, against a real paper session.

``tradeloop paper --console`` runs as its own process (Mosquitto, the exchange simulator, the live runner,
a lockstep replay, and the console as the session's child); headless Chromium (tests/browser.py, over the
DevTools protocol) logs in and acts with real mouse clicks and typed text, as a person would: it approves a
held order and sees it fill, rejects one with a reason, halts and resumes the symbol, and pulls the kill
switch. A viewer's page has no enabled control and its forged POST is refused; a POST without the CSRF token,
and one from another origin, change nothing. Screenshots are checked for rendered content.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser import Chromium, PageVisit, chromium_binary
from tests.live_procs import SHARED, Proc, wait_until
from tests.test_console_http import TOKENS, TRADER, VIEWER, commands
from tradeloop.engine.live.paper import free_port, mosquitto_binary
from tradeloop.risk.store import ControlStore

DATA = SHARED / "qbot" / "600519_unadjusted.csv"
SYM = "600519_unadjusted"


@pytest.fixture(autouse=True)
def _needs() -> None:
    if chromium_binary() is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if not DATA.exists():
        pytest.skip(f"{DATA} is not there")


class Page:
    """One Chromium tab driven like a person: navigate, type, click; every script error is collected."""

    def __init__(self, browser: Chromium) -> None:
        self.b = browser
        self.visit = PageVisit()
        for domain in ("Page", "Runtime", "Log"):
            self.b.send(f"{domain}.enable", self.visit)

    def goto(self, url: str) -> None:
        self.b.send("Page.navigate", self.visit, url=url)
        self.b._wait_for("Page.loadEventFired", self.visit)

    def js(self, expression: str) -> Any:
        r = self.b.send("Runtime.evaluate", self.visit, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page text:\n{self.js('document.body.innerText')[:3000]}")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        box = self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2, disabled: !!e.disabled}}; }})()""")
        assert box is not None, f"no {selector} on the page"
        assert not box["disabled"], f"{selector} is disabled"
        for kind in ("mousePressed", "mouseReleased"):
            self.b.send("Input.dispatchMouseEvent", self.visit, type=kind, x=box["x"], y=box["y"], button="left",
                        clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        self.b.send("Input.insertText", self.visit, text=text)

    def login(self, origin: str, secret: str) -> None:
        self.goto(f"{origin}/login")
        self.type("#secret", secret)
        self.click("button[type=submit]")
        self.wait("location.pathname === '/' && document.readyState === 'complete' && "
                  "!!document.querySelector('#status .badge.ok')", "the console page after login")

    def screenshot(self) -> bytes:
        r = self.b.send("Page.captureScreenshot", self.visit, format="png", captureBeyondViewport=False)
        return base64.b64decode(r["data"])

    def region(self, selector: str) -> dict[str, float]:
        return self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            const r = e.getBoundingClientRect();
            return {{x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}}; }})()""")

    def shot_of(self, selector: str) -> bytes:
        box = self.region(selector)
        r = self.b.send("Page.captureScreenshot", self.visit, format="png", clip={**box, "scale": 1},
                        captureBeyondViewport=True)
        return base64.b64decode(r["data"])

    def text(self, selector: str) -> str:
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def post(self, body: dict, *, csrf: bool = True) -> dict:
        """The page's own fetch of /api/action (its cookie and Origin), with or without its CSRF token."""
        headers = {"Content-Type": "application/json"}
        token = "document.querySelector('meta[name=\"csrf-token\"]').content" if csrf else "''"
        return self.js(f"""(async () => {{ const h = {json.dumps(headers)}; const t = {token};
            if (t) h["X-CSRF-Token"] = t;
            const r = await fetch("/api/action", {{method: "POST", headers: h, body: {json.dumps(json.dumps(body))}}});
            return {{status: r.status, body: await r.json()}}; }})()""")


def ink(png: bytes) -> float:
    """Share of pixels that are not the page's near-white background: text, tables, badges, the curve."""
    from PIL import Image
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float(np.mean(rgb.min(axis=2) < 200))


def colored(png: bytes) -> float:
    """Share of saturated pixels (badges, the equity curve), as the report test measures."""
    from PIL import Image
    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("HSV"))
    return float(np.mean((hsv[..., 1] > 64) & (hsv[..., 2] > 40)))


def rows_with(table: str, column: int, value: str) -> str:
    return (f"[...document.querySelectorAll('#{table} tbody tr')].some(r => r.cells[{column}] && "
            f"r.cells[{column}].textContent === {json.dumps(value)})")


def held_row(order_id: str) -> str:
    return f"!!document.querySelector('#reviews tr[data-order=\"{order_id}\"]')"


def test_operators_act_on_a_real_paper_session_from_the_browser(tmp_path):
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    out = tmp_path / "session"
    paper = Proc("paper", ["-m", "tradeloop", "paper", "tests.operator_strategies:BigOrders", "--data", str(DATA),
                           "--set", "run.start=2010-01-01", "--set", "run.end=2010-01-31", "--cash", "10000000",
                           "--set", "risk.review.notional=100000", "--set", "risk.review.timeout=120",
                           "--console", f"127.0.0.1:{port}", "--out", str(out), "--log-json", "--quiet"],
                 tmp_path, env=TOKENS)
    state = out / "live.sqlite"
    try:
        wait_until(lambda: state.exists() or paper.proc.poll() is not None, 60, "the session's state file")
        wait_until(lambda: _listening(port) or paper.proc.poll() is not None, 60, "the console")
        assert paper.proc.poll() is None, paper.tail()
        with Chromium(loopback=True) as browser, Chromium(loopback=True) as viewer_browser:
            page = Page(browser)
            page.login(origin, TRADER)
            assert page.text("#who") == "trader (trader)"

            # 1. the first large order is held: the page shows it with a live countdown; approve sends it
            page.wait(held_row("O00000005"), "the held order on the page")
            row = page.text('#reviews tr[data-order="O00000005"]')
            assert SYM in row and "BUY" in row and "1,000" in row
            first = page.text('#reviews tr[data-order="O00000005"] .countdown')
            time.sleep(1.3)
            later = page.text('#reviews tr[data-order="O00000005"] .countdown')
            assert first.count(":") == 1 and later < first, (first, later)   # 1:59 -> 1:58: it counts down
            assert "paused for review" in page.text("#status")
            shot = page.screenshot()
            (tmp_path / "held.png").write_bytes(shot)
            assert ink(shot) > 0.02 and colored(shot) > 0.002
            for section in ("#status", "#reviews", "#positions", "#fills"):
                assert ink(page.shot_of(section)) > 0.03, f"{section} drew nothing"

            page.click('#reviews tr[data-order="O00000005"] button.approve')
            page.wait("document.getElementById('msg').textContent.startsWith('approved O00000005')", "the answer")
            page.wait(rows_with("fills", 1, "O00000005"), "the approved order's fill on the page")
            fill_row = page.js("[...document.querySelectorAll('#fills tbody tr')].find(r => r.cells[1].textContent"
                               " === 'O00000005').innerText")
            assert "1,000" in fill_row and SYM in fill_row

            # 2. the second: rejected with a typed reason; it leaves the queue and the audit trail says who and why
            page.wait(held_row("O00000006"), "the second held order")
            page.type('#reviews tr[data-order="O00000006"] input.reason', "too big today")
            page.click('#reviews tr[data-order="O00000006"] button.reject')
            page.wait("document.getElementById('msg').textContent.startsWith('rejected O00000006')", "the rejection")
            page.wait(f"!({held_row('O00000006')})", "the rejected order to leave the queue")
            page.wait(rows_with("audit", 2, "reject"), "the rejection in the audit trail")
            page.wait("document.getElementById('risk').innerText.includes('rejected by trader: too big today')",
                      "the review gate's reject event")

            # 3. the third is held (the replay paused): halt and resume the symbol by clicks
            page.wait(held_row("O00000007"), "the third held order")
            page.type("#sym", SYM)
            page.type("#why", "news pending")
            page.click("#halt-sym")
            page.wait(f"document.getElementById('status').innerText.includes('halted: {SYM}')", "the halt badge")
            page.click("#resume-sym")
            page.wait("document.getElementById('status').innerText.includes('no symbol halted')", "the resume")
            page.click('#orders tr[data-order="O00000003"] button.cancel')           # the resting limit order
            page.wait("document.getElementById('msg').textContent.startsWith('sent cancel of O00000003')", "cancel")
            page.wait("!document.querySelector('#orders tr[data-order=\"O00000003\"]')", "the order cancelled")

            # 4. a viewer sees everything and can do nothing
            viewer = Page(viewer_browser)
            viewer.login(origin, VIEWER)
            viewer.wait(held_row("O00000007"), "the held order on the viewer's page")
            enabled = viewer.js("[...document.querySelectorAll('button, input')].filter(e => !e.disabled && "
                                "!e.closest('form[action=\"/logout\"]')).map(e => e.id || e.className)")
            assert enabled == []
            assert viewer.js("document.querySelectorAll('#reviews button.approve, #reviews button.reject').length") == 2
            before = commands(state)
            forged = viewer.post({"action": "approve", "order_id": "O00000007"})
            assert forged["status"] == 403 and "viewer" in forged["body"]["message"]
            # 5. the trader's own page without its CSRF token, and another origin with the trader's cookie jar
            no_csrf = page.post({"action": "halt", "symbol": ""}, csrf=False)
            assert no_csrf["status"] == 403 and "CSRF" in no_csrf["body"]["message"]
            cross = Page(browser)      # same browser (cookie jar), but a page of another origin
            cross.goto(f"http://localhost:{port}/login")
            cross.js(f"""fetch("{origin}/api/action", {{method: "POST", mode: "no-cors", credentials: "include",
                headers: {{"Content-Type": "text/plain"}}, body: '{{"action": "kill", "confirm": "KILL"}}'}})
                .then(() => 1, () => 0)""")
            assert commands(state) == before and _pending(state, "O00000007")
            page.goto(f"{origin}/")
            page.wait(held_row("O00000007"), "the console page again")

            # 6. the kill switch: a second, typed step; then the book is halted and flattened
            page.click("#kill")
            page.type("#killword", "kill")                                          # not the word: nothing sent
            page.click("#kill-confirm")
            assert "type KILL" in page.text("#msg") and commands(state) == before
            page.click("#kill")
            page.type("#killword", "KILL")
            page.click("#kill-confirm")
            page.wait("document.getElementById('msg').textContent.startsWith('sent kill')", "the kill answer")
            page.wait("document.getElementById('status').innerText.includes('BOOK HALTED')", "the book halted")
            page.wait("document.querySelector('#positions tbody tr').cells[1].textContent === '0'",
                      "the position flattened", timeout=60)
            page.wait(rows_with("audit", 2, "kill"), "the kill in the audit trail")
            assert page.js("document.querySelector('#equity path.series').getTotalLength()") > 100
            shot = page.screenshot()
            (tmp_path / "killed.png").write_bytes(shot)
            assert ink(page.shot_of("#equity")) > 0.01 and colored(page.shot_of("#equity")) > 0.002
            refused = "log: Failed to load resource: the server responded with a status of 403 (Forbidden)"
            assert page.visit.errors == [refused], page.visit.errors      # the POST without its CSRF token
            assert viewer.visit.errors == [refused], viewer.visit.errors  # the viewer's forged approve
    finally:
        paper.stop()
    store = ControlStore(state, create=False)
    trail = [(r["who"], r["action"], r["target"], r["ok"]) for r in store.audit_trail() if r["phase"] == "request"]
    assert trail == [("trader", "approve", "O00000005", True), ("trader", "reject", "O00000006", True),
                     ("trader", "halt", SYM, True), ("trader", "resume", SYM, True),
                     ("trader", "cancel", "O00000003", True), ("trader", "kill", "", True)]
    store.close()
    assert paper.proc.returncode == 0, paper.tail()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pending(state: Path, order_id: str) -> bool:
    store = ControlStore(state, create=False)
    try:
        return any(r["order_id"] == order_id for r in store.reviews())
    finally:
        store.close()
