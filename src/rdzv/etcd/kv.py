"""The few key-value operations rdzv's etcd stores and backends need, for v2 and v3 alike.

:class:`EtcdKV` is what the shared store (:mod:`rdzv.etcd.store`) and the shared
backend (:mod:`rdzv.etcd.backend`) are written against;
:class:`~rdzv.etcd.kv_v2.EtcdV2KV` serves it over a python-etcd client (so over
the failover ``ClusterClient`` too), :class:`~rdzv.etcd.kv_v3.EtcdV3KV` over an
:class:`~rdzv.etcd.v3_client.EtcdV3Client`. Keys and values are bytes as they
stand in etcd: how a store lays its keys out (torch's base64 one for v2) is the
store's business, not the protocol's. Each operation makes the requests its
callers made before the protocol existed, no more, and lets the client's errors
through, so each caller keeps its own error messages.

Directories (of join intents, of heartbeats) are v2's; on v3 a directory is the
prefix ``<directory>/``, and its keys are ordered by their create revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

__all__ = [
    "Change",
    "Entry",
    "EtcdKV",
    "HistoryLost",
    "Listed",
    "NotADirectory",
    "Swap",
    "watch_until",
]


class Entry(NamedTuple):
    """A key as etcd holds it."""

    key: str
    """The key as etcd names it (for messages)."""
    value: bytes | None
    """``None``: a v2 directory, not a value."""
    version: int
    """What :meth:`EtcdKV.put_if` compares: v2's ``modifiedIndex``, v3's mod revision."""


class Listed(NamedTuple):
    """A key of a directory: its name, when it was created and its value."""

    key: bytes
    created: int
    """v2's ``createdIndex``, v3's create revision: later keys have larger ones."""
    value: bytes


class Change(NamedTuple):
    """What a watch saw: the key afterwards (``None``: gone) and where to watch on from."""

    entry: Entry | None
    cursor: int | None


class Swap(NamedTuple):
    """The outcome of :meth:`EtcdKV.put_if`."""

    written: bool
    version: int = 0
    """The version the write gave the key (0 when it lost)."""
    current: Entry | None = None
    """After a lost swap: the key as the reply reported it (``None``: absent)."""
    current_known: bool = False
    """Whether the reply reported the key; if not, the caller reads it again."""


class HistoryLost(Exception):
    """A watch cannot go on from its cursor; the caller reads the key again."""


class NotADirectory(Exception):
    """A plain key stands at ``path``, where the caller keeps a directory (v2 only)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is a plain key, not a directory")
        self.path = path


class EtcdKV(Protocol):
    """Get, compare-and-set, watch, count, list and delete etcd keys."""

    @property
    def endpoint(self) -> str:
        """The member the client talks to (for messages)."""
        ...

    @property
    def read_timeout(self) -> float:
        """How long the client waits for an answer, in seconds."""
        ...

    def get(self, key: bytes) -> Entry | None:
        """The key, ``None`` when absent."""
        ...

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """The keys, ``None`` for each absent one: v3 in one transaction per 128
        keys, v2 a request each."""
        ...

    def get_if_changed(self, key: bytes, version: int) -> tuple[bool, Entry | None]:
        """``(False, None)`` while the key's version is ``version``; else ``(True, the key)``.

        v3 asks in one transaction that carries no value while the key is
        unchanged; v2 has no such request and reads the key.
        """
        ...

    def read_to_watch(self, key: bytes) -> tuple[Entry | None, int | None]:
        """The key and the cursor from which :meth:`watch` sees every later change."""
        ...

    def watch(
        self, key: bytes, cursor: int | None, timeout: float, *, keep: bool = False
    ) -> Change | None:
        """The first change after ``cursor``; ``None`` when ``timeout`` seconds passed.

        ``cursor`` is one :meth:`read_to_watch` or an earlier :class:`Change`
        gave, or the version of the key as the caller read it. ``keep``: the
        caller will soon watch the key again, so a client that can keep the
        watch open until then does (v3), until :meth:`release_watches`.

        Raises:
            HistoryLost: the caller must read the key again.
        """
        ...

    def release_watches(self) -> None:
        """Close the watches that ``keep`` kept open (v2 keeps none)."""
        ...

    def put(self, key: bytes, value: bytes, *, ttl: float | None = None) -> None:
        """Write the key; with ``ttl`` it vanishes at least that many seconds later."""
        ...

    def put_if(
        self, key: bytes, value: bytes, version: int | None, *, ttl: int | None = None
    ) -> Swap:
        """Write the key if it is at ``version`` (``None``: if it is absent).

        With ``ttl`` the key vanishes that many seconds after the write (v2) or one
        to two TTLs after it (v3, a lease).
        """
        ...

    def renew(self, key: bytes, ttl: float) -> None:
        """Have ``key``, written with ``ttl``, live on as if written again, without a write.

        v2 refreshes its TTL (a refresh wakes no watcher but moves the key's
        ``modifiedIndex``, so only once under three quarters of it is left, and
        only if the key is as it was read); v3 keeps its lease alive, which
        changes no revision. Nothing happens to an absent key.
        """
        ...

    def append(self, directory: bytes, value: bytes, *, ttl: float) -> None:
        """Add a new key holding ``value`` to ``directory``, created after every earlier one.

        Raises:
            NotADirectory: a plain key stands where the directory belongs.
        """
        ...

    def list_dir(self, directory: bytes) -> list[Listed]:
        """The keys of ``directory`` and of its subdirectories, in no order (none if absent).

        Raises:
            NotADirectory: a plain key stands where the directory belongs.
        """
        ...

    def delete_dirs_below(self, parent: bytes, number: int) -> None:
        """Delete the directories ``<parent>/<n>`` numbered below ``number``.

        v2 lists ``parent`` first, so that many callers deleting the same
        directory do not each send a delete through raft; v3 deletes the prefix of
        ``number - 1`` if it holds a key, and leaves older ones to their leases.

        Raises:
            NotADirectory: a plain key stands where the directory belongs.
        """
        ...

    def delete(self, key: bytes) -> bool:
        """Delete the key; whether it existed."""
        ...

    def count_prefix(self, prefix: bytes) -> int:
        """How many keys (not v2 directories) start with ``prefix``."""
        ...


def watch_until(
    kv: EtcdKV,
    key: bytes,
    deadline: float,
    done: Callable[[Entry | None], bool],
    cursor: int | None = None,
    *,
    keep: bool = False,
) -> tuple[bool, Entry | None]:
    """Wait until ``key`` (``None``: absent) satisfies ``done``; whether it did, and the key.

    Without ``cursor`` the key is read once first, then watched from that read, so
    no write in between is missed; with one (the version the caller read), the
    watch starts there and the read is spared. The key is read again only when
    the watch lost its place (:class:`HistoryLost`). A key not read at all when
    ``deadline`` passes is reported as ``(False, None)``. ``keep`` is
    :meth:`EtcdKV.watch`'s.
    """
    fresh = cursor is None
    entry: Entry | None = None
    while True:
        if fresh:
            entry, cursor = kv.read_to_watch(key)
            if done(entry):
                return True, entry
            fresh = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, entry
        try:
            change = kv.watch(key, cursor, remaining, keep=keep)
        except HistoryLost:
            fresh = True
            continue
        if change is None:
            continue
        entry = change.entry
        if done(entry):
            return True, entry
        cursor = change.cursor
