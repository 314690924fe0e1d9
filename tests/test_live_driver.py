"""The asyncio live driver, fed the same bars, makes the same fills as the backtest."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from brokers.costs import PercentCommission
from brokers.sim import FillRules
from data.loaders import load_bars
from engine.backtest import run_backtest
from engine.live import LiveDriver
from risk.pipeline import CashCheck, RiskPipeline
from strategies.mean_reversion import MeanReversion
from strategies.momentum_rotation import MomentumRotation
from strategies.sma_cross import SmaCross

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")


async def stream(series_list, queue_delay: bool = True):
    """Bars in timestamp order, one message at a time, yielding to the loop between them."""
    events = sorted(((s.ts[i], s.symbol, i, s) for s in series_list for i in range(len(s))), key=lambda e: e[:2])
    for _, _, i, s in events:
        if queue_delay:
            await asyncio.sleep(0)
        yield s.bar(i)


def fills_of(fills):
    return [(f.ts, f.symbol, f.side, f.qty, f.price, f.commission) for f in fills]


def both(strategy_factory, series_list, cash=100_000.0):
    rules = FillRules(commission=PercentCommission(0.001))
    risk = RiskPipeline([CashCheck(rules.commission)])
    bt = run_backtest(strategy_factory(), series_list, cash=cash, rules=rules, risk=risk)
    driver = LiveDriver(strategy_factory(), [s.symbol for s in series_list], cash=cash, rules=rules, risk=risk)
    engine = asyncio.run(driver.run(stream(series_list)))
    return bt, engine, driver


def test_sma_cross_live_equals_backtest():
    s = load_bars(SHARED / "backtrader" / "orcl-1995-2014.txt")
    bt, engine, driver = both(lambda: SmaCross(size=1000), [s])
    assert len(bt.fills) == 195
    assert fills_of(engine.fills) == fills_of(bt.fills)
    assert driver.equity.equity == list(bt.equity)


def test_multi_symbol_rotation_live_equals_backtest():
    files = ["600519.SH.csv", "000858.SZ.csv", "601318.SH.csv"]
    series_list = [load_bars(SHARED / "qbot" / f).between(None, 1_420_070_400_000_000_000) for f in files]
    bt, engine, _ = both(lambda: MomentumRotation(lookback=40, top=1, rebalance=10), series_list, cash=1_000_000.0)
    assert len(bt.fills) > 10
    assert fills_of(engine.fills) == fills_of(bt.fills)


def test_limit_orders_live_equal_backtest_on_intraday_bars():
    s = load_bars(SHARED / "kronos" / "XSHG_5min_600977.csv")
    bt, engine, _ = both(lambda: MeanReversion(size=100), [s])
    assert len(bt.fills) > 4
    assert fills_of(engine.fills) == fills_of(bt.fills)
