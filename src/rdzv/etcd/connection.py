"""HTTP/1.1 to etcd's members on sockets of our own, kept open: requests and endless streams.

Both etcd clients of rdzv send every request through a :class:`MemberSession`:
the v3 one POSTs JSON to the gateway (``/v3/...``), the v2 one ``GET``,
``PUT``, ``POST`` and ``DELETE`` of ``/v2/keys``. An answer has a
``Content-Length`` or a chunked body; a v3 watch's answer is a chunked body that
never ends: one JSON object a line, for as long as the watch lasts.
:class:`MemberConnection` speaks just that much HTTP on the socket itself, for
two reasons:

- **A wait can end and the stream go on.** Read through a file object
  (http.client, urllib3), a read that times out leaves the object unusable;
  a ``recv`` that times out consumes nothing, so one watch serves wait after
  wait, each reading on from where the last stopped, and a v2 write that has not
  answered yet can ask who leads meanwhile and then go on waiting.
- **A request costs a third of the client CPU.** One read of an 8 KB key took
  about 110 µs of CPU this way against 310 to 370 µs through urllib3, most of it
  http.client parsing headers with the email package. On a machine where
  thousands of nodes share the cores, that CPU is the rendezvous' time.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import urllib3
import urllib3.connection
import urllib3.util

from rdzv.etcd.v3_wire import EtcdV3ConnectionError

__all__ = ["POOL_SIZE", "WAITING_CHECK_SECONDS", "MemberConnection", "MemberSession"]

POOL_SIZE = 10
"""Connections kept open to each member (requests' default, which the v3 client had)."""

_RECV_BYTES = 65536
_MAX_HEAD = 65536
"""Bytes of status line and headers a gateway may send before we call it broken."""

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
"""Where a chunked body is: at a size line, in a payload, at its CRLF, in the trailers."""

WAITING_CHECK_SECONDS = 0.5
"""How often :meth:`MemberSession.exchange` calls its ``waiting`` while no answer came."""

_CONNECT_SECONDS_MAX = 60.0
"""Connecting waits at most this long, even for a request that may wait without end."""

_NOTHING_YET = (TimeoutError, BlockingIOError, ssl.SSLWantReadError)
"""What ``recv`` raises when no byte came in time; the connection is intact."""


class MemberConnection:
    """One HTTP/1.1 connection to a member, read with deadlines; one user at a time.

    Args:
        sock: a connected socket (TLS already wrapped for https).
        url: the member's URL, for messages.
        host: the ``Host`` header (``host:port``).
    """

    def __init__(self, sock: socket.socket, url: str, host: str) -> None:
        self._sock = sock
        self._url = url
        self._host = host
        self._what = "request"
        self._raw = bytearray()  # received, not yet decoded
        self._body = bytearray()  # decoded body of the current answer, not yet taken
        self._chunk_left = 0  # payload bytes of the current chunk still to come
        self._state = _SIZE  # where in the chunked body the next bytes belong
        self._ended = False  # the current answer's body is complete
        self._reusable = False
        self._broken: EtcdV3ConnectionError | None = None

    @property
    def reusable(self) -> bool:
        """Whether the last answer was read whole on a connection etcd keeps open."""
        return self._reusable and self._broken is None and not self._raw

    def dropped(self) -> bool:
        """Whether an idle connection was closed by etcd (or sent something unasked)."""
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def idle(self) -> bool:
        """Whether etcd has sent nothing since the last answer or line was taken: no byte
        held here, none waiting on the socket, and the connection open."""
        return not self._raw and not self._body and not self.dropped()

    def request(
        self,
        target: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
        *,
        method: str = "POST",
    ) -> tuple[int, dict[str, str]]:
        """:meth:`send` a request, then read the answer's :meth:`head`.

        The caller then reads the body, whole (:meth:`body`) or a line at a time
        (:meth:`lines`).
        """
        self.send(target, headers, body, deadline, method=method)
        return self.head(deadline)

    def send(
        self,
        target: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
        *,
        method: str = "POST",
    ) -> None:
        """Send a request: ``target`` is the path with its query string.

        Raises:
            OSError: sending failed or did not end by ``deadline``.
        """
        self._what = target.split("?", 1)[0].rsplit("/", 1)[-1]
        self._reusable = False
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host}"]
        lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._sock.settimeout(_until(deadline))
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def head(self, deadline: float) -> tuple[int, dict[str, str]]:
        """The status and headers of the answer to the request sent, read by ``deadline``.

        Raises:
            TimeoutError: they did not all come before ``deadline``; the connection
                stays usable, and a later call waits on for them.
            EtcdV3ConnectionError: the member broke off or sent no HTTP.
        """
        return self._read_head(deadline)

    def body(self, headers: dict[str, str], deadline: float) -> bytes:
        """The whole body of the answer whose ``headers`` :meth:`request` returned.

        Raises:
            TimeoutError: it did not all come before ``deadline``.
            EtcdV3ConnectionError: the member broke off.
        """
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                self._decode()
                if self._ended:
                    break
                if not self._receive(deadline - time.monotonic()):
                    raise TimeoutError(f"etcd at {self._url} did not finish its answer in time.")
            data = bytes(self._body)
            self._body.clear()
        else:
            length = headers.get("content-length", "")
            if not length.isdigit():  # the body ends with the connection
                with contextlib.suppress(EtcdV3ConnectionError):
                    while self._receive(deadline - time.monotonic()):
                        pass
                data = bytes(self._raw)
                self._raw.clear()
                return data
            while len(self._raw) < int(length):
                if not self._receive(deadline - time.monotonic()):
                    raise TimeoutError(f"etcd at {self._url} did not finish its answer in time.")
            data = bytes(self._raw[: int(length)])
            del self._raw[: int(length)]
        self._reusable = headers.get("connection", "") != "close"
        return data

    def lines(self, deadline: float) -> list[bytes]:
        """Every complete line of a streamed (chunked) body received by ``deadline``.

        Empty when none came. Returns as soon as at least one line is complete,
        after taking in whatever else has arrived by then; a ``deadline`` in the
        past only takes in what is there already.

        Raises:
            EtcdV3ConnectionError: the member ended the answer or broke off.
        """
        while True:
            self._decode()
            if b"\n" in self._body:
                with contextlib.suppress(EtcdV3ConnectionError):  # raised by the next call
                    while self._receive(0.0):
                        self._decode()
                *complete, rest = bytes(self._body).split(b"\n")
                self._body[:] = rest
                return complete
            if self._ended:
                raise EtcdV3ConnectionError(f"etcd at {self._url} ended a {self._what} stream.")
            if not self._receive(deadline - time.monotonic()):
                return []

    def close(self) -> None:
        """Close the connection (etcd ends a watch with it)."""
        self._sock.close()

    # -- internals ------------------------------------------------------------------

    def _receive(self, seconds: float) -> bool:
        """Take in what arrives within ``seconds`` (0: what is there); whether any came.

        Raises:
            EtcdV3ConnectionError: the connection failed or was closed, now or before.
        """
        if self._broken is not None:
            raise self._broken
        try:
            self._sock.settimeout(None if math.isinf(seconds) else max(seconds, 0.0))
            data = self._sock.recv(_RECV_BYTES)
        except _NOTHING_YET:
            return False
        except OSError as e:
            self._broken = EtcdV3ConnectionError(
                f"etcd at {self._url} broke off a {self._what}: {e}"
            )
            raise self._broken from e
        if not data:
            self._broken = EtcdV3ConnectionError(
                f"etcd at {self._url} ended a {self._what} stream (closed the connection)."
            )
            raise self._broken
        self._raw += data
        return True

    def _read_head(self, deadline: float) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._raw:
            if len(self._raw) > _MAX_HEAD:
                raise EtcdV3ConnectionError(f"etcd at {self._url} sent no HTTP head.")
            if not self._receive(deadline - time.monotonic()):
                raise TimeoutError(f"etcd at {self._url} did not answer a {self._what} in time.")
        head, _, rest = bytes(self._raw).partition(b"\r\n\r\n")
        self._raw[:] = rest
        status_line, *fields = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise EtcdV3ConnectionError(f"etcd at {self._url} sent no HTTP: {status_line!r}.")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        self._body.clear()
        self._chunk_left, self._state, self._ended = 0, _SIZE, False
        return int(parts[1]), headers

    def _decode(self) -> None:
        """Move the payload of the chunks received so far into the body."""
        while not self._ended:
            if self._state == _DATA:
                taken = self._raw[: self._chunk_left]
                if not taken:
                    return
                self._body += taken
                del self._raw[: len(taken)]
                self._chunk_left -= len(taken)
                if not self._chunk_left:
                    self._state = _DATA_END
                continue
            end = self._raw.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self._raw[:end])
            del self._raw[: end + 2]
            if self._state == _DATA_END:
                self._state = _SIZE  # the CRLF after a chunk's payload
            elif self._state == _TRAILER:
                self._ended = not line  # trailers end with an empty line
            else:
                try:
                    self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise EtcdV3ConnectionError(
                        f"etcd at {self._url} sent a {self._what} answer that is not chunked HTTP."
                    ) from None
                self._state = _DATA if self._chunk_left else _TRAILER


def _close_idle(idle: dict[str, list[MemberConnection]]) -> None:
    """Close the idle connections of a :class:`MemberSession` that is gone."""
    for connections in idle.values():
        for connection in list(connections):
            connection.close()


class MemberSession:
    """HTTP to the members of a cluster, on connections kept open; thread-safe.

    Args:
        urls: ``protocol://host:port`` of each member.
        cert: client certificate: a file holding certificate and key, or a
            ``(certificate, key)`` pair; used with https.
        ca_cert: CA that signed etcd's certificate (default: the system's CAs).
        headers: the first :attr:`headers`.

    urllib3 makes the connections (TLS included); the session then speaks HTTP on
    them itself (:class:`MemberConnection`), at a third of
    urllib3's client CPU a request. No proxy or ``.netrc`` from the environment,
    one attempt a request (no retries, no redirects), and a deadline on
    connecting and on the whole answer. Up to :data:`POOL_SIZE` idle connections
    a member are kept; one that etcd closed meanwhile is dropped before use.

    Attributes:
        headers: sent with every request; :class:`~rdzv.etcd.v3_auth.TokenAuth`
            keeps the auth token here.
        verify: what https checks etcd's certificate against: the CA file, or
            ``True`` for the system's CAs.
        cert: the client certificate, as given.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        cert: str | tuple[str, str] | None = None,
        ca_cert: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.headers: dict[str, str] = dict(headers or {})
        self.verify: str | bool = ca_cert if ca_cert is not None else True
        self.cert = cert
        self._urls = tuple(urls)
        self._lock = threading.Lock()
        self._idle: dict[str, list[MemberConnection]] = {url: [] for url in self._urls}
        self._generation = 0  # close() moves it on: connections of before are not kept
        # A session dropped without close() still closes its connections, as
        # urllib3's pools do: no socket is left to the garbage collector's warning.
        weakref.finalize(self, _close_idle, self._idle)

    def exchange(
        self,
        url: str,
        target: str,
        body: bytes,
        seconds: float,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        waiting: Callable[[], None] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request to the member at ``url``; the answer's status, headers and body.

        ``seconds`` bounds connecting, and then the whole answer (infinite: no
        bound). The session's :attr:`headers` go with every request, ``headers``
        with this one. While the answer's head has not come, ``waiting`` is called
        every :data:`WAITING_CHECK_SECONDS`; what it raises gives the request up.

        Raises:
            TimeoutError: the answer did not come in time.
            OSError: connecting or talking failed (``EtcdV3ConnectionError`` among them).
            urllib3.exceptions.HTTPError: connecting failed (a timeout, a refusal).
        """
        deadline = time.monotonic() + seconds
        sent = {**self.headers, **(headers or {})}  # taken whole: TokenAuth may change it
        connection, generation = self._checkout(url, min(seconds, _CONNECT_SECONDS_MAX))
        try:
            connection.send(target, sent, body, deadline, method=method)
            status, answer = _head(connection, deadline, waiting)
            data = connection.body(answer, deadline)
        except BaseException:
            connection.close()
            raise
        self._checkin(url, connection, generation)
        return status, answer, data

    def connect(self, url: str, seconds: float) -> MemberConnection:
        """A new connection to the member at ``url``, with this session's TLS settings.

        Requests take idle ones first (:meth:`exchange`); a watch takes a new one of its
        own. Raises what urllib3 raises when connecting fails (a timeout, a refusal).
        """
        parsed = urllib3.util.parse_url(url)
        host, port = parsed.host or "", parsed.port
        if url.startswith("https:"):
            https = urllib3.connection.HTTPSConnection(
                host, port, timeout=seconds, **self._tls_options()
            )
            https.connect()
            sock = https.sock
        else:
            plain = urllib3.connection.HTTPConnection(host, port, timeout=seconds)
            plain.connect()
            sock = plain.sock
        if sock is None:
            raise EtcdV3ConnectionError(f"etcd at {url}: no connection was made.")
        return MemberConnection(sock, url, url.split("://", 1)[-1])

    def close(self) -> None:
        """Close every idle connection; a later request opens new ones."""
        with self._lock:
            self._generation += 1
            idle = [c for connections in self._idle.values() for c in connections]
            for connections in self._idle.values():
                connections.clear()
        for connection in idle:
            connection.close()

    def _checkout(self, url: str, seconds: float) -> tuple[MemberConnection, int]:
        """An idle connection to ``url`` that etcd kept open, or a new one."""
        while True:
            with self._lock:
                generation = self._generation
                connection = self._idle[url].pop() if self._idle[url] else None
            if connection is None:
                break
            if not connection.dropped():
                return connection, generation
            connection.close()
        return self.connect(url, seconds), generation

    def _checkin(self, url: str, connection: MemberConnection, generation: int) -> None:
        with self._lock:
            keep = (
                connection.reusable
                and generation == self._generation
                and len(self._idle[url]) < POOL_SIZE
            )
            if keep:
                self._idle[url].append(connection)
        if not keep:
            connection.close()

    def _tls_options(self) -> dict[str, Any]:
        """How an https connection checks etcd and shows itself."""
        ca_file = self.verify if isinstance(self.verify, str) else None
        options: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file}
        if isinstance(self.cert, tuple):
            options.update(cert_file=self.cert[0], key_file=self.cert[1])
        elif self.cert is not None:
            options.update(cert_file=self.cert)
        return options


def _head(
    connection: MemberConnection, deadline: float, waiting: Callable[[], None] | None
) -> tuple[int, dict[str, str]]:
    """The head of the answer by ``deadline``, calling ``waiting`` at every check meanwhile."""
    while True:
        step = deadline
        if waiting is not None:
            step = min(deadline, time.monotonic() + WAITING_CHECK_SECONDS)
        try:
            return connection.head(step)
        except TimeoutError:
            if waiting is None or time.monotonic() >= deadline:
                raise
        waiting()


def _until(deadline: float) -> float | None:
    """A socket timeout that ends at ``deadline`` (``None``: an infinite one)."""
    return None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.001)
