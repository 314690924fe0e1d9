"""The live driver: an asyncio task that feeds arriving bars and ticks to the same engine.

Bars arrive one message at a time, so the driver groups them by timestamp: a group is
handed to ``Engine.step`` when a bar with a later timestamp arrives, when every expected
symbol has reported, or when the stream ends. Within a group bars go in symbol order, as in
a backtest, so the same data gives the same fills in both drivers.

Before each step the driver polls the risk layer's state file (``live.state``): answers to
orders held for review (approved ones go out, unanswered ones expire after ``risk.review.timeout``
seconds of wall clock) and operator commands (halt, resume, cancel, kill, reset the drawdown stop),
written through ``risk/control.py`` by ``tradeloop review`` / ``tradeloop risk`` or the console.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterable

from tradeloop.brokers.base import Venue
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.schema import Bar, Tick
from tradeloop.risk.pipeline import RiskPipeline

from tradeloop.engine.loop.clock import Clock, SimulatedClock
from tradeloop.engine.loop.core import Engine
from tradeloop.engine.loop.market import StreamingMarket
from tradeloop.engine.loop.portfolio import Portfolio
from tradeloop.engine.loop.strategy import Strategy


NS_PER_SECOND = 1_000_000_000


@dataclass
class EquityLog:
    """Cash and equity after every bar step, and after the last tick of each second of tick time.

    Ticks are coalesced per second: a tick-driven session sees thousands of ticks a second, and an
    entry per tick (four Python numbers) would grow by gigabytes over a trading day.
    """

    ts: list[int] = field(default_factory=list)
    cash: list[float] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    gross: list[float] = field(default_factory=list)   # sum of |position| x price: exposure metrics
    tick_second: int | None = None   # second of the last entry when a tick made it (it may be replaced)

    def record(self, ts: int, cash: float, equity: float, gross: float, *, tick: bool = False) -> None:
        second = ts // NS_PER_SECOND
        if tick and self.tick_second == second:   # a later tick of the same second: replace its entry
            self.ts[-1], self.cash[-1], self.equity[-1], self.gross[-1] = ts, cash, equity, gross
            return
        self.ts.append(ts)
        self.cash.append(cash)
        self.equity.append(equity)
        self.gross.append(gross)
        self.tick_second = second if tick else None

    def clear(self) -> None:
        for column in (self.ts, self.cash, self.equity, self.gross):
            column.clear()
        self.tick_second = None


class LiveDriver:
    """Drives an :class:`Engine` over a :class:`StreamingMarket` from an async event source.

    ``venue``: None simulates fills in-process (a :class:`SimulatedVenue` with ``rules``: paper parity
    tests, the runner's warm-up); a live run passes a :class:`tradeloop.brokers.remote.RemoteVenue` so orders go
    to a broker. ``clock``: None is event time (a :class:`SimulatedClock`: the events' stamps, as in a
    backtest); a :class:`tradeloop.engine.loop.clock.WallClock` makes ``now`` the machine's time. ``market``: one
    already warmed up (indicators carried over from a replay of journaled bars after a restart).
    """

    def __init__(self, strategy: Strategy, symbols: list[str], *, cash: float = 100_000.0,
                 rules: FillRules | None = None, risk: RiskPipeline | None = None,
                 order_prefix: str = "O", log: Any = None, venue: Venue | None = None,
                 clock: Clock | None = None, market: StreamingMarket | None = None) -> None:
        self.symbols = sorted(symbols)
        self.market = market if market is not None else StreamingMarket(self.symbols)
        rules = rules or FillRules()
        self.engine = Engine(strategy, self.market, Portfolio(cash), rules, risk or RiskPipeline([]),
                             venue=venue if venue is not None else SimulatedVenue(rules),
                             clock=clock if clock is not None else SimulatedClock(),
                             order_prefix=order_prefix, log=log)
        self.equity = EquityLog()
        self._group: list[Bar] = []
        self._started = False
        self._next_poll = 0.0

    async def run(self, source: AsyncIterable[Bar | Tick]) -> Engine:
        """Consume ``source`` to its end, then stop the strategy; returns the engine."""
        self.start()
        async for event in source:
            self.feed(event)
        self.finish()
        return self.engine

    def start(self) -> None:
        if not self._started:
            self.engine.start()
            self._started = True

    def feed(self, event: Bar | Tick) -> None:
        """Take one market event; steps the engine when a timestamp group is complete."""
        if isinstance(event, Tick):
            self.flush()
            now = time.monotonic()
            if now >= self._next_poll:   # reviews and commands are human-paced: poll ticks at most 20x a second
                self._next_poll = now + 0.05
                self.engine.poll_risk(event.ts)
            self.engine.tick(event)
            self._record(event.ts, tick=True)
            return
        if event.symbol not in self.market.rows:
            raise ValueError(f"bar for unknown symbol {event.symbol!r}")
        group = self._group
        if group and event.ts != group[0].ts:
            if event.ts < group[0].ts:
                raise ValueError(f"{event.symbol}: bar at {event.ts} is older than the bars being processed")
            self.flush()
            group = self._group
        group.append(event)
        if len(group) == len(self.symbols):
            self.flush()

    def flush(self) -> None:
        """Step the engine with the bars collected for the current timestamp."""
        if not self._group:
            return
        group = sorted(self._group, key=lambda b: b.symbol)
        self._group = []
        self.engine.poll_risk(group[0].ts)
        try:
            self.engine.step(group[0].ts, group)
        except BaseException:
            with contextlib.suppress(Exception):   # the failing step counts, as in a backtest's failed run
                self._record(group[0].ts)
            raise
        self._record(group[0].ts)

    def finish(self) -> None:
        self.flush()
        self.engine.stop()

    def _record(self, ts: int, tick: bool = False) -> None:
        e = self.engine
        price = e.market.price
        self.equity.record(ts, e.portfolio.cash, e.equity,
                           sum(abs(p.qty) * price(s) for s, p in e.portfolio.positions.items() if p.qty), tick=tick)
