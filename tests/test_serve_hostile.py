"""Specification: hostile or broken clients of ``tradeloop serve`` get a Failure frame or a closed
connection, never a crashed or stuck server. One real server process takes every abuse in turn;
after each, a well-behaved client on a fresh connection is still answered, and /metrics counts the
errors and the closed connections."""
from __future__ import annotations

import socket
import struct
import time

import msgspec
import numpy as np
import pytest

from tradeloop.models.serve import protocol as P
from tradeloop.models.serve.client import ServeClient
from tests.test_serve_support import parse_metrics, served, tiny_windows


HEAD_S = 1.0   # --header-timeout-s: an HTTP request line and headers must arrive within it


@pytest.fixture(scope="module")
def srv():
    with served("--read-timeout-s", "0.5", "--idle-timeout-s", "1.5", "--max-connections", "8",
                "--max-frame-bytes", "200000", "--header-timeout-s", str(HEAD_S), http=True) as s:
        yield s


def conn(srv) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_frame(s: socket.socket) -> P.Header | None:
    """The next frame's header, or None when the server closed the connection."""
    buf = b""
    while len(buf) < 4:
        chunk = s.recv(4 - len(buf))
        if not chunk:
            return None
        buf += chunk
    (n,) = struct.unpack("<I", buf)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return P.decode(body)[0]


def closed(s: socket.socket, within: float = 5.0) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def still_serves(srv) -> None:
    c = ServeClient(srv.endpoint, timeout_s=5)
    try:
        assert c.predict("tiny", tiny_windows(2)).outputs.shape == (2, 2)
    finally:
        c.close()


WRONG = msgspec.msgpack.encode({"type": "req"})


def request(model="tiny", shape=(1, 16, 16), dtype="float32", payload=None, rid=7) -> bytes:
    data = payload if payload is not None else np.zeros(shape, np.float32).tobytes()
    return P.encode(P.Request(model, rid, dtype, list(shape)), data)


@pytest.mark.parametrize("frame, code", [
    (request(shape=(1, 16, 15)), P.BAD_SHAPE),                         # not the model's window
    (request(shape=(2, 16, 16), payload=b"\0" * 100), P.BAD_SHAPE),     # payload shorter than the shape
    (request(dtype="float64"), P.BAD_DTYPE),
    (request(model="nosuch"), P.UNKNOWN_MODEL),
    (request(shape=(0, 16, 16), payload=b""), P.BAD_SHAPE),            # an empty batch
    (request(shape=(10**9, 16, 16), payload=b""), P.TOO_LARGE),        # more windows than allowed
    (struct.pack("<I", 6) + struct.pack("<H", 4) + b"\xc1\xc1\xc1\xc1", P.BAD_REQUEST),   # not msgpack
    (struct.pack("<I", 4) + struct.pack("<H", 900) + b"ab", P.BAD_REQUEST),               # header > frame
    (P.encode(P.Reply(1, "tiny", "v1", "float32", [1, 2])), P.BAD_REQUEST),            # a reply, not a request
    (struct.pack("<I", 2 + len(WRONG)) + struct.pack("<H", len(WRONG)) + WRONG, P.BAD_REQUEST),  # fields missing
])
def test_a_bad_frame_gets_a_failure_frame_and_the_connection_goes_on(srv, frame, code):
    s = conn(srv)
    s.sendall(frame)
    reply = read_frame(s)
    assert isinstance(reply, P.Failure) and reply.code == code, reply
    s.sendall(request(rid=8))                      # the same connection still serves
    good = read_frame(s)
    assert isinstance(good, P.Reply) and good.id == 8 and good.shape == [1, 2]
    s.close()


@pytest.mark.parametrize("junk", [struct.pack("<I", 2**31) + b"x" * 10, b"\xff\xff\xff\xff",
                                  struct.pack("<I", 1) + b"z"])
def test_unframeable_bytes_get_a_failure_and_a_closed_connection(srv, junk):
    s = conn(srv)
    s.sendall(junk)
    reply = read_frame(s)
    assert isinstance(reply, P.Failure) and reply.code in (P.TOO_LARGE, P.BAD_REQUEST)
    assert closed(s)
    still_serves(srv)


def test_random_garbage_never_crashes_or_wedges_the_server(srv):
    rng = np.random.default_rng(0)
    for i in range(30):
        s = conn(srv)
        s.sendall(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes())
        s.close()
    time.sleep(0.5)                                 # the server sees the 30 closes (it allows 8 connections)
    still_serves(srv)


def test_a_slowloris_frame_is_cut_off_after_the_read_timeout_while_others_are_served(srv):
    s = conn(srv)
    frame = request()
    s.sendall(frame[:20])                           # a frame started and never finished
    t = time.monotonic()
    still_serves(srv)                               # others are answered meanwhile
    assert closed(s, within=5.0)
    assert 0.4 < time.monotonic() - t < 3.0


def test_a_byte_by_byte_dribble_is_cut_off_too(srv):
    s = conn(srv)
    frame = request()
    t = time.monotonic()
    cut = False
    for b in frame:
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.05)
        if time.monotonic() - t > 3.0:
            break
    assert cut or closed(s, within=2.0)
    assert time.monotonic() - t < 4.0


def test_an_idle_connection_is_closed_and_the_connection_limit_holds(srv):
    idle = conn(srv)
    assert closed(idle, within=5.0)                 # --idle-timeout-s 1.5
    many = [conn(srv) for _ in range(8)]
    time.sleep(0.2)
    extra = conn(srv)
    reply = read_frame(extra)
    assert isinstance(reply, P.Failure) and reply.code == P.OVERLOADED
    for s in many:
        s.close()
    time.sleep(0.3)
    still_serves(srv)


def http_conn(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)


def test_an_http_request_head_dribbled_a_byte_a_second_is_cut_off_at_the_header_deadline(srv):
    s = http_conn(srv)
    t = time.monotonic()
    sent, cut = 0, False
    for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n":
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        sent += 1
        assert srv.http("/healthz")[0] == 200      # others are answered meanwhile
        if closed(s, within=1.0):                  # one byte a second
            cut = True
            break
        if time.monotonic() - t > 8:
            break
    s.close()
    assert cut and HEAD_S - 0.1 < time.monotonic() - t < HEAD_S + 1.5 and sent <= 3, (cut, sent)
    assert srv.http("/healthz")[0] == 200


def test_fifty_slow_http_heads_hold_the_slots_only_until_the_header_deadline(srv):
    slow = [http_conn(srv) for _ in range(50)]     # --max-connections 8: they take every HTTP slot
    try:
        t = time.monotonic()
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe: slo")   # never finished
        assert srv.http("/healthz")[0] == 503       # uvicorn's concurrency limit: the attack is real
        assert all(closed(s, within=max(0.01, t + HEAD_S + 3 - time.monotonic())) for s in slow)
        assert time.monotonic() - t < HEAD_S + 3
        assert srv.http("/healthz")[0] == 200       # the slots are free again
    finally:
        for s in slow:
            s.close()


def test_a_client_that_vanishes_mid_request_costs_nothing(srv):
    for _ in range(5):
        s = conn(srv)
        s.sendall(request(shape=(64, 16, 16)))      # then gone before the reply
        s.close()
    still_serves(srv)
    m = parse_metrics(srv.http("/metrics")[1])
    assert m[("tradeloop_serve_connections_rejected_total", ())] >= 5     # framing, slowloris, idle, limit
    errors = {dict(k[1])["code"] for k in m if k[0] == "tradeloop_serve_errors_total"}
    assert {P.BAD_SHAPE, P.BAD_DTYPE, P.TOO_LARGE} <= errors
