"""Past runs in the terminal: ``tradeloop runs list`` (a table of run folders) and ``runs compare``'s metric table.

The compare page (overlaid curves) is :mod:`tradeloop.engine.report.compare`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import polars as pl
import structlog

from tradeloop.engine.metrics.format import METRIC_GROUPS, format_metric
from tradeloop.engine.runs.folders import RunFolderError, read_json, run_kind, run_status

__all__ = ["RunRow", "list_runs", "print_runs", "runs_text", "runs_json", "compare_rows", "print_compare",
           "compare_text", "compare_json", "run_names", "COLORS"]

LIST_KEYS = ("final_value", "total_return", "sharpe", "max_drawdown")
COLORS = ("#1f5fbf", "#ff7f0e", "#1a9850", "#9467bd", "#d62728", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class RunRow:
    """One line of ``runs list``."""

    id: str
    kind: str          # backtest, walkforward, live or paper; "live (failed)" for a session that did not complete
    strategy: str
    first: str
    last: str
    metrics: dict[str, Any]
    mtime: float


def _span(path: Path) -> tuple[str, str]:
    try:
        ts = pl.scan_parquet(path / "equity.parquet").select(pl.col("ts").min().alias("a"),
                                                             pl.col("ts").max().alias("b")).collect()
    except Exception:  # an unreadable equity file: list the run anyway
        return "?", "?"
    a, b = ts["a"][0], ts["b"][0]
    return (str(a.date()) if a else "?"), (str(b.date()) if b else "?")


def list_runs(root: str | Path = "runs") -> list[RunRow]:
    """Every run folder under ``root`` (those with manifest.json and metrics.json), of every kind, oldest first."""
    base = Path(root)
    if not base.is_dir():
        raise RunFolderError(f"runs folder {root} not found (give --root DIR)")
    rows = []
    for p in sorted(base.iterdir()):
        if not (p.is_dir() and (p / "manifest.json").is_file() and (p / "metrics.json").is_file()):
            continue
        try:
            manifest, metrics = read_json(p / "manifest.json"), read_json(p / "metrics.json")
        except RunFolderError as e:
            structlog.get_logger("tradeloop.runs").warning("run_unreadable", run=str(p), reason=str(e))
            continue
        first, last = _span(p)
        strategy = str(manifest.get("config", {}).get("run", {}).get("strategy", "?"))
        status = run_status(manifest)
        kind = run_kind(manifest) + ("" if status == "completed" else f" ({status})")
        rows.append(RunRow(p.name, kind, strategy, first, last, metrics, (p / "metrics.json").stat().st_mtime))
    rows.sort(key=lambda r: (r.mtime, r.id))
    return rows


def runs_text(rows: Sequence[RunRow], root: str | Path, width: int | None = None) -> str:
    """The run list (engine/telemetry/tables.py rules); the least needed columns go first on a narrow terminal."""
    from tradeloop.engine.telemetry.tables import Column, render_table
    if not rows:
        return f"no runs under {root}\n"
    cols = [Column("id"), Column("kind", drop=3), Column("strategy", drop=4), Column("span", drop=5),
            Column("final value", "right", drop=2), Column("total return", "right"), Column("sharpe", "right"),
            Column("max drawdown", "right", drop=1)]
    table = [[r.id, r.kind, r.strategy, f"{r.first} .. {r.last}",
              *(format_metric(k, r.metrics.get(k)) for k in LIST_KEYS)] for r in rows]
    return render_table(f"runs in {root}", cols, table, width)


def print_runs(rows: Sequence[RunRow], root: str | Path) -> None:
    """The run list as a table on stdout."""
    import sys
    sys.stdout.write(runs_text(rows, root))


def runs_json(rows: Sequence[RunRow], root: str | Path) -> dict[str, Any]:
    """``runs list --json``: every run with its span and scalar metrics."""
    return {"command": "runs list", "root": str(root),
            "runs": [{"id": r.id, "kind": r.kind, "strategy": r.strategy, "first": r.first, "last": r.last,
                      "metrics": {k: v for k, v in r.metrics.items() if v is None or isinstance(v, (int, float, str))}}
                     for r in rows]}


def run_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def compare_rows(metrics: Sequence[dict[str, Any]]) -> list[list[str]]:
    """``[metric, value per run...]`` for every scalar metric any of the runs has, in report order."""
    keys = [k for group in METRIC_GROUPS.values() for k in group if any(k in m for m in metrics)]
    extra = sorted({k for m in metrics for k, v in m.items()
                    if k not in keys and (v is None or isinstance(v, (int, float)))})
    return [[k, *(format_metric(k, m.get(k)) for m in metrics)] for k in keys + extra]


def compare_text(paths: Sequence[Path], metrics: Sequence[dict[str, Any]], width: int | None = None) -> str:
    """Metrics of several runs side by side (engine/telemetry/tables.py rules); a narrow terminal wraps the
    headers, never drops a run."""
    from tradeloop.engine.telemetry.tables import Column, render_table
    cols = [Column("metric"), *(Column(name, "right") for name in run_names(paths))]
    return render_table("compare", cols, compare_rows(metrics), width)


def print_compare(paths: Sequence[Path], metrics: Sequence[dict[str, Any]]) -> None:
    """Metrics of several runs side by side, as a table on stdout."""
    import sys
    sys.stdout.write(compare_text(paths, metrics))


def compare_json(paths: Sequence[Path], metrics: Sequence[dict[str, Any]], page: Path | str) -> dict[str, Any]:
    """``runs compare --json``: each run's scalar metrics, by run name, and the page written."""
    return {"command": "runs compare", "page": str(page),
            "runs": {name: {k: v for k, v in m.items() if v is None or isinstance(v, (int, float, str))}
                     for name, m in zip(run_names(paths), metrics)}}
