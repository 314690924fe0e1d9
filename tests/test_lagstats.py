"""Specification of engine.lagstats: a live session's tick lag in bounded memory: session
percentiles within 1% of the exact ones, the exact maximum, and the exact p99 of each second."""
from __future__ import annotations

import numpy as np
import pytest

from tradeloop.engine.live.lagstats import N_BINS, LagStats

T0 = 1_700_000_000 * 10**9


def test_percentiles_are_within_one_percent_and_the_maximum_is_exact():
    rng = np.random.default_rng(7)
    lags = (rng.lognormal(mean=np.log(1e6), sigma=0.8, size=50_000)).astype(np.int64)   # ~1 ms
    stats = LagStats()
    for i, lag in enumerate(lags):
        stats.add(int(lag), T0 + i * 100_000)   # 10,000 ticks a second
    for q in (50, 90, 99, 99.9):
        exact = np.percentile(lags, q, method="inverted_cdf") / 1e6
        assert stats.percentile_ms(q) == pytest.approx(exact, rel=0.0101)
    summary = stats.summary()
    assert summary["tick_lag_ms"]["max"] == round(lags.max() / 1e6, 3)


def test_each_second_gets_its_exact_p99():
    stats = LagStats()
    per_second = [np.arange(1, 101) * 1_000, np.arange(1, 101) * 50_000]   # 1..100 us, then 50 us..5 ms
    for k, lags in enumerate(per_second):
        for j, lag in enumerate(lags):
            stats.add(int(lag), T0 + k * 10**9 + j * 1_000_000)
    got = stats.summary()["tick_lag_p99_ms_by_second"]
    assert got == [round(float(np.percentile(lags / 1e6, 99)), 3) for lags in per_second]


def test_memory_does_not_grow_with_the_number_of_ticks():
    stats = LagStats()
    for i in range(200_000):
        stats.add(500_000 + i % 1000, T0 + i * 10_000)   # 100,000 ticks a second for 2 s
    assert len(stats.hist) == N_BINS and len(stats._current) <= 100_000
    assert stats.count == 200_000 and len(stats.p99_by_second) == 1   # the second one closes at summary
    assert len(stats.summary()["tick_lag_p99_ms_by_second"]) == 2


def test_negative_and_huge_lags_land_in_the_end_bins_and_no_ticks_means_no_summary():
    stats = LagStats()
    assert stats.summary() is None
    stats.add(-5_000, T0)              # a tick stamped ahead of this clock (skew)
    stats.add(10**15, T0 + 1)          # 11 days late
    assert stats.hist[0] == 1 and stats.hist[-1] == 1
    assert stats.percentile_ms(50) == pytest.approx(0.001) and stats.summary()["tick_lag_ms"]["max"] == 1e9
