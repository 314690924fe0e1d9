"""Drawdown stop (kill switch): equity too far below its peak, or too much lost in one day.

At each timestamp (step 3) the guard reads the account's equity (cash plus positions at their
last close). It stops trading when equity is at or below ``(1 - max)`` times its running peak
(the starting equity is the first peak), or at or below ``(1 - daily_loss)`` times the equity
at the end of the previous day. On a stop it cancels working orders, closes every position
with market orders when ``action="flatten"``, and from then on refuses entries: orders that
would increase the projected |position| of their symbol. A peak stop lasts until an operator's
``reset``; a daily-loss stop ends at the next session (or a reset).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tradeloop.brokers.orders import Order
from tradeloop.data.schema import NS_PER_DAY

from tradeloop.risk.pipeline import BatchState, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.data.schema import Bar

    from tradeloop.risk.pipeline import RiskPipeline

ACTIONS = ("block", "flatten")


class DrawdownGuard:
    """Watches equity against its peak and the day's start; refuses new entries once stopped."""

    name = "drawdown"

    def __init__(self, max: float | None = None, daily_loss: float | None = None, action: str = "block") -> None:
        for key, v in (("max", max), ("daily_loss", daily_loss)):
            if v is not None and not 0 < v < 1:
                raise ValueError(f"drawdown {key} must be a fraction between 0 and 1, not {v!r}")
        if max is None and daily_loss is None:
            raise ValueError("drawdown stop needs max or daily_loss")
        if action not in ACTIONS:
            raise ValueError(f"drawdown action must be 'block' or 'flatten', not {action!r}")
        self.max = max
        self.daily_loss = daily_loss
        self.action = action
        self.reset(None)

    def reset(self, pipeline: RiskPipeline | None) -> None:
        self.pipe = pipeline
        desk = pipeline.desk if pipeline is not None else None
        self._mark = desk.mark if desk is not None else None
        start = desk.equity if desk is not None else None
        self.peak = self.day_start = self.last = start
        self.day: int | None = None
        self._day_end = -(1 << 62)            # first ts after self.day
        self.stopped: str | None = None       # "max" or "daily" while stopped
        self.why = ""
        self.triggers: list[tuple[int, float]] = []   # (ts, equity) of every stop

    def state(self) -> dict:
        """What a restarted live run must take back: the peak, the day's start, and a stop in force."""
        return {"peak": self.peak, "day_start": self.day_start, "last": self.last, "day": self.day,
                "day_end": self._day_end, "stopped": self.stopped, "why": self.why}

    def restore(self, state: dict) -> None:
        self.peak, self.day_start, self.last = state["peak"], state["day_start"], state["last"]
        self.day, self._day_end = state["day"], state["day_end"]
        self.stopped, self.why = state["stopped"], state["why"]

    def on_step(self, ts: int, bars: list[Bar]) -> None:
        equity = self._mark()
        if equity != equity:   # a held symbol has no price yet (e.g. just restarted on ticks): nothing to judge,
            return             # and a NaN must not become the peak or a day's start (no stop could fire after)
        if ts >= self._day_end or ts < self._day_end - NS_PER_DAY:
            self._new_day(ts, equity)
        self.last = equity
        if equity > self.peak:
            self.peak = equity
        if self.stopped is not None:
            return
        if self.max is not None and equity <= self.peak * (1.0 - self.max):
            self._stop(ts, "max", equity, f"equity {equity:,.2f} is {1 - equity / self.peak:.2%} below its peak "
                                          f"{self.peak:,.2f} (stop at {self.max:.2%})", self.pipe)
        elif self.daily_loss is not None and equity <= self.day_start * (1.0 - self.daily_loss):
            self._stop(ts, "daily", equity, f"equity {equity:,.2f} is {1 - equity / self.day_start:.2%} below the "
                                            f"day's start {self.day_start:,.2f} (daily loss limit "
                                            f"{self.daily_loss:.2%})", self.pipe)

    def _new_day(self, ts: int, equity: float) -> None:
        """A new session: the day's start is the last equity of the previous one; a daily stop ends."""
        if self.peak is None:
            self.peak = self.day_start = self.last = equity
        if self.day is not None:
            self.day_start = self.last
        self.day = ts // NS_PER_DAY
        self._day_end = (self.day + 1) * NS_PER_DAY
        if self.stopped == "daily":
            self.stopped = None
            self.pipe.record(ts, self.name, "reset", "daily loss stop ends at the new session", value=equity)

    def _stop(self, ts: int, kind: str, equity: float, why: str, pipe: RiskPipeline) -> None:
        self.stopped = kind
        self.why = why
        self.triggers.append((ts, equity))
        pipe.record(ts, self.name, "stop", why, value=equity)
        pipe.cancel_open(ts, None, self.name, why)
        if self.action == "flatten":
            pipe.flatten(ts, self.name, why)

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if self.stopped is None:
            return None
        p = state.projected(order.symbol)
        if abs(p + order.signed_qty) > abs(p) + 1e-9:
            return Verdict("reject", f"drawdown stop: no new entries until reset ({self.why})")
        return None

    def reset_stop(self, ts: int, arg: str | None, pipe: RiskPipeline, by: str = "operator") -> None:
        """An operator's reset: trading resumes and the peak starts again from the current equity."""
        if self.stopped is None:
            pipe.record(ts, self.name, "reset", f"reset by {by}: no stop was active")
            return
        self.stopped = None
        self.peak = self.day_start = self.last
        pipe.record(ts, self.name, "reset", f"reset by {by}; the peak starts again at {self.last:,.2f}",
                    value=self.last if self.last is not None else float("nan"))
