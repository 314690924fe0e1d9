"""A run's risk output: the ``risk_events.parquet`` table and the risk entries of ``metrics.json``."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import polars as pl

from tradeloop.risk.events import RiskEvent


def _ts_column(name: str, values: list[int], tz: str | None) -> pl.Series:
    return pl.Series(name, values, pl.Int64).cast(pl.Datetime("ns", tz))


def risk_frame(events: Sequence[RiskEvent], tz: str | None) -> pl.DataFrame:
    """One row per risk event: ts, order_id, symbol, check, action, reason, value (null where none)."""
    return pl.DataFrame([
        _ts_column("ts", [e.ts for e in events], tz),
        pl.Series("order_id", [e.order_id for e in events], pl.String),
        pl.Series("symbol", [e.symbol for e in events], pl.String),
        pl.Series("check", [e.check for e in events], pl.String),
        pl.Series("action", [e.action for e in events], pl.String),
        pl.Series("reason", [e.reason for e in events], pl.String),
        pl.Series("value", [None if math.isnan(e.value) else e.value for e in events], pl.Float64),
    ])


def ts_text(ts: int, tz: str | None) -> str:
    """A timestamp as written in the run's tables: naive wall time, or UTC with its offset."""
    return _ts_column("ts", [ts], tz)[0].isoformat(sep=" ")


def risk_metrics(events: Sequence[RiskEvent], tz: str | None) -> dict[str, Any]:
    """``risk_events`` (how many) and, if the drawdown stop fired, ``risk_drawdown_stop: {ts, equity, stops}``."""
    out: dict[str, Any] = {"risk_events": len(events)}
    stop = next((e for e in events if e.check == "drawdown" and e.action == "stop"), None)
    if stop is not None:
        out["risk_drawdown_stop"] = {"ts": ts_text(stop.ts, tz), "equity": stop.value,
                                     "stops": sum(1 for e in events if e.check == "drawdown" and e.action == "stop")}
    return out
