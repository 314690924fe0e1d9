"""Accounting: cash, positions with average cost, realized PnL and fees.

Cash moves at fill time: a buy pays qty*price, a sell receives it, and every fill pays its
commission. Equity is cash plus every position marked at its symbol's last price, so
``cash + sum(qty * mark) == equity`` holds by construction at every bar.

Futures (a symbol whose instrument is a future, :meth:`Portfolio.use_futures`) are accounted as at a
futures broker, marked to market into cash: a fill moves no notional, only its commission; the
position's variation (``qty x (price - last mark) x multiplier``) is paid into (or out of) cash when it
trades (marked to the fill price) and at every bar (:meth:`Portfolio.settle`, to the bar's close). So cash
is the deposit plus all realized and unrealized PnL less fees, a futures position adds nothing more to
equity once settled (``equity == cash`` for a futures-only account after each bar), and the margin it
ties up (``|qty| x price x multiplier x margin``) is a claim on that equity, not a payment.

A future whose instrument says ``settlement = "daily"`` is settled once a trading day instead: its variation
(to a fill's price, and to the bar's last price) accumulates in ``Position.pending`` and moves into cash
only at :meth:`Portfolio.settle` with ``day_end=True`` (the engine calls it at the trading day's last step);
equity counts ``pending`` plus the variation since the last mark, so it is the same as with ``bar``
settlement at every bar, and cash stays flat intraday (it moves only by fees).
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
    mark: float = 0.0        # futures: the price the position was last settled at (its variation is in cash)
    pending: float = 0.0     # futures settled daily: variation marked since the last settlement, not in cash yet


class Portfolio:
    """Cash and positions of one account, updated fill by fill."""

    def __init__(self, cash: float) -> None:
        self.start_cash = float(cash)
        self.cash = float(cash)
        self.positions: dict[str, Position] = {}
        self.fees = 0.0
        self.instruments = None                    # InstrumentTable once use_futures is called
        self.multipliers: dict[str, float] = {}   # futures traded so far: symbol -> contract multiplier
        self.daily: set[str] = set()               # the futures among them settled daily (module doc)

    def use_futures(self, instruments) -> None:
        """Account the symbols whose instrument (``instruments.future``) is a future as futures (module doc)."""
        self.instruments = instruments if instruments is not None and instruments.has_futures else None

    def _future(self, symbol: str) -> float:
        """The multiplier of ``symbol`` when it is a future, else 0.0."""
        m = self.multipliers.get(symbol)
        if m is None:
            inst = self.instruments.future(symbol)
            if inst is None:
                return 0.0
            m = self.multipliers[symbol] = inst.multiplier
            if inst.settlement == "daily":
                self.daily.add(symbol)
        return m

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
        if self.instruments is not None and (m := self._future(fill.symbol)):
            return self._apply_future(pos, q0, dq, price, fee, m, fill.symbol in self.daily)
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

    def _apply_future(self, pos: Position, q0: float, dq: float, price: float, fee: float, m: float,
                      daily: bool = False) -> float:
        """A futures fill: the held position is settled at the fill price (daily: into ``pending``), the fee
        paid; no notional moves."""
        if q0:
            if daily:
                pos.pending = pos.pending + q0 * (price - pos.mark) * m
            else:
                self.cash = self.cash + q0 * (price - pos.mark) * m
        pos.mark = price
        self.cash = self.cash - fee
        self.fees += fee
        pos.fees += fee
        q1 = q0 + dq
        if q0 == 0 or (q0 > 0) == (dq > 0):
            pos.avg_cost = (pos.avg_cost * abs(q0) + price * abs(dq)) / abs(q1)
        else:
            closed = min(abs(dq), abs(q0))
            pos.realized_pnl += closed * (price - pos.avg_cost) * (1 if q0 > 0 else -1) * m
            if abs(dq) > abs(q0):
                pos.avg_cost = price
            elif abs(q1) <= 1e-12:
                pos.avg_cost = 0.0
        pos.qty = q1 = q1 if abs(q1) > 1e-12 else 0.0
        return q1

    def settle(self, price_of, day_end: bool = False) -> bool:
        """Mark every open futures position to ``price_of(symbol)``: its variation into cash (symbols sorted).
        Futures settled daily only when ``day_end``: their ``pending`` and the variation to the price. True when
        cash moved."""
        moved = False
        daily = self.daily
        for symbol in sorted(self.multipliers):
            pos = self.positions.get(symbol)
            if pos is None:
                continue
            if daily and symbol in daily:
                if day_end and (pos.qty or pos.pending):
                    p = price_of(symbol)
                    if p == p:
                        var = pos.qty * (p - pos.mark) * self.multipliers[symbol] if pos.qty else 0.0
                        self.cash = self.cash + (pos.pending + var)
                        pos.pending = 0.0
                        pos.mark = p
                        moved = True
                continue
            if not pos.qty:
                continue
            p = price_of(symbol)
            if p != pos.mark and p == p:
                self.cash = self.cash + pos.qty * (p - pos.mark) * self.multipliers[symbol]
                pos.mark = p
                moved = True
        return moved

    def open_futures(self) -> bool:
        """Whether any futures position is open."""
        pos = self.positions
        return any(s in pos and pos[s].qty for s in self.multipliers)

    def margin(self, price_of, rate: str = "initial") -> float:
        """Margin the open futures positions tie up: sum of |qty| x price x multiplier x the instrument's rate
        (``initial``: margin; ``maintenance``: maintenance_margin, else margin, else none)."""
        total = 0.0
        for symbol in sorted(self.multipliers):
            pos = self.positions.get(symbol)
            if pos is None or not pos.qty:
                continue
            inst = self.instruments.future(symbol)
            r = inst.margin_rate if rate == "initial" else inst.maintenance_rate
            if r:
                total += abs(pos.qty) * price_of(symbol) * self.multipliers[symbol] * r
        return total

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
            pos = self.positions[symbol]
            qty = pos.qty
            if qty:
                m = self.multipliers.get(symbol) if self.multipliers else None
                if m is None:
                    value += qty * price_of(symbol)
                elif pos.pending:   # settled daily: the variation marked since the day's start, then the rest
                    value += pos.pending + qty * (price_of(symbol) - pos.mark) * m
                else:   # a future: only its variation since the last settlement is not in cash yet
                    value += qty * (price_of(symbol) - pos.mark) * m
            elif pos.pending:       # closed today, settled daily: its variation is not in cash yet
                value += pos.pending
        return value

    def gross_exposure(self, price_of) -> float:
        mult = self.multipliers
        return sum(abs(p.qty * price_of(s) * mult.get(s, 1.0)) for s, p in self.positions.items() if p.qty)

    def unrealized_pnl(self, price_of) -> float:
        mult = self.multipliers
        return sum(p.qty * (price_of(s) - p.avg_cost) * mult.get(s, 1.0) for s, p in self.positions.items() if p.qty)


DAY_NS = 86_400 * 10**9
DAY_BREAK_NS = 6 * 3_600 * 10**9   # a trading day ends at 18:00 local: a night session belongs to the next day


def day_ends_of(ts, tz: str | None = None) -> set[int]:
    """The stamps (int64 ns, sorted input) that end a trading day: the last stamp before 18:00 local time of
    each day (data/sessions.py's night rule: a night session at 21:00 belongs to the next trading day), in
    ``tz`` (None or UTC: the stamps are wall time). Where daily settlement happens (``settlement = "daily"``)."""
    import numpy as np
    ts = np.asarray(ts, np.int64)
    if not len(ts):
        return set()
    offset = 0
    if tz and tz != "UTC":
        from datetime import datetime, timezone
        from zoneinfo import ZoneInfo
        first = datetime.fromtimestamp(int(ts[0]) // 10**9, timezone.utc).astimezone(ZoneInfo(str(tz)))
        offset = int(first.utcoffset().total_seconds()) * 10**9
    day = (ts + (offset + DAY_BREAK_NS)) // DAY_NS
    last = np.append(day[1:] != day[:-1], True)
    return set(ts[last].tolist())
