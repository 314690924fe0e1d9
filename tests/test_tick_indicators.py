"""Indicators over tick fields (``ctx.indicator("ema", "mid", n=...)``): computed batch over the whole
TickSeries in a tick backtest, streaming live, the same values bit for bit, none reading past the current tick."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradeloop.data.indicators import INDICATORS
from tradeloop.data.schema import Tick, TickSeries
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.market import TICK_FIELDS, StreamingMarket
from tradeloop.engine.loop.strategy import Strategy
from tests.conftest import SHARED_DATA, need

ROOT = Path(__file__).resolve().parents[1]
VNPY = SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv"
SPECS = [("ema", {"n": 50}), ("sma", {"n": 20}), ("rolling_std", {"n": 30}), ("ema", {"n": 2})]


def same(a, b) -> bool:
    """Bit for bit (NaN == NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool((a.view(np.int64) == b.view(np.int64)).all())


def tick_list(s: TickSeries) -> list[Tick]:
    cols = [getattr(s, c).tolist() for c in ("ts", "price", "size", "bid", "ask", "bid_size", "ask_size")]
    return [Tick(s.symbol, *row) for row in zip(*cols)]


class Record(Strategy):
    """Reads the tick indicators and fields on every tick."""

    def on_start(self, ctx):
        self.inds = [ctx.indicator(name, "mid", **kw) for name, kw in SPECS]
        self.mid = ctx.field("mid")
        self.spread = ctx.field("spread")
        self.seen: dict[str, list] = {}
        self.count: dict[str, int] = {}

    def on_tick(self, ctx, t):
        s = t.symbol
        n = self.count[s] = self.count.get(s, 0) + 1
        assert len(self.mid.window(s, 10**9)) == n                 # nothing past the current tick
        assert self.mid[s] == (t.bid + t.ask) * 0.5 and self.spread[s] == t.ask - t.bid
        assert self.mid.get(s, ago=n) != self.mid.get(s, ago=n)   # before the first tick: NaN
        self.seen.setdefault(s, []).append([ind[s] for ind in self.inds])


@pytest.fixture(scope="module")
def rm() -> TickSeries:
    return load_ticks(need(VNPY))


def test_batch_equals_streaming_on_vnpy(rm):
    strat = Record()
    run_tick_backtest(strat, [rm])
    got = np.array(strat.seen[rm.symbol])
    assert len(got) == len(rm)
    mid = (rm.bid.astype(np.float64) + rm.ask.astype(np.float64)) * 0.5
    live = StreamingMarket([rm.symbol])
    streams = [live.indicator(name, "mid", **kw) for name, kw in SPECS]
    vals = []
    for t in tick_list(rm):
        live.on_tick(t)
        vals.append([s[rm.symbol] for s in streams])
    vals = np.array(vals)
    for k, (name, kw) in enumerate(SPECS):
        batch = INDICATORS[name].batch(mid, **kw)
        assert np.isfinite(batch[-1])
        assert same(got[:, k], batch), name          # the backtest reads the batch values, tick by tick
        assert same(vals[:, k], batch), name         # live streaming: the same bits
    assert same(live.field("mid").window(rm.symbol, 10**9), mid)


def test_no_lookahead_truncated_series_gives_same_prefix(rm):
    k = 700
    full, part = Record(), Record()
    run_tick_backtest(full, [rm])
    run_tick_backtest(part, [rm.between(None, int(rm.ts[k]))])
    n = len(part.seen[rm.symbol])
    assert same(np.array(full.seen[rm.symbol][:n]), np.array(part.seen[rm.symbol]))


def _series(symbol, ts, bid, ask) -> TickSeries:
    n = len(ts)
    return TickSeries(symbol, np.asarray(ts, np.int64), np.arange(n, dtype=np.int64), np.full(n, np.nan),
                      np.zeros(n), np.asarray(bid, float), np.asarray(ask, float), np.ones(n), np.ones(n),
                      np.zeros(n, np.int8))


def test_two_symbols_merged_rows():
    a = _series("A", [1, 3, 5, 7, 9], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6])
    b = _series("B", [2, 3, 6], [10, 20, 30], [11, 21, 31])
    strat = Record()
    run_tick_backtest(strat, [a, b])
    for s in (a, b):
        mid = (s.bid + s.ask) * 0.5
        got = np.array(strat.seen[s.symbol])
        assert got.shape == (len(s), len(SPECS))
        for k, (name, kw) in enumerate(SPECS):
            assert same(got[:, k], INDICATORS[name].batch(mid, **kw))
    assert strat.seen["B"][-1][1] != strat.seen["B"][-1][1]      # sma(20) of 3 ticks: NaN


class OnTimer(Strategy):
    """No on_tick: a timer reads the mid (the skipped ticks still move the tick rows)."""

    def on_start(self, ctx):
        self.mid, self.ema = ctx.field("mid"), ctx.indicator("ema", "ask", n=2)
        self.read = []
        ctx.set_timer("t", 4, start=4)

    def on_timer(self, ctx, name):
        self.read.append((ctx.now, self.mid["A"], self.ema["A"]))


def test_timer_reads_current_tick_without_on_tick():
    a = _series("A", [1, 2, 3, 4, 5, 6, 7, 8, 9], range(9), range(1, 10))
    strat = OnTimer()
    run_tick_backtest(strat, [a])
    ema = INDICATORS["ema"].batch(np.arange(1, 10, dtype=float), n=2)
    # the timer due at 4 fires before on_tick of the tick stamped 4: that tick is current
    assert [(t, m) for t, m, _ in strat.read] == [(4, 3.5), (8, 7.5)]
    assert [e for _, _, e in strat.read] == [ema[3], ema[7]]


def test_tick_fields_listed_and_mixing_refused(rm):
    assert TICK_FIELDS == ("price", "size", "bid", "ask", "mid", "spread", "bid_size", "ask_size")

    class Late(Strategy):
        def on_tick(self, ctx, t):
            ctx.indicator("ema", "mid", n=3)

    with pytest.raises(ValueError, match="on_start"):
        run_tick_backtest(Late(), [rm.between(None, int(rm.ts[10]))])
    live = StreamingMarket(["X"])
    with pytest.raises(ValueError, match="mixes tick fields and bar fields"):
        live.indicator("crossover", "mid", "close")
