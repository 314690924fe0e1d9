"""``report.html`` of a walk-forward run: the standard run report plus a table of its windows.

The page is :func:`tradeloop.engine.report.render_report` of the stitched run (its metrics without the
per-window list) with one section inserted before the charts: every window's training and test
spans, model, validation accuracy, starting cash, and its own return, Sharpe, drawdown and trades,
or its error.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from tradeloop.engine.report.html import Raw, esc, table

from tradeloop.engine.metrics.format import format_metric
from tradeloop.engine.report.run import REPORT_FILE, render_report, write_report
from tradeloop.engine.runs.folders import load_run, read_json

ANCHOR = "<h2>Performance</h2>"
FALLBACK_ANCHOR = "<h2>Metrics</h2>"


def windows_section(windows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The HTML section listing the windows of ``metrics.json``."""
    head = ["#", "train", "test", "model", "val acc", "start cash", "final value", "return", "sharpe",
            "max dd", "trades", "status"]
    rows = []
    for w in windows:
        m = w.get("metrics") or {}
        tr = w.get("training") or {}
        status = (Raw('<span class="pass">ok</span>') if w.get("status") == "ok"
                  else Raw(f'<span class="fail">error</span> {esc(w.get("error") or "")}'))
        rows.append([w.get("window"), f"{w.get('train_start')} .. {w.get('train_end')}",
                     f"{w.get('test_start')} .. {w.get('test_end')}", w.get("model") or "-",
                     format_metric("val_accuracy", tr.get("val_accuracy")) if tr else "-",
                     format_metric("start_cash", m.get("start_cash")), format_metric("final_value", m.get("final_value")),
                     format_metric("total_return", m.get("total_return")), format_metric("sharpe", m.get("sharpe")),
                     format_metric("max_drawdown", m.get("max_drawdown")),
                     format_metric("trades", m.get("trades")) if m else "-", status])
    note = (f"{summary.get('windows', len(windows))} window(s), {summary.get('ok', '?')} ok, "
            f"{summary.get('failed', '?')} failed. Each window starts flat with the previous window's ending "
            "equity; positions open at a window's end are handed off to cash at its last closes (fills "
            "W&lt;k&gt;-HANDOFF). Train and test ends are exclusive; the embargo gap lies between them.")
    return (f"<h2>Walk-forward windows</h2><p class=\"sub\">{note}</p>"
            f"<div class=\"scroll\">{table(head, rows, left=4)}</div>")


def is_walkforward(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a walk-forward run (its manifest says so)."""
    path = Path(run_dir) / "manifest.json"
    return path.is_file() and read_json(path).get("kind") == "walkforward"


def write_walkforward_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a walk-forward run folder (default ``run_dir/report.html``); its path."""
    run = load_run(run_dir)
    windows = run.metrics.get("windows") or []
    summary = run.metrics.get("walkforward") or {}
    run.metrics = {k: v for k, v in run.metrics.items() if k not in ("windows", "walkforward")}
    text = render_report(run)
    anchor = ANCHOR if ANCHOR in text else FALLBACK_ANCHOR
    text = text.replace(anchor, windows_section(windows, summary) + anchor, 1)
    path = Path(out) if out else run.path / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    structlog.get_logger("tradeloop.report").info("report_written", path=str(path), bytes=len(text.encode()))
    return path


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The report of any run folder: the walk-forward page for a walk-forward run, the run page otherwise."""
    return write_walkforward_report(run_dir, out) if is_walkforward(run_dir) else write_report(run_dir, out)
