"""The one run recorder: the manifest every kind of run writes, and the run folder around it.

Backtests, walk-forwards, live and paper sessions write the same folder: ``manifest.json`` (one
schema, :func:`build_manifest`), ``metrics.json``, the Parquet tables, ``benchmark.parquet`` when
the run had one, ``events.jsonl`` when its log events were recorded, and ``report.html``.

Nothing in these files depends on the wall clock, so the same inputs and configuration give
bit-identical files. Timestamps are written back in the form they were read: naive input
stays naive (``2010-01-04`` -> ``2010-01-04 00:00:00``), zone-aware input is written as UTC.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import polars as pl

from tradeloop.brokers.costs import describe
from tradeloop.brokers.instruments import periods_per_year
from tradeloop.engine.metrics.benchmark import write_benchmark
from tradeloop.engine.metrics.risk_events import risk_frame
from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.telemetry.logs import EVENTS_FILE

if TYPE_CHECKING:
    from tradeloop.brokers.sim import FillRules
    from tradeloop.engine.config.run import RunConfig
    from tradeloop.engine.loop.strategy import Strategy
    from tradeloop.engine.metrics.benchmark import Benchmark
    from tradeloop.engine.telemetry.logs import RunEvents

__all__ = ["Kind", "Status", "KINDS", "STATUSES", "MANIFEST_KEYS", "build_manifest", "check_run_folder", "run_span",
           "fill_rules_entry", "frames", "package_versions", "ts_series", "write_json", "write_run"]

Kind = Literal["backtest", "walkforward", "live", "paper"]
Status = Literal["completed", "failed", "stopped"]
KINDS: tuple[str, ...] = ("backtest", "walkforward", "live", "paper")
STATUSES: tuple[str, ...] = ("completed", "failed", "stopped")
#: the top-level keys of every manifest, whatever the kind
MANIFEST_KEYS = ("kind", "status", "error", "config", "strategy", "fill_rules", "risk", "market", "instruments",
                 "periods_per_year", "inputs", "models", "seed", "versions", "symbols", "tz", "span", "details")

VERSIONED = ("tradeloop", "numpy", "polars", "pyarrow", "numba", "structlog")
MODEL_PACKAGES = ("torch", "onnx", "onnxruntime")


def package_versions(models: bool = False) -> dict[str, str]:
    """Python's and the engine's package versions; the model packages too when ``models``."""
    out = {"python": platform.python_version()}
    for name in VERSIONED + (MODEL_PACKAGES if models else ()):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def fill_rules_entry(rules: FillRules) -> dict[str, Any]:
    """How orders were filled and charged, as the manifest holds it."""
    return {"fill_at": rules.fill_at, "participation": rules.participation, "lot_size": rules.lot_size,
            "commission": describe(rules.commission), "slippage": describe(rules.slippage),
            "market": rules.market.describe() if rules.market is not None else None}


def _iso(ns: int) -> str:
    """int64 ns -> ``2012-01-04`` (midnight) or ``2012-01-04T09:30:00``, as the input was naive or UTC."""
    t = np.datetime64(int(ns), "ns")
    return str(t.astype("datetime64[D]")) if int(ns) % 86_400_000_000_000 == 0 else str(t.astype("datetime64[s]"))


def run_span(ts: Any, trade_from: int | None = None, warmup_from: int | None = None) -> dict[str, str]:
    """The manifest's ``span``: ``from`` the first bar of the traded span (the first at or after
    ``trade_from``; every metric starts there), ``to`` the last bar, ``warmup_from`` the first bar
    the strategy saw (``warmup_from`` when given, as a walk-forward's first warm-up bar, else the
    first bar of ``ts``; equal to ``from`` when there was no warm-up). ISO dates, or date-times for
    intraday bars; "" for a run without a bar (or without a bar in its traded span), so every
    kind has the same three strings."""
    ts = np.asarray(ts, dtype=np.int64)
    if not len(ts):
        return {"from": "", "to": "", "warmup_from": ""}
    i0 = 0 if trade_from is None else int(np.searchsorted(ts, int(trade_from), side="left"))
    first = int(ts[0]) if warmup_from is None else int(warmup_from)
    return {"from": _iso(ts[i0]) if i0 < len(ts) else "", "to": _iso(ts[-1]) if i0 < len(ts) else "",
            "warmup_from": _iso(first)}


def build_manifest(kind: Kind, cfg: RunConfig, strategy: Strategy | type[Strategy], rules: FillRules, *,
                   inputs: Sequence[dict[str, Any]], models: Sequence[dict[str, Any]], symbols: Sequence[str],
                   tz: str | None, status: Status = "completed", error: str | None = None,
                   params: Mapping[str, Any] | None = None, benchmark: Benchmark | None = None,
                   details: Mapping[str, Any] | None = None, model_packages: bool = False,
                   span: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The manifest of one run, the same keys (:data:`MANIFEST_KEYS`) for every kind.

    ``strategy`` is the instance that ran (its resolved params) or, where none stands for the whole
    run (walk-forward windows), its class with ``params``; ``details`` holds what only this kind
    has (walk-forward windows, a session's stats); ``error`` says why a failed run stopped.
    ``instruments`` maps each traded symbol to its resolved instrument (brokers/instruments.py; None where no
    row matched) and ``periods_per_year`` is the P of the run's annualised metrics (365 for 24/7, else 252).
    ``span`` (:func:`run_span`) says which bars the metrics cover; a caller that leaves it out gets
    it filled by :func:`write_run` from the result's bars (no warm-up: live and paper sessions).
    """
    if kind not in KINDS:
        raise ValueError(f"run kind {kind!r}: expected one of {', '.join(KINDS)}")
    if status not in STATUSES:
        raise ValueError(f"run status {status!r}: expected one of {', '.join(STATUSES)}")
    cls = strategy if isinstance(strategy, type) else type(strategy)
    resolved = dict(params if params is not None else getattr(strategy, "params", {}))
    config = cfg.to_dict()
    config["run"].pop("out", None)  # where a run was written is not part of what it is
    live = kind in ("live", "paper")
    return {
        "kind": kind,
        "status": status,
        "error": error,
        "config": config,
        "strategy": {"class": f"{cls.__module__}:{cls.__qualname__}", "params": resolved},
        "fill_rules": fill_rules_entry(rules),
        "risk": asdict(cfg.risk),
        "market": {"profile": cfg.run.market or None, "venue": cfg.live.venue if live else None,
                   "interval": cfg.live.interval if live else None},
        # per traded symbol its resolved instrument (None: no row matched it); P of the annualised metrics
        "instruments": rules.instruments.resolved(symbols),
        "periods_per_year": periods_per_year(rules.instruments, symbols),
        "inputs": [*inputs, *([benchmark.entry] if benchmark is not None else [])],
        "models": list(models),
        "seed": cfg.run.seed,
        "versions": package_versions(model_packages or bool(models)),
        "symbols": list(symbols),
        "tz": tz,
        "span": dict(span) if span else {},
        "details": dict(details or {}),
    }


def ts_series(name: str, values: Any, tz: str | None) -> pl.Series:
    """int64 ns -> a Datetime column, naive or UTC as the input was."""
    return pl.Series(name, np.asarray(values, dtype=np.int64)).cast(pl.Datetime("ns", tz))


def frames(result: BacktestResult) -> dict[str, pl.DataFrame]:
    """The run's tables, as they are written to Parquet."""
    tz = result.tz
    fills = result.fills
    fills_df = pl.DataFrame([
        ts_series("ts", [f.ts for f in fills], tz),
        pl.Series("symbol", [f.symbol for f in fills], pl.String),
        pl.Series("side", [f.side.value for f in fills], pl.String),
        pl.Series("qty", [f.qty for f in fills], pl.Float64),
        pl.Series("price", [f.price for f in fills], pl.Float64),
        pl.Series("commission", [f.commission for f in fills], pl.Float64),
        pl.Series("order_id", [f.order_id for f in fills], pl.String),
    ])
    orders = result.orders
    orders_df = pl.DataFrame([
        pl.Series("order_id", [o.id for o in orders], pl.String),
        ts_series("created_ts", [o.created_ts for o in orders], tz),
        pl.Series("symbol", [o.symbol for o in orders], pl.String),
        pl.Series("side", [o.side.value for o in orders], pl.String),
        pl.Series("type", [o.type.value for o in orders], pl.String),
        pl.Series("tif", [o.tif.value for o in orders], pl.String),
        pl.Series("qty", [o.qty for o in orders], pl.Float64),
        pl.Series("limit_price", [o.limit_price for o in orders], pl.Float64),
        pl.Series("stop_price", [o.stop_price for o in orders], pl.Float64),
        pl.Series("status", [o.status.value for o in orders], pl.String),
        pl.Series("filled_qty", [o.filled_qty for o in orders], pl.Float64),
        pl.Series("avg_fill_price", [o.avg_fill_price if o.filled_qty else None for o in orders], pl.Float64),
        pl.Series("reason", [o.reason for o in orders], pl.String),
        pl.Series("tag", [o.tag for o in orders], pl.String),
    ])
    ev = result.order_events
    events_df = pl.DataFrame([
        ts_series("ts", [e.ts for e in ev], tz),
        pl.Series("order_id", [e.order_id for e in ev], pl.String),
        pl.Series("symbol", [e.symbol for e in ev], pl.String),
        pl.Series("status", [e.status.value for e in ev], pl.String),
        pl.Series("reason", [e.reason for e in ev], pl.String),
    ])
    equity_df = pl.DataFrame([
        ts_series("ts", result.ts, tz),
        pl.Series("cash", result.cash, pl.Float64),
        pl.Series("equity", result.equity, pl.Float64),
        pl.Series("gross_exposure", result.gross_exposure, pl.Float64),
    ])
    margin = getattr(result, "margin", None)
    if margin is not None:   # futures: initial margin in use per step (the report's margin and leverage chart)
        equity_df = equity_df.with_columns(pl.Series("margin", margin, pl.Float64))
    out = {"fills": fills_df, "orders": orders_df, "order_events": events_df, "equity": equity_df,
           "risk_events": risk_frame(result.risk_events, tz)}
    acts = getattr(result, "actions", None)
    if acts:   # corporate actions applied (data.actions): only in runs that had some
        out["actions"] = pl.DataFrame([
            ts_series("ts", [a["ts"] for a in acts], tz),
            pl.Series("symbol", [a["symbol"] for a in acts], pl.String),
            *(pl.Series(k, [float(a[k]) for a in acts], pl.Float64)
              for k in ("dividend", "split", "qty_before", "qty_after", "cash")),
            pl.Series("cancelled", [int(a["cancelled"]) for a in acts], pl.Int64),
        ])
    rolls = getattr(result, "rolls", None)
    if rolls:   # futures rolls (engine/loop/rolls.py): one row per roll, with the orders it sent
        out["rolls"] = pl.DataFrame([
            pl.Series("ts", [r["ts"] for r in rolls], pl.String),
            pl.Series("at", [r["at"] for r in rolls], pl.String),
            pl.Series("old", [r["old"] for r in rolls], pl.String),
            pl.Series("new", [r["new"] for r in rolls], pl.String),
            pl.Series("qty", [float(r["qty"]) for r in rolls], pl.Float64),
            pl.Series("orders", [",".join(r["orders"]) for r in rolls], pl.String),
        ])
    return out


#: files a run reads from its own folder when they are there before it starts (engine/metrics/signals.py)
RUN_FOLDER_INPUTS = ("predictions.parquet",)


def check_run_folder(out: str | Path, *, overwrite: bool = False) -> Path:
    """``out`` as a Path if a run may be written there: it does not exist, or is an empty folder.

    A folder that already holds files (an earlier run's, or anything else) is refused with a
    RunFolderError naming it unless ``overwrite``: a finished run is never replaced silently. With
    ``overwrite`` the run's files are replaced and other files in the folder are left alone.
    Files the run reads from its folder (:data:`RUN_FOLDER_INPUTS`, put there for it) do not count.
    A path that exists and is not a folder is refused either way.
    """
    from tradeloop.engine.runs.folders import RunFolderError
    p = Path(out)
    if not p.exists() and not p.is_symlink():
        return p
    if not p.is_dir():
        raise RunFolderError(f"run folder {out}: exists and is not a folder")
    try:
        holds = any(e.name not in RUN_FOLDER_INPUTS for e in p.iterdir())
    except OSError as e:
        raise RunFolderError(f"run folder {out}: cannot list it: {e.strerror or e}") from None
    if holds and not overwrite:
        raise RunFolderError(f"run folder {out} already exists and is not empty: choose another --out, "
                             "or give --overwrite to replace the run in it")
    return p


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_run(out: Path, result: BacktestResult, manifest: dict[str, Any], *,
              report: Callable[[Path], object] | None, benchmark: Benchmark | None = None,
              events: RunEvents | None = None) -> Path:
    """Write every file of the run folder ``out`` (created if needed) and return it.

    Tables, metrics and manifest first, then ``benchmark.parquet`` (with ``benchmark``), then
    ``report(out)`` (engine.report.walkforward.write_run_report: report.html for every kind; the
    report floor sits above this one, so it is passed in) and last ``events.jsonl`` (with
    ``events``), so the events file holds the report's own log line too.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = frames(result)
    for name, df in tables.items():
        tmp = out / f".{name}.parquet.tmp"
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, out / f"{name}.parquet")
    for name in ("actions", "rolls"):   # an earlier run's (--overwrite) would be read as this run's
        if name not in tables:
            (out / f"{name}.parquet").unlink(missing_ok=True)
    write_json(out / "metrics.json", result.metrics)
    if not manifest.get("span"):   # a caller that did not say: the result's bars, from its trade_from
        manifest = {**manifest, "span": run_span(result.ts, getattr(result, "trade_from", None))}
    write_json(out / "manifest.json", manifest)
    if benchmark is not None:
        write_benchmark(out, benchmark, result.ts, result.tz)
    else:  # an earlier run's benchmark (--overwrite) would be read as this run's
        (out / "benchmark.parquet").unlink(missing_ok=True)
    if report is not None:
        report(out)
    if events is not None:
        events.save(out / EVENTS_FILE)
    else:
        (out / EVENTS_FILE).unlink(missing_ok=True)
    return out
