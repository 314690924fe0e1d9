"""The prediction server: registry models behind a binary TCP protocol and an HTTP/JSON form.

``PredictionServer(config)`` listens first (so liveness answers at once), then loads and warms
every model in a loader thread (readiness: ``ready`` once all are in service; requests before
that get a ``not_ready`` failure). Each model has a :class:`DynamicBatcher`. The TCP side speaks
``protocol.py``; the HTTP side (``http.py``, Litestar on uvicorn) shares the batchers, metrics and
admin operations (hot swap to a registry version, rollback).

A hostile or broken peer can cost the server one connection, never the process: frames are
bounded (``max_frame`` bytes, ``max_request_windows`` windows) before anything is allocated, a
frame's bytes must all arrive within ``read_timeout_s`` of its first (slowloris), an idle
connection is closed after ``idle_timeout_s``, each connection has at most ``max_inflight``
requests in progress, a peer that does not read its replies is dropped after ``write_timeout_s``,
connections beyond ``max_connections`` are closed on accept (``connection.py``), and every
request's failure is contained to a :class:`Failure` frame.

Weights stay resident where the runtime keeps them: on the GPU for ``torch-cuda``/``tensorrt``
(CUDA available), in memory for the CPU runtimes. Logs go through structlog.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from tradeloop.models.errors import ModelError
from tradeloop.models.health import HealthLimits
from tradeloop.models.registry import Registry, parse_ref
from tradeloop.models.serve import protocol as P
from tradeloop.models.serve.batcher import Answer, DynamicBatcher, Overloaded
from tradeloop.models.serve.metrics import ModelMetrics, render
from tradeloop.models.serve.slots import ModelSlot, load_version

@dataclass(frozen=True)
class ServeConfig:
    """Everything ``tradeloop serve`` takes (docs/serving.md)."""

    registry: str
    models: tuple[str, ...]
    backups: dict[str, str] = field(default_factory=dict)   # model name -> backup NAME@VERSION
    host: str = "127.0.0.1"
    port: int = 0
    http_host: str | None = None
    http_port: int = 0
    runtime: str = "onnx-cpu"
    threads: int = 1
    max_batch: int = 64
    max_delay_us: int = 500
    batching: bool = True
    p99_ms: float = 1e9          # health limit of one batch call (the backup takes over beyond it)
    max_frame: int = P.DEFAULT_MAX_FRAME
    max_request_windows: int = 4096
    read_timeout_s: float = 5.0
    header_timeout_s: float = 5.0   # an HTTP request line + headers must arrive within this (head_deadline.py)
    idle_timeout_s: float = 600.0
    write_timeout_s: float = 5.0
    max_connections: int = 512
    max_inflight: int = 64

    def __post_init__(self) -> None:
        if not self.models:
            raise ModelError("serve: name at least one model (--model NAME@latest)")
        names = [parse_ref(m)[0] for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ModelError(f"serve: model {dup[0]!r} named twice; serve one version per name (swap to change it)")
        for name in self.backups:
            if name not in names:
                raise ModelError(f"serve: backup given for {name!r}, which is not served ({', '.join(names)})")
        for key in ("max_batch", "max_frame", "max_request_windows", "max_connections", "max_inflight", "threads"):
            if int(getattr(self, key)) < 1:
                raise ModelError(f"serve: {key} must be >= 1, got {getattr(self, key)!r}")
        if self.max_delay_us < 0:
            raise ModelError(f"serve: max_delay_us must be >= 0, got {self.max_delay_us!r}")
        for key in ("read_timeout_s", "header_timeout_s", "idle_timeout_s", "write_timeout_s", "p99_ms"):
            if not float(getattr(self, key)) > 0:
                raise ModelError(f"serve: {key} must be > 0, got {getattr(self, key)!r}")


class PredictionServer:
    """Serves the configured registry models (module docs). ``await start()``, ``await load()``,
    ``await close()``; ``run()`` does all three and waits for a stop signal."""

    def __init__(self, config: ServeConfig, *, log: Any = None) -> None:
        self.config = config
        self.registry = Registry(config.registry)
        self.log = log or structlog.get_logger("tradeloop.serve")
        self.slots: dict[str, ModelSlot] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self.metrics: dict[str, ModelMetrics] = {}
        self.ready = False
        self.connections = 0
        self.rejected = 0
        self.http_clients = 0       # HTTP predict requests in progress (count as clients for batching)
        self.port: int | None = None
        self.http_port: int | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._http: Any = None
        self._http_task: asyncio.Task | None = None
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradeloop-serve-load")
        self._admin_lock: asyncio.Lock | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on the TCP (and HTTP) ports; models are not loaded yet (not ready)."""
        c = self.config
        self._admin_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        from tradeloop.models.serve.connection import Connection

        self._tcp = await asyncio.get_running_loop().create_server(lambda: Connection(self), c.host, c.port)
        self.port = self._tcp.sockets[0].getsockname()[1]
        if c.http_host is not None:
            from tradeloop.models.serve.http import start_http

            self._http, self._http_task, self.http_port = await start_http(self, c.http_host, c.http_port)
        self.log.info("serve_listening", tcp=f"{c.host}:{self.port}",
                      http=f"{c.http_host}:{self.http_port}" if c.http_host is not None else None)

    async def load(self) -> None:
        """Load and warm every model (in the loader thread), start their batchers; then ready."""
        c = self.config
        loop = asyncio.get_running_loop()
        limits = HealthLimits(p99_ms=c.p99_ms)
        for ref in c.models:
            name = parse_ref(ref)[0]
            t = time.perf_counter()
            monitor = await loop.run_in_executor(self._loader, lambda r=ref, n=name: load_version(
                self.registry, r, c.runtime, backup=c.backups.get(n), limits=limits, threads=c.threads,
                max_batch=c.max_batch))
            slot = ModelSlot(name, ref, monitor, c.backups.get(name))
            metrics = ModelMetrics(version=slot.version)
            batcher = DynamicBatcher(slot, metrics, max_batch=c.max_batch, max_delay_s=c.max_delay_us / 1e6,
                                     enabled=c.batching, clients=self._clients, log=self.log)
            self.slots[name], self.metrics[name], self.batchers[name] = slot, metrics, batcher
            rt = monitor.active.runtime
            self.log.info("serve_model_loaded", model=name, version=slot.version, backup=slot.backup,
                          runtime=getattr(rt, "name", c.runtime), device=str(getattr(rt, "device", "cpu")),
                          seconds=round(time.perf_counter() - t, 3))
        self.ready = True
        self.log.info("serve_ready", models=sorted(self.slots))

    async def close(self) -> None:
        """Stop listening, end the batchers and the worker threads."""
        self.ready = False
        if self._tcp is not None:
            self._tcp.close()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                await self._http_task
        for b in self.batchers.values():
            await b.close()
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self._tcp is not None:
            try:
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    def stop(self) -> None:
        """Ask ``run`` to return (signal handlers call this)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self, on_listening: Any = None) -> None:
        """Start, load, serve until ``stop`` (SIGINT/SIGTERM), close."""
        import signal

        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        if on_listening is not None:
            on_listening(self)
        try:
            loader = asyncio.ensure_future(self.load())
            stopper = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait({loader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if loader in done:
                loader.result()          # a model that cannot load: the error propagates (exit 2 on the CLI)
                await stopper
            else:
                loader.cancel()
        finally:
            await self.close()

    def _clients(self) -> int:
        return self.connections + self.http_clients

    # -- requests (shared by TCP and HTTP) -------------------------------------------------
    async def predict(self, name: str, windows: Any, exact: bool = False) -> Answer:
        """Outputs of model ``name`` for ``windows`` (a ProtocolError for every failure)."""
        batcher = self._batcher(name)
        try:
            return await batcher.predict(windows, exact)
        except Overloaded as e:
            raise P.ProtocolError(P.OVERLOADED, str(e)) from None
        except Exception as e:  # the model's own failure: contained to this request
            raise P.ProtocolError(P.INTERNAL, f"model call failed: {type(e).__name__}: {e}") from None

    def _batcher(self, name: str) -> DynamicBatcher:
        batcher = self.batchers.get(name)
        if batcher is None:
            if not self.ready:
                raise P.ProtocolError(P.NOT_READY, "models are still loading")
            raise P.ProtocolError(P.UNKNOWN_MODEL, f"no model {name!r} is served here "
                                                   f"(served: {', '.join(sorted(self.slots)) or 'none'})")
        return batcher

    def check_windows(self, name: str, header: P.Request, payload: memoryview) -> np.ndarray:
        """The request's payload as windows of model ``name`` (ProtocolError if they do not fit)."""
        slot = self.slots.get(name)
        if slot is None:
            raise P.ProtocolError(P.NOT_READY if not self.ready else P.UNKNOWN_MODEL,
                                  "models are still loading" if not self.ready else
                                  f"no model {name!r} is served here (served: {', '.join(sorted(self.slots))})")
        return P.payload_array(header, payload, slot.shape, self.config.max_request_windows)

    def count_error(self, name: str, code: str) -> None:
        m = self.metrics.get(name)
        if m is not None:
            m.error(code)

    def metrics_text(self) -> str:
        """The Prometheus exposition of every model."""
        return render(self.metrics, ready=self.ready, connections=self.connections, rejected=self.rejected)

    def describe(self) -> dict[str, Any]:
        """What is served: per model the requested reference, version in service, backup, previous."""
        return {n: {"requested": s.requested, "version": s.version, "on_backup": s.on_backup,
                    "backup": s.backup, "previous": s.previous[0].active.ref.version if s.previous else None,
                    "input_shape": list(s.shape)} for n, s in sorted(self.slots.items())}

    # -- admin -----------------------------------------------------------------------------
    async def swap(self, name: str, version: str) -> tuple[str, str]:
        """Load ``name@version`` beside the one in service, warm it, switch between two batches."""
        slot = self._slot(name)
        c = self.config
        async with self._admin_lock:
            loop = asyncio.get_running_loop()
            ref = f"{name}@{version}"
            monitor = await loop.run_in_executor(self._loader, lambda: load_version(
                self.registry, ref, c.runtime, backup=slot.backup, limits=HealthLimits(p99_ms=c.p99_ms),
                threads=c.threads, max_batch=c.max_batch))
            old, new = slot.install(monitor)
        self._swapped(name, "swap", old, new)
        return old, new

    async def rollback(self, name: str) -> tuple[str, str]:
        """Put the version before the last swap back in service."""
        slot = self._slot(name)
        async with self._admin_lock:
            old, new = slot.rollback()
        self._swapped(name, "rollback", old, new)
        return old, new

    def _slot(self, name: str) -> ModelSlot:
        slot = self.slots.get(name)
        if slot is None:
            raise ModelError(f"no model {name!r} is served here (served: {', '.join(sorted(self.slots)) or 'none'})")
        return slot

    def _swapped(self, name: str, how: str, old: str, new: str) -> None:
        m = self.metrics[name]
        m.swaps += 1
        m.version = new
        m.backup_active = self.slots[name].on_backup
        self.log.info("serve_model_swapped", model=name, how=how, old=old, new=new)


def run_server(config: ServeConfig, on_listening: Any = None) -> None:
    """Run a server in this thread until SIGINT/SIGTERM (the ``tradeloop serve`` process)."""
    asyncio.run(PredictionServer(config).run(on_listening))

