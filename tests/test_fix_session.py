"""The FIX 4.4 session layer, specified against the exchange simulator by a scripted raw counterparty.

Every test talks real TCP on 127.0.0.1 (a free port) and is bounded in time.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fix.codec import checksum, decode, utc_timestamp
from tradeloop.brokers.fix.rawpeer import RawPeer
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType, RejectReason, Tag

HOST = "127.0.0.1"
PASSWORD = "pa55-word"


def run(coro, timeout: float = 15.0):
    """Run one scenario on a fresh event loop, never longer than ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def exchange(state=None, password: str | None = PASSWORD) -> AsyncIterator[ExchangeSimulator]:
    config = SessionConfig("EXCH", "TRADER", password=password, logout_timeout_s=0.05)
    ex = ExchangeSimulator(config, state=state, host=HOST, port=0)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


async def logged_on(ex: ExchangeSimulator, heartbeat: int = 30) -> RawPeer:
    peer = await RawPeer().connect(HOST, ex.port)
    await peer.logon(password=PASSWORD, heartbeat=heartbeat)
    return peer


def order_body(clordid: str = "O1", *, drop: tuple[int, ...] = ()) -> list[tuple[int, object]]:
    body = [(Tag.ClOrdID, clordid), (Tag.Symbol, "X"), (Tag.Side, "1"), (Tag.TransactTime, utc_timestamp()),
            (Tag.OrderQty, 10), (Tag.OrdType, "2"), (Tag.Price, 9.5), (Tag.TimeInForce, "1")]
    return [f for f in body if f[0] not in drop]


# ---------------------------------------------------------------------------------- logon / logout
def test_logon_is_answered_with_logon_and_logout_with_logout():
    async def scenario():
        async with exchange() as ex:
            peer = await RawPeer().connect(HOST, ex.port)
            reply = await peer.logon(password=PASSWORD, heartbeat=30)
            assert (reply[Tag.SenderCompID], reply[Tag.TargetCompID], reply.seq_num) == ("EXCH", "TRADER", 1)
            assert (reply[Tag.EncryptMethod], reply[Tag.HeartBtInt]) == ("0", "30")
            assert ex.session.logged_on
            await peer.send(MsgType.Logout, [(Tag.Text, "bye")])
            await peer.expect(MsgType.Logout)
            assert await peer.closed(2.0)
            assert (ex.store.next_target_seq, ex.store.next_sender_seq) == (3, 3)
    run(scenario())


def test_bad_password_is_refused_with_a_logout_giving_the_reason_then_a_good_logon_works():
    async def scenario():
        async with exchange() as ex:
            peer = await RawPeer().connect(HOST, ex.port)
            await peer.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, "wrong")])
            refusal = await peer.expect(MsgType.Logout)
            assert "password" in refusal[Tag.Text]
            assert await peer.closed(2.0)
            assert not ex.session.logged_on
            good = await RawPeer().connect(HOST, ex.port)
            good.seq = 2
            assert (await good.logon(password=PASSWORD)).msg_type == MsgType.Logon
            await good.close()
    run(scenario())


def test_unknown_comp_id_is_refused():
    async def scenario():
        async with exchange() as ex:
            peer = await RawPeer(sender="MALLORY").connect(HOST, ex.port)
            await peer.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, PASSWORD)])
            assert "CompID" in (await peer.expect(MsgType.Logout))[Tag.Text]
            assert await peer.closed(2.0)
    run(scenario())


def test_first_message_other_than_logon_is_dropped():
    async def scenario():
        async with exchange() as ex:
            peer = await RawPeer().connect(HOST, ex.port)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "hello")])
            assert await peer.closed(2.0)
            assert [m.msg_type for m in peer.received] == []
    run(scenario())


def test_reset_seq_num_flag_starts_both_sides_at_one():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "t")])
            await peer.expect(MsgType.Heartbeat)
            await peer.close()
            again = await RawPeer().connect(HOST, ex.port)
            reply = await again.logon(password=PASSWORD, reset=True)
            assert reply.seq_num == 1 and reply[Tag.ResetSeqNumFlag] == "Y"
            assert ex.store.next_target_seq == 2
    run(scenario())


# ---------------------------------------------------------------------------------- heartbeats
def test_test_request_is_answered_by_a_heartbeat_echoing_its_id():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "ping-42")])
            hb = await peer.expect(MsgType.Heartbeat, skip=())
            assert hb[Tag.TestReqID] == "ping-42"
    run(scenario())


def test_an_idle_session_sends_heartbeats_at_the_agreed_interval():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex, heartbeat=1)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            hb = await peer.expect(MsgType.Heartbeat, timeout=2.0, skip=())
            assert Tag.TestReqID not in hb and 0.8 <= loop.time() - t0 <= 1.8
    run(scenario())


def test_a_silent_counterparty_gets_a_test_request_then_is_disconnected():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex, heartbeat=1)
            test = await peer.expect(MsgType.TestRequest, timeout=3.0)
            assert test[Tag.TestReqID]
            assert await peer.closed(3.0)
            await asyncio.sleep(0.05)
            assert not ex.session.connected
    run(scenario())


# ---------------------------------------------------------------------------------- sequencing
def test_a_sequence_gap_is_answered_by_resend_request_and_closed_by_gap_fill():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)  # our Logon was 1; the exchange now expects 2
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "after-gap")], seq=4)
            rr = await peer.expect(MsgType.ResendRequest)
            assert (rr[Tag.BeginSeqNo], rr[Tag.EndSeqNo]) == ("2", "0")
            now = utc_timestamp()
            await peer.send(MsgType.SequenceReset, [(Tag.GapFillFlag, "Y"), (Tag.NewSeqNo, 4)], seq=2,
                            poss_dup=True, orig_sending_time=now)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "after-gap")], seq=4, poss_dup=True,
                            orig_sending_time=now)
            assert (await peer.expect(MsgType.Heartbeat, skip=()))[Tag.TestReqID] == "after-gap"
            assert ex.store.next_target_seq == 5
    run(scenario())


def test_resend_request_replays_application_messages_with_possdup_and_gap_fills_admin_ones():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.NewOrderSingle, order_body("O1"))
            ack = await peer.expect(MsgType.ExecutionReport)
            assert (ack.seq_num, ack[Tag.ExecType], ack[Tag.ClOrdID]) == (2, "0", "O1")
            await peer.send(MsgType.ResendRequest, [(Tag.BeginSeqNo, 1), (Tag.EndSeqNo, 0)])
            fill = await peer.expect(MsgType.SequenceReset)
            assert (fill.seq_num, fill[Tag.GapFillFlag], fill[Tag.NewSeqNo], fill[Tag.PossDupFlag]) == \
                (1, "Y", "2", "Y")
            again = await peer.expect(MsgType.ExecutionReport)
            assert again.seq_num == 2 and again[Tag.PossDupFlag] == "Y"
            assert again[Tag.OrigSendingTime] == ack[Tag.SendingTime]
            assert again[Tag.ExecID] == ack[Tag.ExecID]
    run(scenario())


def test_a_possdup_replay_below_the_expected_number_is_ignored_and_books_nothing_twice():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            first = await peer.send(MsgType.NewOrderSingle, order_body("O1"))
            await peer.expect(MsgType.ExecutionReport)
            orig = decode(first)[Tag.SendingTime]
            await peer.send(MsgType.NewOrderSingle, order_body("O1"), seq=2, poss_dup=True, orig_sending_time=orig)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "still-there")])
            hb = await peer.expect(MsgType.Heartbeat, skip=())
            assert hb[Tag.TestReqID] == "still-there"
            assert len(ex.venue.open_orders()) == 1
    run(scenario())


def test_a_possdup_resend_of_an_order_already_taken_is_not_booked_twice():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            first = await peer.send(MsgType.NewOrderSingle, order_body("O1"))
            await peer.expect(MsgType.ExecutionReport)
            # a resend of the same ClOrdID under a new number (as after a lost store) is recognised
            await peer.send(MsgType.NewOrderSingle, order_body("O1"), poss_dup=True,
                            orig_sending_time=decode(first)[Tag.SendingTime])
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "t")])
            await peer.expect(MsgType.Heartbeat, skip=())
            assert len(ex.venue.open_orders()) == 1
            assert ex.store.next_target_seq == 5
    run(scenario())


def test_a_too_low_sequence_number_without_possdup_ends_the_session():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "a")])
            await peer.expect(MsgType.Heartbeat, skip=())
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "b")], seq=2)
            logout = await peer.expect(MsgType.Logout)
            assert "MsgSeqNum too low, expecting 3 but received 2" in logout[Tag.Text]
            assert await peer.closed(2.0)
    run(scenario())


def test_sequence_numbers_survive_a_restart_of_the_exchange(tmp_path):
    state = tmp_path / "exchange.sqlite"

    async def scenario():
        async with exchange(state) as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.NewOrderSingle, order_body("O1"))
            await peer.expect(MsgType.ExecutionReport)
            await peer.close()
            while ex.session.connected:
                await asyncio.sleep(0.01)
        async with exchange(state) as ex:
            assert (ex.store.next_target_seq, ex.store.next_sender_seq) == (3, 3)
            assert [o.id for o in ex.venue.open_orders()] == ["X00000001"]
            peer = RawPeer()
            peer.seq = 3
            await peer.connect(HOST, ex.port)
            assert (await peer.logon(password=PASSWORD)).seq_num == 3
    run(scenario())


# ---------------------------------------------------------------------------------- invalid messages
def test_missing_required_tag_gets_a_reject_naming_it_and_the_session_carries_on():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.NewOrderSingle, order_body("O1", drop=(Tag.OrdType,)))
            rej = await peer.expect(MsgType.Reject)
            assert (rej[Tag.RefSeqNum], rej[Tag.RefTagID], rej[Tag.RefMsgType], rej[Tag.SessionRejectReason]) == \
                ("2", "40", "D", str(RejectReason.REQUIRED_TAG_MISSING))
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "next")])
            assert (await peer.expect(MsgType.Heartbeat, skip=()))[Tag.TestReqID] == "next"
            assert ex.venue.open_orders() == []
    run(scenario())


def test_invalid_msg_type_is_rejected_and_an_unsupported_one_gets_a_business_reject():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send("ZZ", [(Tag.Text, "?")])
            rej = await peer.expect(MsgType.Reject)
            assert rej[Tag.SessionRejectReason] == str(RejectReason.INVALID_MSG_TYPE)
            await peer.send("B", [(148, "headline"), (33, 1), (58, "news")])  # News: defined, not handled
            biz = await peer.expect(MsgType.BusinessMessageReject)
            assert (biz[Tag.RefMsgType], biz[Tag.BusinessRejectReason], biz[Tag.RefSeqNum]) == ("B", "3", "3")
    run(scenario())


def test_wrong_begin_string_ends_the_session_with_a_logout():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            raw = peer.build(MsgType.TestRequest, [(Tag.TestReqID, "x")]).replace(b"FIX.4.4", b"FIX.4.2", 1)
            raw = _fix_trailer(raw)
            await peer.send_raw(raw)
            assert "BeginString" in (await peer.expect(MsgType.Logout))[Tag.Text]
            assert await peer.closed(2.0)
    run(scenario())


def test_a_second_logon_inside_a_session_or_a_missing_msg_seq_num_ends_it_with_a_logout():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            await peer.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, PASSWORD)])
            logout = await peer.expect(MsgType.Logout)
            assert "already logged on" in logout[Tag.Text] and logout.seq_num == 2
            assert await peer.closed(2.0)
            await asyncio.sleep(0.02)
            peer = await RawPeer().connect(HOST, ex.port)
            await peer.logon(password=PASSWORD, reset=True)
            raw = peer.build(MsgType.TestRequest, [(Tag.TestReqID, "x")])
            await peer.send_raw(_fix_trailer(raw.replace(b"\x0134=2\x01", b"\x01")))
            assert "MsgSeqNum(34) missing" in (await peer.expect(MsgType.Logout))[Tag.Text]
            assert await peer.closed(2.0)
    run(scenario())


def test_a_sending_time_far_from_our_clock_gets_a_reject_and_a_logout():
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            stale = time.time_ns() - 10 * 60 * 1_000_000_000
            await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "old")], sending_ns=stale)
            rej = await peer.expect(MsgType.Reject)
            assert (rej[Tag.RefTagID], rej[Tag.SessionRejectReason]) == ("52", str(RejectReason.SENDING_TIME_ACCURACY))
            await peer.expect(MsgType.Logout)
            assert await peer.closed(2.0)
    run(scenario())


def _fix_trailer(raw: bytes) -> bytes:
    """Recompute BodyLength and CheckSum of a hand-edited message."""
    head, _, rest = raw.partition(b"\x019=")
    _, _, after_len = rest.partition(b"\x01")
    body = after_len[:after_len.rindex(b"10=")]
    out = head + b"\x019=" + str(len(body)).encode() + b"\x01" + body
    return out + b"10=" + f"{checksum(out):03d}".encode() + b"\x01"


MUTATIONS = ("checksum", "body_length", "garbage", "drop_required", "empty_value", "bad_time", "begin_string")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=st.sampled_from(MUTATIONS), delta=st.integers(1, 30), negative=st.booleans(),
       garbage=st.binary(min_size=1, max_size=64).filter(lambda b: b"8=" not in b),
       drop=st.sampled_from([Tag.ClOrdID, Tag.Symbol, Tag.Side, Tag.TransactTime, Tag.OrderQty, Tag.OrdType]))
def test_malformed_messages_get_a_reject_or_are_ignored_or_disconnect_as_fix_says(mutation, delta, negative,
                                                                                   garbage, drop):
    """Garbled frames are ignored without using a sequence number; invalid content gets a Reject
    that uses one; a wrong BeginString ends the session and the next session works."""
    async def scenario():
        async with exchange() as ex:
            peer = await logged_on(ex)
            seq = peer.seq
            good = peer.build(MsgType.NewOrderSingle, order_body("O1"), seq=seq)
            if mutation == "checksum":
                bad = good[:-4] + f"{(int(good[-4:-1]) + delta) % 256:03d}".encode() + b"\x01"
            elif mutation == "body_length":
                n = int(good.split(b"\x01")[1][2:])
                bad = good.replace(b"\x019=%d\x01" % n, b"\x019=%d\x01" % max(n + (-delta if negative else delta), 1))
            elif mutation == "garbage":
                bad = garbage
            elif mutation == "drop_required":
                bad = peer.build(MsgType.NewOrderSingle, order_body("O1", drop=(drop,)), seq=seq)
            elif mutation == "empty_value":
                bad = _fix_trailer(good.replace(b"\x0155=X\x01", b"\x0155=\x01"))
            elif mutation == "bad_time":
                t = decode(good)[Tag.TransactTime].encode()
                bad = _fix_trailer(good.replace(b"\x0160=" + t, b"\x0160=20241340-" + t[9:]))
            else:
                bad = _fix_trailer(good.replace(b"FIX.4.4", b"FIX.4.1", 1))
            await peer.send_raw(bad)
            if mutation in ("checksum", "body_length", "garbage"):
                # garbled: ignored, and the sequence number is still free
                await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "alive")], seq=seq)
                assert (await peer.expect(MsgType.Heartbeat, skip=()))[Tag.TestReqID] == "alive"
                assert ex.store.next_target_seq == seq + 1
            elif mutation in ("drop_required", "empty_value", "bad_time"):
                rej = await peer.expect(MsgType.Reject)
                want = {"drop_required": (drop, RejectReason.REQUIRED_TAG_MISSING),
                        "empty_value": (Tag.Symbol, RejectReason.TAG_WITHOUT_VALUE),
                        "bad_time": (Tag.TransactTime, RejectReason.INCORRECT_DATA_FORMAT)}[mutation]
                assert (int(rej[Tag.RefTagID]), int(rej[Tag.SessionRejectReason])) == want
                assert int(rej[Tag.RefSeqNum]) == seq
                await peer.send(MsgType.TestRequest, [(Tag.TestReqID, "alive")], seq=seq + 1)
                assert (await peer.expect(MsgType.Heartbeat, skip=()))[Tag.TestReqID] == "alive"
            else:
                await peer.expect(MsgType.Logout)
                assert await peer.closed(2.0)
                await asyncio.sleep(0.02)
                again = await RawPeer().connect(HOST, ex.port)
                await again.logon(password=PASSWORD, reset=True)
                await again.send(MsgType.TestRequest, [(Tag.TestReqID, "alive")])
                assert (await again.expect(MsgType.Heartbeat, skip=()))[Tag.TestReqID] == "alive"
            assert ex.venue.open_orders() == []
    run(scenario(), timeout=10.0)
