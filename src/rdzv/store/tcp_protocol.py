"""Wire format of rdzv's TCP store: framing, handshake and authentication, without I/O.

Both ends speak the same frames; this module owns no socket, so the server's event
loop, the blocking client and the tests all use the same pure functions.

Connection::

    client -> server   MAGIC VERSION                       (5 bytes, fixed forever)
    server -> client   MAGIC VERSION CHALLENGE[server_nonce, flags]
                       (or MAGIC VERSION ERROR[VERSION, message], then close)
    if flags & AUTH_REQUIRED:
      client -> server AUTH[client_nonce, HMAC(token, "client" | server_nonce | client_nonce)]
      server -> client OK[HMAC(token, "server" | client_nonce | server_nonce)]
                       (or ERROR[AUTH_FAILED, message], then close)
    then, one at a time: request frame -> reply frame

Frame::

    u32 length of what follows | u8 code | u16 argc | argc x (u32 length | bytes)

Integers are big-endian. Request codes are :class:`Op`; reply codes are
:class:`Status`. Every argument is a byte string; integers travel as 8-byte signed
big-endian. The length in a header is checked against a limit before anything is
buffered for it, so a hostile peer cannot make either side allocate more than
``max_frame_size`` for one frame.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

from rdzv.store.base import StoreError

__all__ = [
    "AUTH_TOKEN_ENV",
    "HANDSHAKE_TIMEOUT",
    "MAGIC",
    "MAX_ARGS",
    "MAX_FRAME_SIZE",
    "MAX_HANDSHAKE_FRAME_SIZE",
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "NONCE_SIZE",
    "PREFIX",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "Flags",
    "Frame",
    "FrameDecoder",
    "Op",
    "Status",
    "StoreAuthenticationError",
    "StoreConnectionError",
    "StoreProtocolError",
    "client_proof",
    "decode_int",
    "encode_frame",
    "encode_int",
    "parse_prefix",
    "server_proof",
    "timeout_to_ms",
]

MAGIC = b"RDZV"
"""First bytes sent by both ends; anything else is not an rdzv TCP store."""

PROTOCOL_VERSION = 1
"""Version of this wire format; the server refuses any other with an error reply."""

PREFIX = MAGIC + bytes([PROTOCOL_VERSION])
"""What each end sends first: magic and version (5 bytes)."""

PREFIX_SIZE = len(PREFIX)

MAX_KEY_SIZE = 4096
"""Largest key, in bytes of UTF-8. Rendezvous keys are short; this keeps waiters cheap."""

MAX_VALUE_SIZE = 16 * 1024 * 1024
"""Largest value (16 MiB), also after ``append``. Values are bootstrap data, not tensors."""

MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame (64 MiB): bounds ``multi_set``/``multi_get`` and what one peer can buffer."""

MAX_HANDSHAKE_FRAME_SIZE = 1024
"""Largest frame accepted before the handshake completes: an unauthenticated peer
gets no more than this much memory."""

MAX_ARGS = 0xFFFF
"""Most arguments in one frame (the ``argc`` field is 16 bits)."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to complete the handshake before the server drops it,
so that thousands of silent sockets do not pile up."""

NONCE_SIZE = 32
"""Bytes of randomness in each nonce of the authentication exchange."""

AUTH_TOKEN_ENV = "RDZV_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
"""Environment variable read for the shared secret when no ``auth_token`` is given."""

_MAX_TIMEOUT_MS = 2**53
_LENGTH = struct.Struct(">I")
_HEAD = struct.Struct(">IBH")
_INT = struct.Struct(">q")
_CLIENT_LABEL = b"rdzv-tcp-store-v1 client proof\x00"
_SERVER_LABEL = b"rdzv-tcp-store-v1 server proof\x00"


class StoreConnectionError(StoreError):
    """The TCP store could not be reached, or the connection to it was lost."""


class StoreProtocolError(StoreError):
    """The peer broke the wire protocol: not an rdzv store, another version, a bad frame."""


class StoreAuthenticationError(StoreError):
    """The store and this client do not share the same auth token."""


class Op(enum.IntEnum):
    """Request codes (client to server)."""

    PING = 0
    SET = 1
    GET = 2
    ADD = 3
    COMPARE_SET = 4
    WAIT = 5
    CHECK = 6
    DELETE_KEY = 7
    NUM_KEYS = 8
    MULTI_GET = 9
    MULTI_SET = 10
    APPEND = 11
    GET_IF_EXISTS = 12
    WAIT_FOR_CHANGE = 13
    MULTI_GET_IF_EXISTS = 14
    GET_IF_CHANGED = 15
    AUTH = 64


class Status(enum.IntEnum):
    """Reply codes (server to client)."""

    OK = 0
    ERROR = 1
    CHALLENGE = 2


class ErrorCode(enum.IntEnum):
    """First argument of an ``ERROR`` reply; the second is a message for humans."""

    PROTOCOL = 1
    """Malformed frame; the server closes the connection."""
    VERSION = 2
    """Unsupported protocol version; the server closes the connection."""
    AUTH_REQUIRED = 3
    """The server needs an auth token and got a request instead; connection closed."""
    AUTH_FAILED = 4
    """The client's proof did not match; connection closed."""
    TIMEOUT = 5
    """A parked request reached its deadline; further arguments are the missing keys."""
    INVALID_ARGUMENT = 6
    """Well-formed request with a bad value (too large, ``add`` on a non-integer)."""


class Flags(enum.IntFlag):
    """Bits of the ``flags`` argument of a ``CHALLENGE``."""

    NONE = 0
    AUTH_REQUIRED = 1


class Frame(NamedTuple):
    """One decoded frame: a request :class:`Op` or reply :class:`Status`, and its arguments."""

    code: int
    args: tuple[bytes, ...]


def encode_frame(code: int, args: Sequence[bytes] = ()) -> bytes:
    """Return the bytes of a frame.

    Raises:
        ValueError: too many arguments, or the frame would exceed ``MAX_FRAME_SIZE``;
            checked here so that a caller learns before sending what the peer would refuse.
    """
    if len(args) > MAX_ARGS:
        raise ValueError(f"A store request carries at most {MAX_ARGS} items, got {len(args)}.")
    body_size = 3 + 4 * len(args) + sum(len(a) for a in args)
    if body_size > MAX_FRAME_SIZE:
        raise ValueError(
            f"A store message of {body_size} bytes exceeds the limit of {MAX_FRAME_SIZE}; "
            "split it into smaller requests."
        )
    parts = [_HEAD.pack(body_size, code, len(args))]
    for arg in args:
        parts.append(_LENGTH.pack(len(arg)))
        parts.append(arg)
    return b"".join(parts)


class FrameDecoder:
    """Incremental frame parser: :meth:`feed` bytes as they arrive, take :meth:`next_frame`.

    After a :class:`StoreProtocolError` the stream cannot be resynchronised; the
    caller drops the connection.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` until more bytes arrive.

        Raises:
            StoreProtocolError: the length header exceeds ``max_frame_size`` (raised as
                soon as the header is in, before the body is buffered), or the body is
                inconsistent with its lengths.
        """
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 4:
            return None
        (size,) = _LENGTH.unpack_from(buf, pos)
        if size > self.max_frame_size:
            raise StoreProtocolError(
                f"Received a frame announcing {size} bytes, over the limit of "
                f"{self.max_frame_size}; the peer is not a compatible rdzv store."
            )
        if size < 3:
            raise StoreProtocolError(f"Received a frame of {size} bytes, shorter than a header.")
        if available < 4 + size:
            return None
        _, code, argc = _HEAD.unpack_from(buf, pos)
        end = pos + 4 + size
        cursor = pos + 7
        args = []
        view = memoryview(buf)
        try:
            for _ in range(argc):
                if cursor + 4 > end:
                    raise StoreProtocolError("Received a frame whose arguments overrun it.")
                (length,) = _LENGTH.unpack_from(buf, cursor)
                cursor += 4
                if length > end - cursor:
                    raise StoreProtocolError("Received a frame whose arguments overrun it.")
                args.append(bytes(view[cursor : cursor + length]))
                cursor += length
        finally:
            view.release()
        if cursor != end:
            raise StoreProtocolError(
                f"Received a frame with {end - cursor} bytes after its last argument."
            )
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return Frame(code, tuple(args))


def parse_prefix(data: bytes) -> int:
    """Return the protocol version announced by a 5-byte prefix.

    Raises:
        StoreProtocolError: the bytes do not start with ``MAGIC``.
    """
    if len(data) != PREFIX_SIZE or data[:4] != MAGIC:
        raise StoreProtocolError(
            f"The peer did not greet as an rdzv TCP store (got {data[:8]!r}); "
            "check the host and port."
        )
    return data[4]


def encode_int(value: int) -> bytes:
    """8-byte signed big-endian encoding of ``value``.

    Raises:
        OverflowError: ``value`` does not fit in 64 signed bits (c10d's ``add`` is int64 too).
    """
    try:
        return _INT.pack(value)
    except struct.error as e:
        raise OverflowError(f"{value} does not fit in a signed 64-bit integer.") from e


def decode_int(data: bytes) -> int:
    """Inverse of :func:`encode_int`.

    Raises:
        StoreProtocolError: ``data`` is not 8 bytes long.
    """
    if len(data) != 8:
        raise StoreProtocolError(f"Expected an 8-byte integer, got {len(data)} bytes.")
    value: int = _INT.unpack(data)[0]
    return value


def timeout_to_ms(seconds: float) -> int:
    """Milliseconds to send for a timeout: rounded up, at least 0, capped to stay exact."""
    if math.isnan(seconds) or seconds <= 0:
        return 0
    if seconds * 1000 >= _MAX_TIMEOUT_MS:
        return _MAX_TIMEOUT_MS
    return math.ceil(seconds * 1000)


def client_proof(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the client sends to prove it knows ``token``.

    The server's fresh nonce defeats replay; the direction label (different from
    :func:`server_proof`) defeats reflecting one side's proof back at it.
    """
    return hmac.new(token, _CLIENT_LABEL + server_nonce + client_nonce, hashlib.sha256).digest()


def server_proof(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the server sends back so that the client knows it talks to a token holder."""
    return hmac.new(token, _SERVER_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()
