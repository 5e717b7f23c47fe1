"""The server of rdzv's TCP store: one asyncio event loop in a daemon thread serves every client.

Blocking requests (``get``, ``wait``, ``multi_get``, ``wait_for_change``) are parked
on the server: the connection stops being read, the request is registered under
each key it waits for, and every write to such a key re-checks it. The reply goes
out the moment the condition holds, or as an error when its deadline timer fires.
Clients never poll.

Per connection the server keeps the socket, a frame decoder and, before the
handshake completes, a deadline timer; nothing else is allocated for a peer that
does not speak. Requests on one connection are answered in order; while one is
parked (or the peer does not read its replies) the server stops reading from that
peer, so what it buffers for it stays bounded by one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import cast

from rdzv._reaper import Release, track
from rdzv.store.base import Digests, StoreError
from rdzv.store.tcp_protocol import (
    AUTH_TOKEN_ENV,
    HANDSHAKE_TIMEOUT,
    MAX_FRAME_SIZE,
    MAX_HANDSHAKE_FRAME_SIZE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    NONCE_SIZE,
    PREFIX,
    PREFIX_SIZE,
    PROTOCOL_VERSION,
    ErrorCode,
    Flags,
    Frame,
    FrameDecoder,
    Op,
    Status,
    StoreConnectionError,
    StoreProtocolError,
    client_proof,
    decode_int,
    encode_frame,
    encode_int,
    parse_prefix,
    server_proof,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "TCPStoreServer",
    "enable_keepalive",
    "is_loopback_host",
    "resolve_auth_token",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKLOG = 2048
"""Pending connections the kernel queues: a whole job's nodes may connect at once."""

_STOP_JOIN_TIMEOUT = 10.0
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_OK_EMPTY = encode_frame(Status.OK)
_TRUE, _FALSE = b"\x01", b"\x00"
_UNCHANGED = encode_frame(Status.OK, (_FALSE,))
_START_TIMEOUT = 30.0
"""Seconds the server's loop thread may take to start listening before start() fails."""


def resolve_auth_token(auth_token: str | bytes | None) -> bytes | None:
    """Return the shared secret to use: ``auth_token``, else ``$RDZV_AUTH_TOKEN``, else none.

    An empty token means none, so that ``RDZV_AUTH_TOKEN=`` turns authentication off.
    """
    if auth_token is None:
        auth_token = os.environ.get(AUTH_TOKEN_ENV)
    if not auth_token:
        return None
    return auth_token.encode("utf-8") if isinstance(auth_token, str) else bytes(auth_token)


def enable_keepalive(sock: socket.socket) -> None:
    """Have the kernel probe an idle peer, so that a vanished host (no FIN, no RST) is noticed
    within about 30 s instead of holding a connection, or a parked request, forever."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (``localhost``, 127.x, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Refusal(Exception):
    """A request the server answers with an error; ``close`` when the stream is unusable."""

    def __init__(self, code: ErrorCode, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


def _show(key: bytes) -> str:
    return repr(key[:64].decode("utf-8", "replace"))


def _error_frame(code: ErrorCode, message: str, extra: tuple[bytes, ...] = ()) -> bytes:
    return encode_frame(Status.ERROR, (bytes([code]), message.encode("utf-8"), *extra))


class _WaitKind(enum.Enum):
    GET = enum.auto()
    WAIT = enum.auto()
    MULTI_GET = enum.auto()
    CHANGE = enum.auto()


class _Waiter:
    """A parked request: which keys it watches and whom to answer."""

    __slots__ = ("conn", "current", "keys", "kind", "seconds", "timer")

    def __init__(
        self,
        conn: _ServerConnection,
        kind: _WaitKind,
        keys: tuple[bytes, ...],
        seconds: float,
        current: bytes | None = None,
    ) -> None:
        self.conn = conn
        self.kind = kind
        self.keys = keys
        self.seconds = seconds
        self.current = current
        self.timer: asyncio.TimerHandle | None = None


def _key_arg(key: bytes) -> bytes:
    if not key:
        raise _Refusal(ErrorCode.INVALID_ARGUMENT, "A store key must be a non-empty string.")
    if len(key) > MAX_KEY_SIZE:
        raise _Refusal(
            ErrorCode.INVALID_ARGUMENT,
            f"A store key of {len(key)} bytes exceeds the limit of {MAX_KEY_SIZE}.",
        )
    return key


def _value_arg(value: bytes) -> bytes:
    if len(value) > MAX_VALUE_SIZE:
        raise _Refusal(
            ErrorCode.INVALID_ARGUMENT,
            f"A store value of {len(value)} bytes exceeds the limit of {MAX_VALUE_SIZE}.",
        )
    return value


def _int_arg(data: bytes) -> int:
    try:
        return decode_int(data)
    except StoreProtocolError as e:
        raise _Refusal(ErrorCode.PROTOCOL, str(e), close=True) from e


def _timeout_arg(data: bytes) -> float:
    ms = _int_arg(data)
    if ms < 0:
        raise _Refusal(ErrorCode.PROTOCOL, f"A timeout cannot be negative ({ms} ms).", close=True)
    return ms / 1000.0


def _arity(args: tuple[bytes, ...], op: Op, *counts: int) -> None:
    if len(args) not in counts:
        raise _Refusal(
            ErrorCode.PROTOCOL,
            f"{op.name} takes {' or '.join(map(str, counts))} arguments, got {len(args)}.",
            close=True,
        )


def _at_least(args: tuple[bytes, ...], op: Op, count: int) -> None:
    if len(args) < count:
        raise _Refusal(
            ErrorCode.PROTOCOL,
            f"{op.name} takes at least {count} arguments, got {len(args)}.",
            close=True,
        )


def _ok(values: tuple[bytes, ...] | list[bytes]) -> bytes:
    try:
        return encode_frame(Status.OK, values)
    except ValueError as e:
        raise _Refusal(ErrorCode.INVALID_ARGUMENT, str(e)) from e


class _Engine:
    """The key-value data and the parked requests; used only from the event loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: bytes | None, handshake: float):
        self.loop = loop
        self.token = token
        self.handshake_timeout = handshake
        self.data: dict[bytes, bytes] = {}
        self.watchers: dict[bytes, set[_Waiter]] = {}
        self.connections: set[_ServerConnection] = set()
        self._digests = Digests()
        self._handlers: dict[int, Callable[[_ServerConnection, tuple[bytes, ...]], bytes | None]]
        self._handlers = {
            Op.PING: self._ping,
            Op.SET: self._set,
            Op.GET: self._get,
            Op.ADD: self._add,
            Op.COMPARE_SET: self._compare_set,
            Op.WAIT: self._wait,
            Op.CHECK: self._check,
            Op.DELETE_KEY: self._delete_key,
            Op.NUM_KEYS: self._num_keys,
            Op.MULTI_GET: self._multi_get,
            Op.MULTI_SET: self._multi_set,
            Op.APPEND: self._append,
            Op.GET_IF_EXISTS: self._get_if_exists,
            Op.WAIT_FOR_CHANGE: self._wait_for_change,
            Op.MULTI_GET_IF_EXISTS: self._multi_get_if_exists,
            Op.GET_IF_CHANGED: self._get_if_changed,
        }

    def handle(self, conn: _ServerConnection, frame: Frame) -> bytes | None:
        """Answer ``frame``: the reply's bytes, or ``None`` when the request was parked.

        Raises:
            _Refusal: the request is refused; the caller sends the error.
        """
        handler = self._handlers.get(frame.code)
        if handler is None:
            raise _Refusal(ErrorCode.PROTOCOL, f"Unknown request code {frame.code}.", close=True)
        return handler(conn, frame.args)

    # -- waiting -------------------------------------------------------------

    def _park(self, waiter: _Waiter) -> None:
        for key in waiter.keys:
            self.watchers.setdefault(key, set()).add(waiter)
        waiter.timer = self.loop.call_later(waiter.seconds, self._expire, waiter)
        waiter.conn.park(waiter)

    def _unregister(self, waiter: _Waiter) -> None:
        for key in waiter.keys:
            watching = self.watchers.get(key)
            if watching is not None:
                watching.discard(waiter)
                if not watching:
                    del self.watchers[key]
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    def cancel(self, waiter: _Waiter) -> None:
        """Forget a parked request whose connection went away."""
        self._unregister(waiter)

    def _satisfied(self, waiter: _Waiter) -> bool:
        if waiter.kind is _WaitKind.CHANGE:
            return self.data.get(waiter.keys[0]) != waiter.current
        return all(key in self.data for key in waiter.keys)

    def _answer(self, waiter: _Waiter) -> bytes:
        if waiter.kind is _WaitKind.GET:
            return encode_frame(Status.OK, (self.data[waiter.keys[0]],))
        if waiter.kind is _WaitKind.MULTI_GET:
            try:
                return _ok([self.data[key] for key in waiter.keys])
            except _Refusal as e:
                return _error_frame(e.code, e.message)
        if waiter.kind is _WaitKind.CHANGE:
            value = self.data.get(waiter.keys[0])  # the new value, if the key is there
            if value is not None:
                return encode_frame(Status.OK, (value,))
        return _OK_EMPTY

    def _notify(self, key: bytes) -> None:
        watching = self.watchers.get(key)
        if not watching:
            return
        for waiter in list(watching):
            if self._satisfied(waiter):
                self._unregister(waiter)
                waiter.conn.unpark(self._answer(waiter))

    def _expire(self, waiter: _Waiter) -> None:
        waiter.timer = None
        self._unregister(waiter)
        if waiter.kind is _WaitKind.CHANGE:
            waiter.conn.unpark(_OK_EMPTY)
            return
        missing = tuple(key for key in waiter.keys if key not in self.data)
        message = f"Timed out after {waiter.seconds:g} s waiting for {len(missing)} key(s)."
        waiter.conn.unpark(_error_frame(ErrorCode.TIMEOUT, message, missing))

    def _wait_for(self, conn: _ServerConnection, waiter: _Waiter) -> bytes | None:
        if self._satisfied(waiter):
            return self._answer(waiter)
        self._park(waiter)
        return None

    # -- operations ----------------------------------------------------------

    def _ping(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        return _OK_EMPTY

    def _set(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.SET, 2)
        key = _key_arg(args[0])
        self.data[key] = _value_arg(args[1])
        self._notify(key)
        return _OK_EMPTY

    def _get(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes | None:
        _arity(args, Op.GET, 2)
        key, seconds = _key_arg(args[0]), _timeout_arg(args[1])
        value = self.data.get(key)
        if value is not None:
            return encode_frame(Status.OK, (value,))
        return self._wait_for(conn, _Waiter(conn, _WaitKind.GET, (key,), seconds))

    def _add(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.ADD, 2)
        key = _key_arg(args[0])
        amount = _int_arg(args[1])
        current = self.data.get(key, b"0")
        try:
            total = int(current) + amount
        except ValueError:
            raise _Refusal(
                ErrorCode.INVALID_ARGUMENT,
                f"add() needs an integer at key {_show(key)}, but it holds {current[:32]!r}.",
            ) from None
        if not _INT64_MIN <= total <= _INT64_MAX:
            raise _Refusal(
                ErrorCode.INVALID_ARGUMENT,
                f"add() at key {_show(key)} would overflow a signed 64-bit integer.",
            )
        self.data[key] = str(total).encode()
        self._notify(key)
        return encode_frame(Status.OK, (encode_int(total),))

    def _compare_set(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.COMPARE_SET, 3)
        key = _key_arg(args[0])
        expected, desired = args[1], _value_arg(args[2])
        current = self.data.get(key)
        if current is None:
            if expected:
                return encode_frame(Status.OK, (expected,))
        elif current != expected:
            return encode_frame(Status.OK, (current,))
        self.data[key] = desired
        self._notify(key)
        return encode_frame(Status.OK, (desired,))

    def _wait(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes | None:
        _at_least(args, Op.WAIT, 1)
        keys = tuple(_key_arg(k) for k in args[1:])
        return self._wait_for(conn, _Waiter(conn, _WaitKind.WAIT, keys, _timeout_arg(args[0])))

    def _check(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        present = all(key in self.data for key in args)
        return encode_frame(Status.OK, (_TRUE if present else _FALSE,))

    def _delete_key(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.DELETE_KEY, 1)
        key = args[0]
        existed = self.data.pop(key, None) is not None
        self._digests.forget(key)
        if existed:
            self._notify(key)
        return encode_frame(Status.OK, (_TRUE if existed else _FALSE,))

    def _num_keys(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.NUM_KEYS, 0)
        return encode_frame(Status.OK, (encode_int(len(self.data)),))

    def _multi_get(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes | None:
        _at_least(args, Op.MULTI_GET, 1)
        keys = tuple(_key_arg(k) for k in args[1:])
        waiter = _Waiter(conn, _WaitKind.MULTI_GET, keys, _timeout_arg(args[0]))
        return self._wait_for(conn, waiter)

    def _multi_set(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        if len(args) % 2:
            raise _Refusal(ErrorCode.PROTOCOL, "MULTI_SET takes key/value pairs.", close=True)
        pairs = [(_key_arg(args[i]), _value_arg(args[i + 1])) for i in range(0, len(args), 2)]
        for key, value in pairs:
            self.data[key] = value
        for key, _ in pairs:
            self._notify(key)
        return _OK_EMPTY

    def _append(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.APPEND, 2)
        key = _key_arg(args[0])
        current = self.data.get(key, b"")
        if len(current) + len(args[1]) > MAX_VALUE_SIZE:
            raise _Refusal(
                ErrorCode.INVALID_ARGUMENT,
                f"append() would grow key {_show(key)} past the value limit of "
                f"{MAX_VALUE_SIZE} bytes.",
            )
        self.data[key] = current + args[1]
        self._notify(key)
        return _OK_EMPTY

    def _get_if_exists(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        _arity(args, Op.GET_IF_EXISTS, 1)
        value = self.data.get(args[0])
        return _OK_EMPTY if value is None else encode_frame(Status.OK, (value,))

    def _multi_get_if_exists(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        """Two reply arguments per key: a presence flag, then the value (empty when absent)."""
        reply: list[bytes] = []
        for key in args:
            value = self.data.get(_key_arg(key))
            reply += (_FALSE, b"") if value is None else (_TRUE, value)
        return encode_frame(Status.OK, reply)

    def _get_if_changed(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes:
        """Arguments (key, digest); reply ``()`` for a missing key, ``(FALSE,)`` when the
        value has that digest, else ``(TRUE, value)``."""
        _arity(args, Op.GET_IF_CHANGED, 2)
        key = _key_arg(args[0])
        value = self.data.get(key)
        if value is None:
            return _OK_EMPTY
        if self._digests.of(key, value) == args[1]:
            return _UNCHANGED
        return encode_frame(Status.OK, (_TRUE, value))

    def _wait_for_change(self, conn: _ServerConnection, args: tuple[bytes, ...]) -> bytes | None:
        _arity(args, Op.WAIT_FOR_CHANGE, 2, 3)
        key = _key_arg(args[0])
        current = args[2] if len(args) == 3 else None
        waiter = _Waiter(conn, _WaitKind.CHANGE, (key,), _timeout_arg(args[1]), current)
        return self._wait_for(conn, waiter)


class _Phase(enum.Enum):
    PREFIX = enum.auto()
    AUTH = enum.auto()
    READY = enum.auto()
    CLOSED = enum.auto()


class _ServerConnection(asyncio.Protocol):
    """One client: handshake, then requests answered in order."""

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.PREFIX
        self._prefix = b""
        self._decoder = FrameDecoder(MAX_HANDSHAKE_FRAME_SIZE)
        self._server_nonce = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._parked: _Waiter | None = None
        self._write_paused = False
        self._reading = True

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._engine.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            enable_keepalive(sock)
        self._deadline = self._engine.loop.call_later(
            self._engine.handshake_timeout, self._handshake_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _Phase.CLOSED
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._parked is not None:
            self._engine.cancel(self._parked)
            self._parked = None
        self._engine.connections.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._engine.loop.call_soon(self._process)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSED:
            return
        if self._phase is _Phase.PREFIX:
            needed = PREFIX_SIZE - len(self._prefix)
            self._prefix += data[:needed]
            data = data[needed:]
            if len(self._prefix) < PREFIX_SIZE or not self._greet():
                return
        if data:
            self._decoder.feed(data)
        self._process()

    # -- handshake -----------------------------------------------------------

    def _greet(self) -> bool:
        try:
            version = parse_prefix(self._prefix)
        except StoreProtocolError:
            self.abort()
            return False
        if version != PROTOCOL_VERSION:
            self._fail(
                ErrorCode.VERSION,
                f"This store speaks protocol version {PROTOCOL_VERSION}, the client "
                f"version {version}; use the same rdzv version on every node.",
                greeting=True,
            )
            return False
        self._server_nonce = secrets.token_bytes(NONCE_SIZE)
        flags = Flags.AUTH_REQUIRED if self._engine.token is not None else Flags.NONE
        self._write(PREFIX + encode_frame(Status.CHALLENGE, (self._server_nonce, bytes([flags]))))
        if self._engine.token is None:
            self._become_ready()
        else:
            self._phase = _Phase.AUTH
        return True

    def _authenticate(self, frame: Frame) -> None:
        token = self._engine.token
        assert token is not None
        if frame.code != Op.AUTH:
            self._fail(
                ErrorCode.AUTH_REQUIRED,
                f"This store requires an auth token: set {AUTH_TOKEN_ENV} or pass auth_token.",
            )
            return
        if len(frame.args) != 2 or len(frame.args[0]) != NONCE_SIZE:
            self._fail(ErrorCode.PROTOCOL, "Malformed AUTH request.")
            return
        client_nonce, proof = frame.args
        expected = client_proof(token, self._server_nonce, client_nonce)
        if not hmac.compare_digest(expected, proof):
            self._fail(
                ErrorCode.AUTH_FAILED,
                "The auth token does not match this store's; "
                f"set {AUTH_TOKEN_ENV} or auth_token to the store's token.",
            )
            return
        self._write(
            encode_frame(Status.OK, (server_proof(token, self._server_nonce, client_nonce),))
        )
        self._become_ready()

    def _become_ready(self) -> None:
        self._phase = _Phase.READY
        self._decoder.max_frame_size = MAX_FRAME_SIZE
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self._phase is not _Phase.READY:
            self.abort()

    # -- requests ------------------------------------------------------------

    def _process(self) -> None:
        while self._parked is None and not self._write_paused:
            if self._phase is _Phase.CLOSED:
                return
            try:
                frame = self._decoder.next_frame()
            except StoreProtocolError as e:
                self._fail(ErrorCode.PROTOCOL, str(e))
                return
            if frame is None:
                break
            if self._phase is _Phase.AUTH:
                self._authenticate(frame)
                continue
            try:
                reply = self._engine.handle(self, frame)
            except _Refusal as e:
                if e.close:
                    self._fail(e.code, e.message)
                    return
                reply = _error_frame(e.code, e.message)
            if reply is not None:
                self._write(reply)
        self._update_reading()

    def park(self, waiter: _Waiter) -> None:
        """Hold back further requests until ``waiter`` is answered."""
        self._parked = waiter

    def unpark(self, reply: bytes) -> None:
        """Send the reply of the parked request and go on with buffered requests."""
        self._parked = None
        self._write(reply)
        # Later, not now: a write by another client is what woke us, and answering
        # this connection's next requests inside that write would nest handlers.
        self._engine.loop.call_soon(self._process)

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._phase is _Phase.CLOSED:
            return
        want = self._parked is None and not self._write_paused
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and self._phase is not _Phase.CLOSED:
            self._transport.write(data)

    def _fail(self, code: ErrorCode, message: str, *, greeting: bool = False) -> None:
        """Send an error and close: the stream cannot be trusted any more."""
        frame = _error_frame(code, message)
        self._write(PREFIX + frame if greeting else frame)
        self._phase = _Phase.CLOSED
        if self._parked is not None:
            self._engine.cancel(self._parked)
            self._parked = None
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection without a word (not our protocol, or shutting down)."""
        self._phase = _Phase.CLOSED
        if self._transport is not None:
            self._transport.abort()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    if host in ("", "::") and socket.has_dualstack_ipv6():
        return socket.create_server(
            ("", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True
        )
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address[:2], family=family, backlog=backlog)


class _Runner:
    """The loop thread, apart from :class:`TCPStoreServer` so that the reaper can stop it
    without keeping the server object alive."""

    def __init__(self, sock: socket.socket, token: bytes | None, handshake: float, backlog: int):
        self._sock = sock
        self._backlog = backlog
        self._loop = asyncio.new_event_loop()
        self.engine = _Engine(self._loop, token, handshake)
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pid = os.getpid()
        port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, name=f"rdzv-tcp-store-server:{port}", daemon=True
        )

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.stop()
            raise StoreError(
                f"The TCP store server did not start within {_START_TIMEOUT:.0f} s (its event "
                "loop thread never became ready). Check the machine's load and report it."
            )
        if self._error is not None:
            self._thread.join(_STOP_JOIN_TIMEOUT)
            raise StoreError(f"The TCP store server could not start: {self._error}") from (
                self._error
            )

    def stop(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child has no server thread; the parent's is not ours to stop
        loop, event = self._loop, self._stop_event
        if event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_STOP_JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning(
                    "The TCP store server thread %s did not stop within %.0f s; it is a "
                    "daemon and ends with the process.",
                    self._thread.name,
                    _STOP_JOIN_TIMEOUT,
                )

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()
            self._sock.close()
            self._loop.close()

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        server = await self._loop.create_server(
            lambda: _ServerConnection(self.engine), sock=self._sock, backlog=self._backlog
        )
        self._ready.set()
        await self._stop_event.wait()
        server.close()
        for conn in list(self.engine.connections):
            conn.abort()
        await server.wait_closed()
        # Let the aborted transports run connection_lost and release their sockets.
        for _ in range(3):
            await asyncio.sleep(0)


class TCPStoreServer:
    """A TCP store server: an asyncio event loop in a daemon thread of this process.

    ``host=""`` listens on every interface; ``port=0`` picks a free port (read
    :attr:`port` after :meth:`start`). With an ``auth_token`` (default:
    ``$RDZV_AUTH_TOKEN``) every client must prove it knows the token; the token itself
    never crosses the network. Traffic is not encrypted: use a private network.

    A new connection that has not completed the handshake within
    ``handshake_timeout`` seconds is dropped, and until then may send no frame over
    ``MAX_HANDSHAKE_FRAME_SIZE``. After it, a client may hold one frame
    (``MAX_FRAME_SIZE``) in the server's buffers and store as much data as it likes:
    the server caps neither connections nor total memory, so without a token anyone
    who can reach the port can fill it. Use as a context manager, or call
    :meth:`stop`; an unreferenced, running server is stopped when collected.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth_token: str | bytes | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        listen_fd: int | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout ({handshake_timeout}) must be positive.")
        self._host = host
        self._port = port
        self._token = resolve_auth_token(auth_token)
        self._handshake_timeout = handshake_timeout
        self._listen_fd = listen_fd
        self._backlog = backlog
        self._runner: _Runner | None = None
        self._release: Release | None = None

    @property
    def host(self) -> str:
        """The address the server was asked to listen on (``""``: every interface)."""
        return self._host

    @property
    def port(self) -> int:
        """The port it listens on (the one picked by the OS once started with port 0)."""
        return self._port

    @property
    def is_running(self) -> bool:
        """Whether the server thread is serving."""
        return self._runner is not None and self._runner.alive

    @property
    def num_connections(self) -> int:
        """Open client connections, including those still in the handshake."""
        return 0 if self._runner is None else len(self._runner.engine.connections)

    @property
    def requires_auth(self) -> bool:
        """Whether clients must present the auth token."""
        return self._token is not None

    def start(self) -> TCPStoreServer:
        """Bind the listening socket and start serving; return ``self``.

        Raises:
            StoreConnectionError: the address cannot be bound (in use, not local, ...).
            RuntimeError: the server was already started.
        """
        if self._runner is not None:
            raise RuntimeError("This TCPStoreServer was already started; create another one.")
        try:
            if self._listen_fd is not None:
                sock = socket.socket(fileno=self._listen_fd)
            else:
                sock = _listen(self._host, self._port, self._backlog)
        except OSError as e:
            raise StoreConnectionError(
                f"Cannot listen on {self._host or '*'}:{self._port}: {e}. Choose another "
                "port or stop the process that holds it."
            ) from e
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        runner = _Runner(sock, self._token, self._handshake_timeout, self._backlog)
        runner.start()
        self._runner = runner
        self._release = track(self, runner.stop, "TCPStoreServer")
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or ``timeout`` seconds pass); return whether it has.

        For a process that only serves (a command line): Ctrl-C interrupts the wait.
        """
        if self._runner is None:
            return True
        return self._runner.join(timeout)

    def stop(self) -> None:
        """Close every connection and the listening socket, and join the thread. Idempotent."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> TCPStoreServer:
        if self._runner is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"TCPStoreServer(host={self._host!r}, port={self._port}, {state})"
