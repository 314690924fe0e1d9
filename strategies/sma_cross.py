"""SMA crossover, long only: the reference strategy, following ../shared/bench/bt_sma.py exactly.

Buy ``size`` shares (or ``target`` of equity with ``sizing="allin"``) when the fast SMA
crosses above the slow one while flat; sell the whole position when it crosses below.
A tie between the averages carries the previous sign, as backtrader's CrossOver does.
"""
from __future__ import annotations

from tradeloop import Context, Param, Strategy
from tradeloop.data.schema import Bar


class SmaCross(Strategy):
    """Fast/slow SMA crossover on the close; long only, no pyramiding."""

    fast = Param(10, "fast SMA period (bars)", min=1)
    slow = Param(30, "slow SMA period (bars)", min=2)
    size = Param(1000, "shares per entry with sizing='fixed'", min=1)
    sizing = Param("fixed", "'fixed' (size shares) or 'allin' (target share of equity)", choices=("fixed", "allin"))
    target = Param(0.95, "share of equity to hold with sizing='allin'", min=0.0, max=1.0)

    def validate(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be less than slow ({self.slow})")

    def on_start(self, ctx: Context) -> None:
        fast = ctx.indicator("sma", n=self.fast)
        slow = ctx.indicator("sma", n=self.slow)
        self.cross = ctx.indicator("crossover", fast, slow)
        self._fired = self.cross.nonzero_symbols  # bound once: on_bars runs at every bar

    def on_bars(self, ctx: Context, bars: list[Bar]) -> None:
        # only symbols whose crossover fired on this bar, in symbol order (backtrader's data order)
        for symbol in self._fired():
            held = ctx.position(symbol)
            if not held and self.cross[symbol] > 0:
                if self.sizing == "fixed":
                    ctx.buy(symbol, self.size)
                else:
                    ctx.order_target_percent(symbol, self.target)
            elif held and self.cross[symbol] < 0:
                ctx.close(symbol)
