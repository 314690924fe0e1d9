"""A request-head deadline for uvicorn (slowloris defence), shared by ``tradeloop serve --http`` and the console.

uvicorn's h11 protocol times out idle keep-alive connections but not a client that sends its request line
and headers a byte at a time: enough such clients hold every ``limit_concurrency`` slot. The protocol here
closes a connection whose request head is not complete within ``timeout_s`` of the connection opening or of
the previous response being sent, and logs ``http_head_timeout`` (client and byte count, never the bytes):
a warning when part of a head had arrived, info for a connection that sent nothing.
"""
from __future__ import annotations

import asyncio

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEAD_TIMEOUT_S = 5.0


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline on each request head; use :func:`head_deadline` to set it."""

    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Run the timer while h11 waits for a request head; stop it once a head is in (or the connection ends)."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        pending = len(self.conn.trailing_data[0])
        client = "%s:%d" % self.client if self.client else None
        log = structlog.get_logger("tradeloop.http")
        (log.warning if pending else log.info)("http_head_timeout", client=client, timeout_s=self.head_timeout_s,
                                               bytes_received=pending)   # nothing sent: an idle connection
        self.transport.close()


def head_deadline(timeout_s: float = DEFAULT_HEAD_TIMEOUT_S) -> type[HeadDeadlineProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``: request heads must arrive within ``timeout_s``."""
    if not timeout_s > 0:
        raise ValueError(f"head timeout must be a positive number of seconds, got {timeout_s!r}")
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": float(timeout_s)})
