"""The one interface every runtime implements, and the input check they share."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ModelError


@runtime_checkable
class Runtime(Protocol):
    """``predict(windows float32 [batch, lookback, features]) -> logits float32 [batch, classes]``."""

    name: str
    device: str
    threads: int

    def predict(self, windows: np.ndarray) -> np.ndarray: ...


def as_windows(windows: np.ndarray, lookback: int, n_features: int) -> np.ndarray:
    """``windows`` as C-contiguous float32 [batch, lookback, n_features], or a ModelError saying why not."""
    a = np.asarray(windows)
    if a.ndim != 3 or a.shape[1:] != (lookback, n_features):
        raise ModelError(f"windows must have shape [batch, {lookback}, {n_features}], got {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ModelError(f"windows must be floating point (float32), got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)
