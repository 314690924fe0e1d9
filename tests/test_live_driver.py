"""The asyncio live driver, fed the same bars, makes the same fills as the backtest."""
from __future__ import annotations

import asyncio

import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.sim import FillRules
from tradeloop.data.loaders import load_bars
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.risk.pipeline import CashCheck, RiskPipeline
from tradeloop.strategies.mean_reversion import MeanReversion
from tradeloop.strategies.momentum_rotation import MomentumRotation
from tradeloop.strategies.sma_cross import SmaCross

from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
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


def test_a_tick_driven_session_keeps_one_equity_entry_per_second_of_ticks():
    """Thousands of ticks a second for a trading day would otherwise keep gigabytes of entries;
    each second keeps the state after its last tick, and bar steps keep one entry each. Ticks are
    the price: positions are marked, and a market order passes the cash check, at the last trade."""
    from tradeloop.data.schema import Bar, Tick
    from tradeloop import Strategy

    class BuyOnce(Strategy):
        def on_start(self, ctx):
            self.prices = []

        def on_tick(self, ctx, tick):
            self.prices.append(ctx.price("X"))
            if not ctx.position("X") and not ctx.open_orders("X"):
                ctx.buy("X", 10)

    t0 = 1_700_000_000 * 10**9
    events = [Tick("X", t0 + i * 1_000_000, 100.0 + i * 0.001, 1.0) for i in range(5_000)]   # 1,000 a second
    events.append(Bar("X", t0 + 6 * 10**9, 105.0, 105.0, 105.0, 105.0, 1.0))

    async def source():
        for e in events:
            yield e

    strategy = BuyOnce()
    driver = LiveDriver(strategy, ["X"], cash=100_000.0, risk=RiskPipeline([CashCheck(PercentCommission(0.001))]))
    engine = asyncio.run(driver.run(source()))
    assert strategy.prices == [e.price for e in events[:-1]]
    log = driver.equity
    assert [t // 10**9 for t in log.ts] == [1_700_000_000 + k for k in range(5)] + [1_700_000_006]
    assert log.ts[:5] == [t0 + k * 10**9 + 999_000_000 for k in range(5)]   # the last tick of each second
    held = engine.portfolio.positions["X"].qty
    assert held == 10 and log.equity[4] == pytest.approx(engine.portfolio.cash + held * events[4_999].price)
    assert log.equity[-1] == pytest.approx(engine.portfolio.cash + held * 105.0)
