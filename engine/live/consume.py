"""Market data into the live engine: the MQTT loop that groups bars by timestamp and steps them, ticks, lockstep.

A group of bars (one timestamp) is journaled and stepped when every symbol has reported, when the
publisher's ``$clock`` mark for it arrives, or when a later bar arrives. In lockstep a timestamp's bars
and ticks are stepped only once the exchange has acknowledged it and a FIX round trip has drained its
reports, and the step is acknowledged once the broker has answered every order it sent, so a replay
is deterministic.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.orders import OrderStatus
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.data.mqtt import Ack, ClockMark, MqttFeed
from tradeloop.data.schema import Bar, Tick
from tradeloop.risk.stale import StaleGuard

from tradeloop.engine.config.sections import LiveSection
from tradeloop.engine.live.journal import Journal
from tradeloop.engine.live.lagstats import LagStats
from tradeloop.engine.live.operators import Operators
from tradeloop.engine.live.parts import LiveStats
from tradeloop.engine.live.recovery import RiskJournal
from tradeloop.engine.drivers.live import LiveDriver


class Consumer:
    """Steps one session's engine over its market data as it arrives; ``last_ts`` is the last timestamp stepped
    (bars at or before it, resent after a restart, are dropped)."""

    def __init__(self, live: LiveSection, driver: LiveDriver, *, journal: Journal, venue: RemoteVenue,
                 broker: FixBroker, stale: StaleGuard | None, risk_journal: RiskJournal, ops: Operators,
                 stats: LiveStats, tick_lag: LagStats, last_ts: int | None) -> None:
        self.live, self.driver, self.engine = live, driver, driver.engine
        self.journal, self.venue, self.broker, self.stale = journal, venue, broker, stale
        self.risk_journal, self.ops, self.stats, self.tick_lag = risk_journal, ops, stats, tick_lag
        self.last_ts = last_ts

    # ------------------------------------------------------------------ staleness (the feed's callbacks)
    def on_stale(self, symbol: str) -> None:
        """No data for ``live.stale_after`` seconds: halt the symbol through the risk layer."""
        if self.stale is not None:
            self.stale.halt(self.engine.now, symbol)

    def on_fresh(self, symbol: str) -> None:
        """Data again: lift the stale halt."""
        if self.stale is not None:
            self.stale.resume(self.engine.now, symbol)

    # ------------------------------------------------------------------ the loop
    async def consume(self, feed: MqttFeed) -> None:
        """Step every bar and tick ``feed`` delivers until it ends (the publisher's end-of-stream mark)."""
        n_symbols = len(self.driver.symbols)
        lockstep = self.live.lockstep
        pending: list[Bar | Tick] = []   # lockstep: bars and ticks of the timestamps not stepped yet
        clock_ts: int | None = None
        exchange_ts = -1
        lag = self.tick_lag
        async for ev in feed:
            if isinstance(ev, Bar):
                if self.last_ts is not None and ev.ts <= self.last_ts:
                    self.stats.old_bars_dropped += 1
                    continue
                if pending and ev.ts != pending[0].ts and not lockstep:
                    await self.step(pending)
                    pending = []
                pending.append(ev)
                if not lockstep and len(pending) == n_symbols:
                    await self.step(pending)
                    pending = []
            elif isinstance(ev, ClockMark):
                if not lockstep:
                    if pending and pending[0].ts <= ev.ts:
                        await self.step(pending)
                        pending = []
                    continue
                clock_ts = ev.ts
                if exchange_ts >= clock_ts:
                    pending = await self._lockstep(feed, pending, clock_ts)
                    clock_ts = None
            elif isinstance(ev, Ack):
                exchange_ts = max(exchange_ts, ev.ts)
                if clock_ts is not None and exchange_ts >= clock_ts:
                    pending = await self._lockstep(feed, pending, clock_ts)
                    clock_ts = None
            elif isinstance(ev, Tick) and lockstep:
                pending.append(ev)   # fed once the exchange has matched its timestamp (_lockstep)
            elif isinstance(ev, Tick):
                if pending:
                    await self.step(pending)
                    pending = []
                self.driver.feed(ev)
                self.stats.ticks += 1
                lag.add(time.time_ns() - ev.ts, ev.ts)   # market-data timestamps are wall-clock times live
        if pending:
            if all(isinstance(b, Bar) for b in pending):
                await self.step(pending)
            else:
                await self.step_ticks(pending)

    async def _lockstep(self, feed: MqttFeed, pending: list[Bar | Tick], ts: int) -> list[Bar | Tick]:
        """Step the bars (and ticks) up to ``ts`` once the exchange has acknowledged ``ts``, then acknowledge it
        ourselves."""
        now = [b for b in pending if b.ts <= ts]
        if now:
            bars = [b for b in now if isinstance(b, Bar)]
            if len(bars) == len(now):
                await self.step(bars, sync=True)
            else:
                await self.step_ticks(now)
        await self.ops.hold_for_reviews(ts)
        if self.live.pace:
            await asyncio.sleep(self.live.pace)
        await feed.ack("runner", ts)
        return [b for b in pending if b.ts > ts]

    async def step_ticks(self, events: list[Bar | Tick]) -> None:
        """Lockstep: feed one or more timestamps' bars and ticks in order (bars of a stamp step before its
        ticks), once the exchange's reports for them are in; then wait for the broker's answers to new orders."""
        if self.venue.open_orders():
            await self.broker.session.ping()   # the exchange's reports for these ticks are in
        before = self.engine._order_seq
        bars: list[Bar] = []
        lag = self.tick_lag
        for ev in events:
            if isinstance(ev, Bar):
                bars.append(ev)
                continue
            if bars:
                await self.step(bars)
                bars = []
            self.driver.feed(ev)
            self.stats.ticks += 1
            lag.add(time.time_ns() - ev.ts, ev.ts)
        if bars:
            await self.step(bars)
        self.ops.publish()
        if self.engine._order_seq != before:
            sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
            await self.venue.acknowledged(sent)

    async def step(self, bars: list[Bar], *, sync: bool = False) -> None:
        """Journal one timestamp's bars, step the engine over them, and (lockstep) wait for the broker's answers."""
        if sync and self.venue.open_orders():
            await self.broker.session.ping()   # the exchange's reports for this timestamp are in
        ts = bars[0].ts
        self.journal.bars(bars)
        before = self.engine._order_seq
        for bar in bars:
            self.driver.feed(bar)
        self.driver.flush()
        self.last_ts = ts
        self.risk_journal.save()
        self.ops.publish()
        self.stats.steps += 1
        self.stats.bars += len(bars)
        if sync and self.engine._order_seq != before:
            sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
            await self.venue.acknowledged(sent)

    async def settle(self, timeout: float = 5.0) -> None:
        """At the end: give the broker a moment to answer orders still unacknowledged."""
        sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
        if sent and self.broker.session.logged_on:
            with contextlib.suppress(TimeoutError):
                await self.venue.acknowledged(sent, timeout)
