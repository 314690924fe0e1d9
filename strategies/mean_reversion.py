"""Limit-order mean reversion on Bollinger bands.

When the close falls below the lower band while flat, bid ``discount`` below the close with a
DAY limit order; once filled, offer the position at the middle band with a GTC limit, and
give up (market exit) after ``max_hold`` bars. Shows limit orders, DAY expiry, cancels.
"""
from __future__ import annotations

from tradeloop.brokers.orders import Fill
from tradeloop import Context, Param, Strategy
from tradeloop.data.schema import Bar


class MeanReversion(Strategy):
    """Buy dips below the lower Bollinger band with limit orders; exit at the mean."""

    period = Param(20, "Bollinger period (bars)", min=2)
    width = Param(2.0, "band width in standard deviations", min=0.0, max=10.0)
    discount = Param(0.005, "bid this fraction below the close", min=0.0, max=0.5)
    size = Param(100, "units per entry", min=1)
    max_hold = Param(15, "bars before a position is closed at market", min=1)

    def on_start(self, ctx: Context) -> None:
        self.mid, self.upper, self.lower = ctx.indicator("bollinger", n=self.period, k=self.width)
        self.held_since: dict[str, int] = {}
        self.exit_order: dict[str, object] = {}
        self.bar_no: dict[str, int] = {}

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        s = bar.symbol
        n = self.bar_no[s] = self.bar_no.get(s, 0) + 1
        held = ctx.position(s)
        lower, mid = self.lower[s], self.mid[s]
        if lower != lower:
            return
        if held <= 0:
            if bar.close < lower and not ctx.open_orders(s):
                ctx.buy(s, self.size, limit=round(bar.close * (1 - self.discount), 4), tif="DAY", tag="entry")
            return
        if n - self.held_since.get(s, n) >= self.max_hold:
            ctx.cancel_all(s)
            ctx.close(s, tag="timeout")
            return
        exit_order = self.exit_order.get(s)
        if exit_order is None or not exit_order.is_open:
            self.exit_order[s] = ctx.sell(s, held, limit=round(mid, 4), tag="exit")

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        if ctx.position(fill.symbol) > 0:
            self.held_since.setdefault(fill.symbol, self.bar_no.get(fill.symbol, 0))
        else:
            self.held_since.pop(fill.symbol, None)
            self.exit_order.pop(fill.symbol, None)
