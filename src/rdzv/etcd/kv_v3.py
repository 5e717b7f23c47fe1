""":class:`~rdzv.etcd.kv.EtcdKV` over :class:`~rdzv.etcd.v3_client.EtcdV3Client`: etcd's v3 API.

A directory is the prefix ``<directory>/``; :meth:`EtcdV3KV.append` writes a key
with a random name there, unique without a read, which its create revision orders.
"""

from __future__ import annotations

import uuid

from rdzv.etcd.kv import Change, Entry, Listed, Swap
from rdzv.etcd.v3_client import EtcdV3Client
from rdzv.etcd.v3_wire import KeyValue

__all__ = ["EtcdV3KV"]


class EtcdV3KV:
    """:class:`~rdzv.etcd.kv.EtcdKV` over an :class:`~rdzv.etcd.v3_client.EtcdV3Client`."""

    def __init__(self, client: EtcdV3Client, shared: str | None = None) -> None:
        self.client = client
        self.shared = shared
        """The scope whose writers share leases (:mod:`rdzv.etcd.v3_leases`), if any."""

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    @property
    def read_timeout(self) -> float:
        return float(self.client.read_timeout)

    def get(self, key: bytes) -> Entry | None:
        kv, _ = self.client.get(key)
        return _v3_entry(kv)

    def get_if_changed(self, key: bytes, version: int) -> tuple[bool, Entry | None]:
        changed, kv = self.client.get_if_changed(key, version)
        return changed, _v3_entry(kv)

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """The keys (``None`` for each absent one) in one transaction per 128 keys."""
        return [_v3_entry(kv) for kv in self.client.get_many(keys)]

    def read_to_watch(self, key: bytes) -> tuple[Entry | None, int | None]:
        """The key and its mod revision (``None``: absent), the version a watch must leave."""
        entry = self.get(key)
        return entry, None if entry is None else entry.version

    def watch(
        self, key: bytes, cursor: int | None, timeout: float, *, keep: bool = False
    ) -> Change | None:
        event = self.client.watch(key, cursor, timeout, keep=keep)
        if event is None:
            return None  # the watch's own timeout: the caller checks its deadline
        if event.deleted:
            return Change(None, None)
        return Change(_v3_entry(event.kv), event.kv.mod_revision)

    def release_watches(self) -> None:
        self.client.release_watches()

    def put(self, key: bytes, value: bytes, *, ttl: float | None = None) -> None:
        self.client.put(key, value, ttl=ttl, shared=self.shared)

    def put_if(
        self, key: bytes, value: bytes, version: int | None, *, ttl: int | None = None
    ) -> Swap:
        # The failed transaction read the key: no second request before retrying.
        written, revision, now = self.client.put_if(
            key, value, version, ttl=ttl, shared=self.shared
        )
        return Swap(written, revision, _v3_entry(now), True)

    def renew(self, key: bytes, ttl: float) -> None:
        self.client.keep_alive(key)

    def append(self, directory: bytes, value: bytes, *, ttl: float) -> None:
        key = directory + b"/" + uuid.uuid4().hex.encode()
        self.client.put(key, value, ttl=ttl, shared=self.shared)

    def list_dir(self, directory: bytes) -> list[Listed]:
        kvs = self.client.get_prefix(directory + b"/")
        return [Listed(kv.key, kv.create_revision, kv.value) for kv in kvs]

    def delete_dirs_below(self, parent: bytes, number: int) -> None:
        if number <= 0:
            return
        last = parent + b"/" + str(number - 1).encode() + b"/"
        # Counted first (a read) so that the many nodes that see the same full
        # directory do not each send a delete through raft.
        if self.client.count_prefix(last):
            self.client.delete(last, prefix=True)

    def delete(self, key: bytes) -> bool:
        return self.client.delete(key) > 0

    def count_prefix(self, prefix: bytes) -> int:
        return self.client.count_prefix(prefix)


def _v3_entry(kv: KeyValue | None) -> Entry | None:
    if kv is None:
        return None
    return Entry(kv.key.decode("utf-8", "replace"), kv.value, kv.mod_revision)
