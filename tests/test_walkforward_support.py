"""Shared builders for the walk-forward tests (no tests here): tiny training settings, real data, edited copies.

Every walk-forward in these tests runs on real qbot A-share daily files cut to 2010-01-01 ..
2012-07-01 (three 6-month test windows after a 1-year training span) with a tiny network, so a
window trains in well under a second.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.research.windows import WindowSpec

from tests.conftest import SHARED_DATA  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)

QBOT = SHARED_DATA / "qbot"
FILES = ("600519.SH", "000858.SZ")
TINY_NET = {"kind": "conv_transformer", "sizes": {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}}
PRICE_COLS = ("open", "high", "low", "close", "pre_close", "change", "pct_chg", "vol", "amount")


def needs_models() -> None:
    """Skip unless the ``models`` extra (torch, onnxruntime) is installed."""
    for module in ("torch", "onnxruntime"):
        pytest.importorskip(module, reason=f"{module} not installed (pip install -e '.[models]')")


def qbot_files(folder: Path | None = None) -> list[Path]:
    """The real files (or same-named copies in ``folder``); skips where the shared data is absent."""
    paths = [(folder or QBOT) / f"{name}.csv" for name in FILES]
    for p in paths:
        if not p.is_file():
            pytest.skip(f"real data file {p} not found")
    return paths


def tiny_train(registry: Path, **over: Any) -> dict[str, Any]:
    """Training settings of a tiny network: 2 epochs, 16 wide, one layer, 16-bar windows, no ONNX export."""
    return {"name": "tiny", "registry": str(registry), "epochs": 2, "batch_size": 128, "onnx": False,
            "net": TINY_NET, "features": {"lookback": 16}, "horizon": 5, **over}


def model_config(files: list[Path], **params: Any) -> RunConfig:
    """``model_signal`` on ``files``, 2010-01-01 .. 2012-07-01, the torch-cpu runtime."""
    cfg = RunConfig()
    cfg.run.strategy = "model_signal"
    cfg.run.cash = 1_000_000.0
    cfg.run.start, cfg.run.end = "2010-01-01", "2012-07-01"
    cfg.params = {"runtime": "torch-cpu", "enter": 0.5, "exit": 0.5, **params}
    cfg.data = [DataSpec(path=str(p)) for p in files]
    return cfg


SPEC = WindowSpec(train="1y", test="6m", embargo=5)   # windows test from 2011-01-01, 2011-07-01, 2012-01-01


def edited_copy(src: Path, dest: Path, after: str, how: str, seed: int = 0) -> Path:
    """A copy of a qbot file whose bars dated on or after ``after`` are shuffled (rows of prices and volumes
    moved to other dates) or changed (prices scaled up 30%, volumes halved); dates stay in order."""
    df = pl.read_csv(src, infer_schema_length=0)  # every column as text: untouched rows stay byte-identical
    cut = int(after.replace("-", ""))
    late = np.flatnonzero(df["trade_date"].cast(pl.Int64).to_numpy() >= cut)
    assert len(late) > 10, f"{src}: nothing after {after} to edit"
    cols = {}
    for c in PRICE_COLS:
        v = df[c].to_numpy().copy()
        if how == "shuffle":
            v[late] = v[late][np.random.default_rng(seed).permutation(len(late))]
        elif how == "change":
            x = v[late].astype(float) * (0.5 if c in ("vol", "amount") else 1.3)
            v[late] = np.array([repr(float(t)) for t in x], dtype=object)
        else:
            raise ValueError(how)
        cols[c] = pl.Series(c, v, pl.String)
    df.with_columns(**cols).write_csv(dest)
    return dest


def edited_files(folder: Path, after: str, how: str) -> list[Path]:
    """Both test files edited by :func:`edited_copy` into ``folder`` (same names, so same symbols)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [edited_copy(p, folder / p.name, after, how) for p in qbot_files()]
