"""Health monitor: rolling p99 latency and live accuracy of the active model, with fallback.

Every prediction goes through ``HealthMonitor.predict``, which times it; resolved outcomes
(what the model said vs what happened) come in through ``record_outcomes``. When the rolling
p99 latency exceeds its limit, or the rolling accuracy falls below its limit (each only once
its window holds enough samples), the monitor switches to the backup model and records a
``HealthEvent`` saying which limit, by how much, from which version to which. A breach with no
backup left is recorded once and the active model kept.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tradeloop.models.errors import ModelError


@dataclass(frozen=True)
class HealthLimits:
    """Limits and the rolling windows they are measured over."""

    p99_ms: float = 5.0
    min_accuracy: float = 0.0
    latency_window: int = 500
    min_latency_samples: int = 50
    accuracy_window: int = 500
    min_accuracy_samples: int = 100

    def __post_init__(self) -> None:
        if not self.p99_ms > 0:
            raise ModelError(f"health limits: p99_ms must be > 0, got {self.p99_ms!r}")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ModelError(f"health limits: min_accuracy must lie in [0, 1], got {self.min_accuracy!r}")
        for name in ("latency_window", "min_latency_samples", "accuracy_window", "min_accuracy_samples"):
            if getattr(self, name) < 1:
                raise ModelError(f"health limits: {name} must be >= 1")


@dataclass(frozen=True)
class HealthEvent:
    """One breach: which metric, its value and limit, and the switch it caused (to None: no backup)."""

    metric: str
    value: float
    limit: float
    from_model: str
    to_model: str | None
    ts: int | None = None
    wall_time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        what = f"switched {self.from_model} -> {self.to_model}" if self.to_model else \
            f"kept {self.from_model} (no backup left)"
        return f"{self.metric} {self.value:.4g} breached limit {self.limit:.4g}: {what}"


class HealthMonitor:
    """Wraps a primary model and an optional backup; ``predict`` is timed, outcomes scored."""

    def __init__(self, primary: Any, backup: Any = None, limits: HealthLimits | None = None, *,
                 clock: Callable[[], float] = time.perf_counter,
                 on_switch: Callable[[HealthEvent], None] | None = None, check_every: int = 1) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, not {check_every!r}")
        self.limits = limits or HealthLimits()
        self.check_every = check_every   # calls between two checks of the latency limit (the p99 costs ~90 us)
        self._calls = 0
        self.active = primary
        self._backups = [backup] if backup is not None else []
        self._clock = clock
        self._on_switch = on_switch
        self.events: list[HealthEvent] = []
        self._lat: deque[float] = deque(maxlen=self.limits.latency_window)
        self._hits: deque[bool] = deque(maxlen=self.limits.accuracy_window)
        self._reported: set[str] = set()

    # -- what the predictor calls ----------------------------------------------------------
    @property
    def models(self) -> list[Any]:
        """The active model and the backups it may switch to."""
        return [self.active, *self._backups]

    @property
    def spec(self) -> Any:
        """The active model's feature spec."""
        return self.active.spec

    def predict(self, windows: np.ndarray, ts: int | None = None) -> np.ndarray:
        """The active model's logits; the call's latency is recorded and the limits checked."""
        return self._timed(self.active.predict, windows, ts)

    @property
    def on_device(self) -> bool:
        """True when the active model takes windows already on its device."""
        return bool(getattr(self.active, "on_device", False))

    def predict_device(self, windows: Any, ts: int | None = None) -> np.ndarray:
        """``predict`` for windows already on the active model's device."""
        return self._timed(self.active.predict_device, windows, ts)

    def _timed(self, fn: Callable[[Any], np.ndarray], windows: Any, ts: int | None) -> np.ndarray:
        t = self._clock()
        out = fn(windows)
        self._lat.append((self._clock() - t) * 1000.0)
        self._calls += 1
        if self._calls % self.check_every == 0:
            self._check(ts)
        return out

    def record_outcomes(self, predicted: Any, actual: Any, ts: int | None = None) -> None:
        """Score resolved predictions (class ids) against what happened; check the limits."""
        p, a = np.asarray(predicted).ravel(), np.asarray(actual).ravel()
        if p.shape != a.shape:
            raise ModelError(f"record_outcomes: {p.size} predictions vs {a.size} outcomes")
        self._hits.extend((p == a).tolist())
        self._check(ts)

    # -- state -----------------------------------------------------------------------------
    @property
    def p99_ms(self) -> float:
        """Rolling p99 latency in ms (NaN before any call)."""
        return float(np.percentile(self._lat, 99)) if self._lat else float("nan")

    @property
    def accuracy(self) -> float:
        """Rolling live accuracy (NaN before any outcome)."""
        return float(np.mean(self._hits)) if self._hits else float("nan")

    def _check(self, ts: int | None) -> None:
        lim = self.limits
        if len(self._lat) >= lim.min_latency_samples and self.p99_ms > lim.p99_ms:
            self._breach("p99_latency_ms", self.p99_ms, lim.p99_ms, ts)
        elif len(self._hits) >= lim.min_accuracy_samples and self.accuracy < lim.min_accuracy:
            self._breach("live_accuracy", self.accuracy, lim.min_accuracy, ts)

    def _breach(self, metric: str, value: float, limit: float, ts: int | None) -> None:
        name = str(self.active)
        if self._backups:
            nxt = self._backups.pop(0)
            event = HealthEvent(metric, value, limit, name, str(nxt), ts)
            self.active = nxt
            self._lat.clear()
            self._hits.clear()
            self._reported.clear()
        elif metric not in self._reported:
            self._reported.add(metric)
            event = HealthEvent(metric, value, limit, name, None, ts)
        else:
            return
        self.events.append(event)
        if self._on_switch is not None:
            self._on_switch(event)

    def __str__(self) -> str:
        return f"HealthMonitor({self.active})"
