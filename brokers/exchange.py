"""Exchange simulator: a FIX 4.4 acceptor that matches orders with the backtest's SimulatedVenue rules.

Orders arrive as NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest /
OrderStatusRequest and are answered with ExecutionReports and OrderCancelRejects. Market data
comes in through :meth:`ExchangeSimulator.on_bar` / :meth:`on_tick`, fed by a :class:`BarFeed`
(a JSON-lines TCP port, stdin, or MQTT with lockstep acks: :mod:`tradeloop.brokers.exchange_feed`). Fills
follow ``brokers.sim.FillRules`` exactly, because the matching *is* :class:`tradeloop.brokers.sim.SimulatedVenue`.
A bar at or before the last bar processed for its symbol (a tick before the last tick) is ignored,
also across a restart on the same state file, so data re-published after a restart is not matched twice.

Sequence numbers, sent messages, working orders and ID counters live in one SQLite state
file and change in the same transaction as the messages they produce, so a simulator killed
at any moment and restarted on the same file loses and duplicates nothing.

Run it: ``python -m tradeloop.brokers.exchange --port 9878 --sender EXCH --target TRADER --password-env VAR``
(add ``--rules RULES.json`` for a run's fill rules, written by ``tradeloop.brokers.fill_config.write_rules``, and
``--mqtt mqtt://127.0.0.1:1883 --venue sim --interval 1d`` for market data from MQTT).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from tradeloop.data.schema import Bar, Tick

from tradeloop.brokers.fill_config import load_rules
from tradeloop.brokers.fix.codec import Msg
from tradeloop.brokers.fix.mapping import ExecType, ORD_STATUS_TO_FIX, execution_report, order_from_message
from tradeloop.brokers.fix.secrets import SecretError, load_password
from tradeloop.brokers.fix.session import FixSession, SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import SQLiteSequenceStore
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, Side
from tradeloop.brokers.settlement import PriorCloses, Settlement
from tradeloop.brokers.sim import FillRules, SimulatedVenue

_EPS = 1e-9


class MarketSink(Protocol):
    """Where a feed delivers market data."""

    def on_bar(self, bar: Bar) -> object: ...

    def on_tick(self, tick: Tick) -> object: ...


class BarFeed(Protocol):
    """A market-data input of the simulator (JSON lines over TCP, stdin, MQTT)."""

    async def start(self, sink: MarketSink) -> None: ...

    async def close(self) -> None: ...


def decode_market_line(line: bytes | str) -> Bar | Tick:
    """One JSON object: a Bar (symbol, ts, open, high, low, close, volume) or a Tick (has ``price``)."""
    obj = msgspec.json.decode(line)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    return msgspec.convert(obj, Tick if "price" in obj else Bar)


class JsonLineBarServer:
    """Market data over TCP: one JSON bar or tick per line, each answered ``ok <ts>`` once matched."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: asyncio.AbstractServer | None = None
        self._sink: MarketSink | None = None

    async def start(self, sink: MarketSink) -> None:
        self._sink = sink
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    event = decode_market_line(line)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
                    writer.write(f"error {e}\n".encode())
                else:
                    (self._sink.on_tick if isinstance(event, Tick) else self._sink.on_bar)(event)  # type: ignore[union-attr]
                    writer.write(f"ok {event.ts}\n".encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class StdinBarFeed:
    """Market data as JSON lines on standard input (no replies)."""

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None

    async def start(self, sink: MarketSink) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def pump() -> None:
            while line := await reader.readline():
                if line.strip():
                    event = decode_market_line(line)
                    (sink.on_tick if isinstance(event, Tick) else sink.on_bar)(event)

        self._task = asyncio.create_task(pump())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class _Rec:
    """One order at the exchange: its exchange OrderID, the ClOrdID it is known by now, the venue order."""

    order_id: str
    clordid: str
    order: Order


class _ReportSink:
    """The venue's FillSink and Account: every fill and status change becomes an ExecutionReport;
    previous closes and T+1 come from the same ``tradeloop.brokers.settlement`` classes the engine uses."""

    def __init__(self, exchange: "ExchangeSimulator") -> None:
        self.x = exchange

    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        return None  # the exchange does not know the trader's account

    def on_fill(self, fill: Fill, order: Order) -> None:
        self.x._position_after(fill)
        self.x._report(order, ExecType.TRADE, fill.ts, last=fill)

    def pre_close(self, symbol: str) -> float:
        """The last close of the prior day (NaN on the first day seen), as the live market computes it."""
        return self.x.closes.prev_close(symbol)

    def sellable(self, symbol: str) -> float:
        """The trader's position from this exchange's fills, less (with T+1) what it bought today."""
        return self.x.settlement.sellable(symbol, self.x.positions.get(symbol, 0.0), self.x.clock)

    def on_order_event(self, event: OrderEvent, order: Order) -> None:
        if self.x._silent or event.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            return
        kind = {OrderStatus.ACCEPTED: ExecType.NEW, OrderStatus.CANCELLED: ExecType.CANCELED,
                OrderStatus.EXPIRED: ExecType.EXPIRED, OrderStatus.REJECTED: ExecType.REJECTED}[event.status]
        self.x._report(order, kind, event.ts, text=event.reason or None)


class ExchangeSimulator:
    """FIX 4.4 acceptor + SimulatedVenue; state (sequence numbers, orders) in one SQLite file."""

    supported = frozenset({MsgType.NewOrderSingle, MsgType.OrderCancelRequest, MsgType.OrderCancelReplaceRequest,
                           MsgType.OrderStatusRequest})

    def __init__(self, config: SessionConfig, *, state: str | Path | None = None, rules: FillRules | None = None,
                 host: str = "127.0.0.1", port: int = 0, feeds: list[BarFeed] | None = None,
                 use_transact_time: bool = True, positions: dict[str, float] | None = None,
                 log: Any = None) -> None:
        self.config = config
        self.host, self.port = host, port
        self.log = log or structlog.get_logger("exchange")
        self.rules = rules or FillRules()
        self.feeds = list(feeds or [])
        self.use_transact_time = use_transact_time
        session_id = f"{config.begin_string}:{config.sender_comp_id}->{config.target_comp_id}"
        self.store = SQLiteSequenceStore(":memory:" if state is None else state, session_id)
        self.session = FixSession(config, self.store, self, log=log)
        self.venue = SimulatedVenue(self.rules, _ReportSink(self))
        self.clock = 0
        self._recs: dict[str, _Rec] = {}
        self._clordids: dict[str, str] = {}  # every ClOrdID seen -> exchange OrderID ("" if none)
        self._last_bar: dict[str, Bar] = {}
        self._last_ts: dict[tuple[str, str], int] = {}  # (symbol, "bar"/"tick") -> ts of the last one processed
        self.ignored = 0  # bars/ticks not newer than the last processed (re-published data)
        self.closes = PriorCloses()                                    # for price limits
        self.settlement = Settlement(self.rules.market is not None and self.rules.market.t_plus_1)
        self.positions: dict[str, float] = {}   # the trader's, from this exchange's fills (T+1 sellable)
        self._counters = {"order": 0, "exec": 0}
        self._dirty: set[str] = set()
        self._silent = False
        self._report_ids: tuple[str, str | None] | None = None  # (ClOrdID, OrigClOrdID) for the next report
        self._server: asyncio.AbstractServer | None = None
        self._load()
        for symbol, qty in (positions or {}).items():  # holdings from before this exchange (T+1 sellable)
            if symbol not in self.positions:
                self.positions[symbol] = float(qty)
                with self.store.atomic():
                    self._save_symbol(symbol)

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        db = self.store.db
        db.executescript(
            "CREATE TABLE IF NOT EXISTS exch_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS exch_order (order_id TEXT PRIMARY KEY, clordid TEXT NOT NULL,"
            " data BLOB NOT NULL, open INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS exch_clordid (clordid TEXT PRIMARY KEY, order_id TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS exch_symbol (symbol TEXT PRIMARY KEY, data BLOB NOT NULL);"
            "CREATE TABLE IF NOT EXISTS exch_last_ts (symbol TEXT NOT NULL, kind TEXT NOT NULL,"
            " ts INTEGER NOT NULL, PRIMARY KEY (symbol, kind));")
        self._last_ts = {(symbol, kind): int(ts) for symbol, kind, ts in
                         db.execute("SELECT symbol, kind, ts FROM exch_last_ts")}
        for symbol, data in db.execute("SELECT symbol, data FROM exch_symbol"):
            day, prior, last, pos, buy_day, bought = msgspec.msgpack.decode(data)
            self.closes.restore(symbol, day, prior, last)
            self.positions[symbol] = float(pos)
            self.settlement.restore(symbol, buy_day, bought)
        for key, value in db.execute("SELECT key, value FROM exch_meta"):
            if key == "clock":
                self.clock = int(value)
            else:
                self._counters[key] = int(value)
        self._clordids = dict(db.execute("SELECT clordid, order_id FROM exch_clordid"))
        restored = 0
        for order_id, clordid, data, is_open in db.execute("SELECT order_id, clordid, data, open FROM exch_order"):
            order = msgspec.msgpack.decode(data, type=Order)
            self._recs[order_id] = _Rec(order_id, clordid, order)
            if is_open:
                status = order.status
                self._silent = True
                try:
                    self.venue.submit(order, order.created_ts)
                finally:
                    self._silent = False
                order.status = status
                restored += 1
        if self._recs:
            self.log.info("exchange.state_loaded", orders=len(self._recs), working=restored, clock=self.clock,
                          next_sender_seq=self.store.next_sender_seq, next_target_seq=self.store.next_target_seq)

    def _next(self, kind: str) -> int:
        n = self._counters[kind] + 1
        self._counters[kind] = n
        self.store.db.execute("INSERT OR REPLACE INTO exch_meta VALUES (?, ?)", (kind, n))
        return n

    def _save_symbol(self, symbol: str) -> None:
        """Write the symbol's row: [day of the last bar, prior day's close, last close, position,
        day of the last buy, bought that day] (inside the current unit)."""
        row = [*self.closes.state(symbol), self.positions.setdefault(symbol, 0.0), *self.settlement.state(symbol)]
        self.store.db.execute("INSERT OR REPLACE INTO exch_symbol VALUES (?, ?)",
                              (symbol, msgspec.msgpack.encode(row)))

    def _position_after(self, fill: Fill) -> None:
        self.settlement.on_fill(fill)
        self.positions[fill.symbol] = self.positions.get(fill.symbol, 0.0) + fill.signed_qty
        self._save_symbol(fill.symbol)

    def _remember(self, clordid: str, order_id: str) -> None:
        self._clordids[clordid] = order_id
        self.store.db.execute("INSERT OR REPLACE INTO exch_clordid VALUES (?, ?)", (clordid, order_id))

    def _save_dirty(self) -> None:
        for order_id in self._dirty:
            rec = self._recs[order_id]
            self.store.db.execute("INSERT OR REPLACE INTO exch_order VALUES (?, ?, ?, ?)",
                                  (order_id, rec.clordid, msgspec.msgpack.encode(rec.order), int(rec.order.is_open)))
        self._dirty.clear()

    # ------------------------------------------------------------------ serving
    async def start(self) -> None:
        """Listen for the trader's FIX connection and start the market-data feeds."""
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        for feed in self.feeds:
            await feed.start(self)
        self.log.info("exchange.listening", host=self.host, port=self.port,
                      sender=self.config.sender_comp_id, target=self.config.target_comp_id)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.session.connected:
            self.log.warning("exchange.second_connection_refused", peer=str(writer.get_extra_info("peername")))
            writer.close()
            return
        await self.session.run(reader, writer, initiator=False)

    async def stop(self) -> None:
        """Log the trader out, stop listening and close the state file."""
        for feed in self.feeds:
            await feed.close()
        if self._server is not None:
            self._server.close()
        if self.session.connected:
            await self.session.logout("exchange shutting down")
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.store.close()

    # ------------------------------------------------------------------ market data
    def on_bar(self, bar: Bar) -> bool:
        """Match working orders against ``bar`` with the venue's rules and report what happened; False if ignored."""
        if not self._is_new(bar.symbol, "bar", bar.ts, equal_is_old=True):
            return False
        with self.session.unit():
            self._processed(bar.symbol, "bar", bar.ts)
            self._advance(bar.ts)
            self._last_bar[bar.symbol] = bar
            self.closes.on_bar(bar.symbol, bar.ts, bar.close)
            self._save_symbol(bar.symbol)
            if bar.symbol in self.venue.working:
                self.venue.on_bar(bar.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
            self._save_dirty()
        return True

    def on_tick(self, tick: Tick) -> bool:
        """Match working orders at a trade price (as the engine does for ticks); False if ignored."""
        if not self._is_new(tick.symbol, "tick", tick.ts, equal_is_old=False):  # two trades may share a stamp
            return False
        with self.session.unit():
            self._processed(tick.symbol, "tick", tick.ts)
            self._advance(tick.ts)
            if tick.symbol in self.venue.working:
                p = tick.price
                self.venue.on_bar(tick.symbol, tick.ts, p, p, p, p, tick.size)
            self._save_dirty()
        return True

    def _is_new(self, symbol: str, kind: str, ts: int, *, equal_is_old: bool) -> bool:
        """False (and logged) for market data at or before the last of its symbol and kind already processed."""
        last = self._last_ts.get((symbol, kind))
        if last is None or ts > last or (ts == last and not equal_is_old):
            return True
        self.ignored += 1
        self.log.debug("exchange.stale_market_data_ignored", symbol=symbol, kind=kind, ts=ts, last=last)
        return False

    def _processed(self, symbol: str, kind: str, ts: int) -> None:
        """Remember (in the state file, inside the current unit) the last market data processed for ``symbol``."""
        self._last_ts[(symbol, kind)] = ts
        self.store.db.execute("INSERT OR REPLACE INTO exch_last_ts VALUES (?, ?, ?)", (symbol, kind, ts))

    def _advance(self, ts: int) -> None:
        if ts > self.clock:
            self.clock = ts
            self.store.db.execute("INSERT OR REPLACE INTO exch_meta VALUES ('clock', ?)", (ts,))

    # ------------------------------------------------------------------ Application
    def on_logon(self, session: FixSession) -> None:
        self.log.info("exchange.trader_logged_on")

    def on_logout(self, session: FixSession, reason: str) -> None:
        self.log.info("exchange.trader_logged_out", reason=reason)

    def on_reject(self, session: FixSession, msg: Msg) -> None:
        pass

    def on_message(self, session: FixSession, msg: Msg) -> None:
        mt = msg.msg_type
        clordid = msg[Tag.ClOrdID]
        if mt != MsgType.OrderStatusRequest and clordid in self._clordids and msg.poss_dup:
            self.log.info("exchange.duplicate_request_ignored", clordid=clordid, msg_type=mt)
            return
        with session.unit():
            if mt == MsgType.NewOrderSingle:
                self._new_order(msg)
            elif mt == MsgType.OrderCancelRequest:
                self._cancel(msg)
            elif mt == MsgType.OrderCancelReplaceRequest:
                self._replace(msg)
            else:
                self._status(msg)
            self._save_dirty()

    def _created_ts(self, msg: Msg) -> int:
        """When the order counts as placed: the exchange clock, or the trader's TransactTime if later."""
        if not self.use_transact_time:
            return self.clock
        return max(self.clock, msg.time_ns(Tag.TransactTime) or 0)

    def _new_order(self, msg: Msg) -> None:
        clordid = msg[Tag.ClOrdID]
        if clordid in self._clordids:
            self._reject_new(msg, 6, "Duplicate ClOrdID")
            return
        order_id = f"X{self._next('order'):08d}"
        order = order_from_message(msg, order_id, self._created_ts(msg))
        if isinstance(order, str):
            self._remember(clordid, "")
            self._reject_new(msg, 11 if order.startswith("unsupported") else 99, order)
            return
        self._remember(clordid, order_id)
        self._recs[order_id] = _Rec(order_id, clordid, order)
        self._dirty.add(order_id)
        self.venue.submit(order, order.created_ts)
        bar = self._last_bar.get(order.symbol)
        if self.rules.fill_at == "close" and bar is not None and bar.ts == order.created_ts:
            self.venue.on_close(order.symbol, bar.ts, bar.close, bar.volume)

    def _reject_new(self, msg: Msg, reason: int, text: str) -> None:
        self.log.info("exchange.order_rejected", clordid=msg[Tag.ClOrdID], reason=text)
        self.session.send(MsgType.ExecutionReport, [
            (Tag.OrderID, "NONE"), (Tag.ClOrdID, msg[Tag.ClOrdID]), (Tag.ExecID, self._exec_id()),
            (Tag.ExecType, ExecType.REJECTED), (Tag.OrdStatus, "8"), (Tag.OrdRejReason, reason),
            (Tag.Symbol, msg[Tag.Symbol]), (Tag.Side, msg[Tag.Side]), (Tag.OrderQty, msg.get(Tag.OrderQty)),
            (Tag.LeavesQty, 0.0), (Tag.CumQty, 0.0), (Tag.AvgPx, 0.0), (Tag.Text, text)])

    def _lookup(self, msg: Msg, response_to: str) -> _Rec | None:
        """The working order a cancel/replace refers to, or None after sending an OrderCancelReject."""
        orig, clordid = msg[Tag.OrigClOrdID], msg[Tag.ClOrdID]
        rec = self._recs.get(self._clordids.get(orig, ""))
        reason, text = None, ""
        if clordid in self._clordids:
            reason, text = 99, "Duplicate ClOrdID"
        elif rec is None:
            reason, text = 1, f"Unknown order {orig}"
        elif rec.order.status.is_final:
            reason, text = 0, f"Too late: order is {rec.order.status.value}"
        elif msg[Tag.Symbol] != rec.order.symbol or msg[Tag.Side] != ("1" if rec.order.side is Side.BUY else "2"):
            reason, text = 99, "Symbol or Side does not match the order"
        if clordid not in self._clordids:
            self._remember(clordid, rec.order_id if rec else "")
        if reason is None:
            return rec
        self.log.info("exchange.cancel_rejected", clordid=clordid, orig=orig, reason=text)
        self.session.send(MsgType.OrderCancelReject, [
            (Tag.OrderID, rec.order_id if rec else "NONE"), (Tag.ClOrdID, clordid), (Tag.OrigClOrdID, orig),
            (Tag.OrdStatus, ORD_STATUS_TO_FIX[rec.order.status] if rec else "8"),
            (Tag.CxlRejResponseTo, response_to), (Tag.CxlRejReason, reason), (Tag.Text, text)])
        return None

    def _cancel(self, msg: Msg) -> None:
        rec = self._lookup(msg, "1")
        if rec is None:
            return
        self._report_ids = (msg[Tag.ClOrdID], msg[Tag.OrigClOrdID])
        try:
            self.venue.cancel(rec.order, self.clock, "cancelled on request")
        finally:
            self._report_ids = None
        rec.clordid = msg[Tag.ClOrdID]
        self._dirty.add(rec.order_id)

    def _replace(self, msg: Msg) -> None:
        rec = self._lookup(msg, "2")
        if rec is None:
            return
        old = rec.order
        new = order_from_message(msg, rec.order_id, self.clock)
        problem = new if isinstance(new, str) else None
        if isinstance(new, Order) and new.qty <= old.filled_qty + _EPS:
            problem = f"OrderQty {new.qty:g} is not above CumQty {old.filled_qty:g}"
        if problem is not None:
            self.session.send(MsgType.OrderCancelReject, [
                (Tag.OrderID, rec.order_id), (Tag.ClOrdID, msg[Tag.ClOrdID]), (Tag.OrigClOrdID, msg[Tag.OrigClOrdID]),
                (Tag.OrdStatus, ORD_STATUS_TO_FIX[old.status]), (Tag.CxlRejResponseTo, "2"),
                (Tag.CxlRejReason, 99), (Tag.Text, problem)])
            return
        assert isinstance(new, Order)
        new.filled_qty, new.avg_fill_price = old.filled_qty, old.avg_fill_price
        if new.type is old.type and new.stop_price == old.stop_price:
            new.triggered = old.triggered
        self._silent = True
        try:
            self.venue.cancel(old, self.clock, "replaced")
            self.venue.submit(new, new.created_ts)
        finally:
            self._silent = False
        if new.filled_qty > 0:
            new.status = OrderStatus.PARTIALLY_FILLED
        rec.order, rec.clordid = new, msg[Tag.ClOrdID]
        self._dirty.add(rec.order_id)
        self._report_ids = (msg[Tag.ClOrdID], msg[Tag.OrigClOrdID])
        try:
            self._report(new, ExecType.REPLACED, self.clock)
        finally:
            self._report_ids = None

    def _status(self, msg: Msg) -> None:
        rec = self._recs.get(self._clordids.get(msg[Tag.ClOrdID], ""))
        if rec is None:
            self.session.send(MsgType.ExecutionReport, [
                (Tag.OrderID, "NONE"), (Tag.ClOrdID, msg[Tag.ClOrdID]), (Tag.ExecID, self._exec_id()),
                (Tag.ExecType, ExecType.ORDER_STATUS), (Tag.OrdStatus, "8"), (Tag.Symbol, msg[Tag.Symbol]),
                (Tag.Side, msg[Tag.Side]), (Tag.LeavesQty, 0.0), (Tag.CumQty, 0.0), (Tag.AvgPx, 0.0),
                (Tag.Text, "Unknown order")])
            return
        self._report(rec.order, ExecType.ORDER_STATUS, self.clock)

    def _exec_id(self) -> str:
        return f"{self.config.sender_comp_id}-E{self._next('exec'):08d}"

    def _report(self, order: Order, exec_type: str, ts: int, *, last: Fill | None = None,
                text: str | None = None) -> None:
        """Send one ExecutionReport for ``order`` (called inside a session unit)."""
        rec = self._recs[order.id]
        self._dirty.add(order.id)
        clordid, orig = self._report_ids or (rec.clordid, None)
        body = execution_report(order, order_id=rec.order_id, clordid=clordid, orig_clordid=orig,
                                exec_id=self._exec_id(), exec_type=exec_type, ts=ts,
                                last_qty=last.qty if last else None, last_px=last.price if last else None,
                                commission=last.commission if last else None, text=text)
        self.session.send(MsgType.ExecutionReport, body)


# ---------------------------------------------------------------------------- command line
def _configure_logging(json_logs: bool, level: str) -> None:
    renderer = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr), cache_logger_on_first_use=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tradeloop.brokers.exchange",
                                description="FIX 4.4 exchange simulator matching with the backtest's fill rules.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9878, help="FIX port (0: any free port)")
    p.add_argument("--sender", default="EXCH", help="our SenderCompID")
    p.add_argument("--target", default="TRADER", help="the trader's CompID")
    p.add_argument("--username", default=None, help="Username(553) the trader must send")
    p.add_argument("--password-env", metavar="VAR", help="environment variable holding the required Password(554)")
    p.add_argument("--password-file", metavar="PATH", help="0600 file holding the required Password(554)")
    p.add_argument("--state", default=None, help="SQLite state file (default: exchange-SENDER-TARGET.sqlite)")
    p.add_argument("--bars-port", type=int, default=None, help="JSON-lines market data port (0: any free port)")
    p.add_argument("--bars-stdin", action="store_true", help="read JSON-lines market data from stdin")
    p.add_argument("--mqtt", metavar="URL", default=None,
                   help="market data from this MQTT broker (mqtt:// or mqtts://): every bar/tick of --venue, "
                        "and an md/<venue>/$ack/exchange for each $clock (lockstep). Credentials: "
                        "TRADELOOP_MQTT_USERNAME / TRADELOOP_MQTT_PASSWORD in the environment")
    p.add_argument("--venue", default="sim", help="venue level of the MQTT topics (default sim)")
    p.add_argument("--interval", default="1d", help="bar interval level of the MQTT topics (default 1d)")
    p.add_argument("--tls-ca", help="CA file to verify the MQTT broker (turns TLS on)")
    p.add_argument("--tls-cert", help="client certificate file for the MQTT broker")
    p.add_argument("--tls-key", help="client key file for the MQTT broker")
    p.add_argument("--rules", metavar="RULES.json", default=None,
                   help="the fill rules as JSON (brokers/fill_config.py: fill_at, participation, lot_size, "
                        "commission, slippage, market); default: next bar's open, no costs, no market rules")
    p.add_argument("--clock-only", action="store_true",
                   help="orders count as placed at the exchange clock, ignoring the trader's TransactTime")
    p.add_argument("--log-json", action="store_true")
    p.add_argument("--log-level", default="info")
    return p


def rules_from_args(args: argparse.Namespace) -> FillRules:
    """The fill rules of ``--rules`` (defaults without it); a one-line ValueError naming a bad file."""
    return load_rules(args.rules) if args.rules else FillRules()


def mqtt_feed_from_args(args: argparse.Namespace) -> BarFeed | None:
    """The MQTT market-data feed the command line asks for (None without ``--mqtt``); ValueError on bad settings."""
    if not args.mqtt:
        return None
    from tradeloop.data.mqtt import TlsConfig

    from tradeloop.brokers.exchange_feed import MqttBarFeed
    tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key) if (args.tls_ca or args.tls_cert) else None
    try:
        return MqttBarFeed(args.mqtt, venue=args.venue, interval=args.interval, tls=tls)
    except OSError as e:  # ssl names no file: say which settings were read
        raise ValueError(f"cannot load the MQTT TLS files (ca={args.tls_ca}, cert={args.tls_cert}, "
                         f"key={args.tls_key}): {e}") from None


async def _serve(args: argparse.Namespace, password: str | None, rules: FillRules,
                 mqtt_feed: BarFeed | None = None) -> None:
    feeds: list[BarFeed] = []
    bar_server = None
    if args.bars_port is not None:
        bar_server = JsonLineBarServer(args.host, args.bars_port)
        feeds.append(bar_server)
    if args.bars_stdin:
        feeds.append(StdinBarFeed())
    if mqtt_feed is not None:
        feeds.append(mqtt_feed)
    config = SessionConfig(args.sender, args.target, username=args.username, password=password)
    state = args.state or f"exchange-{args.sender}-{args.target}.sqlite"
    exchange = ExchangeSimulator(config, state=state, rules=rules, host=args.host, port=args.port, feeds=feeds,
                                 use_transact_time=not args.clock_only)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await exchange.start()
    ready = {"event": "ready", "fix_port": exchange.port, "bars_port": bar_server.port if bar_server else None,
             "state": str(Path(state).resolve()), "mqtt": args.mqtt}
    print(json.dumps(ready), flush=True)
    await done.wait()
    await exchange.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tradeloop.brokers.exchange`` (and later ``tradeloop exchange``)."""
    args = build_parser().parse_args(argv)
    try:
        password = load_password(args.password_env, args.password_file)
        rules = rules_from_args(args)
        mqtt_feed = mqtt_feed_from_args(args)
    except (SecretError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _configure_logging(args.log_json, args.log_level)
    try:
        asyncio.run(_serve(args, password, rules, mqtt_feed))
    except (OSError, RuntimeError) as e:  # e.g. the MQTT broker refused the credentials: report, do not trace back
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
