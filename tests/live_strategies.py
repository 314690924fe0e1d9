"""Strategies that exist to exercise the live runner: they trade on (almost) every bar."""
from __future__ import annotations

from tradeloop.data.schema import Bar
from tradeloop import Context, Param, Strategy


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


class BuggyAfter(Strategy):
    """Rests a buy limit far below the market on the first bar, then raises on bar ``fail_at``:
    a strategy bug in the middle of a live session, with an order working at the venue."""

    fail_at = Param(5, "bar number that raises")

    def on_start(self, ctx: Context) -> None:
        self.seen = 0

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        self.seen += 1
        if self.seen == 1:
            ctx.buy(bar.symbol, 100, limit=round(bar.close * 0.5, 2))
        if self.seen == self.fail_at:
            raise ZeroDivisionError("the strategy divided by zero")
