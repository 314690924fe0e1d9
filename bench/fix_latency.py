"""FIX round trip on loopback: NewOrderSingle -> ExecutionReport(New) latency through adapter + simulator.

Usage: python bench/fix_latency.py [--orders 2000] [--sqlite]
Both ends run in one process and event loop (so the figure includes both sides' Python work).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeloop.brokers.exchange import ExchangeSimulator  # noqa: E402
from tradeloop.brokers.fix.client import FixBroker  # noqa: E402
from tradeloop.brokers.fix.session import SessionConfig  # noqa: E402
from tradeloop.brokers.fix.store import SQLiteSequenceStore  # noqa: E402
from tradeloop.brokers.orders import Order, OrderStatus, OrderType, Side  # noqa: E402


async def bench(n: int, sqlite: bool) -> dict:
    tmp = Path(tempfile.mkdtemp())
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=tmp / "x.sqlite" if sqlite else None)
    await ex.start()
    store = SQLiteSequenceStore(tmp / "t.sqlite") if sqlite else None
    broker = FixBroker(SessionConfig("TRADER", "EXCH"), "127.0.0.1", ex.port, store)
    await broker.start()
    assert await broker.wait_logged_on(5)
    lat = []
    t_all = time.perf_counter()
    for i in range(n):
        o = Order(f"B{i}", "X", Side.BUY, 1.0, OrderType.LIMIT, 1.0)
        t0 = time.perf_counter()
        broker.submit(o)
        while o.status is OrderStatus.NEW:
            await broker.events.get()
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    await broker.stop()
    await ex.stop()
    lat.sort()
    return {"orders": n, "store": "sqlite" if sqlite else "memory", "orders_per_s": round(n / total),
            "p50_us": round(statistics.median(lat) * 1e6), "p99_us": round(lat[int(0.99 * (n - 1))] * 1e6)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--sqlite", action="store_true")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(asyncio.run(bench(args.orders, args.sqlite)))


if __name__ == "__main__":
    main()
