"""Accounting: cash, positions with average cost, realized PnL and fees.

Cash moves at fill time: a buy pays qty*price, a sell receives it, and every fill pays its
commission. Equity is cash plus every position marked at its symbol's last price, so
``cash + sum(qty * mark) == equity`` holds by construction at every bar.
"""
from __future__ import annotations

from dataclasses import dataclass

from tradeloop.brokers.orders import Fill, Side


@dataclass(slots=True)
class Position:
    """One symbol's holding: signed quantity, average entry cost, PnL realized so far."""

    qty: float = 0.0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    dividends: float = 0.0   # cash dividends received (paid, when short) so far


class Portfolio:
    """Cash and positions of one account, updated fill by fill."""

    def __init__(self, cash: float) -> None:
        self.start_cash = float(cash)
        self.cash = float(cash)
        self.positions: dict[str, Position] = {}
        self.fees = 0.0

    def position(self, symbol: str) -> float:
        p = self.positions.get(symbol)
        return p.qty if p is not None else 0.0

    def apply(self, fill: Fill) -> float:
        """Book one fill: cash, quantity, average cost, realized PnL, fees; returns the new quantity."""
        pos = self.positions.get(fill.symbol)
        if pos is None:
            pos = self.positions[fill.symbol] = Position()
        q0 = pos.qty
        qty, price, fee = fill.qty, fill.price, fill.commission
        dq = qty if fill.side is Side.BUY else -qty
        if dq > 0:
            self.cash = self.cash - qty * price - fee
        else:
            self.cash = self.cash + qty * price - fee
        self.fees += fee
        pos.fees += fee
        q1 = q0 + dq
        if q0 == 0 or (q0 > 0) == (dq > 0):
            pos.avg_cost = (pos.avg_cost * abs(q0) + price * abs(dq)) / abs(q1)
        else:
            closed = min(abs(dq), abs(q0))
            pos.realized_pnl += closed * (price - pos.avg_cost) * (1 if q0 > 0 else -1)
            if abs(dq) > abs(q0):
                pos.avg_cost = price
            elif q1 == 0:
                pos.avg_cost = 0.0
        pos.qty = q1 = q1 if abs(q1) > 1e-12 else 0.0
        return q1

    def corporate_action(self, symbol: str, dividend: float, ratio: float) -> tuple[float, float, float]:
        """Apply one ex-date's actions to ``symbol`` (data.actions): first the cash dividend on the shares
        held now (the previous close's; a short pays it), then the split (quantity x ratio, average cost
        / ratio; fractional shares are kept, no cash in lieu). Returns (qty before, qty after, cash moved)."""
        pos = self.positions.get(symbol)
        q0 = pos.qty if pos is not None else 0.0
        if pos is None or not q0:
            return q0, q0, 0.0
        paid = q0 * dividend if dividend else 0.0
        if paid:
            self.cash = self.cash + paid
            pos.dividends += paid
        if ratio != 1.0:
            pos.qty = q0 * ratio
            pos.avg_cost = pos.avg_cost / ratio
        return q0, pos.qty, paid

    def equity(self, price_of) -> float:
        """Cash plus positions marked by ``price_of(symbol)``, summed in symbol order."""
        value = self.cash
        for symbol in sorted(self.positions):
            qty = self.positions[symbol].qty
            if qty:
                value += qty * price_of(symbol)
        return value

    def gross_exposure(self, price_of) -> float:
        return sum(abs(p.qty * price_of(s)) for s, p in self.positions.items() if p.qty)

    def unrealized_pnl(self, price_of) -> float:
        return sum(p.qty * (price_of(s) - p.avg_cost) for s, p in self.positions.items() if p.qty)
