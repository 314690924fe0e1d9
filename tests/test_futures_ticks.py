"""A tick backtest of a future: the vn.py file (ZCE rapeseed meal RM705, 2017-03-20, multiplier 10 CNY/point),
long and short, per-contract fees, 7% margin. Every fill's price (the ask for a buy, the bid for a sell, at the
first tick stamped after the order), commission, margin and PnL, and the equity curve, are computed here from
the raw CSV with the stdlib, independently of the engine."""
from __future__ import annotations

import csv
import datetime as dt

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, need
from tradeloop.brokers.costs import PerShareCommission
from tradeloop.brokers.instruments import Instrument, InstrumentTable
from tradeloop.brokers.quotes import QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.strategy import Strategy

RM_FILE = SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv"
MULT, RATE, FEE = 10.0, 0.07, 1.5   # ZCE RM: 10 t/lot; margin 7%; 1.5 CNY per lot
PLAN = {40: 3, 900: -5, 2500: 4, 6000: -3, 9000: 2, 15000: -1}   # long 3, short 2, long 2, short 1, long 1, flat


class TickPlan(Strategy):
    def __init__(self, plan):
        self.plan, self.n, self.seen = plan, -1, []

    def on_tick(self, ctx, tick):
        self.n += 1
        q = self.plan.get(self.n)
        if q:
            (ctx.buy if q > 0 else ctx.sell)(tick.symbol, abs(q))

    def on_fill(self, ctx, fill):
        pos = ctx._engine.portfolio.positions[fill.symbol]
        self.seen.append((fill, ctx.cash, ctx.equity, ctx.margin, ctx.position(fill.symbol), pos.realized_pnl))


def rules(settlement="bar") -> FillRules:
    inst = Instrument("RM*", asset_class="future", multiplier=MULT, margin=RATE, tick=1.0, qty_step=1,
                      commission=PerShareCommission(FEE), calendar="cn-commodity", settlement=settlement).check("t")
    return FillRules(instruments=InstrumentTable((inst,)))


def raw():
    rows = list(csv.DictReader(open(need(RM_FILE), newline="")))
    ts = [int((dt.datetime.strptime(r["date"] + " " + r["time"], "%Y%m%d %H:%M:%S.%f")
               - dt.datetime(1970, 1, 1)).total_seconds() * 1e9) for r in rows]
    return ts, [float(r["lastPrice"]) for r in rows], [float(r["bidPrice1"]) for r in rows], \
        [float(r["askPrice1"]) for r in rows]


@pytest.mark.parametrize("settlement", ["bar", "daily"])
def test_rm705_ticks_fills_fees_margin_pnl_by_hand(settlement):
    ts, last, bid, ask = raw()
    start = 100_000.0
    s = TickPlan(PLAN)
    res = run_tick_backtest(s, [load_ticks(RM_FILE, "RM705")], cash=start, rules=rules(settlement),
                            quotes=QuoteRules(size_limit=False))
    # by hand
    pos, avg, realized, fees, flows = 0.0, 0.0, 0.0, 0.0, 0.0
    hand = []
    for i, q in sorted(PLAN.items()):
        j = next(k for k in range(i + 1, len(ts)) if ts[k] > ts[i])   # the first tick stamped after the order
        px = ask[j] if q > 0 else bid[j]
        fee = FEE * abs(q)
        if pos == 0 or (pos > 0) == (q > 0):
            avg = (avg * abs(pos) + px * abs(q)) / abs(pos + q)
        else:
            realized += min(abs(q), abs(pos)) * (px - avg) * (1 if pos > 0 else -1) * MULT
            if abs(q) > abs(pos):
                avg = px
        pos += q
        fees += fee
        flows -= q * px * MULT
        hand.append((ts[j], q, px, fee, pos, realized, start - fees + flows + pos * last[j] * MULT,
                     abs(pos) * last[j] * MULT * RATE, fees))
    assert len(res.fills) == len(PLAN) == len(s.seen)
    assert any(h[4] < 0 for h in hand) and any(h[4] > 0 for h in hand)
    for f, (fts, q, px, fee, p, rpnl, eq, margin, paid), (_, cash, equity, m, held, real) in zip(res.fills, hand,
                                                                                                  s.seen):
        assert (f.ts, f.side.sign * f.qty, f.price) == (fts, q, px)
        assert f.commission == pytest.approx(fee, rel=1e-12)
        assert held == p and real == pytest.approx(rpnl, rel=1e-12, abs=1e-9)
        assert equity == pytest.approx(eq, rel=1e-12) and m == pytest.approx(margin, rel=1e-12)
        if settlement == "bar":
            assert cash == pytest.approx(eq, rel=1e-12)          # settled into cash at every tick it is marked
        else:
            assert cash == pytest.approx(start - paid, rel=1e-12)   # daily: only fees move cash intraday
    assert pos == 0.0
    final = start - fees + flows
    assert res.equity[-1] == pytest.approx(final, rel=1e-12)
    # the sampled equity curve: at each stamp, deposit - fees + flows + position x last price x 10
    t_arr = np.array(ts, np.int64)
    fill_ts = np.array([h[0] for h in hand], np.int64)
    for k, stamp in enumerate(res.ts):
        n = int(np.searchsorted(fill_ts, stamp, "right"))
        p = hand[n - 1][4] if n else 0.0
        fl = -sum(h[1] * h[2] * MULT for h in hand[:n])
        fe = hand[n - 1][8] if n else 0.0
        price = last[int(np.searchsorted(t_arr, stamp, "right")) - 1]
        assert res.equity[k] == pytest.approx(start - fe + fl + p * price * MULT, rel=1e-12), k
        assert res.gross_exposure[k] == pytest.approx(abs(p) * price * MULT, rel=1e-12)


def test_rm705_daily_settlement_settles_at_the_last_tick():
    ts, last, bid, ask = raw()
    start = 100_000.0
    plan = {40: 3}
    res = run_tick_backtest(TickPlan(plan), [load_ticks(RM_FILE, "RM705")], cash=start, rules=rules("daily"),
                            quotes=QuoteRules(size_limit=False))
    (f,) = res.fills
    settled = start - FEE * 3 + 3 * (last[-1] - f.price) * MULT
    assert res.cash[-1] == pytest.approx(settled, rel=1e-12) and res.equity[-1] == pytest.approx(settled, rel=1e-12)
    assert res.cash[-2] == pytest.approx(start - FEE * 3, rel=1e-12)
