"""Mapping between brokers.orders (Order, Fill, statuses) and FIX 4.4 application messages."""
from __future__ import annotations

import math

from tradeloop.brokers.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.fix.codec import Msg, utc_timestamp
from tradeloop.brokers.fix.spec import Tag
from tradeloop.data.validate import MAX_PRICE, MAX_VOLUME

# An order's quantity and prices must be finite, positive and at most these (the bounds a bar's volume
# and prices have in data/validate.py): beyond them money arithmetic is no longer exact, or overflows.
MAX_ORDER_QTY = MAX_VOLUME
MAX_ORDER_PRICE = MAX_PRICE
MAX_CLORDID_LEN = 64   # longest ClOrdID/OrigClOrdID the exchange takes (each one seen is kept)

SIDE_TO_FIX = {Side.BUY: "1", Side.SELL: "2"}
FIX_TO_SIDE = {v: k for k, v in SIDE_TO_FIX.items()}
ORD_TYPE_TO_FIX = {OrderType.MARKET: "1", OrderType.LIMIT: "2", OrderType.STOP: "3", OrderType.STOP_LIMIT: "4"}
FIX_TO_ORD_TYPE = {v: k for k, v in ORD_TYPE_TO_FIX.items()}
TIF_TO_FIX = {TimeInForce.DAY: "0", TimeInForce.GTC: "1", TimeInForce.IOC: "3"}
FIX_TO_TIF = {v: k for k, v in TIF_TO_FIX.items()}

ORD_STATUS_TO_FIX = {
    OrderStatus.NEW: "A",               # Pending New
    OrderStatus.HELD: "A",
    OrderStatus.ACCEPTED: "0",          # New
    OrderStatus.PARTIALLY_FILLED: "1",
    OrderStatus.FILLED: "2",
    OrderStatus.CANCELLED: "4",
    OrderStatus.REJECTED: "8",
    OrderStatus.EXPIRED: "C",
}
FIX_TO_ORD_STATUS = {
    "0": OrderStatus.ACCEPTED, "1": OrderStatus.PARTIALLY_FILLED, "2": OrderStatus.FILLED,
    "3": OrderStatus.EXPIRED,  # Done for day
    "4": OrderStatus.CANCELLED, "5": OrderStatus.ACCEPTED, "8": OrderStatus.REJECTED, "C": OrderStatus.EXPIRED,
}  # 6 Pending Cancel, A Pending New, E Pending Replace and the rest leave the status as it is


class ExecType:
    """ExecType (150) values of FIX 4.4."""

    NEW = "0"
    DONE_FOR_DAY = "3"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    REJECTED = "8"
    EXPIRED = "C"
    PENDING_REPLACE = "E"
    TRADE = "F"
    ORDER_STATUS = "I"


EXEC_TYPE_FOR_STATUS = {
    OrderStatus.ACCEPTED: ExecType.NEW, OrderStatus.CANCELLED: ExecType.CANCELED,
    OrderStatus.REJECTED: ExecType.REJECTED, OrderStatus.EXPIRED: ExecType.EXPIRED,
}


def _transact(ts: int) -> str:
    return utc_timestamp(ts, exact=True) if ts > 0 else utc_timestamp()


def _prices(kind: OrderType, limit: float | None, stop: float | None) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        out.append((Tag.Price, float(limit)))
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT):
        out.append((Tag.StopPx, float(stop)))
    return out


def new_order_single(order: Order) -> list[tuple[int, object]]:
    """NewOrderSingle (35=D) body: ClOrdID = ``order.id``; TransactTime = ``order.created_ts`` (else now)."""
    return [(Tag.ClOrdID, order.id), (Tag.HandlInst, "1"), (Tag.Symbol, order.symbol),
            (Tag.Side, SIDE_TO_FIX[order.side]), (Tag.TransactTime, _transact(order.created_ts)),
            (Tag.OrderQty, float(order.qty)), (Tag.OrdType, ORD_TYPE_TO_FIX[order.type]),
            *_prices(order.type, order.limit_price, order.stop_price),
            (Tag.TimeInForce, TIF_TO_FIX[order.tif])]


def cancel_request(order: Order, clordid: str, orig_clordid: str) -> list[tuple[int, object]]:
    """OrderCancelRequest (35=F) body for the working order last known as ``orig_clordid``."""
    return [(Tag.OrigClOrdID, orig_clordid), (Tag.ClOrdID, clordid), (Tag.Symbol, order.symbol),
            (Tag.Side, SIDE_TO_FIX[order.side]), (Tag.TransactTime, _transact(0)), (Tag.OrderQty, float(order.qty))]


def replace_request(order: Order, clordid: str, orig_clordid: str, qty: float, limit: float | None,
                    stop: float | None) -> list[tuple[int, object]]:
    """OrderCancelReplaceRequest (35=G) body: ``qty`` is the new total quantity (filled part included)."""
    return [(Tag.OrigClOrdID, orig_clordid), (Tag.ClOrdID, clordid), (Tag.HandlInst, "1"),
            (Tag.Symbol, order.symbol), (Tag.Side, SIDE_TO_FIX[order.side]), (Tag.TransactTime, _transact(0)),
            (Tag.OrderQty, float(qty)), (Tag.OrdType, ORD_TYPE_TO_FIX[order.type]),
            *_prices(order.type, limit, stop), (Tag.TimeInForce, TIF_TO_FIX[order.tif])]


def status_request(order: Order, clordid: str) -> list[tuple[int, object]]:
    """OrderStatusRequest (35=H) body."""
    return [(Tag.ClOrdID, clordid), (Tag.Symbol, order.symbol), (Tag.Side, SIDE_TO_FIX[order.side])]


def _in_range(x: float | None, most: float) -> bool:
    return x is not None and math.isfinite(x) and 0 < x <= most


def order_from_message(msg: Msg, order_id: str, created_ts: int, *, max_qty: float = MAX_ORDER_QTY,
                       max_price: float = MAX_ORDER_PRICE) -> Order | str:
    """The :class:`Order` a NewOrderSingle or OrderCancelReplaceRequest asks for, or why it cannot be taken.

    OrderQty, Price and StopPx must be finite, positive and at most ``max_qty`` / ``max_price`` (a
    value of 400 digits parses to infinity; 1e308 is finite but no market's).
    """
    side = FIX_TO_SIDE.get(msg.get(Tag.Side, ""))
    if side is None:
        return f"unsupported Side(54)={msg.get(Tag.Side)}"
    kind = FIX_TO_ORD_TYPE.get(msg.get(Tag.OrdType, ""))
    if kind is None:
        return f"unsupported OrdType(40)={msg.get(Tag.OrdType)}"
    tif = FIX_TO_TIF.get(msg.get(Tag.TimeInForce, "0"))  # FIX: TimeInForce absent means Day
    if tif is None:
        return f"unsupported TimeInForce(59)={msg.get(Tag.TimeInForce)}"
    qty = _number(msg, Tag.OrderQty)
    if not _in_range(qty, max_qty):
        return f"OrderQty(38) must be a finite number in (0, {max_qty:g}], not {msg.get(Tag.OrderQty, '')[:40]!r}"
    limit = _number(msg, Tag.Price) if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    stop = _number(msg, Tag.StopPx) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) and not _in_range(limit, max_price):
        return (f"Price(44) is required for OrdType=2/4 and must be a finite number in (0, {max_price:g}], "
                f"not {msg.get(Tag.Price, '')[:40]!r}")
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and not _in_range(stop, max_price):
        return (f"StopPx(99) is required for OrdType=3/4 and must be a finite number in (0, {max_price:g}], "
                f"not {msg.get(Tag.StopPx, '')[:40]!r}")
    symbol = msg.get(Tag.Symbol, "")
    if not symbol or not symbol.isprintable() or len(symbol) > 64:
        return f"Symbol(55) must be 1 to 64 printable characters, not {symbol[:40]!r}"
    return Order(order_id, symbol, side, float(qty), kind, limit, stop, tif, created_ts)


def _number(msg: Msg, tag: int) -> float | None:
    """A float field, None when absent or not a number (a session that skipped validation)."""
    try:
        return msg.float(tag)
    except ValueError:
        return None


def execution_report(order: Order, *, order_id: str, clordid: str, exec_id: str, exec_type: str, ts: int,
                     orig_clordid: str | None = None, last_qty: float | None = None, last_px: float | None = None,
                     commission: float | None = None, text: str | None = None,
                     rej_reason: int | None = None) -> list[tuple[int, object]]:
    """ExecutionReport (35=8) body for ``order`` as it stands (its status, CumQty, AvgPx)."""
    final = order.status.is_final
    leaves = 0.0 if final else max(order.qty - order.filled_qty, 0.0)
    body: list[tuple[int, object]] = [
        (Tag.OrderID, order_id), (Tag.ClOrdID, clordid), (Tag.OrigClOrdID, orig_clordid),
        (Tag.ExecID, exec_id), (Tag.ExecType, exec_type), (Tag.OrdStatus, ORD_STATUS_TO_FIX[order.status]),
        (Tag.OrdRejReason, rej_reason), (Tag.Symbol, order.symbol), (Tag.Side, SIDE_TO_FIX[order.side]),
        (Tag.OrderQty, float(order.qty)), (Tag.OrdType, ORD_TYPE_TO_FIX[order.type]),
        *_prices(order.type, order.limit_price, order.stop_price), (Tag.TimeInForce, TIF_TO_FIX[order.tif]),
    ]
    if last_qty is not None:
        body += [(Tag.LastQty, float(last_qty)), (Tag.LastPx, float(last_px))]
    body += [(Tag.LeavesQty, float(leaves)), (Tag.CumQty, float(order.filled_qty)),
             (Tag.AvgPx, float(order.avg_fill_price)), (Tag.TransactTime, _transact(ts))]
    if commission is not None:
        body += [(Tag.Commission, float(commission)), (Tag.CommType, "3")]  # 3 = absolute
    body.append((Tag.Text, text or None))
    return body
