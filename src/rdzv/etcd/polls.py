"""Polls of an unchanged etcd key answered by a watch left waiting, not by reads.

A launcher polls a state that rarely moves. v2 has no conditional read, and v3's
(a transaction that compares the mod revision) costs etcd about 320 µs through
the JSON gateway. So a second read in a row that finds the key unchanged sends a
watch from just after that read (v2: ``ClusterClient.send_watch``; v3:
``WatchReader.open_from``) and leaves it waiting. While etcd has sent nothing on
it, the key is unchanged and no request is made, for up to
:data:`KEPT_WATCH_SECONDS`; then one read confirms it, as a member that vanished
without closing its connections would answer no watch. Anything etcd sends on
the watch (a change, an error, the member gone) ends it, and the next poll reads.
A forming round's state is read about once a version: a watch sent after every
unchanged read would cost it a connection and a request for nothing.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

import attrs

from rdzv.etcd.connection import MemberConnection

__all__ = ["KEPT_WATCH_SECONDS", "PollWatches"]

T = TypeVar("T")

KEPT_WATCH_SECONDS = 1.0
"""Longest time a poll of an unchanged key answers from a watch without a read."""


@attrs.define
class KeptWatch:
    """A watch of a key sent after a read found it at ``version``, not yet answered."""

    version: int
    connection: MemberConnection
    until: float = 0.0
    """Until when its silence stands for the key unchanged; then a read confirms it."""


class PollWatches:
    """The watches kept for polls, a key each; thread-safe.

    Args:
        send: sends a watch of a key from an etcd index (v2) or revision (v3), the
            first that a change after the read would have; ``None`` when etcd
            answered at once (the key changed meanwhile). ``None`` for a client
            that cannot (python-etcd's own): every poll then reads.
        failures: what ``send`` raises when it fails; the next poll reads, and
            tries again.
    """

    def __init__(
        self,
        send: Callable[[bytes, int], MemberConnection | None] | None,
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self._send = send
        self._failures = failures
        self._lock = threading.Lock()
        self._kept: dict[bytes, KeptWatch] = {}
        self._unchanged: dict[bytes, int] = {}
        """The version each key was last read unchanged at."""

    def poll(
        self, key: bytes, version: int, read: Callable[[], tuple[bool, T, int | None]]
    ) -> tuple[bool, T | None]:
        """``(False, None)`` while ``key`` is at ``version``, else ``(True, what read gave)``:
        from the watch kept for the key while etcd has sent nothing on it, else from
        ``read``, which returns whether the key changed, the key, and the etcd index
        or revision as of which it is known (``None``: unknown)."""
        kept = self.take(key, version)
        if kept is not None and time.monotonic() < kept.until:
            self.keep(key, kept)
            return False, None
        changed, value, index = read()
        if changed:
            if kept is not None:
                kept.connection.close()
            return True, value
        self.read_unchanged(key, version, index, kept)
        return False, None

    def take(self, key: bytes, version: int) -> KeptWatch | None:
        """The watch kept for ``key`` if it watches ``version`` and etcd has not answered
        it (a watch that does not is closed); taken out, so one caller uses it at a time."""
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is None:
            return None
        if kept.version == version and kept.connection.idle():
            return kept
        kept.connection.close()
        return None

    def keep(self, key: bytes, kept: KeptWatch) -> None:
        """Put ``kept`` back for the next poll of ``key``."""
        with self._lock:
            other = self._kept.get(key)
            self._kept[key] = kept
        if other is not None and other is not kept:
            other.connection.close()

    def read_unchanged(
        self, key: bytes, version: int, index: int | None, kept: KeptWatch | None
    ) -> None:
        """A read at etcd index ``index`` found ``key`` still at ``version``: keep ``kept``
        for another :data:`KEPT_WATCH_SECONDS`, or send a watch if this is the second
        such read in a row."""
        if kept is None:
            with self._lock:
                again = self._unchanged.get(key) == version
                self._unchanged[key] = version
            kept = self._watch(key, version, index) if again else None
        if kept is not None:
            kept.until = time.monotonic() + KEPT_WATCH_SECONDS
            self.keep(key, kept)

    def _watch(self, key: bytes, version: int, index: int | None) -> KeptWatch | None:
        if self._send is None or index is None or index < 0:
            return None
        try:
            connection = self._send(key, index + 1)
        except self._failures:
            return None  # the next poll reads, and tries again
        if connection is None:
            return None
        kept = KeptWatch(version, connection)
        weakref.finalize(kept, connection.close)  # closed with the client's last user
        return kept

    def release(self) -> None:
        """Close every kept watch (its client closes)."""
        with self._lock:
            kept = list(self._kept.values())
            self._kept.clear()
        for watch in kept:
            watch.connection.close()
