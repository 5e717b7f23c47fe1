"""Watches of etcd keys over the v3 JSON gateway, read in the calling thread, kept if asked.

The gateway answers a watch with a stream of JSON objects, one a line, for as
long as the watch lasts. :class:`WatchReader` reads it in the calling thread (no
thread per watch), returns at a deadline (a dead etcd must not hang a watch),
and tells a cancelled watch apart: one the caller recovers from by reading again
(compacted history, a stale token), and one that is an error.

A watch asked to be kept stays open when the wait returns, with what it knows of
the key: the next wait on that key reads on from there, without opening a stream
or reading the key again. A waiting rendezvous node waits many times on one key;
for each, etcd would otherwise set up a stream and a watcher and serve a read.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import weakref
from collections.abc import Callable

from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from rdzv.etcd.connection import MemberConnection
from rdzv.etcd.members import MemberPool
from rdzv.etcd.v3_wire import (
    API_PATH,
    TRANSPORT_ERRORS,
    EtcdV3ConnectionError,
    EtcdV3Error,
    KeyValue,
    WatchEvent,
    b64,
    connection_error,
    int_field,
    key_value,
    status_error,
)

__all__ = ["Connect", "WatchReader"]

_CREATED = "created"
"""A watch stream's first message: etcd watches the key from now on."""
_GIVE_UP = "give up"
"""etcd cancelled the watch in a way the caller recovers from by reading again."""

_OPEN_FROM_SECONDS = 2.0
"""Longest time :meth:`WatchReader.open_from` takes to connect and have the watch created."""

Connect = Callable[[str, float], MemberConnection]
"""Connects to a member (TLS and all): (member URL, seconds) -> a new connection."""


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a timeout of connecting or reading, not a refused connection.

    urllib3 makes a refused connection a kind of connect timeout; it is a failure.
    """
    if isinstance(error, NewConnectionError):
        return False
    return isinstance(error, (ConnectTimeoutError, ReadTimeoutError, TimeoutError))


def _error_text(stream: MemberConnection, headers: dict[str, str], deadline: float) -> str:
    """The body of a refusal, as far as it came by ``deadline`` (for the message)."""
    try:
        return stream.body(headers, deadline).decode("utf-8", "replace")
    except (TimeoutError, EtcdV3ConnectionError):
        return ""


class _KeyWatch:
    """One open watch of a key on one member, and the newest version of the key it knows.

    ``revision`` is how far that knowledge goes: the revision of the read made
    once the watch was created, then of each event. ``current`` is the key then
    (``None``: absent).
    """

    def __init__(self, url: str, key: bytes, stream: MemberConnection) -> None:
        self.url = url
        self.key = key
        self.stream = stream
        self.known = False
        self.current: KeyValue | None = None
        self.revision = 0

    def learn(self, current: KeyValue | None, revision: int) -> None:
        if revision >= self.revision:
            self.known, self.current, self.revision = True, current, revision

    def newer(self, seen: int | None) -> WatchEvent | None:
        """The key's version, if newer than the one of mod revision ``seen`` (``None``: absent)."""
        if not self.known:
            return None
        if seen is None:
            return None if self.current is None else WatchEvent(self.current, deleted=False)
        if self.revision < seen:
            return None  # the caller knows more already (its own write): wait for the event
        if self.current is None:
            return WatchEvent(KeyValue(self.key, b"", 0, self.revision), deleted=True)
        if self.current.mod_revision != seen:
            return WatchEvent(self.current, deleted=False)
        return None


def _close_kept(kept: dict[bytes, _KeyWatch]) -> None:
    """Close the streams of a :class:`WatchReader` that is gone."""
    for watch in list(kept.values()):
        watch.stream.close()


class WatchReader:
    """Watches keys for an :class:`~rdzv.etcd.v3_client.EtcdV3Client`; thread-safe.

    Args:
        pool: the client's members; a watch goes to the first that does not fail.
        connect: opens a connection to a member (the client's TLS settings).
        headers: the headers of a request now (the auth token among them).
        read_timeout: seconds that opening a watch may take.
        read_key: reads a key: it (``None`` when absent) and etcd's revision then.
        renew_token: takes a new auth token and returns ``True``, or returns
            ``False`` when the client has no credentials.
    """

    def __init__(
        self,
        pool: MemberPool,
        connect: Connect,
        headers: Callable[[], dict[str, str]],
        read_timeout: float,
        read_key: Callable[[bytes], tuple[KeyValue | None, int]],
        renew_token: Callable[[], bool],
    ) -> None:
        self._pool = pool
        self._connect = connect
        self._headers = headers
        self._read_timeout = read_timeout
        self._read_key = read_key
        self._renew_token = renew_token
        self._lock = threading.Lock()
        self._kept: dict[bytes, _KeyWatch] = {}
        # A reader dropped without release() (its client never closed) still closes
        # its streams, as urllib3's pools close their connections.
        weakref.finalize(self, _close_kept, self._kept)

    def watch(
        self, key: bytes, seen: int | None, deadline: float, *, keep: bool = False
    ) -> WatchEvent | None:
        """Wait until ``deadline`` (monotonic) for ``key`` to differ from the version seen.

        ``seen`` is the mod revision of the version the caller saw (``None``: the
        key was absent). Returns the key's newer version or its deletion, or
        ``None`` at the deadline or when etcd cancelled the watch for a reason
        that reading again cures. With ``keep`` the watch stays open for the next
        call on ``key``, until :meth:`release`.

        Raises:
            EtcdV3ConnectionError: every member failed or ended the stream early.
            EtcdV3Error: etcd refused or cancelled the watch.
        """
        kept = self._take(key)
        if kept is not None:
            try:
                return self._wait(kept, seen, deadline, keep)
            except EtcdV3ConnectionError:
                pass  # the kept stream broke (etcd restarted, closed it): open another

        def attempt(url: str, seconds: float) -> WatchEvent | None:
            opened = self._open(url, key, deadline)
            return None if opened is None else self._wait(opened, seen, deadline, keep)

        return self._pool.call(attempt, max(deadline - time.monotonic(), 0.0), split=False)

    def open_from(self, key: bytes, revision: int) -> MemberConnection | None:
        """A watch of ``key`` from ``revision`` on the first member, returned once etcd
        has created it and before any event: the connection then holds or receives
        bytes (:meth:`MemberConnection.idle`) as soon as etcd sends anything more,
        which a poll checks without blocking (:mod:`rdzv.etcd.polls`). ``None`` when
        an event came with the creation: the key changed, and there is nothing to keep.

        Raises:
            OSError: connecting or sending failed, or etcd did not create the watch in
                time.
            EtcdV3Error: etcd refused the watch.
        """
        url = self._pool.urls[self._pool.order()[0]]
        seconds = min(self._read_timeout, _OPEN_FROM_SECONDS)
        deadline = time.monotonic() + seconds
        stream = self._connect(url, seconds)
        try:
            request = {"create_request": {"key": b64(key), "start_revision": str(revision)}}
            body = json.dumps(request).encode()
            status, headers = stream.request(API_PATH + "watch", self._headers(), body, deadline)
            if status != http.client.OK:
                raise status_error(url, "watch", status, _error_text(stream, headers, deadline))
            lines: list[bytes] = []
            while not lines:
                lines = [line for line in stream.lines(deadline) if line.strip()]
                if not lines and time.monotonic() >= deadline:
                    raise TimeoutError(f"etcd at {url} did not create a watch in time.")
            if self._message(url, lines[0]) is not _CREATED:
                raise EtcdV3Error(f"etcd at {url} did not start a watch stream as expected.")
        except BaseException:
            stream.close()
            raise
        if len(lines) > 1 or not stream.idle():
            stream.close()
            return None
        return stream

    def release(self) -> None:
        """Close every kept watch (etcd drops its watchers with the connections)."""
        with self._lock:
            kept = list(self._kept.values())
            self._kept.clear()
        for watch in kept:
            watch.stream.close()

    # -- internals ------------------------------------------------------------------

    def _take(self, key: bytes) -> _KeyWatch | None:
        """The kept watch of ``key``, for this thread alone; ``None`` if there is none
        or it is on a member that requests no longer go to first (it failed lately)."""
        with self._lock:
            watch = self._kept.pop(key, None)
        if watch is not None and watch.url != self._pool.urls[self._pool.order()[0]]:
            watch.stream.close()
            return None
        return watch

    def _open(self, url: str, key: bytes, deadline: float) -> _KeyWatch | None:
        """A new watch of ``key`` on ``url``; ``None`` if etcd did not answer by ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            stream = self._connect(url, min(self._read_timeout, remaining))
        except TRANSPORT_ERRORS as e:
            if _timed_out(e):
                return None  # no answer before the deadline: the watch timed out
            raise connection_error(url, "watch", e) from e
        try:
            body = json.dumps({"create_request": {"key": b64(key)}}).encode()
            status, headers = stream.request(API_PATH + "watch", self._headers(), body, deadline)
            if status != http.client.OK:
                raise status_error(url, "watch", status, _error_text(stream, headers, deadline))
            if "chunked" not in headers.get("transfer-encoding", ""):
                raise EtcdV3ConnectionError(
                    f"etcd at {url} answered a watch with a body that is not a stream."
                )
        except TimeoutError:
            stream.close()
            return None
        except EtcdV3Error:
            stream.close()
            raise
        except OSError as e:
            stream.close()
            raise connection_error(url, "watch", e) from e
        return _KeyWatch(url, key, stream)

    def _wait(
        self, watch: _KeyWatch, seen: int | None, deadline: float, keep: bool
    ) -> WatchEvent | None:
        """Follow ``watch`` until it has news for ``seen`` or ``deadline``; keep or close it."""
        kept = False
        try:
            while True:
                for line in watch.stream.lines(deadline):
                    if self._take_line(watch, line) is _GIVE_UP:
                        return None
                newer = watch.newer(seen)
                if newer is not None or time.monotonic() >= deadline:
                    kept = keep
                    return newer
        finally:
            if kept:
                self._keep(watch)
            else:
                watch.stream.close()

    def _keep(self, watch: _KeyWatch) -> None:
        with self._lock:
            other = self._kept.setdefault(watch.key, watch)
        if other is not watch:
            watch.stream.close()  # another thread kept one already

    def _take_line(self, watch: _KeyWatch, line: bytes) -> str | None:
        """Learn what one line of the stream says; :data:`_GIVE_UP` to stop and read again."""
        message = self._message(watch.url, line)
        if message is _CREATED:
            watch.learn(*self._read_key(watch.key))
        elif message is _GIVE_UP:
            return _GIVE_UP
        elif isinstance(message, list):
            for event in message:
                watch.learn(None if event.deleted else event.kv, event.kv.mod_revision)
        return None

    def _message(self, url: str, line: bytes) -> list[WatchEvent] | str | None:
        """One line of a watch stream: its events, :data:`_CREATED`, :data:`_GIVE_UP`
        ("stop, read again") or ``None`` (nothing to act on)."""
        if not line.strip():
            return None
        try:
            message = json.loads(line)
        except ValueError as e:
            raise EtcdV3Error(f"etcd's watch stream sent a line that is not JSON ({e}).") from e
        if not isinstance(message, dict):
            raise EtcdV3Error("etcd's watch stream sent something other than a JSON object.")
        if "error" in message:
            error = message["error"]
            text = json.dumps(error) if not isinstance(error, str) else error
            if "invalid auth token" in text and self._renew_token():
                return _GIVE_UP
            raise status_error(url, "watch", 0, text)
        result = message.get("result")
        if not isinstance(result, dict):
            return None
        if result.get("canceled"):
            reason = str(result.get("cancel_reason") or "")
            if int_field(result.get("compact_revision")) > 0:
                return _GIVE_UP
            # etcd cancels the watch of a stale token as "permission denied": take a
            # new token; should the user really lack the right, the caller's next
            # read says so.
            stale = "auth" in reason or "permission denied" in reason
            if stale and self._renew_token():
                return _GIVE_UP
            raise EtcdV3Error(f"etcd at {url} cancelled a watch: {reason or 'no reason'}")
        if result.get("created"):
            return _CREATED
        events = []
        for item in result.get("events") or []:  # none: a progress notice
            if not isinstance(item, dict):
                raise EtcdV3Error("etcd's watch stream sent an event that is not a JSON object.")
            events.append(WatchEvent(key_value(item.get("kv")), item.get("type") == "DELETE"))
        return events
