"""How each metric reads for a person: percentages, money, counts and ratios, and the groups reports show them in.

One place, so the terminal summaries, the run report and the compare page format a number alike.
"""
from __future__ import annotations

import math
from typing import Any

PCT = {"total_return", "annual_return", "volatility", "max_drawdown", "max_drawdown_intraday", "win_rate", "exposure",
       "best_day", "worst_day", "benchmark_return", "benchmark_annual_return", "benchmark_max_drawdown",
       "excess_return", "alpha", "tracking_error", "signal_accuracy"}
MONEY = {"start_cash", "final_value", "total_commission", "avg_trade_pnl"}
INTS = {"trades", "days", "bars", "max_drawdown_duration", "max_consecutive_losing_days", "benchmark_days"}
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "Returns": ("start_cash", "final_value", "total_return", "annual_return", "best_day", "worst_day"),
    "Risk": ("volatility", "sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_intraday",
             "max_drawdown_duration", "max_consecutive_losing_days"),
    "Trading": ("trades", "win_rate", "profit_factor", "avg_trade_pnl", "turnover", "exposure", "total_commission",
                "days", "bars"),
    "Benchmark": ("benchmark_return", "benchmark_annual_return", "benchmark_max_drawdown", "excess_return", "alpha",
                  "beta", "information_ratio", "tracking_error", "benchmark_days"),
    "Signals": ("signal_accuracy",),
}


def format_metric(key: str, value: Any) -> str:
    """A metric value for people: percentages, money with thousands separators, ratios to 3 decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if key in PCT:
        return f"{value:.2%}"
    if key in MONEY:
        return f"{value:,.2f}"
    if key in INTS:
        return f"{int(value):,}"
    return f"{value:.3f}"
