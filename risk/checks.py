"""Pre-trade checks on one order: sellable quantity, lots and quantity steps, minimum notional, position and
exposure limits, order rate, price collar.

Each is a small callable ``check(order, state) -> Verdict | None`` (see :mod:`tradeloop.risk.pipeline`).
"Projected" positions count the orders already working at the venue and those accepted
earlier in the same batch, so two orders cannot together break a limit that each keeps.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tradeloop.brokers.instruments import InstrumentTable
from tradeloop.brokers.orders import Order, OrderType, Side

from tradeloop.risk.pipeline import BatchState, Verdict, reference_price, unpriced

NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class SellableCheck:
    """Refuse a sell of more than may be sold now: held shares (T+1: held since before today),
    less the sells already working or accepted in the batch. No short selling. Futures (``instruments``)
    are not checked: they go long and short alike."""

    name: str = "sellable"
    instruments: InstrumentTable | None = None

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if order.side is Side.BUY:
            return None
        if self.instruments is not None and self.instruments.future(order.symbol) is not None:
            return None
        free = state.sellable(order.symbol)
        if order.qty <= free + 1e-9:
            return None
        acct = state.account
        held, sellable = acct.position(order.symbol), acct.sellable(order.symbol)
        why = f"sell {order.qty:g} {order.symbol} exceeds the {max(free, 0.0):g} sellable"
        if held > sellable + 1e-9:
            why += f"; {held - sellable:g} bought today are not sellable until the next trading day (T+1)"
        working = acct.working_sells(order.symbol)
        if working:
            why += f"; {working:g} already being sold by working orders"
        return Verdict("reject", why)

    def commit(self, order: Order, state: BatchState) -> None:
        if order.side is Side.SELL and not (self.instruments is not None
                                            and self.instruments.future(order.symbol) is not None):
            state.sellable_left[order.symbol] = state.sellable(order.symbol) - order.qty


@dataclass(frozen=True)
class LotCheck:
    """Buys in whole lots; sells in whole lots, or the whole position at once (odd lots)."""

    lot: int
    name: str = "lot"

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        q = order.qty
        if abs(q / self.lot - round(q / self.lot)) < 1e-9:
            return None
        if order.side is Side.SELL:
            held = state.account.position(order.symbol)
            if abs(q - held) < 1e-9:
                return None
            return Verdict("reject", f"sell {q:g} is not a multiple of the {self.lot}-share lot; odd lots can only be "
                                     f"sold as the whole position ({held:g})")
        return Verdict("reject", f"buy {q:g} is not a multiple of the {self.lot}-share lot")


def _increases(now: float, delta: float) -> bool:
    return abs(now + delta) > abs(now) + 1e-9


@dataclass(frozen=True)
class MaxPositionCheck:
    """Refuse an order that takes the projected |position| in its symbol above ``limit`` units."""

    limit: float
    name: str = "max_position"

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        p = state.projected(order.symbol)
        after = p + order.signed_qty
        if abs(after) > self.limit + 1e-9 and _increases(p, order.signed_qty):
            return Verdict("reject", f"position in {order.symbol} would be {after:g}, above the limit {self.limit:g}")
        return None


@dataclass(frozen=True)
class GrossExposureCheck:
    """Refuse an order that takes the projected gross exposure (sum of |qty x last price|, x the multiplier
    for a future of ``instruments``) above ``limit``."""

    limit: float
    name: str = "max_gross"
    instruments: InstrumentTable | None = None

    def _mult(self, symbol: str) -> float:
        fut = self.instruments.future(symbol) if self.instruments is not None else None
        return fut.multiplier if fut is not None else 1.0

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        acct = state.account
        price = reference_price(order, state)
        p = state.projected(order.symbol)
        if not _increases(p, order.signed_qty):
            return None
        if price != price:
            return unpriced(order, price)
        gross = 0.0
        for sym in sorted(set(acct.exposures()) | set(state.positions)):
            if sym != order.symbol:
                gross += abs(state.projected(sym) * acct.price(sym) * self._mult(sym))
        after = gross + abs((p + order.signed_qty) * price * self._mult(order.symbol))
        if after > self.limit + 1e-6:
            return Verdict("reject", f"gross exposure would be {after:,.2f}, above the limit {self.limit:,.2f}")
        return None


@dataclass
class RateCheck:
    """At most ``limit`` accepted orders in any one second of the run's clock."""

    limit: int
    name: str = "rate"
    _sent: deque = field(default_factory=deque, repr=False)

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        sent, start = self._sent, state.now - NS_PER_SECOND
        while sent and sent[0] <= start:
            sent.popleft()
        if len(sent) >= self.limit:
            return Verdict("reject", f"more than {self.limit} order(s) within one second")
        return None

    def commit(self, order: Order, state: BatchState) -> None:
        self._sent.append(state.now)

    def reset(self, pipeline: object) -> None:
        self._sent.clear()


@dataclass(frozen=True)
class CollarCheck:
    """Refuse a limit order priced more than ``band`` (a fraction) away from the last price."""

    band: float
    name: str = "collar"

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if order.type not in (OrderType.LIMIT, OrderType.STOP_LIMIT) or order.limit_price is None:
            return None
        last = state.account.price(order.symbol)
        if not last > 0:
            return None
        off = order.limit_price / last - 1.0
        if abs(off) > self.band + 1e-12:
            return Verdict("reject", f"limit {order.limit_price:g} is {off:+.2%} from the last price {last:g}, "
                                     f"outside the {self.band:.2%} collar")
        return None


@dataclass(frozen=True)
class StepCheck:
    """Quantities in whole multiples of the symbol's instrument quantity step (``qty_step``, fractional for
    crypto); a sell of the whole position is always allowed. Symbols without a step pass."""

    instruments: InstrumentTable
    name: str = "qty_step"

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        step = self.instruments.qty_step(order.symbol)
        if not step > 0:
            return None
        q = order.qty
        if abs(q / step - round(q / step)) < 1e-6:
            return None
        if order.side is Side.SELL and abs(q - state.account.position(order.symbol)) < 1e-9 * max(1.0, q):
            return None
        return Verdict("reject", f"{order.side.value.lower()} {q:g} {order.symbol} is not a multiple of its "
                                 f"quantity step {step:g}")


@dataclass(frozen=True)
class MinNotionalCheck:
    """Refuse an order whose notional (quantity x reference price x multiplier, in the quote currency) is below
    its instrument's ``min_notional``. An order with no price yet passes (the cash check refuses a buy)."""

    instruments: InstrumentTable
    name: str = "min_notional"

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        inst = self.instruments.resolve(order.symbol)
        if inst is None or not inst.min_notional > 0:
            return None
        price = reference_price(order, state)
        if price != price:
            return None
        notional = order.qty * price * inst.multiplier
        if notional < inst.min_notional - 1e-9:
            return Verdict("reject", f"{order.side.value.lower()} {order.qty:g} {order.symbol}: notional "
                                     f"{notional:,.2f} is below the minimum {inst.min_notional:g} "
                                     f"{inst.currency or ''} ({inst.pattern})".replace("  (", " ("))
        return None
