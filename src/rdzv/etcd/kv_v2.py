""":class:`~rdzv.etcd.kv.EtcdKV` over python-etcd: etcd's v2 API, keys as UTF-8 paths.

Directories are v2's own: :meth:`EtcdV2KV.append` makes an in-order key in
one, and a plain key where a directory belongs is reported as
:class:`~rdzv.etcd.kv.NotADirectory`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

import etcd
import urllib3.exceptions

from rdzv.etcd.kv import Change, Entry, HistoryLost, Listed, NotADirectory, Swap
from rdzv.etcd.polls import PollWatches

__all__ = ["EtcdV2KV", "v2_entry"]

# etcd v2 actions whose event node carries no value: the key is gone afterwards.
_REMOVE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})

RENEW_BELOW = 0.75
""":meth:`EtcdV2KV.renew` refreshes a key once less than this fraction of its TTL is left."""


class EtcdV2KV:
    """:class:`~rdzv.etcd.kv.EtcdKV` over a python-etcd client (or the failover client)."""

    def __init__(self, client: etcd.Client) -> None:
        self.client = client
        send = getattr(client, "send_watch", None)
        self._polls = PollWatches(
            None if send is None else lambda key, index: send(key.decode("utf-8"), index),
            (OSError, urllib3.exceptions.HTTPError, etcd.EtcdException),
        )

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

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """A read of each key: v2 has no request that reads several keys but a listing."""
        return [self.get(key) for key in keys]

    def get_if_changed(self, key: bytes, version: int) -> tuple[bool, Entry | None]:
        """Read the key, or answer from a watch left waiting since it was last read
        unchanged (see :mod:`rdzv.etcd.polls`)."""

        def read() -> tuple[bool, Entry | None, int | None]:
            entry, index = self.read_to_watch(key)
            return entry is None or entry.version != version, entry, index

        return self._polls.poll(key, version, read)

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

    def watch(
        self, key: bytes, cursor: int | None, timeout: float, *, keep: bool = False
    ) -> Change | None:
        # ``keep`` is moot: a v2 watch is one long-poll request.
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
            # etcd keeps only its last 1000 events: a thousand intents and heartbeats
            # push a quiet key's index out of them.
            raise HistoryLost from e
        if event.action in _REMOVE_ACTIONS or event.value is None:
            return Change(None, event.modifiedIndex)
        return Change(v2_entry(event), event.modifiedIndex)

    def release_watches(self) -> None:
        """Nothing to close: a v2 watch is one long-poll request."""

    def put(self, key: bytes, value: bytes, *, ttl: float | None = None) -> None:
        options: dict[str, Any] = {} if ttl is None else {"ttl": _seconds(ttl)}
        self._write(key.decode("utf-8"), value, **options)

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

    def renew(self, key: bytes, ttl: float) -> None:
        path = key.decode("utf-8")
        try:
            node = self.client.read(path)
        except etcd.EtcdKeyNotFound:
            return
        left = node.ttl  # whole seconds, rounded up: up to one more than is left
        if left is None or left - 1 >= RENEW_BELOW * ttl:
            return
        with contextlib.suppress(etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            # Written or refreshed since the read: renewed by that.
            self.client.refresh(path, _seconds(ttl), prevIndex=node.modifiedIndex)

    def append(self, directory: bytes, value: bytes, *, ttl: float) -> None:
        self._write(directory.decode("utf-8"), value, append=True, ttl=_seconds(ttl))

    def list_dir(self, directory: bytes) -> list[Listed]:
        """Parsed here rather than by python-etcd, whose result objects cost ten
        times more: at a thousand pending intents this read is most of a join."""
        client = self.client
        path = directory.decode("utf-8")
        try:
            response = client.api_execute(
                client.key_endpoint + path, client._MGET, params={"recursive": "true"}
            )
        except etcd.EtcdKeyNotFound:
            return []
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise _not_a_directory(e, path) from e  # a plain key above ``path``
        try:
            node = json.loads(response.data)["node"]
            if not node.get("dir"):
                raise NotADirectory(path)
            listed: list[Listed] = []
            pending = list(node.get("nodes", ()))
            while pending:
                child = pending.pop()
                if child.get("dir"):
                    pending.extend(child.get("nodes", ()))
                else:
                    value = child.get("value") or ""
                    listed.append(
                        Listed(child["key"].encode(), child["createdIndex"], value.encode())
                    )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise etcd.EtcdException(
                f"etcd answered a listing of {path} that is not etcd's: {e}"
            ) from e
        return listed

    def delete_dirs_below(self, parent: bytes, number: int) -> None:
        if number <= 0:
            return
        path = parent.decode("utf-8")
        try:
            listing = self.client.read(path)
        except etcd.EtcdKeyNotFound:
            return
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise _not_a_directory(e, path) from e
        for child in listing.children:
            name = child.key.rsplit("/", 1)[-1]
            # python-etcd lists an empty directory as its own child; and leave alone
            # whatever is not numbered (such as intents of an rdzv before segments).
            numbered = child.dir and child.key != listing.key and name.isascii() and name.isdigit()
            if not numbered or int(name) >= number:
                continue
            with contextlib.suppress(etcd.EtcdKeyNotFound):  # another node deleted it first
                self.client.delete(child.key, recursive=True, dir=True)

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

    def _write(self, path: str, value: bytes, **options: Any) -> None:
        try:
            self.client.write(path, value.decode("utf-8"), **options)
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise _not_a_directory(e, path) from e


def v2_entry(node: etcd.EtcdResult) -> Entry:
    """A python-etcd result as an :class:`~rdzv.etcd.kv.Entry` (value ``None``: a directory)."""
    value = None if node.dir or node.value is None else node.value.encode("utf-8")
    return Entry(node.key, value, node.modifiedIndex)


def _seconds(ttl: float) -> int:
    """A TTL as v2 takes it: whole seconds, at least one."""
    return max(1, math.ceil(ttl))


def _not_a_directory(error: etcd.EtcdException, path: str) -> NotADirectory:
    """The plain key that made a request on ``path`` fail: ``path`` or a directory above it.

    etcd names it in the error's cause (``<key>.intents`` above a segment, say).
    """
    cause = (error.payload or {}).get("cause")
    if isinstance(cause, str) and cause and (path + "/").startswith(cause.rstrip("/") + "/"):
        return NotADirectory(cause.rstrip("/"))
    return NotADirectory(path)
