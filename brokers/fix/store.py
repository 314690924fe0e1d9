"""Sequence-number and sent-message stores for FIX sessions: in memory, or SQLite (WAL) that survives restarts."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Protocol


class SequenceStore(Protocol):
    """What a FIX session persists: the next sequence numbers each way and its sent application messages."""

    @property
    def next_sender_seq(self) -> int: ...

    @property
    def next_target_seq(self) -> int: ...

    def set_next_sender_seq(self, seq: int) -> None: ...

    def set_next_target_seq(self, seq: int) -> None: ...

    def save_message(self, seq: int, raw: bytes) -> None:
        """Keep an outgoing application message so a ResendRequest can replay it."""

    def messages(self, begin: int, end: int) -> dict[int, bytes]:
        """Stored messages with ``begin <= seq <= end``."""

    def reset(self) -> None:
        """Start over at sequence number 1 both ways and forget the sent messages."""

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """A block whose changes are kept together or not at all (nested blocks join the outer one)."""


class _Sequences:
    """The two next sequence numbers, as a store keeps them in memory (its own writes persist them)."""

    _sender: int
    _target: int

    @property
    def next_sender_seq(self) -> int:
        return self._sender

    @property
    def next_target_seq(self) -> int:
        return self._target


class MemoryStore(_Sequences):
    """A store that lives as long as the process (tests, throw-away sessions)."""

    def __init__(self) -> None:
        self._sender = 1
        self._target = 1
        self._messages: dict[int, bytes] = {}

    def set_next_sender_seq(self, seq: int) -> None:
        self._sender = seq

    def set_next_target_seq(self, seq: int) -> None:
        self._target = seq

    def save_message(self, seq: int, raw: bytes) -> None:
        self._messages[seq] = raw

    def messages(self, begin: int, end: int) -> dict[int, bytes]:
        return {s: m for s, m in sorted(self._messages.items()) if begin <= s <= end}

    def reset(self) -> None:
        self._sender = self._target = 1
        self._messages.clear()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        saved = (self._sender, self._target, dict(self._messages))
        try:
            yield
        except BaseException:
            self._sender, self._target, self._messages = saved
            raise


class SQLiteSequenceStore(_Sequences):
    """A session's sequence numbers and sent messages in a SQLite file (WAL journal).

    Every change is committed before the message it belongs to is written to the socket, so
    a process killed at any point restarts with sequence numbers the counterparty agrees
    with or can recover from by ResendRequest / SequenceReset-GapFill. One file may hold
    several sessions (``session_id``); other components may keep their own tables in the
    same file and join its transactions through :meth:`atomic` and :attr:`db`.
    """

    def __init__(self, path: str | Path, session_id: str = "default", *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.session_id = session_id
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS fix_session (id TEXT PRIMARY KEY, sender_seq INTEGER NOT NULL,"
            " target_seq INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS fix_message (id TEXT NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL,"
            " PRIMARY KEY (id, seq));"
        )
        self.db.execute("INSERT OR IGNORE INTO fix_session VALUES (?, 1, 1)", (session_id,))
        self._depth = 0
        self._lock = threading.RLock()
        self._load()

    def _load(self) -> None:
        row = self.db.execute("SELECT sender_seq, target_seq FROM fix_session WHERE id=?",
                              (self.session_id,)).fetchone()
        self._sender, self._target = int(row[0]), int(row[1])

    def set_next_sender_seq(self, seq: int) -> None:
        with self.atomic():
            self.db.execute("UPDATE fix_session SET sender_seq=? WHERE id=?", (seq, self.session_id))
            self._sender = seq

    def set_next_target_seq(self, seq: int) -> None:
        with self.atomic():
            self.db.execute("UPDATE fix_session SET target_seq=? WHERE id=?", (seq, self.session_id))
            self._target = seq

    def save_message(self, seq: int, raw: bytes) -> None:
        with self.atomic():
            self.db.execute("INSERT OR REPLACE INTO fix_message VALUES (?, ?, ?)", (self.session_id, seq, raw))

    def messages(self, begin: int, end: int) -> dict[int, bytes]:
        rows = self.db.execute("SELECT seq, raw FROM fix_message WHERE id=? AND seq BETWEEN ? AND ? ORDER BY seq",
                               (self.session_id, begin, end))
        return {int(s): bytes(r) for s, r in rows}

    def reset(self) -> None:
        with self.atomic():
            self.db.execute("DELETE FROM fix_message WHERE id=?", (self.session_id,))
            self.db.execute("UPDATE fix_session SET sender_seq=1, target_seq=1 WHERE id=?", (self.session_id,))
            self._sender = self._target = 1

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                self.db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self.db.execute("ROLLBACK")
                    self._load()
                raise
            self._depth -= 1
            if outer:
                self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
