#!/usr/bin/env python3
"""MQTT market data under load: publish -> MqttFeed latency at 1,000 msg/s, then loss and lag at 10,000 msg/s.

A publisher process sends v1 bar payloads round-robin over 100 symbols at a fixed rate (paced
in 5 ms slices against the wall clock); each bar's ``ts`` is its send time (``time.time_ns()``),
so the consumer's latency is ``time.time_ns()`` at the moment MqttFeed yields the bar minus ``ts``.
Phase ``latency``: 1,000 msg/s for ``--latency-seconds``. Phase ``throughput``: 10,000 msg/s for
``--seconds`` (20 by default; the issue's figure is ``--seconds 60``): every message must arrive
(none dropped, none missing) and the lag must not grow (per-second p99 of the last seconds vs the
first ones). Starts its own Mosquitto on a free loopback port unless ``--mqtt`` names one.
Prints one JSON object.

Usage: python bench/mqtt_load.py [--seconds 60] [--latency-seconds 10] [--symbols 100] [--mqtt URL]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tradeloop.data.mqtt import MqttFeed, bar_topic, encode_bar_values, encode_eos, eos_topic
from tradeloop.data.mqtt.conn import MqttServer
from tradeloop.data.replay import Publisher

SLICE = 0.005  # publisher pacing slice, seconds


# ------------------------------------------------------------------------------------------ broker

def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A throwaway Mosquitto on a free loopback port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        sys.exit("mosquitto is not installed (Debian: apt-get install mosquitto); or pass --mqtt URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
             "max_queued_messages 0",  # 0 = no limit: a slow consumer must show as lag, not as broker drops
             "set_tcp_nodelay true"]  # else Nagle + delayed ACKs hold small messages for up to 40 ms
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(250):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"mqtt://127.0.0.1:{port}"
        time.sleep(0.02)
    proc.kill()
    sys.exit("mosquitto did not start")


# ------------------------------------------------------------------------------------------ publisher

async def publish(url: str, venue: str, symbols: list[str], rate: float, seconds: float) -> dict:
    """Send ``rate`` bars/s round-robin over ``symbols`` for ``seconds``, then the end marker."""
    topics = [bar_topic(venue, s, "1s") for s in symbols]
    broker = MqttServer.from_url(url)
    sent = 0
    total = int(rate * seconds)
    behind = 0.0
    cpu0 = time.process_time()
    async with broker.client(max_inflight=10) as client:
        out = Publisher(client, qos=0, max_inflight=10)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while sent < total:
            due = min(total, int((loop.time() - t0) * rate) + 1)
            while sent < due:
                ts = time.time_ns()
                await out.send(topics[sent % len(topics)], encode_bar_values(ts, 10.0, 10.5, 9.5, 10.0, 100.0))
                sent += 1
            behind = max(behind, (loop.time() - t0) - sent / rate)
            await asyncio.sleep(max(0.0, t0 + sent / rate + SLICE - loop.time()))
        await out.drain()
        elapsed = loop.time() - t0
        await client.publish(eos_topic(venue), encode_eos(sent, None), qos=1)
    return {"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed, 1),
            "max_behind_s": round(behind, 3), "cpu_s": round(time.process_time() - cpu0, 2)}


def _publisher_main(conn, url: str, venue: str, symbols: list[str], rate: float, seconds: float) -> None:
    """Process entry: publish, then report the figures through ``conn``."""
    conn.send(asyncio.run(publish(url, venue, symbols, rate, seconds)))
    conn.close()


# ------------------------------------------------------------------------------------------ consumer

async def phase(url: str, venue: str, symbols: list[str], rate: float, seconds: float) -> dict:
    """One load phase: consume through MqttFeed while a separate process publishes."""
    n_max = int(rate * seconds) + 10
    lat = np.zeros(n_max, np.int64)
    arrive = np.zeros(n_max, np.float64)
    got = 0
    async with MqttFeed(url, symbols, venue=venue, interval="1s") as feed:
        await feed.wait_ready()
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_publisher_main, args=(child, url, venue, symbols, rate, seconds))
        proc.start()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        clock = time.time_ns
        async with asyncio.timeout(seconds * 3 + 30):
            async for bar in feed:
                now = clock()
                if got < n_max:
                    lat[got] = now - bar.ts
                    arrive[got] = time.perf_counter() - t0
                got += 1
        cpu = time.process_time() - cpu0
        pub = await asyncio.to_thread(parent.recv)
        proc.join(10)
        stats = feed.stats.as_dict()
    ms = lat[:got] / 1e6
    out = {"rate_target": rate, "symbols": len(symbols), "seconds": seconds, "publisher": pub, "received": got,
           "lost": pub["sent"] - got, "dropped": stats["dropped"], "reconnects": stats["connects"] - 1,
           "consumer_cpu_s": round(cpu, 2), "consumer_cpu_us_per_msg": round(cpu / max(got, 1) * 1e6, 1),
           "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    if got:
        out.update({"latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3),
                                   "p99": round(float(np.percentile(ms, 99)), 3),
                                   "max": round(float(ms.max()), 3)}})
        sec = arrive[:got].astype(np.int64)
        per_s = [float(np.percentile(ms[sec == s], 99)) for s in range(int(sec.max()) + 1) if (sec == s).any()]
        k = max(1, min(5, len(per_s) // 4))
        first, last = float(np.median(per_s[:k])), float(np.median(per_s[-k:]))
        slope = float(np.polyfit(np.arange(len(per_s)), per_s, 1)[0]) if len(per_s) > 2 else 0.0
        out["p99_per_second_ms"] = [round(x, 2) for x in per_s]
        out["lag"] = {"p99_first_s_ms": round(first, 3), "p99_last_s_ms": round(last, 3),
                      "p99_slope_ms_per_s": round(slope, 4),
                      "growing": bool(last > max(3 * first, first + 20.0))}
    return out


async def main_async(args: argparse.Namespace, url: str) -> dict:
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    load0 = os.getloadavg()[0]  # other work on the machine shows up as latency: record how busy it was
    latency = await phase(url, "bench1k", symbols, args.latency_rate, args.latency_seconds)
    load = await phase(url, "bench10k", symbols, args.rate, args.seconds)
    ok = load["lost"] == 0 and not load["dropped"] and not load.get("lag", {}).get("growing", True)
    return {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_1m_before": round(load0, 2)}, "broker": url,
            "latency": latency, "throughput": load, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of the 10k msg/s phase (default 20)")
    p.add_argument("--rate", type=float, default=10_000.0, help="messages/s of the throughput phase")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="length of the 1k msg/s phase (default 10)")
    p.add_argument("--latency-rate", type=float, default=1_000.0, help="messages/s of the latency phase")
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--mqtt", default=None, help="use this broker instead of starting one")
    args = p.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.mqtt:
            url = args.mqtt
        else:
            proc, url = start_mosquitto(Path(tmp))
        try:
            import structlog
            import logging
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
            result = asyncio.run(main_async(args, url))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(5)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
