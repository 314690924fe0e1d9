"""Replay publisher: stored bars -> MQTT topics, in (timestamp, symbol) order, then an end-of-stream marker.

Any file the loaders read (CSV/.txt/.gz, Parquet, freqtrade JSON) or any BarSeries is published
on ``md/<venue>/<symbol>/bar/<interval>`` with the v1 payload of :mod:`data.mqtt.wire`, as fast
as possible (``speed=None``) or paced at ``speed`` times real time (``speed=60``: one minute of
market time per second). At most ``max_inflight`` publishes are unacknowledged at once (aiomqtt
warns above 10). When done, ``md/<venue>/$eos`` carries ``{"v":1,"n":<published>,"ts":<last ts>}``
at QoS >= 1 so that a consumer knows the replay finished.

Command line (the CLI owner wires it as ``tradeloop replay``)::

    python -m data.replay --data ORCL=orcl-2014.txt --mqtt mqtt://127.0.0.1:1883 --speed 3600

Credentials come from ``TRADELOOP_MQTT_USERNAME`` / ``TRADELOOP_MQTT_PASSWORD``, never from arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiomqtt
import numpy as np
import structlog

from data.loaders import load_bars
from data.mqtt.conn import Broker, Credentials, TlsConfig, install_redaction
from data.mqtt.wire import bar_topic, encode_bar_values, encode_eos, eos_topic, interval_name
from data.schema import BarSeries

LOG = structlog.get_logger("tradeloop.replay")
DataInput = str | Path | BarSeries


@dataclass
class ReplayStats:
    """What a replay published and how fast."""

    published: int
    symbols: int
    seconds: float
    first_ts: int | None
    last_ts: int | None

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


class Publisher:
    """Publishes in order with at most ``max_inflight`` publishes awaiting their acknowledgement (or write, QoS 0)."""

    def __init__(self, client: aiomqtt.Client, *, qos: int = 0, max_inflight: int = 10) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.client, self.qos = client, qos
        self._gate = asyncio.Semaphore(max_inflight)
        self._pending: set[asyncio.Task] = set()
        self._failures: list[BaseException] = []
        self.sent = 0

    async def send(self, topic: str, payload: bytes) -> None:
        """Queue one publish; waits while ``max_inflight`` are outstanding; raises an earlier publish's error."""
        await self._gate.acquire()
        if self._failures:
            self._gate.release()
            raise self._failures[0]
        task = asyncio.get_running_loop().create_task(self._one(topic, payload))  # tasks start in creation order
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _one(self, topic: str, payload: bytes) -> None:
        try:
            await self.client.publish(topic, payload, qos=self.qos)
            self.sent += 1
        except Exception as e:  # noqa: BLE001  (raised by the next send() or drain())
            self._failures.append(e)
        finally:
            self._gate.release()

    async def drain(self) -> None:
        """Wait for every queued publish; raise the first failure."""
        if self._pending:
            await asyncio.gather(*list(self._pending))
        if self._failures:
            raise self._failures[0]


def load_inputs(data: Iterable[DataInput]) -> list[BarSeries]:
    """Paths (``PATH`` or ``SYMBOL=PATH``) and BarSeries -> BarSeries sorted by symbol; symbols must be unique."""
    out = []
    for item in data:
        if isinstance(item, BarSeries):
            out.append(item)
            continue
        text = str(item)
        symbol, sep, path = text.partition("=")
        out.append(load_bars(path, symbol) if sep and not Path(text).exists() else load_bars(text))
    names = [s.symbol for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two inputs have the same symbol: {sorted({n for n in names if names.count(n) > 1})}")
    return sorted(out, key=lambda s: s.symbol)


def merged_order(series: Sequence[BarSeries]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, series index, row index) of every bar, ordered by (timestamp, symbol); ``series`` sorted by symbol."""
    ts = np.concatenate([s.ts for s in series]) if series else np.zeros(0, np.int64)
    which = np.repeat(np.arange(len(series), dtype=np.int64), [len(s) for s in series])
    row = np.concatenate([np.arange(len(s), dtype=np.int64) for s in series]) if series else which
    order = np.lexsort((which, ts))
    return ts[order], which[order], row[order]


def infer_interval(s: BarSeries, default: str = "1d") -> str:
    """The series' bar interval name from its smallest spacing (``1d`` for daily bars over weekends, ``5m``...)."""
    if len(s) < 2:
        return default
    return interval_name(int(np.diff(s.ts).min()))


async def replay(data: Iterable[DataInput], url: str, *, speed: float | None = None, venue: str = "sim",
                 interval: str | None = None, qos: int = 0, max_inflight: int = 10, eos: bool = True,
                 tls: TlsConfig | None = None, credentials: Credentials | None = None,
                 client_id: str | None = None) -> ReplayStats:
    """Publish every bar of ``data`` to the broker at ``url``; returns what was published."""
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be > 0 (times real time) or None (as fast as possible), not {speed}")
    install_redaction()
    series = load_inputs(data)
    broker = Broker.from_url(url, tls=tls, credentials=credentials)
    topics = [bar_topic(venue, s.symbol, interval or infer_interval(s)) for s in series]
    cols = [(s.ts, s.open, s.high, s.low, s.close, s.volume) for s in series]
    ts_all, which, rows = merged_order(series)
    n = len(ts_all)
    LOG.info("replay.start", **broker.describe(), venue=venue, symbols=len(series), bars=n, speed=speed, qos=qos)
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    async with broker.client(identifier=client_id, max_inflight=max_inflight) as client:
        out = Publisher(client, qos=qos, max_inflight=max_inflight)
        start = loop.time()
        ts0 = int(ts_all[0]) if n else 0
        for k in range(n):
            i, r = int(which[k]), int(rows[k])
            t, o, h, lo, c, v = cols[i]
            if speed is not None:
                wait = start + (int(ts_all[k]) - ts0) / 1e9 / speed - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            await out.send(topics[i], encode_bar_values(int(t[r]), float(o[r]), float(h[r]), float(lo[r]),
                                                        float(c[r]), float(v[r])))
        await out.drain()
        last = int(ts_all[-1]) if n else None
        if eos:
            await client.publish(eos_topic(venue), encode_eos(n, last), qos=max(qos, 1))
    stats = ReplayStats(n, len(series), time.perf_counter() - t0, int(ts_all[0]) if n else None, last)
    LOG.info("replay.done", **asdict(stats), rate=round(stats.rate, 1))
    return stats


def parser() -> argparse.ArgumentParser:
    """Arguments of ``tradeloop replay``."""
    p = argparse.ArgumentParser(prog="tradeloop replay", description="Publish stored bars to MQTT topics "
                                "md/<venue>/<symbol>/bar/<interval>, then md/<venue>/$eos. Credentials: "
                                "TRADELOOP_MQTT_USERNAME / TRADELOOP_MQTT_PASSWORD in the environment.")
    p.add_argument("--data", nargs="+", required=True, metavar="[SYMBOL=]PATH", help="bar files the loaders read")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL, mqtt:// or mqtts://")
    p.add_argument("--speed", type=float, default=None, help="times real time (default: as fast as possible)")
    p.add_argument("--venue", default="sim", help="venue level of the topics (default sim)")
    p.add_argument("--interval", default=None, help="interval level of the topics (default: from the data, e.g. 1d)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=0)
    p.add_argument("--max-inflight", type=int, default=10, help="unacknowledged publishes at most (default 10)")
    p.add_argument("--no-eos", action="store_true", help="do not publish the end-of-stream marker")
    p.add_argument("--tls-ca", help="CA file to verify the broker (turns TLS on)")
    p.add_argument("--tls-cert", help="client certificate file")
    p.add_argument("--tls-key", help="client key file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``tradeloop replay``: publish, print the figures as JSON; 0 on success, 1 on failure."""
    args = parser().parse_args(argv)
    tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key) if (args.tls_ca or args.tls_cert) else None
    try:
        stats = asyncio.run(replay(args.data, args.mqtt, speed=args.speed, venue=args.venue, interval=args.interval,
                                   qos=args.qos, max_inflight=args.max_inflight, eos=not args.no_eos, tls=tls))
    except Exception as e:  # noqa: BLE001  (a command line reports, it does not trace back)
        print(f"replay failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps({**asdict(stats), "rate": round(stats.rate, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
