"""Parameter sweeps: one backtest per point of a grid, on any executor, ranked with a deflated Sharpe.

``tradeloop sweep STRATEGY --data F --grid fast=5,10,20 --grid slow=30,60,120`` runs every
combination of the grid values as its own backtest: a copy of the base ``RunConfig`` with the
grid keys overridden (``fast`` means ``params.fast``; any ``section.key`` that ``--set`` accepts
works too, e.g. ``commission.rate=0,0.001``). A work unit is the point's ``RunConfig`` dict,
whose inputs are file paths (made absolute here), never loaded frames.

Outputs, in ``--out DIR``:

``sweep.parquet``  one row per grid point, in grid order: ``point`` (0-based), one column per
                   grid key (``params.fast``, ...), ``status`` (``ok``/``error``), ``error``
                   (``Type: message`` or null), the key metrics (:data:`TABLE_METRICS`, plus the
                   ranking metric), and ``skew``/``kurtosis`` of the point's daily returns.
                   The table does not depend on the executor that produced it.
``sweep.json``     the grid, counts, the ``ok`` points ranked by the metric (descending; ascending
                   for :data:`LOWER_IS_BETTER`), the errors, and for the best point its deflated
                   Sharpe ratio.

Deflated Sharpe ratio (Bailey & Lopez de Prado, "The Deflated Sharpe Ratio", 2014)
-------------------------------------------------------------------------------------
With per-period (daily, not annualised) Sharpe ratios::

    SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))      (expected max of N trials)
    DSR = Z( (SR* - SR0) * sqrt(T - 1) / sqrt(1 - s * SR* + (k - 1) / 4 * SR*^2) )

``Z`` the standard normal CDF, ``g`` the Euler-Mascheroni constant, ``N`` the number of trials
(grid points that finished with a Sharpe ratio), ``V`` the sample variance (ddof=1) of their
daily Sharpe ratios, ``SR*`` the daily Sharpe of the best point (by the ranking metric), ``s``
and ``k`` the skewness and (non-excess, normal = 3) kurtosis of its daily returns (population
moments), ``T`` its number of daily returns. A daily Sharpe is the run's annualised ``sharpe``
divided by ``sqrt(P)``, the point's ``periods_per_year`` (252; 365 for 24/7 symbols; see
engine/metrics/performance.py). With ``N < 2`` or ``V = 0`` there is nothing to
deflate by and ``SR0 = 0`` (DSR is then the probabilistic Sharpe ratio against 0). The DSR is
null when the best has no Sharpe, ``T < 2``, or the denominator is not positive.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tradeloop.errors import ConfigError

from tradeloop.engine.config.run import RunConfig, parse_value
from tradeloop.engine.research.executors import Executor, Result, run_units

PERIODS_PER_YEAR = 252  # what engine.session's metrics use
EULER_GAMMA = 0.5772156649015329
TABLE_METRICS = ("sharpe", "sortino", "total_return", "annual_return", "volatility", "max_drawdown", "calmar",
                 "trades", "win_rate", "profit_factor", "final_value", "days")
LOWER_IS_BETTER = frozenset({"volatility", "max_drawdown", "max_drawdown_intraday", "max_drawdown_duration",
                             "max_consecutive_losing_days", "total_commission", "tracking_error", "risk_events"})
_GRID_HELP = "expected KEY=V1,V2,... (e.g. fast=5,10,20 or commission.rate=0,0.001)"


# --------------------------------------------------------------------------------------- grid
def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["fast=5,10", "slow=30"]`` -> ``{"params.fast": ["5", "10"], "params.slow": ["30"]}`` (value texts).

    A key without a section is a strategy parameter. Raises ConfigError naming the bad ``--grid``.
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip() or any(c.isspace() for c in key):
            raise ConfigError(f"--grid {spec!r}: {_GRID_HELP}")
        values = [v.strip() for v in text.split(",")]
        if any(not v for v in values):
            raise ConfigError(f"--grid {spec!r}: empty value in the list; {_GRID_HELP}")
        if "." not in key:
            key = f"params.{key}"
        section, _, name = key.partition(".")
        if not section or not name:
            raise ConfigError(f"--grid {spec!r}: {_GRID_HELP}")
        if key in grid:
            raise ConfigError(f"--grid {spec!r}: {key} is given twice")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {spec!r}: a value is repeated")
        grid[key] = values
    if not grid:
        raise ConfigError(f"no --grid given: {_GRID_HELP}")
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _absolute(cfg: RunConfig) -> RunConfig:
    """A copy whose local input paths are absolute (work units may run in another folder)."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    if not cfg.run.catalog:
        for spec in cfg.data:
            if Path(spec.path).exists():
                spec.path = str(Path(spec.path).resolve())
    elif Path(cfg.run.catalog).exists():
        cfg.run.catalog = str(Path(cfg.run.catalog).resolve())
    if cfg.run.benchmark and Path(cfg.run.benchmark).exists():
        cfg.run.benchmark = str(Path(cfg.run.benchmark).resolve())
    cfg.run.out = None
    return cfg


def build_units(cfg: RunConfig, grid: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One work unit per grid point: ``{"point": i, "config": RunConfig dict}`` (overrides checked here)."""
    base = _absolute(cfg)
    units = []
    for i, point in enumerate(grid_points(grid)):
        c = RunConfig.from_dict(base.to_dict())
        for key, text in point.items():
            try:
                c.override(f"{key}={text}")
            except ConfigError as e:
                raise ConfigError(f"--grid {key}: {e}") from None
        try:
            c.validate()   # a grid value out of its key's range is refused before anything runs
        except ConfigError as e:
            raise ConfigError(f"--grid point {i} {point}: {e}") from None
        units.append({"point": i, "config": c.to_dict()})
    return units


# ------------------------------------------------------------------------------------ one point
def _moments(r: Any) -> tuple[float | None, float | None]:
    """Skewness and non-excess kurtosis (population moments) of ``r``; None without variance."""
    import numpy as np
    r = np.asarray(r, dtype=float)
    if len(r) < 2:
        return None, None
    d = r - r.mean()
    m2 = float(np.mean(d ** 2))
    if m2 <= 1e-24:
        return None, None
    return float(np.mean(d ** 3)) / m2 ** 1.5, float(np.mean(d ** 4)) / m2 ** 2


def run_point(unit: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point (in whatever process the executor chose): its scalar metrics and moments."""
    from tradeloop.engine.metrics.performance import daily_returns
    from tradeloop.engine.assembly.backtest import backtest
    cfg = RunConfig.from_dict(unit["config"], f"sweep point {unit['point']}")
    result, _ = backtest(cfg, write=False, progress=False)
    _, r = daily_returns(result.ts, result.equity, result.start_cash)
    skew, kurt = _moments(r)
    metrics = {k: v for k, v in result.metrics.items()
               if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    return {"metrics": metrics, "skew": skew, "kurtosis": kurt}


# ------------------------------------------------------------------------------ deflated Sharpe
def expected_max_sharpe(variance: float, trials: int) -> float:
    """``SR0``: the expected maximum of ``trials`` Sharpe ratios of variance ``variance`` whose true value is 0."""
    if trials < 2 or not variance > 0:
        return 0.0
    z = statistics.NormalDist()
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * z.inv_cdf(1 - 1 / trials)
                                  + EULER_GAMMA * z.inv_cdf(1 - 1 / (trials * math.e)))


def deflated_sharpe(sharpe: float, variance: float, trials: int, skew: float, kurtosis: float,
                    observations: int) -> float | None:
    """The deflated Sharpe ratio (a probability); all Sharpe values per period, not annualised."""
    if observations < 2:
        return None
    denom = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    if not denom > 0:
        return None
    sr0 = expected_max_sharpe(variance, trials)
    return statistics.NormalDist().cdf((sharpe - sr0) * math.sqrt(observations - 1) / math.sqrt(denom))


def _daily(sharpe: float | None, periods: float | None = None) -> float | None:
    """An annualised Sharpe per period: / sqrt(the run's periods_per_year), 252 when not known."""
    return None if sharpe is None else sharpe / math.sqrt(periods or PERIODS_PER_YEAR)


def deflated_sharpe_of(best: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The DSR block of ``sweep.json`` for row ``best`` among the sweep's ``rows``."""
    trials = [_daily(r["sharpe"], r.get("periods_per_year")) for r in rows
              if r["status"] == "ok" and r.get("sharpe") is not None]
    variance = statistics.variance(trials) if len(trials) >= 2 else 0.0
    sr = _daily(best.get("sharpe"), best.get("periods_per_year"))
    out: dict[str, Any] = {
        "deflated_sharpe": None, "sharpe": best.get("sharpe"), "sharpe_daily": sr, "trials": len(trials),
        "trials_sharpe_variance_daily": variance, "expected_max_sharpe_daily": expected_max_sharpe(variance, len(trials)),
        "skew": best.get("skew"), "kurtosis": best.get("kurtosis"), "days": best.get("days"),
    }
    if sr is not None and best.get("skew") is not None and best.get("kurtosis") is not None and best.get("days"):
        out["deflated_sharpe"] = deflated_sharpe(sr, variance, len(trials), best["skew"], best["kurtosis"],
                                                 int(best["days"]))
    return out


# ----------------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    table: Any  # polars.DataFrame, one row per grid point
    summary: dict[str, Any]
    out: Path | None


def _rows(units: list[dict[str, Any]], grid: dict[str, list[str]], results: list[Result],
          metric_cols: list[str]) -> list[dict[str, Any]]:
    points = grid_points(grid)
    rows = []
    for unit, point, res in zip(units, points, results):
        row: dict[str, Any] = {"point": unit["point"]}
        row.update({k: parse_value(v) for k, v in point.items()})
        row["status"] = "ok" if res.ok else "error"
        row["error"] = res.error
        m = res.value["metrics"] if res.ok else {}
        row.update({k: m.get(k) for k in metric_cols})
        row["skew"] = res.value["skew"] if res.ok else None
        row["kurtosis"] = res.value["kurtosis"] if res.ok else None
        row["periods_per_year"] = m.get("periods_per_year")   # the point's P (365 for 24/7 symbols)
        rows.append(row)
    return rows


def _column(name: str, values: list[Any]) -> Any:
    import polars as pl
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present) and present:
        return pl.Series(name, values, dtype=pl.Boolean)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    if all(isinstance(v, str) for v in present):
        return pl.Series(name, values, dtype=pl.String)
    return pl.Series(name, [None if v is None else json.dumps(v, default=str) for v in values], dtype=pl.String)


def _table(rows: list[dict[str, Any]]) -> Any:
    import polars as pl
    names = list(rows[0]) if rows else ["point"]
    return pl.DataFrame([_column(n, [r[n] for r in rows]) for n in names])


def _rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    ranked = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None]
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return sorted(ranked, key=lambda r: (sign * r[metric], r["point"]))


def check_metric(metric: str, cfg: RunConfig) -> None:
    """Refuse a ranking metric no run reports (before running anything)."""
    from tradeloop.engine.metrics.benchmark import BENCHMARK_KEYS
    from tradeloop.engine.metrics.performance import METRIC_KEYS
    known = set(METRIC_KEYS) | set(BENCHMARK_KEYS) | {"risk_events"}
    if metric not in known:
        raise ConfigError(f"--metric {metric!r}: not a metric of a backtest (known: {', '.join(sorted(known))})")


def run_sweep(cfg: RunConfig, grid: dict[str, list[str]], *, metric: str = "sharpe",
              executor: Executor | str = "process", workers: int | None = None, address: str | None = None,
              out: str | Path | None = None, write: bool = True, progress: bool | None = None) -> SweepResult:
    """Run every grid point of ``grid`` over ``cfg``; write ``sweep.parquet`` and ``sweep.json`` unless ``write`` is False."""
    check_metric(metric, cfg)
    cfg.validate()
    units = build_units(cfg, grid)
    params = list(grid)
    metric_cols = list(TABLE_METRICS) + ([metric] if metric not in TABLE_METRICS else [])
    t0 = time.perf_counter()
    results = run_units(run_point, units, executor, label="sweep", workers=workers, address=address,
                        progress=progress)
    rows = _rows(units, grid, results, metric_cols)
    table = _table(rows)
    ranked = _rank(rows, metric)
    summary: dict[str, Any] = {
        "strategy": cfg.run.strategy, "metric": metric,
        "order": "ascending" if metric in LOWER_IS_BETTER else "descending",
        "executor": executor if isinstance(executor, str) else executor.name, "grid": {k: [parse_value(v) for v in vs] for k, vs in grid.items()},
        "points": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
        "failed": sum(r["status"] == "error" for r in rows), "seconds": round(time.perf_counter() - t0, 3),
        "best": None,
        "ranking": [{"rank": n, "point": r["point"], "params": {k: r[k] for k in params}, metric: r[metric],
                     **{k: r[k] for k in ("sharpe", "total_return", "max_drawdown", "trades") if k != metric}}
                    for n, r in enumerate(ranked, 1)],
        "errors": [{"point": r["point"], "params": {k: r[k] for k in params}, "error": r["error"]}
                   for r in rows if r["status"] == "error"],
    }
    if ranked:
        summary["best"] = {**summary["ranking"][0], **deflated_sharpe_of(ranked[0], rows)}
    target = None
    if write:
        target = Path(out or Path("runs") / f"sweep-{cfg.run.strategy.rpartition(':')[2]}-{time.strftime('%Y%m%d-%H%M%S')}")
        target.mkdir(parents=True, exist_ok=True)
        table.write_parquet(target / "sweep.parquet")
        (target / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        from tradeloop.engine.report.sweep import write_sweep_report
        write_sweep_report(target)   # report.html: the ranking, the grid chart, the deflated Sharpe explained
    return SweepResult(table, summary, target)


def sweep_text(res: SweepResult, top: int = 10, width: int | None = None) -> str:
    """The best ``top`` points, the deflated Sharpe of the best, the errors, and where the files are.

    Metrics read as in the backtest summary (percentages for returns and drawdowns, see
    engine/metrics/format.py); the layout follows engine/telemetry/tables.py.
    """
    from tradeloop.engine.metrics.format import format_metric
    from tradeloop.engine.telemetry.tables import Column, render_table
    s = res.summary
    metric = s["metric"]
    keys = list(s["grid"])
    extra = [k for k in ("sharpe", "total_return", "max_drawdown", "trades") if k != metric]
    drops = {"trades": 4, "max_drawdown": 3, "sharpe": 2, "total_return": 1}
    cols = [Column("rank", "right"), *(Column(k.removeprefix("params."), "right") for k in keys),
            Column(metric, "right"), *(Column(k, "right", drop=drops[k]) for k in extra)]
    rows = [[str(row["rank"]), *(_param_text(row["params"][k]) for k in keys), format_metric(metric, row[metric]),
             *(format_metric(k, row.get(k)) for k in extra)] for row in s["ranking"][:top]]
    notes = []
    if len(s["ranking"]) > top:
        notes.append(f"({len(s['ranking']) - top} more ranked points in sweep.json)")
    best = s["best"]
    if best is not None:
        dsr = best["deflated_sharpe"]
        params = " ".join(f"{k.removeprefix('params.')}={_param_text(v)}" for k, v in best["params"].items())
        notes.append(f"best: point {best['point']} ({params}), sharpe {format_metric('sharpe', best['sharpe'])}, "
                     f"deflated Sharpe {'n/a' if dsr is None else f'{dsr:.1%}'} over {best['trials']} trials")
    for err in s["errors"]:
        params = " ".join(f"{k.removeprefix('params.')}={_param_text(v)}" for k, v in err["params"].items())
        notes.append(f"error: point {err['point']} ({params}): {err['error']}")
    if res.out is not None:
        notes += [f"table: {res.out / 'sweep.parquet'}", f"summary: {res.out / 'sweep.json'}"]
        if (res.out / "report.html").exists():
            notes.append(f"report: {res.out / 'report.html'}")
    title = f"sweep {s['strategy']}: {s['ok']}/{s['points']} ok, ranked by {metric} ({s['order']})"
    return render_table(title, cols, rows, width, notes=notes)


def _param_text(v: Any) -> str:
    """A grid value as given (numbers to at most 6 significant digits)."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def print_sweep(res: SweepResult, top: int = 10) -> None:
    """The sweep table on stdout (see :func:`sweep_text`)."""
    import sys
    sys.stdout.write(sweep_text(res, top))
