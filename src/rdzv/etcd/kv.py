"""The few key-value operations rdzv's etcd stores and backends need, for v2 and v3 alike.

:class:`EtcdKV` is what the shared store (:mod:`rdzv.etcd.store`) and the state
half of the backends (:mod:`rdzv.etcd.backend`) are written against;
:class:`EtcdV2KV` serves it over a python-etcd client (so over the failover
``ClusterClient`` too), :class:`EtcdV3KV` over an
:class:`~rdzv.etcd.v3_client.EtcdV3Client`. Keys and values are bytes as they
stand in etcd: how a store lays its keys out (torch's base64 one for v2) is the
store's business, not the protocol's. Each operation makes the requests its
callers made before the protocol existed, no more, and lets the client's errors
through, so each caller keeps its own error messages.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import etcd

if TYPE_CHECKING:
    # Types only: the v2 code must import without the etcd3 extra (etcd3gw).
    from rdzv.etcd.v3_client import EtcdV3Client, KeyValue

__all__ = ["Change", "Entry", "EtcdKV", "EtcdV2KV", "EtcdV3KV", "HistoryLost", "Swap", "v2_entry"]

# etcd v2 actions whose event node carries no value: the key is gone afterwards.
_REMOVE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})


class Entry(NamedTuple):
    """A key as etcd holds it."""

    key: str
    """The key as etcd names it (for messages)."""
    value: bytes | None
    """``None``: a v2 directory, not a value."""
    version: int
    """What :meth:`EtcdKV.put_if` compares: v2's ``modifiedIndex``, v3's mod revision."""


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


class EtcdKV(Protocol):
    """Get, compare-and-set, watch, count and delete etcd keys."""

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

    def read_to_watch(self, key: bytes) -> tuple[Entry | None, int | None]:
        """The key and the cursor from which :meth:`watch` sees every later change."""
        ...

    def watch(self, key: bytes, cursor: int | None, timeout: float) -> Change | None:
        """The first change after ``cursor``; ``None`` when ``timeout`` seconds passed.

        Raises:
            HistoryLost: the caller must read the key again.
        """
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """Write the key."""
        ...

    def put_if(
        self, key: bytes, value: bytes, version: int | None, *, ttl: int | None = None
    ) -> Swap:
        """Write the key if it is at ``version`` (``None``: if it is absent).

        With ``ttl`` the key vanishes that many seconds after the write (v2) or one
        to two TTLs after it (v3, a lease).
        """
        ...

    def delete(self, key: bytes) -> bool:
        """Delete the key; whether it existed."""
        ...

    def count_prefix(self, prefix: bytes) -> int:
        """How many keys (not v2 directories) start with ``prefix``."""
        ...


class EtcdV2KV:
    """:class:`EtcdKV` over a python-etcd client (etcd's v2 API); keys are UTF-8 paths."""

    def __init__(self, client: etcd.Client) -> None:
        self.client = client

    @property
    def endpoint(self) -> str:
        return str(self.client.base_uri)

    @property
    def read_timeout(self) -> float:
        return float(self.client.read_timeout)

    def get(self, key: bytes) -> Entry | None:
        try:
            return v2_entry(self.client.read(key.decode("utf-8")))
        except etcd.EtcdKeyNotFound:
            return None

    def read_to_watch(self, key: bytes) -> tuple[Entry | None, int | None]:
        """The key and etcd's index at the read; index -1 when etcd did not report one."""
        try:
            node = self.client.read(key.decode("utf-8"))
        except etcd.EtcdKeyNotFound as e:
            # etcd v2 reports its current index in every error body; a watch from the
            # next index sees every write that happened after the failed read.
            index = (e.payload or {}).get("index")
            return None, index if isinstance(index, int) else -1
        # X-Etcd-Index, not modifiedIndex: etcd keeps only the last 1000 events,
        # and a key written long ago would make a watch from its modifiedIndex
        # fail with "index cleared".
        return v2_entry(node), node.etcd_index

    def watch(self, key: bytes, cursor: int | None, timeout: float) -> Change | None:
        if cursor is None or cursor < 0:
            time.sleep(min(0.05, timeout))  # no index to watch from: poll
            raise HistoryLost
        try:
            event = self.client.read(
                key.decode("utf-8"), wait=True, waitIndex=cursor + 1, timeout=timeout
            )
        except etcd.EtcdWatchTimedOut:
            return None
        except etcd.EtcdEventIndexCleared as e:
            raise HistoryLost from e
        if event.action in _REMOVE_ACTIONS or event.value is None:
            return Change(None, event.modifiedIndex)
        return Change(v2_entry(event), event.modifiedIndex)

    def put(self, key: bytes, value: bytes) -> None:
        self.client.write(key.decode("utf-8"), value.decode("utf-8"))

    def put_if(
        self, key: bytes, value: bytes, version: int | None, *, ttl: int | None = None
    ) -> Swap:
        # prevIndex rather than prevValue: etcd rejects an empty prevValue, and
        # the index also catches a write of the same value in between.
        conditions: dict[str, Any] = (
            {"prevExist": False} if version is None else {"prevIndex": version}
        )
        if ttl is not None:
            conditions["ttl"] = ttl
        try:
            result = self.client.write(key.decode("utf-8"), value.decode("utf-8"), **conditions)
        except (etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return Swap(False)
        return Swap(True, result.modifiedIndex)

    def delete(self, key: bytes) -> bool:
        try:
            self.client.delete(key.decode("utf-8"))
        except etcd.EtcdKeyNotFound:
            return False
        return True

    def count_prefix(self, prefix: bytes) -> int:
        try:
            root = self.client.read(prefix.decode("utf-8"), recursive=True)
        except etcd.EtcdKeyNotFound:
            return 0
        # leaves also yields empty directories (the prefix itself when empty,
        # and directories that base64 keys with a "/" left behind).
        return sum(1 for node in root.leaves if not node.dir)


def v2_entry(node: etcd.EtcdResult) -> Entry:
    """A python-etcd result as an :class:`Entry` (value ``None``: a directory)."""
    value = None if node.dir or node.value is None else node.value.encode("utf-8")
    return Entry(node.key, value, node.modifiedIndex)


class EtcdV3KV:
    """:class:`EtcdKV` over an :class:`~rdzv.etcd.v3_client.EtcdV3Client` (etcd's v3 API)."""

    def __init__(self, client: EtcdV3Client) -> None:
        self.client = client

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    @property
    def read_timeout(self) -> float:
        return float(self.client.read_timeout)

    def get(self, key: bytes) -> Entry | None:
        kv, _ = self.client.get(key)
        return _v3_entry(kv)

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """The keys (``None`` for each absent one) in one transaction per 128 keys."""
        return [_v3_entry(kv) for kv in self.client.get_many(keys)]

    def read_to_watch(self, key: bytes) -> tuple[Entry | None, int | None]:
        """The key and its mod revision (``None``: absent), the version a watch must leave."""
        entry = self.get(key)
        return entry, None if entry is None else entry.version

    def watch(self, key: bytes, cursor: int | None, timeout: float) -> Change | None:
        event = self.client.watch(key, cursor, timeout)
        if event is None:
            return None  # the watch's own timeout: the caller checks its deadline
        if event.deleted:
            return Change(None, None)
        return Change(_v3_entry(event.kv), event.kv.mod_revision)

    def put(self, key: bytes, value: bytes) -> None:
        self.client.put(key, value)

    def put_if(
        self, key: bytes, value: bytes, version: int | None, *, ttl: int | None = None
    ) -> Swap:
        # The failed transaction read the key: no second request before retrying.
        written, revision, now = self.client.put_if(key, value, version, ttl=ttl)
        return Swap(written, revision, _v3_entry(now), True)

    def delete(self, key: bytes) -> bool:
        return self.client.delete(key) > 0

    def count_prefix(self, prefix: bytes) -> int:
        return self.client.count_prefix(prefix)


def _v3_entry(kv: KeyValue | None) -> Entry | None:
    if kv is None:
        return None
    return Entry(kv.key.decode("utf-8", "replace"), kv.value, kv.mod_revision)
