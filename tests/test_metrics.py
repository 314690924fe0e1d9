"""Specification of engine.metrics: hand-computed cases, round trips, edge cases, and agreement with
quantstats on synthetic equity curves built from real price files."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloop.brokers.orders import Fill, Side
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.metrics.performance import (
    METRIC_KEYS,
    Trade,
    compute_metrics,
    daily_equity,
    daily_returns,
    max_drawdown,
    max_drawdown_duration,
    round_trips,
)

from tests.conftest import SHARED_DATA as DATA, need  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)

HOUR = NS_PER_DAY // 24
D0 = 18_000 * NS_PER_DAY          # 2019-04-14, a Sunday; any day works: days are calendar days
SQ252 = math.sqrt(252)


def day(i: int, hour: int = 16) -> int:
    return D0 + i * NS_PER_DAY + hour * HOUR


def curve(values, day_idx=None):
    """One bar per day at 16:00."""
    day_idx = range(len(values)) if day_idx is None else day_idx
    return np.array([day(i) for i in day_idx], np.int64), np.array(values, float)


def fill(ts, side, qty, price, commission=0.0, symbol="AAA"):
    return Fill(f"o{ts}-{symbol}-{side}", ts, symbol, Side(side), qty, price, commission)


def assert_clean(m):
    assert set(METRIC_KEYS) <= set(m)
    for k in METRIC_KEYS:
        v = m[k]
        assert v is None or isinstance(v, (int, float)), (k, v)
        assert v is None or math.isfinite(v), (k, v)
    json.dumps(m, allow_nan=False)


# ------------------------------------------------------------------------------ daily series
def test_daily_equity_takes_last_bar_of_each_calendar_day():
    ts = np.array([day(0, 9), day(0, 15), day(1, 9), day(3, 0), day(3, 23)], np.int64)
    eq = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    days, e = daily_equity(ts, eq)
    assert days.tolist() == [D0, D0 + NS_PER_DAY, D0 + 3 * NS_PER_DAY]
    assert e.tolist() == [2.0, 3.0, 5.0]


def test_daily_returns_first_day_against_start_cash():
    ts, eq = curve([100.0, 110.0, 99.0])
    days, r = daily_returns(ts, eq, 100.0)
    assert r == pytest.approx([0.0, 0.1, -0.1], abs=1e-15)
    days, r = daily_returns(ts, eq, 80.0)
    assert r[0] == pytest.approx(0.25)


def test_unsorted_ts_or_nan_equity_is_rejected():
    with pytest.raises(ValueError):
        daily_equity(np.array([2, 1], np.int64), np.array([1.0, 1.0]))
    with pytest.raises(ValueError):
        daily_equity(np.array([1, 2], np.int64), np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        compute_metrics(*curve([1.0]), 0.0, [])


# ----------------------------------------------------------------------- hand-computed metrics
def test_three_days_100_110_99():
    m = compute_metrics(*curve([100.0, 110.0, 99.0]), 100.0, [])
    assert_clean(m)
    r = np.array([0.0, 0.1, -0.1])
    assert m["days"] == 3 and m["bars"] == 3
    assert m["start_cash"] == 100.0 and m["final_value"] == 99.0
    assert m["total_return"] == pytest.approx(-0.01)
    assert m["best_day"] == pytest.approx(0.1) and m["worst_day"] == pytest.approx(-0.1)
    assert m["volatility"] == pytest.approx(0.1 * SQ252)                 # std ddof=1 of r is 0.1
    assert m["sharpe"] == pytest.approx(0.0, abs=1e-12)                   # mean is 0
    assert m["sortino"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_drawdown"] == pytest.approx(0.1)                        # 110 -> 99
    assert m["max_drawdown_intraday"] == pytest.approx(0.1)
    assert m["max_drawdown_duration"] == 1                                # peak day 1, still under at day 2
    assert m["annual_return"] == pytest.approx(0.99 ** (252 / 3) - 1)
    assert m["calmar"] == pytest.approx((0.99 ** 84 - 1) / 0.1)
    assert m["max_consecutive_losing_days"] == 1
    assert np.std(r, ddof=1) == pytest.approx(0.1)


def test_sharpe_sortino_by_hand():
    e = 100.0 * np.cumprod([1.01, 0.99, 1.02, 0.99])      # r = .01, -.01, .02, -.01
    m = compute_metrics(*curve(e), 100.0, [])
    r = np.array([0.01, -0.01, 0.02, -0.01])
    mean, sd = 0.0025, math.sqrt(np.sum((r - 0.0025) ** 2) / 3)
    down = math.sqrt((0.01 ** 2 + 0.01 ** 2) / 4)        # squares of negatives over ALL days
    assert m["sharpe"] == pytest.approx(mean / sd * SQ252)
    assert m["sortino"] == pytest.approx(mean / down * SQ252)
    assert m["volatility"] == pytest.approx(sd * SQ252)
    assert m["max_consecutive_losing_days"] == 1
    # risk-free: de-annualised geometrically, (1 + rf) ** (1/252) - 1, on sharpe and sortino only
    mr = compute_metrics(*curve(e), 100.0, [], risk_free=0.05)
    rf = 1.05 ** (1 / 252) - 1
    x = r - rf
    assert mr["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * SQ252)
    assert mr["sortino"] == pytest.approx(x.mean() / math.sqrt(np.sum(np.minimum(x, 0) ** 2) / 4) * SQ252)
    assert mr["volatility"] == m["volatility"] and mr["annual_return"] == m["annual_return"]


def test_first_day_loss_counts_start_cash_as_peak():
    m = compute_metrics(*curve([90.0, 95.0, 100.0, 100.0]), 100.0, [])
    assert m["max_drawdown"] == pytest.approx(0.1)
    # the starting cash is dated the day before day 0; equity is back at 100 on day 2
    assert m["max_drawdown_duration"] == 3
    assert m["max_consecutive_losing_days"] == 1


def test_intraday_drawdown_sees_every_bar():
    ts = np.array([day(0, 10), day(0, 16), day(1, 10), day(1, 16)], np.int64)
    eq = np.array([120.0, 100.0, 60.0, 105.0])
    m = compute_metrics(ts, eq, 100.0, [])
    assert m["days"] == 2 and m["bars"] == 4
    assert m["max_drawdown"] == 0.0                       # end of day: 100, 105 never below a peak
    assert m["max_drawdown_intraday"] == pytest.approx(0.5)   # 120 -> 60
    assert m["max_drawdown_duration"] == 0


def test_drawdown_duration_in_calendar_days_across_gaps():
    # days 0..3, then a gap to day 7: peak on day 1, under on 2, 3, back above on day 7
    m = compute_metrics(*curve([100.0, 110.0, 100.0, 105.0, 111.0, 90.0], [0, 1, 2, 3, 7, 8]), 100.0, [])
    assert m["max_drawdown_duration"] == 6
    # never recovering: from the peak (day 3) to the last day (day 30) = 27 beats 1 -> 3 = 2
    m = compute_metrics(*curve([100.0, 110.0, 100.0, 111.0, 90.0, 95.0], [0, 1, 2, 3, 20, 30]), 100.0, [])
    assert m["max_drawdown_duration"] == 27
    assert m["max_drawdown"] == pytest.approx(1 - 90 / 111)
    assert m["max_consecutive_losing_days"] == 1
    # consecutive new highs over a weekend are not a drawdown
    days = np.array([day(i) for i in (0, 3, 4)]) // NS_PER_DAY * NS_PER_DAY
    assert max_drawdown_duration(days, np.array([101.0, 102.0, 103.0]), 100.0) == 0
    # reaching the old peak exactly counts as recovery
    assert max_drawdown_duration(days, np.array([101.0, 100.0, 101.0]), 100.0) == 4


def test_max_consecutive_losing_days_and_flat_days_break_runs():
    e = [99.0, 98.0, 97.0, 97.0, 96.0, 95.0, 96.0]
    m = compute_metrics(*curve(e), 100.0, [])
    assert m["max_consecutive_losing_days"] == 3
    assert m["worst_day"] == pytest.approx(95 / 96 - 1)


# ------------------------------------------------------------------------------- edge cases
def test_constant_equity():
    m = compute_metrics(*curve([100.0] * 5), 100.0, [])
    assert_clean(m)
    assert m["volatility"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
    assert m["annual_return"] == 0.0 and m["total_return"] == 0.0
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_duration"] == 0


def test_constant_nonzero_return_has_no_sharpe():
    e = 100.0 * 1.001 ** np.arange(1, 11)
    m = compute_metrics(*curve(e), 100.0, [])
    assert m["sortino"] is None                         # no down day
    assert m["sharpe"] is None                          # zero variance up to rounding, not 1e13
    assert m["volatility"] == 0.0
    assert m["annual_return"] == pytest.approx(1.001 ** 252 - 1)


def test_one_day():
    m = compute_metrics(*curve([99.0]), 100.0, [])
    assert_clean(m)
    assert m["days"] == 1
    assert m["volatility"] is None and m["sharpe"] is None
    assert m["sortino"] == pytest.approx(-0.01 / 0.01 * SQ252)
    assert m["annual_return"] == pytest.approx(0.99 ** 252 - 1)
    assert m["max_drawdown"] == pytest.approx(0.01) and m["max_drawdown_duration"] == 1


def test_one_day_huge_gain_overflows_to_none():
    m = compute_metrics(*curve([1e300]), 1.0, [])
    assert_clean(m)
    assert m["annual_return"] is None and m["calmar"] is None


def test_no_bars():
    m = compute_metrics(np.empty(0, np.int64), np.empty(0), 1000.0, [])
    assert_clean(m)
    assert m["days"] == 0 and m["bars"] == 0 and m["final_value"] == 1000.0
    assert m["total_return"] == 0.0 and m["annual_return"] is None and m["exposure"] is None


def test_equity_hitting_zero():
    m = compute_metrics(*curve([50.0, 0.0, 0.0, 0.0]), 100.0, [])
    assert_clean(m)
    assert m["max_drawdown"] == 1.0
    assert m["total_return"] == -1.0 and m["annual_return"] == -1.0
    assert m["calmar"] == -1.0
    assert m["worst_day"] == -1.0                     # the day it hits zero; after ruin r = 0
    assert m["max_consecutive_losing_days"] == 2
    assert m["max_drawdown_duration"] == 4


def test_equity_going_negative():
    m = compute_metrics(*curve([50.0, -10.0, -20.0]), 100.0, [])
    assert_clean(m)
    assert m["max_drawdown"] == pytest.approx(1.2)
    assert m["annual_return"] is None and m["calmar"] is None


def test_no_fills():
    m = compute_metrics(*curve([100.0, 101.0]), 100.0, [])
    assert m["trades"] == 0 and m["win_rate"] is None and m["profit_factor"] is None
    assert m["avg_trade_pnl"] is None
    assert m["turnover"] == 0.0 and m["exposure"] == 0.0 and m["total_commission"] == 0.0


# ------------------------------------------------------------------------------ round trips
def test_simple_long_round_trip():
    (t,) = round_trips([fill(1, "BUY", 10, 100.0, 1.0), fill(2, "SELL", 10, 110.0, 1.0)])
    assert t == Trade("AAA", "LONG", 1, 2, 10.0, 100.0, 110.0, 98.0, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.pnl = 0.0


def test_scale_in_partial_exits():
    fs = [fill(1, "BUY", 10, 100.0, 1.0), fill(2, "BUY", 10, 110.0, 1.0),
          fill(3, "SELL", 5, 120.0, 0.5), fill(4, "SELL", 15, 90.0, 1.5)]
    (t,) = round_trips(fs)
    assert (t.side, t.entry_ts, t.exit_ts, t.qty) == ("LONG", 1, 4, 20.0)
    assert t.entry_price == pytest.approx(105.0)
    assert t.exit_price == pytest.approx((5 * 120 + 15 * 90) / 20)       # 97.5
    assert t.commission == pytest.approx(4.0)
    assert t.pnl == pytest.approx((97.5 - 105.0) * 20 - 4.0)             # -154


def test_flip_splits_qty_and_commission_pro_rata():
    fs = [fill(1, "BUY", 10, 100.0, 1.0), fill(2, "SELL", 30, 110.0, 3.0), fill(3, "BUY", 20, 100.0, 2.0)]
    long_, short = round_trips(fs)
    assert long_ == Trade("AAA", "LONG", 1, 2, 10.0, 100.0, 110.0, pytest.approx(98.0), pytest.approx(2.0))
    assert (short.side, short.entry_ts, short.exit_ts, short.qty) == ("SHORT", 2, 3, 20.0)
    assert short.entry_price == 110.0 and short.exit_price == 100.0
    assert short.commission == pytest.approx(4.0)                         # 2 of the flip's 3, plus 2
    assert short.pnl == pytest.approx(10 * 20 - 4.0)


def test_short_first_open_position_and_symbols_apart():
    fs = [fill(1, "SELL", 5, 50.0, symbol="B"), fill(2, "BUY", 3, 10.0, symbol="A"),
          fill(3, "BUY", 5, 40.0, symbol="B"), fill(4, "SELL", 1, 12.0, symbol="A")]
    (t,) = round_trips(fs)                         # A is still open (2 left): not a trade
    assert (t.symbol, t.side, t.pnl) == ("B", "SHORT", pytest.approx(50.0))


def test_float_dust_closes_position():
    fs = [fill(1, "BUY", 0.1, 10.0), fill(2, "BUY", 0.2, 10.0), fill(3, "SELL", 0.3, 11.0)]
    (t,) = round_trips(fs)
    assert t.qty == pytest.approx(0.3) and t.pnl == pytest.approx(0.3)


def test_fills_are_taken_in_ts_order():
    fs = [fill(2, "SELL", 10, 110.0), fill(1, "BUY", 10, 100.0)]
    (t,) = round_trips(fs)
    assert (t.side, t.entry_ts, t.exit_ts, t.pnl) == ("LONG", 1, 2, pytest.approx(100.0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5).filter(bool), st.integers(1, 200), st.integers(0, 3)),
                min_size=1, max_size=25))
def test_round_trips_conserve_cash(moves):
    """When every symbol ends flat, the trades' net pnl is exactly the cash the fills moved."""
    fs, pos = [], 0
    for i, (q, px, c) in enumerate(moves):
        fs.append(fill(i, "BUY" if q > 0 else "SELL", abs(q), float(px), c / 4))
        pos += q
    if pos:
        fs.append(fill(len(moves), "SELL" if pos > 0 else "BUY", abs(pos), 100.0, 0.5))
    trades = round_trips(fs)
    cash = -sum(f.signed_qty * f.price for f in fs) - sum(f.commission for f in fs)
    assert sum(t.pnl for t in trades) == pytest.approx(cash, abs=1e-9)
    assert sum(t.commission for t in trades) == pytest.approx(sum(f.commission for f in fs))
    assert all(t.qty > 0 and t.entry_ts <= t.exit_ts for t in trades)
    sides = [t.side for t in trades]
    # trades of one symbol never overlap: each starts at or after the previous one's exit
    assert all(a.exit_ts <= b.entry_ts for a, b in zip(trades, trades[1:]))
    assert set(sides) <= {"LONG", "SHORT"}


def test_trade_metrics():
    fs = [fill(day(0), "BUY", 10, 10.0, 1.0), fill(day(1), "SELL", 10, 12.0, 1.0),    # +18
          fill(day(1), "SELL", 10, 12.0), fill(day(2), "BUY", 10, 13.0),               # -10
          fill(day(2), "BUY", 1, 13.0), fill(day(3), "SELL", 1, 15.0)]                 # +2
    m = compute_metrics(*curve([100.0] * 4), 100.0, fs)
    assert m["trades"] == 3
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(20 / 10)
    assert m["avg_trade_pnl"] == pytest.approx(10 / 3)
    assert m["total_commission"] == 2.0
    m = compute_metrics(*curve([100.0] * 4), 100.0, fs[:2])
    assert m["profit_factor"] is None and m["win_rate"] == 1.0            # no losing trade
    m = compute_metrics(*curve([100.0] * 4), 100.0, fs[2:4])
    assert m["profit_factor"] == 0.0 and m["win_rate"] == 0.0


# ----------------------------------------------------------------------- turnover, exposure
def test_turnover():
    fs = [fill(day(0), "BUY", 1, 50.0), fill(day(2), "SELL", 1, 50.0)]
    m = compute_metrics(*curve([100.0, 100.0, 100.0]), 100.0, fs)
    # 100 traded / 100 mean equity / (3 days / 252)
    assert m["turnover"] == pytest.approx(84.0)


def test_exposure():
    ts, eq = curve([100.0, 100.0, 50.0, 100.0])
    m = compute_metrics(ts, eq, 100.0, [], gross_exposure=np.array([0.0, 50.0, 50.0, 0.0]))
    assert m["exposure"] == pytest.approx((0 + 0.5 + 1.0 + 0) / 4)
    # without gross exposure: share of bars with a position open (fills with ts <= bar ts)
    fs = [fill(int(ts[1]), "BUY", 1, 10.0), fill(int(ts[3]), "SELL", 1, 10.0)]
    m = compute_metrics(ts, eq, 100.0, fs)
    assert m["exposure"] == pytest.approx(2 / 4)
    fs = [fill(int(ts[1]) - 1, "BUY", 1, 10.0)]                        # open to the end
    assert compute_metrics(ts, eq, 100.0, fs)["exposure"] == pytest.approx(3 / 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=1, max_size=40), st.integers(1, 4))
def test_drawdown_properties(levels, bars_per_day):
    eq = np.repeat(np.array(levels) * 1000.0, bars_per_day)
    ts = np.array([D0 + (i // bars_per_day) * NS_PER_DAY + (i % bars_per_day) * HOUR for i in range(len(eq))])
    m = compute_metrics(ts, eq, 1000.0, [])
    assert_clean(m)
    assert 0.0 <= m["max_drawdown"] <= m["max_drawdown_intraday"] < 1.0
    days, e = daily_equity(ts, eq)
    assert m["max_drawdown"] == max_drawdown(e, 1000.0)
    _, r = daily_returns(ts, eq, 1000.0)
    assert np.prod(1 + r) == pytest.approx(eq[-1] / 1000.0)


# ------------------------------------------------------------------- agreement with quantstats
pd = pytest.importorskip("pandas")
qs = pytest.importorskip("quantstats")


def _ns(values) -> np.ndarray:
    return pd.to_datetime(values).values.astype("datetime64[ns]").astype(np.int64)


def _orcl():
    df = pd.read_csv(need(DATA / "backtrader/orcl-1995-2014.txt"))
    return _ns(df["Date"]), df["Close"].to_numpy(float)


def _moutai():
    df = pd.read_csv(need(DATA / "qbot/600519.SH.csv")).sort_values("trade_date")
    return _ns(pd.to_datetime(df["trade_date"].astype(str), format="%Y%m%d")), df["close"].to_numpy(float)


def _kronos_5min():
    df = pd.read_csv(need(DATA / "kronos/XSHG_5min_600977.csv"))
    return _ns(df["timestamps"]), df["close"].to_numpy(float)


LOADERS = {"orcl_daily": _orcl, "600519_daily": _moutai, "600977_5min": _kronos_5min}


def _rel(a, b, tol=1e-9):
    assert a is not None and b is not None and math.isfinite(b), (a, b)
    assert abs(a - b) <= tol * max(abs(b), 1e-12), (a, b)


@pytest.mark.parametrize("first_day", ["as_is", "loss"])
@pytest.mark.parametrize("name", list(LOADERS))
def test_agrees_with_quantstats(name, first_day):
    ts, close = LOADERS[name]()
    equity = 100_000.0 * close / close[0]
    start_cash = 100_000.0
    if first_day == "loss":                         # start richer than the first day's close
        start_cash = 1.05 * float(pd.Series(equity, index=ts).groupby(ts // NS_PER_DAY).last().iloc[0])
    # the daily returns, independently with pandas
    s = pd.Series(equity, index=pd.to_datetime(ts))
    eod = s.groupby(s.index.normalize()).last()
    ret = eod.pct_change()
    ret.iloc[0] = eod.iloc[0] / start_cash - 1.0
    days, r = daily_returns(ts, equity, start_cash)
    assert days.tolist() == eod.index.values.astype("datetime64[ns]").astype(np.int64).tolist()
    np.testing.assert_allclose(r, ret.to_numpy(), rtol=1e-12, atol=1e-15)
    if first_day == "loss":
        assert r[0] < 0

    m = compute_metrics(ts, equity, start_cash, [])
    assert_clean(m)
    assert m["days"] == len(eod) and m["bars"] == len(ts)
    _rel(m["volatility"], qs.stats.volatility(ret, periods=252))
    _rel(m["sharpe"], qs.stats.sharpe(ret, rf=0.0, periods=252))
    _rel(m["sortino"], qs.stats.sortino(ret, rf=0.0, periods=252))
    _rel(m["annual_return"], qs.stats.cagr(ret, periods=252))
    _rel(m["max_drawdown"], -qs.stats.max_drawdown(ret))
    _rel(m["calmar"], qs.stats.calmar(ret, periods=252))
    _rel(m["best_day"], qs.stats.best(ret, aggregate=None))
    _rel(m["worst_day"], qs.stats.worst(ret, aggregate=None))
    _rel(m["total_return"], qs.stats.comp(ret))
    assert m["max_consecutive_losing_days"] == qs.stats.consecutive_losses(ret)
    # our max_drawdown is on the daily equity, with start_cash as first peak
    _rel(m["max_drawdown"], float(1 - (eod / np.maximum.accumulate(np.r_[start_cash, eod])[1:]).min()))
    assert m["max_drawdown_intraday"] >= m["max_drawdown"]
    # risk-free goes into sharpe and sortino only, de-annualised as quantstats does
    mr = compute_metrics(ts, equity, start_cash, [], risk_free=0.03)
    _rel(mr["sharpe"], qs.stats.sharpe(ret, rf=0.03, periods=252))
    _rel(mr["sortino"], qs.stats.sortino(ret, rf=0.03, periods=252))
    _rel(mr["annual_return"], qs.stats.cagr(ret, rf=0.03, periods=252))
