"""The binary protocol of the prediction service: length-prefixed frames, a msgspec header, raw arrays.

A frame on the wire::

    u32 little-endian   n: the bytes that follow (header length field + header + payload)
    u16 little-endian   h: header length
    h bytes             header: a msgpack-encoded :class:`Request`, :class:`Reply` or :class:`Failure`
    n - 2 - h bytes     payload: the array's raw little-endian bytes, C order (empty for a Failure)

A request names the model, carries a client-chosen id (echoed in the reply, so a client may
pipeline), the dtype and the shape of its windows. A reply carries the outputs' dtype and shape
and the model version that computed them (and whether it was the backup). An error is a
:class:`Failure` frame with a code from :data:`CODES`. Sizes are bounded before anything is
allocated: a frame longer than the server's limit, or a header longer than :data:`MAX_HEADER`, is
refused. Everything here is pure (no sockets): the server and the clients share it.
"""
from __future__ import annotations

import math
import struct
from typing import Union

import msgspec
import numpy as np

MAX_HEADER = 4096                  # bytes of a header
DEFAULT_MAX_FRAME = 32 << 20       # bytes of a frame (the server's --max-frame-bytes)
PREFIX = struct.Struct("<I")
HEADER_LEN = struct.Struct("<H")
DTYPES = {"float32": np.dtype("<f4")}   # request dtypes the server accepts

# Failure codes: the first group is the caller's fault (retrying will not help), the second the
# server's state (a client may retry, fall back or halt).
BAD_REQUEST, BAD_SHAPE, BAD_DTYPE, UNKNOWN_MODEL, TOO_LARGE = (
    "bad_request", "bad_shape", "bad_dtype", "unknown_model", "too_large")
NOT_READY, OVERLOADED, INTERNAL = "not_ready", "overloaded", "internal"
CODES = (BAD_REQUEST, BAD_SHAPE, BAD_DTYPE, UNKNOWN_MODEL, TOO_LARGE, NOT_READY, OVERLOADED, INTERNAL)
CLIENT_FAULTS = frozenset((BAD_REQUEST, BAD_SHAPE, BAD_DTYPE, UNKNOWN_MODEL, TOO_LARGE))


class ProtocolError(ValueError):
    """Bytes that are not a valid frame; ``code`` is the Failure code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Request(msgspec.Struct, tag="req", frozen=True):
    """Predict ``shape`` windows of ``dtype`` with ``model``. ``exact``: a one-window request runs in
    a batch of its own (an ONNX Runtime batch of one rounds the last bits differently from a
    bigger batch), so its outputs equal an in-process call bit for bit."""

    model: str
    id: int
    dtype: str
    shape: list[int]
    exact: bool = False


class Reply(msgspec.Struct, tag="rep", frozen=True):
    """Outputs of request ``id``: ``shape`` values of ``dtype``, computed by ``version`` (``backup``:
    the health monitor had switched to the backup version)."""

    id: int
    model: str
    version: str
    dtype: str
    shape: list[int]
    backup: bool = False


class Failure(msgspec.Struct, tag="err", frozen=True):
    """Request ``id`` (-1: the frame could not be read) failed with ``code``; ``message`` says why."""

    id: int
    code: str
    message: str


Header = Union[Request, Reply, Failure]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)


def encode(header: Header, payload: bytes | memoryview = b"") -> bytes:
    """One frame: prefix, header, payload (bytes, or a byte-format memoryview)."""
    h = _encoder.encode(header)
    if len(h) > MAX_HEADER:
        raise ProtocolError(BAD_REQUEST, f"header of {len(h)} bytes exceeds {MAX_HEADER}")
    return b"".join((PREFIX.pack(2 + len(h) + len(payload)), HEADER_LEN.pack(len(h)), h, payload))


def encode_array(header: Request | Reply, array: np.ndarray) -> bytes:
    """A frame carrying ``array`` (little-endian, C order) as its payload."""
    a = np.ascontiguousarray(array, dtype=DTYPES.get(header.dtype, array.dtype))
    return encode(header, memoryview(a).cast("B") if a.size else b"")


def frame_length(prefix: bytes, max_frame: int) -> int:
    """The length a frame prefix announces, checked against ``max_frame`` (ProtocolError TOO_LARGE)."""
    (n,) = PREFIX.unpack(prefix)
    if n > max_frame:
        raise ProtocolError(TOO_LARGE, f"frame of {n:,} bytes exceeds the limit of {max_frame:,}")
    if n < HEADER_LEN.size:
        raise ProtocolError(BAD_REQUEST, f"frame of {n} bytes is shorter than its header length field")
    return n


def decode(body: bytes | memoryview) -> tuple[Header, memoryview]:
    """Header and payload of a frame body (the bytes after the prefix)."""
    view = memoryview(body)
    if len(view) < HEADER_LEN.size:
        raise ProtocolError(BAD_REQUEST, "frame too short for its header length field")
    (h,) = HEADER_LEN.unpack(view[:2])
    if h > MAX_HEADER or 2 + h > len(view):
        raise ProtocolError(BAD_REQUEST, f"header length {h} does not fit the frame ({len(view)} bytes)")
    try:
        header = _decoder.decode(view[2:2 + h])
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError(BAD_REQUEST, f"unreadable header: {e}") from None
    return header, view[2 + h:]


def payload_array(header: Request | Reply, payload: memoryview, expect: tuple[int, ...] | None = None,
                  max_rows: int | None = None) -> np.ndarray:
    """The payload as an array of the header's dtype and shape (read-only, no copy), every field checked.

    ``expect``: the shape after the first (batch) dimension; ``max_rows``: the largest batch."""
    dtype = DTYPES.get(header.dtype)
    if dtype is None:
        raise ProtocolError(BAD_DTYPE, f"dtype {header.dtype!r} is not accepted; send {', '.join(DTYPES)} "
                                       "(little-endian)")
    shape = tuple(header.shape)
    if not shape or any(not isinstance(d, int) or d < 0 for d in shape) or shape[0] < 1:
        raise ProtocolError(BAD_SHAPE, f"shape {list(shape)} is not a batch of one or more arrays")
    if expect is not None and shape[1:] != tuple(expect):
        raise ProtocolError(BAD_SHAPE, f"shape {list(shape)} does not fit the model: it takes [batch, "
                                       f"{', '.join(map(str, expect))}]")
    if max_rows is not None and shape[0] > max_rows:
        raise ProtocolError(TOO_LARGE, f"batch of {shape[0]} exceeds the limit of {max_rows} per request")
    need = math.prod(shape) * dtype.itemsize
    if need != len(payload):
        raise ProtocolError(BAD_SHAPE, f"shape {list(shape)} of {header.dtype} needs {need:,} bytes, "
                                       f"the payload has {len(payload):,}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)
