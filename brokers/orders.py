"""Order types, fills and order events: the vocabulary shared by strategies, risk and venues."""
from __future__ import annotations

import math
from enum import Enum

import msgspec


class Side(str, Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(str, Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class TimeInForce(str, Enum):
    DAY = "DAY"   # expires at the end of the trading day it was placed on
    GTC = "GTC"   # good till cancelled
    IOC = "IOC"   # fills what it can on the first bar it may trade, the rest is cancelled


class OrderStatus(str, Enum):
    NEW = "NEW"                     # created by a strategy, not yet through risk
    HELD = "HELD"                   # held for review by the risk layer
    ACCEPTED = "ACCEPTED"           # working at the venue
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class Order(msgspec.Struct, eq=False, gc=False):
    """A working order. ``id`` is the client order id: unique and stable, so resends are idempotent.

    ``qty`` is always positive; direction is ``side``. ``created_price`` is the last price the
    strategy saw when it placed the order (used for pre-trade cash checks).
    """

    id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    created_ts: int = 0
    created_price: float = math.nan
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    triggered: bool = False          # stop / stop-limit: the stop price has been reached
    reason: str = ""                 # why it was rejected, cancelled or expired
    tag: str = ""                    # free text set by the strategy

    @property
    def remaining(self) -> float:
        return self.qty - self.filled_qty

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side is Side.BUY else -self.qty

    @property
    def is_open(self) -> bool:
        return not self.status.is_final


class Fill(msgspec.Struct, frozen=True, gc=False):
    """One execution: ``qty`` > 0, direction in ``side``; ``commission`` is in account currency."""

    order_id: str
    ts: int
    symbol: str
    side: Side
    qty: float
    price: float
    commission: float

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side is Side.BUY else -self.qty


class OrderEvent(msgspec.Struct, frozen=True, gc=False):
    """A change of an order's status (accepted, rejected, held, cancelled, expired, filled)."""

    ts: int
    order_id: str
    symbol: str
    status: OrderStatus
    reason: str = ""
