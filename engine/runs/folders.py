"""Reading a run folder back (manifest, metrics, equity, fills, benchmark, risk events) for reports and run lists."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tradeloop.brokers.orders import Fill, Side

from tradeloop.errors import ConfigError

__all__ = ["RunFolderError", "RunData", "REQUIRED", "check_folder", "load_run", "read_json", "resolve_run", "run_kind",
           "run_status", "ts_ns"]

REQUIRED = ("manifest.json", "metrics.json", "equity.parquet", "fills.parquet")
RISK_EVENTS = "risk_events.parquet"


class RunFolderError(ConfigError):
    """A run folder that is missing, incomplete or unreadable; the message names the folder and the file."""


@dataclass
class RunData:
    """One finished run as read from its folder."""

    path: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    equity: pl.DataFrame               # ts, cash, equity, gross_exposure
    fills: list[Fill]
    benchmark: pl.DataFrame | None     # ts, close (aligned to the run's days), when the run had a benchmark
    risk_events: pl.DataFrame | None   # whatever the risk layer wrote, when it wrote something

    @property
    def id(self) -> str:
        """The run's id: its folder name."""
        return self.path.name

    @property
    def start_cash(self) -> float:
        """The account value before the first bar."""
        return float(self.metrics.get("start_cash") or self.manifest.get("config", {}).get("run", {}).get("cash"))

    @property
    def strategy(self) -> str:
        """The strategy as configured (name or module:Class)."""
        return str(self.manifest.get("config", {}).get("run", {}).get("strategy", "?"))

    @property
    def kind(self) -> str:
        """backtest, walkforward, live or paper (:func:`run_kind`)."""
        return run_kind(self.manifest)

    @property
    def status(self) -> str:
        """completed, failed or stopped; folders written before the manifest said so count as completed."""
        return run_status(self.manifest)


def run_kind(manifest: dict[str, Any]) -> str:
    """The kind of run a manifest describes; older folders said ``mode`` (live, paper) or nothing (backtest)."""
    return str(manifest.get("kind") or manifest.get("mode") or "backtest")


def run_status(manifest: dict[str, Any]) -> str:
    """How the run ended; older folders said ``failed`` (the error) or nothing."""
    return str(manifest.get("status") or ("failed" if manifest.get("failed") else "completed"))


def ts_ns(col: pl.Series) -> np.ndarray:
    """A Datetime column as int64 ns, as the engine holds it (naive wall time kept, aware as UTC)."""
    return col.cast(pl.Datetime("ns", col.dtype.time_zone)).cast(pl.Int64).to_numpy()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run folder; a RunFolderError naming the file if it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return value


def _parquet(path: Path, columns: tuple[str, ...] = ()) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several types for a damaged file
        raise RunFolderError(f"{path}: cannot read it as Parquet: {e}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunFolderError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def check_folder(path: str | Path, required: tuple[str, ...] = REQUIRED) -> Path:
    """``path`` as a Path if it is a run folder holding ``required``; a RunFolderError saying what is wrong."""
    p = Path(path)
    if not p.exists():
        raise RunFolderError(f"run folder {path} not found")
    if not p.is_dir():
        raise RunFolderError(f"{path} is not a folder (give a run folder such as runs/<id>)")
    missing = [name for name in required if not (p / name).is_file()]
    if missing:
        raise RunFolderError(f"{path} is not a complete run folder: missing {', '.join(missing)} "
                             "(every finished run writes them)")
    return p


def load_run(path: str | Path) -> RunData:
    """Every file of a run folder that a report reads; a RunFolderError if one is missing or damaged."""
    p = check_folder(path)
    equity = _parquet(p / "equity.parquet", ("ts", "cash", "equity", "gross_exposure"))
    f = _parquet(p / "fills.parquet", ("ts", "symbol", "side", "qty", "price", "commission", "order_id"))
    fills = [Fill(o, int(t), s, Side(sd), float(q), float(px), float(c)) for o, t, s, sd, q, px, c in
             zip(f["order_id"], ts_ns(f["ts"]), f["symbol"], f["side"], f["qty"], f["price"], f["commission"])]
    bench = _parquet(p / "benchmark.parquet", ("ts", "close")) if (p / "benchmark.parquet").is_file() else None
    risk = _parquet(p / RISK_EVENTS) if (p / RISK_EVENTS).is_file() else None
    return RunData(p, read_json(p / "manifest.json"), read_json(p / "metrics.json"), equity, fills, bench, risk)


def resolve_run(name: str, root: str | Path) -> Path:
    """A run given as a folder path, or as an id under ``root``."""
    p = Path(name)
    if p.is_dir():
        return p
    q = Path(root) / name
    if q.is_dir():
        return q
    raise RunFolderError(f"run {name!r} not found (neither a folder nor a run id under {root})")
