"""Dynamic batching per served model: requests that arrive close together run as one model call.

Requests queue on the event loop. When the model's worker is free, the first queued request
may wait up to ``max_delay`` (from its arrival) for others, until ``max_batch`` windows are
queued or every open client already has a request waiting (no one else can add to the batch, so
waiting would only add latency: a lone client is answered at once). The batch is concatenated
and run in the model's own worker thread (one, with one intra-op thread: the measured choice for
latency, ../shared/DEPENDENCIES.md), so the event loop is never blocked; while it runs, new
requests queue and form the next batch. The outputs are split back per request. With batching
off, every request is one model call. A one-window request marked ``exact`` runs in a call of
its own within the same worker job (see protocol.Request). The monitor (version) of each batch
is read on the loop thread when the batch is formed: hot swaps fall between batches.

The batcher is driven by callbacks, not a task: a request, a timer or a finished batch each
advance it at once, and each request's ``deliver`` is called with its Answer (or the exception)
on the loop thread as soon as its batch is back. The fewer event-loop turns per request, the
less the server adds to a lone client's latency (bench/serve_bench.py).
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from tradeloop.models.serve.metrics import ModelMetrics
from tradeloop.models.serve.slots import ModelSlot

MAX_QUEUE = 4096   # requests waiting per model before new ones are refused as overloaded


class Overloaded(RuntimeError):
    """The model's queue is full."""


@dataclass
class Answer:
    """What one request gets back: outputs and the version (and backup flag) that computed them."""

    outputs: np.ndarray
    version: str
    backup: bool


@dataclass
class _Pending:
    windows: np.ndarray
    exact: bool
    deliver: Callable[[Any], None]   # called once with an Answer or an exception
    arrived: float


class DynamicBatcher:
    """The queue of one model and its worker thread (see the module docs)."""

    def __init__(self, slot: ModelSlot, metrics: ModelMetrics, *, max_batch: int, max_delay_s: float,
                 enabled: bool, clients: Callable[[], int], log: Any = None) -> None:
        self.slot, self.metrics = slot, metrics
        self.max_batch, self.max_delay, self.enabled = max(1, int(max_batch)), max(0.0, max_delay_s), enabled
        self.clients = clients
        self.log = log or structlog.get_logger("tradeloop.serve")
        self.queue: deque[_Pending] = deque()
        self.queued_windows = 0
        self.busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()   # the worker's batches (None: stop)
        self._worker = threading.Thread(target=self._work_loop, name=f"tradeloop-serve-{slot.name}", daemon=True)
        self._worker.start()
        self._closed = False

    def _work_loop(self) -> None:
        """The model's worker thread: runs one batch job at a time (a plain queue: the cheapest hand-off)."""
        while (job := self._jobs.get()) is not None:
            job()

    async def close(self) -> None:
        """Stop: queued requests get a ConnectionAbortedError; the worker thread ends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self.queue:
            self.queue.popleft().deliver(ConnectionAbortedError("server shutting down"))
        self._jobs.put(None)
        await self._loop.run_in_executor(None, self._worker.join)

    def submit(self, windows: np.ndarray, exact: bool, deliver: Callable[[Any], None]) -> None:
        """Queue ``windows`` (checked by the caller); ``deliver(Answer | Exception)`` is called later."""
        if self._closed or len(self.queue) >= MAX_QUEUE:
            raise Overloaded(f"{self.slot.name}: {len(self.queue)} requests already queued")
        self.queue.append(_Pending(windows, exact and len(windows) == 1, deliver, self._loop.time()))
        self.queued_windows += len(windows)
        self.metrics.queue_depth = len(self.queue)
        self._advance()

    async def predict(self, windows: np.ndarray, exact: bool = False) -> Answer:
        """``submit`` as a coroutine."""
        fut = self._loop.create_future()

        def deliver(r: Any) -> None:
            if not fut.done():
                fut.set_exception(r) if isinstance(r, BaseException) else fut.set_result(r)

        self.submit(windows, exact, deliver)
        return await fut

    def _advance(self) -> None:
        """Dispatch the next batch now, or set the timer that will, or wait for the worker."""
        if self.busy or not self.queue or self._closed:
            return
        if self.enabled and self.max_delay > 0 and self.queued_windows < self.max_batch \
                and len(self.queue) < self.clients():
            due = self.queue[0].arrived + self.max_delay
            if self._loop.time() < due:
                if self._timer is None:
                    self._timer = self._loop.call_at(due, self._on_timer)
                return
        self._dispatch()

    def _on_timer(self) -> None:
        self._timer = None
        if not self.busy and self.queue and not self._closed:
            self._dispatch()

    def _take(self) -> list[_Pending]:
        """The next batch: at least one request, then more while they fit ``max_batch`` windows."""
        first = self.queue.popleft()
        batch, n = [first], len(first.windows)
        if self.enabled:
            while self.queue and n + len(self.queue[0].windows) <= self.max_batch:
                p = self.queue.popleft()
                batch.append(p)
                n += len(p.windows)
        self.queued_windows -= n
        self.metrics.queue_depth = len(self.queue)
        return batch

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take()
        slot = self.slot
        monitor, primary = slot.monitor, slot.primary   # read here, on the loop thread: swaps fall between batches
        before = monitor.active
        merged = [p for p in batch if not p.exact]
        alone = [p for p in batch if p.exact]
        loop = self._loop

        def work() -> None:
            try:
                out = []
                if merged:
                    x = merged[0].windows if len(merged) == 1 else np.concatenate([p.windows for p in merged])
                    out.append((merged, *slot.run(monitor, x)))
                for p in alone:
                    out.append(([p], *slot.run(monitor, p.windows)))
                result: Any = out
            except Exception as e:   # the model failed: every request of the batch gets the error
                result = e
            loop.call_soon_threadsafe(self._done, batch, monitor, primary, before, result)

        self.busy = True
        self._jobs.put(work)

    def _done(self, batch: list[_Pending], monitor: Any, primary: Any, before: Any, result: Any) -> None:
        self.busy = False
        try:
            if isinstance(result, Exception):
                self.log.error("serve_batch_failed", model=self.slot.name, error=f"{type(result).__name__}: {result}")
                for p in batch:
                    self._give(p, result)
                return
            for group, outputs, used in result:
                self.metrics.batch(len(outputs))
                version, backup = used.ref.version, used is not primary
                a = 0
                for p in group:
                    k = len(p.windows)
                    self._give(p, Answer(outputs[a:a + k], version, backup))
                    a += k
            if monitor.active is not before:   # the health monitor switched this slot to its backup
                self.metrics.switches += 1
                self.log.warning("serve_backup_switch", model=self.slot.name,
                                 health_event=str(monitor.events[-1]) if monitor.events else "")
            self.metrics.version = self.slot.version
            self.metrics.backup_active = self.slot.on_backup
        finally:
            self._advance()

    def _give(self, p: _Pending, result: Any) -> None:
        try:
            p.deliver(result)
        except Exception as e:   # one requester's failure (a dropped connection) never reaches the others
            self.log.error("serve_deliver_failed", model=self.slot.name, error=f"{type(e).__name__}: {e}")
