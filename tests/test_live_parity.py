"""Live trading makes exactly the backtest's fills.

Real data is replayed through a real Mosquitto into ``tradeloop live`` (its own process), which
trades over FIX 4.4 with the exchange simulator (its own process) that matches against the same
replay. The replay runs in lockstep with the runner, so the comparison is exact, not statistical.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.assembly.build import build_rules
from tests import live_procs
from tests.live_procs import SHARED
from tests.mosquitto import mosquitto  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")

DAILY = SHARED / "qbot" / "600519.SH.csv"
FIVE_MIN = SHARED / "kronos" / "XSHG_5min_600977.csv"


def parity_config(path: Path, strategy: str, params: dict, cash: float, rate: float | None,
                  market: str = "") -> RunConfig:
    """The run both sides trade: ``strategy`` on ``path``, a percent commission ``rate`` (None: the default)."""
    cfg = RunConfig()
    cfg.run.strategy, cfg.run.cash, cfg.params, cfg.run.market = strategy, cash, dict(params), market
    if rate is not None:
        cfg.commission = {"kind": "percent", "rate": rate}
    cfg.data = [DataSpec(str(path))]
    return cfg


def backtest_fills(cfg: RunConfig) -> pl.DataFrame:
    """The fills of the backtest of ``cfg``, as :func:`run_fills` reads a run folder's."""
    result, _ = backtest(cfg, write=False, progress=False)
    assert len(result.fills) > 10, "the comparison needs trades"
    return pl.DataFrame({"ts": [f.ts for f in result.fills], "symbol": [f.symbol for f in result.fills],
                         "side": [f.side.value for f in result.fills], "qty": [float(f.qty) for f in result.fills],
                         "price": [float(f.price) for f in result.fills],
                         "commission": [float(f.commission) for f in result.fills]})


def run_fills(folder: Path) -> pl.DataFrame:
    df = pl.read_parquet(folder / "fills.parquet")
    return df.select(pl.col("ts").cast(pl.Int64), "symbol", "side", "qty", "price", "commission")


def test_live_runner_against_the_exchange_makes_the_backtests_fills_on_daily_a_shares(mosquitto, tmp_path):
    """A-share rules on both sides (--market cn-a: 100-share lots, T+1, price limits, A-share fees);
    the exchange gets the run's rules as a --rules file."""
    params, cash = {"fast": 10, "slow": 30, "size": 100}, 1_000_000.0
    cfg = parity_config(DAILY, "sma_cross", params, cash, None, market="cn-a")
    expected = backtest_fills(cfg)
    exch, port = live_procs.exchange(tmp_path, mosquitto.url, venue="cn", interval="1d", rules=build_rules(cfg))
    try:
        runner = live_procs.live(tmp_path, [
            "sma_cross", *[f"--param={k}={v}" for k, v in params.items()], "--cash", str(cash), "--market", "cn-a",
            "--mqtt", mosquitto.url, "--fix", f"127.0.0.1:{port}", "--state", str(tmp_path / "live.sqlite"),
            "--symbols", "600519.SH", "--venue", "cn", "--interval", "1d", "--lockstep",
            "--out", str(tmp_path / "live-run")])
        rep = live_procs.replay(tmp_path, ["--data", str(DAILY), "--mqtt", mosquitto.url, "--venue", "cn",
                                           "--interval", "1d", "--lockstep", "runner", "--qos", "1"])
        assert rep.wait(240) == 0, rep.tail()
        assert runner.wait(60) == 0, runner.tail()
    finally:
        exch.stop()
    got = run_fills(tmp_path / "live-run")
    assert got.height == expected.height
    assert got.equals(expected)
    assert (expected["commission"] > 0).all()     # A-share fees were charged, identically


def test_paper_session_on_five_minute_bars_makes_the_backtests_fills(tmp_path):
    """``tradeloop paper`` (own Mosquitto, exchange process, live runner, lockstep replay) on intraday bars,
    with limit orders that must wait, work and fill at the same bar as in the backtest."""
    from tradeloop.engine.cli.main import main
    if live_procs_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    params, cash, rate = {"size": 100}, 100_000.0, 0.001
    expected = backtest_fills(parity_config(FIVE_MIN, "mean_reversion", params, cash, rate))
    out = tmp_path / "paper"
    code = main(["paper", "mean_reversion", "--data", str(FIVE_MIN), "--param", "size=100", "--cash", str(cash),
                 "--commission", repr(rate), "--out", str(out), "--quiet"])
    assert code == 0
    got = run_fills(out)
    assert got.equals(expected)
    assert (out / "metrics.json").exists() and (out / "live.sqlite").exists()


def live_procs_mosquitto() -> str | None:
    from tradeloop.engine.live.paper import mosquitto_binary
    return mosquitto_binary()
