"""A bounded watch of one etcd key over the v3 JSON gateway, read in the calling thread.

The gateway answers a watch with a stream of JSON objects, one a line, for as
long as the watch lasts. :class:`WatchReader` reads it in the calling thread
(no thread pool per watch), returns at a deadline (a dead etcd must not hang a
watch), and tells a cancelled watch apart: one the caller recovers from by
reading again (compacted history, a stale token), and one that is an error.
:meth:`rdzv.etcd.v3_client.EtcdV3Client.watch` hands it each member in turn.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from rdzv.etcd.v3_wire import (
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

__all__ = ["WatchReader"]

_CREATED = "created"
"""A watch stream's first message: etcd watches the key from now on."""
_GIVE_UP = "give up"
"""etcd cancelled the watch in a way the caller recovers from by reading again."""


_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
"""What urllib3 raises when a member cannot be reached or breaks off a stream."""

OpenStream = Callable[[str, str, dict[str, Any], float, float], urllib3.BaseHTTPResponse]
"""Opens a streamed POST: (member URL, gateway path, body, connect seconds, read seconds)."""


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a timeout of connecting or reading, not a refused connection.

    urllib3 makes a refused connection a kind of connect timeout; it is a failure.
    """
    if isinstance(error, NewConnectionError):
        return False
    return isinstance(error, (ConnectTimeoutError, ReadTimeoutError))


class WatchReader:
    """Watches a key on one member at a time, for an :class:`~rdzv.etcd.v3_client.EtcdV3Client`.

    Args:
        open_stream: opens a streamed POST to a member (the client's session:
            TLS, credentials); see :data:`OpenStream`.
        read_timeout: seconds that opening a watch may take.
        read_key: reads a key (``None`` when absent), once a watch is open.
        renew_token: takes a new auth token and returns ``True``, or returns
            ``False`` when the client has no credentials.
    """

    def __init__(
        self,
        open_stream: OpenStream,
        read_timeout: float,
        read_key: Callable[[bytes], KeyValue | None],
        renew_token: Callable[[], bool],
    ) -> None:
        self._open_stream = open_stream
        self._read_timeout = read_timeout
        self._read_key = read_key
        self._renew_token = renew_token

    def watch_on(
        self, url: str, key: bytes, seen: int | None, deadline: float
    ) -> WatchEvent | None:
        """Watch ``key`` on the member at ``url`` until ``deadline`` (monotonic).

        ``seen`` is the mod revision of the version the caller saw (``None``: the
        key was absent). Returns the key's new version or its deletion, or
        ``None`` at the deadline or when etcd cancelled the watch for a reason
        that reading again cures.

        Raises:
            EtcdV3ConnectionError: the member failed or ended the stream early.
            EtcdV3Error: etcd refused or cancelled the watch.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            # Connect within read_timeout; then each read of the stream may block
            # at most until the deadline.
            response = self._open_stream(
                url,
                "watch",
                {"create_request": {"key": b64(key)}},
                min(self._read_timeout, remaining),
                remaining,
            )
        except _TRANSPORT_ERRORS as e:
            if _timed_out(e):
                return None  # no answer before the deadline: the watch timed out
            raise connection_error(url, "watch", e) from e
        try:
            if response.status != http.client.OK:
                text = response.data.decode("utf-8", "replace")
                raise status_error(url, "watch", response.status, text)
            buffer = b""
            # Without a size, a chunked answer comes a chunk at a time, as etcd sends it.
            for chunk in response.stream(None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = self._line(url, line)
                    if event is _CREATED:
                        current = self._read_key(key)
                        if current is None and seen is not None:
                            return WatchEvent(KeyValue(key, b"", 0, 0), deleted=True)
                        if current is not None and current.mod_revision != seen:
                            return WatchEvent(current, deleted=False)
                    elif isinstance(event, WatchEvent):
                        return event
                    elif event is _GIVE_UP:
                        return None
                if time.monotonic() >= deadline:
                    return None
            if time.monotonic() < deadline:
                # The stream ended before the deadline: the member went away.
                raise EtcdV3ConnectionError(f"etcd at {url} ended a watch stream early.")
            return None
        except EtcdV3Error:
            raise  # ours (an EtcdV3ConnectionError is an OSError too): as it is
        except _TRANSPORT_ERRORS as e:
            if _timed_out(e):
                return None
            raise connection_error(url, "watch", e) from e
        finally:
            # Not read to its end: the connection is closed, then its slot given back.
            response.close()
            response.release_conn()

    def _line(self, url: str, line: bytes) -> WatchEvent | str | None:
        """One line of a watch stream: an event, :data:`_CREATED`, :data:`_GIVE_UP` ("stop,
        read again") or ``None`` (nothing to act on)."""
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
        events = result.get("events") or []
        if not events:
            return None  # a progress notice
        last = events[-1]
        if not isinstance(last, dict):
            raise EtcdV3Error("etcd's watch stream sent an event that is not a JSON object.")
        return WatchEvent(key_value(last.get("kv")), last.get("type") == "DELETE")
