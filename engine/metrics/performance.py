"""Performance metrics of one run, from its equity curve and its fills (pure numpy).

Inputs
------
``ts``       int64 nanoseconds, one per bar, non-decreasing. Naive wall time is stored as if it
             were UTC (see :mod:`tradeloop.data.schema`), so the calendar day of a bar is ``ts // NS_PER_DAY``.
``equity``   account value (cash + marked positions) at each bar's mark, same length as ``ts``.
``start_cash`` the account value before the first bar (> 0).
``fills``    the run's executions (:class:`tradeloop.brokers.orders.Fill`).
``trade_from`` int64 ns or None: the start of the TRADED span (``run.trade_from``, a walk-forward
             window's test start, a model strategy's first trading day).

The traded span
---------------
Every metric is computed over the traded span only: the bars from the first bar with
``ts >= trade_from`` to the last (all bars without ``trade_from``). The warm-up bars before it
(indicators and features warming up, orders refused) count in no metric. The span starts from
the equity at the last bar BEFORE it (normally the cash: nothing could trade), which is what
``start_cash`` below reports, and the first traded day's return is measured against it. Fills
stamped before ``trade_from`` (there are none when the engine refused the warm-up orders) are left
out. ``warmup_bars`` is the number of bars cut off, so ``equity[warmup_bars:]`` with ``start_cash``
is the curve every metric (and the report's chart of it) is computed from; see :func:`traded_span`.

Definitions (``P = periods_per_year``, 252 by default; ``n`` = number of days)
------------------------------------------------------------------------------
Daily series
    ``E_d`` is the equity at the LAST bar of calendar day ``d`` (only days present in the data).
    ``r_d = E_d / E_{d-1} - 1`` with ``E_{-1} = start_cash``, so the first day is measured
    against the starting cash. If ``E_{d-1} <= 0`` (the account is ruined) ``r_d = 0``: a dead
    account has no return, and this keeps every value finite.

``total_return``   ``final_value / start_cash - 1``; ``final_value`` is the equity at the last bar.
``annual_return``  CAGR as in quantstats: ``(final_value / start_cash) ** (P / n) - 1`` (years =
                   number of daily returns / P, i.e. *trading* days, not calendar time). None when
                   there is no day, when the final value is negative, or when the power overflows.
``volatility``     ``std(r, ddof=1) * sqrt(P)`` (raw returns, no risk-free). None with < 2 days.
``sharpe``         ``mean(x) / std(x, ddof=1) * sqrt(P)`` with excess returns ``x = r - rf_d``,
                   ``rf_d = (1 + risk_free) ** (1 / P) - 1`` (quantstats' de-annualisation of the
                   annual ``risk_free``). None with < 2 days or zero variance. "Zero" here and
                   for volatility / sortino means a daily std (or downside deviation) <= 1e-12:
                   below that it is float rounding of a constant return, and the ratio would be
                   noise of order 1e13 (volatility is then reported as 0.0).
``sortino``        ``mean(x) / dd * sqrt(P)``, downside deviation ``dd = sqrt(sum(min(x, 0)**2) / n)``
                   (quantstats; the mean of squared negatives over ALL days). None if ``dd`` is 0
                   (no day below the risk-free rate).
``max_drawdown``   ``max_t (1 - E_t / max(start_cash, E_0..E_t))`` over the daily series: a positive
                   fraction, the starting cash is the first peak. 0.0 when equity never falls below a
                   previous peak. Can exceed 1 only if equity goes negative.
``max_drawdown_intraday`` the same over every bar instead of every day's last bar.
``max_drawdown_duration`` int, calendar days: the longest stretch from a peak day to the first day
                   whose equity is back at (>=) that peak, or to the last day if it never is. Only
                   stretches with at least one day under water count. The starting cash is dated
                   one calendar day before the first day.
``calmar``         ``annual_return / max_drawdown``; None if either is None or max_drawdown == 0.
``trades``         number of closed round trips (see :func:`round_trips`); positions still open at
                   the end are not counted.
``win_rate``       share of closed trades with ``pnl > 0`` (None with no trade).
``profit_factor``  (sum of positive pnl) / (-sum of negative pnl) over closed trades; None when there is no
                   losing trade (gross loss 0: undefined/infinite), 0.0 with losers but no winner.
``avg_trade_pnl``  mean net pnl of the closed trades (None with no trade).
``max_consecutive_losing_days`` longest run of consecutive days with ``r_d < 0`` (int).
``turnover``       ``sum(qty * price over ALL fills) / mean(E_d) / (n / P)``: traded notional per
                   year in units of the average end-of-day equity (a buy-and-hold of the whole account
                   held one year is 1.0; a full round trip in that year is 2.0). 0.0 with no fill,
                   None with no day or a non-positive mean equity.
``exposure``       with ``gross_exposure`` (per-bar ``sum |qty * price|``): the mean over bars with
                   ``equity > 0`` of ``gross_exposure / equity`` (can exceed 1 with leverage).
                   Without it: the share of bars at which some position is open, the position at a
                   bar being the net of all fills with ``fill.ts <= bar ts``. None with no bar.
``days``, ``bars`` number of days / bars. ``total_commission`` sum of the commissions of all fills.
``best_day``, ``worst_day`` max / min ``r_d`` (None with no day).

``warmup_bars``    int: bars before the traded span (0 without ``trade_from``).
``periods_per_year`` the ``P`` every annualised value above used: a run's comes from its instruments
                   (:func:`tradeloop.brokers.instruments.periods_per_year`: 365 when a traded symbol trades
                   24/7, e.g. crypto; 252 for exchange-traded markets).

The quantstats distribution statistics of the daily returns (skew, kurtosis, VaR, CVaR, omega, tail
ratio, payoff ratio, daily profit factor, win days, Kelly, recovery factor, ulcer index, time in
market, best/worst month and year, max consecutive winning days) are defined in
:mod:`tradeloop.engine.metrics.returns_stats` and are part of :data:`METRIC_KEYS`.

Undefined values are None (JSON null); the dict never holds NaN or inf.

Where these differ from quantstats 0.0.86 (``quantstats/stats.py``)
--------------------------------------------------------------------
* volatility, sharpe, sortino, cagr, calmar, max_drawdown: identical formulas on the same daily
  returns (checked to 1e-9 relative in ``tests/test_metrics.py``). quantstats returns NaN/inf
  (or a ~1e13 ratio from rounding noise) where we return None: zero variance (std <= 1e-12),
  zero downside, zero drawdown, fewer than 2 days for volatility/sharpe.
* risk-free: quantstats de-annualises geometrically, ``(1 + rf) ** (1 / P) - 1``, not ``rf / P``;
  we follow it. Like quantstats, ``risk_free`` affects only sharpe and sortino.
* cagr: we take the wealth ratio ``final_value / start_cash`` rather than ``prod(1 + r)``; they are
  the same number (the product telescopes) unless the account was ruined (see ``r_d`` above).
* max_drawdown: quantstats 0.0.86 puts a phantom baseline of 1.0 before a returns series
  (``_get_baseline_value``), i.e. it too counts the start as the first peak, so its max_drawdown of
  our daily returns equals ours whether or not the first day is a loss (the test checks both).
  Fed PRICES instead of returns, quantstats takes the first price as the baseline and would miss
  a first-day loss; we never do that.
* cagr ignores ``risk_free`` in both (quantstats accepts ``rf`` but does not subtract it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import msgspec
import numpy as np

from tradeloop.brokers.orders import Fill
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.metrics.returns_stats import RETURN_STATS_KEYS, return_stats
from tradeloop.engine.metrics.returns_stats import finite_or_none as _f, longest_run as _longest_run

__all__ = [
    "Trade",
    "METRIC_KEYS",
    "daily_equity",
    "daily_returns",
    "round_trips",
    "max_drawdown",
    "max_drawdown_duration",
    "compute_metrics",
    "traded_span",
]

METRIC_KEYS = (
    "start_cash", "final_value", "total_return", "annual_return", "volatility", "sharpe", "sortino",
    "max_drawdown", "max_drawdown_intraday", "max_drawdown_duration", "calmar", "trades", "win_rate",
    "profit_factor", "max_consecutive_losing_days", "turnover", "exposure", "days", "bars",
    "total_commission", "best_day", "worst_day", "avg_trade_pnl", "warmup_bars", "periods_per_year",
) + RETURN_STATS_KEYS

_QTY_RTOL = 1e-9   # a position within this fraction of the traded size is flat
_ZERO_SD = 1e-12   # a daily std / downside deviation at or below this is rounding noise: zero


@dataclass(frozen=True, slots=True)
class Trade:
    """One closed round trip of one symbol: from the fill that moved the position off 0 to the fill
    that brought it back to 0.

    ``qty`` is the total quantity entered (= total quantity exited); ``entry_price`` and
    ``exit_price`` are the volume-weighted averages of the entry-side and exit-side fills;
    ``commission`` is the sum of the commissions of its fills (pro rata for a fill that flipped
    the position); ``pnl`` is the net cash result: ``(exit - entry) * qty`` for a LONG,
    ``(entry - exit) * qty`` for a SHORT, minus ``commission``.
    """

    symbol: str
    side: str            # 'LONG' or 'SHORT'
    entry_ts: int
    exit_ts: int
    qty: float
    entry_price: float
    exit_price: float
    pnl: float
    commission: float


# --------------------------------------------------------------------------------------- daily
def _check_curve(ts: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(ts, dtype=np.int64)
    equity = np.asarray(equity, dtype=np.float64)
    if ts.ndim != 1 or equity.ndim != 1 or len(ts) != len(equity):
        raise ValueError(f"ts and equity must be 1-D of the same length, got {ts.shape} and {equity.shape}")
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("ts must be non-decreasing")
    if not np.all(np.isfinite(equity)):
        raise ValueError("equity holds NaN or inf")
    return ts, equity


def daily_equity(ts: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(days, E)``: each calendar day present in ``ts`` (int64 ns at 00:00 of the naive wall time)
    and the equity at that day's last bar."""
    ts, equity = _check_curve(ts, equity)
    if len(ts) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    day = (ts // NS_PER_DAY) * NS_PER_DAY
    last = np.append(np.flatnonzero(day[1:] != day[:-1]), len(day) - 1)
    return day[last], equity[last]


def _returns_from(e: np.ndarray, start_cash: float) -> np.ndarray:
    r = np.zeros(len(e))
    if len(e) == 0:
        return r
    prev = np.concatenate(([start_cash], e[:-1]))
    ok = prev > 0
    r[ok] = e[ok] / prev[ok] - 1.0
    return r


def daily_returns(ts: np.ndarray, equity: np.ndarray, start_cash: float) -> tuple[np.ndarray, np.ndarray]:
    """``(days, r)`` with ``r_d = E_d / E_{d-1} - 1``, ``E_{-1} = start_cash`` (0 after ruin)."""
    start_cash = _check_cash(start_cash)
    days, e = daily_equity(ts, equity)
    return days, _returns_from(e, start_cash)


def _check_cash(start_cash: float) -> float:
    start_cash = float(start_cash)
    if not (math.isfinite(start_cash) and start_cash > 0):
        raise ValueError(f"start_cash must be a positive finite number, got {start_cash}")
    return start_cash


def traded_span(ts: np.ndarray, equity: np.ndarray, start_cash: float, trade_from: int | None) -> tuple[int, float]:
    """``(i0, start_value)``: the index of the first bar with ``ts >= trade_from`` (0 without it) and
    the value the traded span starts from, the equity at bar ``i0 - 1`` (``start_cash`` when ``i0`` is 0).

    ``ts[i0:]``, ``equity[i0:]`` with ``start_value`` is the curve every metric is computed from.
    """
    start_cash = _check_cash(start_cash)
    if trade_from is None:
        return 0, start_cash
    i0 = int(np.searchsorted(np.asarray(ts, np.int64), int(trade_from), side="left"))
    start = float(np.asarray(equity, np.float64)[i0 - 1]) if i0 > 0 else start_cash
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"the equity before the traded span is {start}: the traded span has no positive start")
    return i0, start


# ----------------------------------------------------------------------------------- drawdown
def max_drawdown(equity: np.ndarray, start_cash: float) -> float:
    """``max(1 - E_t / running_peak_t)`` with ``start_cash`` as the first peak (0.0 if none)."""
    e = np.concatenate(([_check_cash(start_cash)], np.asarray(equity, dtype=np.float64)))
    peak = np.maximum.accumulate(e)
    return float(max(0.0, np.max(1.0 - e / peak)))


def max_drawdown_duration(days: np.ndarray, equity: np.ndarray, start_cash: float) -> int:
    """Longest peak-to-recovery stretch in calendar days (to the last day if never recovered).

    ``days`` are int64 ns at 00:00; the starting cash is dated the day before ``days[0]``.
    """
    days = np.asarray(days, dtype=np.int64)
    if len(days) == 0:
        return 0
    d = np.concatenate(([days[0] - NS_PER_DAY], days)) // NS_PER_DAY
    e = np.concatenate(([_check_cash(start_cash)], np.asarray(equity, dtype=np.float64)))
    is_peak = e >= np.maximum.accumulate(e)          # at (or back at) the running high
    p = np.flatnonzero(is_peak)                       # p[0] == 0 always
    best = 0
    gaps = np.diff(p) > 1                             # a peak followed by days under water
    if np.any(gaps):
        best = int(np.max(d[p[1:][gaps]] - d[p[:-1][gaps]]))
    if p[-1] < len(e) - 1:                            # still under water at the end
        best = max(best, int(d[-1] - d[p[-1]]))
    return best


# --------------------------------------------------------------------------------- round trips
def _flat(pos: float, scale: float) -> bool:
    return abs(pos) <= _QTY_RTOL * scale


class _Open:
    __slots__ = ("symbol", "sign", "entry_ts", "in_qty", "in_notional", "out_qty", "out_notional", "commission")

    def __init__(self, symbol: str, sign: int, ts: int) -> None:
        self.symbol, self.sign, self.entry_ts = symbol, sign, ts
        self.in_qty = self.in_notional = self.out_qty = self.out_notional = self.commission = 0.0

    def close(self, ts: int) -> Trade:
        gross = (self.out_notional - self.in_notional) * self.sign
        return Trade(self.symbol, "LONG" if self.sign > 0 else "SHORT", self.entry_ts, int(ts),
                     self.in_qty, self.in_notional / self.in_qty, self.out_notional / self.out_qty,
                     gross - self.commission, self.commission)


def _walk(fills: Sequence[Fill]) -> tuple[list[Trade], np.ndarray, np.ndarray]:
    """Closed trades, plus after each fill (ts order) its ts and the number of symbols not flat."""
    stamps = [f.ts for f in fills]
    order = sorted(range(len(fills)), key=stamps.__getitem__)   # stable: same-ts fills keep order
    pos: dict[str, float] = {}
    open_: dict[str, _Open] = {}
    trades: list[Trade] = []
    n_open: list[int] = []
    isfinite = math.isfinite
    for i in order:
        f = fills[i]
        q, px, c, s = float(f.qty), float(f.price), float(f.commission), f.side.sign
        if not (isfinite(q) and q > 0 and isfinite(px) and isfinite(c)):
            raise ValueError(f"bad fill {f!r}: qty must be > 0, price and commission finite")
        p = pos.get(f.symbol, 0.0)
        t = open_.get(f.symbol)
        if t is None:                                        # flat: open a trade
            t = open_[f.symbol] = _Open(f.symbol, s, f.ts)
            t.in_qty, t.in_notional, t.commission = q, q * px, c
            pos[f.symbol] = s * q
        elif s == t.sign:                                     # add to the position
            t.in_qty += q
            t.in_notional += q * px
            t.commission += c
            pos[f.symbol] = p + s * q
        else:                                                 # reduce, close or flip
            new = p + s * q
            if _flat(new, max(q, abs(p))):                    # closes exactly
                t.out_qty += q
                t.out_notional += q * px
                t.commission += c
                trades.append(t.close(f.ts))
                del open_[f.symbol]
                pos[f.symbol] = 0.0
            elif abs(q) < abs(p):                             # partial exit
                t.out_qty += q
                t.out_notional += q * px
                t.commission += c
                pos[f.symbol] = new
            else:                                             # flip: split qty and commission
                close_q = abs(p)
                frac = close_q / q
                t.out_qty += close_q
                t.out_notional += close_q * px
                t.commission += c * frac
                trades.append(t.close(f.ts))
                nt = open_[f.symbol] = _Open(f.symbol, s, f.ts)
                nt.in_qty = q - close_q
                nt.in_notional = nt.in_qty * px
                nt.commission = c * (1.0 - frac)
                pos[f.symbol] = s * nt.in_qty
        n_open.append(len(open_))
    return trades, np.array(stamps, np.int64)[order], np.array(n_open, np.int64)


def round_trips(fills: Sequence[Fill]) -> list[Trade]:
    """The closed round trips of ``fills`` (processed in ``ts`` order, stable), in closing order.

    Per symbol a trade opens when the position leaves 0 and closes when it is back at 0 (within
    1e-9 of the traded size). Partial exits stay in the trade. A fill that crosses 0 closes the
    trade with the part that reaches 0 and opens an opposite one with the rest, its qty and
    commission split pro rata. Positions still open at the end are not returned.
    """
    return _walk(fills)[0]


# ------------------------------------------------------------------------------------- metrics
def compute_metrics(ts: np.ndarray, equity: np.ndarray, start_cash: float, fills: Sequence[Fill], *,
                    gross_exposure: np.ndarray | None = None, periods_per_year: int = 252,
                    risk_free: float = 0.0, trade_from: int | None = None,
                    multipliers: Mapping[str, float] | None = None) -> dict[str, float | int | None]:
    """All of :data:`METRIC_KEYS` for one run, over its traded span (definitions in the module docstring).
    ``multipliers``: futures (symbol -> contract multiplier); their fills count at price x multiplier in the
    trade PnL and the turnover."""
    ts, equity = _check_curve(ts, equity)
    P = float(periods_per_year)
    if not P > 0:
        raise ValueError("periods_per_year must be > 0")
    warmup, start_cash = traded_span(ts, equity, start_cash, trade_from)
    fills = list(fills)
    if multipliers:
        fills = [msgspec.structs.replace(f, price=f.price * multipliers[f.symbol]) if f.symbol in multipliers else f
                 for f in fills]
    if gross_exposure is not None and len(gross_exposure) != len(ts):
        raise ValueError(f"gross_exposure has shape {np.shape(gross_exposure)}, equity {equity.shape}")
    if warmup:
        ts, equity = ts[warmup:], equity[warmup:]
        gross_exposure = None if gross_exposure is None else np.asarray(gross_exposure)[warmup:]
    if trade_from is not None:
        fills = [f for f in fills if f.ts >= trade_from]
    days, e = daily_equity(ts, equity)
    r = _returns_from(e, start_cash)
    n, nbars = len(r), len(ts)
    final = float(equity[-1]) if nbars else start_cash
    wealth = final / start_cash

    out: dict[str, float | int | None] = dict.fromkeys(METRIC_KEYS)
    out.update(start_cash=start_cash, final_value=final, total_return=wealth - 1.0, days=n, bars=nbars,
               total_commission=float(sum(float(f.commission) for f in fills)), warmup_bars=warmup,
               periods_per_year=int(P) if P.is_integer() else P)

    # returns-based
    if n:
        if wealth >= 0:
            try:
                out["annual_return"] = _f(wealth ** (P / n) - 1.0)
            except OverflowError:
                out["annual_return"] = None
        rf_d = (1.0 + risk_free) ** (1.0 / P) - 1.0 if risk_free else 0.0
        x = r - rf_d
        if n >= 2:
            sd_r, sd_x = float(np.std(r, ddof=1)), float(np.std(x, ddof=1))
            out["volatility"] = _f(sd_r * math.sqrt(P)) if sd_r > _ZERO_SD else 0.0
            if sd_x > _ZERO_SD:
                out["sharpe"] = _f(np.mean(x) / sd_x * math.sqrt(P))
        down = math.sqrt(float(np.sum(np.minimum(x, 0.0) ** 2)) / n)
        if down > _ZERO_SD:
            out["sortino"] = _f(np.mean(x) / down * math.sqrt(P))
        out["best_day"] = float(np.max(r))
        out["worst_day"] = float(np.min(r))
        out["max_consecutive_losing_days"] = _longest_run(r < 0)
        out["max_drawdown"] = max_drawdown(e, start_cash)
        out["max_drawdown_duration"] = max_drawdown_duration(days, e, start_cash)
        if out["annual_return"] is not None and out["max_drawdown"] > 0:
            out["calmar"] = _f(out["annual_return"] / out["max_drawdown"])
    else:
        out["max_consecutive_losing_days"] = 0
        out["max_drawdown_duration"] = 0
        out["max_drawdown"] = 0.0
    out["max_drawdown_intraday"] = max_drawdown(equity, start_cash) if nbars else 0.0
    peak = np.maximum.accumulate(np.concatenate(([start_cash], e)))[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        under = np.where(peak > 0, e / peak - 1.0, np.nan)
    out.update(return_stats(days, r, out["max_drawdown"], under))

    # trades
    trades, when, n_open = _walk(fills)
    pnl = np.array([t.pnl for t in trades], dtype=np.float64)
    out["trades"] = len(trades)
    if len(trades):
        gp, gl = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
        out["win_rate"] = float(np.mean(pnl > 0))
        out["profit_factor"] = _f(gp / gl) if gl > 0 else None
        out["avg_trade_pnl"] = float(np.mean(pnl))

    # turnover
    notional = float(sum(float(f.qty) * float(f.price) for f in fills))
    mean_eq = float(np.mean(e)) if n else 0.0
    if n and mean_eq > 0:
        out["turnover"] = _f(notional / mean_eq / (n / P))
    elif not fills:
        out["turnover"] = 0.0

    # exposure
    if nbars:
        if gross_exposure is not None:
            g = np.asarray(gross_exposure, dtype=np.float64)
            if g.shape != equity.shape:
                raise ValueError(f"gross_exposure has shape {g.shape}, equity {equity.shape}")
            ok = (equity > 0) & np.isfinite(g)
            if ok.any():
                out["exposure"] = _f(np.mean(np.abs(g[ok]) / equity[ok]))
        else:
            k = np.searchsorted(when, ts, side="right") - 1
            held = np.zeros(nbars, dtype=bool)
            has = k >= 0
            held[has] = n_open[k[has]] > 0
            out["exposure"] = float(np.mean(held))
    return out
