"""A bare FIX 4.4 endpoint that sends exactly what it is told: for tests, interop checks and debugging."""
from __future__ import annotations

import asyncio

from tradeloop.brokers.fix.codec import Framer, Garbled, Msg, decode, encode
from tradeloop.brokers.fix.spec import MsgType, Tag


class RawPeer:
    """A scripted counterparty: no session logic, just numbered messages out and decoded messages in."""

    def __init__(self, sender: str = "TRADER", target: str = "EXCH") -> None:
        self.sender, self.target = sender, target
        self.seq = 1
        self.received: list[Msg] = []
        self._framer = Framer()
        self._ready: list[Msg] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int) -> "RawPeer":
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._framer = Framer()
        self._ready = []
        return self

    def build(self, msg_type: str, body: list[tuple[int, object]] | tuple = (), *, seq: int | None = None,
              poss_dup: bool = False, orig_sending_time: str | None = None, sending_ns: int | None = None) -> bytes:
        """A well-formed message; ``seq`` None takes (and advances) the peer's own counter."""
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return encode(msg_type, self.sender, self.target, seq, body, poss_dup=poss_dup,
                      orig_sending_time=orig_sending_time, sending_ns=sending_ns)

    async def send(self, msg_type: str, body: list[tuple[int, object]] | tuple = (), **kw) -> bytes:
        raw = self.build(msg_type, body, **kw)
        await self.send_raw(raw)
        return raw

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None, "not connected"
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self, timeout: float = 2.0) -> Msg | None:
        """The next message (None at end of stream); TimeoutError when none comes within ``timeout``."""
        async def next_msg() -> Msg | None:
            while not self._ready:
                assert self._reader is not None, "not connected"
                data = await self._reader.read(65536)
                if not data:
                    return None
                self._framer.feed(data)
                self._ready += [decode(f) for f in self._framer.frames() if not isinstance(f, Garbled)]
            msg = self._ready.pop(0)
            self.received.append(msg)
            return msg
        return await asyncio.wait_for(next_msg(), timeout)

    async def expect(self, msg_type: str, timeout: float = 2.0, skip: tuple[str, ...] = (MsgType.Heartbeat,)) -> Msg:
        """The next message, skipping ``skip`` types; AssertionError if it is another type or the stream ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(deadline - loop.time(), 0.001))
            assert msg is not None, f"connection closed while waiting for 35={msg_type}"
            if msg.msg_type == msg_type:
                return msg
            assert msg.msg_type in skip, f"expected 35={msg_type}, got {msg!r}"

    async def closed(self, timeout: float = 2.0) -> bool:
        """True when the counterparty closes the connection within ``timeout`` (messages before it are kept)."""
        try:
            while await self.recv(timeout) is not None:
                pass
        except asyncio.TimeoutError:
            return False
        return True

    async def logon(self, *, password: str | None = None, username: str | None = None, heartbeat: int = 30,
                    reset: bool = False) -> Msg:
        """Send a Logon and return the counterparty's Logon reply."""
        if reset:
            self.seq = 1
        await self.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, heartbeat),
                                        (Tag.ResetSeqNumFlag, "Y" if reset else None), (Tag.Username, username),
                                        (Tag.Password, password)])
        return await self.expect(MsgType.Logon)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            self._writer = None
