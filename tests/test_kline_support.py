"""Shared builders for the K-line forecaster tests (no tests here): synthetic bars, tiny sizes, a tiny model.

The synthetic market is a seeded random walk with real OHLC structure (open near the last
close, high/low around the body, log-normal volume, amount = volume x close), so the tests run
without the shared data; tests that read real files skip naming the file where it is absent.
A tiny forecaster (tokenizer 5+5 bits, transformer d=32) trains on it in a few seconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tradeloop.data.schema import NS_PER_DAY, BarSeries

DAY0 = int(np.datetime64("2012-01-02", "ns").astype(np.int64))
TINY = {"tokenizer": {"hidden": 32, "layers": 2, "coarse_bits": 5, "fine_bits": 5},
        "transformer": {"d_model": 32, "layers": 2, "heads": 2, "ff": 64, "max_len": 256}}


def needs_torch() -> None:
    """Skip unless torch (the ``models`` extra) is installed; torch then runs on one intra-op thread
    (two threads on the shared 2-core machine made a 0.7 s training take 16 s)."""
    torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")
    torch.set_num_threads(1)


def walk(symbol: str, n: int, seed: int, *, start: int = DAY0) -> BarSeries:
    """``n`` daily bars of a seeded random walk with OHLC structure, volume and amount."""
    rng = np.random.default_rng(seed)
    close = 20.0 * np.exp(np.cumsum(0.015 * rng.standard_normal(n)))
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * np.exp(0.004 * rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(np.abs(0.006 * rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.006 * rng.standard_normal(n)))
    volume = np.exp(12 + 0.3 * rng.standard_normal(n))
    ts = start + NS_PER_DAY * np.arange(n, dtype=np.int64)
    return BarSeries(symbol, ts, open_, high, low, close, volume, extra={"amount": volume * close})


def market(n: int = 700) -> list[BarSeries]:
    """Three synthetic symbols of ``n`` days each."""
    return [walk(s, n, i) for i, s in enumerate(("AAA", "BBB", "CCC"))]


def day(k: int) -> str:
    """ISO date ``k`` days after DAY0."""
    return str(np.datetime64(DAY0 + k * NS_PER_DAY, "ns").astype("datetime64[D]"))


def tiny_config(registry: Path, **over: Any) -> dict[str, Any]:
    """Training settings of a tiny forecaster on ``market()``: first 500 days train, the next 100 validate."""
    return {"name": "kl", "data": ["AAA", "BBB", "CCC"], "registry": str(registry), "size": TINY,
            "lookback": 32, "extra": 4, "stride": 2, "tokenizer_steps": 250, "steps": 80, "batch_size": 32,
            "lr": 3e-3, "horizon": 3, "samples": 8, "train_start": day(0), "train_end": day(500),
            "val_end": day(600), **over}
