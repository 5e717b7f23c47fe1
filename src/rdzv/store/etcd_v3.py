"""``EtcdV3Store``: the ``Store`` operations over the etcd v3 API (etcd 3.4 to 3.6 and later).

The v3 key space is flat and takes any bytes, so store key ``k`` lives at the
etcd key ``prefix + "/" + k``, a ``str`` key as its UTF-8 bytes and a ``bytes`` key
as it is (as :class:`~rdzv.store.etcd.EtcdStore` reads keys), and holds the
value's bytes as they are:
``etcdctl get --prefix <prefix>/`` shows them. (torch has no v3 store, so there is
no layout of its to share; :class:`rdzv.store.etcd.EtcdStore` keeps torch's v2 one.)

A blocking ``get`` reads the one key it wants and, when it is absent, watches
that key for any version other than the one read, so no write in between is
missed and writes to other keys cost it nothing. ``add``, ``append`` and ``compare_set`` are
transactions on the key's mod revision, retried with jittered backoff when
another writer wins.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

from rdzv.etcd.v3_client import EtcdV3Client, EtcdV3ConnectionError, EtcdV3Error
from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    key_to_bytes,
    to_bytes,
)
from rdzv.store.contention import Contention
from rdzv.store.etcd import EtcdStoreConnectionError, EtcdStoreError, EtcdStoreTimeoutError

__all__ = ["EtcdStoreConnectionError", "EtcdStoreError", "EtcdStoreTimeoutError", "EtcdV3Store"]

_Update = Callable[[bytes | None], bytes | None]
"""The new value of a key from its current one (``None``: absent); ``None``: leave it."""


class EtcdV3Store(Store):
    """A ``Store`` kept in etcd's v3 key space under ``prefix``.

    Args:
        client: the :class:`~rdzv.etcd.v3_client.EtcdV3Client` to use; the store
            does not close it.
        prefix: where the keys live; a trailing ``/`` is added.
        timeout: how long ``get`` and ``wait`` block (default: 300 s, as c10d).

    Every request other than a blocking wait is bounded by the client's
    ``read_timeout``. Keys are ``str`` or ``bytes``. Errors are those of
    :class:`~rdzv.store.etcd.EtcdStore`: ``EtcdStoreTimeoutError`` (a ``StoreTimeoutError``
    and a ``LookupError``) when a key does not appear within the timeout of ``get``
    or ``wait``, ``StoreTimeoutError`` when a read-modify-write keeps losing for the
    whole timeout, ``EtcdStoreConnectionError`` when etcd cannot be reached,
    ``EtcdStoreError`` when etcd refuses an operation.
    """

    def __init__(self, client: EtcdV3Client, prefix: str, timeout: timedelta | None = None) -> None:
        super().__init__(DEFAULT_STORE_TIMEOUT)
        if timeout is not None:
            self.set_timeout(timeout)
        if not isinstance(prefix, str):
            raise TypeError(f"The etcd store prefix must be a str, got {type(prefix).__name__}.")
        self.client = client
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._raw_prefix = self.prefix.encode("utf-8")
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdV3Store({self.client.endpoint}, prefix={self.prefix!r})"

    def set(self, key: str | bytes, value: str | bytes) -> None:
        data = to_bytes(value)
        with self._translate(f"set key {key!r}"):
            self.client.put(self._etcd_key(key), data)

    def get(self, key: str | bytes) -> bytes:
        return self._wait_values([key], self.timeout)[0]

    def multi_get(self, keys: Sequence[str | bytes]) -> list[bytes]:
        """Return the values of ``keys``, all within one store timeout."""
        return self._wait_values(keys, self.timeout)

    def wait(self, keys: Sequence[str | bytes], timeout: timedelta | None = None) -> None:
        self._wait_values(keys, timeout or self.timeout)

    def get_if_exists(self, key: str | bytes) -> bytes | None:
        with self._translate(f"read key {key!r}"):
            kv, _ = self.client.get(self._etcd_key(key))
        return None if kv is None else kv.value

    def multi_get_if_exists(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        """The values of ``keys`` (``None`` when absent) in one transaction per 128 keys."""
        etcd_keys = [self._etcd_key(key) for key in keys]
        with self._translate(f"read {len(keys)} keys"):
            kvs = self.client.get_many(etcd_keys)
        return [None if kv is None else kv.value for kv in kvs]

    def check(self, keys: Sequence[str | bytes]) -> bool:
        return all(value is not None for value in self.multi_get_if_exists(keys))

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

        result = self._read_modify_write(key, update, f"add to key {key!r}")
        assert result is not None  # update never declines
        return int(result)

    def compare_set(
        self, key: str | bytes, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        expected, desired = to_bytes(expected_value), to_bytes(desired_value)

        def update(current: bytes | None) -> bytes | None:
            # c10d: a missing key counts as b"", which only an empty expectation matches.
            return desired if (b"" if current is None else current) == expected else None

        result = self._read_modify_write(key, update, f"compare-and-set key {key!r}")
        return expected if result is None else result

    def append(self, key: str | bytes, value: str | bytes) -> None:
        data = to_bytes(value)
        self._read_modify_write(key, lambda current: (current or b"") + data, f"append to {key!r}")

    def delete_key(self, key: str | bytes) -> bool:
        with self._translate(f"delete key {key!r}"):
            return self.client.delete(self._etcd_key(key)) > 0

    def num_keys(self) -> int:
        """Return the number of keys under the prefix (one counting range)."""
        with self._translate("count keys"):
            return self.client.count_prefix(self._raw_prefix)

    def wait_for_change(self, key: str | bytes, current: bytes | None, timeout: float) -> None:
        """Return once ``key`` no longer holds ``current`` or ``timeout`` seconds pass.

        Raises:
            EtcdStoreConnectionError: etcd cannot be reached.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._translate(f"watch key {key!r}"):
            self._watch_until(key, deadline, lambda value: value != current)

    def close(self) -> None:
        """Make every later operation raise ``StoreClosedError``; the client is left open."""
        self._closed = True

    def _etcd_key(self, key: str | bytes) -> bytes:
        return self._raw_prefix + key_to_bytes(key)

    def _wait_values(self, keys: Sequence[str | bytes], timeout: timedelta) -> list[bytes]:
        limit = timeout.total_seconds()
        deadline = time.monotonic() + limit
        values: list[bytes] = []
        for position, key in enumerate(keys):
            with self._translate(f"read key {key!r}"):
                found, value = self._watch_until(key, deadline, lambda v: v is not None)
            if not found or value is None:
                rest = list(keys[position + 1 :])
                missing = [key] + [
                    k
                    for k, v in zip(rest, self.multi_get_if_exists(rest), strict=True)
                    if v is None
                ]
                raise EtcdStoreTimeoutError(
                    f"Timed out after {limit:g} s waiting for keys {missing!r} in the etcd store "
                    f"{self.prefix!r} at {self.client.endpoint}; no node set them. Check that "
                    "the node expected to write them is running."
                )
            values.append(value)
        return values

    def _watch_until(
        self, key: str | bytes, deadline: float, done: Callable[[bytes | None], bool]
    ) -> tuple[bool, bytes | None]:
        """Wait until the value of ``key`` (``None``: absent) satisfies ``done``.

        Returns whether it did before ``deadline``, and that value. Reads once, then
        watches for versions other than the one read, so no write is missed.
        """
        etcd_key = self._etcd_key(key)
        kv, _ = self.client.get(etcd_key)
        value = None if kv is None else kv.value
        seen = None if kv is None else kv.mod_revision
        while True:
            if done(value):
                return True, value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, value
            event = self.client.watch(etcd_key, seen, remaining)
            if event is None:
                continue  # the watch's own timeout: the loop checks the deadline
            value = None if event.deleted else event.kv.value
            seen = None if event.deleted else event.kv.mod_revision

    def _read_modify_write(self, key: str | bytes, update: _Update, what: str) -> bytes | None:
        """Apply ``update`` atomically.

        Returns the value written, or, when ``update`` declined, the current value
        (``None``: the key is absent).
        """
        etcd_key = self._etcd_key(key)
        with self._translate(what):
            kv, _ = self.client.get(etcd_key)
            contention = Contention(what, self.timeout)
            while True:
                current = None if kv is None else kv.value
                new = update(current)
                if new is None:
                    return current
                expected = None if kv is None else kv.mod_revision
                written, _, now = self.client.put_if(etcd_key, new, expected)
                if written:
                    return new
                # The failed transaction read the key: no second request before retrying.
                kv = now
                contention.lost()

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn client errors into store errors that say what failed and where."""
        if self._closed:
            raise StoreClosedError(f"Cannot {what}: this EtcdV3Store ({self.prefix!r}) is closed.")
        try:
            yield
        except EtcdV3ConnectionError as e:
            raise EtcdStoreConnectionError(
                f"Could not {what} in the etcd store {self.prefix!r}: {e}. Check that etcd is "
                "running and that the endpoint, protocol and certificates are right."
            ) from e
        except EtcdV3Error as e:
            raise EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r}: {e}. If etcd denied it, "
                "give the client a user with read-write access to the prefix."
            ) from e
