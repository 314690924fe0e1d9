"""The pre-trade risk pipeline every order passes before it reaches a venue.

Each check looks at one order and a read-only view of the account and answers None (pass)
or the reason it refuses the order. The pipeline runs the checks in order over the batch of
orders a strategy placed at one timestamp; the first refusal rejects the order and is
recorded with the check's name. Backtest and live runs use the same pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from brokers.orders import Order, OrderType, Side


class AccountView(Protocol):
    """What risk may read of the portfolio; never engine classes."""

    @property
    def cash(self) -> float: ...

    def position(self, symbol: str) -> float: ...

    def price(self, symbol: str) -> float: ...


@dataclass(slots=True)
class Decision:
    """A check's verdict on one order: ``action`` is ``accept`` or ``reject``."""

    order: Order
    action: str
    check: str = ""
    reason: str = ""


class BatchState:
    """Running totals over the orders of one batch (cash they would use, positions after)."""

    def __init__(self, account: AccountView) -> None:
        self.account = account
        self.cash = account.cash
        self.positions: dict[str, float] = {}

    def position(self, symbol: str) -> float:
        if symbol not in self.positions:
            self.positions[symbol] = self.account.position(symbol)
        return self.positions[symbol]


class Check(Protocol):
    name: str

    def __call__(self, order: Order, state: BatchState) -> str | None: ...


def reference_price(order: Order, state: BatchState) -> float:
    """The price a check assumes the order trades at: its limit, else the last close."""
    if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.limit_price is not None:
        return order.limit_price
    if order.type is OrderType.STOP and order.stop_price is not None:
        return order.stop_price
    return order.created_price if order.created_price == order.created_price else state.account.price(order.symbol)


@dataclass(frozen=True)
class CashCheck:
    """Refuse a buy that, with the buys before it in the batch, would spend more cash than there is."""

    commission: Callable[[str, Side, float, float], float]
    name: str = "cash"

    def __call__(self, order: Order, state: BatchState) -> str | None:
        price = reference_price(order, state)
        fee = self.commission(order.symbol, order.side, order.qty, price)
        if order.side is Side.SELL:
            state.cash += order.qty * price - fee
            return None
        after = state.cash - order.qty * price - fee
        opening = order.qty > max(0.0, -state.position(order.symbol))
        if after < 0 and opening:
            return f"insufficient cash: needs {order.qty * price + fee:.2f}, has {state.cash:.2f}"
        state.cash = after
        return None


@dataclass(frozen=True)
class NoShortCheck:
    """Refuse a sell of more than is held (markets without short selling)."""

    name: str = "no_short"

    def __call__(self, order: Order, state: BatchState) -> str | None:
        if order.side is Side.SELL and order.qty > state.position(order.symbol) + 1e-9:
            return f"sell {order.qty:g} exceeds position {state.position(order.symbol):g} (short selling is off)"
        return None


class RiskPipeline:
    """Runs ``checks`` in order over each batch of new orders."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = list(checks)

    def screen(self, orders: list[Order], account: AccountView) -> list[Decision]:
        state = BatchState(account)
        out: list[Decision] = []
        for order in orders:
            for check in self.checks:
                reason = check(order, state)
                if reason is not None:
                    out.append(Decision(order, "reject", check.name, reason))
                    break
            else:
                state.positions[order.symbol] = state.position(order.symbol) + order.signed_qty
                out.append(Decision(order, "accept"))
        return out
