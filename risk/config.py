"""The ``[risk]`` section of a run's configuration, typed: pre-trade limits, review, halts, drawdown stop.

Tables nest (``[risk.review]``, ``[risk.halt]``, ``[risk.drawdown]``) and every key can be set
from the command line as ``--set risk.review.notional=1000000``. Giving a ``[risk.halt]`` table,
or any ``risk.halt.*`` key, turns halts on unless it says ``enabled = false``.
:mod:`tradeloop.risk.build` turns a section into a pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tradeloop.errors import check_fields, limits

POSITIVE = limits(gt=0)
FRACTION = "a fraction between 0 and 1"


@dataclass
class ReviewSection:
    """Large-order review: hold orders whose notional is at or above ``notional`` (None: off)."""

    notional: float | None = field(default=None, metadata=POSITIVE)
    policy: str = "reject"        # backtests: approve, reject, or module:function(order) -> bool
    timeout: float = 300.0        # live and paper: seconds of the WALL clock before an unanswered review is rejected


@dataclass
class HaltSection:
    """Limit-move halt: a move of ``move`` from the previous close halts new orders for the day."""

    ENABLED_BY_ANY_KEY: ClassVar[bool] = True   # a [risk.halt] table or any risk.halt.* key turns halts on

    enabled: bool = False
    move: float = field(default=0.05, metadata=limits(gt=0, lt=1, text=FRACTION, label="halt move"))
    scope: str = field(default="symbol", metadata=limits(choices=("symbol", "book"), text="'symbol' or 'book'"))
    cancel_working: bool = False


@dataclass
class DrawdownSection:
    """Drawdown stop: equity ``max`` below its peak, or ``daily_loss`` below the day's start (None: off)."""

    max: float | None = field(default=None, metadata=limits(gt=0, lt=1, text=FRACTION, label="drawdown max"))
    daily_loss: float | None = field(default=None,
                                     metadata=limits(gt=0, lt=1, text=FRACTION, label="drawdown daily_loss"))
    action: str = field(default="block",   # block (refuse new entries) or flatten (also close every position)
                        metadata=limits(choices=("block", "flatten"), text="'block' or 'flatten'"))


@dataclass
class RiskSection:
    """Pre-trade limits (None: off) and the review, halt and drawdown tables."""

    max_position: float | None = field(default=None, metadata=POSITIVE)   # |projected position| per symbol, units
    max_gross: float | None = field(default=None, metadata=POSITIVE)      # projected gross exposure, account currency
    max_orders_per_second: int | None = field(default=None, metadata=POSITIVE)   # on the run's clock
    collar: float | None = field(default=None, metadata=POSITIVE)   # limit orders within this fraction of the last price
    review: ReviewSection = field(default_factory=ReviewSection)
    halt: HaltSection = field(default_factory=HaltSection)
    drawdown: DrawdownSection = field(default_factory=DrawdownSection)

    def validate(self, prefix: str = "risk") -> None:
        """ConfigError naming the key of the first setting out of its type or range.

        The review timeout is checked only when reviews are on (``review.notional`` set).
        """
        check_fields(self, prefix)
        if self.review.notional is not None:
            limits(gt=0)["range"].check(f"{prefix}.review.timeout", self.review.timeout)
