"""Headless Chromium driven over the DevTools protocol: open a local HTML file offline and report what happened.

Used by tests/test_report.py (does every chart render, with no error and no network request?) and by
bench/report_open.py (how long does a report take to open?). Network is off twice over: Chromium is
pointed at a dead proxy, and every request that is not ``file:`` or ``data:`` is recorded as a violation.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--window-size=1280,900")

CHARTS_JS = """
Array.from(document.querySelectorAll('svg.chart')).map(s => {
  const b = s.getBoundingClientRect();
  const lengths = Array.from(s.querySelectorAll('path.series')).map(p => p.getTotalLength());
  return {kind: s.dataset.kind, title: s.getAttribute('aria-label'), x: b.left + window.scrollX,
          y: b.top + window.scrollY, width: b.width, height: b.height,
          path_length: lengths.reduce((a, c) => a + c, 0),
          cells: s.querySelectorAll('rect.cell').length, bars: s.querySelectorAll('rect.bar').length};
})
"""
TIMING_JS = """
(() => { const n = performance.getEntriesByType('navigation')[0];
  const p = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
  return {dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd,
          first_contentful_paint_ms: p['first-contentful-paint'] ?? null}; })()
"""


def chromium_binary() -> str | None:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageVisit:
    """What happened while a page was opened: errors, off-box requests, charts, timings, screenshot."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)        # every URL the page asked for
    charts: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    open_s: float = 0.0                                       # navigate -> load event, wall clock
    screenshot: bytes = b""
    chart_pngs: list[bytes] = field(default_factory=list)

    @property
    def offline_violations(self) -> list[str]:
        """Requests that would have left the machine."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]


class Chromium:
    """One headless Chromium process with a fresh profile; use as a context manager."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0, *, loopback: bool = False) -> None:
        """``loopback=True`` lets pages reach 127.0.0.1 (a server under test); everything else stays behind
        the dead proxy either way."""
        self.binary = binary or chromium_binary()
        self.flags = FLAGS if not loopback else tuple(f for f in FLAGS if not f.startswith("--proxy-bypass-list"))
        if self.binary is None:
            raise FileNotFoundError("no chromium binary on PATH")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="tl-chromium-")
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self._id = 0

    def __enter__(self) -> "Chromium":
        self.proc = subprocess.Popen([self.binary, *self.flags, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
            targets = json.load(r)
        page = next(t for t in targets if t.get("type") == "page")
        import websocket  # websocket-client

        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout,
                                              suppress_origin=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            try:
                self.send("Browser.close")
            except Exception:
                pass
            self.ws.close()
            self.ws = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, visit: PageVisit | None = None, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result; events seen meanwhile go to ``visit``."""
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if visit is not None:
                self._record(msg, visit)

    def _wait_for(self, event: str, visit: PageVisit) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._record(msg, visit)
            if msg.get("method") == event:
                return
        raise TimeoutError(f"no {event} within {self.timeout} s")

    @staticmethod
    def _record(msg: dict[str, Any], visit: PageVisit) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            visit.errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            visit.errors.append("console: " + json.dumps(p.get("args", []))[:500])
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            visit.errors.append("log: " + p["entry"].get("text", "")[:500])
        elif method == "Network.requestWillBeSent":
            visit.requests.append(p.get("request", {}).get("url", ""))

    def open(self, path: Path, *, screenshots: bool = True) -> PageVisit:
        """Open a local file, wait for its load event, and collect errors, requests, charts and screenshots."""
        visit = PageVisit()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", visit)
        t0 = time.perf_counter()
        self.send("Page.navigate", visit, url=Path(path).resolve().as_uri())
        self._wait_for("Page.loadEventFired", visit)
        visit.open_s = time.perf_counter() - t0
        visit.timing = self.evaluate(TIMING_JS, visit)
        visit.charts = self.evaluate(CHARTS_JS, visit)
        if screenshots:
            metrics = self.send("Page.getLayoutMetrics", visit)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            visit.screenshot = self._shot(visit, clip)
            visit.chart_pngs = [self._shot(visit, {"x": c["x"], "y": c["y"], "width": max(c["width"], 1),
                                                   "height": max(c["height"], 1), "scale": 1})
                                for c in visit.charts]
        self.send("Runtime.evaluate", visit, expression="1")   # drain late console/log events
        return visit

    def _shot(self, visit: PageVisit, clip: dict[str, Any]) -> bytes:
        r = self.send("Page.captureScreenshot", visit, format="png", clip=clip, captureBeyondViewport=True)
        return base64.b64decode(r["data"])

    def evaluate(self, expression: str, visit: PageVisit | None = None) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        r = self.send("Runtime.evaluate", visit, expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")
