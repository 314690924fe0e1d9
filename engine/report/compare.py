"""``tradeloop runs compare``'s page: several runs' growth and drawdown overlaid, and their metrics side by side."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from tradeloop.engine.metrics.curves import underwater
from tradeloop.engine.metrics.performance import daily_equity
from tradeloop.engine.report.charts import Line, fmt_pct, line_chart
from tradeloop.engine.report.html import page, table
from tradeloop.engine.runs.folders import RunFolderError, check_folder, load_run, resolve_run, ts_ns
from tradeloop.engine.runs.listing import COLORS, compare_rows, run_names


def _times(v: float) -> str:
    return f"{v:.3g}x"


def write_compare(runs: Sequence[str], out: str | Path = "compare.html", root: str | Path = "runs") -> tuple[Path, list[Path], list[dict[str, Any]]]:
    """Load runs (folders or ids under ``root``), write one HTML page with overlaid curves; return it and what was read."""
    if len(runs) < 2:
        raise RunFolderError("compare needs at least two runs")
    paths = [check_folder(resolve_run(r, root)) for r in runs]
    loaded = [load_run(p) for p in paths]
    names = run_names(paths)
    growth, dd = [], []
    for i, (name, run) in enumerate(zip(names, loaded)):
        days, e = daily_equity(ts_ns(run.equity["ts"]), run.equity["equity"].to_numpy())
        color = COLORS[i % len(COLORS)]
        growth.append(Line(name, days, e / run.start_cash, color))
        dd.append(Line(name, days, underwater(e, run.start_cash), color))
    metrics = [run.metrics for run in loaded]
    body = ["<h1>Compare runs</h1>",
            table(["run", "kind", "strategy", "folder"],
                  [[n, r.kind, r.strategy, str(r.path)] for n, r in zip(names, loaded)], left=4),
            "<figure>" + line_chart(growth, title="Growth of 1 (log scale)", height=320, y_fmt=_times, log_y=True)
            + "</figure>",
            "<figure>" + line_chart(dd, title="Drawdown", height=220, y_fmt=fmt_pct) + "</figure>",
            "<h2>Metrics</h2>", table(["metric", *names], compare_rows(metrics))]
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page("tradeloop: compare " + " vs ".join(names), "\n".join(body)), encoding="utf-8")
    os.replace(tmp, path)
    return path, paths, metrics

