"""MqttFeed: an async iterator of Bar/Tick events from per-symbol MQTT topics (see data.mqtt.wire).

::

    async with MqttFeed("mqtt://127.0.0.1:1883", ["ORCL"], venue="sim", interval="1d",
                        stale_after=30, on_stale=risk.halt, on_fresh=risk.resume) as feed:
        await LiveDriver(strategy, ["ORCL"]).run(feed)

- Events come out in arrival order. Malformed messages (see the wire schema), messages whose
  ts does not advance for their symbol, and bars/ticks stamped further ahead of this machine's
  clock than ``future`` allows (:class:`tradeloop.data.mqtt.skew.FutureSkew`: ticks 5 s, bars one
  interval by default; reason ``future``) are dropped: counted in ``feed.stats.dropped[reason]`` and
  logged (``mqtt.drop``, rate-limited per reason), never raised.
- When the broker goes away the feed reconnects with exponential backoff (with jitter) and
  subscribes again; ``feed.stats.connects`` counts the connections. Bad credentials on the very
  first connection raise :class:`MqttFeedError` (fail fast at start-up); later they are retried.
- With ``stale_after`` set, a symbol without a valid message for that many seconds inside the
  ``session`` window is stale: ``on_stale(symbol)`` is called once, ``feed.stale`` holds it, and
  with ``status_events=True`` a :class:`FeedStatus` is also yielded; its next message calls
  ``on_fresh(symbol)``.
- Latency: clients set TCP_NODELAY; give the broker ``set_tcp_nodelay true`` too (mosquitto.conf),
  or Nagle's algorithm with delayed ACKs holds messages up to 40 ms at high rates (p99 2.7 ms -> 40 ms
  at 10k msg/s in bench/mqtt_load.py).
- Lockstep (see :mod:`tradeloop.data.mqtt.wire`): with ``clock=True`` the venue's ``$clock`` marks come out
  as :class:`ClockMark` events, and with ``acks=["exchange", ...]`` those components' ``$ack`` marks as
  :class:`Ack` events, in arrival order among the bars (one queue). :meth:`publish` / :meth:`ack`
  send on the feed's own connection (waiting through a reconnect), so an ack follows the data it
  acknowledges.
- Iteration ends at the end-of-stream marker (``md/<venue>/$eos``, unless ``stop_on_eos=False``)
  or at :meth:`aclose`. Use ``async with`` so the connection is closed when the block exits.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
import msgspec
import structlog

from tradeloop.data.schema import Bar, Tick

from tradeloop.data.mqtt.conn import MqttServer, Credentials, TlsConfig, install_redaction
from tradeloop.data.mqtt.hours import TradingHours, Staleness
from tradeloop.data.mqtt.skew import FutureSkew
from tradeloop.data.mqtt.wire import (PayloadError, ack_topic, bar_topic, clock_topic, decode_bar, decode_eos, decode_mark, decode_tick,
                   encode_mark, eos_topic, escape, parse_topic)

LOG = structlog.get_logger("tradeloop.mqtt")
_END = object()
_AUTH_CODES = {4, 5, 134, 135}  # MQTT 3.1.1 / 5 CONNACK: bad user name or password, not authorised
LOG_BURST = 20                  # drop lines per reason per LOG_WINDOW seconds before they are summarised
LOG_WINDOW = 10.0
SUBSCRIBE_CHUNK = 100


class MqttFeedError(RuntimeError):
    """The feed cannot go on (e.g. the broker refused the credentials at start-up)."""


class FeedStatus(msgspec.Struct, frozen=True):
    """A symbol went stale or fresh (yielded only with ``status_events=True``)."""

    kind: Literal["stale", "fresh"]
    symbol: str
    at: float


class ClockMark(msgspec.Struct, frozen=True):
    """The publisher has published every bar with ts <= ``ts`` (a ``$clock`` mark; ``clock=True``)."""

    ts: int


class Ack(msgspec.Struct, frozen=True):
    """``component`` has finished with everything up to ``ts`` (an ``$ack/<component>`` mark; ``acks=[...]``)."""

    component: str
    ts: int


@dataclass
class FeedStats:
    """Counters of one feed: messages in, events out, drops by reason, connections, staleness."""

    received: int = 0
    delivered: int = 0
    dropped: Counter = field(default_factory=Counter)
    connects: int = 0
    disconnects: int = 0
    stale_events: int = 0
    fresh_events: int = 0
    eos: int = 0

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"received": self.received, "delivered": self.delivered, "dropped": dict(self.dropped),
                "connects": self.connects, "disconnects": self.disconnects, "stale_events": self.stale_events,
                "fresh_events": self.fresh_events, "eos": self.eos}


class _DropLog:
    """Per-reason log budget, so a flood of bad messages cannot flood the log."""

    def __init__(self) -> None:
        self.window: dict[str, tuple[float, int, int]] = {}  # reason -> (window start, logged, suppressed)

    def __call__(self, reason: str, topic: str, detail: str, payload: bytes) -> None:
        now = time.monotonic()
        start, logged, suppressed = self.window.get(reason, (now, 0, 0))
        if now - start >= LOG_WINDOW:
            start, logged = now, 0
        if logged >= LOG_BURST:
            self.window[reason] = (start, logged, suppressed + 1)
            return
        LOG.warning("mqtt.drop", reason=reason, topic=topic, detail=detail[:200], payload=payload[:120],
                    suppressed_before=suppressed)
        self.window[reason] = (start, logged + 1, 0)


class MqttFeed:
    """Bars (and/or ticks) of ``symbols`` (None: every symbol of the venue) from an MQTT broker as an async iterator.

    ``now`` is the wall clock of the staleness checks; ``clock`` and ``acks`` add lockstep marks.
    """

    def __init__(self, url: str, symbols: Iterable[str] | None, *, venue: str = "sim", interval: str = "1d",
                 bars: bool = True, ticks: bool = False, qos: int = 0, stale_after: float | None = None,
                 session: TradingHours | None = None, on_stale: Callable[[str], Any] | None = None,
                 on_fresh: Callable[[str], Any] | None = None, status_events: bool = False,
                 stop_on_eos: bool = True, tls: TlsConfig | None = None, credentials: Credentials | None = None,
                 client_id: str | None = None, keepalive: int = 10, backoff: tuple[float, float] = (0.05, 5.0),
                 now: Callable[[], float] = time.time, clock: bool = False, acks: Iterable[str] = (),
                 future: FutureSkew | None = None) -> None:
        if not (bars or ticks):
            raise ValueError("subscribe to bars, ticks or both")
        self.broker = MqttServer.from_url(url, tls=tls, credentials=credentials)
        self.symbols = sorted(set(symbols)) if symbols is not None else None
        self._wanted = frozenset(self.symbols) if self.symbols is not None else None
        if self.broker.tls is not None:
            self.broker.tls.context()  # a missing or bad CA/cert file fails here, not in the background
        self.venue, self.interval, self.qos = venue, interval, qos
        self.future = future or FutureSkew()
        # a bar or tick stamped further ahead than this is dropped ("future"): one bad stamp (year 2100)
        # would otherwise become the symbol's last timestamp and every real bar after it would be dropped
        self._lead_ns = {"bar": self.future.bar_ns(interval), "tick": self.future.tick_ns()}
        self.clock_events = clock
        self.acks = tuple(dict.fromkeys(acks))
        self._ack_names = frozenset(self.acks)
        self.topics = self._topics(bars, ticks)
        self.stats = FeedStats()
        self.staleness = Staleness(stale_after, session) if stale_after else None
        self._on_stale, self._on_fresh = on_stale, on_fresh
        self.status_events, self.stop_on_eos = status_events, stop_on_eos
        self.client_id, self.keepalive, self.backoff, self.now = client_id, keepalive, backoff, now
        self._last_bar: dict[str, int] = {}
        self._last_tick: dict[str, int] = {}
        self._routes: dict[str, tuple[str, str]] = {}
        self._drop_log = _DropLog()
        self._queue: asyncio.Queue | None = None
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task] = []
        self._ready: asyncio.Event | None = None
        self._closed = False
        self._hook_tasks: set[asyncio.Future] = set()

    def _topics(self, bars: bool, ticks: bool) -> list[str]:
        """Subscriptions: bar and/or tick topics per symbol (``+``: every symbol), the EOS marker, marks asked for."""
        levels = ["+"] if self.symbols is None else [escape(s) for s in self.symbols]
        out = []
        if bars:
            bar_topic(self.venue, "x", self.interval)  # checks venue and interval
            out += [f"md/{self.venue}/{lv}/bar/{self.interval}" for lv in levels]
        if ticks:
            out += [f"md/{self.venue}/{lv}/tick" for lv in levels]
        out.append(eos_topic(self.venue))
        if self.clock_events:
            out.append(clock_topic(self.venue))
        return out + [ack_topic(self.venue, name) for name in self.acks]

    # ----------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> MqttFeed:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> MqttFeed:
        return self

    async def __anext__(self) -> Bar | Tick | FeedStatus | ClockMark | Ack:
        if self._queue is None:
            self.start()
        assert self._queue is not None
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            await self.aclose()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    def start(self) -> None:
        """Connect and subscribe in the background (called by ``async with`` or the first ``__anext__``)."""
        if self._queue is not None:
            return
        install_redaction()
        self._queue = asyncio.Queue()
        self._ready = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._connection(), name="mqtt-feed"))
        if self.staleness is not None:
            self.staleness.watch(self.symbols or [], self.now())
            self._tasks.append(asyncio.create_task(self._watchdog(), name="mqtt-feed-stale"))

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the feed is connected and subscribed (publish after this, or messages may be missed)."""
        if self._ready is None:
            self.start()
        assert self._ready is not None
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    @property
    def ready(self) -> bool:
        """Connected and subscribed right now."""
        return self._ready is not None and self._ready.is_set()

    @property
    def stale(self) -> set[str]:
        """Symbols stale right now."""
        return set(self.staleness.stale) if self.staleness else set()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout: float = 10.0) -> None:
        """Publish on this feed's connection, waiting for it (through reconnects) up to ``timeout`` seconds."""
        if self._ready is None:
            self.start()
        assert self._ready is not None
        async with asyncio.timeout(timeout):
            while True:
                await self._ready.wait()
                client = self._client
                if client is None:  # between a drop and the next connection
                    await asyncio.sleep(0.01)
                    continue
                try:
                    await client.publish(topic, payload, qos=qos)
                    return
                except aiomqtt.MqttError as e:
                    if self._closed:
                        raise MqttFeedError(f"feed closed while publishing to {topic}") from e
                    LOG.warning("mqtt.publish_retry", topic=topic, error=str(e))
                    await asyncio.sleep(self.backoff[0])

    async def ack(self, component: str, ts: int, *, timeout: float = 10.0) -> None:
        """Publish ``$ack/<component>`` with ``ts`` (QoS 1): ``component`` has finished with everything up to ``ts``."""
        await self.publish(ack_topic(self.venue, component), encode_mark(ts), qos=1, timeout=timeout)

    async def aclose(self) -> None:
        """Disconnect, stop the background tasks and end the iteration."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        for t in self._tasks:
            if t is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._queue is not None:
            self._queue.put_nowait(_END)
        LOG.info("mqtt.feed_closed", **self.stats.as_dict())

    # ----------------------------------------------------------------------------- connection

    async def _connection(self) -> None:
        """Run the connection loop; anything it cannot handle ends the iteration with that error."""
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001  (handed to the consumer, not lost in a background task)
            LOG.error("mqtt.feed_failed", error=repr(e))
            self._put(e)

    async def _connect_loop(self) -> None:
        """Connect, subscribe, read; on loss wait (backoff) and do it again, until closed."""
        lo, hi = self.backoff
        delay = lo
        where = self.broker.describe()
        while True:
            connected = False
            try:
                async with self.broker.client(identifier=self.client_id, keepalive=self.keepalive,
                                              queue_type=self._sink_type()) as client:
                    connected = True
                    self.stats.connects += 1
                    for i in range(0, len(self.topics), SUBSCRIBE_CHUNK):
                        await client.subscribe([(t, self.qos) for t in self.topics[i:i + SUBSCRIBE_CHUNK]])
                    assert self._ready is not None
                    self._client = client
                    self._ready.set()
                    delay = lo
                    LOG.info("mqtt.subscribed", **where, topics=len(self.topics), connects=self.stats.connects)
                    async for _ in client.messages:  # only the end marker comes out: the sink handles the rest
                        return
            except aiomqtt.MqttError as e:
                rc = getattr(getattr(e, "rc", None), "value", getattr(e, "rc", None))
                if self.stats.connects == 0 and rc in _AUTH_CODES:
                    err = MqttFeedError(f"broker {self.broker.host}:{self.broker.port} refused the connection: {e}")
                    LOG.error("mqtt.auth_failed", **where, error=str(e))
                    self._put(err)
                    return
                if connected:
                    self.stats.disconnects += 1
                    LOG.warning("mqtt.disconnected", **where, error=str(e), retry_in=round(delay, 3))
                else:
                    LOG.warning("mqtt.connect_failed", **where, error=str(e), retry_in=round(delay, 3))
            finally:
                self._client = None
                if self._ready is not None:
                    self._ready.clear()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, hi)

    def _sink_type(self) -> type[asyncio.Queue]:
        """aiomqtt's incoming queue, replaced by one that handles each message as paho delivers it.

        aiomqtt calls ``put_nowait`` from its message callback (on the event loop thread) and its
        ``messages`` iterator pays a task and an ``asyncio.wait`` per message; handling messages
        here cuts the feed's CPU per message by a third (34 -> 21 us on the bench machine). Only the end of the stream is queued, which ends
        the ``messages`` iteration of the connection loop; a disconnect still raises there.
        """
        handle = self._handle

        class Sink(asyncio.Queue):
            def put_nowait(self, message: aiomqtt.Message) -> None:
                try:
                    end = handle(message.topic.value, message.payload)
                except Exception as e:  # noqa: BLE001  (one message must never stop the feed)
                    LOG.error("mqtt.handler_failed", topic=message.topic.value, error=repr(e))
                    return
                if end:
                    super().put_nowait(message)

        return Sink

    def _put(self, item: object) -> None:
        assert self._queue is not None
        self._queue.put_nowait(item)

    def _route(self, topic: str) -> tuple[str, str] | None:
        """(kind, symbol) of a subscribed topic, cached; None for a topic this feed does not take."""
        got = parse_topic(topic)
        if got is None or got[0] != self.venue:
            return None
        _, symbol, kind, interval = got
        if kind == "bar" and interval != self.interval:
            return None
        if (kind == "clock" and not self.clock_events) or (kind == "ack" and symbol not in self._ack_names):
            return None
        if kind in ("bar", "tick") and self._wanted is not None and symbol not in self._wanted:
            return None
        if len(self._routes) < 100_000:
            self._routes[topic] = (kind, symbol)
        return kind, symbol

    def _handle(self, topic: str, payload: Any) -> bool:
        """Decode, check and queue one message; True at the end of the stream."""
        self.stats.received += 1
        route = self._routes.get(topic) or self._route(topic)
        if not isinstance(payload, (bytes, bytearray)):
            payload = b"" if payload is None else str(payload).encode()
        if route is None:
            self._drop("topic", topic, "not a subscribed market data topic", payload)
            return False
        kind, symbol = route
        try:
            if kind == "clock" or kind == "ack":
                ts = decode_mark(payload)
                self.stats.delivered += 1
                self._put(ClockMark(ts) if kind == "clock" else Ack(symbol, ts))
                return False
            if kind == "bar" or kind == "tick":
                event: Bar | Tick = decode_bar(symbol, payload) if kind == "bar" else decode_tick(symbol, payload)
                lead = event.ts - time.time_ns()
                if lead > self._lead_ns[kind]:
                    self._drop("future", topic, f"ts {event.ts} is {lead / 1e9:.3f} s ahead of this clock "
                                                f"(at most {self._lead_ns[kind] / 1e9:g} s allowed)", payload)
                    return False
            if kind == "bar":
                last = self._last_bar.get(symbol)
                if last is not None and event.ts <= last:
                    self._drop("duplicate" if event.ts == last else "out_of_order", topic,
                               f"ts {event.ts} after {last}", payload)
                    return False
                self._last_bar[symbol] = event.ts
            elif kind == "tick":
                last = self._last_tick.get(symbol)
                if last is not None and event.ts < last:
                    self._drop("out_of_order", topic, f"ts {event.ts} after {last}", payload)
                    return False
                self._last_tick[symbol] = event.ts
            else:
                eos = decode_eos(payload)
                self.stats.eos += 1
                LOG.info("mqtt.eos", topic=topic, published=eos.n, last_ts=eos.ts, **self.stats.as_dict())
                if self.stop_on_eos:
                    self._put(_END)
                    return True
                return False
        except PayloadError as e:
            self._drop(e.reason, topic, e.detail, payload)
            return False
        st = self.staleness
        if st is not None and st.seen(symbol, self.now()):
            self._fresh(symbol)
        self.stats.delivered += 1
        self._put(event)
        return False

    def _drop(self, reason: str, topic: str, detail: str, payload: bytes) -> None:
        self.stats.dropped[reason] += 1
        self._drop_log(reason, topic, detail, bytes(payload))

    # ----------------------------------------------------------------------------- staleness

    async def _watchdog(self) -> None:
        """Check staleness a few times per ``stale_after``."""
        st = self.staleness
        assert st is not None
        period = min(st.stale_after / 4, 1.0)
        while True:
            await asyncio.sleep(period)
            for symbol in st.check(self.now()):
                self._stale(symbol)

    def _stale(self, symbol: str) -> None:
        self.stats.stale_events += 1
        LOG.warning("mqtt.stale", symbol=symbol, stale_after=self.staleness.stale_after if self.staleness else None)
        self.on_stale(symbol)
        if self.status_events:
            self._put(FeedStatus("stale", symbol, self.now()))

    def _fresh(self, symbol: str) -> None:
        self.stats.fresh_events += 1
        LOG.info("mqtt.fresh", symbol=symbol)
        self.on_fresh(symbol)
        if self.status_events:
            self._put(FeedStatus("fresh", symbol, self.now()))

    def on_stale(self, symbol: str) -> None:
        """Hook: ``symbol`` has had no data for ``stale_after`` seconds in session (calls the ``on_stale`` callback)."""
        if self._on_stale is not None:
            self._call(self._on_stale, symbol)

    def on_fresh(self, symbol: str) -> None:
        """Hook: data for a stale ``symbol`` resumed (calls the ``on_fresh`` callback)."""
        if self._on_fresh is not None:
            self._call(self._on_fresh, symbol)

    def _call(self, fn: Callable[[str], Any], symbol: str) -> None:
        """Run a hook (a coroutine hook is scheduled); a failing hook is logged, never allowed to stop the feed."""
        try:
            out = fn(symbol)
            if asyncio.iscoroutine(out):
                task = asyncio.ensure_future(out)
                self._hook_tasks.add(task)
                task.add_done_callback(self._hook_tasks.discard)
        except Exception as e:  # noqa: BLE001  (a hook must not kill market data)
            LOG.error("mqtt.hook_failed", hook=getattr(fn, "__name__", repr(fn)), symbol=symbol, error=repr(e))
