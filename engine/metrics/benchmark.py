"""Benchmark-relative metrics: how a run did against an index it could have held instead.

Alignment
---------
The benchmark file (any format :func:`tradeloop.data.loaders.load_bars` reads; a date and a close column are
enough, as in an index export) is reduced to one close per calendar day (the day's last bar). For
every day ``d`` of the run, the aligned close ``A_d`` is the benchmark's last close on or before
``d`` (carried forward over benchmark holidays, never taken from the future); days before the
benchmark's first day or after its last have no value. The covered days form one stretch
``d_0..d_k`` of the run: the benchmark-relative metrics are computed over it (normally the whole
run; a partial cover is logged as a warning). "The run" is its traded span
(:func:`tradeloop.engine.metrics.performance.traded_span`): with ``trade_from`` the warm-up days are
cut off first and the run's first traded day is measured against the equity before it.

Definitions (``P`` = 252 periods a year, ``n`` = covered days)
-------------------------------------------------------------
``b_d``                      benchmark daily return ``A_d / A_{d-1} - 1``, and 0 on ``d_0``: the benchmark
                             is held from the close of the run's first covered day.
``r_d``                      the run's daily returns (:func:`tradeloop.engine.metrics.daily_returns`).
``benchmark_return``         ``A_{d_k} / A_{d_0} - 1``.
``benchmark_annual_return``  ``(A_{d_k} / A_{d_0}) ** (P / n) - 1`` (CAGR as for the run).
``benchmark_max_drawdown``   max drawdown of ``A`` over the cover, ``A_{d_0}`` the first peak.
``excess_return``            the run's return over the cover (its ``total_return`` when the cover is the
                             whole run) minus ``benchmark_return``.
``beta``                     ``cov(r, b) / var(b)`` (ddof 1), quantstats ``greeks``; None if ``var(b)`` is 0.
``alpha``                    ``(mean(r) - beta * mean(b)) * P``: annualized CAPM alpha on daily returns,
                             risk-free 0, as quantstats ``greeks``.
``information_ratio``        ``mean(r - b) / std(r - b, ddof=1)``, NOT annualized, exactly quantstats
                             ``information_ratio`` (multiply by ``sqrt(P)`` for the annualized figure).
``tracking_error``           ``std(r - b, ddof=1) * sqrt(P)`` (annualized).
``benchmark_days``           ``n``.
None where undefined (fewer than 2 covered days, zero variance); quantstats returns 0 there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import structlog

from tradeloop.data.errors import DataError
from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import NS_PER_DAY

from tradeloop.errors import ConfigError
from tradeloop.engine.metrics.performance import daily_equity, daily_returns, max_drawdown, traded_span

__all__ = ["BENCHMARK_KEYS", "BENCHMARK_FILE", "Benchmark", "load_benchmark", "align", "benchmark_metrics",
           "write_benchmark", "span_of"]

BENCHMARK_KEYS = ("benchmark_return", "benchmark_annual_return", "benchmark_max_drawdown", "excess_return",
                  "alpha", "beta", "information_ratio", "tracking_error", "benchmark_days")
BENCHMARK_FILE = "benchmark.parquet"
_ZERO_SD = 1e-12


@dataclass(frozen=True, slots=True)
class Benchmark:
    """A benchmark's daily closes (int64 ns at 00:00, ascending) and its manifest input entry."""

    days: np.ndarray
    close: np.ndarray
    entry: dict[str, Any]

    def span(self) -> str:
        """First and last day, for messages."""
        return f"{_day(self.days[0])}..{_day(self.days[-1])}"


def _day(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[D]"))


def load_benchmark(path: str | Path, *, on_bad: str = "raise", span: tuple[int, int] | None = None) -> Benchmark:
    """Read a benchmark file into daily closes; a ConfigError if it is missing, unreadable or off the run's span."""
    p = Path(str(path))
    if not p.is_file():
        raise ConfigError(f"benchmark file {path} not found")
    try:
        series = load_bars(p, columns={}, on_bad=on_bad)   # columns={}: a date and a close column suffice
    except DataError as e:
        raise ConfigError(f"benchmark {e}") from None
    except (ValueError, OSError) as e:
        raise ConfigError(f"benchmark {path}: cannot read it as bars: {e}") from None
    if len(series) == 0:
        raise ConfigError(f"benchmark {path}: no bars")
    days, close = daily_equity(series.ts, series.close)
    if not np.all(close > 0):
        raise ConfigError(f"benchmark {path}: closes must be > 0 (first bad day {_day(days[np.argmax(close <= 0)])})")
    bench = Benchmark(days, close, {"path": str(path), "sha256": file_sha256(p), "symbol": series.symbol,
                                    "rows": len(series), "role": "benchmark"})
    if span is not None:
        first, last = (int(t) // NS_PER_DAY * NS_PER_DAY for t in span)
        if days[0] > last or days[-1] < first:
            raise ConfigError(f"benchmark {path}: covers {bench.span()}, no day of the run's data "
                              f"({_day(first)}..{_day(last)})")
    return bench


def span_of(series: list[Any]) -> tuple[int, int] | None:
    """First and last timestamp over the run's input series (None when they hold no bar)."""
    ts = [s.ts for s in series if len(s.ts)]
    return (min(int(t[0]) for t in ts), max(int(t[-1]) for t in ts)) if ts else None


def align(bench: Benchmark, days: np.ndarray) -> np.ndarray:
    """The benchmark close carried onto each of ``days`` (NaN before its first day or after its last)."""
    days = np.asarray(days, dtype=np.int64)
    idx = np.searchsorted(bench.days, days, side="right") - 1
    ok = (idx >= 0) & (days <= bench.days[-1])
    return np.where(ok, bench.close[np.clip(idx, 0, None)], np.nan)


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def benchmark_metrics(bench: Benchmark, ts: np.ndarray, equity: np.ndarray, start_cash: float, *,
                      periods_per_year: int = 252, trade_from: int | None = None) -> dict[str, float | int | None]:
    """All of :data:`BENCHMARK_KEYS` for one run's curve over its traded span (definitions in the module docstring)."""
    P = float(periods_per_year)
    warmup, start_cash = traded_span(ts, equity, start_cash, trade_from)
    ts, equity = np.asarray(ts)[warmup:], np.asarray(equity)[warmup:]
    days, r = daily_returns(ts, equity, start_cash)
    _, e = daily_equity(ts, equity)
    a = align(bench, days)
    out: dict[str, float | int | None] = dict.fromkeys(BENCHMARK_KEYS)
    covered = np.flatnonzero(~np.isnan(a))
    out["benchmark_days"] = n = len(covered)
    if n == 0:
        return out
    i0, i1 = int(covered[0]), int(covered[-1])
    if n < len(days):
        structlog.get_logger("tradeloop.benchmark").warning(
            "benchmark_partial_cover", benchmark=bench.entry["path"], run_days=len(days), covered_days=n,
            first=_day(days[i0]), last=_day(days[i1]))
    ac = a[i0:i1 + 1]
    b = np.zeros(n)
    b[1:] = ac[1:] / ac[:-1] - 1.0
    rs = r[i0:i1 + 1]
    growth = float(ac[-1] / ac[0])
    out["benchmark_return"] = growth - 1.0
    out["benchmark_annual_return"] = _f(growth ** (P / n) - 1.0)
    out["benchmark_max_drawdown"] = max_drawdown(ac, float(ac[0]))
    before = start_cash if i0 == 0 else float(e[i0 - 1])
    if before > 0:
        out["excess_return"] = float(e[i1] / before - 1.0) - out["benchmark_return"]
    if n >= 2:
        active = rs - b
        sd = float(np.std(active, ddof=1))
        out["tracking_error"] = sd * math.sqrt(P) if sd > _ZERO_SD else 0.0
        if sd > _ZERO_SD:
            out["information_ratio"] = _f(np.mean(active) / sd)
        cov = np.cov(rs, b)
        if cov[1, 1] > _ZERO_SD ** 2:
            beta = float(cov[0, 1] / cov[1, 1])
            out["beta"] = _f(beta)
            out["alpha"] = _f((np.mean(rs) - beta * np.mean(b)) * P)
    return out


def write_benchmark(run_dir: Path, bench: Benchmark, ts: np.ndarray, tz: str | None) -> Path:
    """``benchmark.parquet`` [ts, close]: the benchmark close aligned to each day of the run (for the report)."""
    days, _ = daily_equity(ts, np.zeros(len(ts)))
    df = pl.DataFrame([pl.Series("ts", np.asarray(days, np.int64)).cast(pl.Datetime("ns", tz)),
                       pl.Series("close", align(bench, days), pl.Float64)])
    df = df.with_columns(pl.col("close").fill_nan(None))
    path = run_dir / BENCHMARK_FILE
    df.write_parquet(path, compression="zstd", statistics=True)
    return path
