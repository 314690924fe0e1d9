"""Per-symbol day state that market rules need, kept in one place for the engine and the exchange simulator.

:class:`Settlement` answers T+1: what was bought today, hence how much of a position may be sold.
:class:`PriorCloses` follows the prior day's close from bars as they arrive: the base of daily price
limits. Days are UTC days of the int64 ns timestamps (``ts // NS_PER_DAY``), as everywhere else.
"""
from __future__ import annotations

import math

from tradeloop.data.schema import NS_PER_DAY

from tradeloop.brokers.orders import Fill, Side

_NAN = math.nan


class Settlement:
    """T+1 bookkeeping: per symbol, the day of its last buy and the quantity bought that day.

    With ``t_plus_1`` off it records nothing and everything held is sellable.
    """

    __slots__ = ("t_plus_1", "_bought")

    def __init__(self, t_plus_1: bool) -> None:
        self.t_plus_1 = t_plus_1
        self._bought: dict[str, tuple[int, float]] = {}   # symbol -> (day, quantity bought that day)

    def on_fill(self, fill: Fill) -> None:
        """Record a buy fill (sells change nothing here: the position is the account's)."""
        if self.t_plus_1 and fill.side is Side.BUY:
            self.record(fill.symbol, fill.ts, fill.qty)

    def record(self, symbol: str, ts: int, qty: float) -> None:
        """``qty`` of ``symbol`` bought at ``ts``."""
        day = ts // NS_PER_DAY
        prev = self._bought.get(symbol)
        self._bought[symbol] = (day, qty + prev[1] if prev is not None and prev[0] == day else qty)

    def bought_today(self, symbol: str, now: int) -> float:
        """What was bought of ``symbol`` on the day of ``now``."""
        b = self._bought.get(symbol)
        return b[1] if b is not None and b[0] == now // NS_PER_DAY else 0.0

    def sellable(self, symbol: str, held: float, now: int) -> float:
        """Of the position ``held``, what may be sold at ``now``: all of it, less (T+1) today's buys."""
        if not self.t_plus_1:
            return held
        b = self._bought.get(symbol)
        return held - b[1] if b is not None and b[0] == now // NS_PER_DAY else held

    def state(self, symbol: str) -> tuple[int, float]:
        """(day of the last buy, quantity bought that day); (-1, 0.0) for none: what a state file keeps."""
        return self._bought.get(symbol, (-1, 0.0))

    def restore(self, symbol: str, day: int, qty: float) -> None:
        """Put back a ``state`` read from a state file."""
        if day >= 0:
            self._bought[symbol] = (int(day), float(qty))
        else:
            self._bought.pop(symbol, None)


class PriorCloses:
    """Per symbol, the last close of the prior day, from bars in time order (NaN on the first day seen)."""

    __slots__ = ("_days",)

    def __init__(self) -> None:
        self._days: dict[str, tuple[int, float, float]] = {}   # symbol -> (day, prior day's close, last close)

    def on_bar(self, symbol: str, ts: int, close: float) -> None:
        """A bar of ``symbol`` closed at ``close``; a bar of a new day makes the last close the prior one."""
        day = ts // NS_PER_DAY
        d = self._days.get(symbol)
        if d is None:
            self._days[symbol] = (day, _NAN, close)
        else:
            self._days[symbol] = (day, d[1] if d[0] == day else d[2], close)

    def prev_close(self, symbol: str) -> float:
        d = self._days.get(symbol)
        return d[1] if d is not None else _NAN

    def state(self, symbol: str) -> tuple[int, float, float]:
        """(day of the last bar, prior day's close, last close); (-1, NaN, NaN) for a symbol not seen."""
        return self._days.get(symbol, (-1, _NAN, _NAN))

    def restore(self, symbol: str, day: int, prior: float, last: float) -> None:
        """Put back a ``state`` read from a state file."""
        if day >= 0 or not math.isnan(last):
            self._days[symbol] = (int(day), float(prior), float(last))
