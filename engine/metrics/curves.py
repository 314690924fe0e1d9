"""The series a report plots, derived from a run's daily equity: drawdowns, period returns, rolling statistics.

All use the daily series of :mod:`tradeloop.engine.metrics` (the equity at each day's last bar, the starting
cash as the value before the first day), so a chart and the metric it illustrates agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["underwater", "period_returns", "monthly_table", "rolling_sharpe", "rolling_volatility", "rolling_beta",
           "drawdown_periods", "DrawdownPeriod", "weekly_returns", "MONTHS"]

_CHUNK = 4096
NS_PER_DAY = 86_400_000_000_000
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def underwater(equity: np.ndarray, start_cash: float) -> np.ndarray:
    """``E_t / peak_t - 1`` (<= 0) with the starting cash as the first peak."""
    e = np.asarray(equity, np.float64)
    peak = np.maximum.accumulate(np.concatenate(([start_cash], e)))[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, e / peak - 1.0, np.nan)


def period_returns(days: np.ndarray, equity: np.ndarray, start_cash: float, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """``(periods, returns)`` per calendar ``unit`` ("M" or "Y"): last equity of the period over the previous one's."""
    period = np.asarray(days, np.int64).astype("datetime64[ns]").astype(f"datetime64[{unit}]")
    if len(period) == 0:
        return period, np.empty(0)
    last = np.append(np.flatnonzero(period[1:] != period[:-1]), len(period) - 1)
    e = np.asarray(equity, np.float64)[last]
    prev = np.concatenate(([start_cash], e[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, e / prev - 1.0, np.nan)
    return period[last], r


def monthly_table(days: np.ndarray, equity: np.ndarray, start_cash: float) -> tuple[list[str], np.ndarray]:
    """``(years, table)``: one row per year, 12 monthly returns then the year's return (NaN where no data)."""
    months, mr = period_returns(days, equity, start_cash, "M")
    years, yr = period_returns(days, equity, start_cash, "Y")
    if len(months) == 0:
        return [], np.empty((0, 13))
    y0 = int(years[0].astype(int)) + 1970
    n_years = int(years[-1].astype(int)) + 1970 - y0 + 1
    table = np.full((n_years, 13), np.nan)
    m_idx = months.astype(int)
    table[m_idx // 12 + 1970 - y0, m_idx % 12] = mr
    table[years.astype(int) + 1970 - y0, 12] = yr
    return [str(y0 + i) for i in range(n_years)], table


def rolling_sharpe(returns: np.ndarray, window: int = 126, periods_per_year: int = 252) -> np.ndarray:
    """Sharpe (risk-free 0) of each trailing ``window`` of daily returns; NaN before a full window or at zero std."""
    r = np.asarray(returns, np.float64)
    out = np.full(len(r), np.nan)
    if len(r) < window or window < 2:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(r, window)
    for a in range(0, len(windows), _CHUNK):              # bounded memory: _CHUNK x window floats at a time
        w = windows[a:a + _CHUNK]
        sd = w.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[window - 1 + a:window - 1 + a + len(w)] = np.where(
                sd > 1e-12, w.mean(axis=1) / sd * math.sqrt(periods_per_year), np.nan)
    return out


def _rolling(r: np.ndarray, window: int, stat) -> np.ndarray:
    out = np.full(len(r), np.nan)
    if len(r) < window or window < 2:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(r, window)
    for a in range(0, len(windows), _CHUNK):
        out[window - 1 + a:window - 1 + a + len(windows[a:a + _CHUNK])] = stat(windows[a:a + _CHUNK])
    return out


def rolling_volatility(returns: np.ndarray, window: int = 126, periods_per_year: int = 252) -> np.ndarray:
    """Annualized std (ddof 1) of each trailing ``window`` of daily returns; NaN before a full window."""
    return _rolling(np.asarray(returns, np.float64), window,
                    lambda w: w.std(axis=1, ddof=1) * math.sqrt(periods_per_year))


def rolling_beta(returns: np.ndarray, bench: np.ndarray, window: int = 126) -> np.ndarray:
    """``cov(r, b) / var(b)`` (ddof 1) over each trailing ``window``; NaN where b is missing or flat."""
    r, b = np.asarray(returns, np.float64), np.asarray(bench, np.float64)
    if len(r) < window or window < 2:
        return np.full(len(r), np.nan)
    rw = np.lib.stride_tricks.sliding_window_view(r, window)
    bw = np.lib.stride_tricks.sliding_window_view(b, window)
    out = np.full(len(r), np.nan)
    for a in range(0, len(rw), _CHUNK):
        x, y = rw[a:a + _CHUNK], bw[a:a + _CHUNK]
        xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        var = (yc * yc).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[window - 1 + a:window - 1 + a + len(x)] = np.where(var > 1e-24, (xc * yc).sum(axis=1) / var, np.nan)
    return out


@dataclass(frozen=True)
class DrawdownPeriod:
    """One drawdown: first day under the peak, the lowest day, the day back at the peak (None: not yet)."""

    start: int                 # int ns, first day below the previous peak
    valley: int
    recovery: int | None
    depth: float               # <= 0
    length_days: int           # calendar days from start to recovery (or to the last day)


def drawdown_periods(days: np.ndarray, equity: np.ndarray, start_cash: float, top: int = 5) -> list[DrawdownPeriod]:
    """The ``top`` deepest drawdowns of the daily equity (peak = running max, the starting cash first), deepest first."""
    d = np.asarray(days, np.int64)
    dd = underwater(equity, start_cash)
    under = np.nan_to_num(dd, nan=0.0) < -1e-12
    if not under.any():
        return []
    edges = np.diff(np.r_[0, under.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # ends: first day back (or len)
    periods = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        v = a + int(np.nanargmin(dd[a:b]))
        rec = int(d[b]) if b < len(d) else None
        stop = rec if rec is not None else int(d[-1])
        periods.append(DrawdownPeriod(int(d[a]), int(d[v]), rec, float(dd[v]), int((stop - int(d[a])) // NS_PER_DAY)))
    periods.sort(key=lambda p: p.depth)
    return periods[:top]


def weekly_returns(days: np.ndarray, equity: np.ndarray, start_cash: float) -> np.ndarray:
    """Returns of calendar weeks (Monday to Sunday): the week's last equity over the previous week's."""
    d = np.asarray(days, np.int64)
    if len(d) == 0:
        return np.empty(0)
    week = (d // NS_PER_DAY + 3) // 7                      # 1970-01-01 was a Thursday
    last = np.append(np.flatnonzero(week[1:] != week[:-1]), len(week) - 1)
    e = np.asarray(equity, np.float64)[last]
    prev = np.concatenate(([start_cash], e[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, e / prev - 1.0, np.nan)
