"""The remote predictor: a registry model answered by a prediction server, inside the engine's Predictor.

:class:`RemoteModel` has the interface of a loaded registry model (``ref``, ``info``, ``spec``,
``kind``, ``runtime``, ``on_device``, ``predict(windows)``), so ``Predictor`` and
``HealthMonitor`` run unchanged and the engine's code path is the same for local and remote
models: features are computed here, windows go to the server, outputs come back. Requests are
sent ``exact`` (see protocol.Request), so the outputs equal the local runtime's bit for bit.

When the server is slow (no answer within ``timeout_ms``), unreachable, or says it cannot serve,
the stated policy applies:

- ``on_failure="local"``: the same registry version, loaded here at start, answers instead;
- ``on_failure="halt"``: ``predict`` raises :class:`RemoteUnavailable`; the engine then gives the
  strategy no predictions for that timestamp and :class:`EntryHalt` (a check of the run's risk
  pipeline) refuses new entries until the server answers again.

Either way the first failure of an outage and the recovery are reported through ``on_event``
(the engine records them as ``model_server`` risk events: logged, in the run's risk events and
report) and logged here. While the server is down it is tried again at most every ``retry_s``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from tradeloop.brokers.orders import Order
from tradeloop.models.errors import ModelError
from tradeloop.models.serve.client import ServeClient, ServerUnavailable, parse_endpoint
from tradeloop.risk.pipeline import BatchState, Verdict

POLICIES = ("local", "halt")


class RemoteUnavailable(ModelError):
    """The prediction server did not answer and the policy is ``halt``."""


@dataclass(frozen=True)
class RemoteRuntime:
    """What ``runtime_detail`` and the run manifest see of a remote model."""

    name: str
    device: str
    threads: int = 0


@dataclass(frozen=True)
class OutageEvent:
    """A change of the remote model's state: ``fallback``/``halt`` (server lost) or ``resume``."""

    action: str
    reason: str
    endpoint: str
    model: str


class RemoteModel:
    """A registry version served by a prediction server (module docs)."""

    def __init__(self, info: Any, endpoint: str, *, timeout_ms: float = 100.0, on_failure: str = "local",
                 local: Any = None, on_event: Callable[[OutageEvent], None] | None = None, retry_s: float = 1.0,
                 runtime: str = "onnx-cpu", log: Any = None) -> None:
        if on_failure not in POLICIES:
            raise ModelError(f"on_failure must be one of {', '.join(POLICIES)}, got {on_failure!r}")
        if not timeout_ms > 0:
            raise ModelError(f"timeout_ms must be > 0, got {timeout_ms!r}")
        if on_failure == "local" and local is None:
            raise ModelError("on_failure='local' needs the local copy of the model")
        parse_endpoint(endpoint)
        self.info = info
        self.endpoint = endpoint
        self.timeout_ms = float(timeout_ms)
        self.on_failure = on_failure
        self.local = local
        self.on_event = on_event
        self.retry_s = retry_s
        self.runtime = RemoteRuntime(f"remote:{runtime}", endpoint)
        self.log = log or structlog.get_logger("tradeloop.models.remote")
        self.client = ServeClient(endpoint, timeout_s=self.timeout_ms / 1e3)
        self.down = False
        self._retry_at = 0.0
        # what the run manifest shows, kept up to date: windows per version that answered, outages,
        # windows the local copy answered during them
        self.stats: dict[str, Any] = {"versions": {}, "outages": 0, "local_windows": 0}
        self.kind = getattr(local, "kind", None) or info.metadata.get("kind", "classifier")
        outputs = getattr(local, "outputs", None) or info.metadata.get("outputs")
        if outputs is not None:
            self.outputs = tuple(outputs)
        if self.kind == "forecaster":   # bars ahead the outputs forecast (the ForecastPredictor scores at it)
            self.horizon = int(getattr(local, "horizon", None) or info.metadata["forecast"]["horizon"])

    @property
    def ref(self) -> Any:
        """The registry version asked for."""
        return self.info.ref

    @property
    def spec(self) -> Any:
        """Its feature spec (read from the local registry)."""
        return self.info.spec

    on_device = False

    def predict(self, windows: Any) -> np.ndarray:
        """The server's outputs for ``windows`` (or the policy's, when it does not answer)."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self.down and time.monotonic() < self._retry_at:
            return self._without_server(x, None)
        try:
            r = self.client.predict(self.ref.name, x, exact=True)
        except ServerUnavailable as e:
            return self._without_server(x, str(e))
        if self.down:
            self.down = False
            self._event("resume", f"{self.endpoint} answers again")
        versions = self.stats["versions"]
        versions[r.version] = versions.get(r.version, 0) + len(x)
        if r.version != self.ref.version and versions[r.version] == len(x):
            self.log.warning("remote_model_version", asked=str(self.ref), served=r.version, endpoint=self.endpoint)
        return r.outputs

    def _without_server(self, x: np.ndarray, why: str | None) -> np.ndarray:
        if why is not None:
            self._retry_at = time.monotonic() + self.retry_s
            if not self.down:
                self.down = True
                self.stats["outages"] += 1
                what = "the local copy answers" if self.on_failure == "local" else "new entries are halted"
                self._event("fallback" if self.on_failure == "local" else "halt",
                            f"{self.ref} at {self.endpoint}: {why}; {what} until it answers again")
        if self.on_failure == "local":
            self.stats["local_windows"] += len(x)
            return self.local.predict(x)
        raise RemoteUnavailable(f"prediction server {self.endpoint} is unavailable (policy halt)")

    def _event(self, action: str, reason: str) -> None:
        (self.log.warning if action != "resume" else self.log.info)(
            "remote_model_" + action, model=str(self.ref), endpoint=self.endpoint, reason=reason)
        if self.on_event is not None:
            self.on_event(OutageEvent(action, reason, self.endpoint, str(self.ref)))

    def close(self) -> None:
        """Drop the connection."""
        self.client.close()

    def __str__(self) -> str:
        return f"{self.ref} (remote {self.endpoint})"


@dataclass
class EntryHalt:
    """A risk check: while the prediction server is lost (policy ``halt``), refuse orders that would
    increase the projected |position| of their symbol; exits still pass."""

    name: str = "model_server"
    halted: bool = False
    why: str = field(default="")

    def reset(self, pipeline: Any) -> None:
        self.halted, self.why = False, ""

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if not self.halted:
            return None
        p = state.projected(order.symbol)
        if abs(p + order.signed_qty) > abs(p) + 1e-9:
            return Verdict("reject", f"model server unavailable: no new entries until it answers ({self.why})")
        return None


def open_remote_predictor(registry: Any, model: str, symbols: Iterable[str], *, endpoint: str,
                          timeout_ms: float = 100.0, on_failure: str = "local", runtime: str = "onnx-cpu",
                          backup: str | None = None, limits: Any = None, threads: int = 1,
                          batch_workers: int | None = 1, on_switch: Any = None,
                          on_event: Callable[[OutageEvent], None] | None = None) -> Any:
    """``open_predictor`` with the model answered by the server at ``endpoint``.

    The version is resolved in the local registry (its features, lookback, label); with
    ``on_failure="local"`` it is also loaded here in ``runtime``, ready to answer. ``backup`` (a
    version loaded here) is what the health monitor switches to when the remote model breaches
    its limits."""
    from tradeloop.models.features import N_FEATURES
    from tradeloop.models.health import HealthLimits, HealthMonitor
    from tradeloop.models.predictor import Predictor
    from tradeloop.models.registry import Registry

    from tradeloop.models.serve.slots import runtime_for

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    info = reg.info(model)
    runtime = runtime_for(info, runtime)     # a forecaster: torch-cuda / torch-cpu
    local = reg.load(info.ref, runtime, threads=threads) if on_failure == "local" else None
    remote = RemoteModel(info, endpoint, timeout_ms=timeout_ms, on_failure=on_failure, local=local,
                         on_event=on_event, runtime=runtime)
    spare = reg.load(backup, runtime, spec=remote.spec, lookback=remote.spec.lookback, threads=threads) \
        if backup else None
    if getattr(remote.spec, "kind", "bars") == "ticks":
        raise ModelError(f"{info.ref}: tick models are not served remotely yet; drop endpoint= to run it here")
    label = info.metadata.get("label", {})
    monitor = HealthMonitor(remote, spare, limits or HealthLimits(), on_switch=on_switch)
    if remote.kind == "forecaster":   # a K-line forecaster: forecasts instead of class probabilities
        from tradeloop.models.kline.loop import open_forecast_predictor

        return open_forecast_predictor(monitor, sorted(symbols), batch_workers=batch_workers)
    if remote.spec.n_features != N_FEATURES:
        raise ModelError(f"{info.ref}: takes {remote.spec.n_features} features, the predictor gives {N_FEATURES}")
    return Predictor(monitor, sorted(symbols), remote.spec, horizon=label.get("horizon"),
                     threshold=float(label.get("threshold", 0.0)), batch_workers=batch_workers)
