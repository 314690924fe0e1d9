"""Tick backtests (engine/drivers/ticks.py) and quote-aware fills (brokers/quotes.py)."""
from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.orders import OrderStatus, Side
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import BarSeries, TickSeries
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.strategy import Strategy
from tests.conftest import SHARED, SHARED_DATA, need

ROOT = Path(__file__).resolve().parents[1]
VNPY = SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv"
BENCH = SHARED / "bench" / "ticks"
FREE = FillRules(commission=PercentCommission(0.0))
MS = 1_000_000


def ticks(symbol="X", ts=(), bid=None, ask=None, bid_size=None, ask_size=None, price=None, size=None):
    n = len(ts)
    nan = np.full(n, np.nan)
    f = lambda v, d: np.asarray(v, float) if v is not None else d  # noqa: E731
    return TickSeries(symbol, np.asarray(ts, np.int64), np.arange(n, dtype=np.int64), f(price, nan),
                      f(size, np.zeros(n)), f(bid, nan), f(ask, nan), f(bid_size, np.zeros(n)),
                      f(ask_size, np.zeros(n)), np.zeros(n, np.int8))


def vnpy(n: int | None = None) -> TickSeries:
    """The real vn.py L1 file, read with the stdlib (ts naive wall time as UTC)."""
    rows = list(csv.DictReader(open(need(VNPY))))[:n]
    ts = [int((dt.datetime.strptime(r["date"] + " " + r["time"], "%Y%m%d %H:%M:%S.%f")
               - dt.datetime(1970, 1, 1)).total_seconds() * 1e9) for r in rows]
    g = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    return ticks("RM705", ts, g("bidPrice1"), g("askPrice1"), g("bidVolume1"), g("askVolume1"),
                 g("lastPrice"), g("lastVolume"))


class Once(Strategy):
    """Places the given orders on tick number ``at``."""

    def __init__(self, orders, at=0, **kw):
        super().__init__(**kw)
        self.plan, self.at, self.n = orders, at, -1

    def on_tick(self, ctx, tick):
        self.n += 1
        if self.n == self.at:
            for side, qty, kw in self.plan:
                (ctx.buy if side == "buy" else ctx.sell)(tick.symbol, qty, **kw)


def test_market_buy_fills_at_next_ask_and_sell_at_bid():
    s = ticks(ts=[0, 1, 2, 3], bid=[99, 100, 101, 102], ask=[100, 101, 102, 103], bid_size=[5] * 4, ask_size=[5] * 4)
    r = run_tick_backtest(Once([("buy", 2, {})], at=0), [s], rules=FREE)
    assert [(f.ts, f.price, f.qty) for f in r.fills] == [(1, 101.0, 2.0)]
    r = run_tick_backtest(Once([("sell", 2, {})], at=1), [s], rules=FREE)
    assert [(f.ts, f.side, f.price) for f in r.fills] == [(2, Side.SELL, 101.0)]


def test_partial_fills_at_displayed_size_and_ioc():
    s = ticks(ts=[0, 1, 2, 3], bid=[99] * 4, ask=[100, 100, 101, 102], ask_size=[9, 30, 40, 40], bid_size=[1] * 4)
    r = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE)
    assert [(f.ts, f.price, f.qty) for f in r.fills] == [(1, 100.0, 30.0), (2, 101.0, 20.0)]
    r = run_tick_backtest(Once([("buy", 50, {"tif": "IOC"})]), [s], rules=FREE)
    assert [(f.price, f.qty) for f in r.fills] == [(100.0, 30.0)]
    assert r.orders[0].status is OrderStatus.CANCELLED
    r = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE, quotes=QuoteRules(size_limit=False))
    assert [(f.price, f.qty) for f in r.fills] == [(100.0, 50.0)]


def test_latency_picks_a_later_quote():
    # docs/fills.md's example: buy 50 at t=0 with 200 ms latency; the 100 ms quote is not seen
    s = ticks(ts=[0, 100 * MS, 250 * MS, 500 * MS], bid=[98, 98, 99, 100], ask=[99, 99.5, 100, 101],
              ask_size=[10, 100, 30, 40], bid_size=[1] * 4)
    lat = QuoteRules(latency=Latency(entry_ns=150 * MS, data_ns=50 * MS))
    r = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE, quotes=lat)
    assert [(f.ts, f.price, f.qty) for f in r.fills] == [(250 * MS, 100.0, 30.0), (500 * MS, 101.0, 20.0)]
    r = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE)      # no latency: the 100 ms quote
    assert [(f.ts, f.price, f.qty) for f in r.fills] == [(100 * MS, 99.5, 50.0)]
    jit = QuoteRules(latency=Latency(entry_ns=0, jitter="exponential", jitter_ns=200 * MS, seed=1))
    a = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE, quotes=jit).fills
    b = run_tick_backtest(Once([("buy", 50, {})]), [s], rules=FREE, quotes=jit).fills
    assert a == b   # seeded: repeatable


def test_limit_fills_when_opposite_quote_reaches_price():
    s = ticks(ts=range(5), bid=[99, 99, 98, 97, 96], ask=[101, 101, 100.5, 99.5, 98], ask_size=[5] * 5,
              bid_size=[5] * 5, price=[100, 100, 99, 99, 97], size=[5] * 5)
    r = run_tick_backtest(Once([("buy", 3, {"limit": 100.0})]), [s], rules=FREE)
    assert [(f.ts, f.price) for f in r.fills] == [(3, 100.0)]          # rests; ask 99.5 <= 100: at the limit
    r = run_tick_backtest(Once([("buy", 3, {"limit": 102.0})]), [s], rules=FREE)
    assert [(f.ts, f.price) for f in r.fills] == [(1, 101.0)]          # marketable on arrival: the ask
    r = run_tick_backtest(Once([("buy", 3, {"limit": 99.0})]), [s], rules=FREE,
                          quotes=QuoteRules(limit_on="trade"))
    assert [(f.ts, f.price) for f in r.fills] == [(4, 99.0)]           # trade 97 prints through 99
    r = run_tick_backtest(Once([("buy", 3, {"limit": 99.0})]), [s], rules=FREE,
                          quotes=QuoteRules(limit_on="trade", trade_through=False))
    assert [(f.ts, f.price) for f in r.fills] == [(2, 99.0)]           # a trade at the limit is enough


def test_trades_only_fill_at_next_trade():
    s = ticks(ts=range(3), price=[10, 11, 12], size=[0, 3, 5])
    r = run_tick_backtest(Once([("buy", 4, {})]), [s], rules=FREE)
    assert [(f.ts, f.price, f.qty) for f in r.fills] == [(1, 11.0, 3.0), (2, 12.0, 1.0)]


class Recorder(Strategy):
    def __init__(self, timer=None, **kw):
        super().__init__(**kw)
        self.seen, self.timer = [], timer

    def on_start(self, ctx):
        if self.timer:
            ctx.set_timer("t", self.timer, start=self.timer)

    def on_tick(self, ctx, tick):
        self.seen.append(("tick", tick.symbol, tick.ts, ctx.now))

    def on_bar(self, ctx, bar):
        self.seen.append(("bar", bar.symbol, bar.ts, ctx.now))

    def on_timer(self, ctx, name):
        self.seen.append(("timer", name, ctx.now, ctx.now))


def test_tick_and_bar_merge_order():
    a = ticks("A", ts=[1, 2, 2, 3], price=[1, 2, 3, 4], size=[1] * 4)
    b = ticks("B", ts=[2, 3], price=[5, 6], size=[1] * 2)
    one = np.ones(2)
    bars = BarSeries("A", np.array([2, 3], np.int64), one, one, one, one, one)
    rec = Recorder()
    r = run_tick_backtest(rec, [b, a], [bars], rules=FREE)
    # equal stamps: the bar group first (LiveDriver flushes bars before a tick), then ticks by (seq, symbol)
    assert [e[:3] for e in rec.seen] == [("tick", "A", 1), ("bar", "A", 2), ("tick", "B", 2), ("tick", "A", 2),
                                         ("tick", "A", 2), ("bar", "A", 3), ("tick", "B", 3), ("tick", "A", 3)]
    assert all(e[3] == e[2] for e in rec.seen)   # ctx.now is the event's stamp
    assert r.bars == 8


def test_timers_fire_on_ticks():
    s = ticks(ts=[0, 5, 10, 12, 31], price=[1] * 5, size=[1] * 5)
    rec = Recorder(timer=10)
    run_tick_backtest(rec, [s], rules=FREE)
    assert [e[0] for e in rec.seen] == ["tick", "tick", "timer", "tick", "tick", "timer", "tick"]
    assert [e[2] for e in rec.seen if e[0] == "timer"] == [10, 31]

    class NoTick(Strategy):   # no on_tick: ticks skipped, but timers still fire on them
        def on_start(self, ctx):
            self.fired = []
            ctx.set_timer("t", 10, start=10)

        def on_timer(self, ctx, name):
            self.fired.append(ctx.now)
            ctx.buy("X", 1)

    q = ticks(ts=[0, 5, 10, 12, 31], bid=[1, 2, 3, 4, 5], ask=[2, 3, 4, 5, 6], ask_size=[9] * 5, bid_size=[9] * 5)
    st = NoTick()
    r = run_tick_backtest(st, [q], rules=FREE)
    assert st.fired == [10, 31]
    assert [(f.ts, f.price) for f in r.fills] == [(12, 5.0)]


class EmaCross(Strategy):
    def on_start(self, ctx):
        self.ema = self.prev = 0.0
        self.first = True

    def on_tick(self, ctx, t):
        mid = (t.bid + t.ask) / 2.0
        if self.first:
            self.ema, self.first = mid, False
            return
        ema = self.ema = self.ema + 0.01 * (mid - self.ema)
        d = mid - ema
        prev, self.prev = self.prev, d
        if prev <= 0.0 < d:
            if ctx.position(t.symbol) == 0:
                ctx.buy(t.symbol, 1)
        elif prev >= 0.0 > d and ctx.position(t.symbol) == 1:
            ctx.sell(t.symbol, 1)


def test_real_vnpy_ticks_market_orders_fill_at_quotes():
    s = vnpy(2000)
    r = run_tick_backtest(EmaCross(), [s], rules=FREE, cash=1e6)
    assert r.fills
    ask = dict(zip(s.ts.tolist(), s.ask.tolist()))
    bid = dict(zip(s.ts.tolist(), s.bid.tolist()))
    for f in r.fills:
        assert f.price == (ask[f.ts] if f.side is Side.BUY else bid[f.ts])
        assert f.qty == 1.0
    assert r.equity[-1] == pytest.approx(r.cash[-1] + sum(1 if f.side is Side.BUY else -1 for f in r.fills)
                                         * s.price[-1])


def test_ema_reproduces_ref_py(tmp_path):
    out = tmp_path / "ticks" / "ticks_100k.csv"
    out.parent.mkdir()
    need(BENCH / "make_ticks.py")
    subprocess.run([sys.executable, str(BENCH / "make_ticks.py"), "--n", "100000", "--out", str(out)], check=True,
                   capture_output=True)
    rows = list(csv.reader(open(out)))[1:]
    ts = np.array([np.datetime64(r[0].replace(" ", "T"), "ns").astype(np.int64) for r in rows])
    col = lambda i: np.array([float(r[i]) for r in rows])  # noqa: E731
    s = ticks("RM", ts, col(1), col(2), col(3), col(4), col(5), col(6))
    # ref_py.run_sma on the same arrays: the expected fills
    sys.path.insert(0, str(BENCH))
    import ref_py
    import tickcommon as tc
    n, expected = ref_py.run_sma(s.ts.tolist(), s.bid.tolist(), s.ask.tolist())
    r = run_tick_backtest(EmaCross(), [s], rules=FREE, cash=10_000_000.0, quotes=QuoteRules(size_limit=False))
    got = [(f.ts, 1 if f.side is Side.BUY else -1, f.price) for f in r.fills]
    assert len(got) == len(expected) > 1000
    assert tc.digest(got) == tc.digest(expected)
    assert tc.pnl(got, s.bid, s.ask) == tc.pnl(expected, s.bid, s.ask)


# ----------------------------------------------------------------- the same rules, specified on the real vn.py file
def _first_at_or_after(s: TickSeries, after: int, t: int) -> int:
    """The first tick index after ``after`` stamped at or after ``t``."""
    return next(i for i in range(after + 1, len(s)) if s.ts[i] >= t)


def test_real_file_latency_decides_which_quote_a_market_order_first_sees():
    s = vnpy(400)
    at = 100
    for entry_ms, data_ms in ((0, 0), (700, 0), (1200, 300), (4000, 1000)):
        rules = QuoteRules(size_limit=False, latency=Latency(entry_ns=entry_ms * MS, data_ns=data_ms * MS))
        r = run_tick_backtest(Once([("buy", 1, {})], at=at), [s], rules=FREE, quotes=rules)
        arrive = int(s.ts[at]) + (entry_ms + data_ms) * MS
        j = _first_at_or_after(s, at, arrive + (1 if entry_ms + data_ms == 0 else 0))
        assert [(f.ts, f.price) for f in r.fills] == [(int(s.ts[j]), float(s.ask[j]))], (entry_ms, data_ms)


def test_real_file_market_order_fills_at_most_the_displayed_size_tick_by_tick():
    s = vnpy(400)
    at, qty = 50, float(s.ask_size[51] + s.ask_size[52] + 1)   # more than the next two asks show
    r = run_tick_backtest(Once([("buy", qty, {})], at=at), [s], rules=FREE, cash=10_000_000.0)
    fills = [(f.ts, f.price, f.qty) for f in r.fills]
    assert fills[:2] == [(int(s.ts[51]), float(s.ask[51]), float(s.ask_size[51])),
                         (int(s.ts[52]), float(s.ask[52]), float(s.ask_size[52]))]
    assert sum(f[2] for f in fills) == qty and all(q <= float(s.ask_size[np.searchsorted(s.ts, t)]) for t, _, q in fills)


def test_real_file_limit_buy_rests_until_the_ask_reaches_it_and_fills_at_the_limit():
    s = vnpy(3000)
    at = 500
    limit = float(s.ask[at + 1:].min())   # the lowest ask to come (2392, four points under the ask at 500)
    assert limit < s.ask[at + 1]          # so the order cannot take the next quote: it rests
    r = run_tick_backtest(Once([("buy", 1, {"limit": limit})], at=at), [s], rules=FREE,
                          quotes=QuoteRules(size_limit=False))
    j = at + 1 + int(np.argmax(s.ask[at + 1:] <= limit))   # the first later tick whose ask reaches it
    assert j > at + 1
    assert [(f.ts, f.price) for f in r.fills] == [(int(s.ts[j]), limit)]
