"""Exchange simulator: a FIX 4.4 acceptor that matches orders with the backtest's SimulatedVenue rules.

Orders arrive as NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest /
OrderStatusRequest and are answered with ExecutionReports and OrderCancelRejects. Market data
comes in through :meth:`ExchangeSimulator.on_bar` / :meth:`on_tick`, fed by a :class:`BarFeed`
(a JSON-lines TCP port, stdin, or MQTT with lockstep acks: :mod:`tradeloop.brokers.exchange_feed`). Fills
follow ``brokers.sim.FillRules`` exactly, because the matching *is* :class:`tradeloop.brokers.sim.SimulatedVenue`.
With tick rules (``quotes``: a rules file's ``"quotes"``) ticks are matched by the tick backtest's own
:class:`tradeloop.brokers.quotes.QuoteVenue` (quote-aware: buys at the ask, sells at the bid, displayed sizes);
without them a tick is matched as a one-price bar at its trade price.
A bar at or before the last bar processed for its symbol (a tick before the last tick) is ignored,
also across a restart on the same state file, so data re-published after a restart is not matched twice.

Sequence numbers, sent messages, working orders (with the venue's own state of each: arrival, queue
place; and its latency sampler, :class:`tradeloop.brokers.base.ResumableVenue`) and ID counters live in one
SQLite state file and change in the same transaction as the messages they produce, so a simulator killed
at any moment and restarted on the same file loses and duplicates nothing. An existing state file
that is empty, truncated or corrupt is refused (one line naming it, exit 2), never silently started
over; ``--fresh-state`` moves such a file aside (never deletes it) and starts fresh.

Hostile peers (see docs in :class:`ExchangeSimulator`): connections are accepted concurrently and
only one whose first message is a Logon with the right CompIDs and password (within
``--logon-timeout`` seconds, 5 by default) can take the session, so an idle or garbage-sending
socket never delays the trader. OrderQty, Price and StopPx must be finite, positive and in range
(brokers/fix/mapping.py); each order's handling is contained: a failure in one order undoes what it
did, is reported for that order alone, and never touches another order or the session.

Market data: bars and ticks with values the loaders would refuse (data/validate.py's rules),
stamped further ahead of this machine's clock than ``--max-future-tick-s`` (5 s) /
``--max-future-bar-s`` (one bar interval) (:class:`tradeloop.data.mqtt.FutureSkew`, the live
runner's setting too), or for a symbol the exchange does not serve are dropped and counted by
reason. The exchange serves the ``--symbols`` given; without that flag it takes data for any
symbol, but only data of a symbol it has received an order for moves its clock (the time new
orders count as placed at and T+1 is judged by), so another symbol's stray data cannot stop fills.

Run it: ``python -m tradeloop.brokers.exchange --port 9878 --sender EXCH --target TRADER --password-env VAR``
(add ``--rules RULES.json`` for a run's fill rules, written by ``tradeloop.brokers.fill_config.write_rules``, and
``--mqtt mqtt://127.0.0.1:1883 --venue sim --interval 1d`` for market data from MQTT).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import hmac
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import msgspec
import structlog

from tradeloop.data.mqtt.skew import FutureSkew
from tradeloop.data.mqtt.wire import bar_problem, tick_problem
from tradeloop.data.schema import Bar, Tick

from tradeloop.brokers.fill_config import load_exchange_rules
from tradeloop.brokers.quotes import QuoteRules, QuoteVenue
from tradeloop.brokers.fix.codec import Framer, Garbled, Msg, decode, encode, validate
from tradeloop.brokers.fix.mapping import (MAX_CLORDID_LEN, MAX_ORDER_PRICE, MAX_ORDER_QTY, ExecType, ORD_STATUS_TO_FIX, SIDE_TO_FIX,
                                           execution_report, order_from_message)
from tradeloop.brokers.fix.secrets import SecretError, load_password
from tradeloop.brokers.fix.session import FixSession, SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import SQLiteSequenceStore, StateFileError, check_state_file
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, Side
from tradeloop.brokers.settlement import PriorCloses, Settlement
from tradeloop.brokers.sim import FillRules, SimulatedVenue

_EPS = 1e-9
STATE_TABLES = ("fix_session", "exch_meta")   # what an exchange state file holds (brokers/fix/store.py)
LOG_BURST = 20                               # drop lines per reason per LOG_WINDOW seconds, then counted only
LOG_WINDOW = 10.0


@dataclass(frozen=True)
class AcceptorLimits:
    """What a connection that has not logged on may cost: time to send its Logon, bytes before it, how many wait.

    Only a Logon with the right CompIDs and password takes the session; the rest are closed when they
    fail or after ``logon_timeout_s``. Past ``max_pending`` waiting connections the oldest is closed, so
    a flood of idle sockets cannot keep the trader's connection from being served.
    """

    logon_timeout_s: float = 5.0
    max_logon_bytes: int = 16_384
    max_pending: int = 64


class MarketSink(Protocol):
    """Where a feed delivers market data."""

    def on_bar(self, bar: Bar) -> object: ...

    def on_tick(self, tick: Tick) -> object: ...


class BarFeed(Protocol):
    """A market-data input of the simulator (JSON lines over TCP, stdin, MQTT)."""

    async def start(self, sink: MarketSink) -> None: ...

    async def close(self) -> None: ...


_I64 = (-(2 ** 63), 2 ** 63 - 1)


def market_problem(event: Bar | Tick) -> str | None:
    """Why a bar's or tick's values are unusable (the loaders' rules: finite, positive bounded prices,
    high >= max(open, close), low <= min(open, close), volume >= 0; an int64 stamp); None if fine."""
    if not (isinstance(event.ts, int) and _I64[0] <= event.ts <= _I64[1]):
        return f"ts {event.ts!r} is not an int64 count of ns"
    if not event.symbol or not event.symbol.isprintable():
        return f"bad symbol {event.symbol[:40]!r}"
    if isinstance(event, Tick):
        return tick_problem(event)
    return bar_problem(event.open, event.high, event.low, event.close, event.volume)


def decode_market_line(line: bytes | str) -> Bar | Tick:
    """One JSON object: a Bar (symbol, ts, open, high, low, close, volume) or a Tick (has ``price``);
    ValueError for one the loaders would refuse (:func:`market_problem`)."""
    obj = msgspec.json.decode(line)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    event = msgspec.convert(obj, Tick if "price" in obj else Bar)
    problem = market_problem(event)
    if problem is not None:
        raise ValueError(f"refused {'tick' if isinstance(event, Tick) else 'bar'} of {event.symbol[:40]!r} "
                         f"at {event.ts}: {problem}")
    return event


class JsonLineBarServer:
    """Market data over TCP: one JSON bar or tick per line, each answered ``ok <ts>`` once matched,
    or ``error <why>`` when refused (not JSON, not a bar, or values the loaders would refuse)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, log: Any = None) -> None:
        self.host, self.port = host, port
        self.log = log or structlog.get_logger("exchange.bars")
        self.refused = 0
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
                    self.refused += 1
                    text = " ".join(str(e).split())[:300]
                    if self.refused <= LOG_BURST or self.refused % 1000 == 0:
                        self.log.warning("exchange.market_data_refused", reason=text, refused=self.refused)
                    writer.write(f"error {text}\n".encode())
                else:
                    try:
                        (self._sink.on_tick if isinstance(event, Tick) else self._sink.on_bar)(event)  # type: ignore[union-attr]
                    except Exception as e:  # noqa: BLE001  (one bar must never end the feed)
                        self.log.exception("exchange.market_data_failed", symbol=event.symbol, ts=event.ts)
                        writer.write(f"error internal: {type(e).__name__}\n".encode())
                    else:
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

    def stats(self) -> dict[str, Any]:
        """Lines refused (malformed or values out of the loaders' rules)."""
        return {"refused": self.refused}


class StdinBarFeed:
    """Market data as JSON lines on standard input (no replies)."""

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self.refused = 0

    async def start(self, sink: MarketSink) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def pump() -> None:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    event = decode_market_line(line)
                    (sink.on_tick if isinstance(event, Tick) else sink.on_bar)(event)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
                    self.refused += 1
                    structlog.get_logger("exchange.bars").warning("exchange.market_data_refused", reason=str(e)[:300])

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


@dataclass
class _Undo:
    """The in-memory state one unit of order handling may change, kept to put back if that unit fails
    (its state-file changes are undone by the unit's savepoint)."""

    recs: list[tuple[_Rec, Order, Order, str, bool]]   # (rec, its order, a copy of it, its ClOrdID, in the book)
    symbols: dict[str, tuple[tuple[int, float, float], float | None, tuple[int, float]]]
    new_clordids: set[str]
    counters: dict[str, int]
    traded: frozenset[str]
    venue_orders: dict[str, tuple | None]   # order id -> the venue's own state of it (arrival, queue place)
    venue: bytes | None                      # the venue-wide state (the latency sampler's RNG)


def _encoded(state: tuple | None) -> bytes | None:
    """A venue's state of an order as the state file holds it (msgpack; None stays NULL)."""
    return None if state is None else msgspec.msgpack.encode(state)


class _LogonRefused(Exception):
    """A connection's first message is no acceptable Logon; ``text`` goes back in a Logout (None: just close)."""

    def __init__(self, reason: str, text: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.text = reason, text


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
    """FIX 4.4 acceptor + SimulatedVenue; state (sequence numbers, orders) in one SQLite file.

    ``symbols``: the symbols served (None: any; then only those with orders move the clock);
    ``future``/``interval``: how far ahead of this machine's clock market data may be stamped;
    ``max_qty``/``max_price``: the largest OrderQty and Price/StopPx taken; ``limits``: what a
    connection that has not logged on may cost; ``fresh_state``: move a bad state file aside and
    start fresh instead of refusing it (:class:`~tradeloop.brokers.fix.store.StateFileError`).
    ``dropped`` counts the market data not taken, by reason: ``invalid`` (values the loaders refuse),
    ``future``, ``symbol`` (not served) and ``stale`` (at or before the last processed).
    """

    supported = frozenset({MsgType.NewOrderSingle, MsgType.OrderCancelRequest, MsgType.OrderCancelReplaceRequest,
                           MsgType.OrderStatusRequest})

    def __init__(self, config: SessionConfig, *, state: str | Path | None = None, rules: FillRules | None = None,
                 host: str = "127.0.0.1", port: int = 0, feeds: list[BarFeed] | None = None,
                 use_transact_time: bool = True, positions: dict[str, float] | None = None,
                 log: Any = None, symbols: Iterable[str] | None = None, future: FutureSkew | None = None,
                 interval: str = "1d", max_qty: float = MAX_ORDER_QTY, max_price: float = MAX_ORDER_PRICE,
                 limits: AcceptorLimits | None = None, fresh_state: bool = False,
                 quotes: QuoteRules | None = None) -> None:
        self.config = config
        self.quotes = quotes
        self.host, self.port = host, port
        self.log = log or structlog.get_logger("exchange")
        self.rules = rules or FillRules()
        self.feeds = list(feeds or [])
        self.use_transact_time = use_transact_time
        self.symbols = frozenset(symbols) if symbols is not None else None
        self.future = future or FutureSkew()
        self._lead_ns = {"bar": self.future.bar_ns(interval), "tick": self.future.tick_ns()}
        self.max_qty, self.max_price = max_qty, max_price
        self.limits = limits or AcceptorLimits()
        self.dropped: Counter[str] = Counter()
        self._drop_log: dict[str, tuple[float, int]] = {}
        if state is not None and str(state) != ":memory:":
            moved = check_state_file(state, STATE_TABLES, what="exchange", fresh=fresh_state)
            if moved is not None:
                self.log.warning("exchange.state_moved_aside", state=str(state), moved_to=str(moved))
        session_id = f"{config.begin_string}:{config.sender_comp_id}->{config.target_comp_id}"
        self.store = SQLiteSequenceStore(":memory:" if state is None else state, session_id)
        self.session = FixSession(config, self.store, self, log=log)
        self.venue: SimulatedVenue = (SimulatedVenue(self.rules, _ReportSink(self)) if quotes is None else
                                      QuoteVenue(self.rules, quotes, sink=_ReportSink(self)))
        self.clock = 0
        self._recs: dict[str, _Rec] = {}
        self._clordids: dict[str, str] = {}  # every ClOrdID seen -> exchange OrderID ("" if none)
        self._traded: set[str] = set()       # symbols with an order here: their data moves the clock
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
        self._pending: dict[asyncio.Task, asyncio.StreamWriter] = {}   # connections not logged on yet
        self._venue_saved: bytes | None = None   # the venue-wide state as the state file holds it
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
            " ts INTEGER NOT NULL, PRIMARY KEY (symbol, kind));"
            "CREATE TABLE IF NOT EXISTS exch_venue (key TEXT PRIMARY KEY, data BLOB NOT NULL);")
        if "venue" not in {row[1] for row in db.execute("PRAGMA table_info(exch_order)")}:
            # a state file from before the venue's per-order state: its orders get a fresh latency draw on load
            with self.store.atomic():
                db.execute("ALTER TABLE exch_order ADD COLUMN venue BLOB")
        for (data,) in db.execute("SELECT data FROM exch_venue WHERE key = 'state'"):
            self.venue.restore_venue_state(data)
        self._venue_saved = self.venue.venue_state()
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
        rows = db.execute("SELECT order_id, clordid, data, open, venue FROM exch_order").fetchall()
        for order_id, clordid, data, is_open, venue_state in rows:
            order = msgspec.msgpack.decode(data, type=Order)
            self._recs[order_id] = _Rec(order_id, clordid, order)
            self._traded.add(order.symbol)
            if is_open:
                self._resubmit(order, None if venue_state is None else msgspec.msgpack.decode(venue_state))
                restored += 1
                if venue_state is None and self.venue.order_state(order_id) is not None:
                    self._dirty.add(order_id)    # from an older state file: keep the state it has now
        if self._dirty:
            with self.store.atomic():
                self._save_dirty()
        if self._recs:
            self.log.info("exchange.state_loaded", orders=len(self._recs), working=restored, clock=self.clock,
                          next_sender_seq=self.store.next_sender_seq, next_target_seq=self.store.next_target_seq)

    def _resubmit(self, order: Order, state: Sequence | None) -> None:
        """Put a working order back in the book without a report, keeping its status and the venue's own state
        of it (``state``: arrival, queue place; None: the venue starts it afresh)."""
        status = order.status
        self._silent = True
        try:
            self.venue.restore_order_state(order.id, state)
            self.venue.submit(order, order.created_ts)
        finally:
            self._silent = False
        order.status = status

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
        """Write the changed orders (with the venue's own state of each) and, if it changed (a latency was
        drawn), the venue-wide state (inside the current unit)."""
        if not self._dirty:
            return
        venue = self.venue
        for order_id in self._dirty:
            rec = self._recs[order_id]
            self.store.db.execute(
                "INSERT OR REPLACE INTO exch_order (order_id, clordid, data, open, venue) VALUES (?, ?, ?, ?, ?)",
                (order_id, rec.clordid, msgspec.msgpack.encode(rec.order), int(rec.order.is_open),
                 _encoded(venue.order_state(order_id)) if rec.order.is_open else None))
        self._dirty.clear()
        state = venue.venue_state()
        if state != self._venue_saved:
            self.store.db.execute("INSERT OR REPLACE INTO exch_venue VALUES ('state', ?)", (state,))
            self._venue_saved = state

    # ------------------------------------------------------------------ containment
    def _in_book(self, order: Order) -> bool:
        return any(o is order for o in self.venue.working.get(order.symbol, ()))

    def _snapshot(self, recs: Iterable[_Rec], symbols: Iterable[str], clordids: Iterable[str]) -> _Undo:
        """What :meth:`_restore` needs to undo one unit's in-memory changes to ``recs`` and ``symbols``."""
        # an order here is in the venue's book exactly while it is open (submit and every final status keep it so)
        recs = list(recs)
        venue = self.venue
        return _Undo([(r, r.order, copy.copy(r.order), r.clordid, r.order.is_open) for r in recs],
                     {s: (self.closes.state(s), self.positions.get(s), self.settlement.state(s)) for s in symbols},
                     {c for c in clordids if c not in self._clordids}, dict(self._counters),
                     frozenset(self._traded), {r.order_id: venue.order_state(r.order_id) for r in recs},
                     venue.venue_state())

    def _restore(self, undo: _Undo) -> None:
        """Put the in-memory state back as :meth:`_snapshot` saw it (the unit's savepoint undid the file's)."""
        for n in range(undo.counters["order"] + 1, self._counters["order"] + 1):  # orders the unit created
            rec = self._recs.pop(f"X{n:08d}", None)
            if rec is not None:
                self.venue.discard(rec.order)
                self.venue.restore_order_state(rec.order_id, None)   # its id will be used again
                self._dirty.discard(rec.order_id)
        self._counters = dict(undo.counters)
        self.venue.restore_venue_state(undo.venue)
        for rec, order, saved, clordid, in_book in undo.recs:
            if rec.order is not order:
                self.venue.discard(rec.order)
            rec.order, rec.clordid = order, clordid
            for name in order.__struct_fields__:
                setattr(order, name, getattr(saved, name))
            state = undo.venue_orders[rec.order_id]
            if in_book and not self._in_book(order):
                self._resubmit(order, state)
            elif not in_book:
                self.venue.discard(order)
            self.venue.restore_order_state(rec.order_id, state)
            self._dirty.discard(rec.order_id)
        for symbol, (closes, pos, settled) in undo.symbols.items():
            self.closes.restore(symbol, *closes)
            if pos is None:
                self.positions.pop(symbol, None)
            else:
                self.positions[symbol] = pos
            self.settlement.restore(symbol, *settled)
        for clordid in undo.new_clordids:
            self._clordids.pop(clordid, None)
        self._traded = set(undo.traded)
        self._silent = False
        self._report_ids = None

    def _contained(self, undo: _Undo, work: Callable[[], None]) -> BaseException | None:
        """Run ``work`` as one isolated unit; if it raises, undo it (file and memory) and return the error."""
        try:
            with self.session.unit(isolated=True):
                work()
                venue = self.venue
                for order_id, state in undo.venue_orders.items():   # e.g. a limit order now resting, its queue
                    if venue.order_state(order_id) != state:
                        self._dirty.add(order_id)
                self._save_dirty()
        except Exception as e:  # noqa: BLE001  (contained to this order: reported, never spread)
            self._restore(undo)
            return e
        return None

    # ------------------------------------------------------------------ serving
    async def start(self) -> None:
        """Listen for the trader's FIX connection and start the market-data feeds."""
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        for feed in self.feeds:
            await feed.start(self)
        self.log.info("exchange.listening", host=self.host, port=self.port,
                      sender=self.config.sender_comp_id, target=self.config.target_comp_id,
                      symbols=sorted(self.symbols) if self.symbols is not None else "any")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Check the connection's Logon on its own (many may wait at once); hand only a good one to the session."""
        peer = str(writer.get_extra_info("peername"))
        task = asyncio.current_task()
        assert task is not None
        limits = self.limits
        while len(self._pending) >= limits.max_pending:   # the oldest waiting connection makes room
            oldest, old_writer = next(iter(self._pending.items()))
            self._pending.pop(oldest)
            self.log.warning("exchange.pending_connection_evicted", waiting=limits.max_pending)
            old_writer.close()
        self._pending[task] = writer
        try:
            initial = await asyncio.wait_for(self._read_logon(reader), limits.logon_timeout_s)
        except _LogonRefused as e:
            self.log.warning("exchange.logon_refused", peer=peer, reason=e.reason)
            if e.text is not None:
                self._refuse(writer, e.text)
            await self._close(writer)
            return
        except (TimeoutError, asyncio.TimeoutError):
            self.log.warning("exchange.logon_timeout", peer=peer, timeout_s=limits.logon_timeout_s)
            await self._close(writer)
            return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            await self._close(writer)
            return
        finally:
            self._pending.pop(task, None)
        if self.session.connected:
            self.log.warning("exchange.second_connection_refused", peer=peer)
            self._refuse(writer, "Logon refused: the session is already logged on")
            await self._close(writer)
            return
        self.log.info("exchange.logon_accepted", peer=peer)
        await self.session.run(reader, writer, initiator=False, initial=initial)

    async def _read_logon(self, reader: asyncio.StreamReader) -> bytes:
        """The bytes read up to and including a first message that is a Logon of our counterparty with the
        right password; :class:`_LogonRefused` for anything else."""
        cfg = self.config
        raw = bytearray()
        framer = Framer()
        while True:
            data = await reader.read(4096)
            if not data:
                raise _LogonRefused("closed before a Logon")
            raw += data
            framer.feed(data)
            for item in framer.frames():
                if isinstance(item, Garbled):
                    raise _LogonRefused(f"garbled before Logon: {item.reason}")
                msg = decode(item)
                fields = msg.fields
                if len(fields) < 4 or fields[2][0] != Tag.MsgType or fields[0][1] != cfg.begin_string:
                    raise _LogonRefused("first message is not a FIX 4.4 message")
                if msg.msg_type != MsgType.Logon:
                    raise _LogonRefused(f"first message is not a Logon (35={msg.msg_type[:8]})")
                problem = validate(msg)
                if problem is not None:
                    raise _LogonRefused(f"invalid Logon: {problem.text}", f"Invalid Logon: {problem.text}")
                if msg.get(Tag.SenderCompID) != cfg.target_comp_id or msg.get(Tag.TargetCompID) != cfg.sender_comp_id:
                    raise _LogonRefused("unknown CompID", "Logon refused: unknown CompID")
                if cfg.password is not None and not (
                        hmac.compare_digest(msg.get(Tag.Password, "").encode(), cfg.password.encode())
                        and (cfg.username is None or msg.get(Tag.Username) == cfg.username)):
                    raise _LogonRefused("invalid username or password", "Logon refused: invalid username or password")
                return bytes(raw)
            if len(raw) > self.limits.max_logon_bytes:
                raise _LogonRefused(f"more than {self.limits.max_logon_bytes} bytes without a Logon")

    def _refuse(self, writer: asyncio.StreamWriter, text: str) -> None:
        """A Logout refusing a connection's Logon (numbered like our next message, not using the number)."""
        cfg = self.config
        try:
            writer.write(encode(MsgType.Logout, cfg.sender_comp_id, cfg.target_comp_id, self.store.next_sender_seq,
                                [(Tag.Text, text)], begin_string=cfg.begin_string))
        except (ConnectionError, OSError, RuntimeError):
            pass

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError):
            pass

    async def stop(self) -> None:
        """Log the trader out, stop listening and close the state file."""
        for feed in self.feeds:
            await feed.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._pending.values()):
            writer.close()
        if self.session.connected:
            await self.session.logout("exchange shutting down")
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.log.info("exchange.market_data", **self.market_stats())
        self.store.close()

    def market_stats(self) -> dict[str, Any]:
        """Market data not taken, by reason (``dropped``), and each feed's own counters (``feeds``)."""
        feeds = {}
        for feed in self.feeds:
            stats = getattr(feed, "stats", None)
            if callable(stats):
                feeds[type(feed).__name__] = stats()
        return {"dropped": dict(self.dropped), "feeds": feeds}

    # ------------------------------------------------------------------ market data
    def _refused(self, event: Bar | Tick, kind: str) -> bool:
        """True (counted by reason and logged) when ``event`` must not be used at all."""
        problem = market_problem(event)
        if problem is not None:
            return self._drop("invalid", event, problem)
        if self.symbols is not None and event.symbol not in self.symbols:
            return self._drop("symbol", event, "symbol not served here (--symbols)")
        lead = event.ts - time.time_ns()
        if lead > self._lead_ns[kind]:
            return self._drop("future", event, f"stamped {lead / 1e9:.3f} s ahead of this clock "
                                               f"(at most {self._lead_ns[kind] / 1e9:g} s)")
        return False

    def _drop(self, reason: str, event: Bar | Tick, detail: str) -> bool:
        self.dropped[reason] += 1
        now = time.monotonic()
        start, logged = self._drop_log.get(reason, (now, 0))
        if now - start >= LOG_WINDOW:
            start, logged = now, 0
        if logged < LOG_BURST:
            self.log.warning("exchange.market_data_dropped", reason=reason, symbol=str(event.symbol)[:40],
                             ts=event.ts, detail=detail, dropped=self.dropped[reason])
        self._drop_log[reason] = (start, logged + 1)
        return True

    def _moves_clock(self, symbol: str) -> bool:
        """Whether data of ``symbol`` moves the exchange clock: a served symbol (``symbols``), else one with orders."""
        return symbol in self.symbols if self.symbols is not None else symbol in self._traded

    def on_bar(self, bar: Bar) -> bool:
        """Match working orders against ``bar`` with the venue's rules and report what happened; False if not
        taken (refused, or at or before the last bar of its symbol)."""
        if self._refused(bar, "bar") or not self._is_new(bar.symbol, "bar", bar.ts, equal_is_old=True):
            return False
        with self.session.unit():
            self._processed(bar.symbol, "bar", bar.ts)
            if self._moves_clock(bar.symbol):
                self._advance(bar.ts)
            self._last_bar[bar.symbol] = bar
            self.closes.on_bar(bar.symbol, bar.ts, bar.close)
            self._save_symbol(bar.symbol)
            self._save_dirty()
            self._match(bar.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        return True

    def on_tick(self, tick: Tick) -> bool:
        """Match working orders on ``tick``: with tick rules on its quote (QuoteVenue), else at its trade
        price (as the engine does for ticks on a bar venue); False if not taken."""
        if self._refused(tick, "tick") or \
                not self._is_new(tick.symbol, "tick", tick.ts, equal_is_old=False):  # two trades may share a stamp
            return False
        with self.session.unit():
            self._processed(tick.symbol, "tick", tick.ts)
            if self._moves_clock(tick.symbol):
                self._advance(tick.ts)
            self._save_dirty()
            venue = self.venue
            if isinstance(venue, QuoteVenue):
                t = tick
                self._match_each(t.symbol, t.ts, lambda order: venue.on_tick_order(
                    order, t.ts, t.price, t.size, t.bid, t.ask, t.bid_size, t.ask_size))
            else:
                p = tick.price
                self._match(tick.symbol, tick.ts, p, p, p, p, tick.size)
        return True

    def _match(self, symbol: str, ts: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        """The working orders of ``symbol`` against one bar (see :meth:`_match_each`)."""
        self._match_each(symbol, ts, lambda order: self.venue.on_bar_order(order, ts, o, h, lo, c, v))

    def _match_each(self, symbol: str, ts: int, match: Callable[[Order], None]) -> None:
        """``match`` each working order of ``symbol``: all in one contained unit; if that fails, all
        of it is undone and each order is matched again in a unit of its own, so a failure stays with its order."""
        orders = self.venue.open_orders(symbol)
        if not orders:
            return

        def match_all() -> None:
            for order in orders:
                if order.is_open:
                    match(order)

        if self._contained(self._snapshot([self._recs[x.id] for x in orders], {symbol}, ()), match_all) is None:
            return
        for order in orders:   # the book as it was, in its order (the undo may have re-added some at the end)
            self.venue.discard(order)
        for order in orders:
            self._resubmit(order, self.venue.order_state(order.id))   # the state the undo put back
        for order in orders:
            if not order.is_open:   # an earlier order's handling ended it (cannot today; be safe)
                continue
            rec = self._recs[order.id]
            undo = self._snapshot([rec], {symbol}, ())
            error = self._contained(undo, lambda: match(order))
            if error is not None:
                self.log.error("exchange.order_failed", order_id=rec.order_id, clordid=rec.clordid, ts=ts,
                               error=repr(error), exc_info=error)
                try:
                    self._fail(rec, ts, f"cancelled by the exchange: internal error while matching "
                                        f"({type(error).__name__})")
                except Exception:  # noqa: BLE001  (the state file itself fails: nothing more to do for it here)
                    self.log.exception("exchange.order_fail_report_failed", order_id=rec.order_id)

    def _fail(self, rec: _Rec, ts: int, text: str) -> None:
        """End an order whose handling failed: out of the book, cancelled, reported (a bare report if the full one fails)."""
        order = rec.order
        with self.session.unit(isolated=True):
            self.venue.discard(order)
            self.venue.restore_order_state(order.id, None)
            order.status, order.reason = OrderStatus.CANCELLED, text
            self._dirty.add(rec.order_id)
            try:
                with self.session.unit(isolated=True):
                    self._report(order, ExecType.CANCELED, ts, text=text)
            except Exception:  # noqa: BLE001  (e.g. a value the report cannot carry)
                self.session.send(MsgType.ExecutionReport, [
                    (Tag.OrderID, rec.order_id), (Tag.ClOrdID, rec.clordid), (Tag.ExecID, self._exec_id()),
                    (Tag.ExecType, ExecType.CANCELED), (Tag.OrdStatus, "4"), (Tag.Symbol, order.symbol),
                    (Tag.Side, SIDE_TO_FIX[order.side]), (Tag.LeavesQty, 0.0), (Tag.CumQty, 0.0),
                    (Tag.AvgPx, 0.0), (Tag.Text, text)])
            self._save_dirty()

    def _is_new(self, symbol: str, kind: str, ts: int, *, equal_is_old: bool) -> bool:
        """False (and logged) for market data at or before the last of its symbol and kind already processed."""
        last = self._last_ts.get((symbol, kind))
        if last is None or ts > last or (ts == last and not equal_is_old):
            return True
        self.ignored += 1
        self.dropped["stale"] += 1
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
        """One order message, handled on its own: if its handling fails, all it did is undone and the
        request alone is refused (ExecutionReport 39=8, OrderCancelReject or BusinessMessageReject)."""
        mt = msg.msg_type
        clordid = msg.get(Tag.ClOrdID, "")
        if self._id_too_long(session, msg):
            return
        if mt != MsgType.OrderStatusRequest and clordid in self._clordids and msg.poss_dup:
            self.log.info("exchange.duplicate_request_ignored", clordid=clordid, msg_type=mt)
            return
        keys = [k for k in (clordid, msg.get(Tag.OrigClOrdID)) if k]
        recs = list({id(r): r for r in (self._recs.get(self._clordids.get(k, "")) for k in keys) if r}.values())
        symbols = {r.order.symbol for r in recs} | ({msg[Tag.Symbol]} if Tag.Symbol in msg else set())
        undo = self._snapshot(recs, symbols, keys)

        def handle() -> None:
            if mt == MsgType.NewOrderSingle:
                self._new_order(msg)
            elif mt == MsgType.OrderCancelRequest:
                self._cancel(msg)
            elif mt == MsgType.OrderCancelReplaceRequest:
                self._replace(msg)
            else:
                self._status(msg)

        error = self._contained(undo, handle)
        if error is None:
            return
        self.log.error("exchange.order_failed", clordid=clordid[:64], msg_type=mt, error=repr(error), exc_info=error)
        text = f"exchange error: {type(error).__name__}"
        with session.unit(isolated=True):  # if even this fails, the session answers with a BusinessMessageReject
            if mt == MsgType.NewOrderSingle:
                if clordid not in self._clordids:
                    self._remember(clordid, "")
                self._reject_new(msg, 99, text)
            elif mt in (MsgType.OrderCancelRequest, MsgType.OrderCancelReplaceRequest):
                rec = self._recs.get(self._clordids.get(msg.get(Tag.OrigClOrdID, ""), ""))
                if clordid not in self._clordids:
                    self._remember(clordid, rec.order_id if rec else "")
                self._cancel_reject(msg, rec, "1" if mt == MsgType.OrderCancelRequest else "2", 99, text)
            else:
                self.session.send(MsgType.BusinessMessageReject, [
                    (Tag.RefSeqNum, msg.seq_num), (Tag.RefMsgType, mt), (Tag.BusinessRejectRefID, clordid or None),
                    (Tag.BusinessRejectReason, 0), (Tag.Text, text)])

    def _id_too_long(self, session: FixSession, msg: Msg) -> bool:
        """Refuse (and never store) a request whose ClOrdID or OrigClOrdID exceeds ``MAX_CLORDID_LEN``:
        every ClOrdID seen is kept for duplicate checks, so an unbounded one would grow the state file."""
        long = next((t for t in (Tag.ClOrdID, Tag.OrigClOrdID) if len(msg.get(t, "")) > MAX_CLORDID_LEN), None)
        if long is None:
            return False
        text = f"{'ClOrdID' if long == Tag.ClOrdID else 'OrigClOrdID'} longer than {MAX_CLORDID_LEN} characters"
        mt = msg.msg_type
        if mt == MsgType.NewOrderSingle:
            self._reject_new(msg, 99, text)
        elif mt in (MsgType.OrderCancelRequest, MsgType.OrderCancelReplaceRequest):
            self._cancel_reject(msg, None, "1" if mt == MsgType.OrderCancelRequest else "2", 99, text)
        else:
            session.send(MsgType.BusinessMessageReject, [
                (Tag.RefSeqNum, msg.seq_num), (Tag.RefMsgType, mt), (Tag.BusinessRejectReason, 0), (Tag.Text, text)])
        return True

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
        problem, reason = self._new_order_problem(msg)
        if problem is not None:
            self._remember(clordid, "")
            self._reject_new(msg, reason, problem)
            return
        order_id = f"X{self._next('order'):08d}"
        order = order_from_message(msg, order_id, self._created_ts(msg), max_qty=self.max_qty,
                                   max_price=self.max_price)
        if isinstance(order, str):
            self._remember(clordid, "")
            self._reject_new(msg, 11 if order.startswith("unsupported") else
                             13 if order.startswith("OrderQty") else 99, order)
            return
        self._remember(clordid, order_id)
        self._recs[order_id] = _Rec(order_id, clordid, order)
        self._traded.add(order.symbol)
        self._dirty.add(order_id)
        self.venue.submit(order, order.created_ts)
        bar = self._last_bar.get(order.symbol)
        if self.rules.fill_at == "close" and bar is not None and bar.ts == order.created_ts:
            self.venue.on_close(order.symbol, bar.ts, bar.close, bar.volume)

    def _new_order_problem(self, msg: Msg) -> tuple[str | None, int]:
        """Why a NewOrderSingle cannot be taken before it is read as an order (an unserved symbol, a
        TransactTime ahead of this clock), with its OrdRejReason; (None, 0) if none."""
        symbol = msg.get(Tag.Symbol, "")
        if self.symbols is not None and symbol not in self.symbols:
            return f"Unknown symbol {symbol[:40]!r}: not traded here", 1
        if self.use_transact_time:
            try:
                sent = msg.time_ns(Tag.TransactTime)
            except ValueError:
                return "TransactTime(60) is not a UTCTimestamp", 99
            lead = (sent or 0) - time.time_ns()
            if lead > self._lead_ns["bar"]:
                return (f"TransactTime(60) is {lead / 1e9:.0f} s ahead of the exchange's clock "
                        f"(at most {self._lead_ns['bar'] / 1e9:g} s)"), 99
        return None, 0

    def _reject_new(self, msg: Msg, reason: int, text: str) -> None:
        self.log.info("exchange.order_rejected", clordid=msg.get(Tag.ClOrdID, "")[:64], reason=text)
        self.session.send(MsgType.ExecutionReport, [
            (Tag.OrderID, "NONE"), (Tag.ClOrdID, msg.get(Tag.ClOrdID)), (Tag.ExecID, self._exec_id()),
            (Tag.ExecType, ExecType.REJECTED), (Tag.OrdStatus, "8"), (Tag.OrdRejReason, reason),
            (Tag.Symbol, msg.get(Tag.Symbol)), (Tag.Side, msg.get(Tag.Side)), (Tag.OrderQty, msg.get(Tag.OrderQty)),
            (Tag.LeavesQty, 0.0), (Tag.CumQty, 0.0), (Tag.AvgPx, 0.0), (Tag.Text, text)])

    def _cancel_reject(self, msg: Msg, rec: _Rec | None, response_to: str, reason: int, text: str) -> None:
        """OrderCancelReject (35=9) of a cancel (``response_to`` 1) or replace (2) request."""
        self.log.info("exchange.cancel_rejected", clordid=msg.get(Tag.ClOrdID, "")[:64],
                      orig=msg.get(Tag.OrigClOrdID, "")[:64], reason=text)
        self.session.send(MsgType.OrderCancelReject, [
            (Tag.OrderID, rec.order_id if rec else "NONE"), (Tag.ClOrdID, msg.get(Tag.ClOrdID)),
            (Tag.OrigClOrdID, msg.get(Tag.OrigClOrdID)),
            (Tag.OrdStatus, ORD_STATUS_TO_FIX[rec.order.status] if rec else "8"),
            (Tag.CxlRejResponseTo, response_to), (Tag.CxlRejReason, reason), (Tag.Text, text)])

    def _lookup(self, msg: Msg, response_to: str) -> _Rec | None:
        """The working order a cancel/replace refers to, or None after sending an OrderCancelReject."""
        orig, clordid = msg[Tag.OrigClOrdID], msg[Tag.ClOrdID]
        rec = self._recs.get(self._clordids.get(orig, ""))
        reason, text = None, ""
        if clordid in self._clordids:
            reason, text = 99, "Duplicate ClOrdID"
        elif rec is None:
            reason, text = 1, f"Unknown order {orig[:64]}"
        elif rec.order.status.is_final:
            reason, text = 0, f"Too late: order is {rec.order.status.value}"
        elif msg.get(Tag.Symbol) != rec.order.symbol or msg.get(Tag.Side) != SIDE_TO_FIX[rec.order.side]:
            reason, text = 99, "Symbol or Side does not match the order"
        if clordid not in self._clordids:
            self._remember(clordid, rec.order_id if rec else "")
        if reason is None:
            return rec
        self._cancel_reject(msg, rec, response_to, reason, text)
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
        new = order_from_message(msg, rec.order_id, self.clock, max_qty=self.max_qty, max_price=self.max_price)
        problem = new if isinstance(new, str) else None
        if isinstance(new, Order) and new.qty <= old.filled_qty + _EPS:
            problem = f"OrderQty {new.qty:g} is not above CumQty {old.filled_qty:g}"
        if problem is not None:
            self._cancel_reject(msg, rec, "2", 99, problem)
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
                (Tag.ExecType, ExecType.ORDER_STATUS), (Tag.OrdStatus, "8"), (Tag.Symbol, msg.get(Tag.Symbol)),
                (Tag.Side, msg.get(Tag.Side)), (Tag.LeavesQty, 0.0), (Tag.CumQty, 0.0), (Tag.AvgPx, 0.0),
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
                        "commission, slippage, market, and quotes: the tick rules of brokers/quotes.py); default: next bar's open, "
                        "no costs, no market rules, ticks matched at their trade price")
    p.add_argument("--clock-only", action="store_true",
                   help="orders count as placed at the exchange clock, ignoring the trader's TransactTime")
    p.add_argument("--symbols", metavar="A,B", default=None,
                   help="the symbols this exchange trades: orders for others are rejected (Unknown symbol) and "
                        "their market data dropped; default any symbol, but only data of a symbol with orders "
                        "here moves the exchange clock")
    p.add_argument("--max-future-tick-s", type=float, metavar="S", default=None,
                   help="drop ticks stamped more than S seconds ahead of this machine's clock (default 5)")
    p.add_argument("--max-future-bar-s", type=float, metavar="S", default=None,
                   help="drop bars stamped more than S seconds ahead of this machine's clock "
                        "(default: one --interval)")
    p.add_argument("--max-qty", type=float, default=MAX_ORDER_QTY, metavar="Q",
                   help=f"largest OrderQty(38) taken (default {MAX_ORDER_QTY:g})")
    p.add_argument("--max-price", type=float, default=MAX_ORDER_PRICE, metavar="P",
                   help=f"largest Price(44) / StopPx(99) taken (default {MAX_ORDER_PRICE:g})")
    p.add_argument("--logon-timeout", type=float, default=AcceptorLimits.logon_timeout_s, metavar="S",
                   help="seconds a new connection has to log on before it is closed (default %(default)g); "
                        "connections are served at once, so a silent one never delays the trader")
    p.add_argument("--fresh-state", action="store_true",
                   help="if --state exists but is empty, truncated or corrupt, move it aside (never deleted) "
                        "and start fresh; without this flag such a file is an error")
    p.add_argument("--log-json", action="store_true")
    p.add_argument("--log-level", default="info")
    return p


def rules_from_args(args: argparse.Namespace) -> tuple[FillRules, QuoteRules | None]:
    """The fill rules and tick rules of ``--rules`` (defaults, no tick rules, without it); a one-line ValueError
    naming a bad file."""
    return load_exchange_rules(args.rules) if args.rules else (FillRules(), None)


def symbols_from_args(args: argparse.Namespace) -> list[str] | None:
    """``--symbols A,B`` as a list (None without the flag); ValueError for an empty list."""
    if args.symbols is None:
        return None
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise ValueError("--symbols: give at least one symbol (A,B,...)")
    return symbols


def skew_from_args(args: argparse.Namespace) -> FutureSkew:
    """``--max-future-tick-s`` / ``--max-future-bar-s`` (their defaults where not given); ValueError if negative."""
    default = FutureSkew()
    tick = default.tick_s if args.max_future_tick_s is None else args.max_future_tick_s
    try:
        return FutureSkew(tick, args.max_future_bar_s)
    except ValueError as e:
        raise ValueError(f"--max-future-tick-s / --max-future-bar-s: {e}") from None


def _limits_from_args(args: argparse.Namespace) -> AcceptorLimits:
    for flag, value in (("--max-qty", args.max_qty), ("--max-price", args.max_price),
                        ("--logon-timeout", args.logon_timeout)):
        if not (value == value and 0 < value < float("inf")):
            raise ValueError(f"{flag} must be a finite positive number, not {value!r}")
    return AcceptorLimits(logon_timeout_s=args.logon_timeout)


def mqtt_feed_from_args(args: argparse.Namespace) -> BarFeed | None:
    """The MQTT market-data feed the command line asks for (None without ``--mqtt``); ValueError on bad settings."""
    if not args.mqtt:
        return None
    from tradeloop.data.mqtt import TlsConfig

    from tradeloop.brokers.exchange_feed import MqttBarFeed
    tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key) if (args.tls_ca or args.tls_cert) else None
    try:
        return MqttBarFeed(args.mqtt, venue=args.venue, interval=args.interval, tls=tls,
                           symbols=symbols_from_args(args), future=skew_from_args(args))
    except OSError as e:  # ssl names no file: say which settings were read
        raise ValueError(f"cannot load the MQTT TLS files (ca={args.tls_ca}, cert={args.tls_cert}, "
                         f"key={args.tls_key}): {e}") from None


async def _serve(args: argparse.Namespace, password: str | None, rules: FillRules,
                 mqtt_feed: BarFeed | None = None, quotes: QuoteRules | None = None) -> None:
    feeds: list[BarFeed] = []
    bar_server = None
    if args.bars_port is not None:
        bar_server = JsonLineBarServer(args.host, args.bars_port)
        feeds.append(bar_server)
    if args.bars_stdin:
        feeds.append(StdinBarFeed())
    if mqtt_feed is not None:
        feeds.append(mqtt_feed)
    config = SessionConfig(args.sender, args.target, username=args.username, password=password,
                           logon_timeout_s=args.logon_timeout)
    state = args.state or f"exchange-{args.sender}-{args.target}.sqlite"
    exchange = ExchangeSimulator(config, state=state, rules=rules, host=args.host, port=args.port, feeds=feeds,
                                 use_transact_time=not args.clock_only, symbols=symbols_from_args(args),
                                 future=skew_from_args(args), interval=args.interval, max_qty=args.max_qty,
                                 max_price=args.max_price, limits=_limits_from_args(args),
                                 fresh_state=args.fresh_state, quotes=quotes)
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
    print(json.dumps({"event": "stopped", "market_data": exchange.market_stats()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tradeloop.brokers.exchange`` (and later ``tradeloop exchange``)."""
    args = build_parser().parse_args(argv)
    try:
        password = load_password(args.password_env, args.password_file)
        rules, quotes = rules_from_args(args)
        symbols_from_args(args)
        skew_from_args(args)
        _limits_from_args(args)
        mqtt_feed = mqtt_feed_from_args(args)
    except (SecretError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _configure_logging(args.log_json, args.log_level)
    try:
        asyncio.run(_serve(args, password, rules, mqtt_feed, quotes))
    except StateFileError as e:   # an existing state file that is no state: the operator's to fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:  # e.g. the MQTT broker refused the credentials: report, do not trace back
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
