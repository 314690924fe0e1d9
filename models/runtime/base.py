"""The one interface every runtime implements, and the input check they share."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from tradeloop.models.errors import ModelError


@runtime_checkable
class Runtime(Protocol):
    """``predict(windows float32 [batch, lookback, features]) -> logits float32 [batch, classes]``."""

    name: str
    device: str
    threads: int

    def predict(self, windows: np.ndarray) -> np.ndarray: ...


DETAIL_ATTRS = ("device", "threads", "chunk", "native_bf16", "fused", "native", "amx")


def runtime_detail(runtime: object) -> dict:
    """How a runtime instance computes (device, threads, and the fast paths it took where it has a
    choice: oneDNN fusion, the native kernels): logged with the run, so results that differ in the
    last bf16 digit between two machines can be traced to the path each one took."""
    return {k: getattr(runtime, k) for k in DETAIL_ATTRS if hasattr(runtime, k)}


def as_windows(windows: np.ndarray, lookback: int, n_features: int) -> np.ndarray:
    """``windows`` as C-contiguous float32 [batch, lookback, n_features], or a ModelError saying why not."""
    a = np.asarray(windows)
    if a.ndim != 3 or a.shape[1:] != (lookback, n_features):
        raise ModelError(f"windows must have shape [batch, {lookback}, {n_features}], got {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ModelError(f"windows must be floating point (float32), got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)
