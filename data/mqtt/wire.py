"""Market data on the wire: MQTT topics and the versioned JSON payloads (schema v1).

Topics (one level per item; ``<symbol>`` is escaped, see :func:`escape`)::

    md/<venue>/<symbol>/bar/<interval>    one bar of <symbol> at <interval> (``1d``, ``5m``, ``1h``, ``30s``)
    md/<venue>/<symbol>/tick              one trade or quote update of <symbol>
    md/<venue>/$eos                       end of stream: a replay of <venue> has finished
    md/<venue>/$clock                     clock mark: every bar of <venue> with ts <= the mark is published
    md/<venue>/$ack/<component>           ack mark: <component> has finished with everything up to the mark

Levels that begin with ``$`` are control topics: a symbol level never begins with ``$`` (a leading
``$`` is escaped as ``%24``), and no component is called ``tick``, so the per-symbol wildcards
``md/<venue>/+/bar/<interval>`` and ``md/<venue>/+/tick`` never match a control topic.

Payloads are UTF-8 JSON objects, one message per event. ``v`` is the schema version and is
required; a consumer drops a message whose version it does not know. Within a version the
field set is closed: a missing field, an unknown field or a wrongly typed one makes the message
malformed (a new field means a new version). Numbers are JSON numbers written in their shortest
round-trip form, so a float survives the trip bit for bit; ``ts`` is an integer.

Bar, v1 (all fields required)::

    {"v":1,"ts":1388966400000000000,"o":37.21,"h":37.42,"l":36.86,"c":37.32,"vol":10524200.0}

    ts   int   bar timestamp, int64 ns (the engine's convention: UTC, or exchange wall time for naive data)
    o h l c    float  prices, finite and > 0, with l <= o, c <= h
    vol  float  traded volume, finite and >= 0

Bar, v2: v1 plus ``amt`` (required), the traded value, finite and >= 0; a publisher sends v2 for a
series that has an amount column (A-share data), so live bars feed the same VWAP feature as a
backtest does::

    {"v":2,"ts":1262563200000000000,"o":106.9,"h":106.9,"l":105.2,"c":105.6,"vol":44304.88,"amt":753405.6}

Tick, v1 (``v``, ``ts`` and ``p`` required; the others optional)::

    {"v":1,"ts":1718680500000000000,"p":11.27,"q":300.0,"b":11.26,"a":11.27,"bq":1200.0,"aq":800.0}

    p    float  last price, finite and > 0           q   float  traded size (default 0: a pure quote)
    b a  float  best bid / ask, finite and > 0, or absent/null (NaN in :class:`~tradeloop.data.schema.Tick`)
    bq aq float best bid / ask size, finite and >= 0, or absent/null (0)

End of stream, v1::

    {"v":1,"n":252,"ts":1419897600000000000}     n: messages the replay published, ts: the last one's ts

Clock and ack marks, v1 (both required; the lockstep protocol, see below)::

    {"v":1,"ts":1419897600000000000}             ts: int64 ns, the same clock as the bars' ts

Lockstep: a publisher (``tradeloop replay``) sends ``$clock`` after each timestamp group (all bars
sharing one ts), so a consumer can close the group at once. With ``--lockstep exchange,runner`` it
then waits for an ``$ack/<name>`` with ts >= the group's ts from every named component before the
next group; a component acks a clock only after it has finished with every bar up to it (the
exchange: matched them and handed the ExecutionReports to its FIX transport). Marks are not
checked for order: a repeated or older mark is delivered as it comes (acking it again is harmless).

Checks a consumer applies after decoding (in this order, the first failure names the reason):
``json`` (not JSON), ``version`` (``v`` is not 1), ``schema`` (missing/unknown/wrongly typed field),
``value`` (non-finite or out-of-range number, high < low, open/close outside [low, high]); then,
per symbol and kind, ``duplicate`` (ts equal to the last accepted bar's) and ``out_of_order``
(ts below the last accepted one). Ticks may repeat a timestamp (two trades in one stamp).
"""
from __future__ import annotations

import math
import operator
from typing import Any, Final

import msgspec

from tradeloop.data.schema import Bar, Tick
from tradeloop.data.validate import MAX_PRICE, MAX_VOLUME

VERSION: Final = 1
BAR_V2: Final = 2   # a bar with its traded amount (``amt``); every other payload stays at v1
PREFIX: Final = "md"
EOS_LEVEL: Final = "$eos"
CLOCK_LEVEL: Final = "$clock"
ACK_LEVEL: Final = "$ack"
_I64_MIN, _I64_MAX = -(2 ** 63), 2 ** 63 - 1


class PayloadError(ValueError):
    """A message that does not meet the wire schema; ``reason`` is one of the drop reasons above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BarV1(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Bar payload, schema v1, and v2 = v1 + ``amt`` (required in v2, absent in v1)."""

    v: int
    ts: int
    o: float
    h: float
    l: float  # the wire name of "low"
    c: float
    vol: float
    amt: float | None = None


class TickV1(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Tick payload, schema v1."""

    v: int
    ts: int
    p: float
    q: float = 0.0
    b: float | None = None
    a: float | None = None
    bq: float | None = None
    aq: float | None = None


class EosV1(msgspec.Struct, gc=False):
    """End-of-stream payload, schema v1 (unknown fields tolerated: it is advisory)."""

    v: int
    n: int = 0
    ts: int | None = None


class MarkV1(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """ClockMark / ack mark payload, schema v1."""

    v: int
    ts: int


class _Envelope(msgspec.Struct):
    """Just the version, to tell an unknown version from a malformed message."""

    v: int


_ENC = msgspec.json.Encoder()
_BAR_DEC = msgspec.json.Decoder(BarV1)
_TICK_DEC = msgspec.json.Decoder(TickV1)
_EOS_DEC = msgspec.json.Decoder(EosV1)
_MARK_DEC = msgspec.json.Decoder(MarkV1)
_ENV_DEC = msgspec.json.Decoder(_Envelope)


# ------------------------------------------------------------------------------------------ topics

def escape(symbol: str) -> str:
    """A symbol as one topic level: ``%`` ``/`` ``+`` ``#`` and a leading ``$`` (control topics) are percent-encoded."""
    if not symbol:
        raise ValueError("empty symbol")
    level = symbol.replace("%", "%25").replace("/", "%2F").replace("+", "%2B").replace("#", "%23")
    return "%24" + level[1:] if level.startswith("$") else level


def unescape(level: str) -> str:
    """Inverse of :func:`escape`."""
    return (level.replace("%2F", "/").replace("%2B", "+").replace("%23", "#").replace("%24", "$")
            .replace("%25", "%"))


def _level(name: str, what: str) -> str:
    """Check that ``name`` is usable as one topic level."""
    if not name or any(ch in name for ch in "/+#") or "\x00" in name:
        raise ValueError(f"{what} {name!r} cannot be a topic level (empty, or contains / + # or NUL)")
    return name


def bar_topic(venue: str, symbol: str, interval: str) -> str:
    """``md/<venue>/<symbol>/bar/<interval>``."""
    return f"{PREFIX}/{_level(venue, 'venue')}/{escape(symbol)}/bar/{_level(interval, 'interval')}"


def tick_topic(venue: str, symbol: str) -> str:
    """``md/<venue>/<symbol>/tick``."""
    return f"{PREFIX}/{_level(venue, 'venue')}/{escape(symbol)}/tick"


def eos_topic(venue: str) -> str:
    """``md/<venue>/$eos``."""
    return f"{PREFIX}/{_level(venue, 'venue')}/{EOS_LEVEL}"


def clock_topic(venue: str) -> str:
    """``md/<venue>/$clock``."""
    return f"{PREFIX}/{_level(venue, 'venue')}/{CLOCK_LEVEL}"


def ack_topic(venue: str, component: str) -> str:
    """``md/<venue>/$ack/<component>``; ``component`` is one level, not ``tick`` (``+/tick`` would match it)."""
    if component == "tick":
        raise ValueError("component 'tick' is reserved: md/<venue>/+/tick subscriptions would match its acks")
    return f"{PREFIX}/{_level(venue, 'venue')}/{ACK_LEVEL}/{_level(component, 'component')}"


def parse_topic(topic: str) -> tuple[str, str, str, str | None] | None:
    """``(venue, symbol, kind, interval)``, kind ``bar``/``tick``/``eos``/``clock``/``ack`` (for ``ack`` the
    second item is the component); None if not a market data topic."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != PREFIX:
        return None
    if parts[2].startswith("$"):  # a control level; symbols are escaped so that they never start with $
        if len(parts) == 3 and parts[2] == EOS_LEVEL:
            return parts[1], "", "eos", None
        if len(parts) == 3 and parts[2] == CLOCK_LEVEL:
            return parts[1], "", "clock", None
        if len(parts) == 4 and parts[2] == ACK_LEVEL and parts[3] and parts[3] != "tick":
            return parts[1], parts[3], "ack", None
        return None
    if len(parts) == 5 and parts[3] == "bar":
        return parts[1], unescape(parts[2]), "bar", parts[4]
    if len(parts) == 4 and parts[3] == "tick":
        return parts[1], unescape(parts[2]), "tick", None
    return None


def interval_name(step_ns: int) -> str:
    """A bar spacing in ns as an interval name: ``1d``, ``4h``, ``5m``, ``30s``, ``250ms``."""
    if step_ns <= 0:
        raise ValueError(f"bar spacing must be positive, not {step_ns}")
    for unit, ns in (("d", 86_400 * 10 ** 9), ("h", 3_600 * 10 ** 9), ("m", 60 * 10 ** 9), ("s", 10 ** 9),
                     ("ms", 10 ** 6), ("us", 10 ** 3)):
        if step_ns % ns == 0:
            return f"{step_ns // ns}{unit}"
    return f"{step_ns}ns"


# ------------------------------------------------------------------------------------------ encode

def encode_bar_values(ts: int, o: float, h: float, lo: float, c: float, vol: float,
                      amount: float | None = None) -> bytes:
    """A bar payload from plain values (the replay's fast path: no Bar object); v2 when it has an amount."""
    if amount is not None and amount == amount:
        return _ENC.encode(BarV1(BAR_V2, ts, o, h, lo, c, vol, amount))
    return _ENC.encode(BarV1(VERSION, ts, o, h, lo, c, vol))


def encode_bar(bar: Bar) -> bytes:
    """The payload of ``bar`` (the symbol travels in the topic): v2 when it has an amount, else v1."""
    return encode_bar_values(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.amount)


def _opt(x: float) -> float | None:
    """None for NaN (an absent quote) and for a zero size, so the payload leaves them out."""
    return None if (math.isnan(x) or x == 0.0) else x


def encode_tick_values(ts: int, price: float, size: float, bid: float, ask: float, bid_size: float,
                       ask_size: float) -> bytes:
    """A tick payload from plain values (the replay's path: no Tick object); NaN quotes and zero sizes left out."""
    return _ENC.encode(TickV1(VERSION, ts, price, size, _opt(bid), _opt(ask), _opt(bid_size), _opt(ask_size)))


def encode_tick(tick: Tick) -> bytes:
    """The v1 payload of ``tick`` (NaN bid/ask are left out)."""
    return encode_tick_values(tick.ts, tick.price, tick.size, tick.bid, tick.ask, tick.bid_size, tick.ask_size)


def encode_eos(n: int, last_ts: int | None) -> bytes:
    """The v1 end-of-stream payload."""
    return _ENC.encode(EosV1(VERSION, n, last_ts))


def encode_mark(ts: int) -> bytes:
    """The v1 payload of a ``$clock`` or ``$ack`` mark at ``ts`` (int64 ns)."""
    try:
        n = operator.index(ts)  # int or numpy integer; never a float or a bool
    except TypeError:
        n = None
    if n is None or isinstance(ts, bool) or not _I64_MIN <= n <= _I64_MAX:
        raise ValueError(f"a mark's ts must be an int64 count of ns, not {ts!r}")
    return _ENC.encode(MarkV1(VERSION, n))


# ------------------------------------------------------------------------------------------ decode

def _fail(payload: bytes, err: msgspec.DecodeError) -> PayloadError:
    """Classify a msgspec failure: not JSON, unknown version, or wrong shape."""
    if not isinstance(err, msgspec.ValidationError):
        return PayloadError("json", str(err))
    if str(err).startswith("Number out of range"):  # 1e999: valid JSON, not a finite float
        return PayloadError("value", str(err))
    try:
        v = _ENV_DEC.decode(payload).v
    except msgspec.DecodeError:
        return PayloadError("schema", str(err))
    if v != VERSION:
        return PayloadError("version", f"unknown schema version {v!r}")
    return PayloadError("schema", str(err))


def _check_ts(ts: int) -> None:
    if not _I64_MIN <= ts <= _I64_MAX:
        raise PayloadError("value", f"ts {ts} does not fit int64 ns")


def _decode(decoder: Any, payload: bytes, versions: tuple[int, ...] = (VERSION,)) -> Any:
    """``payload`` decoded by ``decoder``, its schema version one of ``versions``; PayloadError otherwise."""
    try:
        m = decoder.decode(payload)
    except msgspec.DecodeError as e:
        raise _fail(payload, e) from None
    if m.v not in versions:
        raise PayloadError("version", f"unknown schema version {m.v!r}")
    return m


def bar_problem(o: float, h: float, lo: float, c: float, vol: float) -> str | None:
    """Why these bar values are unusable, by the loaders' rules (data/validate.py); None if they are fine.

    Finite, prices positive and at most ``MAX_PRICE``, volume in [0, ``MAX_VOLUME``], low <= open,
    close <= high. NaN fails every comparison, so it is caught too.
    """
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c) and math.isfinite(vol)):
        return "non-finite number"
    if not (lo > 0 and lo <= h and lo <= o <= h and lo <= c <= h and vol >= 0):
        return f"inconsistent bar o={o!r} h={h!r} l={lo!r} c={c!r} vol={vol!r}"
    if h > MAX_PRICE or vol > MAX_VOLUME:
        return f"out of bounds: h={h!r} (max {MAX_PRICE:g}) vol={vol!r} (max {MAX_VOLUME:g})"
    return None


def tick_problem(tick: Tick) -> str | None:
    """Why a tick's values are unusable (price positive and bounded, sizes >= 0, quotes positive); None if fine."""
    p, q, b, a, bq, aq = tick.price, tick.size, tick.bid, tick.ask, tick.bid_size, tick.ask_size
    if not (math.isfinite(p) and 0 < p <= MAX_PRICE and math.isfinite(q) and 0 <= q <= MAX_VOLUME
            and math.isfinite(bq) and bq >= 0 and math.isfinite(aq) and aq >= 0
            and (math.isnan(b) or (math.isfinite(b) and 0 < b <= MAX_PRICE))
            and (math.isnan(a) or (math.isfinite(a) and 0 < a <= MAX_PRICE))):
        return f"bad tick p={p!r} q={q!r} b={b!r} a={a!r} bq={bq!r} aq={aq!r}"
    return None


def decode_bar(symbol: str, payload: bytes) -> Bar:
    """A checked :class:`Bar` from a v1 bar payload; raises :class:`PayloadError`."""
    m = _decode(_BAR_DEC, payload, (VERSION, BAR_V2))
    if (m.amt is None) != (m.v == VERSION):
        raise PayloadError("schema", "amt is required in a v2 bar and unknown in v1")
    _check_ts(m.ts)
    o, h, lo, c, vol = m.o, m.h, m.l, m.c, m.vol
    problem = bar_problem(o, h, lo, c, vol)
    if problem is not None:
        raise PayloadError("value", problem)
    if m.amt is None:
        return Bar(symbol, m.ts, o, h, lo, c, vol)
    if not (math.isfinite(m.amt) and m.amt >= 0):
        raise PayloadError("value", f"amount must be finite and >= 0, got {m.amt!r}")
    return Bar(symbol, m.ts, o, h, lo, c, vol, m.amt)


def decode_tick(symbol: str, payload: bytes) -> Tick:
    """A checked :class:`Tick` from a v1 tick payload; raises :class:`PayloadError`."""
    m = _decode(_TICK_DEC, payload)
    _check_ts(m.ts)
    b = math.nan if m.b is None else m.b
    a = math.nan if m.a is None else m.a
    bq = 0.0 if m.bq is None else m.bq
    aq = 0.0 if m.aq is None else m.aq
    if (m.b is not None and math.isnan(b)) or (m.a is not None and math.isnan(a)):
        raise PayloadError("value", f"bad tick quote b={m.b!r} a={m.a!r}")
    tick = Tick(symbol, m.ts, m.p, m.q, b, a, bq, aq)
    problem = tick_problem(tick)
    if problem is not None:
        raise PayloadError("value", problem)
    return tick


def decode_eos(payload: bytes) -> EosV1:
    """The end-of-stream payload; raises :class:`PayloadError`."""
    m = _decode(_EOS_DEC, payload)
    return m


def decode_mark(payload: bytes) -> int:
    """The ts of a v1 ``$clock`` / ``$ack`` payload; raises :class:`PayloadError`."""
    m = _decode(_MARK_DEC, payload)
    _check_ts(m.ts)
    return m.ts
