"""Signal accuracy of a model-driven run: the hook a predictor strategy fills by writing predictions.

Hook: a strategy (or its runner) that writes ``predictions.parquet`` into the run folder, with
columns ``ts, symbol, prediction, outcome`` (one row per prediction; ``outcome`` is what happened,
in the same encoding as ``prediction``: a class label or a sign), gets ``signal_accuracy`` =
share of rows with ``prediction == outcome`` (rows with a null outcome are not scored) in
``metrics.json``, in the report, and available to gates. Nothing else is computed here yet.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from tradeloop.errors import ConfigError

__all__ = ["SIGNAL_KEYS", "PREDICTIONS", "signal_accuracy", "signal_metrics"]

SIGNAL_KEYS = ("signal_accuracy",)
PREDICTIONS = "predictions.parquet"
_COLUMNS = ("ts", "symbol", "prediction", "outcome")


def signal_accuracy(path: str | Path) -> float | None:
    """Share of scored predictions that matched their outcome (None when none is scored)."""
    df = pl.read_parquet(path)
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: predictions need columns {', '.join(_COLUMNS)}; missing {', '.join(missing)}")
    scored = df.filter(pl.col("outcome").is_not_null() & pl.col("prediction").is_not_null())
    if scored.height == 0:
        return None
    return float((scored["prediction"] == scored["outcome"]).mean())


def signal_metrics(run_dir: str | Path) -> dict[str, float | None]:
    """``{"signal_accuracy": ...}`` when the run folder holds predictions, else ``{}``."""
    path = Path(run_dir) / PREDICTIONS
    return {"signal_accuracy": signal_accuracy(path)} if path.exists() else {}
