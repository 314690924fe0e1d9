"""The live engine's control file: reviews, operator commands, audit trail and the published state, in SQLite (WAL).

It is the one command path between a running engine and its operators: ``tradeloop review`` /
``tradeloop risk`` and the web console write answers and commands here (through
:class:`tradeloop.risk.control.Operator`), and the engine polls it each step. Every change of a
review's status is one conditional UPDATE (``... WHERE status = 'pending'``), so an approval racing
another approval or an expiry has exactly one winner. The engine also publishes its state here for
readers: one JSON snapshot (``publish``/``snapshot``) and an append-only, bounded event log
(``append_events``/``events``). Times: ``held_ts`` is the run's clock (int64 ns); every other time is
the wall clock in ISO 8601 UTC. A file made before the audit and publishing tables existed is
migrated when opened (the tables and columns are added; nothing is rewritten).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from tradeloop.brokers.orders import Order

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    order_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    price REAL,
    notional REAL,
    reason TEXT NOT NULL,
    held_ts INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending, approved, rejected, expired, cancelled
    answered_by TEXT,
    note TEXT,
    answered_at TEXT,
    consumed INTEGER NOT NULL DEFAULT 0,      -- 1 once the engine has acted on the answer
    held_at TEXT,                             -- wall clock when it was held
    deadline_at TEXT                          -- wall clock when it expires unanswered
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                       -- halt, resume, reset, cancel, kill
    arg TEXT NOT NULL DEFAULT '',
    issued_by TEXT NOT NULL DEFAULT '',
    issued_at TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''             -- the operator's reason (halt, kill)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    ok INTEGER NOT NULL,
    phase TEXT NOT NULL DEFAULT 'request',    -- request (the operator's), applied (what the engine did)
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,                       -- fill, risk, audit, equity, order, session
    data TEXT NOT NULL
);
"""
MIGRATIONS = {"reviews": (("held_at", "TEXT"), ("deadline_at", "TEXT")),
              "commands": (("note", "TEXT NOT NULL DEFAULT ''"),)}   # columns added after the first release
COMMANDS = ("halt", "resume", "reset", "cancel", "kill")
EVENT_KINDS = ("fill", "risk", "audit", "equity", "order", "session")
MAX_EVENTS = 100_000          # the events table keeps the newest this many rows
_TRIM_EVERY = 1_000           # rows appended between trims

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class StoreError(Exception):
    """A state file that cannot be used (missing, corrupt, not a state file); the message names it."""


def wall_iso(t: float | None = None) -> str:
    """Wall-clock time (``time.time()`` seconds, default now) as ISO 8601 UTC with milliseconds."""
    d = _dt.datetime.now(_dt.UTC) if t is None else _dt.datetime.fromtimestamp(t, _dt.UTC)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ControlStore:
    """One SQLite state file; ``create=False`` refuses to make a new one (the operators' side)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"state file {self.path} not found (the live engine creates it; give its --state FILE)")
        self._lock = threading.RLock()
        self._writes = 0           # commits through this connection (PRAGMA data_version counts only others')
        self._appended = 0
        try:
            self.db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"state file {self.path}: {e}") from None
        self.db.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        for table, columns in MIGRATIONS.items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    with contextlib.suppress(sqlite3.OperationalError):   # another process added it just now
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue instead of failing half-way)."""
        with self._lock:   # one connection may serve several threads (a console's workers)
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self._writes += 1

    def change_counter(self) -> int:
        """A number that grows whenever anything in the file changes (this or another process): poll it cheaply."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0]) + self._writes

    # -- reviews: the engine's side ---------------------------------------------------------
    def add_review(self, order: Order, ts: int, reason: str, held_at: str | None = None,
                   deadline_at: str | None = None) -> None:
        price = order.limit_price if order.limit_price is not None else order.created_price
        price = None if price is None or math.isnan(price) else price
        self.db.execute(
            "INSERT OR REPLACE INTO reviews (order_id, symbol, side, qty, price, notional, reason, held_ts, held_at,"
            " deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.id, order.symbol, order.side.value, order.qty, price,
             None if price is None else order.qty * price, reason, ts, held_at, deadline_at))
        self._writes += 1

    def answers(self, order_ids: list[str]) -> list[tuple[str, str, str, str]]:
        """Approved or rejected reviews among ``order_ids`` not yet acted on; marks them acted on."""
        if not order_ids:
            return []
        marks = ",".join("?" * len(order_ids))
        rows = self.db.execute(
            f"SELECT order_id, status, answered_by, note FROM reviews WHERE order_id IN ({marks})"
            " AND status IN ('approved', 'rejected') AND consumed = 0 ORDER BY answered_at, order_id",
            order_ids).fetchall()
        for r in rows:
            self.db.execute("UPDATE reviews SET consumed = 1 WHERE order_id = ?", (r["order_id"],))
            self._writes += 1
        return [(r["order_id"], r["status"], r["answered_by"] or "", r["note"] or "") for r in rows]

    def expire(self, order_id: str) -> bool:
        """Mark a pending review expired; False if it was answered first."""
        cur = self.db.execute("UPDATE reviews SET status = 'expired', consumed = 1, answered_at = ?"
                              " WHERE order_id = ? AND status = 'pending'", (wall_iso(), order_id))
        self._writes += 1
        return cur.rowcount == 1

    def cancel_review(self, order_id: str) -> None:
        self.db.execute("UPDATE reviews SET status = 'cancelled', consumed = 1, answered_at = ?"
                        " WHERE order_id = ? AND status = 'pending'", (wall_iso(), order_id))
        self._writes += 1

    def cancel_unfinished(self, why: str) -> list[dict[str, Any]]:
        """Cancel every review the engine has not acted on (pending, or answered but not consumed),
        noting ``why`` and what it was; returns those rows as they were."""
        rows = [dict(r) for r in self.db.execute(
            "SELECT * FROM reviews WHERE consumed = 0 ORDER BY held_ts, order_id").fetchall()]
        for r in rows:
            was = "pending" if r["status"] == "pending" else f"{r['status']} by {r['answered_by'] or 'operator'}"
            self.db.execute("UPDATE reviews SET status = 'cancelled', consumed = 1, note = ?, answered_at = ?"
                            " WHERE order_id = ? AND consumed = 0", (f"{why} (was {was})", wall_iso(), r["order_id"]))
            self._writes += 1
        return rows

    # -- reviews: the person's side (through risk.control.Operator) -------------------------
    def reviews(self, *, pending_only: bool = True) -> list[dict[str, Any]]:
        where = " WHERE status = 'pending'" if pending_only else ""
        sql = f"SELECT * FROM reviews{where} ORDER BY held_ts, order_id"
        return [dict(r) for r in self.db.execute(sql).fetchall()]

    def answer(self, order_id: str, approve: bool, by: str = "", note: str = "") -> tuple[bool, str]:
        """Approve or reject a pending review, audited in the same transaction: (ok, one-line message).
        Of two answers racing for one order exactly one is ok; the other's message names who won and when."""
        status = "approved" if approve else "rejected"
        action = "approve" if approve else "reject"
        with self.transaction() as db:
            cur = db.execute("UPDATE reviews SET status = ?, answered_by = ?, note = ?, answered_at = ?"
                             " WHERE order_id = ? AND status = 'pending'", (status, by, note, wall_iso(), order_id))
            if cur.rowcount == 1:
                ok, msg = True, f"{status} {order_id}; the live engine acts on it at its next step"
            else:
                row = db.execute("SELECT status, answered_by, answered_at FROM reviews WHERE order_id = ?",
                                 (order_id,)).fetchone()
                ok = False
                if row is None:
                    msg = f"no order {order_id!r} is held for review in {self.path}"
                else:
                    who = f" by {row['answered_by']}" if row["answered_by"] else ""
                    at = f" at {row['answered_at']}" if row["answered_at"] else ""
                    msg = f"order {order_id} is no longer pending: it was {row['status']}{who}{at}"
            self._audit(db, by, action, order_id, ok, msg + (f" (note: {note})" if note and ok else ""))
        return ok, msg

    # -- operator commands ------------------------------------------------------------------
    def command(self, kind: str, arg: str = "", by: str = "", message: str = "", note: str = "") -> None:
        """Queue a command for the engine (``arg``: its symbol or order id; ``note``: the operator's reason)
        and audit the request, in one transaction."""
        if kind not in COMMANDS:
            raise ValueError(f"unknown command {kind!r}; use one of {', '.join(COMMANDS)}")
        with self.transaction() as db:
            db.execute("INSERT INTO commands (kind, arg, issued_by, issued_at, note) VALUES (?, ?, ?, ?, ?)",
                       (kind, arg, by, wall_iso(), note))
            self._audit(db, by, kind, arg, True, message or f"sent {kind} {arg}".strip())

    def take_commands(self) -> list[tuple[str, str, str, str]]:
        """Commands not yet applied, oldest first, as (kind, arg, by, note); marks them applied."""
        rows = self.db.execute("SELECT id, kind, arg, issued_by, note FROM commands WHERE done = 0 ORDER BY id"
                               ).fetchall()
        if rows:
            with self.transaction() as db:
                db.executemany("UPDATE commands SET done = 1 WHERE id = ?", [(r["id"],) for r in rows])
        return [(r["kind"], r["arg"], r["issued_by"] or "operator", r["note"] or "") for r in rows]

    # -- the audit trail --------------------------------------------------------------------
    def audit(self, who: str, action: str, target: str, ok: bool, message: str, phase: str = "request") -> None:
        """One row of the trail (and an ``audit`` event for live readers)."""
        with self.transaction() as db:
            self._audit(db, who, action, target, ok, message, phase)

    def _audit(self, db: sqlite3.Connection, who: str, action: str, target: str, ok: bool, message: str,
               phase: str = "request") -> None:
        at = wall_iso()
        db.execute("INSERT INTO audit (at, who, action, target, ok, phase, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (at, who, action, target, int(ok), phase, message))
        data = {"who": who, "action": action, "target": target, "ok": ok, "phase": phase, "message": message}
        db.execute("INSERT INTO events (at, kind, data) VALUES (?, 'audit', ?)", (at, _encode(data).decode()))

    def audit_trail(self, after_id: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """Rows of the trail with ``id > after_id``, oldest first, at most ``limit`` (the newest when cut)."""
        limit = min(max(int(limit), 0), MAX_EVENTS)
        rows = self.db.execute("SELECT * FROM (SELECT * FROM audit WHERE id > ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                               (int(after_id), limit)).fetchall()
        return [{**dict(r), "ok": bool(r["ok"])} for r in rows]

    # -- the read side: what the engine publishes -------------------------------------------
    def publish(self, snapshot: dict[str, Any]) -> None:
        """Replace the published snapshot (the engine's state now)."""
        self.write(snapshot, ())

    def append_events(self, events: list[dict[str, Any]]) -> None:
        """Append events (``{kind, data}``, ``at`` optional) to the bounded log."""
        self.write(None, events)

    def write(self, snapshot: dict[str, Any] | None, events: Any) -> None:
        """A snapshot and/or events in one transaction (what the engine does after a step)."""
        at = wall_iso()
        rows = [(e.get("at") or at, e["kind"], _encode(e.get("data", {})).decode()) for e in events]
        if snapshot is None and not rows:
            return
        with self.transaction() as db:
            if rows:
                db.executemany("INSERT INTO events (at, kind, data) VALUES (?, ?, ?)", rows)
                self._appended += len(rows)
                if self._appended >= _TRIM_EVERY:
                    self._appended = 0
                    db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS,))
            if snapshot is not None:
                db.execute("INSERT OR REPLACE INTO snapshot (id, body, updated_at) VALUES (1, ?, ?)",
                           (_encode(snapshot).decode(), at))

    def snapshot(self) -> dict[str, Any] | None:
        """The last published snapshot, or None before the engine published one."""
        row = self.db.execute("SELECT body FROM snapshot WHERE id = 1").fetchone()
        return None if row is None else _decode(row[0])

    def events(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with ``id > after_id``, oldest first, at most ``limit``: ``{id, at, kind, data}``."""
        limit = min(max(int(limit), 0), MAX_EVENTS)   # SQLite reads a negative LIMIT as none
        rows = self.db.execute("SELECT id, at, kind, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                               (int(after_id), limit)).fetchall()
        return [{"id": r[0], "at": r[1], "kind": r[2], "data": _decode(r[3])} for r in rows]
