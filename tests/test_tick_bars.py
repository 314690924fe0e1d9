"""Bars built from ticks inside a run (``ctx.subscribe(symbol, tf, source="ticks")``) are the same in a tick
backtest and in a paper session fed the same ticks over MQTT, and equal ``bars_from_ticks`` on the file.

The strategy records every closed bar with the stamp of the event that delivered it (``ctx.now``) and writes
them in ``on_stop``; it also trades on the closed bars, so the orders placed in ``on_timeframe_bar`` are checked
for parity too (the fills of both runs must be equal).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tradeloop.data.resample import bars_from_ticks
from tradeloop.data.schema import TickSeries
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.strategy import Param, Strategy
from tests.test_live_parity import live_procs_mosquitto, run_fills
from tests.test_paper_ticks import VNPY, _ns, tick_config

END = "2017-03-20 09:25:00"   # about 3,000 ticks (500 ms snapshots from 09:00)
NS_MIN = 60_000_000_000


class TickBars(Strategy):
    """Subscribes to bars built from its ticks; buys ``size`` after an up bar while flat, sells after a down one."""

    timeframe = Param("1m", "the bars built from the ticks")
    sessions = Param("cn-commodity", "session preset of the bars")
    label = Param("end", "bar labels", choices=("end", "start"))
    size = Param(1.0, "lots per entry", min=0.0)
    out = Param("", "write the bars seen (JSON) here in on_stop")

    def on_start(self, ctx):
        self.seen = []
        for s in ctx.symbols:
            ctx.subscribe(s, self.timeframe, self.sessions or None, label=self.label, source="ticks")

    def on_timeframe_bar(self, ctx, timeframe, bar):
        view = ctx.timeframe(bar.symbol, timeframe)
        assert view.last is bar
        self.seen.append([ctx.now, bar.symbol, timeframe, bar.ts, bar.open, bar.high, bar.low, bar.close,
                          bar.volume, bar.amount])
        pos = ctx.position(bar.symbol)
        if self.size and bar.close > bar.open and pos == 0:
            ctx.buy(bar.symbol, self.size)
        elif bar.close < bar.open and pos > 0:
            ctx.sell(bar.symbol, pos)

    def on_stop(self, ctx):
        if self.out:
            with open(self.out, "w") as f:
                json.dump(self.seen, f)


def _ticks(end: str = END) -> TickSeries:
    return load_ticks(VNPY).between(None, _ns(end))


def _rows(bars) -> list[list]:
    amount = bars.extra["amount"]
    return [[bars.symbol, "1m", int(bars.ts[i]), float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
             float(bars.close[i]), float(bars.volume[i]), float(amount[i])] for i in range(len(bars))]


def _backtest(ticks: TickSeries, **params):
    strat = TickBars(**params)
    res = run_tick_backtest(strat, [ticks], cash=1_000_000.0)
    return strat.seen, res


@pytest.mark.parametrize("label", ["end", "start"])
def test_tick_backtest_bars_equal_bars_from_ticks_and_close_at_the_first_later_event(label):
    if not VNPY.exists():
        pytest.skip(f"{VNPY} is not there")
    ticks = _ticks()
    seen, res = _backtest(ticks, label=label)
    expected = _rows(bars_from_ticks(ticks, "1m", "cn-commodity", label=label))
    assert len(expected) >= 20
    assert [r[1:] for r in seen] == expected            # bar for bar, the last one flushed at the end
    stamps = ticks.ts
    for (now, _s, _tf, ts, *_rest) in seen[:-1]:
        end = ts if label == "end" else ts + NS_MIN
        # delivered at the first tick after the bar's end (start labels: at or after it)
        first = stamps[np.searchsorted(stamps, end, "right" if label == "end" else "left")]
        assert now == first
    assert seen[-1][0] == int(stamps[-1])               # the open bar closes at the end of the data
    assert len(res.fills) >= 4                          # orders placed in on_timeframe_bar trade


def test_live_driver_builds_the_same_bars_as_the_tick_backtest():
    """In-process: the live driver (Engine.tick per tick, as in a live session) sees the backtest's bars."""
    if not VNPY.exists():
        pytest.skip(f"{VNPY} is not there")
    ticks = _ticks()
    seen, _ = _backtest(ticks, size=0.0)
    strat = TickBars(size=0.0)
    driver = LiveDriver(strat, [ticks.symbol], cash=1_000_000.0)
    driver.start()
    for i in range(len(ticks)):
        driver.feed(ticks.tick(i))
    driver.finish()
    assert strat.seen == seen


def test_subscribe_from_ticks_refuses_a_clash_and_a_bad_source():
    class Both(Strategy):
        def on_start(self, ctx):
            ctx.subscribe("RM705", "1m", source="ticks")
            with pytest.raises(ValueError, match="already subscribed"):
                ctx.subscribe("RM705", "1m")
            with pytest.raises(ValueError, match="source"):
                ctx.subscribe("RM705", "5m", source="quotes")
            self.ok = True

    if not VNPY.exists():
        pytest.skip(f"{VNPY} is not there")
    s = Both()
    run_tick_backtest(s, [_ticks("2017-03-20 09:00:05")])
    assert s.ok


def test_paper_session_builds_the_tick_backtests_bars(tmp_path):
    """vn.py ticks replayed over MQTT in lockstep to the live runner (paper): the bars its strategy saw, and
    when it saw them, equal the tick backtest's and ``bars_from_ticks``; the fills are equal too."""
    if live_procs_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if not VNPY.exists():
        pytest.skip(f"{VNPY} is not there")
    from tradeloop.engine.live.paper import paper
    from tradeloop.engine.assembly.build import build_quotes, build_rules
    out = tmp_path / "bars.json"
    cfg = tick_config()
    cfg.run.strategy, cfg.run.end = "tests.test_tick_bars:TickBars", END
    cfg.params = {"out": str(out), "size": 1.0}
    ticks = _ticks()
    strat = TickBars(size=1.0)
    res = run_tick_backtest(strat, [ticks], cash=cfg.run.cash, rules=build_rules(cfg), quotes=build_quotes(cfg))
    _, folder = paper(copy.deepcopy(cfg), out=tmp_path / "paper")
    got = json.loads(out.read_text())
    assert got == strat.seen                                         # bars and delivery stamps, bar for bar
    assert [r[1:] for r in got] == _rows(bars_from_ticks(ticks, "1m", "cn-commodity"))
    fills = run_fills(folder)
    assert fills.height == len(res.fills) >= 4
    assert fills["ts"].to_list() == [f.ts for f in res.fills]
    assert fills["price"].to_list() == [float(f.price) for f in res.fills]
    assert fills["side"].to_list() == [f.side.value for f in res.fills]


# -- ticks sharing a stamp: an order sees only ticks stamped later, in a backtest as in paper ----------------
TICKSAMPLE = VNPY.parent.parent / "backtrader" / "ticksample.csv"   # trade-only ticks, one repeated stamp


class TradeAt(Strategy):
    """Buys 1 on the ticks numbered in ``at`` (counted from 0), alternating with sells."""

    at = Param("21,40,60,80", "tick numbers to trade on")

    def on_start(self, ctx):
        self.n, self.buy = 0, True
        self.marks = {int(x) for x in self.at.split(",")}

    def on_tick(self, ctx, t):
        if self.n in self.marks:
            (ctx.buy if self.buy else ctx.sell)(t.symbol, 1.0)
            self.buy = not self.buy
        self.n += 1


def test_an_order_never_fills_on_a_later_tick_of_its_own_stamp():
    if not TICKSAMPLE.exists():
        pytest.skip(f"{TICKSAMPLE} is not there")
    t = load_ticks(TICKSAMPLE)
    assert t.ts[21] == t.ts[22] < t.ts[23]              # placed on tick 21: tick 22 shares its stamp
    res = run_tick_backtest(TradeAt(), [t])
    first = res.fills[0]
    assert first.ts == int(t.ts[23]) and first.price == float(t.price[23])
    assert all(f.ts > o.created_ts for f in res.fills for o in res.orders if o.id == f.order_id)


def test_ticks_sharing_a_stamp_fill_the_same_in_paper_and_backtest(tmp_path):
    if live_procs_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if not TICKSAMPLE.exists():
        pytest.skip(f"{TICKSAMPLE} is not there")
    from tradeloop.engine.assembly.build import build_quotes, build_rules
    from tradeloop.engine.config.run import DataSpec
    from tradeloop.engine.live.paper import paper
    cfg = tick_config()
    cfg.run.strategy, cfg.run.end, cfg.params = "tests.test_tick_bars:TradeAt", None, {}
    cfg.data = [DataSpec(str(TICKSAMPLE), kind="ticks")]
    res = run_tick_backtest(TradeAt(), [load_ticks(TICKSAMPLE)], cash=cfg.run.cash, rules=build_rules(cfg),
                            quotes=build_quotes(cfg))
    _, folder = paper(copy.deepcopy(cfg), out=tmp_path / "paper")
    fills = run_fills(folder)
    assert fills.height == len(res.fills) == 4
    assert fills["ts"].to_list() == [f.ts for f in res.fills]
    assert fills["price"].to_list() == [float(f.price) for f in res.fills]
    assert fills["side"].to_list() == [f.side.value for f in res.fills]
