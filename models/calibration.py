"""Training windows of a registered model: what post-training quantization (TensorRT's INT8
calibration) measures activation ranges on.

The windows are the model's own training split, rebuilt from the files and span its metadata
records (``data``, ``training_window``, ``label``), after checking each file still has the sha256
it had at training: calibrating on other data would quietly change what the int8 engine computes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tradeloop.data.loaders import file_sha256, load_bars

from tradeloop.models.dataset import SeriesFeatures, split_samples
from tradeloop.models.errors import ModelError


def _ts(date: str | None) -> int | None:
    return None if date in (None, "") else int(np.datetime64(str(date), "ns").astype(np.int64))


def training_windows(info: Any, limit: int = 2048) -> np.ndarray:
    """Up to ``limit`` windows [n, lookback, features] float32 of ``info``'s training split, evenly spaced."""
    meta = info.metadata
    files, span = meta.get("data") or [], meta.get("training_window") or {}
    if not files or not span.get("train_end"):
        raise ModelError(f"model {info.ref}: its metadata records no training data or span to calibrate on")
    items = []
    for entry in files:
        path = Path(entry["path"])
        if not path.is_file():
            raise ModelError(f"model {info.ref}: training file {path} is missing; calibration reads the training data")
        if file_sha256(path) != entry["sha256"]:
            raise ModelError(f"model {info.ref}: training file {path} changed since training "
                             f"(sha256 {entry['sha256'][:12]}... recorded); calibration needs the data it learned from")
        items.append(SeriesFeatures.of(load_bars(path, entry.get("symbol")), info.spec))
    label = meta.get("label", {})
    samples = split_samples(items, info.spec, int(label.get("horizon", 1)), float(label.get("threshold", 0.0)),
                            _ts(span.get("train_start")), _ts(span.get("train_end")))
    if not len(samples):
        raise ModelError(f"model {info.ref}: its training span holds no full window to calibrate on")
    pick = np.unique(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(np.int64))
    return np.ascontiguousarray(samples.x[pick], dtype=np.float32)
