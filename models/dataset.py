"""Samples for training and evaluation: windows of features with labels, split by time.

Features are computed once per series (``SeriesFeatures``); a split [start, end) takes the
windows ending at bars inside it whose labels are known from bars before ``end``, so no split's
labels read the next split's bars, and the validation split lies after the training split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradeloop.data.schema import BarSeries

from tradeloop.models.errors import TrainingError
from tradeloop.models.features import FeatureSpec, compute_features, windows_at
from tradeloop.models.labels import NO_LABEL, make_labels, previous_sign


@dataclass
class SeriesFeatures:
    """One series with its feature rows (computed once for every split)."""

    series: BarSeries
    features: np.ndarray

    @classmethod
    def of(cls, series: BarSeries, spec: FeatureSpec) -> SeriesFeatures:
        """Compute the features of ``series``."""
        return cls(series, compute_features(series, spec))


@dataclass
class Samples:
    """Windows [n, lookback, 16] float32, labels [n] int64, and where each came from."""

    x: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    symbol: np.ndarray
    prev_sign: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def balance(self) -> float:
        """Share of label 1."""
        return float(self.y.mean()) if len(self.y) else float("nan")


def split_samples(items: list[SeriesFeatures], spec: FeatureSpec, horizon: int, threshold: float,
                  start: int | None, end: int | None) -> Samples:
    """Labelled windows ending at bars with ``start <= ts < end`` whose label uses bars before ``end``."""
    xs, ys, tss, syms, prevs = [], [], [], [], []
    for k, item in enumerate(items):
        s = item.series
        lo = 0 if start is None else int(np.searchsorted(s.ts, start, "left"))
        hi = len(s) if end is None else int(np.searchsorted(s.ts, end, "left"))
        lo = max(lo, spec.min_bars - 1)
        if hi <= lo:
            continue
        labels = make_labels(s.close, horizon, threshold, end=hi)
        t = np.arange(lo, hi)
        t = t[labels[lo:hi] != NO_LABEL]
        if not len(t):
            continue
        xs.append(windows_at(item.features, t, spec.lookback))
        ys.append(labels[t].astype(np.int64))
        tss.append(s.ts[t])
        syms.append(np.full(len(t), k, np.int32))
        prevs.append(previous_sign(s.close, horizon)[t].astype(np.int64))
    if not xs:
        L = spec.lookback
        return Samples(np.empty((0, L, spec.n_features), np.float32), np.empty(0, np.int64),
                       np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))
    return Samples(np.concatenate(xs), np.concatenate(ys), np.concatenate(tss), np.concatenate(syms),
                   np.concatenate(prevs))


def require(samples: Samples, name: str, minimum: int, hint: str) -> None:
    """Raise a TrainingError naming the split when it has fewer than ``minimum`` samples."""
    if len(samples) < minimum:
        raise TrainingError(f"the {name} split has {len(samples)} labelled windows, need at least {minimum}: {hint}")
