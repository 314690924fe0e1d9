"""Limit-move halts on real A-share days: a big move from the previous close refuses new orders for the day."""
from __future__ import annotations


import numpy as np
import pytest

from tradeloop.brokers.orders import OrderStatus
from tradeloop.data.loaders import load_bars
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.assembly.build import build_risk, build_rules
from tradeloop.risk.halt import HaltGuard
from tradeloop.risk.pipeline import RiskPipeline

from .helpers import Scripted, series

from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
QBOT = SHARED / "qbot"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")


def parts(*settings: str):
    cfg = RunConfig()
    for item in settings:
        cfg.override(item)
    rules = build_rules(cfg)
    return rules, build_risk(cfg, rules)


class EveryDay(Scripted):
    """Buys 10 shares of every symbol at every bar, remembering which orders were placed when."""

    def __init__(self):
        super().__init__({})
        self.placed: list[tuple[int, str, str]] = []

    def on_bars(self, ctx, bars):
        for bar in bars:
            o = ctx.buy(bar.symbol, 10)
            self.placed.append((bar.ts, bar.symbol, o.id))


def test_orders_are_refused_on_halt_days_and_accepted_the_next_session():
    s = load_bars(QBOT / "600519_unadjusted.csv")
    move = s.close / s.extra["pre_close"] - 1
    halted_days = {int(t) for t in s.ts[np.abs(move) >= 0.05]}
    assert len(halted_days) == 60
    rules, risk = parts("risk.halt.move=0.05")
    strat = EveryDay()
    res = run_backtest(strat, [s], cash=1e9, rules=rules, risk=risk)
    by_id = {o.id: o for o in res.orders}
    for ts, _, oid in strat.placed:
        order = by_id[oid]
        if ts in halted_days:
            assert order.status is OrderStatus.REJECTED and order.reason.startswith("halt: 600519_unadjusted last ")
            assert order.reason.endswith("(halt at 5.00%; 600519_unadjusted halted until the next session)")
        else:
            assert order.status is not OrderStatus.REJECTED, order
    halts = [e for e in res.risk_events if e.action == "halt"]
    assert {e.ts for e in halts} == halted_days and all(abs(e.value) >= 0.05 for e in halts)


def test_book_scope_halts_every_symbol_when_one_moves():
    a = load_bars(QBOT / "600519_unadjusted.csv")
    b = load_bars(QBOT / "000858.SZ.csv")
    common = np.intersect1d(a.ts, b.ts)
    a, b = (s.between(int(common[0]), int(common[400])) for s in (a, b))
    moves_b = {int(t) for t in b.ts[np.abs(b.close / b.extra["pre_close"] - 1) >= 0.05]}
    moves_a = {int(t) for t in a.ts[np.abs(a.close / a.extra["pre_close"] - 1) >= 0.05]}
    only_b = moves_b - moves_a
    assert only_b
    rules, risk = parts("risk.halt.move=0.05", "risk.halt.scope='book'")
    strat = EveryDay()
    res = run_backtest(strat, [a, b], cash=1e9, rules=rules, risk=risk)
    by_id = {o.id: o for o in res.orders}
    for ts, sym, oid in strat.placed:
        if ts in only_b and sym == a.symbol:   # 600519 did not move, but the book is halted
            assert by_id[oid].status is OrderStatus.REJECTED and "the book halted until the next session" in \
                by_id[oid].reason


def test_working_orders_are_cancelled_when_cancel_working_is_on():
    s = load_bars(QBOT / "600519_unadjusted.csv")
    first = int(np.flatnonzero(np.abs(s.close / s.extra["pre_close"] - 1) >= 0.05)[0])
    strat = Scripted({0: lambda c: c.buy(s.symbol, 100, limit=1.0)})   # rests far below the market
    rules, risk = parts("risk.halt.move=0.05", "risk.halt.cancel_working=true")
    res = run_backtest(strat, [s], cash=1e9, rules=rules, risk=risk)
    order = res.orders[0]
    assert order.status is OrderStatus.CANCELLED and order.reason.startswith("halt: ")
    cancel = next(e for e in res.risk_events if e.action == "cancel")
    assert (cancel.ts, cancel.order_id) == (s.ts[first], order.id)
    rules, risk = parts("risk.halt.move=0.05")          # off by default: the order keeps working
    assert run_backtest(Scripted({0: lambda c: c.buy(s.symbol, 100, limit=1.0)}), [s], cash=1e9, rules=rules,
                        risk=risk).orders[0].status is OrderStatus.ACCEPTED


def test_an_operator_resume_lifts_the_halt_for_the_rest_of_the_day():
    hour = 3_600_000_000_000
    rows = [(10.0, 10.0, 10.0, 10.0, 1e6)] * 4 + [(11.0, 11.0, 11.0, 11.0, 1e6)] * 4
    s = series("X", rows, step=6 * hour)                 # 4 bars a day; day 2 opens +10%
    strat = Scripted({4: lambda c: c.buy("X", 1),
                      5: lambda c: (c._engine.risk.command(c.now, "resume", "X", "bob"), c.buy("X", 1)),
                      6: lambda c: c.buy("X", 1)})
    res = run_backtest(strat, [s], risk=RiskPipeline([HaltGuard(0.05)]))
    assert [o.status for o in res.orders] == [OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.FILLED]
    assert [e.action for e in res.risk_events] == ["halt", "reject", "resume"]
    assert res.risk_events[2].reason == "X resumed by bob"


@pytest.mark.parametrize("setting, message", [
    ("risk.halt.scope='desk'", "risk.halt.scope must be 'symbol' or 'book', not 'desk'"),
    ("risk.halt.move=2", "halt move must be a fraction between 0 and 1"),
])
def test_bad_halt_settings_are_clear_errors(setting, message):
    from tradeloop.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        parts(setting)
