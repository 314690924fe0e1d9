"""The versions a served model name runs: loaded, warmed, health-monitored, swapped atomically.

A :class:`ModelSlot` holds one name's :class:`~tradeloop.models.health.HealthMonitor` (the version
in service and its backup, if any) and the one it replaced (for a rollback). Loading happens off
the event loop (``load_version``, in a loader thread): the new version is opened beside the old
one and run once at each power of two up to ``max_batch`` windows (and ``max_batch``), so its
first real calls build no kernels. The switch itself (``install``) is one assignment made on the event loop thread, which
is also where the batcher picks the monitor for each batch: a swap therefore always falls between
two batches, and every queued or running request is answered by one version or the other.

The server is generic over what ``Registry.load`` returns: anything with ``predict(windows) ->
array [n, k]`` and an ``info`` giving ``lookback`` and ``n_features`` (or an ``input_shape``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tradeloop.models.health import HealthLimits, HealthMonitor
from tradeloop.models.registry import Registry

WARM_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CHECK_EVERY = 16   # batch calls between two checks of the health limits


def input_shape(model: Any) -> tuple[int, ...]:
    """The shape of one input window of a loaded model (without the batch dimension)."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape)
    return (int(model.info.lookback), int(model.info.n_features))


def warm_up(model: Any, max_batch: int) -> int:
    """Run ``model`` once at each batch size up to ``max_batch`` (windows of ones: valid bars for a
    forecaster too), untimed; the calls made."""
    shape = input_shape(model)
    sizes = [b for b in WARM_SIZES if b <= max_batch] + ([max_batch] if max_batch not in WARM_SIZES else [])
    for b in sizes:
        model.predict(np.ones((b, *shape), np.float32))
    return len(sizes)


def runtime_for(info: Any, runtime: str) -> str:
    """The runtime a version is served in: ``runtime``, except for a forecaster when ``runtime`` is not
    one of its own (torch-cpu / torch-cuda): then torch-cuda where CUDA is available (weights on the
    GPU), else torch-cpu."""
    if getattr(info, "kind", "classifier") != "forecaster":
        return runtime
    own = ("torch-cpu", "torch-cuda")
    if runtime in own:
        return runtime
    from tradeloop.models.runtime import unavailable_reason

    return "torch-cuda" if unavailable_reason("torch-cuda") is None else "torch-cpu"


def load_version(registry: Registry, ref: str, runtime: str, *, backup: str | None, limits: HealthLimits,
                 threads: int, max_batch: int) -> HealthMonitor:
    """Open ``ref`` (and its ``backup``, which must take the same input) in ``runtime`` (``runtime_for``),
    warm both up, and wrap them in a health monitor (latency limits only: the server never sees outcomes)."""
    primary = registry.load(ref, runtime_for(registry.info(ref), runtime), threads=threads)
    spare = None
    if backup:
        spare = registry.load(backup, runtime_for(registry.info(backup), runtime), threads=threads)
        if input_shape(spare) != input_shape(primary):
            from tradeloop.models.errors import CompatibilityError

            raise CompatibilityError(f"backup {spare.ref} takes windows {list(input_shape(spare))}, "
                                     f"{primary.ref} takes {list(input_shape(primary))}")
    for m in (primary, spare):
        if m is not None:
            warm_up(m, max_batch)
    return HealthMonitor(primary, spare, limits, check_every=CHECK_EVERY)   # p99 every 16 calls: ~90 us each


@dataclass
class ModelSlot:
    """One served name: the monitor in service, the one before it, the input shape they take."""

    name: str
    requested: str
    monitor: HealthMonitor
    backup: str | None = None
    previous: tuple[HealthMonitor, Any] | None = None   # (monitor, its primary) before the last install
    shape: tuple[int, ...] = field(default=())
    primary: Any = None   # the monitor's primary model (its active one until a health switch)

    def __post_init__(self) -> None:
        self.shape = input_shape(self.monitor.active)
        self.primary = self.monitor.active

    @property
    def version(self) -> str:
        """The version now answering (the backup's, after a health switch)."""
        return self.monitor.active.ref.version

    @property
    def on_backup(self) -> bool:
        """True when the health monitor has switched to the backup version."""
        return self.monitor.active is not self.primary

    def install(self, monitor: HealthMonitor, primary: Any = None) -> tuple[str, str]:
        """Put ``monitor`` in service (call on the event loop thread); keep the old one for a rollback.
        Refuses a version whose input differs. Returns (old version, new version)."""
        if input_shape(monitor.active) != self.shape:
            from tradeloop.models.errors import CompatibilityError

            raise CompatibilityError(f"{monitor.active.ref} takes windows {list(input_shape(monitor.active))}, "
                                     f"{self.name} is served with {list(self.shape)}")
        old = self.version
        self.previous, self.monitor = (self.monitor, self.primary), monitor
        self.primary = primary if primary is not None else monitor.active
        return old, self.version

    def rollback(self) -> tuple[str, str]:
        """Put the monitor before the last ``install`` back in service; (old, new) versions."""
        if self.previous is None:
            from tradeloop.models.errors import ModelError

            raise ModelError(f"{self.name}: no earlier version to roll back to")
        return self.install(*self.previous)

    def run(self, monitor: HealthMonitor, windows: np.ndarray) -> tuple[np.ndarray, Any]:
        """One model call through ``monitor`` (in the slot's worker thread): outputs and the model
        that computed them (the monitor may switch to its backup after timing this call)."""
        used = monitor.active
        return np.asarray(monitor.predict(windows), dtype=np.float32), used

