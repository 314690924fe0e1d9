"""The live runner's journal: orders, fills, bars and the run's identity, in the FIX state file (SQLite, WAL).

Every write joins the FIX session's transaction (``SQLiteSequenceStore.atomic``): an order's row
commits with the NewOrderSingle that sends it (before a byte reaches the socket), and a fill's
row commits with the incoming sequence number of the ExecutionReport that carried it. A process
killed at any instant therefore restarts with a file in which the orders it sent and the
messages the venue will resend agree: no order is sent twice and no fill is booked twice or lost.

Positions and cash are not stored: they are the starting cash plus the journaled fills, replayed
through the same :class:`~tradeloop.engine.loop.portfolio.Portfolio` (one source of truth, nothing to drift).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tradeloop.brokers.fix.store import SQLiteSequenceStore
from tradeloop.brokers.orders import Fill, Order
from tradeloop.data.schema import Bar

from tradeloop.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS live_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS live_order (id TEXT PRIMARY KEY, data BLOB NOT NULL, open INTEGER NOT NULL,
    clordid TEXT NOT NULL, requests INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS live_fill (n INTEGER PRIMARY KEY AUTOINCREMENT, exec_id TEXT UNIQUE NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS live_bar (ts INTEGER NOT NULL, symbol TEXT NOT NULL, open REAL NOT NULL,
    high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL, PRIMARY KEY (ts, symbol));
"""


def _plain(obj: Any) -> Any:
    """numpy scalars (a limit price read off a column) as Python numbers."""
    if hasattr(obj, "item"):
        return obj.item()
    raise NotImplementedError(f"cannot journal {type(obj).__name__}")


class JournalMismatch(ConfigError):
    """The state file belongs to another run (strategy, symbols or cash differ)."""


@dataclass
class Recovered:
    """What an earlier process of this run left: its orders, booked fills, processed bars, counters."""

    orders: list[tuple[Order, str, int]] = field(default_factory=list)   # (order, current ClOrdID, requests)
    fills: list[tuple[str, Fill]] = field(default_factory=list)         # (ExecID, fill) in booking order
    bars: list[Bar] = field(default_factory=list)                       # in (ts, symbol) order
    last_ts: int | None = None
    risk: dict[str, Any] = field(default_factory=dict)                 # risk check state after the last step

    def order_seq(self, prefix: str) -> int:
        """The highest ``<prefix><number>`` order id used so far: new ids continue after it."""
        nums = [o.id[len(prefix):] for o, _, _ in self.orders if o.id.startswith(prefix)]
        return max((int(n) for n in nums if n.isdigit()), default=0)

    @property
    def fresh(self) -> bool:
        return not (self.orders or self.fills or self.bars)


class Journal:
    """Reads and writes the live run's tables in the FIX store's SQLite file, inside its transactions."""

    def __init__(self, store: SQLiteSequenceStore) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)
        self._enc = msgspec.msgpack.Encoder(enc_hook=_plain)

    def _meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM live_meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _set(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO live_meta VALUES (?, ?)", (key, json.dumps(value)))

    def claim(self, identity: dict[str, Any]) -> None:
        """Bind the file to this run (strategy, params, symbols, cash); a different run is refused."""
        with self.store.atomic():
            have = self._meta("run")
            if have is None:
                self._set("run", identity)
            elif have != identity:
                diff = sorted(k for k in set(have) | set(identity) if have.get(k) != identity.get(k))
                raise JournalMismatch(f"{self.store.path}: this state file belongs to another run "
                                      f"({', '.join(f'{k}: {have.get(k)!r} here, {identity.get(k)!r} now' for k in diff)});"
                                      " use a new --state file")

    def order(self, order: Order, clordid: str, requests: int) -> None:
        """Record ``order`` as it is now (joins the caller's transaction, if any)."""
        with self.store.atomic():
            self.db.execute("INSERT OR REPLACE INTO live_order VALUES (?, ?, ?, ?, ?)",
                            (order.id, self._enc.encode(order), int(order.is_open), clordid, requests))

    def fill(self, exec_id: str, fill: Fill) -> None:
        with self.store.atomic():
            self.db.execute("INSERT INTO live_fill (exec_id, data) VALUES (?, ?)", (exec_id, self._enc.encode(fill)))

    def bars(self, bars: Iterable[Bar]) -> None:
        """Record one timestamp's bars as processed (the step that follows acts on them)."""
        rows = [(b.ts, b.symbol, b.open, b.high, b.low, b.close, b.volume) for b in bars]
        if not rows:
            return
        with self.store.atomic():
            self.db.executemany("INSERT OR IGNORE INTO live_bar VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._set("last_ts", rows[-1][0])

    def risk(self, state: dict[str, Any]) -> None:
        """The risk checks' state after a step (a drawdown stop must survive a restart)."""
        with self.store.atomic():
            self._set("risk", state)

    def load(self) -> Recovered:
        """Everything an earlier process of this run journaled."""
        rec = Recovered(last_ts=self._meta("last_ts"), risk=self._meta("risk") or {})
        dec_order = msgspec.msgpack.Decoder(Order)
        dec_fill = msgspec.msgpack.Decoder(Fill)
        for data, clordid, requests in self.db.execute("SELECT data, clordid, requests FROM live_order ORDER BY id"):
            rec.orders.append((dec_order.decode(data), clordid, int(requests)))
        for exec_id, data in self.db.execute("SELECT exec_id, data FROM live_fill ORDER BY n"):
            rec.fills.append((exec_id, dec_fill.decode(data)))
        for ts, symbol, o, h, lo, c, v in self.db.execute("SELECT * FROM live_bar ORDER BY ts, symbol"):
            rec.bars.append(Bar(symbol, ts, o, h, lo, c, v))
        return rec
