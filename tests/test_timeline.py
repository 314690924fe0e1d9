"""Merging several symbols' bars into one timeline: (timestamp, symbol) order, every bar once."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloop.data.schema import NS_PER_DAY, BarSeries
from tradeloop.engine.drivers.backtest import merge_timeline


def make(symbol: str, days: list[int]) -> BarSeries:
    ts = np.array(sorted(set(days)), dtype=np.int64) * NS_PER_DAY
    x = np.arange(len(ts), dtype=np.float64) + (ord(symbol[0]) * 1000)
    return BarSeries(symbol, ts, x, x + 1, x - 1, x, x)


def reference(series: list[BarSeries]):
    rows = sorted((int(s.ts[i]), k, float(s.open[i])) for k, s in enumerate(series) for i in range(len(s)))
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=30), min_size=1, max_size=5), st.booleans())
def test_merge_orders_by_timestamp_then_symbol(days, aligned):
    if aligned:
        days = [days[0]] * len(days)  # one shared calendar takes the interleaving path
    series = [make(chr(65 + k), d) for k, d in enumerate(days)]
    ts, sym, cols = merge_timeline(series)
    want_ts, want_sym, want_open = reference(series)
    assert ts.tolist() == want_ts
    assert sym.tolist() == want_sym
    assert cols[0].tolist() == want_open
