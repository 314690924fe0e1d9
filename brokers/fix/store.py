"""Sequence-number and sent-message stores for FIX sessions: in memory, or SQLite (WAL) that survives restarts."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, Protocol

from tradeloop.errors import ConfigError

SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's companions of a database file


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

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """Like :meth:`atomic`, but when nested a failure undoes only this block (the outer one goes on)."""


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

    savepoint = atomic  # every block here already undoes just itself


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

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested block that a failure undoes alone (SQLite SAVEPOINT); at the top it is :meth:`atomic`."""
        if self._depth == 0:
            with self.atomic():
                yield
            return
        with self._lock:
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                self._load()
                raise
            self._depth -= 1
            self.db.execute(f"RELEASE {name}")

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------- state files
class StateFileError(ConfigError):
    """A state file that exists but holds no usable state (empty, truncated, corrupt, another program's)."""


def state_problem(path: str | Path, tables: tuple[str, ...]) -> str | None:
    """Why the existing file at ``path`` is not a valid SQLite state with ``tables``; None if it is or is absent.

    Read-only: the file is opened ``immutable`` (``mode=ro`` when a write-ahead log holds data to read)
    and checked with ``PRAGMA quick_check``, so a check never changes (or checkpoints) what it looks at.
    """
    p = Path(path)
    wal = Path(f"{p}-wal")
    has_wal = wal.is_file() and wal.stat().st_size > 0
    if not p.exists():
        return f"it is missing but its write-ahead log {wal} holds data" if has_wal else None
    if not p.is_file():
        return "it is not a regular file"
    size = p.stat().st_size
    if size == 0 and not has_wal:
        return "it is empty (0 bytes)"
    if size:
        with open(p, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return "it is not a SQLite database (overwritten or damaged)"
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?{'mode=ro' if has_wal else 'immutable=1'}", uri=True)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                detail = str(check[0] if check else "no answer").replace("\n", " ")[:200]
                return f"it is corrupt (SQLite quick_check: {detail})"
            have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        return f"it is unreadable (SQLite: {e}; truncated or damaged)"
    missing = [t for t in tables if t not in have]
    if missing:
        return f"it holds no such state (no table {', '.join(missing)}{'' if have else '; no tables at all'})"
    return None


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` (and its -wal/-shm/-journal companions) to ``<path>.bad-<UTC time>``; never deletes."""
    p = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = p.with_name(f"{p.name}.bad-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = p.with_name(f"{p.name}.bad-{stamp}-{n}")
    for suffix in SIDE_FILES:
        side = Path(f"{p}{suffix}")
        if side.exists():
            side.rename(f"{target}{suffix}")
    if p.exists():
        p.rename(target)
    return target


def check_state_file(path: str | Path, tables: tuple[str, ...], *, what: str, fresh: bool = False,
                     flag: str = "--fresh-state") -> Path | None:
    """Refuse (:class:`StateFileError`, one line naming the file) an existing ``path`` that is not a valid
    state; a path that does not exist is a fresh start. With ``fresh`` a bad file is moved aside
    (:func:`move_aside`) instead and the new place returned; a valid file is always kept and resumed."""
    problem = state_problem(path, tables)
    if problem is None:
        return None
    if not fresh:
        raise StateFileError(f"{what} state file {path}: {problem}; refusing to start over on it "
                             f"(restore it, or give {flag} to move it aside and start fresh)")
    return move_aside(path)
