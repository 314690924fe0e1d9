"""Pre-trade checks, order by order, on small hand-made series; every refusal is a risk event with its reason."""
from __future__ import annotations

import pytest
import structlog

from tradeloop.brokers.orders import OrderStatus
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.assembly.build import build_risk, build_rules

from .helpers import Scripted, series

FLAT = (10.0, 10.0, 10.0, 10.0, 1e6)


def run(script, *settings: str, rows=None, cash: float = 100_000.0):
    cfg = RunConfig()
    for item in settings:
        cfg.override(item)
    rules = build_rules(cfg)
    strat = Scripted(script)
    res = run_backtest(strat, [series("X", rows or [FLAT] * 5)], cash=cash, rules=rules, risk=build_risk(cfg, rules))
    return res


def statuses(res):
    return [o.status for o in res.orders]


A, F, R = OrderStatus.ACCEPTED, OrderStatus.FILLED, OrderStatus.REJECTED


def test_max_position_counts_the_held_the_working_and_the_batch():
    res = run({0: lambda c: c.buy("X", 100),
               1: lambda c: (c.buy("X", 40, limit=1.0), c.buy("X", 20)),   # 100 held + 40 working + 20 > 150
               2: lambda c: c.sell("X", 500)},                              # reducing... then beyond: -400
              "risk.max_position=150")
    assert statuses(res) == [F, A, R, R]
    assert res.orders[2].reason == "max_position: position in X would be 160, above the limit 150"
    assert res.orders[3].reason == "max_position: position in X would be -360, above the limit 150"


def test_only_orders_that_increase_the_position_are_held_to_the_limit():
    res = run({0: lambda c: c.buy("X", 100), 2: lambda c: c.sell("X", 60)}, "risk.max_position=50")
    assert statuses(res) == [R, R]   # 100 > 50: the entry is refused; from flat, a sell of 60 opens a short
    res = run({0: lambda c: c.buy("X", 50), 2: lambda c: c.sell("X", 30)}, "risk.max_position=50")
    assert statuses(res) == [F, F]


def test_max_gross_exposure():
    res = run({0: lambda c: (c.buy("X", 600), c.buy("X", 500))}, "risk.max_gross=10000")
    assert statuses(res) == [F, R]
    assert res.orders[1].reason == "max_gross: gross exposure would be 11,000.00, above the limit 10,000.00"


def test_order_rate_on_the_runs_clock():
    res = run({0: lambda c: [c.buy("X", 1) for _ in range(3)], 1: lambda c: c.buy("X", 1)},
              "risk.max_orders_per_second=2")
    assert statuses(res) == [F, F, R, F]
    assert res.orders[2].reason == "rate: more than 2 order(s) within one second"


def test_price_collar_for_limit_orders():
    res = run({0: lambda c: (c.buy("X", 1, limit=8.9), c.buy("X", 1, limit=9.5), c.sell("X", 1, limit=11.5),
                             c.buy("X", 1))}, "risk.collar=0.1")
    assert statuses(res) == [R, A, R, F]   # the 9.5 bid is within the collar, and rests
    assert res.orders[0].reason == "collar: limit 8.9 is -11.00% from the last price 10, outside the 10.00% collar"


def test_sellable_quantity_counts_working_sells_when_short_selling_is_off():
    res = run({0: lambda c: c.buy("X", 100),
               1: lambda c: c.sell("X", 80, limit=50.0),     # rests: 80 of the 100 are spoken for
               2: lambda c: c.sell("X", 30)}, "run.allow_short=false")
    assert statuses(res) == [F, A, R]
    assert res.orders[2].reason == ("sellable: sell 30 X exceeds the 20 sellable; 80 already being sold by "
                                    "working orders")


def test_every_refusal_is_an_event_and_a_log_line():
    with structlog.testing.capture_logs() as logs:
        res = run({0: lambda c: c.buy("X", 1_000_000)})
    assert statuses(res) == [R]
    (ev,) = res.risk_events
    assert (ev.check, ev.action, ev.order_id, ev.symbol) == ("cash", "reject", "O00000001", "X")
    assert ev.reason.startswith("insufficient cash: needs 10000000.00")
    line = next(entry for entry in logs if entry["event"] == "risk_event")
    assert {k: line[k] for k in ("check", "action", "order_id", "symbol")} == \
        {"check": "cash", "action": "reject", "order_id": "O00000001", "symbol": "X"}


def test_an_order_that_passes_every_check_is_not_a_risk_event():
    res = run({0: lambda c: c.buy("X", 1)}, "risk.max_position=10", "risk.collar=0.1", "risk.max_gross=1e6",
              "risk.max_orders_per_second=5")
    assert statuses(res) == [F] and res.risk_events == []


@pytest.mark.parametrize("setting, message", [
    ("risk.max_position=0", "risk.max_position must be positive"),
    ("risk.collar=-0.1", "risk.collar must be positive"),
    ("risk.max_orders_per_second=0", "risk.max_orders_per_second must be positive"),
    ("risk.review.timeout=0", None),   # only checked when reviews are on
])
def test_bad_limits_are_clear_errors(setting, message):
    if message is None:
        run({}, setting)
        return
    with pytest.raises(ConfigError, match=message):
        run({}, setting)


def test_an_order_with_no_price_yet_is_refused_not_waved_through():
    """A market buy of a symbol that has had no bar cannot be sized: comparisons with NaN used to
    pass it (and leave NaN cash for the rest of the batch). It is refused by the cash check and the
    gross-exposure check, held by the review gate; a limit order is priced by its limit."""
    from tradeloop.data.schema import NS_PER_DAY

    from .helpers import DAY0

    late = series("Y", [(100.0, 100.0, 100.0, 100.0, 1e6)] * 3, start=DAY0 + 2 * NS_PER_DAY)   # Y trades from day 3

    def run_xy(script, *settings):
        cfg = RunConfig()
        for item in settings:
            cfg.override(item)
        rules = build_rules(cfg)
        risk = build_risk(cfg, rules)
        return run_backtest(Scripted(script), [series("X", [FLAT] * 5), late], cash=100_000.0, rules=rules,
                            risk=risk), risk

    early = {0: lambda c: (c.buy("Y", 10), c.buy("X", 100), c.buy("Y", 10, limit=100.0))}
    res, risk = run_xy(early)
    assert statuses(res) == [R, F, F]
    assert res.orders[0].reason == ("cash: no price for Y yet (no bar, no limit or stop price): "
                                    "its cost cannot be checked")
    assert [(e.check, e.action, e.order_id) for e in risk.events] == [("cash", "reject", res.orders[0].id)]
    res, _ = run_xy(early, "risk.max_gross=1000000")
    assert res.orders[0].reason.startswith("max_gross: no price for Y yet")
    res, risk = run_xy({0: lambda c: c.sell("Y", 1)}, "run.allow_short=true", "risk.review.notional=1000000",
                       "risk.review.policy=reject")                      # a short sell reaches the gate
    assert [(e.check, e.action, e.reason) for e in risk.events][0] == \
        ("review", "hold", "notional unknown: no price for Y yet")
    assert statuses(res) == [R]
