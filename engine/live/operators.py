"""The live session's side facing people: its state published for the console, their commands applied.

Between steps (every 50 ms of wall clock, even while no data arrives) it applies answers to reviews,
their expiries, halts, resumes, cancels and the kill switch (risk/control.py) and publishes what changed
(engine/live/publish.py); in lockstep it holds a timestamp's acknowledgement while an order waits for a
person, which pauses a paper replay.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.orders import OrderStatus
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.data.mqtt import MqttFeed
from tradeloop.risk.pipeline import RiskPipeline

from tradeloop.engine.loop.core import Engine
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.engine.live.publish import Publisher
from tradeloop.engine.live.recovery import RiskJournal
from tradeloop.engine.drivers.live import EquityLog


class Operators:
    """Publishes one session's state and applies operators' commands to its engine between steps."""

    def __init__(self, engine: Engine, risk: RiskPipeline, risk_journal: RiskJournal, venue: RemoteVenue,
                 broker: FixBroker, log: Any) -> None:
        self.engine, self.risk, self.risk_journal = engine, risk, risk_journal
        self.venue, self.broker, self.log = venue, broker, log
        self.publisher: Publisher | None = None
        self.feed: MqttFeed | None = None
        self.paused = False           # lockstep: waiting for a person to answer a held order
        self.finished = False         # the market data ended (held open for operators)

    def start_publishing(self, feed: MqttFeed, strategy: Strategy, equity: EquityLog, *, mode: str,
                         run_id: str) -> None:
        """The snapshot and event log the console and ``tradeloop review`` read (engine/live/publish.py)."""
        self.feed = feed
        if self.risk.control is None:
            return
        cls = type(strategy)
        self.publisher = Publisher(self.risk.control, self.engine, equity, mode=mode, run_id=run_id,
                                   strategy=f"{cls.__module__}:{cls.__qualname__}", status=self.status)
        self.publish(force=True)

    def status(self) -> dict[str, Any]:
        """The session's own flags for the snapshot: FIX and MQTT up or down, paused for a review, finished."""
        feed = self.feed
        return {"fix": "logged_on" if self.broker.session.logged_on else "down",
                "mqtt": "connected" if feed is not None and feed._client is not None else "down",
                "paused_for_review": self.paused, "finished": self.finished}

    def publish(self, force: bool = False) -> None:
        """Publish what is new (the snapshot at most every few ms unless ``force``)."""
        if self.publisher is not None:
            self.publisher.flush(force=force)

    def poll(self) -> None:
        """Between steps: answers to reviews, expiries (wall clock), operator commands; then publish."""
        before = self.engine._order_seq, len(self.risk.events)
        self.engine.poll_risk(self.engine.now)
        if (self.engine._order_seq, len(self.risk.events)) != before:
            self.risk_journal.save()
        self.publish()

    async def poller(self, every_s: float = 0.05) -> None:
        """Operators act between bars too (a quiet market, a paused replay): poll every ``every_s`` of wall clock."""
        while True:
            await asyncio.sleep(every_s)
            self.poll()

    async def hold_for_reviews(self, ts: int) -> None:
        """Lockstep: while an order waits for a person, do not acknowledge ``ts``, so the replay does not publish
        the next timestamp (the paper session pauses); go on once every review is answered or expired."""
        held = self.risk.pending_reviews()
        if not held:
            return
        self.paused = True
        self.log.info("live.paused_for_review", ts=ts, orders=[h.order.id for h in held],
                      deadline_s=round(max(h.deadline for h in held) - time.time(), 3))
        self.publish(force=True)
        try:
            while self.risk.pending_reviews():
                await asyncio.sleep(0.02)
                self.poll()
        finally:
            self.paused = False
        self.log.info("live.resumed_after_review", ts=ts)
        self.publish(force=True)
        sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
        if sent:   # an approved order reaches the exchange before the next timestamp does
            await self.venue.acknowledged(sent)
