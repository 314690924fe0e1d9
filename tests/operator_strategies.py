"""Strategies for the operator tests (tests/test_operator_*.py): large orders to review, a resting order to cancel."""
from __future__ import annotations

from tradeloop import Context, Param, Strategy
from tradeloop.data.schema import Bar


class BigOrders(Strategy):
    """Buys ``small`` shares on each of the first bars, rests a limit buy at half the price on bar 2 (it never
    fills: an order for an operator to cancel), and buys ``big`` shares (a review-sized order) on each bar in
    ``big_at``; per symbol, counting that symbol's bars from 1."""

    small = Param(100, "shares bought on bars 1..3")
    big = Param(1000, "shares of each large order")
    big_at = Param("4,7,10", "bar numbers of the large orders, comma-separated")

    def on_start(self, ctx: Context) -> None:
        self.n: dict[str, int] = {}
        self.at = {int(x) for x in str(self.big_at).split(",") if x.strip()}

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        n = self.n[bar.symbol] = self.n.get(bar.symbol, 0) + 1
        if n <= 3:
            ctx.buy(bar.symbol, self.small)
        if n == 2:
            ctx.buy(bar.symbol, self.small, limit=round(bar.close * 0.5, 2))
        if n in self.at:
            ctx.buy(bar.symbol, self.big)
