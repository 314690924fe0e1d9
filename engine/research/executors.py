"""Where independent work units run: in this process, in a local process pool, or on Dask.

Every executor has one method, ``map(fn, items, progress=None) -> list[Result]``: ``fn(item)``
for every item, results in the order of ``items``. A unit that raises is reported as a
``Result`` with its error text and the other units still run; nothing is raised for it.

``fn`` must be a module-level function and ``items`` small picklable values (a sweep sends a
``RunConfig`` dict whose inputs are file paths, never loaded frames), so the same call works
in a spawned process or on a remote Dask worker. ``progress`` is called ``(done, total)`` as
units finish (a :class:`tradeloop.engine.telemetry.progress.LazyProgress` fits).

Dask is optional: it is imported only when the dask executor is built
(``pip install "dask[distributed]>=2024.1"``, part of the ``test`` extra).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tradeloop.errors import ConfigError

EXECUTORS = ("serial", "process", "dask")
Progress = Callable[[int, int], None]

DASK_MISSING = ("the dask executor needs dask.distributed, which is not installed: "
                "pip install \"dask[distributed]>=2024.1\" (or pip install -e \".[test]\")")


@dataclass
class Result:
    """The outcome of one unit: ``value`` when it ran, ``error`` (``Type: message``) when it failed."""

    index: int
    value: Any = None
    error: str | None = None
    detail: str | None = None  # the traceback, when there is one

    @property
    def ok(self) -> bool:
        return self.error is None


def _error_text(e: BaseException) -> str:
    """``Type: message`` on one line; a user error (ConfigError, StrategyError) is its message alone."""
    text = " ".join(str(e).split())
    if isinstance(e, ConfigError) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def call_unit(fn: Callable[[Any], Any], index: int, item: Any) -> Result:
    """Run one unit, turning an exception into a failed ``Result`` (runs where the unit runs)."""
    try:
        return Result(index, fn(item))
    except Exception as e:  # noqa: BLE001 - a unit's failure is data, not a crash of the sweep
        return Result(index, error=_error_text(e), detail=traceback.format_exc())


class Executor:
    """Base class: ``map`` plus a context manager that releases what the executor holds."""

    name = "executor"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any],
            progress: Progress | None = None) -> list[Result]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


class SerialExecutor(Executor):
    """One unit after another in this process (debugging, tiny sweeps)."""

    name = "serial"

    def map(self, fn, items, progress=None):
        out = []
        for i, item in enumerate(items):
            out.append(call_unit(fn, i, item))
            _tick(progress, i + 1, len(items))
        return out


def _quiet_worker() -> None:
    """Pool initializer: a worker logs warnings and errors only (not one line per backtest)."""
    from tradeloop.engine.telemetry.logs import configure
    configure(level="warning")


class ProcessExecutor(Executor):
    """A local ``ProcessPoolExecutor`` with the ``spawn`` start method (no forked thread pools).

    ``workers`` defaults to the number of CPUs. A worker process that dies fails only the
    units that were lost with it; they are reported as errors.
    """

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, int(workers or os.cpu_count() or 1))

    def map(self, fn, items, progress=None):
        total = len(items)
        if not total:
            return []
        results: list[Result | None] = [None] * total
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, total), mp_context=ctx,
                                 initializer=_quiet_worker) as pool:
            futures = {pool.submit(call_unit, fn, i, item): i for i, item in enumerate(items)}
            for done, fut in enumerate(as_completed(futures), 1):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as e:  # noqa: BLE001 - e.g. BrokenProcessPool: the unit is lost
                    results[i] = Result(i, error=_error_text(e))
                _tick(progress, done, total)
        return results  # type: ignore[return-value]


class DaskExecutor(Executor):
    """Dask distributed: connect to ``address`` (``tcp://host:8786``), or start a LocalCluster.

    A LocalCluster started here (``workers`` workers of one thread each; ``processes=False``
    keeps them as threads of this process) is closed by :meth:`close`. Workers of a remote
    scheduler need tradeloop installed and the input files at the same paths.
    """

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None, processes: bool = True) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(DASK_MISSING) from None
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise ConfigError(f"--address {address}: cannot connect to a Dask scheduler: {e}") from None
        else:
            n = max(1, int(workers or os.cpu_count() or 1))
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            if processes:
                self.client.run(_quiet_worker)  # workers of our own cluster: no log line per backtest

    def map(self, fn, items, progress=None):
        from dask.distributed import as_completed as dask_completed
        total = len(items)
        if not total:
            return []
        results: list[Result | None] = [None] * total
        futures = self.client.map(call_unit, [fn] * total, range(total), list(items), pure=False)
        index = {fut.key: i for i, fut in enumerate(futures)}
        for done, fut in enumerate(dask_completed(futures), 1):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker: the unit is lost
                results[i] = Result(i, error=_error_text(e))
            _tick(progress, done, total)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def make_executor(name: str = "process", *, workers: int | None = None, address: str | None = None,
                  processes: bool = True) -> Executor:
    """The executor called ``name`` (serial, process, dask); ``address`` only with dask."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    if address and name != "dask":
        raise ConfigError(f"--address {address}: only the dask executor connects to a scheduler")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: expected a number >= 1")
    if name == "serial":
        return SerialExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    return DaskExecutor(address, workers, processes)


def run_units(fn: Callable[[Any], Any], items: Sequence[Any], executor: Executor | str, *, label: str,
              workers: int | None = None, address: str | None = None, progress: bool | None = None) -> list[Result]:
    """``fn`` over ``items`` on ``executor`` (a name starts one, closed afterwards; an instance is left open)."""
    from tradeloop.engine.telemetry.progress import LazyProgress
    owned = isinstance(executor, str)
    ex = make_executor(executor, workers=workers, address=address) if owned else executor
    try:
        with LazyProgress(label, enabled=progress) as bar:
            return ex.map(fn, items, progress=bar)
    finally:
        if owned:
            ex.close()
