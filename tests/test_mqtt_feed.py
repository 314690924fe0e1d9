"""MqttFeed and the replay publisher through a real Mosquitto broker.

Every test runs its asyncio code under a deadline, so a broken broker or feed fails the test
instead of hanging the suite.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.sim import FillRules
from tradeloop.data.loaders import load_bars
from tradeloop.data.mqtt import FeedStatus, MqttFeed, bar_topic, encode_bar_values, encode_tick, eos_topic, tick_topic
from tradeloop.data.replay import main as replay_main, replay
from tradeloop.data.schema import Bar, BarSeries, Tick
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.risk.pipeline import CashCheck, RiskPipeline
from tradeloop.strategies.sma_cross import SmaCross
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401  (the fixture, used by name)

DEADLINE = 20.0


def run(coro, seconds: float = DEADLINE):
    """Run ``coro`` to completion, failing the test if it takes longer than ``seconds``."""
    return asyncio.run(asyncio.wait_for(coro, seconds))


@pytest.fixture(scope="module")
def orcl(shared_data: Path) -> BarSeries:
    return load_bars(shared_data / "backtrader" / "orcl-2014.txt", "ORCL")


@pytest.fixture(scope="module")
def xshg(shared_data: Path) -> BarSeries:
    return load_bars(shared_data / "kronos" / "XSHG_5min_600977.csv", "600977.SH")


def columns(bars: list[Bar]) -> dict[str, bytes]:
    """The raw bytes of every field, to compare bit for bit."""
    return {"ts": np.array([b.ts for b in bars], np.int64).tobytes(),
            **{f: np.array([getattr(b, f) for b in bars], np.float64).tobytes()
               for f in ("open", "high", "low", "close", "volume")}}


def series_columns(s: BarSeries) -> dict[str, bytes]:
    return {"ts": s.ts.astype(np.int64).tobytes(),
            **{f: np.ascontiguousarray(getattr(s, f), np.float64).tobytes()
               for f in ("open", "high", "low", "close", "volume")}}


async def collect(feed: MqttFeed) -> list:
    return [event async for event in feed]


async def publish_raw(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``(topic, payload)`` pairs in order from one plain aiomqtt client."""
    async with aiomqtt.Client("127.0.0.1", int(url.rsplit(":", 1)[1])) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


# ------------------------------------------------------------------------------------------ delivery

def test_replay_delivers_exactly_the_loaded_bars_in_order_bit_for_bit(mosquitto, orcl, xshg):
    async def scenario():
        async with MqttFeed(mosquitto.url, ["ORCL"], interval="1d") as daily, \
                MqttFeed(mosquitto.url, ["600977.SH"], interval="5m") as intraday:
            await daily.wait_ready()
            await intraday.wait_ready()
            got_daily, got_5m, stats = await asyncio.gather(collect(daily), collect(intraday),
                                                            replay([orcl, xshg], mosquitto.url, qos=1))
            return got_daily, got_5m, stats, daily.stats, intraday.stats

    got_daily, got_5m, stats, s1, s2 = run(scenario())
    assert stats.published == len(orcl) + len(xshg)
    assert all(b.symbol == "ORCL" for b in got_daily) and columns(got_daily) == series_columns(orcl)
    assert all(b.symbol == "600977.SH" for b in got_5m) and columns(got_5m) == series_columns(xshg)
    assert s1.total_dropped == s2.total_dropped == 0 and s1.eos == s2.eos == 1


def test_topics_and_payloads_on_the_wire(mosquitto, orcl):
    """A plain MQTT client sees the documented topics, the v1 payload and the end marker, in (ts, symbol) order."""
    two = [BarSeries(sym, orcl.ts[:3], orcl.open[:3], orcl.high[:3], orcl.low[:3], orcl.close[:3], orcl.volume[:3])
           for sym in ("BBB", "AAA")]

    async def scenario():
        port = int(mosquitto.url.rsplit(":", 1)[1])
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe("md/#")
            await replay(two, mosquitto.url, venue="xnys")
            seen = []
            async for m in client.messages:
                seen.append((m.topic.value, json.loads(m.payload)))
                if m.topic.value.endswith("$eos"):
                    return seen

    seen = run(scenario())
    assert [t for t, _ in seen] == ["md/xnys/AAA/bar/1d", "md/xnys/BBB/bar/1d", "md/xnys/$clock"] * 3 + ["md/xnys/$eos"]
    assert [p for t, p in seen if t.endswith("$clock")] == [{"v": 1, "ts": int(ts)} for ts in orcl.ts[:3]]
    first = seen[0][1]
    assert first == {"v": 1, "ts": int(orcl.ts[0]), "o": orcl.open[0], "h": orcl.high[0], "l": orcl.low[0],
                     "c": orcl.close[0], "vol": orcl.volume[0]}
    assert seen[-1][1] == {"v": 1, "n": 6, "ts": int(orcl.ts[2])}


def test_no_symbol_list_means_every_symbol_of_the_venue(mosquitto, orcl):
    three = [BarSeries(sym, orcl.ts[:3], orcl.open[:3], orcl.high[:3], orcl.low[:3], orcl.close[:3], orcl.volume[:3])
             for sym in ("AAA", "BTC/USDT")]

    async def scenario():
        async with MqttFeed(mosquitto.url, None, interval="1d") as feed:
            await feed.wait_ready()
            got, _ = await asyncio.gather(collect(feed), replay(three, mosquitto.url))
            return got

    got = run(scenario())
    assert [(b.ts, b.symbol) for b in got] == [(int(t), s) for t in orcl.ts[:3] for s in ("AAA", "BTC/USDT")]


# ------------------------------------------------------------------------------------------ parity

def fills_of(fills):
    return [(f.ts, f.symbol, f.side, f.qty, f.price, f.commission) for f in fills]


@pytest.mark.parametrize("which, size, interval", [("orcl", 1000, "1d"), ("xshg", 100, "5m")])
def test_live_through_mosquitto_fills_like_the_backtest(mosquitto, which, size, interval, request):
    series = request.getfixturevalue(which)
    rules = FillRules(commission=PercentCommission(0.001))
    risk = RiskPipeline([CashCheck(rules.commission)])
    bt = run_backtest(SmaCross(size=size), [series], rules=rules, risk=risk)

    async def scenario():
        driver = LiveDriver(SmaCross(size=size), [series.symbol], rules=rules, risk=risk)
        async with MqttFeed(mosquitto.url, [series.symbol], interval=interval) as feed:
            await feed.wait_ready()
            engine, _ = await asyncio.gather(driver.run(feed), replay([series], mosquitto.url, qos=1))
        return engine, driver

    engine, driver = run(scenario())
    assert len(bt.fills) > 5
    assert fills_of(engine.fills) == fills_of(bt.fills)
    assert driver.equity.equity == list(bt.equity)


# ------------------------------------------------------------------------------------------ bad data

def test_out_of_order_and_duplicate_bars_are_dropped_and_counted(mosquitto):
    topic = bar_topic("sim", "X", "1m")

    def bar(ts: int) -> tuple[str, bytes]:
        return topic, encode_bar_values(ts, 10.0, 11.0, 9.0, 10.5, 100.0)

    async def scenario():
        async with MqttFeed(mosquitto.url, ["X"], interval="1m") as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, [bar(1), bar(2), bar(2), bar(1), bar(3), (eos_topic("sim"), b'{"v":1}')])
            return [b.ts for b in await collect(feed)], feed.stats

    got, stats = run(scenario())
    assert got == [1, 2, 3]
    assert stats.dropped == {"duplicate": 1, "out_of_order": 1}


def test_a_bar_or_tick_stamped_in_the_future_is_dropped_and_later_bars_still_flow(mosquitto):
    """One bad stamp (year 2100) must not become the symbol's last timestamp: every real bar after it
    would be dropped as out of order and the session's data would end without a word."""
    import time as _time

    now = _time.time_ns()
    future = now + 400 * 86_400 * 10**9
    topic = bar_topic("sim", "X", "1m")

    def bar(ts: int) -> tuple[str, bytes]:
        return topic, encode_bar_values(ts, 10.0, 11.0, 9.0, 10.5, 100.0)

    async def scenario():
        async with MqttFeed(mosquitto.url, ["X"], interval="1m", ticks=True) as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, [bar(now - 120), bar(future),
                                              (tick_topic("sim", "X"), encode_tick(Tick("X", future, 10.0, 1.0))),
                                              bar(now - 60), (eos_topic("sim"), b'{"v":1}')])
            return [(type(e).__name__, e.ts) for e in await collect(feed)], feed.stats

    got, stats = run(scenario())
    assert got == [("Bar", now - 120), ("Bar", now - 60)]
    assert stats.dropped == {"future": 2}


def test_ticks_flow_with_quotes_and_may_share_a_timestamp(mosquitto):
    topic = tick_topic("sim", "BTC/USDT")
    sent = [Tick("BTC/USDT", 1, 100.0, 0.5), Tick("BTC/USDT", 2, 100.5, 0.0, 100.4, 100.6, 3.0, 4.0),
            Tick("BTC/USDT", 2, 100.6, 1.0), Tick("BTC/USDT", 1, 99.0, 1.0)]  # the last one goes back in time

    async def scenario():
        async with MqttFeed(mosquitto.url, ["BTC/USDT"], bars=False, ticks=True) as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, [(topic, encode_tick(t)) for t in sent] + [(eos_topic("sim"), b'{"v":1}')])
            return await collect(feed), feed.stats

    got, stats = run(scenario())
    assert [t.symbol for t in got] == ["BTC/USDT"] * 3
    assert [encode_tick(t) for t in got] == [encode_tick(t) for t in sent[:3]]  # NaN quotes compare unequal
    assert stats.dropped == {"out_of_order": 1}


GOOD = {"v": 1, "o": 10.0, "h": 11.0, "l": 9.0, "c": 10.5, "vol": 100.0}
FIELDS = ["v", "ts", "o", "h", "l", "c", "vol"]
wrong_types = st.sampled_from(["10", None, True, [1.0], {"x": 1}])


@st.composite
def malformed(draw, ts: int) -> bytes:
    """One payload that breaks the v1 bar schema in a drawn way."""
    kind = draw(st.sampled_from(["bytes", "json", "missing", "extra", "type", "version", "nonfinite", "range"]))
    d = {**GOOD, "ts": ts}
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "json":
        return json.dumps(draw(st.lists(st.integers(), max_size=3) | st.text(max_size=10) | st.dictionaries(
            st.sampled_from(["a", "b", "v"]), st.integers(), max_size=3))).encode()
    if kind == "missing":
        del d[draw(st.sampled_from(FIELDS))]
    elif kind == "extra":
        d[draw(st.sampled_from(["x", "sym", "V", "volume"]))] = draw(st.integers() | st.text(max_size=5))
    elif kind == "type":
        d[draw(st.sampled_from(FIELDS))] = draw(wrong_types)
    elif kind == "version":
        d["v"] = draw(st.integers(-5, 1000).filter(lambda v: v != 1))
    elif kind == "nonfinite":
        d[draw(st.sampled_from(["o", "h", "l", "c", "vol"]))] = draw(st.sampled_from([float("nan"), float("inf")]))
    else:
        bad = draw(st.sampled_from([{"h": 8.0}, {"o": 12.0}, {"c": 1.0}, {"vol": -1.0}, {"l": -9.0}]))
        d.update(bad)
    return json.dumps(d).encode()  # NaN/Infinity come out as non-JSON tokens, as a careless publisher writes them


VENUES = iter(range(10 ** 6))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_payloads_are_counted_and_dropped_and_the_feed_carries_on(mosquitto, data):
    venue = f"fuzz{next(VENUES)}"
    topic = bar_topic(venue, "X", "1m")
    n_good = data.draw(st.integers(1, 6))
    messages, good = [], []
    for i in range(n_good):
        for _ in range(data.draw(st.integers(0, 4))):
            messages.append((topic, data.draw(malformed(ts=i + 1))))
        payload = encode_bar_values(i + 1, 10.0, 11.0, 9.0, 10.5, 100.0)
        messages.append((topic, payload))
        good.append(i + 1)
    n_bad = len(messages) - n_good

    async def scenario():
        async with MqttFeed(mosquitto.url, ["X"], venue=venue, interval="1m") as feed:
            await feed.wait_ready()
            await publish_raw(mosquitto.url, messages + [(eos_topic(venue), b'{"v":1}')])
            return [b.ts for b in await collect(feed)], feed.stats

    got, stats = run(scenario())
    assert got == good
    assert stats.total_dropped == n_bad
    assert stats.received == len(messages) + 1


# ------------------------------------------------------------------------------------------ staleness, reconnects

def test_a_silent_symbol_goes_stale_and_fresh_again(mosquitto):
    calls: list[tuple[str, str]] = []

    def bar(sym: str, ts: int) -> tuple[str, bytes]:
        return bar_topic("sim", sym, "1s"), encode_bar_values(ts, 10.0, 11.0, 9.0, 10.5, 1.0)

    async def scenario():
        async with MqttFeed(mosquitto.url, ["A", "B"], interval="1s", stale_after=0.3, status_events=True,
                            on_stale=lambda s: calls.append(("stale", s)),
                            on_fresh=lambda s: calls.append(("fresh", s))) as feed:
            await feed.wait_ready()
            consumer = asyncio.create_task(collect(feed))
            await publish_raw(mosquitto.url, [bar("A", 1), bar("B", 1)])
            for ts in range(2, 10):                     # A keeps reporting, B falls silent
                await asyncio.sleep(0.1)
                await publish_raw(mosquitto.url, [bar("A", ts)])
            assert feed.stale == {"B"}
            await publish_raw(mosquitto.url, [bar("B", 10), (eos_topic("sim"), b'{"v":1}')])
            events = await consumer
            return events, feed.stats

    events, stats = run(scenario())
    assert calls == [("stale", "B"), ("fresh", "B")]
    statuses = [(e.kind, e.symbol) for e in events if isinstance(e, FeedStatus)]
    assert statuses == [("stale", "B"), ("fresh", "B")]
    assert sum(isinstance(e, Bar) for e in events) == 11
    assert (stats.stale_events, stats.fresh_events) == (1, 1)


def test_feed_survives_a_broker_restart_with_a_stale_spell_in_between(mosquitto: Mosquitto, orcl):
    first, rest = orcl.between(None, int(orcl.ts[5])), orcl.between(int(orcl.ts[5]), None)
    stale: list[str] = []
    fresh: list[str] = []

    async def scenario():
        # stale_after well above any pause a loaded CI machine puts between two replayed bars
        async with MqttFeed(mosquitto.url, ["ORCL"], stale_after=1.0, backoff=(0.05, 0.3),
                            on_stale=stale.append, on_fresh=fresh.append) as feed:
            await feed.wait_ready()
            consumer = asyncio.create_task(collect(feed))
            await replay([first], mosquitto.url, eos=False)
            while feed.stats.delivered < len(first):
                await asyncio.sleep(0.01)
            mosquitto.kill()                                   # the broker dies
            while not stale:
                await asyncio.sleep(0.02)
            assert not feed.ready
            await asyncio.to_thread(mosquitto.start)           # and comes back on the same port
            while not (feed.ready and feed.stats.connects >= 2):
                await asyncio.sleep(0.02)
            await replay([rest], mosquitto.url)
            return await consumer, feed.stats

    got, stats = run(scenario())
    assert columns(got) == series_columns(orcl)
    assert stale[0] == "ORCL" and fresh[0] == "ORCL"   # the outage's stale spell, ended by the first bar after it
    assert len(stale) == len(fresh)                    # every spell ended
    assert stats.connects >= 2 and stats.disconnects >= 1


def test_feed_started_before_the_broker_connects_when_it_appears(tmp_path, orcl):
    broker = Mosquitto(tmp_path)

    async def scenario():
        async with MqttFeed(broker.url, ["ORCL"], backoff=(0.05, 0.2)) as feed:
            await asyncio.sleep(0.3)                            # refused a few times meanwhile
            assert feed.stats.connects == 0
            await asyncio.to_thread(broker.start)
            await feed.wait_ready(5)
            got, _ = await asyncio.gather(collect(feed), replay([orcl.between(None, int(orcl.ts[3]))], broker.url))
            return got

    try:
        assert len(run(scenario())) == 3
    finally:
        broker.stop()


# ------------------------------------------------------------------------------------------ replay

def test_replay_paces_at_a_multiple_of_real_time(mosquitto, xshg):
    five = xshg.between(None, int(xshg.ts[5]))          # 5-minute bars, with the lunch break
    market_seconds = (int(five.ts[-1]) - int(five.ts[0])) / 1e9
    speed = market_seconds / 0.4                         # the whole span in 0.4 s of wall time

    async def scenario():
        t0 = time.perf_counter()
        stats = await replay([five], mosquitto.url, speed=speed)
        return time.perf_counter() - t0, stats

    elapsed, stats = run(scenario())
    assert stats.published == 5
    assert 0.39 <= elapsed < 1.5


def test_replay_command_line(mosquitto, orcl, shared_data, capsys):
    path = shared_data / "backtrader" / "orcl-2014.txt"

    async def scenario():
        async with MqttFeed(mosquitto.url, ["ORCL"], venue="cli") as feed:
            await feed.wait_ready()
            argv = ["--data", f"ORCL={path}", "--mqtt", mosquitto.url, "--venue", "cli", "--qos", "1"]
            got, code = await asyncio.gather(collect(feed), asyncio.to_thread(replay_main, argv))
            return got, code

    got, code = run(scenario())
    assert code == 0 and len(got) == len(orcl)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["published"] == len(orcl) and out["symbols"] == 1


def test_replay_refuses_credentials_on_the_command_line(mosquitto, shared_data, capsys):
    url = mosquitto.url.replace("mqtt://", "mqtt://trader:cmdline-pw-9@")
    code = replay_main(["--data", str(shared_data / "backtrader" / "orcl-2014.txt"), "--mqtt", url])
    err = capsys.readouterr().err
    assert code == 1 and "TRADELOOP_MQTT_PASSWORD" in err and "cmdline-pw-9" not in err
