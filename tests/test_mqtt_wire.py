"""The MQTT wire scheme, sessions/staleness and credential handling, without a broker."""
from __future__ import annotations

import io
import json
import logging
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import structlog
from hypothesis import given, settings, strategies as st

from tradeloop.data.mqtt import (MqttServer, Credentials, PayloadError, TradingHours, Staleness, bar_topic, decode_bar, decode_tick,
                       encode_bar, encode_tick, eos_topic, interval_name, parse_topic, redact_secrets,
                       tick_topic)
from tradeloop.data.mqtt.conn import install_redaction, paho_logger
from tradeloop.data.schema import Bar, Tick

GOOD = {"v": 1, "ts": 1_388_966_400_000_000_000, "o": 37.21, "h": 37.42, "l": 36.86, "c": 37.32, "vol": 10524200.0}
prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


def payload(**changes) -> bytes:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


# ------------------------------------------------------------------------------------------ topics

def test_topic_scheme():
    assert bar_topic("xnys", "ORCL", "1d") == "md/xnys/ORCL/bar/1d"
    assert tick_topic("xshg", "600977.SH") == "md/xshg/600977.SH/tick"
    assert eos_topic("sim") == "md/sim/$eos"
    assert parse_topic("md/xnys/ORCL/bar/1d") == ("xnys", "ORCL", "bar", "1d")
    assert parse_topic("md/xshg/600977.SH/tick") == ("xshg", "600977.SH", "tick", None)
    assert parse_topic("md/sim/$eos") == ("sim", "", "eos", None)
    assert parse_topic("other/sim/ORCL/tick") is None
    assert parse_topic("md/sim/ORCL/bar") is None


def test_symbols_with_topic_characters_are_escaped_one_level():
    t = bar_topic("binance", "BTC/USDT", "1m")
    assert t == "md/binance/BTC%2FUSDT/bar/1m"
    assert parse_topic(t)[1] == "BTC/USDT"
    for sym in ("A+B", "X#1", "50%OFF", "a/b/c"):
        assert parse_topic(tick_topic("v", sym))[1] == sym
    with pytest.raises(ValueError):
        bar_topic("bad/venue", "ORCL", "1d")
    with pytest.raises(ValueError):
        bar_topic("sim", "ORCL", "1+d")


def test_interval_names():
    assert interval_name(86_400 * 10 ** 9) == "1d"
    assert interval_name(5 * 60 * 10 ** 9) == "5m"
    assert interval_name(3_600 * 10 ** 9) == "1h"
    assert interval_name(30 * 10 ** 9) == "30s"
    assert interval_name(250 * 10 ** 6) == "250ms"


# ------------------------------------------------------------------------------------------ payloads

def test_bar_payload_v1_layout():
    bar = Bar("ORCL", GOOD["ts"], 37.21, 37.42, 36.86, 37.32, 10524200.0)
    assert encode_bar(bar) == b'{"v":1,"ts":1388966400000000000,"o":37.21,"h":37.42,"l":36.86,"c":37.32,"vol":10524200.0}'
    assert decode_bar("ORCL", encode_bar(bar)) == bar


@given(ts=st.integers(-(2 ** 63), 2 ** 63 - 1), a=prices, b=prices, c=prices, d=prices,
       vol=st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_bars_round_trip_bit_for_bit(ts, a, b, c, d, vol):
    lo, hi = min(a, b, c, d), max(a, b, c, d)
    bar = Bar("S", ts, b if lo <= b <= hi else lo, hi, lo, c, vol)
    back = decode_bar("S", encode_bar(bar))
    assert back == bar
    assert [x.hex() for x in (back.open, back.high, back.low, back.close, back.volume)] == \
        [x.hex() for x in (bar.open, bar.high, bar.low, bar.close, bar.volume)]


def test_a_bar_with_its_amount_travels_as_v2_and_one_without_as_v1():
    """A-share data has the traded amount: it must reach live strategies as it reaches backtests."""
    with_amount = Bar("600519.SH", 1262563200000000000, 106.9, 106.9, 105.2, 105.6, 44304.88, 753405.635)
    raw = encode_bar(with_amount)
    assert json.loads(raw) == {"v": 2, "ts": 1262563200000000000, "o": 106.9, "h": 106.9, "l": 105.2, "c": 105.6,
                               "vol": 44304.88, "amt": 753405.635}
    assert decode_bar("600519.SH", raw) == with_amount
    without = Bar("X", 5, 10.0, 11.0, 9.0, 10.5, 100.0)
    assert json.loads(encode_bar(without))["v"] == 1 and "amt" not in json.loads(encode_bar(without))
    assert decode_bar("X", encode_bar(without)).amount is None


def test_tick_payload_optional_fields():
    t = Tick("X", 5, 10.5, 300.0)
    assert encode_tick(t) == b'{"v":1,"ts":5,"p":10.5,"q":300.0}'
    back = decode_tick("X", encode_tick(t))
    assert back.price == 10.5 and math.isnan(back.bid) and math.isnan(back.ask)
    q = Tick("X", 6, 10.5, 0.0, 10.4, 10.6, 100.0, 200.0)
    assert decode_tick("X", encode_tick(q)) == q


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "json"),
    (b'{"v":1,"ts":1,"o":NaN}', "json"),
    (b"\xff\xfe", "json"),
    (payload(v=3), "version"),
    (payload(v=0, extra=1), "version"),
    (payload(v=2), "schema"),             # v2 requires the amount...
    (payload(amt=1000.0), "schema"),      # ...which v1 does not know
    (payload(v=2, amt=-1.0), "value"),
    (payload(v=...), "schema"),
    (payload(v="1"), "schema"),
    (payload(c=...), "schema"),
    (payload(extra=1), "schema"),
    (payload(ts=1.5), "schema"),
    (payload(o="37.2"), "schema"),
    (payload(h=None), "schema"),
    (payload(vol=True), "schema"),
    (b"[1,2,3]", "schema"),
    (payload(h=...)[:-1] + b',"h":1e999}', "value"),
    (payload(h=36.0), "value"),            # high < low
    (payload(o=40.0), "value"),            # open above high
    (payload(c=30.0), "value"),            # close below low
    (payload(l=0.0, o=1.0, c=1.0), "value"),  # non-positive price
    (payload(vol=-1.0), "value"),
    (payload(ts=2 ** 63), "value"),
])
def test_malformed_bars_name_their_reason(raw, reason):
    with pytest.raises(PayloadError) as err:
        decode_bar("ORCL", raw)
    assert err.value.reason == reason


def test_bad_ticks_are_rejected():
    for raw in (b'{"v":1,"ts":1,"p":0}', b'{"v":1,"ts":1,"p":1,"q":-1}', b'{"v":1,"ts":1,"p":1,"b":-2}',
                b'{"v":1,"ts":1}', b'{"v":1,"ts":1,"p":1,"x":1}', b'{"v":3,"ts":1,"p":1}'):
        with pytest.raises(PayloadError):
            decode_tick("X", raw)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids,
                                                                                     max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_bytes_never_escape_as_anything_but_payload_error(raw):
    for decode in (decode_bar, decode_tick):
        try:
            decode("S", raw)
        except PayloadError as e:
            assert e.reason in {"json", "version", "schema", "value"}


# ------------------------------------------------------------------------------------------ sessions

def at(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_session_windows_with_a_lunch_break():
    s = TradingHours.parse("09:30-11:30,13:00-15:00", "Asia/Shanghai")
    assert s.opened_at(at("2024-06-18 10:00", "Asia/Shanghai")) == at("2024-06-18 09:30", "Asia/Shanghai")
    assert s.opened_at(at("2024-06-18 12:00", "Asia/Shanghai")) is None
    assert s.opened_at(at("2024-06-18 14:59", "Asia/Shanghai")) == at("2024-06-18 13:00", "Asia/Shanghai")
    assert s.opened_at(at("2024-06-18 15:00", "Asia/Shanghai")) is None
    assert s.opened_at(at("2024-06-22 10:00", "Asia/Shanghai")) is None  # a Saturday
    with pytest.raises(ValueError):
        TradingHours.parse("16:00-09:30")


def test_staleness_counts_only_inside_the_session_and_from_the_open():
    tz = "America/New_York"
    st_ = Staleness(60, TradingHours.parse("09:30-16:00", tz))
    st_.watch(["A", "B"], at("2024-06-17 20:00", tz))           # Monday evening: watching starts
    assert st_.check(at("2024-06-18 09:00", tz)) == []            # closed: nothing goes stale overnight
    assert st_.check(at("2024-06-18 09:30:30", tz)) == []         # 30 s after the open: grace
    assert st_.seen("A", at("2024-06-18 09:30:45", tz)) is False
    assert st_.check(at("2024-06-18 09:31:00", tz)) == ["B"]      # B: 60 s since the open without data
    assert st_.check(at("2024-06-18 09:31:01", tz)) == []         # reported once
    assert st_.check(at("2024-06-18 09:31:45", tz)) == ["A"]
    assert st_.seen("B", at("2024-06-18 09:32:00", tz)) is True   # fresh again
    assert st_.stale == {"A"}


# ------------------------------------------------------------------------------------------ credentials

def test_credentials_come_from_the_environment_and_never_from_urls():
    env = {"TRADELOOP_MQTT_USERNAME": "trader", "TRADELOOP_MQTT_PASSWORD": "hunter2-wire"}
    b = MqttServer.from_url("mqtt://10.0.0.5", env=env)
    assert (b.host, b.port, b.tls, b.credentials.username) == ("10.0.0.5", 1883, None, "trader")
    assert "hunter2-wire" not in repr(b) and "hunter2-wire" not in json.dumps(b.describe())
    assert MqttServer.from_url("mqtts://broker.example:9999", env={}).tls is not None
    assert MqttServer.from_url("mqtts://broker.example", env={}).port == 8883
    with pytest.raises(ValueError) as err:
        MqttServer.from_url("mqtt://trader:hunter2-url@10.0.0.5:1883", env={})
    assert "hunter2-url" not in str(err.value)
    with pytest.raises(ValueError):
        MqttServer.from_url("http://10.0.0.5", env={})


def test_redaction_processor_masks_registered_secrets_and_secret_keys():
    Credentials("u", "pa55-redact-me")
    out = redact_secrets(None, "info", {"event": "connect failed: pa55-redact-me rejected", "password": "x",
                                        "nested": {"secret": "t", "msg": ["pa55-redact-me"]}, "err": OSError("pa55-redact-me")})
    text = json.dumps(out, default=str)
    assert "pa55-redact-me" not in text and out["password"] == "***" and out["nested"]["secret"] == "***"


def test_redaction_is_installed_into_a_configured_structlog_chain(monkeypatch):
    old = structlog.get_config()
    buf = io.StringIO()
    try:
        structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
                            logger_factory=structlog.PrintLoggerFactory(buf))
        Credentials("u", "installed-secret-42")
        install_redaction()
        install_redaction()  # idempotent
        structlog.get_logger().info("oops", detail="the password is installed-secret-42")
        assert "installed-secret-42" not in buf.getvalue() and "***" in buf.getvalue()
    finally:
        structlog.configure(**old)


def test_paho_logger_redacts(caplog):
    Credentials("u", "paho-secret-7")
    log = paho_logger()
    with caplog.at_level(logging.DEBUG, logger=log.name):
        log.warning("CONNECT with %s", "paho-secret-7")
    assert "paho-secret-7" not in caplog.text and "***" in caplog.text
