"""``TCPStore``: blocking, thread-safe client of rdzv's TCP store (and, on the master, its host).

Concurrency: a ``TCPStore`` keeps a small pool of connections. Each operation borrows
one for its request and reply and gives it back, so a thread blocked in ``get`` or
``wait_for_change`` holds only its own connection while other threads go on over
others (opened on demand, at most ``MAX_IDLE_CONNECTIONS`` kept when idle). Waits
happen on the server (see :mod:`rdzv.store.tcp_server`); the client only reads
the reply, with a socket timeout a little longer than the operation's so that a
server that stopped answering cannot hang it.

The wire format is in :mod:`rdzv.store.tcp_protocol`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from rdzv._reaper import track
from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreError,
    StoreTimeoutError,
    check_key,
    key_value_pairs,
    to_bytes,
)
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
    StoreAuthenticationError,
    StoreConnectionError,
    StoreProtocolError,
    client_proof,
    decode_int,
    encode_frame,
    encode_int,
    parse_prefix,
    server_proof,
    timeout_to_ms,
)
from rdzv.store.tcp_server import (
    TCPStoreServer,
    enable_keepalive,
    is_loopback_host,
    resolve_auth_token,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "MAX_IDLE_CONNECTIONS",
    "StoreAuthenticationError",
    "StoreConnectionError",
    "StoreProtocolError",
    "TCPStore",
    "TCPStoreServer",
]

DEFAULT_CONNECT_TIMEOUT = 2.0
"""Seconds spent retrying a refused connection: enough for a host that is starting, far
less than torch's (which retries for the whole store timeout) so that a wrong address
fails fast."""

MAX_IDLE_CONNECTIONS = 8
"""Idle connections a client keeps for reuse; more are opened while threads need them."""

_REPLY_GRACE = 1.0
_RECV_SIZE = 256 * 1024
_MAX_SOCKET_TIMEOUT = 365 * 24 * 3600.0
_INIT_KEY = "init/"
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - names, not a bind

_tenants_lock = threading.Lock()
_tenants: dict[int, tuple[TCPStoreServer, int]] = {}


def _socket_timeout(remaining: float) -> float | None:
    # A socket timeout must fit the platform's time_t; beyond a year, wait unbounded.
    if remaining > _MAX_SOCKET_TIMEOUT:
        return None
    return max(remaining, 0.001)


class _Connection:
    """One handshaken socket; used by one thread at a time."""

    __slots__ = ("_decoder", "_sock")

    def __init__(self, sock: socket.socket, decoder: FrameDecoder) -> None:
        self._sock = sock
        self._decoder = decoder

    def request(self, payload: bytes, deadline: float) -> Frame:
        """Send ``payload`` and return the reply frame.

        Raises:
            TimeoutError: no full reply before ``deadline``.
            OSError: the connection failed or was closed by the peer.
            StoreProtocolError: the reply is malformed.
        """
        sock, decoder = self._sock, self._decoder
        sock.settimeout(_socket_timeout(deadline - time.monotonic()))
        sock.sendall(payload)
        frame = decoder.next_frame()
        while frame is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply in time")
            sock.settimeout(_socket_timeout(remaining))
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise ConnectionResetError("the store closed the connection")
            decoder.feed(data)
            frame = decoder.next_frame()
        return frame

    def shutdown(self) -> None:
        """Wake a thread blocked on this socket (``close`` alone does not, on Linux)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the store closed the connection during the handshake")
        data += chunk
    return data


def _read_frame(sock: socket.socket, decoder: FrameDecoder) -> Frame:
    frame = decoder.next_frame()
    while frame is None:
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise ConnectionResetError("the store closed the connection during the handshake")
        decoder.feed(data)
        frame = decoder.next_frame()
    return frame


def _handshake_error(frame: Frame, address: str) -> StoreError:
    code = frame.args[0][0] if frame.args and frame.args[0] else 0
    message = frame.args[1].decode("utf-8", "replace") if len(frame.args) > 1 else ""
    if code in (ErrorCode.AUTH_FAILED, ErrorCode.AUTH_REQUIRED):
        return StoreAuthenticationError(
            f"The TCP store at {address} refused this client's auth token ({message}). Set "
            f"{AUTH_TOKEN_ENV} (or pass auth_token=...) to the token the store was started with."
        )
    return StoreProtocolError(f"The TCP store at {address} refused the connection: {message}")


def _handshake(sock: socket.socket, token: bytes | None, address: str) -> FrameDecoder:
    sock.sendall(PREFIX)
    version = parse_prefix(_recv_exact(sock, PREFIX_SIZE))
    if version != PROTOCOL_VERSION:
        raise StoreProtocolError(
            f"The TCP store at {address} speaks protocol version {version}; this client "
            f"speaks {PROTOCOL_VERSION}. Use the same rdzv version on every node."
        )
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME_SIZE)
    frame = _read_frame(sock, decoder)
    if frame.code == Status.ERROR:
        raise _handshake_error(frame, address)
    if (
        frame.code != Status.CHALLENGE
        or len(frame.args) != 2
        or len(frame.args[0]) != NONCE_SIZE
        or len(frame.args[1]) != 1
    ):
        raise StoreProtocolError(f"The TCP store at {address} sent a malformed greeting.")
    server_nonce, flags = frame.args[0], Flags(frame.args[1][0])
    if flags & Flags.AUTH_REQUIRED:
        if token is None:
            raise StoreAuthenticationError(
                f"The TCP store at {address} requires an auth token and this client has none. "
                f"Set the environment variable {AUTH_TOKEN_ENV} (or pass auth_token=...) to "
                "the token the store was started with."
            )
        client_nonce = secrets.token_bytes(NONCE_SIZE)
        proof = client_proof(token, server_nonce, client_nonce)
        sock.sendall(encode_frame(Op.AUTH, (client_nonce, proof)))
        frame = _read_frame(sock, decoder)
        if frame.code == Status.ERROR:
            raise _handshake_error(frame, address)
        expected = server_proof(token, server_nonce, client_nonce)
        if (
            frame.code != Status.OK
            or len(frame.args) != 1
            or not secrets.compare_digest(frame.args[0], expected)
        ):
            raise StoreAuthenticationError(
                f"The TCP store at {address} did not prove that it knows the auth token; it "
                "may not be the store you meant. Check the address and the token."
            )
    elif token is not None:
        raise StoreAuthenticationError(
            f"This client has an auth token but the TCP store at {address} does not require "
            "one; refusing an unauthenticated store, which anyone could have started. Start "
            f"the store with the same token ({AUTH_TOKEN_ENV} or auth_token=...), or unset "
            f"{AUTH_TOKEN_ENV} on this client."
        )
    decoder.max_frame_size = MAX_FRAME_SIZE
    return decoder


def _connect(host: str, port: int, token: bytes | None, connect_timeout: float) -> _Connection:
    """Open and handshake a connection, retrying for up to ``connect_timeout``.

    Retried: a refused connection (the store is not up yet), and a handshake the
    store dropped (a store overloaded by thousands of nodes connecting at once drops
    those that do not finish the handshake in time; it accepts them again later).

    Raises:
        StoreConnectionError: nothing accepted a connection and finished the handshake
            in time, or the host is unknown.
        StoreAuthenticationError: the tokens do not match.
        StoreProtocolError: the peer is not a compatible rdzv store.
    """
    address = f"{host}:{port}"
    deadline = time.monotonic() + connect_timeout
    delay = 0.01
    while True:
        remaining = deadline - time.monotonic()
        try:
            sock = socket.create_connection((host, port), timeout=max(remaining, 0.05))
        except socket.gaierror as e:
            raise StoreConnectionError(
                f"Cannot resolve the TCP store host {host!r}: {e}. Check the host name."
            ) from e
        except OSError as e:
            if time.monotonic() + delay >= deadline:
                raise StoreConnectionError(
                    f"Could not connect to the TCP store at {address} within "
                    f"{connect_timeout:g} s: {e}. Check that the store host is running and "
                    "that the host and port are right."
                ) from e
        else:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                enable_keepalive(sock)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                return _Connection(sock, _handshake(sock, token, address))
            except StoreError:
                sock.close()
                raise
            except OSError as e:
                sock.close()
                if time.monotonic() + delay >= deadline:
                    raise StoreConnectionError(
                        f"The TCP store at {address} dropped the connection during the "
                        f"handshake: {e}, until the connect timeout ({connect_timeout:g} s) "
                        "passed. Check that host:port is an rdzv TCP store, and that its host "
                        "is not overloaded."
                    ) from e
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class _Pool:
    """The connections of one ``TCPStore`` (and its server, on the master).

    Kept apart from the store so that the reaper can close it once the store is dropped.
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: bytes | None,
        connect_timeout: float,
        release_server: Callable[[], None] | None,
    ) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._connect_timeout = connect_timeout
        self._release_server = release_server
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self.closed = False
        self._pid = os.getpid()

    def acquire(self) -> _Connection:
        with self._lock:
            if self.closed:
                raise StoreClosedError("This TCPStore was closed; create a new one.")
            if self._idle:
                conn = self._idle.pop()
                self._busy.add(conn)
                return conn
        conn = _connect(self.host, self.port, self._token, self._connect_timeout)
        with self._lock:
            if not self.closed:
                self._busy.add(conn)
                return conn
        conn.close()
        raise StoreClosedError("This TCPStore was closed; create a new one.")

    def release(self, conn: _Connection, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            if reusable and not self.closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for conn in idle:
            conn.close()
        if os.getpid() != self._pid:
            # A forked child closes only its copies: shutting a socket down, or stopping
            # the server, would cut the parent's connections too.
            for conn in busy:
                conn.close()
            return
        # A borrower blocked in recv wakes with an error and closes its own socket.
        for conn in busy:
            conn.shutdown()
        if self._release_server is not None:
            self._release_server()


def _start_server(
    listen_host: str, port: int, token: bytes | None, listen_fd: int | None, multi_tenant: bool
) -> tuple[TCPStoreServer, Callable[[], None]]:
    """Start (or, with ``multi_tenant``, share) a server; return it and how to let go of it."""
    with _tenants_lock:
        if multi_tenant and port in _tenants:
            server, count = _tenants[port]
            if server.is_running:
                _tenants[port] = (server, count + 1)
                return server, _tenant_release(server)
        server = TCPStoreServer(listen_host, port, auth_token=token, listen_fd=listen_fd)
        server.start()
        if not multi_tenant:
            return server, server.stop
        _tenants[server.port] = (server, 1)
        return server, _tenant_release(server)


def _tenant_release(server: TCPStoreServer) -> Callable[[], None]:
    def release() -> None:
        with _tenants_lock:
            entry = _tenants.get(server.port)
            if entry is None or entry[0] is not server:
                return
            if entry[1] > 1:
                _tenants[server.port] = (server, entry[1] - 1)
                return
            del _tenants[server.port]
        server.stop()

    return release


def _encode_key(key: str) -> bytes:
    data = check_key(key).encode("utf-8")
    if len(data) > MAX_KEY_SIZE:
        raise ValueError(
            f"A store key of {len(data)} bytes exceeds the TCP store limit of {MAX_KEY_SIZE}."
        )
    return data


def _encode_value(value: str | bytes) -> bytes:
    data = to_bytes(value)
    if len(data) > MAX_VALUE_SIZE:
        raise ValueError(
            f"A store value of {len(data)} bytes exceeds the TCP store limit of "
            f"{MAX_VALUE_SIZE}; store large data elsewhere and put its location here."
        )
    return data


class TCPStore(Store):
    """A key-value store served over TCP; arguments and semantics follow torch's ``TCPStore``.

    Args:
        host_name: host of the server (for the master: the address clients use).
        port: its port; with ``is_master``, ``0`` picks a free one (see :attr:`port`).
        world_size: with ``wait_for_workers``, every client counts itself in under the
            key ``"init/"`` (as torch does) and the master's constructor returns only
            once ``world_size`` clients (itself included) have, or raises
            ``StoreTimeoutError`` after ``timeout``.
        is_master: start the server in this process (a daemon thread); this object is
            also a client of it. The server listens on loopback when ``host_name`` is a
            loopback address, else on every interface (as torch), unless ``listen_host``
            says where.
        timeout: default timeout of every operation.
        multi_tenant: masters of one process given the same port share one server.
        master_listen_fd: an already listening socket for the master's server.
        use_libuv: accepted for torch compatibility; ignored.
        auth_token: shared secret (default ``$RDZV_AUTH_TOKEN``). A client with a token
            refuses a server without one.
        connect_timeout: seconds to retry a refused connection before raising.
        listen_host: where the master's server listens (``""``: every interface).

    Raises:
        StoreConnectionError: nothing accepts connections at ``host_name:port`` within
            ``connect_timeout`` (the message names the address), or the master's port
            cannot be bound.
        StoreAuthenticationError: client and server tokens differ, or only one has one.
        StoreProtocolError: the peer is not a compatible rdzv store.
    """

    def __init__(
        self,
        host_name: str,
        port: int,
        world_size: int | None = None,
        is_master: bool = False,
        timeout: timedelta = DEFAULT_STORE_TIMEOUT,
        wait_for_workers: bool = True,
        multi_tenant: bool = False,
        master_listen_fd: int | None = None,
        use_libuv: bool = True,
        *,
        auth_token: str | bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        listen_host: str | None = None,
    ) -> None:
        super().__init__(timeout)
        token = resolve_auth_token(auth_token)
        self._server: TCPStoreServer | None = None
        release: Callable[[], None] | None = None
        connect_host = host_name
        if is_master:
            if listen_host is None:
                listen_host = host_name if is_loopback_host(host_name) else ""
            self._server, release = _start_server(
                listen_host, port, token, master_listen_fd, multi_tenant
            )
            port = self._server.port
            if listen_host not in _WILDCARDS:
                connect_host = listen_host
        self._host = host_name
        self._port = port
        self._pool = _Pool(connect_host, port, token, connect_timeout, release)
        self._release = track(self, self._pool.close, "TCPStore")
        try:
            self._pool.release(self._pool.acquire(), reusable=True)
            if world_size is not None and wait_for_workers:
                self._wait_for_workers(world_size, is_master)
        except BaseException:
            self.close()
            raise

    @property
    def host(self) -> str:
        """The host name this store was given."""
        return self._host

    @property
    def port(self) -> int:
        """The server's port (the one picked by the OS when the master was given 0)."""
        return self._port

    @property
    def server(self) -> TCPStoreServer | None:
        """The server this object hosts (masters only)."""
        return self._server

    def _wait_for_workers(self, world_size: int, is_master: bool) -> None:
        count = self.add(_INIT_KEY, 1)
        if not is_master:
            return
        limit = self.timeout.total_seconds()
        deadline = time.monotonic() + limit
        while count < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreTimeoutError(
                    f"Only {count} of {world_size} workers connected to the TCP store at "
                    f"{self._host}:{self._port} within {limit:g} s. Check that every worker "
                    "was started with this address and the same world_size."
                )
            self.wait_for_change(_INIT_KEY, str(count).encode(), remaining)
            count = int(self.get(_INIT_KEY))

    # -- transport -------------------------------------------------------------

    def _call(
        self,
        what: str,
        op: Op,
        args: Sequence[bytes],
        wait: float | None = None,
    ) -> tuple[bytes, ...]:
        """Send one request and return the arguments of its OK reply.

        ``wait`` is the server-side timeout of a blocking request; the client gives the
        server ``_REPLY_GRACE`` more to answer before giving up itself.
        """
        payload = encode_frame(op, args)
        address = f"{self._host}:{self._port}"
        if wait is None:
            deadline = time.monotonic() + self.timeout.total_seconds()
        else:
            deadline = time.monotonic() + wait + _REPLY_GRACE
        conn = self._pool.acquire()
        try:
            frame = conn.request(payload, deadline)
        except BaseException as e:
            self._pool.release(conn, reusable=False)
            if isinstance(e, (OSError, StoreProtocolError)) and self._pool.closed:
                raise StoreClosedError("This TCPStore was closed during the operation.") from e
            if isinstance(e, TimeoutError):
                raise StoreTimeoutError(
                    f"The TCP store at {address} did not answer {what} in time; it may be "
                    "overloaded or hung."
                ) from e
            if isinstance(e, OSError):
                raise StoreConnectionError(
                    f"Lost the connection to the TCP store at {address} during {what}: {e}. "
                    "The store host may have stopped; check that it is still running."
                ) from e
            if isinstance(e, StoreProtocolError):
                raise StoreProtocolError(
                    f"The TCP store at {address} sent a malformed reply to {what}: {e}"
                ) from e
            raise
        if frame.code == Status.OK:
            self._pool.release(conn, reusable=True)
            return frame.args
        code, message, extra = _split_error(frame)
        # After these two the server carries on with the connection; after any other
        # error it closes it.
        self._pool.release(conn, reusable=code in (ErrorCode.TIMEOUT, ErrorCode.INVALID_ARGUMENT))
        if code == ErrorCode.TIMEOUT:
            missing = [k.decode("utf-8", "replace") for k in extra]
            raise StoreTimeoutError(
                f"Timed out after {wait or 0:g} s waiting for keys {missing!r} in the TCP store "
                f"at {address} ({what}); no node set them. Check that the node expected to "
                "write them is running."
            )
        if code == ErrorCode.INVALID_ARGUMENT:
            raise ValueError(message)
        if code in (ErrorCode.AUTH_FAILED, ErrorCode.AUTH_REQUIRED):
            raise StoreAuthenticationError(f"The TCP store at {address} refused {what}: {message}")
        raise StoreProtocolError(f"The TCP store at {address} refused {what}: {message}")

    def _blocking_timeout(self, timeout: timedelta | None) -> float:
        return max((self.timeout if timeout is None else timeout).total_seconds(), 0.0)

    # -- operations --------------------------------------------------------------

    def set(self, key: str, value: str | bytes) -> None:
        self._call(f"set({key!r})", Op.SET, (_encode_key(key), _encode_value(value)))

    def get(self, key: str) -> bytes:
        """Return the value of ``key``, waiting on the server until it is set.

        Raises:
            StoreTimeoutError: the key did not appear within the store's timeout.
            StoreConnectionError: the connection to the store was lost.
        """
        wait = self._blocking_timeout(None)
        args = (_encode_key(key), encode_int(timeout_to_ms(wait)))
        return self._call(f"get({key!r})", Op.GET, args, wait)[0]

    def add(self, key: str, amount: int) -> int:
        """Atomically add ``amount`` to the integer at ``key`` (0 if absent); return the sum.

        Raises:
            ValueError: the key holds something that is not an integer, or the sum
                leaves the signed 64-bit range.
        """
        args = (_encode_key(key), encode_int(int(amount)))
        return decode_int(self._call(f"add({key!r})", Op.ADD, args)[0])

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        args = (_encode_key(key), to_bytes(expected_value), _encode_value(desired_value))
        return self._call(f"compare_set({key!r})", Op.COMPARE_SET, args)[0]

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        """Block until every key in ``keys`` exists; the server wakes us, no polling.

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout``; the message
                names the missing keys.
        """
        wait = self._blocking_timeout(timeout)
        args = [encode_int(timeout_to_ms(wait)), *(_encode_key(k) for k in keys)]
        self._call(f"wait({list(keys)!r})", Op.WAIT, args, wait)

    def check(self, keys: Sequence[str]) -> bool:
        args = [_encode_key(k) for k in keys]
        return self._call("check", Op.CHECK, args)[0] == b"\x01"

    def delete_key(self, key: str) -> bool:
        return self._call(f"delete_key({key!r})", Op.DELETE_KEY, (_encode_key(key),))[0] == (
            b"\x01"
        )

    def num_keys(self) -> int:
        return decode_int(self._call("num_keys", Op.NUM_KEYS, ())[0])

    def multi_get(self, keys: Sequence[str], timeout: timedelta | None = None) -> list[bytes]:
        """Return the values of ``keys``, waiting on the server until all exist.

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout`` (default: the
                store's timeout).
            ValueError: the values together exceed the frame limit.
        """
        wait = self._blocking_timeout(timeout)
        args = [encode_int(timeout_to_ms(wait)), *(_encode_key(k) for k in keys)]
        return list(self._call(f"multi_get({list(keys)!r})", Op.MULTI_GET, args, wait))

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        """Set every key to its value in one atomic request.

        Raises:
            ValueError: the counts differ, or the request exceeds the frame limit.
        """
        args: list[bytes] = []
        for key, value in key_value_pairs(keys, values):
            args.append(_encode_key(key))
            args.append(_encode_value(value))
        self._call("multi_set", Op.MULTI_SET, args)

    def append(self, key: str, value: str | bytes) -> None:
        """Append ``value`` to the bytes at ``key`` (creating it) in one server-side step.

        Raises:
            ValueError: the result would exceed ``MAX_VALUE_SIZE``.
        """
        self._call(f"append({key!r})", Op.APPEND, (_encode_key(key), _encode_value(value)))

    def multi_get_if_exists(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` (``None`` for a missing key) in one request, without waiting.

        Raises:
            ValueError: the values together exceed the frame limit.
        """
        if not keys:
            return []
        reply = self._call(
            f"multi_get_if_exists({len(keys)} keys)",
            Op.MULTI_GET_IF_EXISTS,
            [_encode_key(k) for k in keys],
        )
        if len(reply) != 2 * len(keys):
            raise StoreProtocolError(
                f"The TCP store answered {len(reply)} values for {len(keys)} keys; is it a "
                "compatible rdzv store?"
            )
        return [reply[i + 1] if reply[i] == b"\x01" else None for i in range(0, len(reply), 2)]

    def get_if_exists(self, key: str) -> bytes | None:
        reply = self._call(f"get_if_exists({key!r})", Op.GET_IF_EXISTS, (_encode_key(key),))
        return reply[0] if reply else None

    def get_if_changed(self, key: str, digest: bytes) -> tuple[bool, bytes | None]:
        """As :meth:`Store.get_if_changed`, in one request whose answer is a byte while the
        value is unchanged."""
        reply = self._call(
            f"get_if_changed({key!r})", Op.GET_IF_CHANGED, (_encode_key(key), digest)
        )
        if not reply:
            return True, None
        if reply == (b"\x00",):
            return False, None
        if len(reply) == 2 and reply[0] == b"\x01":
            return True, reply[1]
        raise StoreProtocolError(
            f"The TCP store answered get_if_changed({key!r}) with {len(reply)} values; is "
            "it a compatible rdzv store?"
        )

    def wait_for_change(self, key: str, current: bytes | None, timeout: float) -> bytes | None:
        """Return once ``key`` no longer holds ``current`` (``None``: absent), or after ``timeout``.

        The server parks the request and answers on the first write that changes the
        key, with the new value (``None`` on a timeout or when the key went): a
        rendezvous that wakes need not read the state again. Never raises on
        timeout, as the contract says; a lost connection raises
        ``StoreConnectionError``.
        """
        wait = max(float(timeout), 0.0)
        args = [_encode_key(key), encode_int(timeout_to_ms(wait))]
        if current is not None:
            args.append(to_bytes(current))
        try:
            reply = self._call(f"wait_for_change({key!r})", Op.WAIT_FOR_CHANGE, args, wait)
        except StoreTimeoutError:
            return None
        # A server of an earlier version answers without the value.
        return reply[0] if reply else None

    def ping(self) -> None:
        """Round-trip an empty request: raises ``StoreError`` if the store is unreachable."""
        self._call("ping", Op.PING, ())

    def close(self) -> None:
        """Close this client's connections; on the master, also stop the server. Idempotent."""
        self._release()

    def __enter__(self) -> TCPStore:
        return self

    def __repr__(self) -> str:
        role = "master" if self._server is not None else "client"
        return f"TCPStore(host={self._host!r}, port={self._port}, {role})"


def _split_error(frame: Frame) -> tuple[int, str, tuple[bytes, ...]]:
    args = frame.args
    code = args[0][0] if args and args[0] else 0
    message = args[1].decode("utf-8", "replace") if len(args) > 1 else "(no message)"
    return code, message, args[2:]
