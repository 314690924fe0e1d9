"""Rolls of a futures position from one contract to the next (a continuous position across expiries).

The user states the roll, by dates (:func:`rolls_by_dates`: ``[("2017-03-15", "IF1703", "IF1706"), ...]``) or
by open interest in the data (:func:`rolls_by_open_interest`: the contracts in order; the roll is the first
bar at which the next contract's ``open_interest`` exceeds the current one's). At the step of a roll
(``Engine._roll``, after the strategy's callbacks), the engine cancels the old contract's working orders and
sends two market orders tagged ``roll``: one closing the old contract's position, one opening the same signed
quantity in the new contract. Both fill at the next bar's open like any order, pay their commission and are
recorded as fills (their orders carry ``tag="roll"``). The equity curve stays continuous: the price gap
between the contracts is not PnL, only the two fills' costs (and the open-to-open moves) are.

The alternative, a back-adjusted series traded as one symbol, is not what this module does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from tradeloop.data.schema import BarSeries

__all__ = ["Roll", "rolls_by_dates", "rolls_by_open_interest"]


@dataclass(frozen=True, order=True)
class Roll:
    """At the first step at or after ``ts`` (int64 ns) the position in ``old`` moves to ``new``."""

    ts: int
    old: str
    new: str

    def describe(self) -> dict:
        return {"ts": str(np.datetime64(self.ts, "ns")), "old": self.old, "new": self.new}


def rolls_by_dates(items: Iterable[tuple[object, str, str]]) -> list[Roll]:
    """Rolls at stated times: (date or datetime text, or int64 ns; old contract; new contract), sorted."""
    out = []
    for when, old, new in items:
        ts = int(when) if isinstance(when, (int, np.integer)) else int(np.datetime64(str(when), "ns").astype(np.int64))
        if old == new:
            raise ValueError(f"roll at {when}: old and new contract are both {old!r}")
        out.append(Roll(ts, old, new))
    return sorted(out)


def rolls_by_open_interest(series: Sequence[BarSeries]) -> list[Roll]:
    """Rolls from each contract to the next (``series`` in contract order), at the first timestamp at which
    both have a bar and the next contract's ``open_interest`` is above the current one's (after the previous
    roll). ValueError when a series has no open_interest column."""
    out: list[Roll] = []
    after = np.iinfo(np.int64).min
    for cur, nxt in zip(series, series[1:]):
        for s in (cur, nxt):
            if "open_interest" not in s.extra:
                raise ValueError(f"{s.symbol}: no open_interest column to roll by")
        common, i, j = np.intersect1d(cur.ts, nxt.ts, assume_unique=True, return_indices=True)
        hit = np.flatnonzero((nxt.extra["open_interest"][j] > cur.extra["open_interest"][i]) & (common > after))
        if not len(hit):
            break
        after = int(common[hit[0]])
        out.append(Roll(after, cur.symbol, nxt.symbol))
    return out
