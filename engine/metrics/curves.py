"""The series a report plots, derived from a run's daily equity: drawdown, monthly returns, rolling Sharpe.

All use the daily series of :mod:`tradeloop.engine.metrics` (the equity at each day's last bar, the starting
cash as the value before the first day), so a chart and the metric it illustrates agree.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["underwater", "period_returns", "monthly_table", "rolling_sharpe", "MONTHS"]

_CHUNK = 4096
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
