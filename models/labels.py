"""Training targets: did the close move beyond a threshold over the next ``h`` bars (binary).

A sample at bar t gets label 1 when log(c[t+h] / c[t]) > threshold, 0 when it is < -threshold,
and no label (-1) when the move is inside the dead zone or when bar t+h lies at or past ``end``:
a training window's labels never read a bar after the window (tested).
"""
from __future__ import annotations

import numpy as np

from tradeloop.models.errors import TrainingError

NO_LABEL = -1


def _check(h: int, threshold: float) -> None:
    if isinstance(h, bool) or int(h) != h or h < 1:
        raise TrainingError(f"label horizon must be an integer >= 1, got {h!r}")
    if not threshold >= 0:
        raise TrainingError(f"label threshold must be >= 0, got {threshold!r}")


def forward_returns(close: np.ndarray, h: int, end: int | None = None) -> np.ndarray:
    """log(c[t+h] / c[t]) for every t with t + h < end (default: the series length), else NaN."""
    _check(h, 0.0)
    c = np.asarray(close, dtype=np.float64)
    end = len(c) if end is None else min(int(end), len(c))
    out = np.full(len(c), np.nan)
    if end - h > 0:
        out[:end - h] = np.log(c[h:end] / c[:end - h])
    return out


def make_labels(close: np.ndarray, h: int, threshold: float = 0.0, end: int | None = None) -> np.ndarray:
    """int8 labels: 1 up beyond threshold, 0 down beyond it, -1 no label (dead zone, or t+h >= end)."""
    _check(h, threshold)
    r = forward_returns(close, h, end)
    out = np.full(len(r), NO_LABEL, np.int8)
    out[r > threshold] = 1
    out[r < -threshold] = 0
    return out


def previous_sign(close: np.ndarray, h: int) -> np.ndarray:
    """The naive 'same as before' guess: 1 where log(c[t] / c[t-h]) > 0, else 0 (0 for t < h)."""
    _check(h, 0.0)
    c = np.asarray(close, dtype=np.float64)
    out = np.zeros(len(c), np.int8)
    out[h:] = (c[h:] > c[:-h]).astype(np.int8)
    return out
