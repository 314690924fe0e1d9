"""The risk layer and the market rules decide the same in the live driver as in a backtest."""
from __future__ import annotations

import asyncio

import pytest

from tradeloop.data.loaders import load_bars
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.assembly.build import build_risk, build_rules
from tradeloop.strategies.mean_reversion import MeanReversion

from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")

SETTINGS = ("run.market='cn-a'", "risk.halt.move=0.02", "risk.drawdown.daily_loss=0.001",
            "risk.drawdown.action='flatten'", "risk.max_position=3000", "risk.collar=0.05")


def parts():
    cfg = RunConfig()
    for item in SETTINGS:
        cfg.override(item)
    rules = build_rules(cfg)
    return rules, build_risk(cfg, rules, live=False)


def fills(fs):
    return [(f.ts, f.side, f.qty, f.price, f.commission) for f in fs]


def events(es):
    return [(e.ts, e.order_id, e.check, e.action, e.reason) for e in es]


async def stream(s):
    for i in range(len(s)):
        await asyncio.sleep(0)
        yield s.bar(i)


def test_cn_a_rules_halts_and_the_drawdown_stop_agree_between_backtest_and_live():
    s = load_bars(SHARED / "kronos" / "XSHG_5min_600977.csv")
    rules, risk = parts()
    bt = run_backtest(MeanReversion(size=1000), [s], cash=100_000.0, rules=rules, risk=risk)
    rules, risk = parts()
    driver = LiveDriver(MeanReversion(size=1000), [s.symbol], cash=100_000.0, rules=rules, risk=risk)
    engine = asyncio.run(driver.run(stream(s)))
    assert fills(engine.fills) == fills(bt.fills) and len(bt.fills) > 10
    assert events(risk.events) == events(bt.risk_events)
    kinds = {(e.check, e.action) for e in bt.risk_events}
    assert {("halt", "halt"), ("drawdown", "stop"), ("drawdown", "flatten"), ("sellable", "reject")} <= kinds
