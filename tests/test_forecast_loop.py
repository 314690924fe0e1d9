"""The forecaster in the engine's loop: ctx.predictions carries forecasts, backtest == live, walk-forward."""
from __future__ import annotations

import numpy as np
import pytest

from tradeloop.data.schema import Bar

from tests.test_kline_support import day, market, needs_torch, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    needs_torch()
    from tradeloop.models.kline.train import train_forecaster

    reg = tmp_path_factory.mktemp("reg")
    series = market()
    return str(reg), train_forecaster(tiny_config(reg, threads=1), series), series


def test_a_backtest_reads_forecasts_and_trades_on_them(trained):
    from tradeloop.engine.drivers.backtest import run_backtest
    from tradeloop.models.kline.loop import Forecast
    from tradeloop.strategies.forecast_trend import ForecastTrend

    reg, ref, series = trained
    seen: list = []

    class Recording(ForecastTrend):
        def on_bars(self, ctx, bars):
            seen.append(dict(ctx.predictions))
            super().on_bars(ctx, bars)

    lo = int(np.datetime64(day(450), "ns").astype(np.int64))
    test = [s.between(lo, s.ts[-1] + 1) for s in series]
    strat = Recording(model=ref, registry=reg, enter=0.0, exit=-0.01, min_p_up=0.5)
    result = run_backtest(strat, test, cash=1_000_000.0)
    assert len(seen) == len(test[0])
    assert all(not p for p in seen[:31]) and all(set(p) == {"AAA", "BBB", "CCC"} for p in seen[31:])
    f = seen[-1]["BBB"]
    assert isinstance(f, Forecast) and f.q10 <= f.q50 <= f.q90 and 0 <= f.p_up <= 1
    assert len(result.fills) > 0 and strat.decisions == 3 * (len(test[0]) - 31)


def test_precomputed_forecasts_equal_those_made_bar_by_bar(trained):
    from tradeloop.models.predictor import open_predictor

    reg, ref, series = trained
    cut = [s.between(s.ts[0], s.ts[120]) for s in series]
    pre = open_predictor(reg, ref, [s.symbol for s in cut], runtime="torch-cpu")
    table = pre.precompute(cut)
    live = open_predictor(reg, ref, [s.symbol for s in cut], runtime="torch-cpu")
    got = {}
    for t in range(len(cut[0])):
        bars = [Bar(s.symbol, int(s.ts[t]), s.open[t], s.high[t], s.low[t], s.close[t], s.volume[t]) for s in cut]
        out = live.step(bars, {s.symbol: float(s.extra["amount"][t]) for s in cut})
        got.update({(k, t): v for k, v in out.items()})
        assert (t >= 31) == bool(out)
    for s in cut:
        for t in (31, 77, len(cut[0]) - 1):
            assert np.array_equal(np.array(got[(s.symbol, t)]), table[s.symbol][t].astype(np.float32))
    assert live.model.p99_ms > 0                  # the live calls went through the health monitor


def test_live_forecasts_are_scored_for_the_health_monitor(trained):
    from tradeloop.models.predictor import open_predictor

    reg, ref, series = trained
    p = open_predictor(reg, ref, ["AAA"], runtime="torch-cpu")
    s = series[0]
    for t in range(60):
        p.step([Bar("AAA", int(s.ts[t]), s.open[t], s.high[t], s.low[t], s.close[t], s.volume[t])])
    assert p.warm_up() == 1
    # forecasts from bar 32 on, each scored 3 bars (the horizon) later: 60 - 31 - 3 resolved
    assert 20 <= len(p.model._hits) <= 26 and 0 <= p.model.accuracy <= 1


def test_walk_forward_with_the_forecaster_strategy_retrains_per_window(tmp_path):
    needs_torch()
    from tradeloop.engine.config.run import DataSpec, RunConfig
    from tradeloop.engine.research.walkforward import run_walkforward
    from tradeloop.engine.research.windows import WindowSpec
    from tradeloop.models.registry import Registry

    from tests.test_walkforward_support import qbot_files

    cfg = RunConfig()
    cfg.run.strategy = "forecast_trend"
    cfg.run.cash = 1_000_000.0
    cfg.run.start, cfg.run.end = "2010-01-01", "2012-01-01"
    cfg.params = {"enter": 0.0, "exit": -0.01, "min_p_up": 0.5}
    cfg.data = [DataSpec(path=str(p)) for p in qbot_files()]
    train = {k: v for k, v in tiny_config(tmp_path).items()
             if k not in ("data", "train_start", "train_end", "val_end")}
    train.update(name="wfk", kind="kline", threads=1, steps=40, tokenizer_steps=120)
    wf, _ = run_walkforward(cfg, WindowSpec("1y", "6m", warmup="3m"), train, executor="serial", write=False,
                            progress=False)
    assert len(wf.windows) == 2 and all(o.ok for o in wf.windows), [o.error for o in wf.windows]
    assert [o.model for o in wf.windows] == ["wfk-w001@v0001", "wfk-w002@v0001"]
    meta = Registry(tmp_path).info(wf.windows[1].model).metadata
    assert meta["kind"] == "forecaster" and meta["walkforward"]["window"] == 2
    assert meta["training_data"]["train_end"] < meta["walkforward"]["test_start"]
    assert wf.windows[0].training["val_n"] > 0
