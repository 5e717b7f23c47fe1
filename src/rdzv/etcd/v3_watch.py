"""A bounded watch of one etcd key over the v3 JSON gateway, read in the calling thread.

etcd3gw opens a watch stream with no timeout (a dead etcd hangs it), runs a
thread pool per watch, and ignores a watch that etcd cancels (compacted history).
:class:`WatchReader` reads the stream itself, returns at a deadline, and tells a
cancelled watch apart: one the caller recovers from by reading again, and one
that is an error. :meth:`rdzv.etcd.v3_client.EtcdV3Client.watch` hands it each
member in turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import requests

from rdzv.etcd.v3_wire import (
    API_PATH,
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


def _is_read_timeout(error: requests.RequestException) -> bool:
    if isinstance(error, requests.Timeout):
        return True
    # A timed-out read of a streamed body surfaces as ConnectionError(ReadTimeoutError).
    cause = error.args[0] if error.args else None
    return type(cause).__name__ == "ReadTimeoutError"


class WatchReader:
    """Watches a key on one member at a time, for an :class:`~rdzv.etcd.v3_client.EtcdV3Client`.

    Args:
        session: the client's HTTP session (TLS, credentials).
        read_timeout: seconds that opening a watch may take.
        read_key: reads a key (``None`` when absent), once a watch is open.
        renew_token: takes a new auth token and returns ``True``, or returns
            ``False`` when the client has no credentials.
    """

    def __init__(
        self,
        session: requests.Session,
        read_timeout: float,
        read_key: Callable[[bytes], KeyValue | None],
        renew_token: Callable[[], bool],
    ) -> None:
        self._session = session
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
            response = self._session.post(
                url + API_PATH + "watch",
                json={"create_request": {"key": b64(key)}},
                stream=True,
                # Connect within read_timeout; then each read of the stream may
                # block at most until the deadline.
                timeout=(min(self._read_timeout, remaining), remaining),
            )
        except requests.RequestException as e:
            if _is_read_timeout(e):
                return None  # no answer before the deadline: the watch timed out
            raise connection_error(url, "watch", e) from e
        try:
            if response.status_code != requests.codes["ok"]:
                raise status_error(url, "watch", response.status_code, response.text)
            buffer = b""
            for chunk in response.iter_content(chunk_size=None):
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
        except requests.RequestException as e:
            if _is_read_timeout(e):
                return None
            raise connection_error(url, "watch", e) from e
        finally:
            response.close()

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
