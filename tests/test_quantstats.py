"""Metrics of real runs agree with quantstats on the same daily returns, benchmark-relative ones included.

Each case runs a real backtest over a real file, reads its ``equity.parquet`` back, rebuilds the daily
returns independently with pandas (and the benchmark from its raw CSV), and asks quantstats.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.metrics.curves import monthly_table, rolling_sharpe, underwater
from tradeloop.engine.assembly.backtest import backtest

pd = pytest.importorskip("pandas")
qs = pytest.importorskip("quantstats")

BENCH = "stockhistorydata/000300.csv"
CASES = {  # name: (data file, params, commission rate, run.on_bad, benchmark)
    "orcl_daily": ("backtrader/orcl-1995-2014.txt", {"size": 1000}, 0.001, "raise", None),
    "moutai_vs_csi300": ("qbot/600519.SH.csv", {"sizing": "allin"}, 0.001, "raise", BENCH),
    "sz_20y_partly_covered_by_csi300": ("qbot/sz.csv", {"sizing": "allin"}, 0.001, "drop", BENCH),
    "etf50_5min": ("zsh_a_etf/510050.csv", {"sizing": "allin"}, 0.0003, "raise", None),
}


def _rel(ours, theirs, tol=1e-9):
    assert ours is not None and theirs is not None and math.isfinite(theirs), (ours, theirs)
    assert abs(ours - theirs) <= tol * max(abs(theirs), 1e-12), (ours, theirs)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    """``real_run(name)``: the finished run folder of one case (run once per module) and its benchmark file."""
    done: dict[str, tuple[Path, Path | None]] = {}

    def get(name: str) -> tuple[Path, Path | None]:
        if name not in done:
            path, params, rate, on_bad, bench = CASES[name]
            cfg = RunConfig()
            cfg.run.strategy = "sma_cross"
            cfg.run.on_bad = on_bad
            cfg.params = dict(params)
            cfg.commission = {"kind": "percent", "rate": rate, "minimum": 0.0}
            cfg.data = [DataSpec(str(shared_data / path))]
            if bench:
                cfg.run.benchmark = str(shared_data / bench)
            _, out = backtest(cfg, out=tmp_path_factory.mktemp(name) / "run", progress=False)
            done[name] = (out, shared_data / bench if bench else None)
        return done[name]

    return get


def _daily_returns(run: Path):
    """(end-of-day equity, daily returns) rebuilt from equity.parquet with pandas; day 1 vs the starting cash."""
    eq = pd.read_parquet(run / "equity.parquet")
    start_cash = json.loads((run / "metrics.json").read_text())["start_cash"]
    s = pd.Series(eq["equity"].to_numpy(), index=pd.DatetimeIndex(eq["ts"]))
    eod = s.groupby(s.index.normalize()).last()
    ret = eod.pct_change()
    ret.iloc[0] = eod.iloc[0] / start_cash - 1.0
    return eod, ret, start_cash


@pytest.mark.parametrize("case", list(CASES))
def test_base_metrics_agree_with_quantstats(real_run, case):
    run, _ = real_run(case)
    m = json.loads((run / "metrics.json").read_text())
    _, ret, _ = _daily_returns(run)
    assert m["days"] == len(ret) and m["trades"] > 0
    _rel(m["sharpe"], qs.stats.sharpe(ret, rf=0.0, periods=252))
    _rel(m["sortino"], qs.stats.sortino(ret, rf=0.0, periods=252))
    _rel(m["max_drawdown"], -qs.stats.max_drawdown(ret))
    _rel(m["volatility"], qs.stats.volatility(ret, periods=252))
    _rel(m["annual_return"], qs.stats.cagr(ret, periods=252))
    _rel(m["calmar"], qs.stats.calmar(ret, periods=252))
    _rel(m["total_return"], qs.stats.comp(ret))


def _csi300_closes(path: Path):
    """The benchmark's closes by day, read straight from its GBK, newest-first CSV."""
    raw = pd.read_csv(path, encoding="gbk")
    closes = pd.Series(raw["收盘价"].to_numpy(float), index=pd.to_datetime(raw["日期"])).sort_index()
    return closes.groupby(closes.index.normalize()).last()


@pytest.mark.parametrize("case", [name for name, c in CASES.items() if c[4]])
def test_benchmark_metrics_agree_with_quantstats(real_run, case):
    run, bench_path = real_run(case)
    m = json.loads((run / "metrics.json").read_text())
    eod, ret, start_cash = _daily_returns(run)
    closes = _csi300_closes(bench_path)
    # carry the benchmark's last close onto each strategy day, only inside the benchmark's own span
    covered = ret.index[(ret.index >= closes.index[0]) & (ret.index <= closes.index[-1])]
    aligned = closes.reindex(closes.index.union(covered)).ffill().reindex(covered)
    bench = aligned.pct_change().fillna(0.0)            # held from the close of the first covered day
    strat = ret.loc[covered]
    assert m["benchmark_days"] == len(covered)

    greeks = qs.stats.greeks(strat, bench, periods=252)
    _rel(m["beta"], greeks["beta"])
    _rel(m["alpha"], greeks["alpha"])
    _rel(m["information_ratio"], qs.stats.information_ratio(strat, bench))
    _rel(m["tracking_error"], (strat - bench).std() * np.sqrt(252))
    _rel(m["benchmark_return"], qs.stats.comp(bench))
    _rel(m["benchmark_annual_return"], qs.stats.cagr(bench, periods=252))
    _rel(m["benchmark_max_drawdown"], -qs.stats.max_drawdown(bench))
    i0 = eod.index.get_loc(covered[0])
    before = start_cash if i0 == 0 else eod.iloc[i0 - 1]
    _rel(m["excess_return"], eod.loc[covered[-1]] / before - 1.0 - qs.stats.comp(bench))
    if len(covered) == len(ret):                         # full cover: excess over the run's own total return
        _rel(m["excess_return"], m["total_return"] - m["benchmark_return"])


# ------------------------------------------------------------- the report's series, too
@pytest.mark.parametrize("case", ["orcl_daily", "moutai_vs_csi300", "etf50_5min"])
def test_the_report_curves_agree_with_quantstats(real_run, case):
    """Underwater, monthly returns and rolling Sharpe, as plotted, are quantstats' series of the same returns."""
    run, _ = real_run(case)
    eod, ret, start_cash = _daily_returns(run)
    e = eod.to_numpy()
    np.testing.assert_allclose(underwater(e, start_cash), qs.stats.to_drawdown_series(ret).to_numpy(),
                               rtol=1e-9, atol=1e-12)

    days = eod.index.values.astype("datetime64[ns]").astype(np.int64)
    years, table = monthly_table(days, e, start_cash)
    theirs = qs.stats.monthly_returns(ret, eoy=True, compounded=True)
    assert years == list(theirs.index)
    have = np.isfinite(table)                             # months without a day are blank here, 0 there
    np.testing.assert_allclose(table[have], theirs.to_numpy()[have], rtol=1e-9, atol=1e-12)
    assert np.all(theirs.to_numpy()[~have] == 0)

    ours = rolling_sharpe(ret.to_numpy(), 126, 252)
    q = qs.stats.rolling_sharpe(ret, rolling_period=126, periods_per_year=252).to_numpy()
    sd = ret.rolling(126).std().to_numpy()
    np.testing.assert_allclose(ours[np.isfinite(ours)], q[np.isfinite(ours)], rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(ours) == (np.nan_to_num(sd) > 1e-12))   # blank only before a window or when flat
