"""One binary-protocol connection of the prediction server, as an asyncio Protocol.

Bytes are parsed as they arrive (``data_received``): no task per connection or request, so a
request costs the event loop one turn to be read and one to be answered (the lone-client
latency of bench/serve_bench.py). Limits, each a closed connection and a count in
``connections_rejected_total`` (after a Failure frame where the peer can still read one):

- a frame prefix announcing more than ``max_frame`` bytes, or too short: framing is lost;
- a frame whose bytes do not all arrive within ``read_timeout_s`` of its first (slowloris);
- no frame at all for ``idle_timeout_s`` while nothing is in progress;
- ``max_inflight`` requests in progress: reading pauses until one is answered;
- replies not read by the peer for ``write_timeout_s`` (the transport's buffer stays full).

A frame read whole but wrong (unreadable header, a reply instead of a request, bad dtype or
shape, unknown model) is answered with a Failure frame and the connection goes on.
"""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from tradeloop.models.serve import protocol as P
from tradeloop.models.serve.batcher import Overloaded


class Connection(asyncio.Protocol):
    """The server side of one TCP connection (module docs); ``server`` is the PredictionServer."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.config = server.config
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = 0                 # bytes of the current frame's body (0: waiting for a prefix)
        self.partial_since: float | None = None
        self.last_frame = self.loop.time()
        self.inflight = 0
        self.paused_reading = False
        self.write_blocked_since: float | None = None
        self.counted = False
        self.timer: asyncio.TimerHandle | None = None
        c = self.config
        self.tick = max(0.01, min(c.read_timeout_s, c.idle_timeout_s, c.write_timeout_s) / 4)

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.server.connections >= self.config.max_connections:
            self._refuse(P.Failure(-1, P.OVERLOADED, f"connection limit {self.config.max_connections} reached"),
                         "connection limit")
            return
        self.server.connections += 1
        self.counted = True
        self.timer = self.loop.call_later(self.tick, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.server.connections -= 1
            self.counted = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        self.write_blocked_since = self.loop.time()

    def resume_writing(self) -> None:
        self.write_blocked_since = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if not self.need:
                if len(buf) < 4:
                    break
                try:
                    self.need = P.frame_length(bytes(buf[:4]), self.config.max_frame)
                except P.ProtocolError as e:   # the framing is lost: answer, then close
                    self._refuse(P.Failure(-1, e.code, str(e)), f"{e.code}: {e}")
                    return
                del buf[:4]
            if len(buf) < self.need:
                if self.partial_since is None:
                    self.partial_since = self.loop.time()
                break
            body = bytes(buf[:self.need])
            del buf[:self.need]
            self.need = 0
            self.partial_since = None
            self.last_frame = self.loop.time()
            self._request(body)
            if self.transport is None or self.transport.is_closing():
                return
        if buf and self.partial_since is None:
            self.partial_since = self.loop.time()
        if self.inflight >= self.config.max_inflight and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()

    # -- requests ------------------------------------------------------------------------------
    def _request(self, body: bytes) -> None:
        t0 = time.perf_counter()
        server = self.server
        req: P.Request | None = None
        try:
            header, payload = P.decode(body)
            if not isinstance(header, P.Request):
                raise P.ProtocolError(P.BAD_REQUEST, f"expected a request frame, got {type(header).__name__}")
            req = header
            windows = server.check_windows(req.model, req, payload)
            batcher = server._batcher(req.model)
            self.inflight += 1
            try:
                batcher.submit(windows, req.exact, self._deliverer(req, t0, server.metrics[req.model]))
            except Overloaded as e:
                self.inflight -= 1
                raise P.ProtocolError(P.OVERLOADED, str(e)) from None
        except P.ProtocolError as e:   # the frame was read whole: answer, the connection goes on
            if req is not None:
                server.count_error(req.model, e.code)
            self._send(P.encode(P.Failure(req.id if req is not None else -1, e.code, str(e))))

    def _deliverer(self, req: P.Request, t0: float, metrics: Any) -> Any:
        def deliver(ans: Any) -> None:
            self.inflight -= 1
            if self.paused_reading and self.inflight < self.config.max_inflight and self.transport is not None \
                    and not self.transport.is_closing():
                self.paused_reading = False
                self.partial_since = self.loop.time() if self.buf or self.need else None
                self.transport.resume_reading()
            if isinstance(ans, BaseException):
                metrics.error(P.INTERNAL)
                self._send(P.encode(P.Failure(req.id, P.INTERNAL, f"model call failed: {type(ans).__name__}: {ans}")))
                return
            out = ans.outputs
            self._send(P.encode_array(P.Reply(req.id, req.model, ans.version, "float32", list(out.shape),
                                              ans.backup), out))
            metrics.answered(time.perf_counter() - t0)

        return deliver

    # -- limits ------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Every ``tick``: close a slow (partial frame), idle or not-reading peer."""
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        c, now = self.config, self.loop.time()
        if self.partial_since is not None and not self.paused_reading and now - self.partial_since > c.read_timeout_s:
            return self._refuse(None, f"a frame did not arrive within {c.read_timeout_s:g} s")
        if self.write_blocked_since is not None and now - self.write_blocked_since > c.write_timeout_s:
            return self._refuse(None, f"peer did not read its replies for {c.write_timeout_s:g} s", abort=True)
        if self.inflight == 0 and self.partial_since is None and now - self.last_frame > c.idle_timeout_s:
            return self._refuse(None, f"idle for {c.idle_timeout_s:g} s")
        self.timer = self.loop.call_later(self.tick, self._watch)

    def _refuse(self, failure: P.Failure | None, why: str, abort: bool = False) -> None:
        self.server.rejected += 1
        self.server.log.info("serve_connection_closed", reason=why)
        if failure is not None:
            self._send(P.encode(failure))
        if self.transport is not None:
            self.transport.abort() if abort else self.transport.close()

    def _send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)
