"""FIX 4.4 wire format: framing by BodyLength, CheckSum, validation against the dictionary, redaction."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloop.brokers.fix.codec import (Framer, Garbled, as_resend, checksum, decode, encode, fix_float, parse_utc_timestamp,
                               redact, utc_timestamp, validate)
from tradeloop.brokers.fix.mapping import new_order_single
from tradeloop.brokers.fix.spec import MsgType, RejectReason, Tag
from tradeloop.brokers.orders import Order, OrderType, Side, TimeInForce


def nos(seq: int = 2, **drop) -> bytes:
    order = Order("O1", "AAPL", Side.BUY, 100.0, OrderType.LIMIT, 187.25, None, TimeInForce.DAY,
                  created_ts=1_700_000_000_123_000_000)
    body = [(t, v) for t, v in new_order_single(order) if t not in drop.get("tags", ())]
    return encode(MsgType.NewOrderSingle, "TRADER", "EXCH", seq, body)


def frames_of(stream: bytes, chunks: list[int] | None = None) -> list[bytes | Garbled]:
    f = Framer()
    out: list[bytes | Garbled] = []
    if chunks is None:
        chunks = [len(stream)]
    i = 0
    for n in chunks + [len(stream)]:
        f.feed(stream[i:i + n])
        i += n
        out += list(f.frames())
        if i >= len(stream):
            break
    return out


def test_encoded_message_has_standard_header_body_length_and_checksum():
    raw = nos()
    text = raw.decode()
    assert text.startswith("8=FIX.4.4\x019=")
    fields = [p.split("=", 1) for p in text.split("\x01")[:-1]]
    assert [t for t, _ in fields[:7]] == ["8", "9", "35", "49", "56", "34", "52"]
    body_start = text.index("\x01", text.index("9=")) + 1
    body_end = text.rindex("10=")
    assert int(fields[1][1]) == body_end - body_start
    assert int(fields[-1][1]) == checksum(raw[:body_end]) and fields[-1][0] == "10"


def test_new_order_single_carries_the_fix44_required_fields_and_validates():
    msg = decode(nos())
    assert validate(msg) is None
    for tag in (Tag.ClOrdID, Tag.Side, Tag.TransactTime, Tag.OrderQty, Tag.OrdType, Tag.Symbol, Tag.Price):
        assert tag in msg
    assert (msg[Tag.ClOrdID], msg[Tag.OrdType], msg[Tag.Side], msg[Tag.TimeInForce]) == ("O1", "2", "1", "0")
    assert msg[Tag.TransactTime] == "20231114-22:13:20.123"


def test_missing_required_tag_is_reported_with_its_tag_number():
    problem = validate(decode(nos(tags=(Tag.OrdType,))))
    assert (problem.reason, problem.tag) == (RejectReason.REQUIRED_TAG_MISSING, Tag.OrdType)


def test_undefined_enum_value_and_bad_number_format_are_reported():
    raw = nos().replace(b"\x0154=1\x01", b"\x0154=Z\x01")
    assert validate(decode(raw)).reason == RejectReason.VALUE_OUT_OF_RANGE  # (CheckSum not rechecked by decode)
    bad_qty = encode(MsgType.NewOrderSingle, "T", "E", 2, [(11, "A"), (55, "X"), (54, "1"),
                                                           (60, utc_timestamp()), (38, "1e5"), (40, "1")])
    p = validate(decode(bad_qty))
    assert (p.reason, p.tag) == (RejectReason.INCORRECT_DATA_FORMAT, Tag.OrderQty)


def test_header_field_after_body_field_is_out_of_order():
    raw = encode(MsgType.TestRequest, "T", "E", 2, [(Tag.TestReqID, "x"), (Tag.PossDupFlag, "N")])
    p = validate(decode(raw))
    assert (p.reason, p.tag) == (RejectReason.TAG_OUT_OF_ORDER, Tag.PossDupFlag)


def test_unknown_msg_type_is_invalid():
    p = validate(decode(encode("ZZ", "T", "E", 2, [])))
    assert p.reason == RejectReason.INVALID_MSG_TYPE


def test_resend_copy_keeps_the_sequence_number_and_marks_possible_duplicate():
    original = decode(nos(seq=7))
    again = decode(as_resend(original))
    assert validate(again) is None
    assert again.seq_num == 7 and again.poss_dup
    assert again[Tag.OrigSendingTime] == original[Tag.SendingTime]
    assert [f for f in again.fields if f[0] not in (9, 10, 43, 52, 122)] == \
        [f for f in original.fields if f[0] not in (9, 10, 43, 52, 122)]


def test_password_never_appears_in_the_log_form():
    raw = encode(MsgType.Logon, "T", "E", 1, [(98, 0), (108, 30), (553, "alice"), (554, "s3cr3t!")])
    text = redact(raw)
    assert "s3cr3t!" not in text and "554=***" in text and "553=alice" in text


def test_timestamps_round_trip_and_floats_never_use_exponents():
    for ns in (0, 1_700_000_000_123_000_000, 1_262_304_000_000_000_000):
        assert parse_utc_timestamp(utc_timestamp(ns)) == ns
    assert parse_utc_timestamp(utc_timestamp(1_000_000_001, exact=True)) == 1_000_000_001
    assert utc_timestamp(1_000_000_001) == "19700101-00:00:01.000"
    assert [fix_float(x) for x in (100.0, 187.25, 1e-7, 1e21, 0.1)] == \
        ["100", "187.25", "0.0000001", "1000000000000000000000", "0.1"]


def test_framer_skips_garbage_and_reports_bad_checksum_and_body_length():
    good1, good2 = nos(seq=2), nos(seq=3)
    bad_sum = good1[:-4] + (b"000" if not good1.endswith(b"=000\x01") else b"001") + b"\x01"
    bad_len = good1.replace(b"9=", b"9=1", 1)
    out = frames_of(b"junk\x01" + good1 + bad_sum + bad_len + good2)
    assert [o for o in out if isinstance(o, bytes)] == [good1, good2]
    reasons = [o.reason for o in out if isinstance(o, Garbled)]
    assert any("garbage" in r for r in reasons)
    assert any("CheckSum" in r for r in reasons)
    assert any("BodyLength" in r for r in reasons)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30),
       st.lists(st.binary(max_size=20).filter(lambda b: b"8=" not in b), min_size=3, max_size=3))
def test_framing_is_independent_of_how_the_stream_is_chunked(chunks, junk):
    msgs = [nos(seq=s) for s in (2, 3, 4)]
    stream = junk[0] + msgs[0] + junk[1] + msgs[1] + junk[2] + msgs[2]
    got = [o for o in frames_of(stream, chunks) if isinstance(o, bytes)]
    assert got == msgs


@given(st.lists(st.tuples(st.integers(1, 9999).filter(lambda t: t not in (8, 9, 10, 34, 35, 43, 49, 52, 56, 122)),
                          st.one_of(st.text("ABCxyz019.-_ ", min_size=1, max_size=12),
                                    st.integers(-10**9, 10**9),
                                    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(bool))),
                max_size=12),
       st.integers(1, 10**7), st.booleans())
@settings(max_examples=200, deadline=None)
def test_the_direct_encoder_writes_the_same_bytes_as_simplefix(body, seq, poss_dup):
    """encode() assembles frames itself for speed; simplefix is the reference it must equal."""
    import simplefix

    from tradeloop.brokers.fix.codec import utc_timestamp
    ns = 1_700_000_000_123_000_000
    ref = simplefix.FixMessage()
    for tag, value in [(8, "FIX.4.4"), (35, "D"), (49, "TRADER"), (56, "EXCH"), (34, seq)] + \
            ([(43, "Y")] if poss_dup else []) + [(52, utc_timestamp(ns))] + \
            ([(122, "20200101-00:00:00.000")] if poss_dup else []):
        ref.append_pair(tag, value, header=True)
    for tag, value in body:
        ref.append_pair(tag, fix_float(value) if isinstance(value, float) else value)
    ours = encode("D", "TRADER", "EXCH", seq, body, sending_ns=ns, poss_dup=poss_dup,
                  orig_sending_time="20200101-00:00:00.000" if poss_dup else None)
    assert ours == ref.encode()
