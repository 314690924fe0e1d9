"""Large-order review: orders at or above a notional are held until someone answers.

The gate holds the order; a reviewer answers. In a backtest the reviewer is a policy that
answers at once (``approve``, ``reject``, or a function of the order returning a bool). In live
trading it is a queue in the SQLite state file that a person answers from another process
(``tradeloop review approve ID`` or the web console, through risk/control.py); the engine polls it each step
and between steps, and an order unanswered for ``timeout`` seconds of the WALL clock expires and is rejected
(a person needs real time, whatever pace the run's clock keeps). Held orders are never at the
venue, so they cannot fill while held; an approved order passes the other checks again.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tradeloop.brokers.orders import Order

from tradeloop.risk.pipeline import BatchState, Verdict, reference_price
from tradeloop.risk.store import ControlStore, wall_iso

NS_PER_SECOND = 1_000_000_000


class Reviewer(Protocol):
    """Answers held orders: ``poll`` returns (order id, approve/reject/expire, reason) once each."""

    def submit(self, order: Order, ts: int, reason: str) -> None: ...

    def poll(self, now: int) -> list[tuple[str, str, str]]: ...

    def cancel(self, order_id: str) -> None: ...

    def order(self, order_id: str) -> Order | None: ...

    def reset(self) -> None: ...


class ReviewGate:
    """Hold an order whose notional (quantity x its limit, stop or last price, x the contract multiplier of a
    future in ``instruments``) is at or above ``notional``."""

    name = "review"

    def __init__(self, notional: float, reviewer: Reviewer, instruments: Any = None) -> None:
        if not notional > 0:
            raise ValueError(f"review notional must be positive, not {notional!r}")
        self.notional = float(notional)
        self.reviewer = reviewer
        self.instruments = instruments   # brokers.instruments.InstrumentTable with futures, or None

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        value = order.qty * reference_price(order, state)
        if self.instruments is not None:
            future = self.instruments.future(order.symbol)
            if future is not None:
                value *= future.multiplier
        if value != value:  # no price to size it by: a person decides (fail closed)
            return Verdict("hold", f"notional unknown: no price for {order.symbol} yet")
        if value >= self.notional:
            return Verdict("hold", f"notional {value:,.2f} is at or above the review threshold {self.notional:,.2f}")
        return None

    def reset(self) -> None:
        self.reviewer.reset()


def load_policy(spec: str) -> Callable[[Order], bool]:
    """``approve``, ``reject`` or ``module:function`` (called with the order, returns a bool)."""
    if spec == "approve":
        return lambda order: True
    if spec == "reject":
        return lambda order: False
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"review policy {spec!r}: use approve, reject or module:function")
    try:
        fn = getattr(importlib.import_module(mod), name, None)
    except ImportError as e:
        raise ValueError(f"review policy {spec!r}: cannot import {mod}: {e}") from None
    if not callable(fn):
        raise ValueError(f"review policy {spec!r}: {mod} has no function {name!r}")
    return fn


class PolicyReviewer:
    """A backtest's reviewer: ``policy(order)`` answers every held order at once."""

    def __init__(self, policy: Callable[[Order], bool], label: str = "policy") -> None:
        self.policy = policy
        self.label = label
        self.reset()

    def reset(self) -> None:
        self._answers: list[tuple[str, str, str]] = []
        self._orders: dict[str, Order] = {}

    def submit(self, order: Order, ts: int, reason: str) -> None:
        answer = self.policy(order)
        if not isinstance(answer, bool):
            raise TypeError(f"review policy {self.label} returned {answer!r} for order {order.id}; "
                            "expected True or False")
        self._orders[order.id] = order
        self._answers.append((order.id, "approve" if answer else "reject",
                              f"{'approved' if answer else 'rejected'} by review policy {self.label}"))

    def poll(self, now: int) -> list[tuple[str, str, str]]:
        out, self._answers = self._answers, []
        return out

    def order(self, order_id: str) -> Order | None:
        return self._orders.pop(order_id, None)

    def cancel(self, order_id: str) -> None:
        self._answers = [a for a in self._answers if a[0] != order_id]
        self._orders.pop(order_id, None)


class QueueReviewer:
    """A live run's reviewer: held orders wait in the state file for a person's answer, ``timeout_s`` seconds of
    the wall clock (``wall``: ``time.time``), whatever the run's clock does (a paused replay included)."""

    def __init__(self, store: ControlStore, timeout_s: float, wall: Callable[[], float] = time.time) -> None:
        if not timeout_s > 0:
            raise ValueError(f"review timeout must be a positive number of seconds, not {timeout_s!r}")
        self.store = store
        self.timeout_s = timeout_s
        self.wall = wall
        self.reset()

    def reset(self) -> None:
        self._held: dict[str, Held] = {}
        self._done: dict[str, Order] = {}

    def submit(self, order: Order, ts: int, reason: str) -> None:
        held_at = self.wall()
        entry = Held(order, ts, reason, held_at, held_at + self.timeout_s)
        self.store.add_review(order, ts, reason, wall_iso(entry.held_at), wall_iso(entry.deadline))
        self._held[order.id] = entry

    def pending(self) -> list[Held]:
        """The orders waiting for an answer, oldest first."""
        return list(self._held.values())

    def poll(self, now: int) -> list[tuple[str, str, str]]:
        if not self._held:
            return []
        out = []
        for order_id, status, by, note in self.store.answers(list(self._held)):
            out.append(self._answer(order_id, status, by, note))
        wall = self.wall()
        for order_id, held in list(self._held.items()):
            if wall >= held.deadline:
                if self.store.expire(order_id):
                    self._done[order_id] = self._held.pop(order_id).order
                    out.append((order_id, "expire", f"no answer within {self.timeout_s:g} s (wall clock)"))
                else:  # answered just now, before it could expire
                    for oid, status, by, note in self.store.answers([order_id]):
                        out.append(self._answer(oid, status, by, note))
        return out

    def _answer(self, order_id: str, status: str, by: str, note: str) -> tuple[str, str, str]:
        self._done[order_id] = self._held.pop(order_id).order
        action = "approve" if status == "approved" else "reject"
        text = f"{'approved' if action == 'approve' else 'rejected'} by {by or 'operator'}"
        return order_id, action, f"{text}: {note}" if note else text

    def order(self, order_id: str) -> Order | None:
        return self._done.pop(order_id, None)

    def cancel(self, order_id: str) -> None:
        if self._held.pop(order_id, None) is not None:
            self.store.cancel_review(order_id)


@dataclass(slots=True, frozen=True)
class Held:
    """An order waiting for a person: held at run time ``ts``, at wall time ``held_at``, expiring at ``deadline``
    (``time.time()`` seconds)."""

    order: Order
    ts: int
    reason: str
    held_at: float
    deadline: float
