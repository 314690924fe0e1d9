"""Clients of the binary protocol: a blocking one for the engine, an asyncio one for load generators.

Both send one :class:`~tradeloop.models.serve.protocol.Request` frame and read frames until the
reply with the same id. Every wait has a deadline; a timeout, a refused or dropped connection, or
a failure the server reports about itself (not ready, overloaded, internal) is a
:class:`ServerUnavailable` (the caller applies its policy: fall back, halt), after which the
blocking client reconnects on its next call, so a late reply can never be taken for a later
request's. A failure that is the caller's fault (bad shape, unknown model) is a ModelError.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from tradeloop.models.errors import ModelError
from tradeloop.models.serve import protocol as P


class ServerUnavailable(ModelError):
    """The server did not answer in time, is unreachable, or reported it cannot serve now."""


@dataclass(frozen=True)
class Result:
    """A reply: outputs, the version that computed them, whether it was the server's backup."""

    outputs: np.ndarray
    version: str
    backup: bool


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port), or a ModelError saying what is wrong."""
    u = urlsplit(str(endpoint))
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme != "tcp" or not u.hostname or port is None or u.path not in ("", "/"):
        raise ModelError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7070")
    return u.hostname, port


def _result(header: P.Header, payload: memoryview, rid: int) -> Result | None:
    """The Result of a reply frame for request ``rid`` (None: a frame for another request)."""
    if isinstance(header, P.Failure):
        if header.id not in (rid, -1):
            return None
        if header.code in P.CLIENT_FAULTS:
            raise ModelError(f"prediction server refused the request: {header.code}: {header.message}")
        raise ServerUnavailable(f"prediction server: {header.code}: {header.message}")
    if not isinstance(header, P.Reply) or header.id != rid:
        return None
    try:
        out = P.payload_array(header, payload)
    except P.ProtocolError as e:
        raise ServerUnavailable(f"prediction server sent a malformed reply: {e}") from None
    return Result(out, header.version, header.backup)


class ServeClient:
    """A blocking connection to a prediction server (one request at a time; not thread-safe)."""

    def __init__(self, endpoint: str, *, timeout_s: float = 0.1, max_frame: int = P.DEFAULT_MAX_FRAME) -> None:
        self.host, self.port = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self.max_frame = max_frame
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._id = 0

    def close(self) -> None:
        """Drop the connection (the next call reconnects)."""
        self._buf.clear()
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _frame(self, deadline: float) -> bytes:
        """The body of the next frame (reads whatever the socket holds into ``self._buf``)."""
        buf, sock = self._buf, self._sock
        need = 4
        while True:
            if len(buf) >= 4 and need == 4:
                need = 4 + P.frame_length(bytes(buf[:4]), self.max_frame)
            if len(buf) >= need > 4:
                body = bytes(buf[4:need])
                del buf[:need]
                return body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(max(65536, need - len(buf)))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf += chunk

    def predict(self, model: str, windows: np.ndarray, *, exact: bool = True,
                timeout_s: float | None = None) -> Result:
        """Outputs of ``model`` for ``windows`` (float32 [batch, ...]) within the timeout."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        self._id += 1
        rid = self._id
        try:
            if self._sock is None:
                left = max(1e-3, deadline - time.monotonic())
                self._sock = socket.create_connection((self.host, self.port), timeout=left)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.settimeout(max(1e-3, deadline - time.monotonic()))
            self._sock.sendall(P.encode_array(P.Request(model, rid, "float32", list(x.shape), exact), x))
            while True:
                found = _result(*P.decode(self._frame(deadline)), rid)
                if found is not None:
                    return found
        except (TimeoutError, socket.timeout):
            self.close()
            raise ServerUnavailable(f"no answer from {self.endpoint} within "
                                    f"{(self.timeout_s if timeout_s is None else timeout_s) * 1e3:g} ms") from None
        except (OSError, P.ProtocolError) as e:
            self.close()
            raise ServerUnavailable(f"{self.endpoint}: {type(e).__name__}: {e}") from None
        except ServerUnavailable:
            self.close()
            raise


class AsyncServeClient:
    """An asyncio connection (one request at a time): for load generators and tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._id = 0

    @classmethod
    async def connect(cls, endpoint: str) -> "AsyncServeClient":
        host, port = parse_endpoint(endpoint)
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def predict(self, model: str, windows: np.ndarray, *, exact: bool = False) -> Result:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        self._id += 1
        rid = self._id
        self.writer.write(P.encode_array(P.Request(model, rid, "float32", list(x.shape), exact), x))
        while True:
            n = P.frame_length(await self.reader.readexactly(4), P.DEFAULT_MAX_FRAME)
            found = _result(*P.decode(await self.reader.readexactly(n)), rid)
            if found is not None:
                return found

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
