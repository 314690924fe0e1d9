"""What the forecaster reads: a window of raw OHLCV + amount bars, declared and hashed like features.

``KlineSpec`` plays the part of a ``FeatureSpec`` for the registry and the predictor: its
``lookback`` is the context length, its 6 input columns are the raw bar fields (no features).
``bar_matrix`` turns a ``BarSeries`` into those columns; where a file has no amount column (US
files) the amount is volume x the bar's mean of O, H, L, C, as Kronos does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tradeloop.data.schema import BarSeries

from tradeloop.models.errors import FeatureError
from tradeloop.models.features import spec_hash

FIELDS = ("open", "high", "low", "close", "volume", "amount")
N_FIELDS = len(FIELDS)
CLOSE = FIELDS.index("close")
KLINE_VERSION = 1   # bump when normalisation or tokenisation arithmetic changes


@dataclass(frozen=True)
class KlineSpec:
    """Context length and input columns of a forecaster; ``kind`` "kline" tells the registry."""

    lookback: int = 64
    clip: float = 5.0
    version: int = KLINE_VERSION

    kind = "kline"   # class attribute, as FeatureSpec's "bars" and TickFeatureSpec's "ticks"

    def __post_init__(self) -> None:
        if isinstance(self.lookback, bool) or not isinstance(self.lookback, int) or self.lookback < 8:
            raise FeatureError(f"kline spec: lookback must be an integer >= 8, got {self.lookback!r}")
        if not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise FeatureError(f"kline spec: clip must be > 0, got {self.clip!r}")
        if self.version != KLINE_VERSION:
            raise FeatureError(f"kline spec version {self.version} is not this code's ({KLINE_VERSION})")

    @property
    def names(self) -> tuple[str, ...]:
        """The input columns, in order."""
        return FIELDS

    @property
    def n_features(self) -> int:
        """Input width (6)."""
        return N_FIELDS

    @property
    def min_bars(self) -> int:
        """Bars before the first full window."""
        return self.lookback

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with ``kind``)."""
        return {"kind": self.kind, "lookback": self.lookback, "clip": float(self.clip), "version": self.version,
                "fields": list(FIELDS)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KlineSpec:
        """Inverse of ``to_dict`` (FeatureError naming an unknown key)."""
        known = {k: v for k, v in d.items() if k not in ("kind", "fields", "names")}
        unknown = set(known) - {"lookback", "clip", "version"}
        if unknown:
            raise FeatureError(f"kline spec: unknown key(s) {', '.join(sorted(unknown))}")
        if list(d.get("fields", FIELDS)) != list(FIELDS):
            raise FeatureError(f"kline spec: fields {d.get('fields')!r} are not this code's {list(FIELDS)}")
        return cls(**known)

    @property
    def hash(self) -> str:
        """Stable hash of ``to_dict``."""
        return spec_hash(self.to_dict())


def bar_matrix(series: BarSeries) -> np.ndarray:
    """float64 [N, 6]: open, high, low, close, volume, amount of every bar (amount filled where absent)."""
    o, h, l, c, v = (np.asarray(getattr(series, f), np.float64) for f in FIELDS[:5])
    a = np.asarray(series.extra["amount"], np.float64) if "amount" in series.extra else np.full(len(c), np.nan)
    return fill_amount(np.stack([o, h, l, c, v, a], axis=1))


def fill_amount(bars: np.ndarray) -> np.ndarray:
    """``bars`` with a missing (NaN) amount replaced by volume x mean(O, H, L, C), in place; returned."""
    miss = ~np.isfinite(bars[..., 5])
    if miss.any():
        bars[..., 5] = np.where(miss, bars[..., 4] * bars[..., :4].mean(axis=-1), bars[..., 5])
    return bars


#: what a forecaster's ``predict`` returns per window, in column order: the mean simple return of the
#: close over the horizon across sample paths, its 10/50/90% quantiles, and the share of paths up
OUTPUTS = ("exp_return", "q10", "q50", "q90", "p_up")
