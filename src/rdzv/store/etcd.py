"""``EtcdStore``: the ``Store`` operations over the etcd v2 API.

Keys and values are laid out as torch's ``EtcdStore`` lays them out, so a torch
store and an rdzv store over the same prefix share their keys: key ``k`` lives at
the etcd key ``prefix + "/" + base64(k)``, where a ``str`` key is taken as its UTF-8
bytes and a ``bytes`` key as it is (``"k"`` and ``b"k"`` are one key), and its value
is ``base64(value)``. A key that never appears makes ``get`` and ``wait`` raise
:class:`EtcdStoreTimeoutError`, a ``LookupError`` as torch's store raises.

Unlike torch's store, a blocking ``get`` reads the one key it wants and, when it
is absent, watches that key from the index of the read, so neither the number of
keys under the prefix nor the writes to other keys cost it anything.
"""

from __future__ import annotations

import binascii
import contextlib
import time
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import etcd

from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreError,
    StoreTimeoutError,
    key_to_bytes,
    to_bytes,
)
from rdzv.store.contention import Contention

__all__ = ["EtcdStore", "EtcdStoreConnectionError", "EtcdStoreError", "EtcdStoreTimeoutError"]

# etcd v2 actions whose event node carries no value: the key is gone afterwards.
_REMOVE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})

_Update = Callable[[bytes | None], bytes]
"""Computes the new value of a key from its current one (``None``: absent)."""


class EtcdStoreError(StoreError):
    """etcd refused an operation of an ``EtcdStore``, or holds a value it cannot read."""


class EtcdStoreConnectionError(EtcdStoreError, ConnectionError):
    """etcd could not be reached; the message names the endpoint."""


class EtcdStoreTimeoutError(StoreTimeoutError, LookupError):
    """A key of an etcd store did not appear within the timeout of ``get`` or ``wait``.

    A ``StoreTimeoutError`` (so a ``RuntimeError`` and a ``TimeoutError``) like every
    store's, and also a ``LookupError``: torch's ``EtcdStore`` raises ``LookupError``
    there, and code written for it catches that. It is not an ``EtcdStoreError``:
    etcd did nothing wrong, no node wrote the key. Both etcd stores raise it.
    """


def _encode(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def _error_index(error: etcd.EtcdException) -> int | None:
    # etcd v2 reports its current index in every error body; a watch from the next
    # index sees every write that happened after the failed read.
    index = (error.payload or {}).get("index")
    return index if isinstance(index, int) else None


class EtcdStore(Store):
    """A ``Store`` kept in etcd under ``etcd_store_prefix``, compatible with torch's ``EtcdStore``.

    Args:
        etcd_client: a python-etcd client (v2 API). The store does not close it.
        etcd_store_prefix: etcd directory of the keys; a trailing ``/`` is added.
        timeout: how long ``get`` and ``wait`` block (default: 300 s, as c10d).

    Every request other than a blocking wait is bounded by the client's
    ``read_timeout``. ``add``, ``append`` and ``compare_set`` are compare-and-swap
    loops (etcd v2 has no atomic update): many writers of one key queue, each
    loss paced by a random pause. Keys are ``str`` or ``bytes`` (see the module).
    Errors: :class:`EtcdStoreTimeoutError` (a ``LookupError``) when a key does not
    appear within the timeout of ``get``, ``multi_get`` or ``wait``,
    ``StoreTimeoutError`` when such a loop keeps losing for the whole timeout,
    ``EtcdStoreConnectionError`` when etcd cannot be reached, ``EtcdStoreError``
    when etcd refuses an operation or holds a value that is not base64.

    Torch's key encoding puts a ``/`` of the base64 alphabet into the etcd path, so
    a key of 3n bytes whose last byte is ``?`` (or DEL, or ``\\xbf`` inside UTF-8)
    names an etcd *file* that a longer key starting with it would need as a
    *directory*; writing both raises ``EtcdStoreError``, as both fail in torch.
    """

    def __init__(
        self,
        etcd_client: etcd.Client,
        etcd_store_prefix: str,
        timeout: timedelta | None = None,
    ) -> None:
        super().__init__(DEFAULT_STORE_TIMEOUT)
        if timeout is not None:
            self.set_timeout(timeout)
        if not isinstance(etcd_store_prefix, str):
            raise TypeError(
                f"The etcd store prefix must be a str, got {type(etcd_store_prefix).__name__}."
            )
        self.client = etcd_client
        self.prefix = (
            etcd_store_prefix if etcd_store_prefix.endswith("/") else etcd_store_prefix + "/"
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdStore({self.client.base_uri}, prefix={self.prefix!r})"

    def set(self, key: str | bytes, value: str | bytes) -> None:
        data = _encode(to_bytes(value))
        with self._translate(f"set key {key!r}"):
            self.client.write(self._etcd_key(key), data)

    def get(self, key: str | bytes) -> bytes:
        return self._wait_values([key], self.timeout)[0]

    def multi_get(self, keys: Sequence[str | bytes]) -> list[bytes]:
        """Return the values of ``keys``, all within one store timeout."""
        return self._wait_values(keys, self.timeout)

    def wait(self, keys: Sequence[str | bytes], timeout: timedelta | None = None) -> None:
        self._wait_values(keys, timeout or self.timeout)

    def get_if_exists(self, key: str | bytes) -> bytes | None:
        etcd_key = self._etcd_key(key)
        with self._translate(f"read key {key!r}"):
            try:
                node = self.client.read(etcd_key)
            except etcd.EtcdKeyNotFound:
                return None
            return self._decode(node, key)

    def check(self, keys: Sequence[str | bytes]) -> bool:
        return all(self.get_if_exists(key) is not None for key in keys)

    def add(self, key: str | bytes, amount: int) -> int:
        amount = int(amount)

        def update(current: bytes | None) -> bytes:
            if current is None:
                return str(amount).encode()
            try:
                return str(int(current) + amount).encode()
            except ValueError as e:
                raise ValueError(
                    f"add() needs an integer at key {key!r}, but it holds {current[:32]!r}."
                ) from e

        return int(self._read_modify_write(key, update, f"add to key {key!r}"))

    def compare_set(
        self, key: str | bytes, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        expected, desired = to_bytes(expected_value), to_bytes(desired_value)
        etcd_key = self._etcd_key(key)
        what = f"compare-and-set key {key!r}"
        with self._translate(what):
            contention = Contention(what, self.timeout)
            while True:
                try:
                    node = self.client.read(etcd_key)
                except etcd.EtcdKeyNotFound:
                    if expected:
                        return expected
                    if self._create(etcd_key, desired):
                        return desired
                else:
                    current = self._decode(node, key)
                    if current != expected:
                        return current
                    if self._swap(etcd_key, desired, node.modifiedIndex):
                        return desired
                contention.lost()

    def append(self, key: str | bytes, value: str | bytes) -> None:
        data = to_bytes(value)
        self._read_modify_write(key, lambda current: (current or b"") + data, f"append to {key!r}")

    def delete_key(self, key: str | bytes) -> bool:
        etcd_key = self._etcd_key(key)
        with self._translate(f"delete key {key!r}"):
            try:
                self.client.delete(etcd_key)
            except etcd.EtcdKeyNotFound:
                return False
            return True

    def num_keys(self) -> int:
        """Return the number of keys under the prefix (one recursive read)."""
        with self._translate("count keys"):
            try:
                root = self.client.read(self.prefix, recursive=True)
            except etcd.EtcdKeyNotFound:
                return 0
            # leaves also yields empty directories (the prefix itself when empty,
            # and directories that base64 keys with a "/" left behind).
            return sum(1 for node in root.leaves if not node.dir)

    def wait_for_change(self, key: str | bytes, current: bytes | None, timeout: float) -> None:
        """Return once ``key`` no longer holds ``current`` or ``timeout`` seconds pass.

        Reads the key once, then watches it from the index of that read: no polling,
        and no write in between is missed.

        Raises:
            EtcdStoreConnectionError: etcd cannot be reached.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._translate(f"watch key {key!r}"):
            self._watch_until(key, deadline, lambda value: value != current)

    def close(self) -> None:
        """Make every later operation raise ``StoreClosedError``; the client is left open."""
        self._closed = True

    def _etcd_key(self, key: str | bytes) -> str:
        return self.prefix + _encode(key_to_bytes(key))

    def _decode(self, node: etcd.EtcdResult, key: str | bytes) -> bytes:
        if node.dir or node.value is None:
            raise EtcdStoreError(
                f"etcd key {node.key} of store key {key!r} is a directory, not a value: another "
                "key's base64 form continues it (see EtcdStore). Use keys that are not a "
                "prefix of one another, or write outside this store's prefix."
            )
        try:
            return b64decode(node.value, validate=True)
        except binascii.Error as e:
            raise EtcdStoreError(
                f"The value at etcd key {node.key} (store key {key!r}) is not base64: it was "
                "not written by an EtcdStore. Keep other writers out of the store's prefix."
            ) from e

    def _event_value(self, event: etcd.EtcdResult, key: str | bytes) -> bytes | None:
        if event.action in _REMOVE_ACTIONS or event.value is None:
            return None
        return self._decode(event, key)

    def _read_with_index(self, etcd_key: str, key: str | bytes) -> tuple[bytes | None, int]:
        """Read a key: its value (``None`` if absent) and the etcd index to watch after.

        The index is -1 when etcd did not report one (the caller then polls).
        """
        try:
            node = self.client.read(etcd_key)
        except etcd.EtcdKeyNotFound as e:
            index = _error_index(e)
            return None, -1 if index is None else index
        # X-Etcd-Index, not modifiedIndex: etcd keeps only the last 1000 events,
        # and a key written long ago would make a watch from its modifiedIndex
        # fail with "index cleared".
        return self._decode(node, key), node.etcd_index

    def _wait_values(self, keys: Sequence[str | bytes], timeout: timedelta) -> list[bytes]:
        limit = timeout.total_seconds()
        deadline = time.monotonic() + limit
        values: list[bytes] = []
        for position, key in enumerate(keys):
            with self._translate(f"read key {key!r}"):
                found, value = self._watch_until(key, deadline, lambda v: v is not None)
            if not found or value is None:
                missing = [key] + [k for k in keys[position + 1 :] if self.get_if_exists(k) is None]
                raise EtcdStoreTimeoutError(
                    f"Timed out after {limit:g} s waiting for keys {missing!r} in the etcd store "
                    f"{self.prefix!r} at {self.client.base_uri}; no node set them. Check that "
                    "the node expected to write them is running."
                )
            values.append(value)
        return values

    def _watch_until(
        self, key: str | bytes, deadline: float, done: Callable[[bytes | None], bool]
    ) -> tuple[bool, bytes | None]:
        """Wait until the value of ``key`` (``None``: absent) satisfies ``done``.

        Returns whether it did before ``deadline``, and that value. Reads once, then
        watches the key from the index of the read, so no write in between is
        missed; re-reads only when etcd has dropped that index from its history.
        """
        etcd_key = self._etcd_key(key)
        index: int | None = None
        value: bytes | None = None
        while True:
            if index is None:
                value, index = self._read_with_index(etcd_key, key)
                if done(value):
                    return True, value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, value
            if index < 0:
                time.sleep(min(0.05, remaining))
                index = None
                continue
            try:
                event = self.client.read(
                    etcd_key, wait=True, waitIndex=index + 1, timeout=remaining
                )
            except etcd.EtcdWatchTimedOut:
                continue
            except etcd.EtcdEventIndexCleared:
                index = None
                continue
            value = self._event_value(event, key)
            if done(value):
                return True, value
            index = event.modifiedIndex

    def _create(self, etcd_key: str, data: bytes) -> bool:
        try:
            self.client.write(etcd_key, _encode(data), prevExist=False)
        except etcd.EtcdAlreadyExist:
            return False
        return True

    def _swap(self, etcd_key: str, data: bytes, modified_index: int) -> bool:
        # prevIndex rather than prevValue: etcd rejects an empty prevValue, and
        # the index also catches a write of the same value in between.
        try:
            self.client.write(etcd_key, _encode(data), prevIndex=modified_index)
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return False
        return True

    def _read_modify_write(self, key: str | bytes, update: _Update, what: str) -> bytes:
        etcd_key = self._etcd_key(key)
        with self._translate(what):
            contention = Contention(what, self.timeout)
            while True:
                try:
                    node = self.client.read(etcd_key)
                except etcd.EtcdKeyNotFound:
                    new = update(None)
                    if self._create(etcd_key, new):
                        return new
                else:
                    new = update(self._decode(node, key))
                    if self._swap(etcd_key, new, node.modifiedIndex):
                        return new
                contention.lost()

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn python-etcd's exceptions into store errors that say what failed and where."""
        if self._closed:
            raise StoreClosedError(f"Cannot {what}: this EtcdStore ({self.prefix!r}) is closed.")
        try:
            yield
        except etcd.EtcdConnectionFailed as e:
            raise EtcdStoreConnectionError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd at "
                f"{self.client.base_uri} did not answer ({e}). Check that etcd is running and "
                "that the endpoint, protocol and certificates are right."
            ) from e
        except (etcd.EtcdNotFile, etcd.EtcdNotDir) as e:
            raise EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd has a directory where "
                f"a value should be, or the reverse ({e}). Another key's base64 form continues "
                "this one (see EtcdStore), or something else writes under the prefix."
            ) from e
        except etcd.EtcdInsufficientPermissions as e:
            raise EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd at "
                f"{self.client.base_uri} denied it ({e}). Give the client a user with "
                "read-write access to the prefix."
            ) from e
        except etcd.EtcdException as e:
            raise EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r} at {self.client.base_uri}: "
                f"{type(e).__name__}: {e}"
            ) from e
