"""Daily settlement of futures (``settlement = "daily"``, engine/loop/portfolio.py): the variation moves into
cash once a trading day at the day's last price; equity marks the open PnL every bar, identical to the default
``bar`` settlement. IF1706 (rqalpha, one trading day, 2016-11-08) is checked against a hand computation from
the raw CSV."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.test_futures import FEE, IF_FILE, MULT, PLAN, RATE, Schedule, if_rules, raw_if
from tradeloop.brokers.instruments import InstrumentTable, instrument_from_dict
from tradeloop.brokers.sim import FillRules
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import BarSeries
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.loop.portfolio import day_ends_of
from tradeloop.risk.build import build_pipeline
from tradeloop.risk.config import RiskSection


def daily_rules(**kw) -> FillRules:
    (inst,) = if_rules(**kw).instruments.entries
    return FillRules(instruments=InstrumentTable((dataclasses.replace(inst, settlement="daily"),)))


def test_if1706_daily_settlement_cash_flat_intraday_equity_as_bar_mode():
    opens, closes = raw_if()
    start = 500_000.0
    ser = load_bars(IF_FILE, "IF1706")
    bar = Schedule(PLAN)
    rb = run_backtest(bar, [ser], cash=start, rules=if_rules(),
                      risk=build_pipeline(RiskSection(), if_rules(), allow_short=True))
    day = Schedule(PLAN)
    rd = run_backtest(day, [ser], cash=start, rules=daily_rules(),
                      risk=build_pipeline(RiskSection(), daily_rules(), allow_short=True))
    # same fills, same equity at every bar (what the strategy saw and the rebuilt curve), same margin
    assert [(f.ts, f.side, f.qty, f.price, f.commission) for f in rd.fills] == \
           [(f.ts, f.side, f.qty, f.price, f.commission) for f in rb.fills]
    np.testing.assert_allclose(rd.equity, rb.equity, rtol=1e-12)
    assert list(rd.equity) == [e for _, e, _ in day.bars]
    np.testing.assert_allclose(rd.margin, rb.margin, rtol=1e-12)
    # by hand: cash before the close is the deposit less the fees paid so far (no variation moves intraday)
    fee_at = {i + 1: FEE * abs(q) * opens[i + 1] * MULT for i, q in PLAN.items()}
    fees = np.cumsum([fee_at.get(t, 0.0) for t in range(len(closes))])
    n = len(closes)
    np.testing.assert_allclose(rd.cash[:-1], start - fees[:-1], rtol=1e-12)
    assert [c for c, _, _ in day.bars][:-1] == pytest.approx(list(start - fees[:-1]), rel=1e-12)
    # settlement at the day's close (the last bar): all PnL of the day into cash; cash == equity then
    pos, flows = 0.0, 0.0
    for i, q in sorted(PLAN.items()):
        pos += q
        flows -= q * opens[i + 1] * MULT
    settled = start - fees[-1] + flows + pos * closes[-1] * MULT
    assert rd.cash[-1] == pytest.approx(settled, rel=1e-12) and rd.equity[-1] == pytest.approx(settled, rel=1e-12)
    assert rb.cash[-1] == pytest.approx(settled, rel=1e-12)
    # at each fill the strategy saw cash = deposit - fees, equity = the bar mode's
    for (f, cash, eq, margin, held), (_, cash_b, eq_b, margin_b, _) in zip(day.seen, bar.seen):
        t = int(np.searchsorted(ser.ts, f.ts))
        assert cash == pytest.approx(start - fees[t], rel=1e-12)
        assert eq == pytest.approx(eq_b, rel=1e-12) and margin == pytest.approx(margin_b, rel=1e-12)
    assert rd.fills[0].price == opens[11] and n - 1 not in fee_at


def test_daily_settlement_every_trading_day_and_margin_call_on_equity():
    # three trading days of 2 bars (15:00 wall time: the day's last bar settles), long 2 from day 1's first bar
    day = 86_400 * 10**9
    base = np.datetime64("2024-01-02T09:30", "ns").astype(np.int64)
    ts = np.array([base, base + 5 * 3600 * 10**9, base + day, base + day + 5 * 3600 * 10**9,
                   base + 2 * day, base + 2 * day + 5 * 3600 * 10**9], np.int64)
    assert day_ends_of(ts) == {int(ts[1]), int(ts[3]), int(ts[5])}
    c = np.array([3000.0, 3010.0, 2990.0, 2900.0, 2700.0, 2650.0])
    ser = BarSeries("IF2403", ts, c, c, c, c, np.full(6, 100.0))
    s = Schedule({0: 2})
    res = run_backtest(s, [ser], cash=400_000.0, rules=daily_rules(commission=None, margin=RATE, maintenance=0.15))
    fee = FEE * 2 * 3010.0 * MULT   # the order at bar 0 fills at bar 1's open (3010)
    eq = [400_000.0, 400_000.0 - fee] + [400_000.0 - fee + 2 * (p - 3010.0) * MULT for p in c[2:]]
    # cash moves at the day ends only (bars 1, 3); bar 4 falls below maintenance (equity 220k-fee < 243k):
    # liquidation at bar 5's open, the final day settled at its close
    assert res.cash[1] == pytest.approx(eq[1]) and res.cash[2] == pytest.approx(eq[1])
    assert res.cash[3] == pytest.approx(eq[3]) and res.cash[4] == pytest.approx(eq[3])
    np.testing.assert_allclose(res.equity[:5], eq[:5], rtol=1e-12)
    (ev,) = [e for e in res.risk_events if e.check == "liquidation"]
    assert ev.ts == int(ts[4]) and ev.value == pytest.approx(eq[4])
    assert res.cash[-1] == pytest.approx(res.equity[-1]) and res.gross_exposure[-1] == 0.0


def test_settlement_key_checked():
    with pytest.raises(Exception, match=r"t\.settlement"):
        instrument_from_dict({"pattern": "IF*", "asset_class": "future", "settlement": "weekly"}, "t")
    with pytest.raises(Exception, match=r"settlement 'daily' is for futures"):
        instrument_from_dict({"pattern": "AAA", "settlement": "daily"}, "t")
    inst = instrument_from_dict({"pattern": "IF*", "asset_class": "future", "settlement": "daily"}, "t")
    assert inst.settlement == "daily" and inst.describe()["settlement"] == "daily"
