"""Simulated venue: matches working orders against each new bar of their symbol.

Rules (the same in backtests, the live driver's paper venue and the exchange simulator):
- An order can trade only on a bar that starts after it was placed: an order placed on bar t
  trades on bar t+1 at the earliest (``fill_at="open"``, the default). ``fill_at="close"``
  is the explicit same-bar option: orders placed on bar t are matched against t's close.
- Market: the bar's open. Limit buy: the open if it is at or below the limit (a gap through
  the limit fills at the better open), else the limit if the low reaches it. Stop buy: the
  open if it is at or above the stop (gap), else the stop if the high reaches it. Sells mirror.
  Stop-limit: the stop triggers as above; triggered at the open it works as a limit from the
  open; triggered inside the bar it fills at the stop when the limit allows, otherwise it
  works as a limit from the next bar (we cannot know whether the low came before the stop).
- Slippage applies to market and stop fills (never past the bar's high/low); limit fills
  are at the limit or better. A participation cap limits one order's fill to a share of the
  bar's volume; the rest stays working (partial fill) unless the order is IOC.
- DAY orders live through the first trading day on which they can trade, then expire. IOC
  orders are cancelled after the first bar they could trade on.
- A fill the account cannot pay for is not made: the order is rejected with the reason.
- With a market profile (``FillRules.market``, e.g. China A-shares): no buy fills at the
  limit-up price and no sell fills at the limit-down price of the day (the order keeps
  working); fill quantities are whole lots except a sell of an order's whole odd remainder;
  with T+1 a sell fills at most the shares held since before today.
- With an instrument table (``FillRules.instruments``, brokers/instruments.py): fill quantities are
  rounded down to the symbol's ``qty_step`` (fractional for crypto: 0.0001 BTC) and charged by its
  fee schedule; symbols no row matches keep ``lot_size`` and ``commission``. A future's fee is
  computed on the contract value (price x multiplier): ``percent`` of the notional, ``per_share`` per
  contract; the account checks its margin, not its cash, for each fill (engine/loop/core.py).
- Without a market profile, the daily limits of the data (per-bar ``limit_up``/``limit_down`` columns, e.g.
  rqalpha's HighLimitPx/LowLimitPx) or of the instrument (``limit`` x the previous close) apply alike: no buy
  fill at or above limit-up, no sell fill at or below limit-down; the order keeps working
  (``Account.price_limits``, asked when the account sets ``limits_active``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from tradeloop.data.schema import NS_PER_DAY

from tradeloop.brokers.base import Account, FillSink
from tradeloop.brokers.costs import CommissionModel, PercentCommission, SlippageModel
from tradeloop.brokers.instruments import InstrumentTable, floor_step
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.profiles import MarketProfile

__all__ = ["Account", "FillRules", "FillSink", "SimulatedVenue"]   # Account, FillSink: brokers.base's


@dataclass(frozen=True)
class FillRules:
    """How the simulated venue fills orders; part of a run's serializable configuration."""

    fill_at: str = "open"
    participation: float | None = None
    lot_size: float = 0.0
    commission: CommissionModel = field(default_factory=PercentCommission)
    slippage: SlippageModel | None = None  # None: fills at the model price
    market: MarketProfile | None = None  # a market's rules (lots, T+1, price limits); None: none
    instruments: InstrumentTable = field(default_factory=InstrumentTable)  # per-symbol step, fees, min notional

    def __post_init__(self) -> None:
        if self.fill_at not in ("open", "close"):
            raise ValueError(f"fill_at must be 'open' or 'close', not {self.fill_at!r}")
        if self.participation is not None and not (0 < self.participation <= 1):
            raise ValueError(f"participation must be in (0, 1], not {self.participation}")

    def qty_step(self, symbol: str) -> float:
        """The quantity fills of ``symbol`` are whole multiples of: its instrument's step, else ``lot_size``
        (0: any quantity)."""
        step = self.instruments.qty_step(symbol) if self.instruments else 0.0
        return step if step > 0 else self.lot_size

    def fee_model(self, symbol: str) -> CommissionModel:
        """The commission model of ``symbol``: its instrument's fee schedule, else ``commission``."""
        inst = self.instruments.resolve(symbol) if self.instruments else None
        return inst.commission if inst is not None and inst.commission is not None else self.commission

    def fee(self, symbol: str, side: Side, qty: float, price: float, ts: int | None = None) -> float:
        """The commission of a fill: the symbol's fee model, called for a future with the contract value
        (price x multiplier) as the unit price, so ``percent`` is a fraction of the notional and
        ``per_share`` a fee per contract."""
        fut = self.instruments.future(symbol) if self.instruments else None
        if fut is not None:
            price = price * fut.multiplier
        return self.fee_model(symbol)(symbol, side, qty, price, ts)


class SimulatedVenue:
    """The backtest venue (a :class:`tradeloop.brokers.base.Venue`): working orders per symbol, matched bar by bar.

    ``sink`` gets the fills and order events, ``account`` answers cash, T+1 and previous-close
    questions while matching; one object may be both (pass it as ``sink`` alone). An engine binds
    itself with :meth:`bind`, so a venue built before its engine needs neither.
    """

    def __init__(self, rules: FillRules, sink: FillSink | None = None, account: Account | None = None) -> None:
        self.rules = rules
        self._book: dict[str, list[Order]] = {}
        self.working: Mapping[str, Sequence[Order]] = MappingProxyType(self._book)   # read-only, live
        self._valid_day: dict[str, int] = {}
        self.sink: FillSink
        self.account: Account
        if sink is not None:
            self.bind(sink, account if account is not None else sink)  # type: ignore[arg-type]

    def bind(self, sink: FillSink, account: Account) -> None:
        """Report to ``sink`` and ask ``account`` from now on."""
        self.sink = sink
        self.account = account

    # -- order entry -------------------------------------------------------------------
    def submit(self, order: Order, ts: int) -> None:
        """Accept an order that passed risk; it starts working on the next bar."""
        order.status = OrderStatus.ACCEPTED
        orders = self._book.get(order.symbol)
        if orders is None:
            self._book[order.symbol] = [order]
        else:
            orders.append(order)
        self.sink.on_order_event(OrderEvent(ts, order.id, order.symbol, OrderStatus.ACCEPTED), order)

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Cancel a working order; False if it is not working here."""
        orders = self._book.get(order.symbol)
        if not orders or order not in orders:
            return False
        self._finish(order, OrderStatus.CANCELLED, ts, reason)
        return True

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """The working orders (of ``symbol``, or all), as a new list."""
        if symbol is not None:
            return list(self._book.get(symbol, ()))
        return [o for orders in self._book.values() for o in orders]

    # -- matching ----------------------------------------------------------------------
    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """Match the symbol's working orders placed before ``ts`` against this bar."""
        orders = self._book.get(symbol)
        if not orders:
            return
        for order in orders[:]:  # a copy: matching removes filled orders from the book
            self.on_bar_order(order, ts, o, h, l, c, v)

    def on_bar_order(self, order: Order, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """:meth:`on_bar` for one working order (a caller that handles each order on its own, e.g. to contain
        a failure to that order, calls this for each order of ``open_orders(symbol)`` in turn)."""
        if order.created_ts >= ts:
            return
        tif = order.tif
        if tif is TimeInForce.DAY:
            day = ts // NS_PER_DAY
            first = self._valid_day.setdefault(order.id, day)
            if day > first:
                self._finish(order, OrderStatus.EXPIRED, ts, "DAY order expired")
                return
        self._match(order, ts, o, h, l, c, v, bar_open=True)
        if tif is TimeInForce.IOC and order.is_open:
            self._finish(order, OrderStatus.CANCELLED, ts, "IOC remainder cancelled")

    def discard(self, order: Order) -> bool:
        """Take ``order`` out of the book without a report or a status change (a DAY order keeps the day it
        started trading, should it be put back with :meth:`submit`); False if it was not in the book."""
        orders = self._book.get(order.symbol)
        if not orders or order not in orders:
            return False
        orders.remove(order)
        if not orders:
            del self._book[order.symbol]
        return True

    # -- per-order state (brokers.base.ResumableVenue): a DAY order's first trading day ----------
    def order_state(self, order_id: str) -> tuple | None:
        """``(first trading day,)`` of a DAY order that has seen a bar, else None (see :meth:`restore_order_state`)."""
        day = self._valid_day.get(order_id)
        return None if day is None else (day,)

    def restore_order_state(self, order_id: str, state: Sequence | None) -> None:
        """Set an order's state back to what :meth:`order_state` gave (None forgets it)."""
        day = state[0] if state else None
        if day is None:
            self._valid_day.pop(order_id, None)
        else:
            self._valid_day[order_id] = int(day)

    def venue_state(self) -> bytes | None:
        """No venue-wide state here."""
        return None

    def restore_venue_state(self, state: bytes | None) -> None:
        """No venue-wide state here."""

    def on_close(self, symbol: str, ts: int, c: float, v: float) -> None:
        """Same-bar-close matching (``fill_at="close"``): orders placed at ``ts`` trade at ``c``."""
        for order in list(self._book.get(symbol, ())):
            if order.created_ts != ts:
                continue
            self._match(order, ts, c, c, c, c, v, bar_open=False)
            if order.is_open and order.tif is TimeInForce.IOC:
                self._finish(order, OrderStatus.CANCELLED, ts, "IOC remainder cancelled")

    def _match(self, order: Order, ts: int, o: float, h: float, l: float, c: float, v: float,
               bar_open: bool) -> None:
        if order.type is OrderType.MARKET:
            price, slip = o, True
        else:
            price, slip = self._price(order, o, h, l)
            if price is None:
                return
        rules = self.rules
        side = order.side
        account = self.account
        market = rules.market
        band = None
        if market is not None:
            band = market.limits(order.symbol, ts, account.pre_close(order.symbol))
            if band is not None and (price >= band[1] - market.tick / 2 if side is Side.BUY
                                     else price <= band[0] + market.tick / 2):
                return  # no buy at limit-up, no sell at limit-down: the order keeps working
        elif getattr(account, "limits_active", False):   # a future's limits: data columns or instrument ``limit``
            band = account.price_limits(order.symbol, ts)
            if band is not None:
                eps = 1e-9 * max(abs(price), 1.0)
                if price >= band[1] - eps if side is Side.BUY else price <= band[0] + eps:
                    return  # as above: the order keeps working
        qty = remaining = order.qty - order.filled_qty
        if rules.participation is not None:
            qty = min(qty, rules.participation * v)
        if market is not None and market.t_plus_1 and side is Side.SELL:
            qty = min(qty, account.sellable(order.symbol))
        step = rules.qty_step(order.symbol) if rules.instruments else rules.lot_size
        if step > 0:
            whole = floor_step(qty, step)   # lots, or an instrument's (fractional) quantity step
            if market is None or side is Side.BUY or qty < remaining - 1e-9:  # odd lots: whole remainder only
                qty = whole
        if qty <= 0:
            return
        if slip and rules.slippage is not None:
            price = min(max(rules.slippage(side, price, qty, v), l), h)
            if band is not None:
                price = min(max(price, band[0]), band[1])
        self._record_fill(order, ts, qty, price)

    def _record_fill(self, order: Order, ts: int, qty: float, price: float) -> None:
        """Charge a fill of ``qty`` at ``price``, ask the account, and record it (bar and quote matching alike)."""
        rules, side = self.rules, order.side
        if rules.instruments:
            commission = rules.fee(order.symbol, side, qty, price, ts)   # a future's: on price x multiplier
        else:
            commission = rules.commission(order.symbol, side, qty, price, ts)
        problem = self.account.affordable(order.symbol, side, qty, price, commission)
        if problem is not None:
            self._finish(order, OrderStatus.REJECTED, ts, problem)
            return
        prev = order.filled_qty
        order.filled_qty = filled = prev + qty
        order.avg_fill_price = price if not prev else (order.avg_fill_price * prev + price * qty) / filled
        if filled >= order.qty - 1e-9:
            order.status = OrderStatus.FILLED
            self._remove(order)
        else:
            order.status = OrderStatus.PARTIALLY_FILLED
        sink = self.sink
        sink.on_fill(Fill(order.id, ts, order.symbol, side, qty, price, commission), order)
        sink.on_order_event(OrderEvent(ts, order.id, order.symbol, order.status), order)

    def _price(self, order: Order, o: float, h: float, l: float) -> tuple[float | None, bool]:
        """The price this bar fills the order at (None: no fill), and whether slippage applies."""
        buy = order.side is Side.BUY
        kind = order.type
        if kind is OrderType.MARKET:
            return o, True
        if kind is OrderType.LIMIT:
            return _limit_price(buy, order.limit_price, o, h, l), False
        stop = order.stop_price
        if kind is OrderType.STOP:
            if buy:
                return (o, True) if o >= stop else ((stop, True) if h >= stop else (None, False))
            return (o, True) if o <= stop else ((stop, True) if l <= stop else (None, False))
        # stop-limit
        lim = order.limit_price
        if order.triggered:
            return _limit_price(buy, lim, o, h, l), False
        if (buy and o >= stop) or (not buy and o <= stop):
            order.triggered = True
            return _limit_price(buy, lim, o, h, l), False
        if (buy and h >= stop) or (not buy and l <= stop):
            order.triggered = True
            if (buy and stop <= lim) or (not buy and stop >= lim):
                return stop, False
        return None, False

    def _finish(self, order: Order, status: OrderStatus, ts: int, reason: str) -> None:
        order.status = status
        order.reason = reason
        self._remove(order)
        self.sink.on_order_event(OrderEvent(ts, order.id, order.symbol, status, reason), order)

    def _remove(self, order: Order) -> None:
        orders = self._book.get(order.symbol)
        if orders and order in orders:
            orders.remove(order)
            if order.tif is TimeInForce.DAY:
                self._valid_day.pop(order.id, None)
            if not orders:
                del self._book[order.symbol]


def _limit_price(buy: bool, lim: float, o: float, h: float, l: float) -> float | None:
    if buy:
        return o if o <= lim else (lim if l <= lim else None)
    return o if o >= lim else (lim if h >= lim else None)
