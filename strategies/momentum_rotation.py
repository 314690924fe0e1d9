"""Multi-symbol momentum rotation: hold the strongest ``top`` symbols, re-ranked periodically.

Every ``rebalance`` timestamps, rank symbols by their return over the last ``lookback`` bars;
hold the best ``top`` (with a positive return) in equal weights of ``exposure`` of equity
and sell the rest. Sells go first so their cash is there for the buys of the next bar.
"""
from __future__ import annotations

from tradeloop import Context, Param, Strategy
from tradeloop.data.schema import Bar


class MomentumRotation(Strategy):
    """Equal-weight the top-N symbols by trailing return; rebalance on a fixed cadence."""

    lookback = Param(60, "bars of trailing return used to rank", min=1)
    top = Param(2, "how many symbols to hold", min=1)
    rebalance = Param(20, "timestamps between rebalances", min=1)
    exposure = Param(0.95, "share of equity invested", min=0.0, max=1.0)

    def on_start(self, ctx: Context) -> None:
        self.momentum = ctx.indicator("roc", n=self.lookback)
        self.steps = 0

    def on_bars(self, ctx: Context, bars: list[Bar]) -> None:
        self.steps += 1
        if self.steps % self.rebalance:
            return
        live = {b.symbol for b in bars}
        scores = [(self.momentum[s], s) for s in live if self.momentum[s] == self.momentum[s]]
        ranked = [s for score, s in sorted(scores, key=lambda x: (-x[0], x[1])) if score > 0][: self.top]
        for symbol in sorted(ctx.positions):
            if symbol not in ranked and symbol in live:
                ctx.close(symbol)
        if ranked:
            weight = self.exposure / self.top
            for symbol in ranked:
                ctx.order_target_percent(symbol, weight)
