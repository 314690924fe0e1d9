"""The ``[risk]`` section of a run's configuration, typed: pre-trade limits, review, halts, drawdown stop.

Tables nest (``[risk.review]``, ``[risk.halt]``, ``[risk.drawdown]``) and every key can be set
from the command line as ``--set risk.review.notional=1000000``. Giving a ``[risk.halt]`` table,
or any ``risk.halt.*`` key, turns halts on unless it says ``enabled = false``.
:mod:`tradeloop.risk.build` turns a section into a pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class ReviewSection:
    """Large-order review: hold orders whose notional is at or above ``notional`` (None: off)."""

    notional: float | None = None
    policy: str = "reject"        # backtests: approve, reject, or module:function(order) -> bool
    timeout: float = 300.0        # live: seconds of the run's clock before an unanswered review is rejected


@dataclass
class HaltSection:
    """Limit-move halt: a move of ``move`` from the previous close halts new orders for the day."""

    ENABLED_BY_ANY_KEY: ClassVar[bool] = True   # a [risk.halt] table or any risk.halt.* key turns halts on

    enabled: bool = False
    move: float = 0.05
    scope: str = "symbol"         # symbol or book
    cancel_working: bool = False


@dataclass
class DrawdownSection:
    """Drawdown stop: equity ``max`` below its peak, or ``daily_loss`` below the day's start (None: off)."""

    max: float | None = None
    daily_loss: float | None = None
    action: str = "block"         # block (refuse new entries) or flatten (also close every position)


@dataclass
class RiskSection:
    """Pre-trade limits (None: off) and the review, halt and drawdown tables."""

    max_position: float | None = None          # |projected position| per symbol, in units
    max_gross: float | None = None             # projected gross exposure, in account currency
    max_orders_per_second: int | None = None   # on the run's clock
    collar: float | None = None                # limit orders within this fraction of the last price
    review: ReviewSection = field(default_factory=ReviewSection)
    halt: HaltSection = field(default_factory=HaltSection)
    drawdown: DrawdownSection = field(default_factory=DrawdownSection)
