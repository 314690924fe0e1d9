"""The state file, watched: a thread polls the engine's change counter and fans updates out to the pages.

One reader per console (not per page): every ~20 ms it checks ``ControlStore.change_counter()``; on a
change it reads the snapshot and the new events once, encodes one JSON message and hands it to each
connected page's bounded queue. A page that cannot keep up is disconnected (its browser reconnects and
gets a fresh start) rather than letting its queue grow. Recent events are kept in bounded buffers so a
page that connects gets the fills, risk events, audit trail and equity curve so far.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog

from tradeloop.risk.store import ControlStore

KEEP = {"fill": 200, "risk": 200, "audit": 200, "order": 100, "session": 50, "equity": 2000}
QUEUE = 256            # messages a page may have waiting before it is disconnected
READ_LIMIT = 1000      # events read per query
MAX_PER_POLL = 5000    # events read per poll at most (the rest next poll)


def utc_now() -> str:
    """The wall clock as ISO UTC with milliseconds (the pages correct their countdowns by it)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass(eq=False)
class Subscriber:
    """One connected page: its queue of encoded messages and whether it fell behind."""

    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: bool = False


class Feed:
    """Polls one state file in a thread; ``subscribe()`` gives a page the state so far and every later update."""

    def __init__(self, path: Path, poll_s: float = 0.02) -> None:
        self.path = path
        self.poll_s = poll_s
        self.snapshot: dict[str, Any] | None = None
        self.recent: dict[str, deque[dict[str, Any]]] = {k: deque(maxlen=n) for k, n in KEEP.items()}
        self.last_id = 0
        self.error = ""            # why the state file cannot be read right now ("" when fine)
        self._subs: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()
        self._log = structlog.get_logger("tradeloop.console")

    # -- lifecycle (on the event loop) -------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- pages --------------------------------------------------------------------------------
    def subscribe(self) -> tuple[Subscriber, bytes]:
        """A new page's subscription and its first message (everything so far)."""
        sub = Subscriber()
        with self._lock:
            events = sorted((e for q in self.recent.values() for e in q), key=lambda e: e["id"])
            first = self._enc.encode({"now": utc_now(), "snapshot": self.snapshot, "events": events,
                                      "error": self.error, "reset": True})
            self._subs.add(sub)
        return sub, first

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def _fanout(self, msg: bytes) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.dropped:
                continue
            try:
                sub.queue.put_nowait(msg)
            except asyncio.QueueFull:
                sub.dropped = True
                self._log.warning("console.page_behind", queued=QUEUE)

    # -- the polling thread ---------------------------------------------------------------
    def _run(self) -> None:
        store: ControlStore | None = None
        seen, opened = None, None
        while not self._stop.is_set():
            try:
                st = os.stat(self.path)   # another file at the path (a new session, a moved-aside one): start over
                ident = (st.st_dev, st.st_ino)
                if store is not None and ident != opened:
                    store.close()
                    store = None
                    self._forget()
                if store is None:
                    store = ControlStore(self.path, create=False)
                    seen, opened = None, ident
                counter = store.change_counter()
                if counter != seen:
                    seen = counter
                    self._read(store)
                elif self.error:
                    self._publish({"error": ""})
            except Exception as e:  # noqa: BLE001 - StoreError, SQLite's: the page shows it, the console serves on
                text = f"cannot read the state file {self.path}: {e}"
                if text != self.error:
                    self._log.warning("console.state_unreadable", error=str(e))
                    self._publish({"error": text})
                if store is not None:
                    store.close()
                    store = None
                self._stop.wait(0.5)
                continue
            self._stop.wait(self.poll_s)
        if store is not None:
            store.close()

    def _forget(self) -> None:
        """Drop what was read from a file no longer at the path; pages clear theirs (``reset``)."""
        with self._lock:
            self.snapshot, self.last_id = None, 0
            for q in self.recent.values():
                q.clear()
        self._log.warning("console.state_replaced", path=str(self.path))
        self._publish({"reset": True, "snapshot": None, "events": []})

    def _read(self, store: ControlStore) -> None:
        snap = store.snapshot()
        new: list[dict[str, Any]] = []
        while len(new) < MAX_PER_POLL:
            batch = store.events(after_id=self.last_id, limit=READ_LIMIT)
            if not batch:
                break
            new.extend(batch)
            self.last_id = int(batch[-1]["id"])
            if len(batch) < READ_LIMIT:
                break
        changed = snap != self.snapshot
        if not changed and not new and not self.error:
            return
        update: dict[str, Any] = {"events": new, "error": ""}
        if changed:
            update["snapshot"] = snap
        self._publish(update, snap if changed else None, new)

    def _publish(self, update: dict[str, Any], snap: dict[str, Any] | None = None,
                 new: list[dict[str, Any]] | None = None) -> None:
        with self._lock:
            if snap is not None:
                self.snapshot = snap
            for e in new or ():
                q = self.recent.get(e.get("kind", ""))
                if q is not None:
                    q.append(e)
            self.error = update.get("error", self.error)
        msg = self._enc.encode({"now": utc_now(), **update})
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._fanout, msg)
            except RuntimeError:   # the loop closed meanwhile (shutting down)
                pass
