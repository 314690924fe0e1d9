"""``report.html`` of a sweep folder: the ranking, the metric over the parameter grid, and the deflated Sharpe.

Everything comes from the folder's ``sweep.json`` (engine/research/sweep.py), so the page can be
rewritten at any time with ``tradeloop report SWEEP_DIR``. The page is self-contained like the run
report (inline CSS and SVG, no script):

* the ranking table (every ``ok`` point, best first), metrics as engine/metrics/format.py reads them;
* for a 2-key grid a heat map of the ranked metric (rows: the first key, columns: the second); with
  more keys the map shows the first two keys, each cell the best value over the other keys; for a
  1-key grid a bar per value; a point that failed is a blank cell (no bar);
* the deflated Sharpe ratio of the best point, explained in plain sentences with the number of
  trials and the variance of their Sharpe ratios it used;
* the points that failed, with their errors.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tradeloop.engine.metrics.format import format_metric, metric_label
from tradeloop.engine.report.charts import bar_chart, heatmap
from tradeloop.engine.report.html import Raw, esc, page, table

SWEEP_FILE = "sweep.json"
REPORT_FILE = "report.html"
PERIODS_PER_YEAR = 252


def is_sweep(folder: str | Path) -> bool:
    """True when ``folder`` is a sweep folder (it holds ``sweep.json``, and is not a run folder)."""
    folder = Path(folder)
    return (folder / SWEEP_FILE).is_file() and not (folder / "manifest.json").is_file()


def _key(k: str) -> str:
    return k.removeprefix("params.")


def _value_text(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _better(metric: str, order: str):
    return min if order == "ascending" else max


def _grid_values(summary: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """Each ranked point's metric, keyed by its parameter values' texts (in grid key order)."""
    keys = list(summary["grid"])
    metric = summary["metric"]
    out: dict[tuple[str, ...], float] = {}
    for row in summary.get("ranking", []):
        v = row.get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[tuple(_value_text(row["params"][k]) for k in keys)] = float(v)
    return out


def grid_chart(summary: dict[str, Any]) -> str:
    """The heat map (2+ keys) or bar chart (1 key) of the ranked metric over the grid."""
    keys = list(summary["grid"])
    metric = summary["metric"]
    order = summary.get("order", "descending")
    values = _grid_values(summary)
    label = metric_label(metric)

    def fmt(v: float) -> str:
        return format_metric(metric, v)

    if len(keys) == 1:
        labels = [_value_text(v) for v in summary["grid"][keys[0]]]
        ys = [values.get((t,), math.nan) for t in labels]
        finite = [y for y in ys if math.isfinite(y)]
        best = ys.index(_better(metric, order)(finite)) if finite else None
        return bar_chart([f"{_key(keys[0])}={t}" for t in labels], ys, fmt=fmt, highlight=best,
                         title=f"{label} by {_key(keys[0])} (best in blue)")
    rows = [_value_text(v) for v in summary["grid"][keys[0]]]
    cols = [_value_text(v) for v in summary["grid"][keys[1]]]
    grid = np.full((len(rows), len(cols)), np.nan)
    pick = _better(metric, order)
    for point, v in values.items():
        i, j = rows.index(point[0]), cols.index(point[1])
        grid[i, j] = v if math.isnan(grid[i, j]) else pick(grid[i, j], v)
    title = f"{label}: {_key(keys[0])} (rows) x {_key(keys[1])} (columns)"
    if len(keys) > 2:
        title += f", best over {', '.join(_key(k) for k in keys[2:])}"
    return heatmap([f"{_key(keys[0])}={r}" for r in rows], [f"{_key(keys[1])}={c}" for c in cols], grid,
                   title=title, fmt=fmt)


def dsr_text(summary: dict[str, Any]) -> str:
    """Two or three plain sentences on the deflated Sharpe ratio of the best point (HTML-escaped)."""
    best = summary.get("best")
    if not best:
        return "No point finished with a value of the ranking metric, so there is no best point to judge."
    n = best.get("trials") or 0
    var = best.get("trials_sharpe_variance_daily") or 0.0
    sr0 = best.get("expected_max_sharpe_daily") or 0.0
    dsr = best.get("deflated_sharpe")
    sharpe = format_metric("sharpe", best.get("sharpe"))
    ann = math.sqrt(PERIODS_PER_YEAR)
    what = ("The deflated Sharpe ratio is the probability that the best point's Sharpe ratio is real skill and "
            f"not luck, after allowing for having tried {n} point{'s' if n != 1 else ''} of the grid: with many "
            "tries, the best one looks good by chance alone.")
    if n >= 2 and var > 0:
        used = (f"It used the {n} points that finished with a Sharpe ratio, whose daily Sharpe ratios vary with "
                f"variance {var:.3g} (standard deviation {math.sqrt(var):.3g}, or {math.sqrt(var) * ann:.3f} "
                f"annualized); the best of {n} such tries with no skill would be expected to reach about "
                f"{sr0 * ann:.3f} annualized, and the best here reached {sharpe}")
    else:
        used = (f"With {n} point{'s' if n != 1 else ''} that finished with a Sharpe ratio and no spread between "
                f"them (variance {var:.3g}) there is nothing to deflate by, so it is the probability that the "
                f"Sharpe ratio of {sharpe} is above zero")
    days = best.get("days")
    if days:
        used += (f", over {int(days):,} days of returns (skew {format_metric('skew', best.get('skew'))}, "
                 f"kurtosis {format_metric('kurtosis', best.get('kurtosis'))}).")
    else:
        used += "."
    if dsr is None:
        verdict = "It could not be computed for this point (no Sharpe ratio, too few days, or a degenerate return distribution)."
    else:
        word = ("likely real (95% or more is the usual bar)" if dsr >= 0.95 else
                "suggestive but not conclusive (below the usual 95% bar)" if dsr >= 0.5 else
                "no better than the luck of trying many points")
        verdict = f"Here it is {dsr:.1%}: the best point's performance is {word}."
    return esc(f"{what} {used} {verdict}")


def render_sweep_report(summary: dict[str, Any], folder: Path | None = None) -> str:
    """The sweep page (HTML text) of a ``sweep.json`` summary."""
    metric = summary["metric"]
    keys = list(summary["grid"])
    extra = [k for k in ("sharpe", "total_return", "max_drawdown", "trades") if k != metric]
    title = f"Sweep of {summary['strategy']}"
    grid_desc = " x ".join(f"{_key(k)} ({', '.join(_value_text(v) for v in vs)})" for k, vs in summary["grid"].items())
    sub = (f"{summary['points']} points ({grid_desc}), {summary['ok']} ok, {summary['failed']} failed; ranked by "
           f"{metric_label(metric)} ({summary.get('order', 'descending')}); executor {summary.get('executor', '?')}, "
           f"{summary.get('seconds', '?')} s.")
    body = [f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(sub)}</p>"]
    best = summary.get("best")
    body.append("<h2>Best point and its deflated Sharpe ratio</h2>")
    if best:
        params = ", ".join(f"{_key(k)}={_value_text(v)}" for k, v in best["params"].items())
        dsr = best.get("deflated_sharpe")
        body.append(f"<p><b>Point {esc(best['point'])} ({esc(params)})</b>: {esc(metric_label(metric))} "
                    f"{esc(format_metric(metric, best.get(metric)))}, deflated Sharpe "
                    f"<b>{esc('n/a' if dsr is None else f'{dsr:.1%}')}</b>.</p>")
    body.append(f'<p class="dsr">{dsr_text(summary)}</p>')
    body.append(f"<h2>{esc(metric_label(metric))} over the grid</h2><figure>{grid_chart(summary)}</figure>")
    head = ["rank", *(_key(k) for k in keys), metric_label(metric), *(metric_label(k) for k in extra)]
    rows = [[r["rank"], *(_value_text(r["params"][k]) for k in keys), format_metric(metric, r.get(metric)),
             *(format_metric(k, r.get(k)) for k in extra)] for r in summary.get("ranking", [])]
    body.append(f"<h2>Ranking</h2><div class=\"scroll\">{table(head, rows, left=0, cls='ranking')}</div>")
    if summary.get("errors"):
        erows = [[e["point"], *(_value_text(e["params"][k]) for k in keys), Raw(f'<span class="fail">error</span> '
                                                                               f'{esc(e["error"])}')]
                 for e in summary["errors"]]
        body.append(f"<h2>Failed points</h2>{table(['point', *(_key(k) for k in keys), 'error'], erows, left=0)}")
    if folder is not None:
        body.append(f'<p class="note">Files: {esc(folder / "sweep.parquet")} (one row per point), '
                    f'{esc(folder / SWEEP_FILE)}.</p>')
    return page(title, "\n".join(body))


def write_sweep_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a sweep folder (default ``folder/report.html``) from its ``sweep.json``; its path."""
    folder = Path(folder)
    summary = json.loads((folder / SWEEP_FILE).read_text(encoding="utf-8"))
    text = render_sweep_report(summary, folder)
    path = Path(out) if out else folder / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
