"""The run's clock: the engine's only source of "now", and the timers that run on it.

The engine advances its clock once per event (a timestamp's bars, a tick, a risk poll) and reads
``now`` from it everywhere else: ``ctx.now``, order timestamps, timers, the risk layer's expiries.
:class:`SimulatedClock` is event time (backtests, replays, the live runner: the same data gives the
same ``now``); :class:`WallClock` is the machine's time, read once per event. Neither goes backwards.
"""
from __future__ import annotations

import heapq
import time
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the engine asks of a clock."""

    @property
    def now(self) -> int:
        """The current time, int64 ns since the epoch (UTC)."""

    def advance(self, ts: int) -> int:
        """An event stamped ``ts`` is being processed: move the clock (never back) and return ``now``."""


class SimulatedClock:
    """Event time: ``now`` is the latest event timestamp seen; an older event leaves it where it is."""

    __slots__ = ("now",)

    def __init__(self, start: int = 0) -> None:
        self.now = start

    def advance(self, ts: int) -> int:
        if ts >= self.now:
            self.now = ts
            return ts
        return self.now


class TickClock(SimulatedClock):
    """A :class:`SimulatedClock` for the tick driver: while it hands ticks to ``on_tick`` straight from a
    list (one C-level call per tick, nothing advanced per tick), ``current`` returns the tick being
    processed and ``now`` is read from it lazily (the latest of it and the time set before)."""

    __slots__ = ("_now", "current")

    def __init__(self, start: int = 0) -> None:
        self._now = start
        self.current: Callable[[], object] | None = None

    @property
    def now(self) -> int:
        cur = self.current
        if cur is not None:
            ts = cur().ts
            if ts > self._now:
                return ts
        return self._now

    @now.setter
    def now(self, value: int) -> None:
        self._now = value

    def advance(self, ts: int) -> int:
        if ts >= self._now:
            self._now = ts
            return ts
        return self._now


class WallClock:
    """The machine's time (``time.time_ns`` unless ``source`` is given), read once per event so that one
    event's callbacks all see the same ``now``; it never goes backwards, even if the system clock does.

    Orders are stamped with it, and a simulated venue fills an order only on a bar stamped after it:
    pair it with market data stamped in wall time (a live feed), not with a replay of old bars.
    """

    __slots__ = ("now", "_source")

    def __init__(self, source: Callable[[], int] = time.time_ns) -> None:
        self._source = source
        self.now = source()

    def advance(self, ts: int) -> int:
        t = self._source()
        if t > self.now:
            self.now = t
        return self.now


class Timers:
    """Recurring named timers on the run's clock: ``due(now)`` names those that are due, in time order."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, str, int]] = []   # (next time, order added, name, interval)
        self._seq = 0
        self.on_add: Callable[[], None] | None = None     # told when a timer is added (the tick driver)

    def add(self, name: str, every: int, start: int) -> None:
        """Fire ``name`` first at ``start``, then every ``every`` ns."""
        if every <= 0:
            raise ValueError(f"timer {name!r}: interval must be positive, got {every}")
        heapq.heappush(self.heap, (start, self._seq, name, every))
        self._seq += 1
        if self.on_add is not None:
            self.on_add()

    def due(self, now: int) -> list[str]:
        """The timers due at ``now``, each once (a timer that missed several intervals fires once and
        is rescheduled after ``now``)."""
        out = []
        while self.heap and self.heap[0][0] <= now:
            at, seq, name, every = heapq.heappop(self.heap)
            out.append(name)
            nxt = at + every * max(1, (now - at) // every + 1)
            heapq.heappush(self.heap, (nxt, seq, name, every))
        return out
