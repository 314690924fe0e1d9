"""Metrics cover the traded span only, and every quantstats statistic agrees with quantstats.

Real runs (``../shared/data``) are read back from their ``equity.parquet``; the daily returns are rebuilt
independently with pandas from the first bar at or after ``trade_from`` (the first against the equity
of the last bar before it) and handed to quantstats 0.0.86. Cases: daily bars with and without a
benchmark, 5-minute bars, warm-up spans (``run.trade_from``) with and without a benchmark, and a
walk-forward (each window and the stitched run).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from tradeloop.brokers.orders import Fill, Side
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.metrics.performance import METRIC_KEYS, compute_metrics, traded_span
from tradeloop.engine.metrics.returns_stats import RETURN_STATS_KEYS

from .test_quantstats import _csi300_closes

pd = pytest.importorskip("pandas")
qs = pytest.importorskip("quantstats")

BENCH = "stockhistorydata/000300.csv"
CASES = {  # name: (data file, params, commission rate, run.on_bad, benchmark, run.trade_from)
    "orcl_daily": ("backtrader/orcl-1995-2014.txt", {"size": 1000}, 0.001, "raise", None, None),
    "orcl_warmup_from_2008": ("backtrader/orcl-1995-2014.txt", {"size": 1000}, 0.001, "raise", None, "2008-01-01"),
    "moutai_vs_csi300": ("qbot/600519.SH.csv", {"sizing": "allin"}, 0.001, "raise", BENCH, None),
    "moutai_vs_csi300_warmup_from_2015": ("qbot/600519.SH.csv", {"sizing": "allin"}, 0.001, "raise", BENCH,
                                          "2015-01-01"),
    # "": trade from 10:30 on the middle day of the file (an intraday trade_from)
    "etf50_5min_warmup": ("zsh_a_etf/510050.csv", {"sizing": "allin"}, 0.0003, "raise", None, ""),
}

#: our key -> quantstats on the daily returns (rf 0, 252 periods, its defaults)
QS = {
    "total_return": lambda r: qs.stats.comp(r),
    "annual_return": lambda r: qs.stats.cagr(r, periods=252),
    "volatility": lambda r: qs.stats.volatility(r, periods=252),
    "sharpe": lambda r: qs.stats.sharpe(r, rf=0.0, periods=252),
    "sortino": lambda r: qs.stats.sortino(r, rf=0.0, periods=252),
    "calmar": lambda r: qs.stats.calmar(r, periods=252),
    "max_drawdown": lambda r: -qs.stats.max_drawdown(r),
    "best_day": lambda r: qs.stats.best(r),
    "worst_day": lambda r: qs.stats.worst(r),
    "max_consecutive_losing_days": lambda r: qs.stats.consecutive_losses(r),
    "max_consecutive_winning_days": lambda r: qs.stats.consecutive_wins(r),
    "skew": lambda r: qs.stats.skew(r),
    "kurtosis": lambda r: qs.stats.kurtosis(r),
    "var": lambda r: qs.stats.var(r),
    "cvar": lambda r: qs.stats.cvar(r),
    "omega": lambda r: qs.stats.omega(r),
    "tail_ratio": lambda r: qs.stats.tail_ratio(r),
    "payoff_ratio": lambda r: qs.stats.payoff_ratio(r),
    "daily_profit_factor": lambda r: qs.stats.profit_factor(r),
    "win_days": lambda r: qs.stats.win_rate(r),
    "kelly": lambda r: qs.stats.kelly_criterion(r),
    "recovery_factor": lambda r: qs.stats.recovery_factor(r),
    "ulcer_index": lambda r: qs.stats.ulcer_index(r),
    "time_in_market": lambda r: qs.stats.exposure(r),
    "best_month": lambda r: qs.stats.best(r, aggregate="ME"),
    "worst_month": lambda r: qs.stats.worst(r, aggregate="ME"),
    "best_year": lambda r: qs.stats.best(r, aggregate="YE"),
    "worst_year": lambda r: qs.stats.worst(r, aggregate="YE"),
}


def _agree(m: dict, ret, keys=QS) -> None:
    """Every key agrees with quantstats to 1e-9 relative; None exactly where quantstats has no finite value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in keys:
            theirs = float(QS[key](ret))
            ours = m[key]
            if not math.isfinite(theirs):
                assert ours is None, (key, ours, theirs)
                continue
            assert ours is not None, (key, theirs)
            assert abs(ours - theirs) <= 1e-9 * max(abs(theirs), 1e-12), (key, ours, theirs)


def test_every_return_statistic_is_checked_against_quantstats():
    assert set(RETURN_STATS_KEYS) <= set(QS) and set(RETURN_STATS_KEYS) <= set(METRIC_KEYS)


# ------------------------------------------------------------------------------ synthetic
def _curve(values, start_day=0):
    ts = (np.arange(len(values), dtype=np.int64) + start_day) * NS_PER_DAY + 10_957 * NS_PER_DAY   # from 2000-01-01
    return ts, np.asarray(values, float)


def _series(ts, e, start):
    idx = pd.DatetimeIndex(np.asarray(ts).astype("datetime64[ns]"))
    prev = np.concatenate(([start], e[:-1]))
    return pd.Series(e / prev - 1.0, index=idx)


def test_synthetic_returns_agree_with_quantstats_on_every_statistic():
    rng = np.random.default_rng(7)
    r = rng.normal(0.0004, 0.012, 900)
    r[rng.random(900) < 0.2] = 0.0                       # flat days: time in market, win days
    e = 1000.0 * np.cumprod(1 + r)
    ts, e = _curve(e)
    m = compute_metrics(ts, e, 1000.0, [])
    _agree(m, _series(ts, e, 1000.0))


def test_trade_from_cuts_the_warm_up_and_starts_from_the_equity_before_it():
    rng = np.random.default_rng(3)
    e = 500.0 * np.cumprod(1 + rng.normal(0.0, 0.01, 600))
    e[:200] = 500.0                                       # warm-up: flat at the cash
    e[150] = 510.0                                        # (even a move in the warm-up counts in nothing)
    e[199] = 505.0
    ts, e = _curve(e)
    gross = np.where(np.arange(600) >= 200, 300.0, 0.0)
    fills = [Fill("a", int(ts[250]), "X", Side.BUY, 1.0, 10.0, 0.5), Fill("b", int(ts[300]), "X", Side.SELL, 1.0, 12.0, 0.5)]
    m = compute_metrics(ts, e, 500.0, fills, gross_exposure=gross, trade_from=int(ts[200]) - 3600 * 10**9)
    cut = compute_metrics(ts[200:], e[200:], 505.0, fills, gross_exposure=gross[200:])
    assert m["warmup_bars"] == 200 and cut["warmup_bars"] == 0
    assert m["start_cash"] == 505.0 and m["days"] == 400 and m["bars"] == 400
    assert {k: v for k, v in m.items() if k != "warmup_bars"} == {k: v for k, v in cut.items() if k != "warmup_bars"}
    _agree(m, _series(ts[200:], e[200:], 505.0))
    assert traded_span(ts, e, 500.0, None) == (0, 500.0)
    assert traded_span(ts, e, 500.0, int(ts[0])) == (0, 500.0)
    assert traded_span(ts, e, 500.0, int(ts[-1]) + 1) == (600, float(e[-1]))
    empty = compute_metrics(ts, e, 500.0, [], trade_from=int(ts[-1]) + 1)   # nothing traded yet: no day
    assert empty["days"] == 0 and empty["bars"] == 0 and empty["total_return"] == 0.0
    json.dumps(empty, allow_nan=False)


def test_constant_and_tiny_series_give_none_not_nan():
    for values in ([100.0] * 10, [100.0], [101.0, 99.0], [101.0, 101.0, 99.0]):
        ts, e = _curve(values)
        m = compute_metrics(ts, e, 100.0, [])
        json.dumps(m, allow_nan=False)
        assert all(v is None or math.isfinite(v) for v in m.values())


# ------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    """``real_run(name)``: (run folder, benchmark file or None, trade_from or None), each case run once."""
    done: dict[str, tuple[Path, Path | None, str | None]] = {}

    def get(name: str):
        if name not in done:
            path, params, rate, on_bad, bench, trade_from = CASES[name]
            cfg = RunConfig()
            cfg.run.strategy = "sma_cross"
            cfg.run.on_bad = on_bad
            cfg.params = dict(params)
            cfg.commission = {"kind": "percent", "rate": rate, "minimum": 0.0}
            cfg.data = [DataSpec(str(shared_data / path))]
            if trade_from == "":                          # intraday: trade from the middle day of the file, 10:30
                from tradeloop.data.loaders import load_bars
                s = load_bars(shared_data / path)
                mid = int(s.ts[len(s.ts) // 2]) // NS_PER_DAY * NS_PER_DAY
                trade_from = str(np.datetime64(mid + 10 * 3600 * 10**9 + 30 * 60 * 10**9, "ns").astype("datetime64[m]"))
            cfg.run.trade_from = trade_from
            if bench:
                cfg.run.benchmark = str(shared_data / bench)
            _, out = backtest(cfg, out=tmp_path_factory.mktemp(name) / "run", progress=False)
            done[name] = (out, shared_data / bench if bench else None, trade_from)
        return done[name]

    return get


def _traded_returns(run: Path, trade_from: str | None):
    """(end-of-day equity, daily returns, start value) of the traded span, rebuilt with pandas."""
    eq = pd.read_parquet(run / "equity.parquet")
    s = pd.Series(eq["equity"].to_numpy(), index=pd.DatetimeIndex(eq["ts"]))
    cash = json.loads((run / "manifest.json").read_text())["config"]["run"]["cash"]
    if trade_from:
        before = s[s.index < pd.Timestamp(trade_from)]
        start = before.iloc[-1] if len(before) else cash
        s = s[s.index >= pd.Timestamp(trade_from)]
    else:
        start = cash
    eod = s.groupby(s.index.normalize()).last()
    ret = eod.pct_change()
    ret.iloc[0] = eod.iloc[0] / start - 1.0
    return eod, ret, float(start)


@pytest.mark.parametrize("case", list(CASES))
def test_real_run_metrics_are_quantstats_of_the_traded_span(real_run, case):
    run, _, trade_from = real_run(case)
    m = json.loads((run / "metrics.json").read_text())
    eod, ret, start = _traded_returns(run, trade_from)
    assert m["days"] == len(ret) and m["start_cash"] == start and m["trades"] > 0
    eq = pd.read_parquet(run / "equity.parquet")
    warm = int((eq["ts"] < pd.Timestamp(trade_from)).sum()) if trade_from else 0
    assert m["warmup_bars"] == warm and m["bars"] == len(eq) - warm
    if trade_from:
        assert warm > 100                                  # a real warm-up, cut off
    _agree(m, ret)
    span = json.loads((run / "manifest.json").read_text())["span"]
    first = pd.Timestamp(eq["ts"].iloc[warm])
    assert span["from"].startswith(str(first.date())) and span["to"].startswith(str(pd.Timestamp(eq["ts"].iloc[-1]).date()))
    assert span["warmup_from"].startswith(str(pd.Timestamp(eq["ts"].iloc[0]).date()))


@pytest.mark.parametrize("case", [n for n, c in CASES.items() if c[4]])
def test_benchmark_metrics_cover_the_traded_span(real_run, case):
    run, bench_path, trade_from = real_run(case)
    m = json.loads((run / "metrics.json").read_text())
    eod, ret, start = _traded_returns(run, trade_from)
    closes = _csi300_closes(bench_path)
    covered = ret.index[(ret.index >= closes.index[0]) & (ret.index <= closes.index[-1])]
    aligned = closes.reindex(closes.index.union(covered)).ffill().reindex(covered)
    bench = aligned.pct_change().fillna(0.0)
    strat = ret.loc[covered]
    assert m["benchmark_days"] == len(covered) == len(ret)
    greeks = qs.stats.greeks(strat, bench, periods=252)
    for ours, theirs in ((m["beta"], greeks["beta"]), (m["alpha"], greeks["alpha"]),
                         (m["information_ratio"], qs.stats.information_ratio(strat, bench)),
                         (m["benchmark_return"], qs.stats.comp(bench)),
                         (m["benchmark_annual_return"], qs.stats.cagr(bench, periods=252)),
                         (m["excess_return"], qs.stats.comp(strat) - qs.stats.comp(bench))):
        assert abs(ours - theirs) <= 1e-9 * max(abs(theirs), 1e-12), (ours, theirs)


def test_a_warm_up_changes_nothing_but_what_is_measured(real_run):
    """With trade_from, the metrics are those of the traded span's returns: not the whole file's."""
    full, _, _ = real_run("orcl_daily")
    warm, _, _ = real_run("orcl_warmup_from_2008")
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((warm / "metrics.json").read_text())
    assert b["days"] < a["days"] and b["warmup_bars"] > 0
    assert json.loads((full / "manifest.json").read_text())["span"]["warmup_from"] == \
        json.loads((full / "manifest.json").read_text())["span"]["from"]


# ------------------------------------------------------------------------------ walk-forward
def test_walkforward_windows_and_stitched_run_are_quantstats_of_their_test_spans(tmp_path, shared_data):
    from tests.test_walkforward_support import qbot_files
    from tradeloop.engine.research.walkforward import run_walkforward
    from tradeloop.engine.research.windows import WindowSpec

    cfg = RunConfig()
    cfg.run.strategy, cfg.params = "sma_cross", {"fast": 5, "slow": 20, "size": 100}
    cfg.run.start, cfg.run.end = "2010-01-01", "2013-01-01"
    cfg.data = [DataSpec(str(p)) for p in qbot_files()]
    wf, out = run_walkforward(cfg, WindowSpec("1y", "6m", warmup="3m"), executor="serial", out=tmp_path / "wf",
                              progress=False)
    m = json.loads((out / "metrics.json").read_text())
    eod, ret, start = _traded_returns(out, None)
    assert m["days"] == len(ret) and m["warmup_bars"] == 0
    _agree(m, ret)
    eq = pd.read_parquet(out / "equity.parquet")
    s = pd.Series(eq["equity"].to_numpy(), index=pd.DatetimeIndex(eq["ts"]))
    checked = 0
    for w in m["windows"]:
        if w["status"] != "ok":
            continue
        inside = s[(s.index >= pd.Timestamp(w["test_start"])) & (s.index < pd.Timestamp(w["test_end"]))]
        before = s[s.index < pd.Timestamp(w["test_start"])]
        first = before.iloc[-1] if len(before) else float(cfg.run.cash)
        weod = inside.groupby(inside.index.normalize()).last()
        wret = weod.pct_change()
        wret.iloc[0] = weod.iloc[0] / first - 1.0
        assert w["metrics"]["days"] == len(wret) and w["metrics"]["start_cash"] == pytest.approx(first, rel=1e-12)
        _agree(w["metrics"], wret, [k for k in QS if k not in ("skew", "kurtosis")] if len(wret) < 4 else QS)
        checked += 1
    assert checked >= 2
    span = json.loads((out / "manifest.json").read_text())["span"]
    assert span["from"] >= m["windows"][0]["test_start"]
    assert span["warmup_from"] < span["from"] <= span["to"]
    assert span["warmup_from"] >= m["windows"][0]["warmup_start"]
