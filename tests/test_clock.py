"""Specification of the run's clock (engine.loop.clock): the engine's only source of "now".

- A simulated clock is event time and never goes backwards; a wall clock is the machine's time,
  read once per event, and never goes backwards either.
- ``ctx.now``, order timestamps and timers read the engine's clock, whichever it is.
- Timers fire on every kind of event: bars and ticks alike, due timers first, then the event's
  callback (after order and fill notices), in a tick-driven live session over MQTT too.
"""
from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from tradeloop import Strategy
from tradeloop.data.mqtt import MqttFeed, encode_tick, eos_topic, tick_topic
from tradeloop.data.schema import Bar, Tick
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.loop.clock import Clock, SimulatedClock, Timers, WallClock

from .helpers import DAY0, Scripted, series
from tests.mosquitto import mosquitto  # noqa: F401  (the fixture, used by name)

SECOND = 1_000_000_000


def test_the_simulated_clock_follows_events_and_never_goes_backwards():
    clock = SimulatedClock()
    assert isinstance(clock, Clock) and clock.now == 0
    assert clock.advance(10) == 10 and clock.advance(10) == 10
    assert clock.advance(7) == 10 and clock.now == 10      # a late event does not move it back
    assert clock.advance(12) == 12


def test_the_wall_clock_reads_its_source_once_per_event_and_never_goes_backwards():
    readings = iter([100, 150, 140, 200])
    clock = WallClock(lambda: next(readings))
    assert isinstance(clock, Clock) and clock.now == 100
    assert clock.advance(5) == 150                          # the event's stamp is not the time
    assert clock.advance(999) == 150 and clock.now == 150   # the system clock stepped back
    assert clock.advance(0) == 200
    real = WallClock()
    assert abs(real.now - time.time_ns()) < 60 * SECOND


def test_timers_fire_each_due_timer_once_in_time_order():
    timers = Timers()
    timers.add("slow", 10, 10)
    timers.add("fast", 3, 0)
    assert timers.due(0) == ["fast"]
    assert timers.due(9) == ["fast"]          # 3, 6 and 9 were due: once, rescheduled after now
    assert timers.due(10) == ["slow"]
    assert timers.due(12) == ["fast"]
    with pytest.raises(ValueError, match="interval must be positive"):
        timers.add("bad", 0, 0)


class Journal(Strategy):
    """Records every callback with the ``ctx.now`` it saw; sets a timer in ``on_start``."""

    def __init__(self, every: int, start: int | None) -> None:
        super().__init__()
        self.every, self.start = every, start
        self.seen: list[tuple[str, int, int]] = []   # (callback, stamp of its event, ctx.now)

    def on_start(self, ctx) -> None:
        ctx.set_timer("pulse", self.every, self.start)

    def on_timer(self, ctx, name: str) -> None:
        self.seen.append((name, ctx.now, ctx.now))

    def on_bar(self, ctx, bar: Bar) -> None:
        self.seen.append(("bar", bar.ts, ctx.now))

    def on_tick(self, ctx, tick: Tick) -> None:
        self.seen.append(("tick", tick.ts, ctx.now))


def test_ctx_now_is_the_clock_of_the_backtest():
    data = series("X", [(10.0, 10.0, 10.0, 10.0, 1.0)] * 4)
    times = []
    strat = Scripted({i: (lambda c: times.append(c.now)) for i in range(4)})
    run_backtest(strat, [data])
    assert times == [int(t) for t in data.ts]


def test_ctx_now_and_order_stamps_come_from_the_engine_clock_not_the_events():
    readings = iter(range(1_000, 100_000, 1_000))
    clock = WallClock(lambda: next(readings))
    seen, current = [], []
    strat = Scripted({0: lambda c: (seen.append(c.now), c.buy("X", 1)),
                      1: lambda c: (seen.append(c.now), current.append(c.field("close").nonzero_symbols()))})
    driver = LiveDriver(strat, ["X"], clock=clock)
    driver.start()
    for i in range(2):
        driver.feed(Bar("X", DAY0 + i, 10.0, 10.0, 10.0, 10.0, 1.0))   # event stamps far from the clock's
    driver.finish()
    engine = driver.engine
    assert engine.clock is clock and engine.now == clock.now
    # per step: the risk poll reads the clock, then the step does (1,000 ns apart)
    assert seen == [3_000, 5_000]
    assert engine.orders["O00000001"].created_ts == 3_000
    assert current == [["X"]]     # which bars are the current ones still goes by the bars' own stamps


def test_timers_fire_on_ticks_before_on_tick_as_they_fire_on_bars_before_on_bar():
    t0 = DAY0 + 9 * 3600 * SECOND
    events: list[Bar | Tick] = [Tick("X", t0 + k * SECOND // 4, 10.0, 1.0) for k in range(10)]   # 2.25 s of ticks
    events.append(Bar("X", t0 + 3 * SECOND, 10.0, 10.0, 10.0, 10.0, 1.0))
    strat = Journal(SECOND, t0 + SECOND)
    driver = LiveDriver(strat, ["X"])
    driver.start()
    for e in events:
        driver.feed(e)
    driver.finish()
    fired = [(i, row) for i, row in enumerate(strat.seen) if row[0] == "pulse"]
    assert [row[1] for _, row in fired] == [t0 + SECOND, t0 + 2 * SECOND, t0 + 3 * SECOND]
    for i, (_, at, _) in fired:                     # each right before the event that made it due
        kind, stamp, now = strat.seen[i + 1]
        assert stamp == at and now == at
    assert [k for k, *_ in strat.seen].count("tick") == 10
    assert all(stamp == now for _, stamp, now in strat.seen)


def test_timers_fire_in_a_tick_driven_live_session_over_mqtt(mosquitto):
    """Ticks only, published to a real broker and consumed by the live driver through MqttFeed."""
    t0 = (time.time_ns() // SECOND - 120) * SECOND          # two minutes ago: not 'in the future'
    ticks = [Tick("X", t0 + k * SECOND // 4, 10.0 + k / 100, 1.0) for k in range(20)]   # 5 s of ticks
    strat = Journal(SECOND, t0 + SECOND)

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1])) as client:
            for tick in ticks:
                await client.publish(tick_topic("sim", "X"), encode_tick(tick), qos=1)
            await client.publish(eos_topic("sim"), b'{"v":1}', qos=1)

    async def scenario():
        driver = LiveDriver(strat, ["X"])
        async with MqttFeed(mosquitto.url, ["X"], bars=False, ticks=True) as feed:
            await feed.wait_ready()
            engine, _ = await asyncio.gather(driver.run(feed), publish())
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [row for row in strat.seen if row[0] == "pulse"] == [("pulse", t0 + k * SECOND, t0 + k * SECOND)
                                                                for k in (1, 2, 3, 4)]
    assert [row[1] for row in strat.seen if row[0] == "tick"] == [t.ts for t in ticks]
    assert engine.now == ticks[-1].ts and engine.step_index == len(ticks) - 1
