#!/usr/bin/env python3
"""Live runner latency and load on loopback: MQTT publish -> ``tradeloop live`` -> NewOrderSingle at the exchange.

Processes: Mosquitto; a publisher (its own process) sending ticks round-robin over ``--symbols``
symbols at a fixed rate, each stamped with its publish time (``time.time_ns()``); ``tradeloop
live`` (its own process) running :class:`TickOrders`, which answers every ``--every``-th tick of a
symbol with an IOC limit order; and this process, hosting the exchange simulator (without a
market-data feed, so nothing but orders competes for its loop), which notes the wall time at
which each NewOrderSingle frame has been read off its socket (before it is decoded and booked). Ticks of one symbol stay in order end to
end, so the k-th order of a symbol answers its (k*every)-th tick: tick-to-order latency is the
order's arrival minus that tick's publish time.

Phase ``latency``: 1,000 ticks/s for ``--latency-seconds``, an order per ``--order-every`` ticks of
a symbol (default 10: 100 orders/s; 1 answers every tick) (targets: p50 <= 1 ms, p99 <= 5 ms). Phase ``load``: 10,000 ticks/s for ``--seconds`` (the issue's figure is 60),
an order per 1,000 ticks of a symbol: every tick must reach the strategy (none lost) and the lag
must not grow (per-second p99 of the last seconds against the first ones). Prints one JSON object.

Usage: python bench/live_latency.py [--seconds 60] [--latency-seconds 10] [--symbols 100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from tradeloop.data.schema import Tick
from tradeloop import Context, Param, Strategy

VENUE = "lat"
SLICE = 0.002


class TickOrders(Strategy):
    """Every ``every``-th tick of a symbol: an IOC buy limit at half the price (never fills, always answered).

    The i-th symbol seen is offset by i ticks, so orders spread evenly over time instead of every
    symbol firing in the same round of the publisher's round-robin.
    """

    every = Param(1, "ticks of a symbol per order")

    def on_start(self, ctx: Context) -> None:
        self.count: dict[str, int] = {}
        self.offset: dict[str, int] = {}

    def on_tick(self, ctx: Context, tick: Tick) -> None:
        n = self.count.get(tick.symbol, 0) + 1
        self.count[tick.symbol] = n
        off = self.offset.setdefault(tick.symbol, len(self.offset) % self.every)
        if (n + off) % self.every == 0:
            ctx.buy(tick.symbol, 100, limit=round(tick.price * 0.5, 2), tif="IOC")


def trigger_ticks(i: int, n_ticks: int, every: int) -> np.ndarray:
    """0-based indices of the ticks of the i-th symbol that TickOrders answers with an order."""
    first = every - (i % every)   # the 1-based count n with (n + offset) % every == 0
    return np.arange(first - 1, n_ticks, every)


# ------------------------------------------------------------------------------------------ publisher
async def publish(url: str, symbols: list[str], rate: float, seconds: float) -> dict:
    from tradeloop.data.mqtt import encode_eos, eos_topic
    from tradeloop.data.mqtt.conn import MqttServer
    from tradeloop.data.mqtt.wire import encode_tick, tick_topic
    from tradeloop.data.replay import Publisher
    topics = [tick_topic(VENUE, s) for s in symbols]
    total = int(rate * seconds)
    stamps = np.zeros(total, np.int64)
    sent = 0
    async with MqttServer.from_url(url).client(max_inflight=20) as client:
        out = Publisher(client, qos=0, max_inflight=20)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while sent < total:
            due = min(total, int((loop.time() - t0) * rate) + 1)
            while sent < due:
                i = sent % len(symbols)
                ts = time.time_ns()
                stamps[sent] = ts
                await out.send(topics[i], encode_tick(Tick(symbols[i], ts, 10.0 + (sent % 7) * 0.01, 100.0)))
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate + SLICE - loop.time()))
        await out.drain()
        elapsed = loop.time() - t0
        await asyncio.sleep(0.5)
        await client.publish(eos_topic(VENUE), encode_eos(sent, None), qos=1)
    return {"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed, 1), "stamps": stamps.tolist()}


def _publisher_main(conn, url: str, symbols: list[str], rate: float, seconds: float) -> None:
    conn.send(asyncio.run(publish(url, symbols, rate, seconds)))
    conn.close()


# ------------------------------------------------------------------------------------------ one phase
async def phase(folder: Path, url: str, symbols: list[str], rate: float, seconds: float, every: int) -> dict:
    from tradeloop.brokers.exchange import ExchangeSimulator
    from tradeloop.brokers.fix.session import SessionConfig

    arrivals: dict[str, list[int]] = {s: [] for s in symbols}

    # no market data for the exchange: the orders rest (IOC waits for a tick it never gets), so its loop only
    # receives orders and the receipt time is not delayed by matching 10k ticks/s in the same process
    exch = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=folder / "exchange.sqlite")
    handle = exch.session._handle

    def received(frame: bytes) -> None:
        """Receipt = the moment the simulator has a whole NewOrderSingle frame off the socket."""
        if b"\x0135=D\x01" in frame:
            start = frame.index(b"\x0155=") + 4
            arrivals[frame[start:frame.index(b"\x01", start)].decode()].append(time.time_ns())
        handle(frame)

    exch.session._handle = received
    await exch.start()
    out = folder / "run"
    profile = ["-m", "cProfile", "-o", str(folder / "live.prof")] if os.environ.get("BENCH_PROFILE") else []
    log = open(folder / "live.log", "wb")  # noqa: SIM115, ASYNC230 (the child writes it; closed below)
    runner = await asyncio.create_subprocess_exec(
        sys.executable, *profile, "-m", "tradeloop", "live", f"{Path(__file__).resolve()}:TickOrders", "--param",
        f"every={every}", "--cash", "1e12", "--mqtt", url, "--fix", f"127.0.0.1:{exch.port}", "--state",
        str(folder / "live.sqlite"), "--symbols", ",".join(symbols), "--venue", VENUE, "--interval", "1s", "--ticks",
        "--out", str(out), "--quiet", "--log-json", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = await asyncio.wait_for(runner.stdout.readline(), 60)
    if not line:
        raise SystemExit(f"tradeloop live did not start; see {folder / 'live.log'}")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    pub = ctx.Process(target=_publisher_main, args=(child, url, symbols, rate, seconds))
    cpu0 = os.times()
    pub.start()
    res = await asyncio.to_thread(parent.recv)
    pub.join(10)
    await asyncio.wait_for(runner.wait(), seconds + 60)
    log.close()
    cpu1 = os.times()
    await asyncio.sleep(0.2)
    await exch.stop()
    stamps = np.asarray(res.pop("stamps"), np.int64)
    per_symbol = {s: stamps[i::len(symbols)] for i, s in enumerate(symbols)}
    lat = []
    for i, s in enumerate(symbols):
        trig = per_symbol[s][trigger_ticks(i, len(per_symbol[s]), every)]
        got = np.asarray(arrivals[s], np.int64)
        n = min(len(trig), len(got))
        lat.append(got[:n] - trig[:n])
    ms = np.concatenate(lat) / 1e6 if lat else np.zeros(0)
    metrics = json.loads((out / "metrics.json").read_text())["live"]
    orders_expected = sum(len(trigger_ticks(i, len(per_symbol[s]), every)) for i, s in enumerate(symbols))
    return {"rate_target": rate, "seconds": seconds, "symbols": len(symbols), "order_every": every,
            "publisher": res, "ticks_seen_by_strategy": metrics["ticks"], "lost": res["sent"] - metrics["ticks"],
            "orders_expected": orders_expected, "orders_at_exchange": sum(len(v) for v in arrivals.values()),
            "tick_to_order_ms": {"p50": round(float(np.percentile(ms, 50)), 3),
                                 "p99": round(float(np.percentile(ms, 99)), 3),
                                 "max": round(float(ms.max()), 3)} if len(ms) else None,
            "runner_tick_lag_ms": metrics.get("tick_lag_ms"),
            "runner_lag_p99_ms_by_second": metrics.get("tick_lag_p99_ms_by_second"),
            "cpu_s_children": round((cpu1.children_user + cpu1.children_system)
                                    - (cpu0.children_user + cpu0.children_system), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the 10k msg/s phase (issue: 60)")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--order-every", type=int, default=10, help="latency phase: ticks of a symbol per order")
    ap.add_argument("--phase", choices=("latency", "load", "all"), default="all")
    ap.add_argument("--keep", metavar="DIR", help="keep the processes' logs and state files here")
    a = ap.parse_args()
    from tradeloop.engine.telemetry.logs import configure
    from tradeloop.engine.live.paper import LocalMosquitto
    configure(level="warning")   # the exchange in this process must not spend its time rendering debug lines
    symbols = [f"S{i:03d}" for i in range(a.symbols)]
    out: dict = {"machine": f"{os.cpu_count()} cores", "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        broker = LocalMosquitto(Path(tmp))
        try:
            if a.phase in ("latency", "all"):
                d = Path(tmp) / "latency"
                d.mkdir(exist_ok=True)
                out["latency"] = asyncio.run(phase(d, broker.url, symbols, 1000.0, a.latency_seconds,
                                                      a.order_every))
            if a.phase in ("load", "all"):
                d = Path(tmp) / "load"
                d.mkdir(exist_ok=True)
                res = asyncio.run(phase(d, broker.url, symbols, 10000.0, a.seconds, 1000))
                by_s = res.get("runner_lag_p99_ms_by_second") or []
                if len(by_s) >= 6:
                    res["lag_growth_last3_vs_first3"] = round(float(np.mean(by_s[-3:]) / max(np.mean(by_s[:3]), 1e-9)), 2)
                out["load"] = res
        finally:
            broker.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
