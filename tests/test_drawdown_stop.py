"""Drawdown stop: the SMA strategy on a real file trips it once, at the right bar; then no new entries."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tradeloop.brokers.orders import Side
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.risk.drawdown import DrawdownGuard
from tradeloop.risk.pipeline import RiskPipeline

from tests.conftest import ORCL, need

from .helpers import Scripted, series

MAX = 0.15


def sma_config(**drawdown: object) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.params = {"size": 1000}
    cfg.commission = {"kind": "percent", "rate": 0.001}
    cfg.data = [DataSpec(str(ORCL))]
    for key, value in drawdown.items():
        cfg.override(f"risk.drawdown.{key}={json.dumps(value)}")
    return cfg


def first_breach(res, limit: float) -> int:
    """The first bar whose equity is at or below (1 - limit) x its running peak (the start cash is the first peak)."""
    peak = np.maximum.accumulate(np.concatenate(([res.start_cash], res.equity)))[1:]
    return int(np.flatnonzero(res.equity <= peak * (1.0 - limit))[0])


@pytest.fixture(scope="module")
def plain():
    need(ORCL)
    res = backtest(sma_config(), write=False, progress=False)[0]
    assert res.metrics["max_drawdown"] > MAX   # the strategy does reach the level
    return res


def position_after(fills, ts: int) -> float:
    return sum(f.signed_qty for f in fills if f.ts <= ts)


@pytest.mark.parametrize("action", ["block", "flatten"])
def test_the_stop_triggers_once_at_the_right_bar(tmp_path, plain, action):
    k = first_breach(plain, MAX)
    at = int(plain.ts[k])
    res, out = backtest(sma_config(max=MAX, action=action), out=tmp_path / "r", progress=False)
    assert list(res.equity[:k + 1]) == list(plain.equity[:k + 1])   # identical up to the trigger
    ev = pl.read_parquet(out / "risk_events.parquet")
    stops = ev.filter(pl.col("action") == "stop")
    assert stops.height == 1
    assert stops["ts"].cast(pl.Int64)[0] == at
    assert stops["check"][0] == "drawdown" and stops["value"][0] == plain.equity[k]
    metrics = json.loads((out / "metrics.json").read_text())
    stamp = str(np.datetime64(at, "ns").astype("datetime64[s]")).replace("T", " ")
    assert metrics["risk_drawdown_stop"] == {"ts": stamp, "equity": plain.equity[k], "stops": 1}
    assert position_after(res.fills, at) > 0                       # it was long when the stop hit
    later = [f for f in res.fills if f.ts > at]
    assert all(f.side is Side.SELL for f in later)                  # nothing new is opened afterwards
    refused = ev.filter((pl.col("action") == "reject") & (pl.col("check") == "drawdown"))
    assert refused.height > 10 and refused["reason"][0].startswith("drawdown stop: no new entries until reset")
    if action == "flatten":
        flat = ev.filter(pl.col("action") == "flatten")
        assert flat.height == 1 and flat["ts"].cast(pl.Int64)[0] == at
        assert later[0].ts == int(plain.ts[k + 1]) and later[0].order_id == flat["order_id"][0]
        assert position_after(res.fills, int(plain.ts[k + 1])) == 0   # flat from the next bar on
        assert position_after(res.fills, int(plain.ts[-1])) == 0


def test_block_keeps_the_position_until_the_strategy_exits_it(plain):
    k = first_breach(plain, MAX)
    res, _ = backtest(sma_config(max=MAX, action="block"), write=False, progress=False)
    at = int(plain.ts[k])
    exit_fill = next(f for f in res.fills if f.ts > at)
    same = next(f for f in plain.fills if f.ts > at)
    assert (exit_fill.ts, exit_fill.side, exit_fill.qty) == (same.ts, Side.SELL, same.qty)   # the strategy's own exit
    assert position_after(res.fills, int(plain.ts[-1])) == 0


def test_working_orders_are_cancelled_at_the_stop():
    rows = [(100.0, 100.0, 100.0, 100.0, 1e6), (100.0, 100.0, 100.0, 100.0, 1e6), (50.0, 50.0, 50.0, 50.0, 1e6),
            (50.0, 50.0, 50.0, 50.0, 1e6), (50.0, 50.0, 50.0, 50.0, 1e6)]
    strat = Scripted({0: lambda c: c.buy("X", 100), 1: lambda c: c.buy("X", 10, limit=1.0)})
    guard = DrawdownGuard(max=0.2)
    res = run_backtest(strat, [series("X", rows)], cash=10_000.0, risk=RiskPipeline([guard]))
    # equity 10,000 -> 5,000 at bar 2: the stop cancels the resting limit buy
    assert [(e.action, e.order_id) for e in res.risk_events] == [("stop", ""), ("cancel", "O00000002")]
    assert res.orders[1].status.value == "CANCELLED" and res.orders[1].reason.startswith("drawdown: equity 5,000.00")


def test_a_daily_loss_stop_ends_at_the_next_session():
    hour = 3_600_000_000_000
    rows = [(100.0, 100.0, 100.0, 100.0, 1e6)] * 3 + [(90.0, 90.0, 90.0, 90.0, 1e6)] + \
           [(90.0, 90.0, 90.0, 90.0, 1e6)] * 8
    s = series("X", rows, step=6 * hour)   # 4 bars a day
    strat = Scripted({0: lambda c: c.buy("X", 100), 4: lambda c: c.buy("X", 10), 8: lambda c: c.buy("X", 10)})
    res = run_backtest(strat, [s], cash=20_000.0, risk=RiskPipeline([DrawdownGuard(daily_loss=0.04)]))
    # day 1: 20,000 -> 19,000 at bar 3 (-5%): stop. Bar 4 is day 2: the stop ends; its buy goes through.
    assert [e.action for e in res.risk_events] == ["stop", "reset"]
    assert res.risk_events[0].ts == s.ts[3] and res.risk_events[1].ts == s.ts[4]
    assert [f.qty for f in res.fills] == [100, 10, 10]


def test_an_operator_reset_lets_entries_through_again():
    rows = [(100.0, 100.0, 100.0, 100.0, 1e6)] * 2 + [(50.0, 50.0, 50.0, 50.0, 1e6)] * 4
    guard = DrawdownGuard(max=0.2)
    pipe = RiskPipeline([guard])
    strat = Scripted({0: lambda c: c.buy("X", 100), 2: lambda c: c.buy("X", 1),
                      3: lambda c: (c._engine.risk.command(c.now, "reset", by="alice"), c.buy("X", 1))})
    res = run_backtest(strat, [series("X", rows)], cash=20_000.0, risk=pipe)
    assert [e.action for e in res.risk_events] == ["stop", "reject", "reset"]
    assert res.risk_events[2].reason == "reset by alice; the peak starts again at 15,000.00"
    assert [f.qty for f in res.fills] == [100, 1]


@pytest.mark.parametrize("key, value, message", [
    ("max", 1.5, "drawdown max must be a fraction between 0 and 1"),
    ("action", "sell", "risk.drawdown.action must be 'block' or 'flatten', not 'sell'"),
])
def test_bad_drawdown_settings_are_clear_errors(tmp_path, key, value, message):
    from tradeloop.errors import ConfigError
    bars = tmp_path / "bars.csv"  # any file: the settings are refused before a bar is read
    bars.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10,100\n2024-01-03,10,11,9,10,100\n")
    cfg = sma_config(**{key: value})
    cfg.data = [DataSpec(str(bars))]
    with pytest.raises(ConfigError, match=message):
        backtest(cfg, write=False, progress=False)


def test_an_equity_that_cannot_be_marked_is_skipped_not_taken_as_the_days_start():
    """A NaN mark (a held symbol with no price yet) at the end of a day used to become the next
    day's starting equity, after which no daily-loss stop could fire that day."""
    day = 86_400 * 10**9

    class Desk:
        equity = 20_000.0
        marks = iter([20_000.0, 20_000.0, float("nan"), 18_000.0])

        def mark(self):
            return next(self.marks)

        def cancel_open(self, symbol, reason):
            return []

        def flatten(self, reason):
            return []

    guard = DrawdownGuard(daily_loss=0.04)
    pipe = RiskPipeline([guard])
    pipe.attach(Desk())
    for ts in (0, day, day + 1, 2 * day):   # day 1; day 2 ends on a NaN mark; day 3 opens 10% down
        guard.on_step(ts, [])
    assert guard.stopped == "daily" and [e.action for e in pipe.events] == ["stop"]
    assert "below the day's start 20,000.00" in guard.why
