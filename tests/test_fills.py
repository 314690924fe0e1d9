"""The simulated venue's fill rules, specified bar by bar on small hand-made series."""
from __future__ import annotations

import pytest

from tradeloop.brokers.costs import FixedBpsSlippage, PercentCommission, PerShareCommission
from tradeloop.brokers.orders import OrderStatus
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.risk.pipeline import CashCheck, RiskPipeline

from .helpers import Scripted, series

FLAT = (10.0, 10.0, 10.0, 10.0, 1000.0)


def run(rows, script, *, cash=100_000.0, step=NS_PER_DAY, **rules):
    strat = Scripted(script)
    res = run_backtest(strat, [series("X", rows, step=step)], cash=cash, rules=FillRules(**rules))
    return res, strat


def only_fill(res):
    assert len(res.fills) == 1, res.fills
    return res.fills[0]


def test_market_order_fills_at_next_bar_open_never_the_same_bar():
    res, _ = run([FLAT, (11.0, 12.0, 10.5, 11.5, 1000)], {0: lambda c: c.buy("X", 10)})
    f = only_fill(res)
    assert (f.price, f.qty, f.ts) == (11.0, 10.0, res.ts[1])


def test_order_on_last_bar_never_fills():
    res, _ = run([FLAT, FLAT], {1: lambda c: c.buy("X", 10)})
    assert res.fills == []
    assert res.orders[0].status is OrderStatus.ACCEPTED


def test_same_bar_close_is_an_explicit_option():
    res, _ = run([FLAT, (11.0, 12.0, 10.5, 11.5, 1000)], {1: lambda c: c.buy("X", 10)}, fill_at="close")
    f = only_fill(res)
    assert (f.price, f.ts) == (11.5, res.ts[1])


@pytest.mark.parametrize("bar, expected", [
    ((9.0, 9.5, 8.5, 9.2, 1000), 9.0),      # gaps below the limit: the better open
    ((10.5, 11.0, 9.8, 10.2, 1000), 10.0),  # trades down through the limit: the limit
    ((10.5, 11.0, 10.1, 10.2, 1000), None),  # never reaches it
])
def test_buy_limit(bar, expected):
    res, _ = run([FLAT, bar], {0: lambda c: c.buy("X", 1, limit=10.0)})
    assert [f.price for f in res.fills] == ([] if expected is None else [expected])


@pytest.mark.parametrize("bar, expected", [
    ((11.0, 11.5, 10.8, 11.2, 1000), 11.0),  # gaps above the limit: the better open
    ((9.5, 10.4, 9.4, 10.0, 1000), 10.2),    # trades up through the limit
    ((9.5, 10.1, 9.4, 10.0, 1000), None),
])
def test_sell_limit(bar, expected):
    res, _ = run([FLAT, bar], {0: lambda c: c.sell("X", 1, limit=10.2)})
    assert [f.price for f in res.fills] == ([] if expected is None else [expected])


@pytest.mark.parametrize("bar, expected", [
    ((12.0, 12.5, 11.8, 12.2, 1000), 12.0),  # gaps through the stop: the (worse) open
    ((10.5, 11.6, 10.4, 11.0, 1000), 11.5),  # trades up through it: the stop
    ((10.5, 11.4, 10.4, 11.0, 1000), None),
])
def test_buy_stop(bar, expected):
    res, _ = run([FLAT, bar], {0: lambda c: c.buy("X", 1, stop=11.5)})
    assert [f.price for f in res.fills] == ([] if expected is None else [expected])


def test_sell_stop_gap_fills_at_open():
    res, _ = run([FLAT, (8.0, 8.5, 7.5, 8.2, 1000)], {0: lambda c: c.sell("X", 1, stop=9.0)})
    assert only_fill(res).price == 8.0


def test_stop_limit_triggered_inside_the_bar_fills_at_the_stop_when_the_limit_allows():
    res, _ = run([FLAT, (10.5, 11.6, 10.4, 11.0, 1000)], {0: lambda c: c.buy("X", 1, stop=11.5, limit=11.7)})
    assert only_fill(res).price == 11.5


def test_stop_limit_gapped_past_its_limit_waits_as_a_limit():
    rows = [FLAT, (12.0, 12.5, 11.9, 12.2, 1000), (11.5, 11.8, 11.4, 11.6, 1000)]
    res, _ = run(rows, {0: lambda c: c.buy("X", 1, stop=11.5, limit=11.7)})
    f = only_fill(res)
    assert (f.price, f.ts) == (11.5, res.ts[2])


def test_day_order_lives_through_its_first_trading_day_then_expires():
    rows = [FLAT, (11.0, 11.5, 10.5, 11.0, 1000), (9.0, 9.5, 8.5, 9.0, 1000)]
    res, strat = run(rows, {0: lambda c: c.buy("X", 1, limit=10.0, tif="DAY")})
    assert res.fills == []
    assert res.orders[0].status is OrderStatus.EXPIRED


def test_day_order_on_intraday_bars_can_fill_later_the_same_day():
    hour = NS_PER_DAY // 24
    rows = [FLAT, (11.0, 11.5, 10.5, 11.0, 1000), (10.0, 10.0, 9.0, 9.5, 1000)]
    res, _ = run(rows, {0: lambda c: c.buy("X", 1, limit=10.0, tif="DAY")}, step=hour)
    assert only_fill(res).price == 10.0


def test_ioc_remainder_is_cancelled_after_the_first_bar():
    rows = [FLAT, (10.0, 10.0, 10.0, 10.0, 100), FLAT]
    res, _ = run(rows, {0: lambda c: c.buy("X", 50, tif="IOC")}, participation=0.1)
    f = only_fill(res)
    assert f.qty == 10
    assert res.orders[0].status is OrderStatus.CANCELLED


def test_participation_cap_splits_an_order_into_partial_fills():
    rows = [FLAT] + [(10.0, 10.0, 10.0, 10.0, 100)] * 4
    res, _ = run(rows, {0: lambda c: c.buy("X", 25)}, participation=0.1)
    assert [f.qty for f in res.fills] == [10, 10, 5]
    assert res.orders[0].status is OrderStatus.FILLED


def test_insufficient_cash_at_fill_rejects_with_the_reason():
    res, strat = run([FLAT, (20.0, 20.0, 20.0, 20.0, 1000)], {0: lambda c: c.buy("X", 60)}, cash=1000.0)
    assert res.fills == []
    order = res.orders[0]
    assert order.status is OrderStatus.REJECTED
    assert "insufficient cash at fill" in order.reason and "1200.00" in order.reason


def test_pre_trade_cash_check_rejects_before_the_venue():
    strat = Scripted({0: lambda c: (c.buy("X", 60), c.buy("X", 60))})
    rules = FillRules(commission=PercentCommission(0.001))
    res = run_backtest(strat, [series("X", [FLAT, FLAT])], cash=1000.0, rules=rules,
                       risk=RiskPipeline([CashCheck(rules.commission)]))
    statuses = [o.status for o in res.orders]
    assert statuses == [OrderStatus.FILLED, OrderStatus.REJECTED]
    assert res.orders[1].reason.startswith("cash: insufficient cash")


def test_commission_models():
    pct = PercentCommission(rate=0.001, minimum=5.0)
    assert pct("X", None, 100, 10.0) == 5.0
    assert pct("X", None, 10_000, 10.0) == pytest.approx(100.0)
    per = PerShareCommission(per_share=0.005, minimum=1.0)
    assert per("X", None, 100, 10.0) == 1.0
    assert per("X", None, 1000, 10.0) == pytest.approx(5.0)


def test_slippage_moves_market_fills_against_the_trader_within_the_bar():
    rows = [FLAT, (10.0, 10.5, 9.5, 10.0, 1000), (10.0, 10.5, 9.5, 10.0, 1000)]
    res, _ = run(rows, {0: lambda c: c.buy("X", 1), 1: lambda c: c.sell("X", 1)}, slippage=FixedBpsSlippage(50))
    assert [f.price for f in res.fills] == [pytest.approx(10.05), pytest.approx(9.95)]


def test_cash_plus_marked_positions_equals_equity_at_every_bar():
    rows = [(10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 1000) for i in range(6)]
    script = {0: lambda c: c.buy("X", 10), 2: lambda c: c.sell("X", 4), 3: lambda c: c.sell("X", 10)}
    res, strat = run(rows, script, commission=PercentCommission(0.001))
    close = [r[3] for r in rows]
    qty = [0, 10, 10, 6, -4, -4]
    for k in range(len(rows)):
        assert res.equity[k] == pytest.approx(res.cash[k] + qty[k] * close[k], abs=1e-9)
    # the curve written to disk is exactly what the strategy saw as ctx.equity
    assert list(res.equity) == strat.seen_equity


def test_order_validation_names_the_problem():
    with pytest.raises(ValueError, match="positive"):
        run([FLAT, FLAT], {0: lambda c: c.buy("X", 0)})
    with pytest.raises(ValueError, match="unknown symbol"):
        run([FLAT, FLAT], {0: lambda c: c.buy("Y", 1)})
    with pytest.raises(ValueError, match="limit price"):
        run([FLAT, FLAT], {0: lambda c: c.buy("X", 1, limit=-1.0)})
    with pytest.raises(ValueError, match=r"order_target_value\('X'\): the value must be a finite number, got nan"):
        run([FLAT, FLAT], {0: lambda c: c.order_target_percent("X", float("nan"))})


def test_sizing_by_value_needs_a_price():
    from .helpers import DAY0

    late = series("Y", [FLAT] * 2, start=DAY0 + NS_PER_DAY)
    with pytest.raises(ValueError, match=r"order_target_value\('Y'\): no price yet"):
        run_backtest(Scripted({0: lambda c: c.order_target_value("Y", 1000.0)}), [series("X", [FLAT] * 2), late])
