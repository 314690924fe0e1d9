"""The live engine's control file: the review queue and operator commands, in SQLite (WAL).

The running engine writes held orders and reads answers and commands; ``tradeloop review`` and
``tradeloop risk`` write them from another process. Every change of a review's status is one
conditional UPDATE (``... WHERE status = 'pending'``), so an approval racing an expiry has
exactly one winner. Times: ``held_ts`` is the run's clock (int64 ns); ``answered_at`` is the wall
clock of the person's answer, for the record.
"""
from __future__ import annotations

import datetime as _dt
import math
import sqlite3
from pathlib import Path
from typing import Any

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
    consumed INTEGER NOT NULL DEFAULT 0       -- 1 once the engine has acted on the answer
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                       -- resume (halts) or reset (drawdown stop)
    arg TEXT NOT NULL DEFAULT '',
    issued_by TEXT NOT NULL DEFAULT '',
    issued_at TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
"""
COMMANDS = ("resume", "reset")


class StoreError(Exception):
    """A state file that cannot be used, or an answer that does not apply; the message says which."""


def _wall() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class ControlStore:
    """One SQLite state file; ``create=False`` refuses to make a new one (the CLI's side)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"state file {self.path} not found (the live engine creates it; give its --state FILE)")
        try:
            self.db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"state file {self.path}: {e}") from None
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # -- reviews: the engine's side ---------------------------------------------------------
    def add_review(self, order: Order, ts: int, reason: str) -> None:
        price = order.limit_price if order.limit_price is not None else order.created_price
        price = None if price is None or math.isnan(price) else price
        self.db.execute(
            "INSERT OR REPLACE INTO reviews (order_id, symbol, side, qty, price, notional, reason, held_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (order.id, order.symbol, order.side.value, order.qty, price,
             None if price is None else order.qty * price, reason, ts))

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
        return [(r["order_id"], r["status"], r["answered_by"] or "", r["note"] or "") for r in rows]

    def expire(self, order_id: str) -> bool:
        """Mark a pending review expired; False if it was answered first."""
        cur = self.db.execute("UPDATE reviews SET status = 'expired', consumed = 1, answered_at = ?"
                              " WHERE order_id = ? AND status = 'pending'", (_wall(), order_id))
        return cur.rowcount == 1

    def cancel_review(self, order_id: str) -> None:
        self.db.execute("UPDATE reviews SET status = 'cancelled', consumed = 1, answered_at = ?"
                        " WHERE order_id = ? AND status = 'pending'", (_wall(), order_id))

    def cancel_unfinished(self, why: str) -> list[dict[str, Any]]:
        """Cancel every review the engine has not acted on (pending, or answered but not consumed),
        noting ``why`` and what it was; returns those rows as they were."""
        rows = [dict(r) for r in self.db.execute(
            "SELECT * FROM reviews WHERE consumed = 0 ORDER BY held_ts, order_id").fetchall()]
        for r in rows:
            was = "pending" if r["status"] == "pending" else f"{r['status']} by {r['answered_by'] or 'operator'}"
            self.db.execute("UPDATE reviews SET status = 'cancelled', consumed = 1, note = ?, answered_at = ?"
                            " WHERE order_id = ? AND consumed = 0", (f"{why} (was {was})", _wall(), r["order_id"]))
        return rows

    # -- reviews: the person's side ---------------------------------------------------------
    def reviews(self, *, pending_only: bool = True) -> list[dict[str, Any]]:
        where = " WHERE status = 'pending'" if pending_only else ""
        sql = f"SELECT * FROM reviews{where} ORDER BY held_ts, order_id"
        return [dict(r) for r in self.db.execute(sql).fetchall()]

    def answer(self, order_id: str, approve: bool, by: str = "", note: str = "") -> None:
        """Approve or reject a pending review; StoreError names why it cannot be answered."""
        status = "approved" if approve else "rejected"
        cur = self.db.execute("UPDATE reviews SET status = ?, answered_by = ?, note = ?, answered_at = ?"
                              " WHERE order_id = ? AND status = 'pending'", (status, by, note, _wall(), order_id))
        if cur.rowcount == 1:
            return
        row = self.db.execute("SELECT status FROM reviews WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            raise StoreError(f"no order {order_id!r} is held for review in {self.path}")
        raise StoreError(f"order {order_id} is no longer pending: it was {row['status']}")

    # -- operator commands ------------------------------------------------------------------
    def command(self, kind: str, arg: str = "", by: str = "") -> None:
        if kind not in COMMANDS:
            raise StoreError(f"unknown command {kind!r}; use {' or '.join(COMMANDS)}")
        self.db.execute("INSERT INTO commands (kind, arg, issued_by, issued_at) VALUES (?, ?, ?, ?)",
                        (kind, arg, by, _wall()))

    def take_commands(self) -> list[tuple[str, str, str]]:
        """Commands not yet applied, oldest first; marks them applied."""
        rows = self.db.execute("SELECT id, kind, arg, issued_by FROM commands WHERE done = 0 ORDER BY id").fetchall()
        for r in rows:
            self.db.execute("UPDATE commands SET done = 1 WHERE id = ?", (r["id"],))
        return [(r["kind"], r["arg"], r["issued_by"] or "operator") for r in rows]
