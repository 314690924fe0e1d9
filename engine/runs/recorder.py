"""Writing a run folder: manifest, metrics, equity, orders, order events and fills.

Nothing in these files depends on the wall clock, so the same inputs and configuration give
bit-identical files. Timestamps are written back in the form they were read: naive input
stays naive (``2010-01-04`` -> ``2010-01-04 00:00:00``), zone-aware input is written as UTC.
"""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tradeloop.engine.drivers.backtest import BacktestResult
from tradeloop.engine.metrics.risk_events import risk_frame

VERSIONED = ("tradeloop", "numpy", "polars", "pyarrow", "numba", "structlog")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


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
    return {"fills": fills_df, "orders": orders_df, "order_events": events_df, "equity": equity_df,
            "risk_events": risk_frame(result.risk_events, tz)}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_run(out: Path, result: BacktestResult, manifest: dict[str, Any]) -> Path:
    """Write every file of the run folder ``out`` (created if needed) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in frames(result).items():
        tmp = out / f".{name}.parquet.tmp"
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, out / f"{name}.parquet")
    write_json(out / "metrics.json", result.metrics)
    write_json(out / "manifest.json", manifest)
    return out
