#!/usr/bin/env python3
"""How fast does a fill reach the operator console's page, and does the page stay responsive under load?

A producer process stands in for a busy session (a real paper session cannot reach this rate: the
live order path costs ~0.3 ms of CPU per order, docs/live-trading.md): it writes to a real state file
through the engine's own publishing calls (``ControlStore.write``: events plus a snapshot at most every
50 ms, one transaction per 10 ms tick, as engine/live/publish.py does), with 100 symbols, ``--rate``
orders/s, each an order event and a fill event stamped with the wall clock just before its commit. The
console (``python -m tradeloop.engine.console``) serves it; a real headless Chromium page is logged in
and connected over server-sent events. A MutationObserver on the page's fills table stamps each fill
row when it enters the DOM; the stamps are read back over CDP. Meanwhile a 10 ms timer in the page
records how late it fires (main-thread responsiveness), and a plain Python SSE client beside the page
records when each fill reaches it over the wire (the peer: the page's share of the latency is the rest).

Prints one JSON line per phase (``quiet``: ``--quiet-rate`` orders/s; ``load``: ``--rate``):
fill-to-DOM latency p50/p99/max (ms), fill-to-SSE-client p50/p99 (the peer), the ratio of the two p50s,
fills seen / written, timer lateness p50/p99/max (ms), and the share of wall time the page's renderer
main thread spent on tasks, script, layout and style (CDP Performance metrics). Results: docs/console.md.

Usage: python bench/console_latency.py [--rate 1000] [--seconds 15] [--symbols 100]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-console-token-0123456789"

OBSERVE_JS = """
(() => {
  window.__arrived = {};
  const seen = window.__arrived;
  new MutationObserver(() => {
    const t = performance.timeOrigin + performance.now();
    for (const tr of document.querySelectorAll('#fills tbody tr[data-event]')) {
      const id = tr.dataset.event;
      if (!(id in seen)) seen[id] = t;
    }
  }).observe(document.getElementById('fills'), {childList: true, subtree: true});
  window.__late = [];
  let last = performance.now();
  setInterval(() => { const now = performance.now(); window.__late.push(now - last - 10); last = now; }, 10);
  return true;
})()
"""


# ---------------------------------------------------------------------------------- the producer
def produce(state: Path, rate: float, seconds: float, symbols: int) -> None:
    """Write ``rate`` orders/s (an order event and a fill each) over ``symbols`` symbols for ``seconds``."""
    from tradeloop.risk.store import ControlStore, wall_iso
    store = ControlStore(state)
    names = [f"S{i:03d}" for i in range(symbols)]
    pos = {s: 0.0 for s in names}
    session = {"mode": "paper", "run_id": "bench", "strategy": "bench", "started_at": wall_iso(),
               "fix": "logged_on", "mqtt": "connected", "stale": [], "halted": [], "book_halted": False,
               "drawdown_stop": False, "paused_for_review": False, "finished": False, "symbols": names}
    n, t0, last_snap = 0, time.perf_counter(), -1.0
    print("producing", flush=True)
    while (now := time.perf_counter() - t0) < seconds:
        due = int(now * rate)
        events = []
        while n < due:
            sym = names[n % symbols]
            pos[sym] += 10
            oid = f"B{n:09d}"
            events.append({"kind": "order", "data": {"order_id": oid, "symbol": sym, "status": "FILLED", "reason": "",
                                                     "clock_ts": n}})
            events.append({"kind": "fill", "data": {"order_id": oid, "symbol": sym, "side": "BUY", "qty": 10.0,
                                                    "price": 100.0 + n % 7, "commission": 0.1, "clock_ts": n}})
            n += 1
        if n % 50 == 0 and events:
            events.append({"kind": "equity", "data": {"clock_ts": n, "equity": 1e7 + (n % 997) * 10.0, "cash": 1e7}})
        snap = None
        if now - last_snap >= 0.05:
            last_snap = now
            snap = {"session": {**session, "updated_at": wall_iso(), "clock_ts": n},
                    "account": {"cash": 1e7, "equity": 1e7, "realized_pnl": 0.0, "unrealized_pnl": 0.0},
                    "positions": [{"symbol": s, "qty": q, "avg_price": 100.0, "last": 101.0, "unrealized_pnl": q,
                                   "realized_pnl": 0.0} for s, q in pos.items()],
                    "orders": [{"id": f"W{(n + i) % 100000:06d}", "symbol": names[i % symbols], "side": "BUY",
                                "type": "LIMIT", "qty": 10.0, "filled": 0.0, "limit_price": 90.0, "status": "ACCEPTED"}
                               for i in range(200)],
                    "reviews": [], "models": []}
        if events or snap:
            stamp = time.time_ns()
            for e in events:
                if e["kind"] == "fill":
                    e["data"]["sent_ns"] = stamp
            store.write(snap, events)
        time.sleep(max(0.0, 0.01 - (time.perf_counter() - t0 - now)))
    store.close()
    print(json.dumps({"written": n}), flush=True)


# ---------------------------------------------------------------------------------- the peer: a bare SSE client
class SseClient(threading.Thread):
    """A Python client of /events recording when each fill event reaches it (wall clock, ms)."""

    def __init__(self, port: int, cookie: str) -> None:
        super().__init__(daemon=True)
        self.port, self.cookie = port, cookie
        self.arrived: dict[int, float] = {}
        self.stop = False

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/events", headers={"Cookie": f"tl_console={self.cookie}"})
        r = conn.getresponse()
        while not self.stop:
            line = r.fp.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                t = time.time() * 1000
                for e in json.loads(line[6:]).get("events", ()):
                    if e["kind"] == "fill":
                        self.arrived.setdefault(e["id"], t)


# ---------------------------------------------------------------------------------- the run
def percentiles(xs: list[float]) -> dict[str, float]:
    import numpy as np
    if not xs:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)}


def phase(name: str, folder: Path, rate: float, seconds: float, symbols: int) -> dict:
    from tests.browser import Chromium
    from tradeloop.risk.store import ControlStore
    state = folder / f"{name}.sqlite"
    ControlStore(state).close()   # the file exists before the console starts, as a session's does
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRADELOOP_CONSOLE_TOKEN": TOKEN}
    log = open(folder / f"{name}-console.log", "wb")
    console = subprocess.Popen([sys.executable, "-m", "tradeloop.engine.console", "--state", str(state), "--bind",
                                "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=log)
    producer = None
    try:
        line = _line(console, 30)
        port = int(re.search(r":(\d+)$", line.strip()).group(1))
        with Chromium(loopback=True) as b:
            for domain in ("Page", "Runtime"):
                b.send(f"{domain}.enable")
            b.send("Page.navigate", url=f"http://127.0.0.1:{port}/login")
            time.sleep(1.0)
            js = f"""(async () => {{ const r = await fetch('/login', {{method: 'POST', body: new URLSearchParams(
                {{user: '', secret: '{TOKEN}'}})}}); return r.status; }})()"""
            b.send("Runtime.evaluate", expression=js, awaitPromise=True)
            b.send("Page.navigate", url=f"http://127.0.0.1:{port}/")
            _until(lambda: b.evaluate("!!document.querySelector('#status .badge') && location.pathname === '/'"), 15)
            cookie = [c for c in b.send("Network.getCookies", urls=[f"http://127.0.0.1:{port}/"])["cookies"]
                      if c["name"] == "tl_console"][0]["value"]
            b.evaluate(OBSERVE_JS)
            b.send("Performance.enable")
            busy0, t_busy = _metrics(b), time.perf_counter()
            peer = SseClient(port, cookie)
            peer.start()
            time.sleep(0.5)
            producer = subprocess.Popen([sys.executable, __file__, "--produce", str(state), "--rate", str(rate),
                                         "--seconds", str(seconds), "--symbols", str(symbols)], env=env,
                                        stdout=subprocess.PIPE)
            _line(producer, 30)
            written = json.loads(_line(producer, seconds + 60))["written"]
            time.sleep(1.0)   # the last fills reach the page
            arrived = b.evaluate("window.__arrived")
            late = b.evaluate("window.__late")
            busy = _metrics(b)
            busy = {k: (busy[k] - busy0[k]) / (time.perf_counter() - t_busy) for k in busy}
            peer.stop = True
    finally:
        for p in (producer, console):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(15)
        log.close()
    store = ControlStore(state, create=False)
    sent = {e["id"]: e["data"]["sent_ns"] / 1e6 for e in store.events(0, 10**7) if e["kind"] == "fill"}
    store.close()
    page = [arrived[str(i)] - t for i, t in sent.items() if str(i) in arrived]
    wire = [peer.arrived[i] - t for i, t in sent.items() if i in peer.arrived]
    page_p, wire_p = percentiles(page), percentiles(wire)
    return {"phase": name, "orders_per_s": rate, "symbols": symbols, "seconds": seconds, "fills_written": written,
            "fills_seen_by_page": len(page), "fill_to_dom_ms": page_p, "fill_to_sse_client_ms": wire_p,
            "dom_over_sse_p50": round(page_p["p50"] / wire_p["p50"], 2) if wire else None,
            "timer_10ms_late_ms": percentiles(late[20:]),
            "renderer_busy_share": {k: round(v, 3) for k, v in busy.items()}}


def _metrics(b) -> dict[str, float]:
    """Seconds the page's renderer spent on tasks, script and layout so far (CDP Performance metrics)."""
    keep = {"TaskDuration": "main_thread", "ScriptDuration": "script", "LayoutDuration": "layout",
            "RecalcStyleDuration": "style"}
    return {keep[m["name"]]: m["value"] for m in b.send("Performance.getMetrics")["metrics"] if m["name"] in keep}


def _line(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise RuntimeError("no line in time")
    return proc.stdout.readline().decode()


def _until(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="orders (and fills) per second under load")
    ap.add_argument("--quiet-rate", type=float, default=10.0, help="orders per second of the quiet phase")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--produce", metavar="STATE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.produce:
        produce(Path(a.produce), a.rate, a.seconds, a.symbols)
        return 0
    with tempfile.TemporaryDirectory(prefix="tl-console-bench-") as tmp:
        for name, rate in (("quiet", a.quiet_rate), ("load", a.rate)):
            print(json.dumps(phase(name, Path(tmp), rate, a.seconds if name == "load" else 5.0, a.symbols)),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
