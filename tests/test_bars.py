"""A backtest's lazy bar groups behave as the sequences of Bar a strategy would otherwise get."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tradeloop.data.schema import NS_PER_DAY, Bar, BarSeries
from tradeloop import Strategy
from tradeloop.engine.drivers.backtest import run_backtest


def make(symbol: str, days: list[int]) -> BarSeries:
    ts = np.array(days, dtype=np.int64) * NS_PER_DAY
    x = np.arange(len(ts), dtype=np.float64) + 10.0 + ord(symbol[0])
    return BarSeries(symbol, ts, x, x + 1, x - 1, x + 0.5, x * 100)


def expected(series: list[BarSeries]) -> list[list[Bar]]:
    """Per timestamp, the Bars of every symbol with a bar there, in symbol order."""
    rows = sorted((int(s.ts[i]), s.symbol, i, s) for s in series for i in range(len(s)))
    out: dict[int, list[Bar]] = {}
    for ts, _, i, s in rows:
        out.setdefault(ts, []).append(s.bar(i))
    return list(out.values())


class Recorder(Strategy):
    def on_start(self, ctx) -> None:
        self.seen: list[list[Bar]] = []
        self.checked = 0

    def on_bars(self, ctx, bars) -> None:
        assert isinstance(bars, Sequence)
        got = list(bars)
        assert len(bars) == len(got) and bool(bars) == bool(got)
        assert [bars[i] for i in range(len(bars))] == got == [bars[i - len(bars)] for i in range(len(bars))]
        assert bars[1:] == got[1:] and bars == got and list(reversed(bars)) == got[::-1]
        assert all(b in bars for b in got) and bars.index(got[-1]) == len(got) - 1
        with pytest.raises(IndexError):
            bars[len(bars)]
        assert all(ctx.price(b.symbol) == b.close for b in got)  # the market is at these bars
        self.seen.append(got)


@pytest.mark.parametrize("days", [
    [[0, 1, 2, 3, 5]],                                  # one symbol
    [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]],         # one calendar, interleaved
    [[0, 2, 3, 7], [1, 2, 4], [3, 4, 5, 6, 7]],         # calendars that differ
])
def test_on_bars_gets_each_timestamps_bars_in_symbol_order(days):
    series = [make(chr(65 + k), d) for k, d in enumerate(days)]
    strat = Recorder()
    run_backtest(strat, series)
    assert strat.seen == expected(series)


class Buyer(Strategy):
    def on_bars(self, ctx, bars) -> None:
        for bar in bars:
            if not ctx.position(bar.symbol):
                ctx.buy(bar.symbol, 1)


def test_orders_fill_at_the_next_bar_of_their_own_symbol():
    series = [make("A", [0, 2, 3]), make("B", [1, 2, 4])]
    res = run_backtest(Buyer(), series, cash=1e6)
    fills = [(f.symbol, f.ts // NS_PER_DAY, f.price) for f in res.fills]
    assert fills == [("A", 2, float(series[0].open[1])), ("B", 2, float(series[1].open[1]))]
