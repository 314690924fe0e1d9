"""Market profiles: the rules of one market that the simulated venue applies to every fill.

A profile answers what the venue cannot know from prices alone: the trading lot, whether
shares bought today may be sold today (T+1), and the daily price limits around the previous
close. ``FillRules.market`` carries it to the venue; ``None`` means no market rules at all.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from tradeloop.brokers.costs import AShareCommission

_CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


class MarketProfile(Protocol):
    """What the venue asks of a market's rules."""

    name: ClassVar[str]
    allow_short: ClassVar[bool]
    lot_size: int
    t_plus_1: bool
    tick: float

    def limits(self, symbol: str, ts: int, pre_close: float) -> tuple[float, float] | None: ...

    def describe(self) -> dict: ...


def round_half_up(x: float, tick: float) -> float:
    """``x`` rounded to the nearest multiple of ``tick``, halves away from zero (the exchange rule)."""
    n = math.floor(x / tick + 0.5 + 1e-6)
    return round(n * tick, 8)


@dataclass(frozen=True)
class ChinaAShares:
    """China A-shares (``cn-a``): 100-share lots, T+1, daily limits from the previous close.

    Limits: ``main_limit`` (10%) on the main boards, ``growth_limit`` (20%) on STAR (688xxx,
    689xxx) and on ChiNext (300xxx, 301xxx) from ``chinext_20pct_from`` (2020-08-24; 10% before),
    ``st_limit`` (5%) for the symbols listed in ``st``. Limit prices are the previous close times
    (1 +/- limit), rounded half up to the ``tick``. The board is read from the six-digit code in
    the symbol (``600519.SH``, ``XSHG_5min_600977``). No buy fills at the limit-up price, no sell
    fills at the limit-down price; buys must be whole lots, odd lots can only be sold all at once.
    """

    name: ClassVar[str] = "cn-a"
    allow_short: ClassVar[bool] = False

    lot_size: int = 100
    t_plus_1: bool = True
    tick: float = 0.01
    main_limit: float = 0.10
    growth_limit: float = 0.20
    st_limit: float = 0.05
    chinext_20pct_from: str = "2020-08-24"
    st: frozenset[str] = frozenset()
    commission: AShareCommission = field(default_factory=AShareCommission)
    _boards: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _reform_ns: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lot_size < 1 or int(self.lot_size) != self.lot_size:
            raise ValueError(f"lot_size must be a positive whole number, not {self.lot_size!r}")
        if not self.tick > 0:
            raise ValueError(f"tick must be positive, not {self.tick!r}")
        for key in ("main_limit", "growth_limit", "st_limit"):
            v = getattr(self, key)
            if not 0 < v < 1:
                raise ValueError(f"{key} must be a fraction between 0 and 1, not {v!r}")
        try:
            reform = int(np.datetime64(self.chinext_20pct_from, "ns").astype(np.int64))
        except ValueError:
            raise ValueError(f"chinext_20pct_from must be a date (YYYY-MM-DD), "
                             f"not {self.chinext_20pct_from!r}") from None
        object.__setattr__(self, "st", frozenset(self.st))
        object.__setattr__(self, "_reform_ns", reform)

    def board(self, symbol: str) -> str:
        """``st``, ``star``, ``chinext`` or ``main``; ValueError when the symbol has no A-share code."""
        b = self._boards.get(symbol)
        if b is None:
            m = _CODE.search(symbol)
            if m is None:
                raise ValueError(f"symbol {symbol!r} has no six-digit A-share code (e.g. 600519.SH); "
                                 "name the input with --symbol")
            code = m.group(1)
            b = ("st" if symbol in self.st or code in self.st else "star" if code[:3] in ("688", "689")
                 else "chinext" if code[:3] in ("300", "301") else "main")
            self._boards[symbol] = b
        return b

    def limit_rate(self, symbol: str, ts: int) -> float:
        """The daily limit of ``symbol`` on the day of ``ts`` as a fraction of the previous close."""
        b = self.board(symbol)
        if b == "st":
            return self.st_limit
        if b == "star" or (b == "chinext" and ts >= self._reform_ns):
            return self.growth_limit
        return self.main_limit

    def limits(self, symbol: str, ts: int, pre_close: float) -> tuple[float, float] | None:
        """(limit-down, limit-up) prices for the day of ``ts``; None when the previous close is unknown."""
        if not pre_close > 0:
            return None
        r = self.limit_rate(symbol, ts)
        return round_half_up(pre_close * (1.0 - r), self.tick), round_half_up(pre_close * (1.0 + r), self.tick)

    def describe(self) -> dict:
        """The profile as a JSON-able dict for the run manifest."""
        return {"name": self.name, "lot_size": self.lot_size, "t_plus_1": self.t_plus_1, "tick": self.tick,
                "main_limit": self.main_limit, "growth_limit": self.growth_limit, "st_limit": self.st_limit,
                "chinext_20pct_from": self.chinext_20pct_from, "st": sorted(self.st)}


PROFILES = {ChinaAShares.name: ChinaAShares}
