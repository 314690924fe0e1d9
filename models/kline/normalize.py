"""Per-window normalisation (as Kronos): z-score of each field over the context, clipped.

Volume and amount enter as ``log1p``; prices as they are. The statistics come from the context
bars only, so a forecast never sees its own future; generated bars live in the same frame and
``denormalize`` brings them back to price units with the context's statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradeloop.models.errors import FeatureError
from tradeloop.models.kline.spec import FIELDS, N_FIELDS

EPS = 1e-5


@dataclass(frozen=True)
class WindowStats:
    """Mean and standard deviation per field of each window: [n, 6] each (log1p volume/amount)."""

    mean: np.ndarray
    std: np.ndarray


def check_bars(bars: np.ndarray, what: str = "history") -> np.ndarray:
    """``bars`` as float64 [..., T, 6] after checking they are finite, prices > 0, volume/amount >= 0."""
    a = np.asarray(bars, np.float64)
    if a.ndim < 2 or a.shape[-1] != N_FIELDS:
        raise FeatureError(f"{what}: expected bars [..., T, {N_FIELDS}] ({', '.join(FIELDS)}), got shape "
                           f"{list(a.shape)}")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise FeatureError(f"{what}: non-finite value at bar {idx[-2]} field {FIELDS[idx[-1]]} (index {list(idx)})")
    if (a[..., :4] <= 0).any():
        idx = tuple(int(i) for i in np.argwhere(a[..., :4] <= 0)[0])
        raise FeatureError(f"{what}: price <= 0 at bar {idx[-2]} field {FIELDS[idx[-1]]}")
    if (a[..., 4:] < 0).any():
        idx = tuple(int(i) for i in np.argwhere(a[..., 4:] < 0)[0])
        raise FeatureError(f"{what}: negative {FIELDS[4 + idx[-1]]} at bar {idx[-2]}")
    return a


def _transform(bars: np.ndarray) -> np.ndarray:
    x = np.array(bars, np.float64, copy=True)
    x[..., 4:] = np.log1p(x[..., 4:])
    return x


def stats_of(context: np.ndarray) -> WindowStats:
    """Statistics of each window's context bars [n, T, 6]."""
    x = _transform(context)
    return WindowStats(x.mean(axis=-2), x.std(axis=-2))


def normalize(bars: np.ndarray, stats: WindowStats, clip: float) -> np.ndarray:
    """float32 [n, T, 6] z-scores of ``bars`` [n, T, 6] in the frame ``stats``, clipped to +-clip."""
    z = (_transform(bars) - stats.mean[:, None, :]) / (stats.std[:, None, :] + EPS)
    return np.clip(z, -clip, clip).astype(np.float32)


def denormalize(z: np.ndarray, stats: WindowStats) -> np.ndarray:
    """float64 bars [n, ..., 6] in price units from z-scores [n, ..., 6] in the frame ``stats``."""
    shape = (z.shape[0],) + (1,) * (z.ndim - 2) + (N_FIELDS,)
    x = np.asarray(z, np.float64) * (stats.std.reshape(shape) + EPS) + stats.mean.reshape(shape)
    x[..., 4:] = np.expm1(x[..., 4:])
    return x
