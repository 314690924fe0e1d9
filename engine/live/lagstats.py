"""Tick-to-processing lag of a live session in bounded memory.

A runner fed 10,000 ticks a second for a trading day sees ~230 million ticks: keeping every lag
(as the first version did) grows by gigabytes. This keeps a histogram with 1% wide logarithmic
bins from 1 us to 100 s for the session's percentiles (each within 1% of the exact value; the
maximum is exact) and the exact p99 of each second's ticks, one number per second.
"""
from __future__ import annotations

import math

import numpy as np

LO_NS = 1_000                 # lags at or below 1 us share the first bin (as do negative ones: clock skew)
HI_NS = 100_000_000_000       # 100 s; longer lags share the last bin (the maximum stays exact)
REL = 0.01                    # relative bin width
_LOG_STEP = math.log1p(REL)
N_BINS = math.ceil(math.log(HI_NS / LO_NS) / _LOG_STEP) + 1
NS_PER_SECOND = 1_000_000_000


class LagStats:
    """Lags (ns) of ticks by their timestamps: ``add`` per tick, ``summary`` at the end."""

    def __init__(self) -> None:
        self.hist = [0] * N_BINS   # a list: one increment per tick is cheaper than on a numpy array
        self.count = 0
        self.max_ns: int | None = None
        self.p99_by_second: list[float] = []   # ms, one per second of tick time that had ticks
        self._first_ts: int | None = None
        self._second = -1
        self._current: list[int] = []

    def add(self, lag_ns: int, ts: int) -> None:
        """One tick stamped ``ts`` (ns) processed ``lag_ns`` after its stamp."""
        self.hist[0 if lag_ns <= LO_NS else min(int(math.log(lag_ns / LO_NS) / _LOG_STEP) + 1, N_BINS - 1)] += 1
        self.count += 1
        if self.max_ns is None or lag_ns > self.max_ns:
            self.max_ns = lag_ns
        if self._first_ts is None:
            self._first_ts = ts
        second = (ts - self._first_ts) // NS_PER_SECOND
        if second > self._second:   # a late tick of an earlier second counts in the current one
            self._close_second()
            self._second = second
        self._current.append(lag_ns)

    def _close_second(self) -> None:
        if self._current:
            self.p99_by_second.append(round(float(np.percentile(np.asarray(self._current) / 1e6, 99)), 3))
            self._current = []

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) in ms, as the upper edge of its bin (within 1%)."""
        if not self.count:
            raise ValueError("no lags recorded")
        if q >= 100:
            return self.max_ns / 1e6
        rank = max(1, math.ceil(q / 100 * self.count))
        i = int(np.searchsorted(np.cumsum(np.asarray(self.hist, dtype=np.int64)), rank))
        edge = LO_NS * math.exp(_LOG_STEP * i)
        return min(edge, self.max_ns) / 1e6

    def summary(self) -> dict | None:
        """``tick_lag_ms`` (p50, p99, max) and ``tick_lag_p99_ms_by_second``, or None without ticks."""
        if not self.count:
            return None
        self._close_second()
        return {"tick_lag_ms": {"p50": round(self.percentile_ms(50), 3), "p99": round(self.percentile_ms(99), 3),
                                "max": round(self.max_ns / 1e6, 3)},
                "tick_lag_p99_ms_by_second": list(self.p99_by_second)}
