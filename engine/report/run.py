"""``report.html`` of a run of any kind: one self-contained page (inline SVG, no scripts, no network).

A tear sheet: headline figures (and the status of a session that did not complete), gates, equity vs
benchmark (linear and log scale) with the excess curve, strategy and benchmark metrics side by side,
underwater chart and the worst drawdown periods, monthly and yearly returns, rolling Sharpe, volatility
and beta, return quantiles by day/week/month, the daily return distribution, exposure, a live or paper
session's counts, metrics with their names and units, trades, risk events and the manifest (the config
the run used). A warm-up before ``run.trade_from`` is shaded grey in the time charts and left out of the
tables. Curves are daily and downsampled to a few thousand points, so a 20-year daily or a 2-year
5-minute run stays well under 5 MB.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tradeloop.engine.report.charts import Line, box_plot, fmt_num, fmt_pct, fmt_x, heatmap, histogram, line_chart
from tradeloop.engine.metrics.curves import (MONTHS, drawdown_periods, monthly_table, period_returns, rolling_beta,
                                             rolling_sharpe, rolling_volatility, underwater, weekly_returns)
from tradeloop.engine.report.html import Raw, esc, page, table
from tradeloop.engine.metrics.format import METRIC_GROUPS, format_metric, format_metric_unit, metric_label
from tradeloop.engine.metrics.performance import compute_metrics, daily_equity, daily_returns, round_trips
from tradeloop.engine.runs.folders import RunData, load_run, ts_ns

__all__ = ["REPORT_FILE", "MAX_TRADES", "write_report", "render_report"]

REPORT_FILE = "report.html"
MAX_TRADES = 500          # trade rows shown (the first and last half); all are in fills.parquet
MAX_RISK_EVENTS = 500
MAX_YEARS = 60            # rows of the monthly returns table
ROLLING = 126             # rolling Sharpe / volatility / beta window, trading days (~6 months, as quantstats)
TOP_DRAWDOWNS = 5
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


@dataclass
class _Series:
    """The daily series the charts and tables share."""

    days: np.ndarray                 # int64 ns, one per day
    e: np.ndarray                    # equity at each day's last bar
    r: np.ndarray                    # daily returns
    cash0: float
    warmup: int | None               # int ns of the first traded day when a warm-up precedes it
    t0: int                          # index of the first traded day
    bench: np.ndarray | None         # the benchmark bought with the same money (NaN outside its cover)
    b: np.ndarray | None             # benchmark daily returns (0 on its first covered day)

    @property
    def base(self) -> float:
        """The value before the first traded day."""
        return self.cash0 if self.t0 == 0 else float(self.e[self.t0 - 1])


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
            f'{len(days):,} days</p>', _instrument_kinds(run.manifest), _status(run), _headline(m), _gates(m)]
    tail = [*_session(run), "<h2>Metrics</h2>", _metrics(m), "<h2>Trades</h2>", _trades(run),
            "<h2>Risk events</h2>", _risk_events(run), "<h2>Manifest</h2>", _manifest(run.manifest, run.kind)]
    if not len(ts):
        note = '<p class="note">The run has no bars (check the data span and run.start / run.end): no charts.</p>'
        return page(f"tradeloop report: {run.id}", "\n".join([*head, note, *tail]))
    s = _series(run, days, e, r, cash0)
    warm = ""
    if s.warmup is not None:
        warm = (f'<p class="note">Warm-up until {esc(_ts_label(s.warmup))} (shaded grey): the strategy could not '
                "trade; the tables below start at the first traded day.</p>")
    fig = "<figure>{}</figure>".format
    body = [*head,
            "<h2>Performance</h2>", warm, _equity_charts(s), _side_by_side(m, s),
            "<h2>Drawdowns</h2>",
            fig(line_chart([Line("drawdown", days, underwater(e, cash0), "#d62728", fill=True)],
                           title="Underwater (drawdown from the running peak)", height=200, y_fmt=fmt_pct,
                           warmup_until=s.warmup)),
            _drawdown_table(s),
            "<h2>Returns by period</h2>", fig(_monthly(s)), _yearly(s),
            fig(_quantiles(s)),
            fig(histogram(s.r[s.t0:], title="Distribution of daily returns")),
            "<h2>Rolling statistics</h2>", *_rolling(s),
            "<h2>Positions</h2>", fig(_exposure(run, ts, eq, s.warmup)), *_margin(run, ts, eq, s.warmup), *tail]
    return page(f"tradeloop report: {run.id}", "\n".join(body))


def _warmup_until(run: RunData, days: np.ndarray) -> int | None:
    """The start of trading from the manifest's ``span.from`` (or ``run.trade_from``), when after the first day."""
    span = run.manifest.get("span")
    start = span.get("from") if isinstance(span, dict) else None
    start = start or ((run.manifest.get("config") or {}).get("run") or {}).get("trade_from")
    if not start or not len(days):
        return None
    try:
        t = int(start) if isinstance(start, (int, float)) else int(np.datetime64(str(start).replace("Z", ""), "ns")
                                                                   .astype(np.int64))
    except ValueError:
        return None
    return t if t > int(days[0]) else None


def _series(run: RunData, days: np.ndarray, e: np.ndarray, r: np.ndarray, cash0: float) -> _Series:
    warm = _warmup_until(run, days)
    t0 = int(np.searchsorted(days, warm // NS_PER_DAY * NS_PER_DAY)) if warm is not None else 0
    s = _Series(days, e, r, cash0, warm, min(t0, max(len(days) - 1, 0)), None, None)
    if run.benchmark is not None:
        b = run.benchmark["close"].fill_null(np.nan).to_numpy().astype(np.float64)
        if len(b) == len(days) and np.isfinite(b[s.t0:]).any():
            i0 = s.t0 + int(np.flatnonzero(np.isfinite(b[s.t0:]))[0])
            base = cash0 if i0 == 0 else float(e[i0 - 1])
            s.bench = np.where(np.arange(len(b)) >= i0, b / b[i0] * base, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                br = np.r_[np.nan, b[1:] / b[:-1] - 1.0]
            br[i0] = 0.0
            br[:i0] = np.nan
            s.b = br
    return s


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
    return table([metric_label(k) for k in keys], [[format_metric_unit(k, m.get(k)) for k in keys]], left=0)


def _gates(m: dict[str, Any]) -> str:
    gates = m.get("gates") or {}
    if not gates:
        return ""
    rows = [[metric_label(k), g.get("rule"), format_metric_unit(k, g.get("value")),
             Raw('<span class="pass">PASS</span>' if g.get("passed") else '<span class="fail">FAIL</span>'),
             g.get("reason", "")] for k, g in gates.items()]
    failed = sum(not g.get("passed") for g in gates.values())
    verdict = "all gates pass" if not failed else f"{failed} of {len(gates)} gate(s) FAIL"
    return f"<h2>Acceptance gates: {esc(verdict)}</h2>" + table(["metric", "rule", "value", "result", "reason"], rows,
                                                                 left=2)


def _equity_charts(s: _Series) -> str:
    """Equity (linear), cumulative return on a log scale (growth of 1), and the excess return curve."""
    lines = [Line("strategy", s.days, s.e, "#1f5fbf")]
    growth = [Line("strategy", s.days, np.where(np.arange(len(s.e)) >= s.t0, s.e / s.base, np.nan), "#1f5fbf")]
    note = '<p class="note">No benchmark: give --benchmark PATH (or run.benchmark) to compare.</p>'
    excess = ""
    if s.bench is not None:
        lines.append(Line("benchmark", s.days, s.bench, "#8a8a8a"))
        i0 = int(np.flatnonzero(np.isfinite(s.bench))[0])
        base = s.cash0 if i0 == 0 else float(s.e[i0 - 1])
        growth.append(Line("benchmark", s.days, s.bench / base, "#8a8a8a"))
        diff = np.where(np.isfinite(s.bench), (s.e - s.bench) / base, np.nan)
        excess = "<figure>" + line_chart([Line("excess return", s.days, diff, "#1a9850", fill=True)],
                                         title="Excess return (strategy minus benchmark, cumulative)",
                                         height=200, y_fmt=fmt_pct, warmup_until=s.warmup) + "</figure>"
        note = ""
    vs = " vs benchmark" if len(lines) > 1 else ""
    chart = line_chart(lines, title="Equity" + vs, height=300, y_fmt=fmt_num, warmup_until=s.warmup)
    log = line_chart(growth, title="Cumulative return, log scale (growth of 1" + vs + ")", height=260, y_fmt=fmt_x,
                     log_y=True, warmup_until=s.warmup)
    return f"<figure>{chart}</figure><figure>{log}</figure>{note}{excess}"


SIDE_BY_SIDE = ("total_return", "annual_return", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
                "max_drawdown_duration", "best_day", "worst_day", "max_consecutive_losing_days")


def _side_by_side(m: dict[str, Any], s: _Series) -> str:
    """Strategy (metrics.json) and benchmark (the same definitions on its aligned closes) in one table."""
    if s.bench is None:
        return ""
    ok = np.isfinite(s.bench)
    i0 = int(np.flatnonzero(ok)[0])
    base = s.cash0 if i0 == 0 else float(s.e[i0 - 1])
    bm = compute_metrics(s.days[ok], s.bench[ok], base, [])
    keys = [k for k in SIDE_BY_SIDE if k in m or k in bm]
    keys += [k for g in ("Returns", "Risk") for k in METRIC_GROUPS[g]
             if k in m and k not in keys and k not in ("start_cash", "final_value", "max_drawdown_intraday")]
    rows = [[metric_label(k), format_metric_unit(k, m.get(k)), format_metric_unit(k, bm.get(k))] for k in keys]
    rows += [[metric_label(k), format_metric_unit(k, m.get(k)), ""] for k in ("alpha", "beta", "information_ratio",
                                                                              "tracking_error") if k in m]
    cover = "" if ok.all() else f" The benchmark covers {int(ok.sum()):,} of the run's {len(ok):,} days."
    return ("<h3>Strategy vs benchmark</h3>" + table(["metric", "strategy", "benchmark"], rows)
            + f'<p class="sub">Benchmark column: the same definitions on its closes, bought with the same money.{cover}'
            "</p>")


def _drawdown_table(s: _Series) -> str:
    periods = drawdown_periods(s.days[s.t0:], s.e[s.t0:], s.base, TOP_DRAWDOWNS)
    if not periods:
        return '<p class="note">No drawdown: the equity never fell below its running peak.</p>'
    rows = [[i, _ts_label(p.start), _ts_label(p.valley),
             _ts_label(p.recovery) if p.recovery is not None else Raw('<span class="fail">not recovered</span>'),
             fmt_pct(p.depth, 2), f"{p.length_days:,}" + ("" if p.recovery is not None else " (ongoing)")]
            for i, p in enumerate(periods, 1)]
    return (f"<h3>Worst drawdown periods (top {TOP_DRAWDOWNS})</h3>"
            + table(["#", "start", "valley", "recovery", "depth", "length (days)"], rows, left=4, cls="drawdowns")
            + '<p class="sub">From the daily equity; start is the first day below the previous peak, recovery '
              "the first day back at it, length in calendar days.</p>")


def _rolling(s: _Series) -> list[str]:
    r, days = s.r[s.t0:], s.days[s.t0:]
    title = f"Rolling Sharpe ({ROLLING} trading days)"
    if len(r) < ROLLING:
        return ["<figure>" + line_chart([], title=title, height=200,
                                        empty=f"needs {ROLLING} days; the run has {len(r)}") + "</figure>"]
    out = [line_chart([Line(f"rolling Sharpe ({ROLLING}d)", days, rolling_sharpe(r, ROLLING))], title=title,
                      height=200, zero_line=True),
           line_chart([Line(f"rolling volatility ({ROLLING}d)", days, rolling_volatility(r, ROLLING), "#ff7f0e")],
                      title=f"Rolling volatility, annualized ({ROLLING} trading days)", height=200, y_fmt=fmt_pct)]
    if s.b is not None:
        out.append(line_chart([Line(f"rolling beta ({ROLLING}d)", days, rolling_beta(r, s.b[s.t0:], ROLLING),
                                    "#9467bd")], title=f"Rolling beta to the benchmark ({ROLLING} trading days)",
                              height=200, zero_line=True))
    return [f"<figure>{c}</figure>" for c in out]


def _monthly(s: _Series) -> str:
    years, tab = monthly_table(s.days[s.t0:], s.e[s.t0:], s.base)
    title = "Monthly returns"
    if len(years) > MAX_YEARS:
        years, tab = years[-MAX_YEARS:], tab[-MAX_YEARS:]
        title += f" (the last {MAX_YEARS} years)"
    return heatmap(years, [*MONTHS, "Year"], tab, title=title)


def _yearly(s: _Series) -> str:
    """Each calendar year's return, and the benchmark's beside it."""
    years, yr = period_returns(s.days[s.t0:], s.e[s.t0:], s.base, "Y")
    head = ["year", "strategy"]
    if s.bench is not None:
        _, br = period_returns(s.days[s.t0:], s.bench[s.t0:], s.base, "Y")
        head += ["benchmark", "difference"]
    rows = []
    for i, y in enumerate(years):
        row = [str(y), fmt_pct(yr[i], 2) if np.isfinite(yr[i]) else "n/a"]
        if s.bench is not None:
            ok = np.isfinite(br[i]) and np.isfinite(yr[i])
            row += [fmt_pct(br[i], 2) if np.isfinite(br[i]) else "n/a", fmt_pct(yr[i] - br[i], 2) if ok else "n/a"]
        rows.append(row)
    return f'<h3>Yearly returns</h3><div class="scroll">{table(head, rows)}</div>'


def _quantiles(s: _Series) -> str:
    days, e = s.days[s.t0:], s.e[s.t0:]
    groups = [("daily", s.r[s.t0:]), ("weekly", weekly_returns(days, e, s.base)),
              ("monthly", period_returns(days, e, s.base, "M")[1])]
    return box_plot(groups, title="Return quantiles (whiskers 5%-95%, box 25%-75%, median; dots min and max)")


def _exposure(run: RunData, ts: np.ndarray, eq: np.ndarray, warmup: int | None = None) -> str:
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
                      y_fmt=fmt_pct, warmup_until=warmup)


def _instrument_kinds(man: dict[str, Any]) -> str:
    """The traded symbols' instrument kinds (the manifest's resolved instruments), e.g. ``IF1706: future x300,
    margin 20%, limit 10%``; empty when no instrument table applied."""
    inst = man.get("instruments") or {}
    parts = []
    for sym, row in sorted(inst.items()):
        if not row:
            continue
        text = f"{sym}: {row.get('asset_class', '?')}"
        if row.get("asset_class") == "future":
            text += f" x{row.get('multiplier', 1):g}"
            if row.get("margin"):
                text += f", margin {fmt_pct(row['margin'], 1)}"
            if row.get("maintenance_margin"):
                text += f" (maintenance {fmt_pct(row['maintenance_margin'], 1)})"
            if row.get("limit"):
                text += f", limit {fmt_pct(row['limit'], 1)}"
        if row.get("calendar"):
            text += f", calendar {row['calendar']}"
        parts.append(text)
    if not parts:
        return ""
    ppy = man.get("periods_per_year")
    tail = f" &middot; {ppy} periods a year" if ppy else ""
    return f'<p class="sub">Instruments: {esc("; ".join(parts))}{tail}</p>'


def _margin(run: RunData, ts: np.ndarray, eq: np.ndarray, warmup: int | None = None) -> list[str]:
    """With futures (an equity.parquet ``margin`` column): "Margin used and leverage" over time, margin in
    money and leverage = gross notional (x multiplier) / equity."""
    if "margin" not in run.equity.columns:
        return []
    mg = run.equity["margin"].to_numpy()
    g = run.equity["gross_exposure"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        lev = np.where(eq > 0, np.abs(g) / eq, np.nan)
    peak = float(np.nanmax(lev)) if np.isfinite(lev).any() else 0.0
    return ["<h3>Margin used and leverage</h3>",
            f'<p class="note">Futures: initial margin in use at each bar and leverage = gross notional '
            f"(qty x price x multiplier) / equity; peak leverage {esc(fmt_x(peak))}, peak margin "
            f"{esc(fmt_num(float(np.max(mg)) if len(mg) else 0.0))}.</p>",
            "<figure>" + line_chart([Line("margin used", ts, mg, "#ff7f0e", fill=True)],
                                    title="Margin used", height=200, warmup_until=warmup) + "</figure>",
            "<figure>" + line_chart([Line("leverage", ts, lev, "#8c564b")],
                                    title="Leverage (gross notional / equity)", height=200, y_fmt=fmt_x,
                                    warmup_until=warmup) + "</figure>"]


def _metrics(m: dict[str, Any]) -> str:
    blocks = []
    for group, keys in METRIC_GROUPS.items():
        rows = [[_label(k), format_metric_unit(k, m[k])] for k in keys if k in m]
        if rows:
            blocks.append(f"<div><b>{esc(group)}</b>" + table(["metric", "value"], rows) + "</div>")
    known = {k for keys in METRIC_GROUPS.values() for k in keys} | {"gates", "live"}   # live: the Session section
    other = [[_label(k), format_metric_unit(k, v)] for k, v in sorted(m.items()) if k not in known]
    if other:
        blocks.append("<div><b>Other</b>" + table(["metric", "value"], other) + "</div>")
    return f'<div class="grid2">{"".join(blocks)}</div>'


def _label(key: str) -> Raw:
    """The metric's name, its key as a tooltip (what metrics.json and the gates call it)."""
    return Raw(f'<span title="{esc(key)}">{esc(metric_label(key))}</span>')


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


_RISK_SWITCHES = {"drawdown": ("max", "daily_loss"), "halt": ("enabled",), "review": ("notional",)}


def used_config(config: dict[str, Any], kind: str) -> dict[str, Any]:
    """The config without what the run did not use: [market] without run.market, risk checks that are off,
    [live] for a backtest or walk-forward, empty sections."""
    cfg = dict(config)
    if not (cfg.get("run") or {}).get("market"):
        cfg.pop("market", None)
    if kind not in ("live", "paper"):
        cfg.pop("live", None)
    risk = {}
    for k, v in (cfg.get("risk") or {}).items():
        if v is None or v is False:
            continue
        if isinstance(v, dict) and k in _RISK_SWITCHES and not any(v.get(s) for s in _RISK_SWITCHES[k]):
            continue
        risk[k] = v
    cfg["risk"] = risk
    return {k: v for k, v in cfg.items() if v not in ({}, [], None)}


def _manifest(man: dict[str, Any], kind: str = "backtest") -> str:
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
             "<b>Configuration</b> (what the run used: off risk checks, unused market and live sections left out)",
             f"<pre>{esc(json.dumps(used_config(man.get('config', {}), kind), indent=2, sort_keys=True))}</pre>"]
    if man.get("fill_rules"):
        parts += ["<b>Fill rules</b>", f"<pre>{esc(json.dumps(man['fill_rules'], indent=2, sort_keys=True))}</pre>"]
    return "".join(parts)
