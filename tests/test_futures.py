"""Futures accounting (brokers/instruments.py asset_class "future"; engine/loop/portfolio.py module doc):
notional x multiplier, margin instead of cash, long and short, marked to market into cash every bar,
liquidation below maintenance margin. The IF1706 run is checked against a hand computation made here from
the raw CSV, independently of the engine."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, need
from tradeloop.brokers.costs import PercentCommission, PerShareCommission
from tradeloop.brokers.instruments import Instrument, InstrumentTable
from tradeloop.brokers.orders import OrderStatus
from tradeloop.brokers.sim import FillRules
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import BarSeries
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.risk.build import build_pipeline
from tradeloop.risk.config import RiskSection

IF_FILE = SHARED_DATA / "rqalpha" / "IF1706_20161108.csv"
MULT, RATE, MAINT, FEE = 300.0, 0.2, 0.15, 0.000023   # CFFEX IF: 300 CNY/point; 0.23 per 10,000 of notional


def if_rules(commission=None, margin=RATE, maintenance=MAINT) -> FillRules:
    inst = Instrument("IF*", asset_class="future", multiplier=MULT, margin=margin, maintenance_margin=maintenance,
                      tick=0.2, qty_step=1, commission=commission or PercentCommission(FEE),
                      calendar="cn-index-futures").check("test")
    return FillRules(instruments=InstrumentTable((inst,)))


class Schedule(Strategy):
    """Market orders at given bar numbers: {bar index: signed qty}; records what it saw at each fill."""

    def __init__(self, plan: dict[int, float]) -> None:
        self.plan, self.i, self.seen, self.bars = plan, -1, [], []

    def on_bar(self, ctx, bar) -> None:
        self.i += 1
        self.bars.append((ctx.cash, ctx.equity, ctx.margin))
        q = self.plan.get(self.i)
        if q:
            (ctx.buy if q > 0 else ctx.sell)(bar.symbol, abs(q))

    def on_fill(self, ctx, fill) -> None:
        self.seen.append((fill, ctx.cash, ctx.equity, ctx.margin, ctx.position(fill.symbol)))


def raw_if() -> tuple[list[float], list[float]]:
    rows = list(csv.DictReader(open(need(IF_FILE), newline="")))
    return [float(r["OpeningPx"]) for r in rows], [float(r["ClosingPx"]) for r in rows]


PLAN = {10: 2, 60: -3, 120: 1, 150: -2, 200: 2, 230: -1}   # long 2, flip short 1, flat, short 2, long 0, short 1


def test_if1706_long_and_short_match_hand_computation():
    opens, closes = raw_if()
    s = Schedule(PLAN)
    start = 500_000.0
    res = run_backtest(s, [load_bars(IF_FILE, "IF1706")], cash=start, rules=if_rules(),
                       risk=build_pipeline(RiskSection(), if_rules(), allow_short=True))
    # by hand: an order placed at bar i fills at bar i+1's open; fee on qty x price x 300
    pos, fees, flows, exp_fills = 0.0, 0.0, 0.0, []
    by_bar = {}
    for i, q in sorted(PLAN.items()):
        px = opens[i + 1]
        fee = FEE * abs(q) * px * MULT
        by_bar[i + 1] = (q, px, fee)
    equity_hand = []
    for t in range(len(closes)):
        if t in by_bar:
            q, px, fee = by_bar[t]
            pos += q
            fees += fee
            flows -= q * px * MULT   # cash-accounting equivalent: pay the notional, hold qty x price x 300
            exp_fills.append((t, q, px, fee, pos))
        equity_hand.append(start - fees + flows + pos * closes[t] * MULT)
    assert len(res.fills) == len(PLAN)
    for f, (t, q, px, fee, p), (seen_f, cash, equity, margin, held) in zip(res.fills, exp_fills, s.seen):
        assert f.side.sign * f.qty == q and f.price == px
        assert f.commission == pytest.approx(fee, rel=1e-12)
        assert held == p
        assert margin == pytest.approx(abs(p) * closes[t] * MULT * RATE, rel=1e-12)   # at the bar's close
        assert cash == pytest.approx(equity_hand[t], rel=1e-12) and equity == cash   # settled into cash
    shorts = [f for f in res.fills if f.side.sign < 0]
    assert len(shorts) == 3 and any(p < 0 for *_, p in exp_fills)
    # the equity curve, rebuilt after the run, is the hand computation at every bar, and what the strategy saw
    np.testing.assert_allclose(res.equity, equity_hand, rtol=1e-12)
    assert list(res.equity) == [e for _, e, _ in s.bars]
    assert res.equity[-1] == pytest.approx(start - fees + flows + pos * closes[-1] * MULT, rel=1e-12)
    # gross exposure x multiplier; metrics count the fills' notional x multiplier
    held = np.zeros(len(closes))
    for t, _, _, _, p in exp_fills:
        held[t:] = p
    np.testing.assert_allclose(res.gross_exposure, np.abs(held) * np.array(closes) * MULT, rtol=1e-12)
    m = compute_metrics(res.ts, res.equity, res.start_cash, res.fills, gross_exposure=res.gross_exposure,
                        multipliers={"IF1706": MULT})
    assert m["total_commission"] == pytest.approx(fees, rel=1e-12)
    assert not any(e.check == "liquidation" for e in res.risk_events)


def test_per_contract_fee():
    opens, _ = raw_if()
    res = run_backtest(Schedule({10: 2, 60: -3}), [load_bars(IF_FILE, "IF1706")], cash=500_000.0,
                       rules=if_rules(PerShareCommission(2.3)))
    assert [f.commission for f in res.fills] == [2.3 * 2, 2.3 * 3]


def test_order_beyond_available_margin_refused_pre_trade_and_at_fill():
    opens, closes = raw_if()
    rules = if_rules()
    # 500k covers 2 contracts (2 x 3215 x 300 x 0.2 = 385.8k) but not 3
    s = Schedule({10: 3})
    res = run_backtest(s, [load_bars(IF_FILE, "IF1706")], cash=500_000.0, rules=rules,
                       risk=build_pipeline(RiskSection(), rules, allow_short=True))
    assert not res.fills
    (order,) = res.orders
    assert order.status is OrderStatus.REJECTED and order.reason.startswith("cash: insufficient margin")
    need_ = 3 * closes[10] * MULT * RATE
    assert f"{need_:,.2f}" in order.reason and "available margin 500,000.00" in order.reason
    # a short beyond margin is refused alike (no sellable check for futures)
    res = run_backtest(Schedule({10: -3}), [load_bars(IF_FILE, "IF1706")], cash=500_000.0, rules=rules,
                       risk=build_pipeline(RiskSection(), rules, allow_short=False))
    assert res.orders[0].status is OrderStatus.REJECTED and "insufficient margin" in res.orders[0].reason
    res = run_backtest(Schedule({10: -1}), [load_bars(IF_FILE, "IF1706")], cash=500_000.0, rules=rules,
                       risk=build_pipeline(RiskSection(), rules, allow_short=False))
    assert [f.side.sign * f.qty for f in res.fills] == [-1]
    # without pre-trade checks the fill itself is refused, with the figures
    res = run_backtest(Schedule({10: 2, 11: 1}), [load_bars(IF_FILE, "IF1706")], cash=500_000.0, rules=rules)
    assert [f.qty for f in res.fills] == [2]
    bad = res.orders[1]
    assert bad.status is OrderStatus.REJECTED and bad.reason.startswith("insufficient margin at fill: buy 1 IF1706")
    assert "margin in use" in bad.reason


def _series(closes: list[float], opens: list[float] | None = None) -> BarSeries:
    n = len(closes)
    ts = np.datetime64("2024-01-02T01:31", "ns").astype(np.int64) + np.arange(n, dtype=np.int64) * 60 * 10**9
    o = np.array(opens if opens is not None else closes, float)
    c = np.array(closes, float)
    return BarSeries("IF2403", ts, o, np.maximum(o, c), np.minimum(o, c), c, np.full(n, 100.0))


def test_liquidation_below_maintenance_margin():
    # long 2 at 3000 with 400k: initial margin 360k; maintenance 0.15. 2700 -> equity 220k < 243k: liquidate
    closes = [3000, 3000, 3000, 2950, 2850, 2700, 2690, 2680, 2600]
    opens = [3000, 3000, 3000, 2960, 2860, 2720, 2695, 2685, 2610]
    rules = if_rules(commission=PerShareCommission(0.0))
    s = Schedule({1: 2})
    res = run_backtest(s, [_series(closes, opens)], cash=400_000.0, rules=rules,
                       risk=build_pipeline(RiskSection(), rules, allow_short=True))
    assert [(f.side.sign * f.qty, f.price) for f in res.fills] == [(2, 3000.0), (-2, 2695.0)]
    (ev,) = [e for e in res.risk_events if e.check == "liquidation"]
    assert ev.action == "flatten" and ev.ts == int(res.ts[5]) and ev.symbol == "IF2403"
    eq5 = 400_000 + 2 * (2700 - 3000) * MULT
    assert ev.value == pytest.approx(eq5)
    assert "below maintenance margin 243,000.00" in ev.reason and f"equity {eq5:,.2f}" in ev.reason
    liq = res.orders[-1]
    assert liq.tag == "risk:liquidation" and liq.status is OrderStatus.FILLED
    final = 400_000 + 2 * (2695 - 3000) * MULT
    assert res.equity[-1] == pytest.approx(final) and res.cash[-1] == pytest.approx(final)
    assert res.gross_exposure[-1] == 0.0


def test_equity_symbols_unchanged_by_a_futures_row():
    # a symbol without a futures instrument keeps cash accounting: same equity curve with or without the row
    closes = [10, 11, 12, 11, 13]
    ser = BarSeries("AAA", _series(closes).ts, *(np.array(closes, float) for _ in range(4)), np.full(5, 1e6))
    a = run_backtest(Schedule({0: 100, 3: -100}), [ser], cash=10_000.0)
    b = run_backtest(Schedule({0: 100, 3: -100}), [ser], cash=10_000.0, rules=if_rules())
    assert list(a.equity) == list(b.equity) and list(a.gross_exposure) == list(b.gross_exposure)


def test_if1706_matches_backtrader_futures():
    bt = pytest.importorskip("backtrader")
    import pandas as pd
    opens, closes = raw_if()
    ser = load_bars(IF_FILE, "IF1706")
    values: list[float] = []

    class BtPlan(bt.Strategy):
        def __init__(self):
            self.i = -1

        def next(self):
            self.i += 1
            values.append(self.broker.getvalue())
            q = PLAN.get(self.i)
            if q:
                (self.buy if q > 0 else self.sell)(size=abs(q))

    idx = pd.to_datetime(ser.ts)
    df = pd.DataFrame({"open": ser.open, "high": ser.high, "low": ser.low, "close": ser.close,
                       "volume": ser.volume}, index=idx)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df, openinterest=None))
    cerebro.addstrategy(BtPlan)
    cerebro.broker.setcash(500_000.0)
    # per-contract fees (backtrader's COMM_PERC charges size x price without the multiplier: not comparable)
    cerebro.broker.setcommission(commission=2.3, mult=MULT, margin=RATE * 3300 * MULT, stocklike=False,
                                 commtype=bt.CommInfoBase.COMM_FIXED)
    fills = []

    class Obs(bt.Analyzer):
        def notify_order(self, order):
            if order.status == order.Completed:
                fills.append((order.executed.size, order.executed.price, order.executed.comm))
    cerebro.addanalyzer(Obs)
    cerebro.run()
    s = Schedule(PLAN)
    res = run_backtest(s, [ser], cash=500_000.0, rules=if_rules(PerShareCommission(2.3)))
    ours = [(f.side.sign * f.qty, f.price, f.commission) for f in res.fills]
    assert [q for q, _, _ in ours] == [q for q, _, _ in fills]
    # backtrader averages a flip's closing and opening parts: its price can be off by one ulp-ish
    np.testing.assert_allclose([p for _, p, _ in ours], [p for _, p, _ in fills], rtol=1e-12)
    np.testing.assert_allclose([c for *_, c in ours], [c for *_, c in fills], rtol=1e-12)
    # backtrader's value at bar t's next() is after t's settlement: our equity curve bar for bar
    np.testing.assert_allclose(res.equity, values, rtol=1e-12)


def test_the_review_gate_counts_the_contract_multiplier():
    """One IF contract at ~3,215 points is ~964k CNY of notional: a 500k review threshold holds it."""
    rules = if_rules()
    risk = RiskSection()
    risk.review.notional, risk.review.policy = 500_000.0, "reject"
    res = run_backtest(Schedule({10: 1}), [load_bars(need(IF_FILE), "IF1706")], cash=1_000_000.0, rules=rules,
                       risk=build_pipeline(risk, rules, allow_short=True))
    (order,) = res.orders
    assert order.status is OrderStatus.REJECTED and order.reason.startswith("review:")
    assert not res.fills
