"""The queue-position model of resting limit orders on ticks (QuoteRules(queue=...), docs/fills.md)."""
from __future__ import annotations

import numpy as np
import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.fill_config import quote_rules_from_dict, quote_rules_to_dict
from tradeloop.brokers.quotes import QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import TickSeries
from tradeloop.engine.assembly.build import build_quotes
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.errors import ConfigError

FREE = FillRules(commission=PercentCommission(0.0))
NAN = float("nan")


def ticks(rows) -> TickSeries:
    """rows: (price, size, bid, ask, bid_size, ask_size), one tick per ms."""
    a = np.array(rows, float).T
    n = a.shape[1]
    return TickSeries("X", np.arange(1, n + 1, dtype=np.int64) * 1_000_000, np.arange(n, dtype=np.int64),
                      a[0], a[1], a[2], a[3], a[4], a[5], np.zeros(n, np.int8))


class Place(Strategy):
    def __init__(self, side="buy", qty=30, limit=100.0, **kw):
        super().__init__(**kw)
        self.side, self.qty, self.limit, self.done = side, qty, limit, False

    def on_tick(self, ctx, t):
        if not self.done:
            self.done = True
            (ctx.buy if self.side == "buy" else ctx.sell)("X", self.qty, limit=self.limit)


def fills(rows, queue, **kw):
    res = run_tick_backtest(Place(**kw), [ticks(rows)], rules=FREE, quotes=QuoteRules(queue=queue))
    return [(f.ts // 1_000_000, f.qty, f.price) for f in res.fills]


# the order (buy 30 at 100) is placed on tick 1 and first sees tick 2: bid 100 x 100 -> 100 ahead of it
QUEUE = [(NAN, 0, 100, 101, 100, 50),     # 1: placed
         (NAN, 0, 100, 101, 100, 50),     # 2: joins behind 100
         (100, 60, 100, 101, 40, 50),     # 3: 60 trade at 100: 40 ahead
         (100, 50, 100, 101, 0, 50),      # 4: 50 trade at 100: 40 for the queue, 10 for the order
         (100, 5, 99, 100.5, 10, 50),     # 5: 5 more trade at 100 (bid now 99: the order is the best)
         (99.5, 30, 99, 100.5, 10, 50)]   # 6: a trade through 100: the remaining 15


@pytest.mark.parametrize("queue", ["risk_averse", "prob"])
def test_trades_consume_the_queue_ahead(queue):
    assert fills(QUEUE, queue) == [(4, 10.0, 100.0), (5, 5.0, 100.0), (6, 15.0, 100.0)]


def test_default_has_no_queue():
    assert QuoteRules().queue == "none"
    assert fills(QUEUE, "none") == []          # the ask never reaches 100: today's rule fills nothing


def test_opposite_quote_reaching_the_limit_still_fills():
    rows = QUEUE[:3] + [(NAN, 0, 99, 100, 10, 7)]
    assert fills(rows, "risk_averse") == [(4, 7.0, 100.0)]
    assert fills(rows, "none") == [(4, 7.0, 100.0)]


def test_sell_side_and_price_improvement():
    # sell 20 at 100.5 inside the spread 100 / 101: first in the queue; a trade at 100.5 fills it
    rows = [(NAN, 0, 100, 101, 10, 10), (NAN, 0, 100, 100.5, 10, 0), (100.5, 8, 100, 100.5, 10, 20),
            (100.5, 50, 100, 100.5, 10, 20)]
    assert fills(rows, "risk_averse", side="sell", qty=20, limit=100.5) == [(3, 8.0, 100.5), (4, 12.0, 100.5)]


def test_cancellations_per_model():
    # joins behind 100; 100 more join behind it (200 shown); then 100 cancel (100 shown), no trade;
    # then a trade of 80 at 100
    rows = [(NAN, 0, 100, 101, 100, 50), (NAN, 0, 100, 101, 100, 50), (NAN, 0, 100, 101, 200, 50),
            (NAN, 0, 100, 101, 100, 50), (100, 80, 100, 101, 20, 50)]
    # risk_averse: the cancellations were all behind it: still 100 ahead, 80 do not reach it
    assert fills(rows, "risk_averse") == []
    # prob: 100 ahead of 200, so half of the 100 cancelled were ahead: 50 ahead, 30 of the 80 fill it
    assert fills(rows, "prob") == [(5, 30.0, 100.0)]
    # the shown size dropping below the queue ahead caps it (both models): 100 ahead -> 30 shown
    rows2 = rows[:2] + [(NAN, 0, 100, 101, 30, 50), (100, 40, 100, 101, 0, 50)]
    assert fills(rows2, "risk_averse") == [(4, 10.0, 100.0)]


def test_behind_the_best_joins_when_its_price_becomes_best():
    # buy at 99 while the bid is 100: unknown queue; a trade at 99 then cannot fill it; the bid drops
    # to 99 x 40: 40 ahead; trades of 50 at 99 fill 10
    rows = [(NAN, 0, 100, 101, 10, 50), (NAN, 0, 100, 101, 10, 50), (99, 20, 100, 101, 10, 50),
            (NAN, 0, 99, 101, 40, 50), (99, 50, 99, 101, 0, 50)]
    assert fills(rows, "risk_averse", limit=99.0) == [(5, 10.0, 99.0)]


def test_config_and_rules_file_carry_the_queue():
    cfg = RunConfig()
    cfg.quotes.queue = "prob"
    assert build_quotes(cfg).queue == "prob"
    q = QuoteRules(queue="risk_averse")
    assert quote_rules_to_dict(q)["queue"] == "risk_averse"
    assert quote_rules_from_dict(quote_rules_to_dict(q)) == q
    d = quote_rules_to_dict(QuoteRules())
    del d["queue"]                                   # a file written before the setting: none
    assert quote_rules_from_dict(d).queue == "none"
    with pytest.raises(ValueError):
        quote_rules_from_dict({**d, "queue": "fifo"})
    with pytest.raises(ValueError):
        QuoteRules(queue="fifo")
    cfg.quotes.queue = "fifo"
    with pytest.raises((ConfigError, ValueError)):
        build_quotes(cfg)
