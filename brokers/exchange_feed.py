"""The exchange simulator's MQTT market data: every bar/tick of a venue in, an ``$ack/exchange`` out per clock mark.

::

    feed = MqttBarFeed("mqtt://127.0.0.1:1883", venue="sim", interval="1d")
    ExchangeSimulator(config, feeds=[feed])   # or: python -m tradeloop.brokers.exchange --mqtt mqtt://127.0.0.1:1883

It subscribes (QoS 1) to ``md/<venue>/+/bar/<interval>``, ``md/<venue>/+/tick`` (or, with
``symbols``, those symbols' topics only) and ``md/<venue>/$clock`` and hands events to the simulator one at a time, in arrival order. For a
``$clock`` mark at ts it publishes ``md/<venue>/$ack/exchange`` with ts only after every earlier
bar was matched and its ExecutionReports were handed to the FIX transport (``on_bar`` returns once
the session unit has written them), so a lockstep replay (``tradeloop replay --lockstep exchange``)
never publishes the next bar before the trader's reports are on their way. The connection
reconnects by itself (:class:`tradeloop.data.mqtt.MqttFeed`); bars the simulator has already processed
(re-published after a restart) are ignored by the simulator itself.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from tradeloop.data.mqtt import Ack, ClockMark, Credentials, FutureSkew, MqttFeed, TlsConfig
from tradeloop.data.mqtt.feed import FeedStatus
from tradeloop.data.schema import Bar, Tick

if TYPE_CHECKING:
    from tradeloop.brokers.exchange import MarketSink

LOG = structlog.get_logger("exchange.mqtt")
COMPONENT = "exchange"


class MqttBarFeed:
    """A :class:`tradeloop.brokers.exchange.BarFeed` reading a venue's bars, ticks and clock marks from MQTT."""

    def __init__(self, url: str, *, venue: str = "sim", interval: str = "1d", ticks: bool = True,
                 component: str = COMPONENT, tls: TlsConfig | None = None, credentials: Credentials | None = None,
                 client_id: str | None = None, ready_timeout: float = 10.0, symbols: Iterable[str] | None = None,
                 future: FutureSkew | None = None) -> None:
        self.url, self.venue, self.component = url, venue, component
        self.ready_timeout = ready_timeout
        self.feed = MqttFeed(url, symbols, venue=venue, interval=interval, bars=True, ticks=ticks, qos=1, clock=True,
                             stop_on_eos=False, tls=tls, credentials=credentials, client_id=client_id, future=future)
        self.acked: int | None = None
        self._task: asyncio.Task | None = None

    async def start(self, sink: MarketSink) -> None:
        """Connect and subscribe, then pump events into ``sink``; a refused first connection raises here."""
        self.feed.start()
        self._task = asyncio.create_task(self._pump(sink), name="exchange-mqtt")
        ready = asyncio.create_task(self.feed.wait_ready(self.ready_timeout))
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():  # the feed failed before it was ready (e.g. bad credentials)
            ready.cancel()
            self._task.result()
            raise RuntimeError(f"MQTT feed from {self.url} ended before it was subscribed")
        try:
            ready.result()
        except TimeoutError:
            LOG.warning("exchange.mqtt_not_ready", url=self.url, waited_s=self.ready_timeout,
                        note="going on; the feed keeps reconnecting in the background")
        else:
            LOG.info("exchange.mqtt_subscribed", url=self.url, venue=self.venue, topics=self.feed.topics)

    async def _pump(self, sink: MarketSink) -> None:
        """One event at a time: bars and ticks into the simulator, an ack for each clock mark."""
        try:
            async for event in self.feed:
                if isinstance(event, (Bar, Tick)):
                    try:
                        (sink.on_bar if isinstance(event, Bar) else sink.on_tick)(event)
                    except Exception as e:  # noqa: BLE001  (one bar must never end the exchange's market data)
                        LOG.error("exchange.mqtt_event_failed", symbol=event.symbol, ts=event.ts, error=repr(e))
                elif isinstance(event, ClockMark):
                    await self._ack(event.ts)
                elif not isinstance(event, (Ack, FeedStatus)):
                    LOG.warning("exchange.mqtt_unexpected_event", event=repr(event))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            LOG.error("exchange.mqtt_feed_failed", url=self.url, error=repr(e))
            raise

    async def _ack(self, ts: int) -> None:
        """Publish ``$ack/<component>``: every bar up to ``ts`` is matched and its reports are written."""
        LOG.debug("exchange.mqtt_ack", ts=ts)
        try:
            await self.feed.ack(self.component, ts)
        except TimeoutError:
            LOG.error("exchange.mqtt_ack_failed", ts=ts, reason="no broker connection within the timeout")
            return
        self.acked = ts

    def stats(self) -> dict[str, Any]:
        """The MQTT feed's counters: messages received, delivered, dropped by reason (malformed, future, ...)."""
        return self.feed.stats.as_dict()

    async def close(self) -> None:
        """Stop pumping and disconnect."""
        await self.feed.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
