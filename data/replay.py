"""Replay publisher: stored bars -> MQTT topics in (timestamp, symbol) order, clock marks, an end-of-stream marker.

Any file the loaders read (CSV/.txt/.gz, Parquet, freqtrade JSON) or any BarSeries is published
on ``md/<venue>/<symbol>/bar/<interval>`` with the v1 payload of :mod:`tradeloop.data.mqtt.wire`, as fast
as possible (``speed=None``) or paced at ``speed`` times real time (``speed=60``: one minute of
market time per second). At most ``max_inflight`` publishes are unacknowledged at once (aiomqtt
warns above 10). When done, ``md/<venue>/$eos`` carries ``{"v":1,"n":<published>,"ts":<last ts>}``
at QoS >= 1 so that a consumer knows the replay finished.

After each timestamp group (every bar sharing one ts) ``md/<venue>/$clock`` carries
``{"v":1,"ts":<that ts>}``: the group is complete, a consumer need not wait for the next one.
Lockstep (``lockstep=["exchange", "runner"]``, ``--lockstep exchange,runner``): after a group and its
clock, wait until every named component has published ``md/<venue>/$ack/<name>`` with ts >= the
group's ts before the next group; no ack within ``lockstep_timeout`` seconds fails the replay
(:class:`LockstepTimeout`, exit 1) naming the component and the ts. Lockstep publishes at QoS >= 1,
and combines with ``speed`` (a group goes out at its paced time or on the last ack, whichever is later).

Ticks (``ticks=[TickSeries or "SYMBOL=PATH"]``, ``--ticks SYMBOL=PATH``: any file
:func:`tradeloop.data.ticks.load_ticks` reads) go out on ``md/<venue>/<symbol>/tick`` with the tick
payload, merged with the bars into one timeline in the tick backtest's order (timestamp, bars before
ticks, the tick's place in its file, symbol); a timestamp group is every bar and tick sharing one ts,
so lockstep works for ticks as for bars (one ``$clock`` per distinct timestamp). A tick without a
trade price (a quote-only file) cannot travel (the wire's ``p`` is required): such a file is refused.

Command line (the CLI owner wires it as ``tradeloop replay``)::

    python -m tradeloop.data.replay --data ORCL=orcl-2014.txt --mqtt mqtt://127.0.0.1:1883 --speed 3600
    python -m tradeloop.data.replay --data ORCL=orcl-2014.txt --lockstep exchange,runner --lockstep-timeout 30
    python -m tradeloop.data.replay --ticks RM705=RM705-2017-03-20.csv --lockstep exchange,runner

Credentials come from ``TRADELOOP_MQTT_USERNAME`` / ``TRADELOOP_MQTT_PASSWORD``, never from arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import contextlib
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiomqtt
import numpy as np
import structlog

from tradeloop.data.errors import DataError
from tradeloop.data.loaders import load_bars
from tradeloop.data.mqtt.conn import MqttServer, Credentials, TlsConfig, install_redaction
from tradeloop.data.mqtt.wire import (PayloadError, ack_topic, bar_topic, clock_topic, decode_mark, encode_bar_values,
                            encode_eos, encode_mark, encode_tick_values, eos_topic, interval_name, tick_topic)
from tradeloop.data.schema import BarSeries, TickSeries

LOG = structlog.get_logger("tradeloop.replay")
DataInput = str | Path | BarSeries
TickInput = str | Path | TickSeries


class LockstepTimeout(RuntimeError):
    """A lockstep component did not acknowledge a timestamp group in time."""

    def __init__(self, component: str, ts: int, timeout: float, last: int | None) -> None:
        seen = "no ack yet" if last is None else f"its last ack was ts {last}"
        super().__init__(f"lockstep: component {component!r} did not ack ts {ts} within {timeout:g} s ({seen}); "
                         f"is it running and subscribed to the venue's $clock?")
        self.component, self.ts, self.timeout, self.last = component, ts, timeout, last


class Acks:
    """The latest ``$ack`` ts of each lockstep component, read from a client's messages."""

    def __init__(self, venue: str, components: Sequence[str]) -> None:
        self.topics = {ack_topic(venue, c): c for c in components}
        self.last: dict[str, int] = {}
        self.lost: aiomqtt.MqttError | None = None  # the connection went away while reading
        self._changed = asyncio.Condition()

    async def read(self, client: aiomqtt.Client) -> None:
        """Record acks from the client's messages until the connection ends (malformed ones: logged, ignored)."""
        try:
            await self._read(client)
        except aiomqtt.MqttError as e:
            self.lost = e
            async with self._changed:
                self._changed.notify_all()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            component = self.topics.get(m.topic.value)
            if component is None:
                continue
            try:
                ts = decode_mark(m.payload if isinstance(m.payload, bytes) else str(m.payload).encode())
            except PayloadError as e:
                LOG.warning("replay.bad_ack", topic=m.topic.value, reason=e.reason, detail=e.detail)
                continue
            self.last[component] = max(ts, self.last.get(component, ts))
            async with self._changed:
                self._changed.notify_all()

    def missing(self, ts: int) -> list[str]:
        """Components whose latest ack is below ``ts``."""
        return [c for c in self.topics.values() if self.last.get(c, ts - 1) < ts]

    async def wait(self, ts: int, timeout: float) -> None:
        """Until every component has acked ``ts`` or later; :class:`LockstepTimeout` names the first that has not."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: self.lost is not None or not self.missing(ts))
        except TimeoutError:
            late = self.missing(ts)
            if not late:
                return
            raise LockstepTimeout(late[0], ts, timeout, self.last.get(late[0])) from None
        if self.lost is not None and self.missing(ts):
            raise RuntimeError(f"lockstep: lost the broker connection while waiting for acks of ts {ts}: "
                               f"{self.lost}") from self.lost


@dataclass
class ReplayStats:
    """What a replay published and how fast."""

    published: int
    symbols: int
    clocks: int
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
    """Paths (``PATH`` or ``SYMBOL=PATH``) and BarSeries -> BarSeries sorted by symbol; symbols must be unique.

    A file that cannot be used (missing, a directory, FIFO or device, damaged, bad bars) is a
    DataError naming it, raised before anything is published.
    """
    out = []
    for item in data:
        if isinstance(item, BarSeries):
            out.append(item)
            continue
        text = str(item)
        symbol, sep, path = text.partition("=")
        if sep and not Path(text).exists() and not symbol:
            raise DataError(text, 0, "symbol", "empty symbol before '=' (give SYMBOL=PATH or PATH)")
        out.append(load_bars(path, symbol) if sep and not Path(text).exists() else load_bars(text))
    names = [s.symbol for s in out]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(next(s.source or s.symbol for s in out if s.symbol == twice[0]), 0, "symbol",
                        f"two inputs have the same symbol: {twice}")
    return sorted(out, key=lambda s: s.symbol)


def load_tick_inputs(ticks: Iterable[TickInput]) -> list[TickSeries]:
    """Tick files (``PATH`` or ``SYMBOL=PATH``, read by :func:`tradeloop.data.ticks.load_ticks`) and
    TickSeries -> TickSeries sorted by symbol; symbols unique, every tick with a trade price (DataError)."""
    from tradeloop.data.ticks import load_ticks
    out = []
    for item in ticks:
        if isinstance(item, TickSeries):
            out.append(item)
            continue
        text = str(item)
        symbol, sep, path = text.partition("=")
        if sep and not Path(text).exists():
            if not symbol:
                raise DataError(text, 0, "symbol", "empty symbol before '=' (give SYMBOL=PATH or PATH)")
            out.append(load_ticks(path, symbol))
        else:
            out.append(load_ticks(text))
    for t in out:
        bad = np.flatnonzero(~(t.price > 0))
        if len(bad):
            raise DataError(t.source or t.symbol, int(bad[0]), "price",
                            f"{len(bad)} tick(s) without a trade price: the tick payload needs one")
    names = [t.symbol for t in out]
    if len(set(names)) != len(names):
        raise DataError(out[0].source or names[0], 0, "symbol", f"two tick inputs have the same symbol: {names}")
    return sorted(out, key=lambda t: t.symbol)


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
                 client_id: str | None = None, lockstep: Sequence[str] = (),
                 lockstep_timeout: float = 60.0, ticks: Iterable[TickInput] = ()) -> ReplayStats:
    """Publish every bar of ``data`` and every tick of ``ticks`` to ``url``, a clock mark after each timestamp
    group; returns what was published."""
    if speed is not None and speed <= 0:
        raise ValueError(f"speed must be > 0 (times real time) or None (as fast as possible), not {speed}")
    if lockstep_timeout <= 0:
        raise ValueError(f"lockstep_timeout must be > 0 seconds, not {lockstep_timeout}")
    acks = Acks(venue, list(dict.fromkeys(lockstep))) if lockstep else None  # checks the component names
    if acks is not None:
        qos = max(qos, 1)
    install_redaction()
    series = load_inputs(data)
    tick_series = load_tick_inputs(ticks)
    broker = MqttServer.from_url(url, tls=tls, credentials=credentials)
    topics = [bar_topic(venue, s.symbol, interval or infer_interval(s)) for s in series]
    # a series with an amount column publishes v2 bars (with ``amt``), one without it v1
    cols = [(s.ts, s.open, s.high, s.low, s.close, s.volume, s.extra.get("amount")) for s in series]
    ts_all, which, rows = merged_order(series)
    if tick_series:   # one timeline, the tick backtest's order: ts, bars before ticks, seq, symbol
        nb = len(series)
        topics += [tick_topic(venue, t.symbol) for t in tick_series]
        cols += [(t.ts, t.price, t.size, t.bid, t.ask, t.bid_size, t.ask_size) for t in tick_series]
        t_ts = np.concatenate([ts_all, *[t.ts for t in tick_series]])
        t_kind = np.concatenate([np.zeros(len(ts_all), np.int8), *[np.ones(len(t), np.int8) for t in tick_series]])
        t_seq = np.concatenate([np.zeros(len(ts_all), np.int64), *[t.seq for t in tick_series]])
        t_which = np.concatenate([which, *[np.full(len(t), nb + j, np.int64) for j, t in enumerate(tick_series)]])
        t_rows = np.concatenate([rows, *[np.arange(len(t), dtype=np.int64) for t in tick_series]])
        order = np.lexsort((t_which, t_seq, t_kind, t_ts))
        ts_all, which, rows = t_ts[order], t_which[order], t_rows[order]
    n_bars = len(series)
    n = len(ts_all)
    group_end = np.zeros(n, dtype=bool)  # the last bar of each timestamp group
    if n:
        group_end[np.flatnonzero(np.diff(ts_all) != 0)] = True
        group_end[-1] = True
    clock = clock_topic(venue)
    LOG.info("replay.start", **broker.describe(), venue=venue, symbols=len(series) + len(tick_series), events=n,
             ticks=sum(len(t) for t in tick_series), speed=speed, qos=qos,
             lockstep=list(lockstep))
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    clocks = 0
    async with broker.client(identifier=client_id, max_inflight=max_inflight) as client:
        reader = None
        if acks is not None:
            await client.subscribe([(topic, 1) for topic in acks.topics])
            reader = loop.create_task(acks.read(client), name="replay-acks")
        try:
            out = Publisher(client, qos=qos, max_inflight=max_inflight)
            start = loop.time()
            ts0 = int(ts_all[0]) if n else 0
            for k in range(n):
                i, r = int(which[k]), int(rows[k])
                t, o, h, lo, c, v, a = cols[i]
                ts = int(ts_all[k])
                if speed is not None:
                    wait = start + (ts - ts0) / 1e9 / speed - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                if i >= n_bars:   # a tick: (ts, price, size, bid, ask, bid_size, ask_size)
                    await out.send(topics[i], encode_tick_values(int(t[r]), float(o[r]), float(h[r]), float(lo[r]),
                                                                 float(c[r]), float(v[r]), float(a[r])))
                else:
                    await out.send(topics[i], encode_bar_values(int(t[r]), float(o[r]), float(h[r]), float(lo[r]),
                                                                float(c[r]), float(v[r]),
                                                                float(a[r]) if a is not None else None))
                if group_end[k]:
                    await out.send(clock, encode_mark(ts))
                    clocks += 1
                    if acks is not None:
                        await acks.wait(ts, lockstep_timeout)
            await out.drain()
            last = int(ts_all[-1]) if n else None
            if eos:
                await client.publish(eos_topic(venue), encode_eos(n, last), qos=max(qos, 1))
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader
    stats = ReplayStats(n, len(series) + len(tick_series), clocks, time.perf_counter() - t0, int(ts_all[0]) if n else None, last)
    LOG.info("replay.done", **asdict(stats), rate=round(stats.rate, 1))
    return stats


def parser() -> argparse.ArgumentParser:
    """Arguments of ``tradeloop replay``."""
    p = argparse.ArgumentParser(prog="tradeloop replay", description="Publish stored bars to MQTT topics "
                                "md/<venue>/<symbol>/bar/<interval>, md/<venue>/$clock after each timestamp group, "
                                "then md/<venue>/$eos. Credentials: "
                                "TRADELOOP_MQTT_USERNAME / TRADELOOP_MQTT_PASSWORD in the environment.")
    p.add_argument("--data", nargs="+", default=[], metavar="[SYMBOL=]PATH", help="bar files the loaders read")
    p.add_argument("--ticks", nargs="+", default=[], metavar="[SYMBOL=]PATH",
                   help="tick files load_ticks reads (vn.py, backtrader, ...), published on md/<venue>/<symbol>/tick")
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
    p.add_argument("--lockstep", type=_names, default=(), metavar="NAME[,NAME...]",
                   help="after each timestamp group, wait for md/<venue>/$ack/<NAME> from each component "
                        "(e.g. exchange,runner) before the next; publishes at QoS >= 1")
    p.add_argument("--lockstep-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for a component's ack before failing (default 60)")
    return p


def _names(text: str) -> list[str]:
    """``exchange,runner`` -> the component names, each usable as a topic level."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one component, e.g. --lockstep exchange")
    for name in names:
        try:
            ack_topic("sim", name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """``tradeloop replay``: publish, print the figures as JSON; 0 on success, 2 on a bad input file, 1 on failure."""
    args = parser().parse_args(argv)
    if not args.data and not args.ticks:
        parser().error("give --data and/or --ticks")
    tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key) if (args.tls_ca or args.tls_cert) else None
    try:  # every file read and checked before the broker is contacted
        data = load_inputs(args.data)
        ticks = load_tick_inputs(args.ticks)
    except DataError as e:
        print(f"tradeloop replay: error: {e}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(replay(data, args.mqtt, speed=args.speed, venue=args.venue, interval=args.interval,
                                   qos=args.qos, max_inflight=args.max_inflight, eos=not args.no_eos, tls=tls,
                                   lockstep=args.lockstep, lockstep_timeout=args.lockstep_timeout, ticks=ticks))
    except Exception as e:  # noqa: BLE001  (a command line reports, it does not trace back)
        print(f"replay failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps({**asdict(stats), "rate": round(stats.rate, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
