"""The FIX 4.4 session layer over one asyncio TCP connection at a time (initiator or acceptor).

Logon (35=A, optional Username/Password), Heartbeat / TestRequest supervision, ResendRequest
answered with PossDupFlag=Y replays and SequenceReset-GapFill for administrative messages,
session Reject (35=3) with RefTagID / SessionRejectReason for invalid messages, Logout.
Sequence numbers and sent application messages live in a :class:`SequenceStore`; every
change is committed before the bytes it belongs to reach the socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, NoReturn, Protocol

import structlog

from tradeloop.brokers.fix.codec import (BEGIN_STRING, Framer, Garbled, Msg, Problem, Redacted, as_resend, decode, encode, redact, utc_timestamp,
                    validate)
from tradeloop.brokers.fix.spec import ADMIN_TYPES, MsgType, RejectReason, Tag
from tradeloop.brokers.fix.store import SequenceStore


def _same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a credential from the wire (absent = wrong)."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


@dataclass
class SessionConfig:
    """Identity and timing of one FIX session, as seen from this side."""

    sender_comp_id: str
    target_comp_id: str
    heartbeat_s: int = 30
    begin_string: str = BEGIN_STRING
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # sent by an initiator, required by an acceptor
    reset_on_logon: bool = False                             # initiator: Logon with ResetSeqNumFlag=Y
    logon_timeout_s: float = 10.0
    logout_timeout_s: float = 2.0
    max_latency_s: float | None = 120.0  # SendingTime further than this from our clock: Reject(373=10) + Logout


class Application(Protocol):
    """What a session hands to the layer above it."""

    supported: frozenset[str]  # application MsgTypes it handles; others get BusinessMessageReject

    def on_logon(self, session: "FixSession") -> None: ...

    def on_logout(self, session: "FixSession", reason: str) -> None: ...

    def on_message(self, session: "FixSession", msg: Msg) -> None:
        """An application message, in sequence (``msg.poss_dup`` when it is a replay)."""

    def on_reject(self, session: "FixSession", msg: Msg) -> None:
        """A session Reject (35=3) or BusinessMessageReject (35=j) from the counterparty."""


class _Disconnect(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Fatal(_Disconnect):
    """An error that ends the session with a Logout carrying ``reason``."""


class FixSession:
    """One FIX session; :meth:`run` serves one connection, the store carries state across connections."""

    def __init__(self, config: SessionConfig, store: SequenceStore, app: Application, *, log: Any = None) -> None:
        self.config = config
        self.store = store
        self.app = app
        name = f"{config.sender_comp_id}->{config.target_comp_id}"
        self.log = (log or structlog.get_logger("fix")).bind(session=name)
        self.heartbeat_s = config.heartbeat_s
        self.logged_on = False
        self.logon_refused: str | None = None  # Text of the Logout that refused our last Logon
        self._writer: asyncio.StreamWriter | None = None
        self._initiator = False
        self._outbox: list[bytes] = []
        self._depth = 0
        self._last_sent = self._last_recv = time.monotonic()
        self._test_req_sent: float | None = None
        self._resend_until: int | None = None
        self._logout_sent = False
        self._drop_reason: str | None = None
        self._after_unit: str | None = None
        self._test_ids = itertools.count(1)
        self._logon_seq = 0
        self._unwritten = False  # an application message was numbered but not written on this connection
        self._logon_event = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._closed_event.set()
        self._pings: dict[str, asyncio.Future] = {}  # TestReqID of a ping() -> its waiter

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def wait_logged_on(self, timeout: float | None = None) -> bool:
        """True once logged on; False when ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._logon_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, initiator: bool,
                  initial: bytes = b"") -> str:
        """Serve one TCP connection until it ends; returns why it ended. ``initial``: bytes already read
        from it (an acceptor that checked the Logon before handing the connection over)."""
        if self._writer is not None:
            raise RuntimeError("session already has a connection")
        self._writer = writer
        self._initiator = initiator
        self.logged_on = False
        self._logout_sent = False
        self._drop_reason = None
        self._resend_until = None
        self._test_req_sent = None
        self._unwritten = False
        self._last_sent = self._last_recv = time.monotonic()
        self._closed_event.clear()
        reason = "connection closed by peer"
        framer = Framer()
        timer = asyncio.create_task(self._timer())
        try:
            if initiator:
                self._send_logon()
            data = initial
            while True:
                if not data:
                    data = await reader.read(65536)
                if not data:
                    break
                self._last_recv = time.monotonic()
                self._test_req_sent = None
                framer.feed(data)
                for item in framer.frames():
                    if isinstance(item, Garbled):
                        self.log.warning("fix.garbled", reason=item.reason, data=redact(item.data[:200]))
                        continue
                    self._handle(item)
                await writer.drain()
                data = b""
        except _Disconnect as e:
            reason = e.reason
            if isinstance(e, _Fatal):
                self._logout_now(e.reason)
        except (ConnectionError, OSError) as e:
            reason = f"connection error: {e!r}"
        except Exception as e:  # a bug must cost the connection, not the process
            self.log.exception("fix.internal_error")
            reason = f"internal error: {e!r}"
        finally:
            timer.cancel()
            reason = self._drop_reason or reason
            was_logged_on = self.logged_on
            self.logged_on = False
            self._logon_event.clear()
            self._writer = None
            self._outbox.clear()
            with contextlib.suppress(Exception):
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._closed_event.set()
            self.log.info("fix.disconnected", reason=reason)
            if was_logged_on:
                self.app.on_logout(self, reason)
        return reason

    async def logout(self, text: str = "") -> None:
        """Send Logout, wait for the counterparty's Logout (or the timeout), then close."""
        if self._writer is None:
            return
        if self.logged_on and not self._logout_sent:
            self._logout_sent = True
            self.send(MsgType.Logout, [(Tag.Text, text or None)])
        try:
            await asyncio.wait_for(self._closed_event.wait(), self.config.logout_timeout_s)
        except asyncio.TimeoutError:
            self.drop("no Logout response")
            await self._closed_event.wait()

    async def ping(self, timeout: float = 5.0) -> None:
        """A TestRequest round trip: when it returns, every message the counterparty sent before
        answering has been handled (one TCP stream keeps order). TimeoutError if unanswered."""
        test_id = f"PING{next(self._test_ids)}"
        waiter = self._pings[test_id] = asyncio.get_running_loop().create_future()
        try:
            self.send(MsgType.TestRequest, [(Tag.TestReqID, test_id)])
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._pings.pop(test_id, None)

    def drop(self, reason: str) -> None:
        """Close the connection now (no Logout)."""
        if self._writer is not None:
            self._drop_reason = self._drop_reason or reason
            self._writer.close()

    # ------------------------------------------------------------------ sending
    @contextlib.contextmanager
    def unit(self, *, isolated: bool = False) -> Iterator[None]:
        """Group state changes and sends: committed together, then the messages are written.

        A unit that fails takes back its own messages; an ``isolated`` one nested in another also
        takes back only its own state changes (a savepoint), so the outer unit can carry on.
        """
        self._depth += 1
        mark = len(self._outbox)
        try:
            with (self.store.savepoint() if isolated else self.store.atomic()):
                yield
        except BaseException:
            self._depth -= 1
            del self._outbox[mark:]
            raise
        self._depth -= 1
        if self._depth == 0:
            self._flush()

    def send(self, msg_type: str, body: list[tuple[int, object]] | tuple = ()) -> int:
        """Send a message with the next MsgSeqNum (application messages are stored for resends).

        While disconnected an application message is still numbered and stored: the
        counterparty sees the gap at the next Logon and asks for it with a ResendRequest.
        """
        with self.unit():
            store = self.store
            seq = store.next_sender_seq
            raw = encode(msg_type, self.config.sender_comp_id, self.config.target_comp_id, seq, body,
                         begin_string=self.config.begin_string)
            if msg_type not in ADMIN_TYPES:
                store.save_message(seq, raw)
            store.set_next_sender_seq(seq + 1)
            if self._writer is not None and (self.logged_on or msg_type in (MsgType.Logon, MsgType.Logout)):
                self._outbox.append(raw)
            elif self._writer is not None:
                self._unwritten = True
        return seq

    def _send_unsequenced_logout(self, text: str) -> None:
        """A Logout refusing a Logon: numbered like the next message but not consuming the number."""
        raw = encode(MsgType.Logout, self.config.sender_comp_id, self.config.target_comp_id,
                     self.store.next_sender_seq, [(Tag.Text, text)], begin_string=self.config.begin_string)
        self._write([raw])

    def _flush(self) -> None:
        if self._outbox:
            out, self._outbox = self._outbox, []
            self._write(out)

    def _write(self, frames: list[bytes]) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        for raw in frames:
            self.log.debug("fix.send", msg=Redacted(raw))
        self._writer.write(b"".join(frames))
        self._last_sent = time.monotonic()

    def _send_logon(self) -> None:
        cfg = self.config
        if cfg.reset_on_logon:
            self.store.reset()
        body: list[tuple[int, object]] = [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, cfg.heartbeat_s)]
        if cfg.reset_on_logon:
            body.append((Tag.ResetSeqNumFlag, "Y"))
        body += [(Tag.Username, cfg.username), (Tag.Password, cfg.password)]
        self._logon_seq = self.send(MsgType.Logon, body)
        self.log.info("fix.logon_sent", seq=self._logon_seq, reset=cfg.reset_on_logon)

    def _reject(self, msg: Msg, problem: Problem) -> None:
        """Session-level Reject (35=3) of ``msg``."""
        self.log.warning("fix.reject_sent", ref_seq=msg.seq_num, reason=problem.reason, tag=problem.tag,
                         text=problem.text)
        mt = msg.msg_type
        self.send(MsgType.Reject, [(Tag.RefSeqNum, msg.seq_num), (Tag.RefTagID, problem.tag),
                                   (Tag.RefMsgType, mt or None), (Tag.SessionRejectReason, problem.reason),
                                   (Tag.Text, problem.text)])

    def _fatal(self, text: str) -> NoReturn:
        """End the session: Logout with ``text`` (sent once any open unit has unwound) and disconnect."""
        raise _Fatal(text)

    def _logout_now(self, text: str) -> None:
        self.log.warning("fix.logout_error", text=text)
        with contextlib.suppress(Exception):
            if self.logged_on:
                self._logout_sent = True
                self.send(MsgType.Logout, [(Tag.Text, text)])
            else:
                self._send_unsequenced_logout(text)

    # ------------------------------------------------------------------ receiving
    def _handle(self, frame: bytes) -> None:
        msg = decode(frame)
        self.log.debug("fix.recv", msg=Redacted(frame))
        fields = msg.fields
        if len(fields) < 4 or fields[2][0] != Tag.MsgType:
            self.log.warning("fix.garbled", reason="MsgType(35) is not the third field", data=redact(frame[:200]))
            return
        if fields[0][1] != self.config.begin_string:
            self._fatal(f"Incorrect BeginString {fields[0][1]!r}, expected {self.config.begin_string!r}")
        seq = msg.seq_num
        if seq is None:
            self._fatal("MsgSeqNum(34) missing or not a number")
        mt = msg.msg_type
        if not self.logged_on:
            self._on_logon(msg, seq)
            return
        if msg.get(Tag.SenderCompID) != self.config.target_comp_id or \
                msg.get(Tag.TargetCompID) != self.config.sender_comp_id:
            with self.unit():
                self._reject(msg, Problem(RejectReason.COMPID_PROBLEM, Tag.SenderCompID, "CompID problem"))
                self.store.set_next_target_seq(max(self.store.next_target_seq, seq + 1))
            self._fatal("CompID problem")
        if mt == MsgType.SequenceReset and msg.get(Tag.GapFillFlag) != "Y":
            self._on_sequence_reset(msg, seq)
            return
        expected = self.store.next_target_seq
        if seq < expected:
            if msg.poss_dup:
                self.log.debug("fix.duplicate_ignored", seq=seq, expected=expected)
                return
            self._fatal(f"MsgSeqNum too low, expecting {expected} but received {seq}")
        if seq > expected:
            if mt == MsgType.ResendRequest and validate(msg) is None:
                with self.unit():
                    self._resend(int(msg[Tag.BeginSeqNo]), int(msg[Tag.EndSeqNo]))
            elif mt == MsgType.Logout:
                self._on_logout(msg)
                raise _Disconnect(self._after_unit or "logout")
            self._request_resend(expected, seq)
            return
        problem = validate(msg)
        if problem is None and self._sending_time_off(msg):
            with self.unit():
                self._reject(msg, Problem(RejectReason.SENDING_TIME_ACCURACY, Tag.SendingTime,
                                          "SendingTime accuracy problem"))
                self.store.set_next_target_seq(seq + 1)
            self._fatal("SendingTime accuracy problem")
        if problem is None and msg.poss_dup and mt != MsgType.SequenceReset:
            sent, orig = msg.time_ns(Tag.SendingTime), msg.time_ns(Tag.OrigSendingTime)
            if orig is not None and sent is not None and orig > sent:
                with self.unit():
                    self._reject(msg, Problem(RejectReason.SENDING_TIME_ACCURACY, Tag.OrigSendingTime,
                                              "SendingTime accuracy problem: OrigSendingTime after SendingTime"))
                    self.store.set_next_target_seq(seq + 1)
                self._fatal("SendingTime accuracy problem")
        self._after_unit = None
        with self.unit():
            if problem is not None:
                self._reject(msg, problem)
                self.store.set_next_target_seq(seq + 1)
            elif not self._dispatch(msg, seq):
                self.store.set_next_target_seq(seq + 1)
        if self._resend_until is not None and self.store.next_target_seq > self._resend_until:
            self.log.info("fix.resend_complete", next_expected=self.store.next_target_seq)
            self._resend_until = None
        if self._after_unit is not None:
            raise _Disconnect(self._after_unit)

    def _sending_time_off(self, msg: Msg) -> bool:
        """True when SendingTime is further from our clock than ``max_latency_s``."""
        limit = self.config.max_latency_s
        if limit is None:
            return False
        sent = msg.time_ns(Tag.SendingTime)
        return sent is not None and abs(time.time_ns() - sent) > limit * 1e9

    def _dispatch(self, msg: Msg, seq: int) -> bool:
        """Act on an in-sequence valid message; True when it set the next expected number itself."""
        mt = msg.msg_type
        if mt == MsgType.Heartbeat:
            waiter = self._pings.get(msg.get(Tag.TestReqID, ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return False
        if mt == MsgType.TestRequest:
            self.send(MsgType.Heartbeat, [(Tag.TestReqID, msg[Tag.TestReqID])])
            return False
        if mt == MsgType.ResendRequest:
            self._resend(int(msg[Tag.BeginSeqNo]), int(msg[Tag.EndSeqNo]))
            return False
        if mt == MsgType.SequenceReset:  # GapFill mode (Reset mode is handled before sequencing)
            new = int(msg[Tag.NewSeqNo])
            if new <= seq:
                self._reject(msg, Problem(RejectReason.VALUE_OUT_OF_RANGE, Tag.NewSeqNo,
                                          f"Attempt to lower sequence number, invalid value NewSeqNo={new}"))
                return False
            self.log.info("fix.gap_filled", begin=seq, new_seq=new)
            self.store.set_next_target_seq(new)
            return True
        if mt == MsgType.Logout:
            self.store.set_next_target_seq(seq + 1)
            self._on_logout(msg)
            return True
        if mt == MsgType.Logon:
            self._fatal("Logon received while already logged on")
        if mt in (MsgType.Reject, MsgType.BusinessMessageReject):
            self.log.warning("fix.reject_received", msg=redact(msg.raw))
            self.app.on_reject(self, msg)
            return False
        if mt in self.app.supported:
            try:
                with self.unit(isolated=True):  # a failure takes back all it did, nothing else
                    self.app.on_message(self, msg)
            except Exception as e:  # an application bug must not wedge the session's sequence numbers
                self.log.exception("fix.application_error", msg_type=mt, seq=seq)
                self._business_reject(msg, 0, f"application error: {type(e).__name__}")
            return False
        self._business_reject(msg, 3, f"Unsupported message type {mt!r}")
        return False

    def _business_reject(self, msg: Msg, reason: int, text: str) -> None:
        self.send(MsgType.BusinessMessageReject, [(Tag.RefSeqNum, msg.seq_num), (Tag.RefMsgType, msg.msg_type),
                                                  (Tag.BusinessRejectReason, reason), (Tag.Text, text)])

    def _on_logout(self, msg: Msg) -> None:
        text = msg.get(Tag.Text, "")
        if self._logout_sent:
            self._after_unit = f"logout confirmed{': ' + text if text else ''}"
        else:
            self._logout_sent = True
            self.send(MsgType.Logout, [])
            self._after_unit = f"logout by counterparty{': ' + text if text else ''}"

    def _on_logon(self, msg: Msg, seq: int) -> None:
        """The first message of a connection: a Logon (or, to an initiator, a Logout refusing ours)."""
        cfg = self.config
        mt = msg.msg_type
        if self._initiator and mt == MsgType.Logout:
            self.logon_refused = msg.get(Tag.Text, "logout")
            self.log.warning("fix.logon_refused", text=self.logon_refused)
            raise _Disconnect(f"logon refused: {self.logon_refused}")
        if mt != MsgType.Logon:
            self.log.warning("fix.first_message_not_logon", msg_type=mt)
            raise _Disconnect(f"first message is not a Logon (35={mt})")
        problem = validate(msg)
        if problem is not None:
            self._fatal(f"Invalid Logon: {problem.text}")
        if msg[Tag.SenderCompID] != cfg.target_comp_id or msg[Tag.TargetCompID] != cfg.sender_comp_id:
            self._fatal("Logon refused: unknown CompID")
        if self._sending_time_off(msg):
            self._fatal("Logon refused: SendingTime accuracy problem")
        if not self._initiator:
            if cfg.password is not None and not (_same(msg.get(Tag.Password), cfg.password) &
                                                 (cfg.username is None or _same(msg.get(Tag.Username), cfg.username))):
                self._fatal("Logon refused: invalid username or password")
            if msg[Tag.EncryptMethod] != "0":
                self._fatal("Logon refused: unsupported EncryptMethod")
            hb = int(msg[Tag.HeartBtInt])
            if hb < 0:
                self._fatal("Logon refused: HeartBtInt must not be negative")
            self.heartbeat_s = hb
        reset = msg.get(Tag.ResetSeqNumFlag) == "Y"
        with self.unit():
            if reset and not self._initiator:
                self.store.reset()
            expected = self.store.next_target_seq
            if seq < expected:
                self._fatal(f"MsgSeqNum too low, expecting {expected} but received {seq}")
            if not self._initiator:
                body: list[tuple[int, object]] = [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, self.heartbeat_s)]
                if reset:
                    body.append((Tag.ResetSeqNumFlag, "Y"))
                self._logon_seq = self.send(MsgType.Logon, body)
            self.logged_on = True
            if seq == expected:
                self.store.set_next_target_seq(seq + 1)
        self.logon_refused = None
        self.log.info("fix.logged_on", their_seq=seq, expected=expected, next_sender=self.store.next_sender_seq,
                      heartbeat_s=self.heartbeat_s)
        if seq > expected:
            self._request_resend(expected, seq)
        self._logon_event.set()
        self.app.on_logon(self)
        if self._unwritten:
            # messages numbered while the Logon was pending were not written: show the gap now
            self._unwritten = False
            self.send(MsgType.Heartbeat)

    def _on_sequence_reset(self, msg: Msg, seq: int) -> None:
        """SequenceReset in Reset mode: MsgSeqNum is ignored, NewSeqNo may only move forward."""
        problem = validate(msg)
        expected = self.store.next_target_seq
        with self.unit():
            if problem is not None:
                self._reject(msg, problem)
                return
            new = int(msg[Tag.NewSeqNo])
            if new < expected:
                self._reject(msg, Problem(RejectReason.VALUE_OUT_OF_RANGE, Tag.NewSeqNo,
                                          f"Attempt to lower sequence number, invalid value NewSeqNo={new}"))
                return
            self.log.info("fix.sequence_reset", expected=expected, new_seq=new)
            self.store.set_next_target_seq(new)

    def _request_resend(self, expected: int, seq: int) -> None:
        """Ask for everything from ``expected`` on (EndSeqNo=0), once per outstanding gap."""
        if self._resend_until is not None:
            self._resend_until = max(self._resend_until, seq)
            return
        self._resend_until = seq
        self.log.info("fix.gap_detected", expected=expected, received=seq)
        self.send(MsgType.ResendRequest, [(Tag.BeginSeqNo, expected), (Tag.EndSeqNo, 0)])

    def _resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest: application messages again with PossDupFlag=Y, admin ones as GapFill."""
        last = self.store.next_sender_seq - 1
        if end == 0 or end > last:
            end = last
        if begin < 1 or begin > end:
            self.log.info("fix.resend_nothing", begin=begin, end=end, last=last)
            return
        stored = self.store.messages(begin, end)
        self.log.info("fix.resending", begin=begin, end=end, messages=len(stored))
        out: list[bytes] = []
        gap_start: int | None = begin
        for seq, raw in stored.items():
            if gap_start is not None and seq > gap_start:
                out.append(self._gap_fill(gap_start, seq))
            gap_start = None
            out.append(as_resend(decode(raw)))
            gap_start = seq + 1
        if gap_start is not None and gap_start <= end:
            out.append(self._gap_fill(gap_start, end + 1))
        self._outbox.extend(out)

    def _gap_fill(self, seq: int, new_seq: int) -> bytes:
        now = time.time_ns()
        return encode(MsgType.SequenceReset, self.config.sender_comp_id, self.config.target_comp_id, seq,
                      [(Tag.GapFillFlag, "Y"), (Tag.NewSeqNo, new_seq)], sending_ns=now, poss_dup=True,
                      orig_sending_time=utc_timestamp(now), begin_string=self.config.begin_string)

    # ------------------------------------------------------------------ supervision
    async def _timer(self) -> None:
        """Heartbeats when we are quiet, a TestRequest when they are, disconnect when that goes unanswered."""
        started = time.monotonic()
        while True:
            hb = self.heartbeat_s
            await asyncio.sleep(min(max(hb / 10, 0.05), 0.5) if hb > 0 else 0.5)
            now = time.monotonic()
            if not self.logged_on:
                if now - started > self.config.logon_timeout_s:
                    self.log.warning("fix.logon_timeout")
                    self.drop("logon timeout")
                    return
                continue
            if hb <= 0 or self._logout_sent:
                continue
            if now - self._last_sent >= hb:
                self.send(MsgType.Heartbeat)
            silence = now - self._last_recv
            if self._test_req_sent is None:
                if silence >= hb * 1.2:
                    self._test_req_sent = now
                    self.send(MsgType.TestRequest, [(Tag.TestReqID, f"TEST{next(self._test_ids)}")])
            elif now - self._test_req_sent >= hb:
                self.log.warning("fix.heartbeat_timeout", silence_s=round(silence, 3))
                self.drop("no response to TestRequest")
                return
