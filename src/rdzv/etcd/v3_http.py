"""HTTP/1.1 to etcd's JSON gateway on a socket of our own: requests and endless streams.

A request is a JSON ``POST``; its answer has a ``Content-Length`` or a chunked
body. A watch's answer is a chunked body that never ends: one JSON object a line,
for as long as the watch lasts. :class:`GatewayConnection` speaks just that much
HTTP on the socket itself, for two reasons:

- **A wait can end and the stream go on.** Read through a file object
  (http.client, urllib3), a read that times out leaves the object unusable;
  a ``recv`` that times out consumes nothing, so one watch serves wait after
  wait, each reading on from where the last stopped.
- **A request costs a third of the client CPU.** One read of an 8 KB key took
  about 110 µs of CPU this way against 310 to 370 µs through urllib3, most of it
  http.client parsing headers with the email package. On a machine where
  thousands of nodes share the cores, that CPU is the rendezvous' time.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from rdzv.etcd.v3_wire import EtcdV3ConnectionError

__all__ = ["GatewayConnection"]

_RECV_BYTES = 65536
_MAX_HEAD = 65536
"""Bytes of status line and headers a gateway may send before we call it broken."""

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
"""Where a chunked body is: at a size line, in a payload, at its CRLF, in the trailers."""

_NOTHING_YET = (TimeoutError, BlockingIOError, ssl.SSLWantReadError)
"""What ``recv`` raises when no byte came in time; the connection is intact."""


class GatewayConnection:
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

    def request(
        self, path: str, headers: dict[str, str], body: bytes, deadline: float
    ) -> tuple[int, dict[str, str]]:
        """Send a POST of ``body`` and read the answer's head: its status and headers.

        The caller then reads the body, whole (:meth:`body`) or a line at a time
        (:meth:`lines`).

        Raises:
            TimeoutError: the head did not come before ``deadline``.
            OSError: sending failed.
            EtcdV3ConnectionError: the member broke off or sent no HTTP.
        """
        self._what = path.rsplit("/", 1)[-1]
        self._reusable = False
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
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
            self._sock.settimeout(max(seconds, 0.0))
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
