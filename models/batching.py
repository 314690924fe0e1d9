"""Run a model over many windows on several threads: the backtest (precompute) path.

ONNX Runtime's ``run`` and torch's kernels release the GIL, so worker threads that each run one
task of windows at a time, every runtime keeping one intra-op thread, use that many cores. This
is for batch work only (backtests, research): live inference stays one call on one thread,
where two busy threads made p99 latency jump (../shared/DEPENDENCIES.md).
"""
from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``workers`` as a thread count: None means every available core."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"batch workers must be an integer >= 1 or None (all cores), got {workers!r}")
    return workers


def run_tasks(fn: Callable[[T], None], tasks: Iterable[T], workers: int | None = 1) -> None:
    """Call ``fn`` on every task, on ``workers`` threads (inline for one); the first error is raised.

    ``tasks`` may be a generator: the worker threads start on its first tasks while this thread
    produces the rest (the predictor's precompute computes features series by series meanwhile).
    Each task runs in a copy of the caller's context, so its log events carry the caller's bound
    context and reach the caller's run event file (``tradeloop.engine.telemetry.logs``)."""
    n = resolve_workers(workers)
    if n == 1:
        for t in tasks:
            fn(t)
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tradeloop-batch") as pool:
        parent = contextvars.copy_context()
        for _ in pool.map(lambda t: parent.copy().run(fn, t), tasks):
            pass


def precomputed_rows(pre: Mapping[str, Any], rows: Mapping[str, int], symbols: Iterable[str]) -> dict[str, Any]:
    """Each symbol's precomputed output row at its current row (a backtest step's lookup); symbols with no
    row yet, or a NaN row (no full window), are left out."""
    out = {}
    for s in symbols:
        p = pre.get(s)
        r = rows.get(s, -1)
        if p is not None and 0 <= r < len(p) and p[r, 0] == p[r, 0]:
            out[s] = p[r]
    return out
