"""How each metric reads for a person: percentages, money, counts and ratios, and the groups reports show them in.

One place, so the terminal summaries, the run report and the compare page format a number alike.
"""
from __future__ import annotations

import math
from typing import Any

PCT = {"total_return", "annual_return", "volatility", "max_drawdown", "max_drawdown_intraday", "win_rate", "exposure",
       "best_day", "worst_day", "benchmark_return", "benchmark_annual_return", "benchmark_max_drawdown",
       "excess_return", "alpha", "tracking_error", "signal_accuracy"}
PCT |= {"var", "cvar", "win_days", "kelly", "time_in_market", "best_month", "worst_month", "best_year",
        "worst_year"}   # quantstats' daily-return statistics (engine/metrics/returns_stats.py)
MONEY = {"start_cash", "final_value", "total_commission", "avg_trade_pnl"}
INTS = {"trades", "days", "bars", "max_drawdown_duration", "max_consecutive_losing_days", "benchmark_days", "risk_events"}
INTS |= {"max_consecutive_winning_days", "warmup_bars"}
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "Returns": ("start_cash", "final_value", "total_return", "annual_return", "best_day", "worst_day", "best_month",
                "worst_month", "best_year", "worst_year"),
    "Risk": ("volatility", "sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_intraday",
             "max_drawdown_duration", "max_consecutive_losing_days", "skew", "kurtosis", "var", "cvar", "omega",
             "tail_ratio", "ulcer_index", "recovery_factor"),
    "Trading": ("trades", "win_rate", "profit_factor", "avg_trade_pnl", "turnover", "exposure", "total_commission",
                "days", "bars", "warmup_bars"),
    "Daily returns": ("win_days", "daily_profit_factor", "payoff_ratio", "kelly", "time_in_market",
                      "max_consecutive_winning_days"),
    "Benchmark": ("benchmark_return", "benchmark_annual_return", "benchmark_max_drawdown", "excess_return", "alpha",
                  "beta", "information_ratio", "tracking_error", "benchmark_days"),
    "Signals": ("signal_accuracy",),
}


# labels people read (the report); a key not listed reads as its words, capitalized
LABELS: dict[str, str] = {
    "start_cash": "Starting cash", "final_value": "Final value", "total_return": "Total return",
    "annual_return": "Annual return (CAGR)", "best_day": "Best day", "worst_day": "Worst day",
    "volatility": "Volatility (annualized)", "sharpe": "Sharpe ratio", "sortino": "Sortino ratio",
    "calmar": "Calmar ratio", "max_drawdown": "Max drawdown", "max_drawdown_intraday": "Max drawdown (intraday)",
    "max_drawdown_duration": "Longest drawdown", "max_consecutive_losing_days": "Most losing days in a row",
    "trades": "Round trips", "win_rate": "Win rate", "profit_factor": "Profit factor",
    "avg_trade_pnl": "Average trade P&L", "turnover": "Turnover (annual)", "exposure": "Time in market",
    "total_commission": "Commission paid", "days": "Days", "bars": "Bars",
    "benchmark_return": "Benchmark return", "benchmark_annual_return": "Benchmark annual return",
    "benchmark_max_drawdown": "Benchmark max drawdown", "excess_return": "Excess return", "alpha": "Alpha (annualized)",
    "beta": "Beta", "information_ratio": "Information ratio", "tracking_error": "Tracking error",
    "benchmark_days": "Benchmark days", "signal_accuracy": "Signal accuracy", "risk_events": "Risk events",
    "skew": "Skew", "kurtosis": "Kurtosis", "var": "Daily value at risk (95%)", "cvar": "Daily expected shortfall (CVaR)",
    "omega": "Omega ratio", "tail_ratio": "Tail ratio", "payoff_ratio": "Payoff ratio", "kelly": "Kelly criterion",
    "recovery_factor": "Recovery factor", "ulcer_index": "Ulcer index",
}
LABELS.update({   # the quantstats daily-return statistics (engine/metrics/returns_stats.py) and the traded span
    "daily_profit_factor": "Profit factor (daily returns)", "win_days": "Winning days",
    "time_in_market": "Days with a return (quantstats exposure)", "best_month": "Best month",
    "worst_month": "Worst month", "best_year": "Best year", "worst_year": "Worst year",
    "max_consecutive_winning_days": "Most winning days in a row", "warmup_bars": "Warm-up bars (not measured)",
})
DAYS = {"max_drawdown_duration", "max_consecutive_losing_days", "days", "benchmark_days"}   # read "N days"
TIMES = {"profit_factor", "payoff_ratio", "tail_ratio", "omega", "recovery_factor", "turnover"}  # read "1.23x"


def metric_label(key: str) -> str:
    """A metric's name for people: ``max_drawdown_duration`` -> ``Longest drawdown``."""
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def format_metric_unit(key: str, value: Any) -> str:
    """:func:`format_metric` with its unit spelled out: ``5,392 days``, ``1.327x`` (percentages carry %)."""
    text = format_metric(key, value)
    if text == "n/a" or not isinstance(value, (int, float)) or isinstance(value, bool):
        return text
    if key in DAYS or key.endswith(("_days", "_duration")):
        return f"{text} days"
    if key in TIMES:
        return f"{text}x"
    return text


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
