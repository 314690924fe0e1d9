"""Strategies that exist to exercise the live runner: they trade on (almost) every bar."""
from __future__ import annotations

from data.schema import Bar
from engine import Context, Param, Strategy


class Churn(Strategy):
    """Buys ``size`` when flat with nothing working, sells everything when long: an order every bar or two."""

    size = Param(100, "shares per buy")

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        if ctx.open_orders(bar.symbol):
            return
        held = ctx.position(bar.symbol)
        if held > 0:
            ctx.sell(bar.symbol, held)
        else:
            ctx.buy(bar.symbol, self.size)
