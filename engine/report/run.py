"""``report.html`` of a run of any kind: one self-contained page (inline SVG, no scripts, no network).

Sections: headline figures (and the status of a session that did not complete), gates, equity vs
benchmark with the excess curve, underwater chart, monthly returns, rolling Sharpe, daily return
distribution, exposure over time, a live or paper session's counts, metrics, trades (round trips),
risk events and the manifest. Curves are daily (as the metrics) and downsampled to a few thousand
points, so a 20-year daily or a 2-year 5-minute run stays well under 5 MB.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tradeloop.engine.report.charts import Line, fmt_num, fmt_pct, heatmap, histogram, line_chart
from tradeloop.engine.metrics.curves import MONTHS, monthly_table, rolling_sharpe, underwater
from tradeloop.engine.report.html import Raw, esc, page, table
from tradeloop.engine.metrics.format import METRIC_GROUPS, format_metric
from tradeloop.engine.metrics.performance import daily_equity, daily_returns, round_trips
from tradeloop.engine.runs.folders import RunData, load_run, ts_ns

__all__ = ["REPORT_FILE", "MAX_TRADES", "write_report", "render_report"]

REPORT_FILE = "report.html"
MAX_TRADES = 500          # trade rows shown (the first and last half); all are in fills.parquet
MAX_RISK_EVENTS = 500
MAX_YEARS = 60            # rows of the monthly returns table
ROLLING = 126             # rolling Sharpe window, trading days (~6 months)
DAILY_FROM = 60           # intraday exposure is plotted as daily means from this many days on
NS_PER_DAY = 86_400_000_000_000


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the run folder's report and write it (default ``<run_dir>/report.html``); return its path."""
    run = load_run(run_dir)
    path = Path(out) if out else run.path / REPORT_FILE
    text = render_report(run)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    structlog.get_logger("tradeloop.report").info("report_written", path=str(path), bytes=len(text.encode()))
    return path


def _ts_label(ns: int) -> str:
    t = np.datetime64(int(ns), "ns")
    return str(t.astype("datetime64[D]")) if int(ns) % 86_400_000_000_000 == 0 else str(t.astype("datetime64[m]"))


def render_report(run: RunData) -> str:
    """The report page of one loaded run, as a string."""
    ts = ts_ns(run.equity["ts"])
    eq = run.equity["equity"].to_numpy()
    cash0 = run.start_cash
    days, e = daily_equity(ts, eq)
    _, r = daily_returns(ts, eq, cash0)
    m = run.metrics
    symbols = ", ".join(run.manifest.get("symbols") or [])
    span = f"{_ts_label(ts[0])} to {_ts_label(ts[-1])}" if len(ts) else "no bars"
    kind = "" if run.kind == "backtest" else f"{run.kind} "
    head = [f"<h1>{esc(run.strategy)} on {esc(symbols or '?')}</h1>",
            f'<p class="sub">{esc(kind)}run {esc(run.id)} &middot; {esc(span)} &middot; {len(ts):,} bars, '
            f'{len(days):,} days</p>', _status(run), _headline(m), _gates(m)]
    tail = [*_session(run), "<h2>Metrics</h2>", _metrics(m), "<h2>Trades</h2>", _trades(run),
            "<h2>Risk events</h2>", _risk_events(run), "<h2>Manifest</h2>", _manifest(run.manifest)]
    if not len(ts):
        note = '<p class="note">The run has no bars (check the data span and run.start / run.end): no charts.</p>'
        return page(f"tradeloop report: {run.id}", "\n".join([*head, note, *tail]))
    body = [*head,
            "<h2>Performance</h2>", _equity_charts(run, days, e, cash0),
            "<figure>" + line_chart([Line("drawdown", days, underwater(e, cash0), "#d62728", fill=True)],
                                    title="Underwater (drawdown from the running peak)", height=200, y_fmt=fmt_pct)
            + "</figure>",
            "<figure>" + _monthly(days, e, cash0) + "</figure>",
            "<figure>" + _rolling(days, r) + "</figure>",
            "<figure>" + histogram(r, title="Distribution of daily returns") + "</figure>",
            "<figure>" + _exposure(run, ts, eq) + "</figure>", *tail]
    return page(f"tradeloop report: {run.id}", "\n".join(body))


def _status(run: RunData) -> str:
    """A note for a run that did not complete (a live session stopped or failed)."""
    if run.status == "completed":
        return ""
    error = run.manifest.get("error") or run.manifest.get("failed")
    return f'<p class="note">{esc(run.kind)} session {esc(run.status)}' + (f": {esc(error)}" if error else "") + "</p>"


def _session(run: RunData) -> list[str]:
    """A live or paper session's counts (bars, steps, recovered orders, tick lag), from ``metrics.json``."""
    stats = run.metrics.get("live")
    if not isinstance(stats, dict):
        return []
    return ["<h2>Session</h2>", table(["count", "value"], [[k, _session_value(v)] for k, v in stats.items()])]


def _session_value(v: Any) -> str:
    if isinstance(v, dict):                    # tick lag percentiles
        return ", ".join(f"{k} {_session_value(x)}" for k, x in v.items())
    if isinstance(v, list):                    # a per-second series: its length (all of it is in metrics.json)
        return f"{len(v):,} values (metrics.json)"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:,.6g}" if isinstance(v, float) else f"{v:,}"
    return "n/a" if v is None else str(v)


def _headline(m: dict[str, Any]) -> str:
    keys = ["final_value", "total_return", "annual_return", "sharpe", "max_drawdown", "trades"]
    if m.get("excess_return") is not None:
        keys.insert(3, "excess_return")
    return table(keys, [[format_metric(k, m.get(k)) for k in keys]], left=0)


def _gates(m: dict[str, Any]) -> str:
    gates = m.get("gates") or {}
    if not gates:
        return ""
    rows = [[k, g.get("rule"), format_metric(k, g.get("value")),
             Raw('<span class="pass">PASS</span>' if g.get("passed") else '<span class="fail">FAIL</span>'),
             g.get("reason", "")] for k, g in gates.items()]
    failed = sum(not g.get("passed") for g in gates.values())
    verdict = "all gates pass" if not failed else f"{failed} of {len(gates)} gate(s) FAIL"
    return f"<h2>Acceptance gates: {esc(verdict)}</h2>" + table(["metric", "rule", "value", "result", "reason"], rows,
                                                                 left=2)


def _equity_charts(run: RunData, days: np.ndarray, e: np.ndarray, cash0: float) -> str:
    lines = [Line("strategy", days, e, "#1f5fbf")]
    note = '<p class="note">No benchmark: give --benchmark PATH (or run.benchmark) to compare.</p>'
    excess = ""
    if run.benchmark is not None:
        b_days = ts_ns(run.benchmark["ts"])
        b = run.benchmark["close"].fill_null(np.nan).to_numpy()
        if len(b_days) == len(days) and np.isfinite(b).any():
            i0 = int(np.flatnonzero(np.isfinite(b))[0])
            base = cash0 if i0 == 0 else float(e[i0 - 1])
            bench_value = b / b[i0] * base                      # the benchmark bought with the same money
            lines.append(Line("benchmark", days, bench_value, "#8a8a8a"))
            strat_cum = e / base - 1.0
            bench_cum = b / b[i0] - 1.0
            diff = np.where(np.isfinite(b), strat_cum - bench_cum, np.nan)
            excess = "<figure>" + line_chart([Line("excess return", days, diff, "#1a9850", fill=True)],
                                             title="Excess return (strategy minus benchmark, cumulative)",
                                             height=200, y_fmt=fmt_pct) + "</figure>"
            note = ""
    chart = line_chart(lines, title="Equity" + (" vs benchmark" if len(lines) > 1 else ""), height=300, y_fmt=fmt_num)
    return f"<figure>{chart}</figure>{note}{excess}"


def _rolling(days: np.ndarray, r: np.ndarray) -> str:
    title = f"Rolling Sharpe ({ROLLING} trading days)"
    if len(r) < ROLLING:
        return line_chart([], title=title, height=200, empty=f"needs {ROLLING} days; the run has {len(r)}")
    return line_chart([Line(f"rolling Sharpe ({ROLLING}d)", days, rolling_sharpe(r, ROLLING))], title=title,
                      height=200, zero_line=True)


def _monthly(days: np.ndarray, e: np.ndarray, cash0: float) -> str:
    years, tab = monthly_table(days, e, cash0)
    title = "Monthly returns"
    if len(years) > MAX_YEARS:
        years, tab = years[-MAX_YEARS:], tab[-MAX_YEARS:]
        title += f" (the last {MAX_YEARS} years)"
    return heatmap(years, [*MONTHS, "Year"], tab, title=title)


def _exposure(run: RunData, ts: np.ndarray, eq: np.ndarray) -> str:
    g = run.equity["gross_exposure"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(eq > 0, np.abs(g) / eq, np.nan)
    day = ts // NS_PER_DAY * NS_PER_DAY
    title = "Positions: gross exposure / equity"
    if len(ts) > 2 * len(np.unique(day)) and len(np.unique(day)) >= DAILY_FROM:   # intraday bars, many days
        starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
        ok = np.isfinite(x)
        n = np.add.reduceat(ok.astype(np.float64), starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            ts, x = day[starts], np.add.reduceat(np.where(ok, x, 0.0), starts) / n
        title += " (mean of each day's bars)"
    return line_chart([Line("gross exposure / equity", ts, x, "#9467bd", fill=True)], title=title, height=200,
                      y_fmt=fmt_pct)


def _metrics(m: dict[str, Any]) -> str:
    blocks = []
    for group, keys in METRIC_GROUPS.items():
        rows = [[k, format_metric(k, m[k])] for k in keys if k in m]
        if rows:
            blocks.append(f"<div><b>{esc(group)}</b>" + table(["metric", "value"], rows) + "</div>")
    known = {k for keys in METRIC_GROUPS.values() for k in keys} | {"gates", "live"}   # live: the Session section
    other = [[k, format_metric(k, v)] for k, v in sorted(m.items()) if k not in known]
    if other:
        blocks.append("<div><b>Other</b>" + table(["metric", "value"], other) + "</div>")
    return f'<div class="grid2">{"".join(blocks)}</div>'


def _trades(run: RunData) -> str:
    trades = round_trips(run.fills)
    if not trades:
        return f'<p class="note">No closed round trip ({len(run.fills)} fill(s)).</p>'
    shown = list(enumerate(trades, 1))
    note = f"{len(trades):,} closed round trip(s) from {len(run.fills):,} fills."
    if len(trades) > MAX_TRADES:
        half = MAX_TRADES // 2
        shown = shown[:half] + [None] + shown[-half:]
        note += f" Showing the first {half} and the last {half}; every fill is in fills.parquet."
    rows = []
    for item in shown:
        if item is None:
            rows.append([Raw("&hellip;")] + [""] * 10)
            continue
        i, t = item
        notional = t.entry_price * t.qty
        rows.append([i, t.symbol, t.side, _ts_label(t.entry_ts), _ts_label(t.exit_ts), f"{t.qty:,.6g}",
                     f"{t.entry_price:,.4f}", f"{t.exit_price:,.4f}", f"{t.pnl:,.2f}",
                     fmt_pct(t.pnl / notional, 2) if notional else "n/a", f"{t.commission:,.2f}"])
    head = ["#", "symbol", "side", "entry", "exit", "qty", "entry price", "exit price", "pnl", "return", "commission"]
    return f'<p class="sub">{esc(note)}</p><div class="scroll">{table(head, rows, left=5)}</div>'


def _risk_events(run: RunData) -> str:
    df = run.risk_events
    if df is None or df.height == 0:
        return '<p class="note">none</p>'
    note = f"{df.height:,} risk event(s)."
    if df.height > MAX_RISK_EVENTS:
        note += f" Showing the first {MAX_RISK_EVENTS}; all are in risk_events.parquet."
        df = df.head(MAX_RISK_EVENTS)
    rows = [[("" if v is None else v) for v in row] for row in df.iter_rows()]
    return f'<p class="sub">{esc(note)}</p><div class="scroll">{table(df.columns, rows, left=len(df.columns))}</div>'


def _manifest(man: dict[str, Any]) -> str:
    inputs = man.get("inputs") or []
    rows = [[i.get("role", "data"), i.get("path") or i.get("catalog", ""), i.get("symbol", ""), i.get("rows", ""),
             i.get("sha256", "")] for i in inputs]
    versions = man.get("versions") or {}
    strat = man.get("strategy") or {}
    parts = ["<b>Inputs</b>", table(["role", "path", "symbol", "rows", "sha256"], rows, left=5),
             '<div class="grid2"><div><b>Strategy</b>',
             table(["key", "value"], [["class", strat.get("class", "")]] +
                   [[k, json.dumps(v)] for k, v in sorted((strat.get("params") or {}).items())]),
             "</div><div><b>Versions</b>", table(["package", "version"], sorted(versions.items())), "</div></div>",
             "<b>Configuration</b>", f"<pre>{esc(json.dumps(man.get('config', {}), indent=2, sort_keys=True))}</pre>"]
    if man.get("fill_rules"):
        parts += ["<b>Fill rules</b>", f"<pre>{esc(json.dumps(man['fill_rules'], indent=2, sort_keys=True))}</pre>"]
    return "".join(parts)
