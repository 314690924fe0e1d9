"""Lockstep over MQTT: clock and ack marks on the wire, in MqttFeed, and the replay's pacing by acks.

The replay publishes ``md/<venue>/$clock`` after each timestamp group; with ``lockstep`` it waits
for ``md/<venue>/$ack/<component>`` from every named component before the next group.
"""
from __future__ import annotations

import asyncio
import json

import aiomqtt
import numpy as np
import pytest

from tradeloop.data.mqtt import (
    Ack,
    ClockMark,
    MqttFeed,
    PayloadError,
    ack_topic,
    bar_topic,
    clock_topic,
    decode_mark,
    encode_bar_values,
    encode_mark,
    eos_topic,
    parse_topic,
    tick_topic,
)
from tradeloop.data.loaders import load_bars
from tradeloop.data.mqtt.wire import escape, unescape
from tradeloop.data.replay import LockstepTimeout, replay
from tradeloop.data.replay import main as replay_main
from tradeloop.data.schema import Bar, BarSeries, Tick
from tests.mosquitto import mosquitto  # noqa: F401  (the fixture, used by name)
from tests.test_mqtt_feed import orcl, run  # noqa: F401  (orcl: the fixture, used by name)


def part(s: BarSeries, symbol: str, lo: int, hi: int) -> BarSeries:
    """Rows lo..hi of ``s`` under another symbol."""
    return BarSeries(symbol, s.ts[lo:hi], s.open[lo:hi], s.high[lo:hi], s.low[lo:hi], s.close[lo:hi], s.volume[lo:hi])


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def publish_raw(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``(topic, payload)`` pairs in order (QoS 1) from one plain client."""
    async with aiomqtt.Client("127.0.0.1", port(url)) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def bar(symbol: str, ts: int, venue: str = "sim") -> tuple[str, bytes]:
    return bar_topic(venue, symbol, "1m"), encode_bar_values(ts, 10.0, 11.0, 9.0, 10.5, 100.0)


# ------------------------------------------------------------------------------------------ wire

def test_clock_and_ack_topics_and_payloads():
    assert clock_topic("sim") == "md/sim/$clock"
    assert ack_topic("sim", "exchange") == "md/sim/$ack/exchange"
    assert parse_topic("md/sim/$clock") == ("sim", "", "clock", None)
    assert parse_topic("md/sim/$ack/runner") == ("sim", "runner", "ack", None)
    assert parse_topic("md/sim/$ack") is None and parse_topic("md/sim/$what") is None
    assert encode_mark(1_388_966_400_000_000_000) == b'{"v":1,"ts":1388966400000000000}'
    for ts in (0, 1, -(2 ** 63), 2 ** 63 - 1, np.int64(1_388_966_400_000_000_000)):
        assert decode_mark(encode_mark(ts)) == ts
    for bad in (1.5, True, "1", 2 ** 63):
        with pytest.raises(ValueError):
            encode_mark(bad)


def test_control_topics_cannot_collide_with_symbol_topics():
    """md/<venue>/+/tick would match md/<venue>/$ack/tick, so that component name is refused; a symbol
    starting with $ is escaped so its topics never look like control topics."""
    with pytest.raises(ValueError, match="reserved"):
        ack_topic("sim", "tick")
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError):
            ack_topic("sim", bad)
    assert tick_topic("sim", "$clock") == "md/sim/%24clock/tick"
    assert parse_topic(tick_topic("sim", "$clock")) == ("sim", "$clock", "tick", None)
    assert parse_topic(bar_topic("sim", "$ack", "1d")) == ("sim", "$ack", "bar", "1d")
    for sym in ("$", "$$x", "a$", "%24", "%$"):
        assert unescape(escape(sym)) == sym


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "json"),
    (b'{"v":2,"ts":1}', "version"),
    (b'{"v":1}', "schema"),
    (b'{"v":1,"ts":1,"extra":0}', "schema"),
    (b'{"v":1,"ts":1.0}', "schema"),
    (b'{"v":1,"ts":"1"}', "schema"),
    (b'[1]', "schema"),
    (b'{"v":1,"ts":9223372036854775808}', "value"),
])
def test_malformed_marks_name_their_reason(payload, reason):
    with pytest.raises(PayloadError) as e:
        decode_mark(payload)
    assert e.value.reason == reason


# ------------------------------------------------------------------------------------------ feed

def test_feed_yields_clocks_and_acks_in_arrival_order_and_counts_malformed_marks(mosquitto):
    messages = [bar("X", 1), (clock_topic("sim"), encode_mark(1)), (clock_topic("sim"), b'{"v":1,"ts":"1"}'),
                (ack_topic("sim", "exchange"), encode_mark(1)), (ack_topic("sim", "runner"), encode_mark(1)),
                bar("X", 2), (ack_topic("sim", "exchange"), b'{"v":7,"ts":2}'), (clock_topic("sim"), encode_mark(2)),
                (eos_topic("sim"), b'{"v":1}')]

    async def scenario():
        async with MqttFeed(mosquitto.url, ["X"], interval="1m", clock=True, acks=["exchange"]) as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, messages)
            return [e async for e in feed], feed.stats

    events, stats = run(scenario())
    assert events == [Bar("X", 1, 10.0, 11.0, 9.0, 10.5, 100.0), ClockMark(1), Ack("exchange", 1),
                      Bar("X", 2, 10.0, 11.0, 9.0, 10.5, 100.0), ClockMark(2)]
    assert dict(stats.dropped) == {"schema": 1, "version": 1}
    assert stats.received == len(messages) - 1  # the runner's ack was not subscribed to


def test_all_symbol_wildcards_never_deliver_control_topics(mosquitto):
    """A feed of every symbol (bars and ticks) without the lockstep options sees bars, ticks and EOS only."""
    tick = (tick_topic("sim", "$clock"), b'{"v":1,"ts":5,"p":10.0}')
    messages = [(clock_topic("sim"), encode_mark(1)), (ack_topic("sim", "exchange"), encode_mark(1)),
                (ack_topic("sim", "ticks"), encode_mark(1)), bar("A", 1), tick, (eos_topic("sim"), b'{"v":1}')]

    async def scenario():
        async with MqttFeed(mosquitto.url, None, interval="1m", ticks=True) as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, messages)
            return [e async for e in feed], feed.stats

    events, stats = run(scenario())
    assert events[0] == Bar("A", 1, 10.0, 11.0, 9.0, 10.5, 100.0) and len(events) == 2
    assert isinstance(events[1], Tick) and (events[1].symbol, events[1].ts, events[1].price) == ("$clock", 5, 10.0)
    assert stats.received == 3 and stats.total_dropped == 0


# ------------------------------------------------------------------------------------------ replay

def test_replay_publishes_one_clock_per_timestamp_group_right_after_its_bars(mosquitto, orcl):
    a, b = part(orcl, "AAA", 0, 4), part(orcl, "BBB", 2, 6)  # groups: A, A, AB, AB, B, B

    async def scenario():
        async with aiomqtt.Client("127.0.0.1", port(mosquitto.url)) as client:
            await client.subscribe("md/#", qos=1)
            stats = await replay([b, a], mosquitto.url, interval="1d")
            seen = []
            async for m in client.messages:
                seen.append((m.topic.value, json.loads(m.payload)["ts"]))
                if m.topic.value.endswith("$eos"):
                    return stats, seen

    stats, seen = run(scenario())
    expected = []
    for ts in orcl.ts[0:6]:
        expected += [(f"md/sim/{s.symbol}/bar/1d", int(ts)) for s in (a, b) if ts in s.ts]
        expected.append(("md/sim/$clock", int(ts)))
    assert seen == expected + [("md/sim/$eos", int(orcl.ts[5]))]
    assert (stats.published, stats.clocks) == (8, 6)


def test_lockstep_never_runs_more_than_one_group_ahead_of_the_slowest_component(mosquitto, orcl):
    """Two components ack every clock, one at once, one after 50 ms; no bar of a group arrives before
    both have acked the group before it, and the replay takes at least as long as the slow one."""
    data = [part(orcl, "AAA", 0, 8), part(orcl, "BBB", 1, 8)]
    groups = [int(t) for t in orcl.ts[0:8]]
    delay = 0.05

    async def component(feed: MqttFeed, name: str, pause: float, acked: dict[str, int]) -> list:
        seen = []
        async for event in feed:
            if isinstance(event, Bar):
                done = [g for g in groups if g <= min(acked.get(n, groups[0] - 1) for n in ("fast", "slow"))]
                allowed = groups[len(done)]  # the group after the last one both have acked
                assert event.ts <= allowed, f"bar at {event.ts} arrived before group {allowed} was acked"
                seen.append(event.ts)
            elif isinstance(event, ClockMark):
                seen.append(("clock", event.ts))
                await asyncio.sleep(pause)
                acked[name] = event.ts
                await feed.ack(name, event.ts)
        return seen

    async def scenario():
        acked: dict[str, int] = {}
        async with MqttFeed(mosquitto.url, None, interval="1d", clock=True) as fast, \
                MqttFeed(mosquitto.url, None, interval="1d", clock=True) as slow:
            await fast.wait_ready()
            await slow.wait_ready()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got_fast, got_slow, stats = await asyncio.gather(
                component(fast, "fast", 0.0, acked), component(slow, "slow", delay, acked),
                replay(data, mosquitto.url, lockstep=["fast", "slow"], lockstep_timeout=5))
            return got_fast, got_slow, stats, loop.time() - t0

    got_fast, got_slow, stats, took = run(scenario())
    expected = []
    for g in groups:
        expected += [g] * sum(g in s.ts for s in data) + [("clock", g)]
    assert got_fast == got_slow == expected
    assert stats.clocks == len(groups) and took >= len(groups) * delay


def test_lockstep_fails_naming_the_component_and_timestamp_when_no_ack_comes(mosquitto, orcl, shared_data, capsys):
    first = int(orcl.ts[0])

    async def scenario():
        async with aiomqtt.Client("127.0.0.1", port(mosquitto.url)) as client:
            await client.subscribe("md/#", qos=1)
            with pytest.raises(LockstepTimeout) as e:
                await replay([part(orcl, "ORCL", 0, 5)], mosquitto.url, lockstep=["ghost"], lockstep_timeout=0.3)
            seen = []
            try:
                async with asyncio.timeout(0.3):
                    async for m in client.messages:
                        seen.append(m.topic.value)
            except TimeoutError:
                pass
            return e.value, seen

    err, seen = run(scenario())
    assert (err.component, err.ts) == ("ghost", first)
    assert "'ghost'" in str(err) and str(first) in str(err)
    assert seen == ["md/sim/ORCL/bar/1d", "md/sim/$clock"]  # the first group only, and no end marker

    path = shared_data / "backtrader" / "orcl-2014.txt"
    assert replay_main(["--data", f"ORCL={path}", "--mqtt", mosquitto.url, "--lockstep", "exchange,ghost",
                        "--lockstep-timeout", "0.3"]) == 1
    err_text = capsys.readouterr().err
    assert "lockstep" in err_text and "'exchange'" in err_text and str(first) in err_text
    with pytest.raises(SystemExit):
        replay_main(["--data", str(path), "--lockstep", "tick"])


def test_a_replayed_a_share_file_delivers_each_bars_amount_to_the_feed(mosquitto, shared_data):
    """The amount column reaches live consumers (bar v2), so a model's VWAP feature is the backtest's."""
    s = load_bars(shared_data / "qbot" / "600519.SH.csv").between(None, 1_263_168_000_000_000_000)  # 2010-01-11

    async def scenario():
        async with MqttFeed(mosquitto.url, [s.symbol], interval="1d") as feed:
            await feed.wait_ready()
            await replay([s], mosquitto.url, interval="1d")
            return [bar async for bar in feed]

    bars = run(scenario())
    assert [b.amount for b in bars] == [float(a) for a in s.extra["amount"]] and len(bars) == len(s) > 0
