"""What publishing a session's state for operators costs, beside the engine step it follows (engine/live/publish.py).

Usage: python bench/operator_publish.py [--symbols 100] [--orders 1000] [--steps 30]

A live driver over ``--symbols`` symbols whose strategy places ``--orders`` market orders per timestamp
(one timestamp a second of data: 1,000 orders/s), each filled at the next bar; after every step the
Publisher appends that step's events (fills, order changes, equity) in one transaction to a real SQLite
state file (WAL) and replaces the snapshot at most every 50 ms. Prints per-step milliseconds of the
engine step (the peer, same process) and of the publishing, their ratio, rows written per second, and
what a reader (the console) pays to notice a change and read the snapshot and the new events.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeloop import Strategy  # noqa: E402
from tradeloop.data.schema import Bar  # noqa: E402
from tradeloop.engine.assembly.build import build_risk, build_rules  # noqa: E402
from tradeloop.engine.config.run import RunConfig  # noqa: E402
from tradeloop.engine.drivers.live import LiveDriver  # noqa: E402
from tradeloop.engine.live.publish import Publisher  # noqa: E402
from tradeloop.risk.store import ControlStore  # noqa: E402


class Busy(Strategy):
    """``per_symbol`` market orders of one share per symbol per timestamp, alternately buying and selling."""

    def __init__(self, per_symbol: int) -> None:
        super().__init__()
        self.per_symbol = per_symbol
        self.flip = False

    def on_bars(self, ctx, bars) -> None:
        self.flip = not self.flip
        for bar in bars:
            for _ in range(self.per_symbol):
                (ctx.sell if self.flip else ctx.buy)(bar.symbol, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--orders", type=int, default=1000, help="orders per timestamp (one timestamp per second)")
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))   # risk events are not the point
    tmp = Path(tempfile.mkdtemp())
    cfg = RunConfig()
    cfg.live.state = str(tmp / "live.sqlite")
    cfg.run.cash = 1e9
    rules = build_rules(cfg)
    risk = build_risk(cfg, rules, live=True)
    symbols = [f"S{i:03d}" for i in range(a.symbols)]
    driver = LiveDriver(Busy(max(1, a.orders // a.symbols)), symbols, cash=1e9, rules=rules, risk=risk)
    driver.start()
    pub = Publisher(risk.control, driver.engine, driver.equity, mode="paper", run_id="bench", strategy="Busy",
                    status=lambda: {"fix": "n/a", "mqtt": "connected", "paused_for_review": False, "finished": False})
    reader = ControlStore(cfg.live.state, create=False)
    step_ms, pub_ms, read_ms = [], [], []
    seen, rows = 0, 0
    t0 = 1_700_000_000 * 10**9
    for k in range(a.steps):
        ts = t0 + k * 10**9
        bars = [Bar(s, ts, 10.0, 10.1, 9.9, 10.0, 1e9) for s in symbols]
        t = time.perf_counter()
        for bar in bars:
            driver.feed(bar)
        step_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        pub.flush()
        pub_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        reader.change_counter()
        reader.snapshot()
        new = reader.events(seen, 100_000)
        read_ms.append((time.perf_counter() - t) * 1e3)
        if new:
            seen = new[-1]["id"]
            rows += len(new)
    s, p, r = statistics.median(step_ms[1:]), statistics.median(pub_ms[1:]), statistics.median(read_ms[1:])
    print(f"{a.symbols} symbols, {a.orders} orders per timestamp, {a.steps} timestamps, "
          f"{rows / a.steps:,.0f} event rows per timestamp, {len(driver.engine.fills):,} fills")
    print(f"engine step (peer)   median {s:8.2f} ms")
    p90 = sorted(pub_ms)[int(0.9 * len(pub_ms))]
    print(f"publish (events+snapshot, one transaction) median {p:8.2f} ms  p90 {p90:.2f} ms")
    print(f"reader (change_counter + snapshot + new events) median {r:8.2f} ms")
    print(f"publish / engine step = {p / s:.2f}; publishing capacity {1000 / p * a.orders:,.0f} orders/s at this mix")


if __name__ == "__main__":
    main()
