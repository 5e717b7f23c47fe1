"""The ``Store`` operations over :class:`~rdzv.etcd.kv.EtcdKV`, shared by both etcd stores.

:class:`~rdzv.store.etcd.EtcdStore` (v2, torch's layout) and
:class:`~rdzv.store.etcd_v3.EtcdV3Store` (v3) subclass :class:`EtcdKVStore` and
say only how a store key and value stand in etcd and how client errors read.
A blocking ``get`` reads the one key it wants and, when it is absent, watches
that key from the read, so no write in between is missed and writes to other
keys cost it nothing. ``add``, ``append`` and ``compare_set`` are compare-and-set
loops on the key's version, retried with jittered backoff when another writer wins.
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import ClassVar

from rdzv.etcd.kv import Entry, EtcdKV, watch_until
from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreTimeoutError,
    to_bytes,
)
from rdzv.store.contention import Contention

__all__ = ["EtcdKVStore"]

_Update = Callable[[bytes | None], bytes | None]
"""The new value of a key from its current one (``None``: absent); ``None``: leave it."""


class EtcdKVStore(Store):
    """A ``Store`` under ``prefix`` in an :class:`~rdzv.etcd.kv.EtcdKV`; subclassed per API.

    Subclasses set :attr:`timeout_error` and the client errors to translate, and
    implement the key and value layout and :meth:`_store_error`.
    """

    timeout_error: ClassVar[type[StoreTimeoutError]]
    """Raised when a key does not appear within the timeout of ``get`` or ``wait``."""
    client_errors: ClassVar[tuple[type[Exception], ...]]
    """The client's errors, which :meth:`_store_error` turns into store errors."""
    _kind: ClassVar[str]
    """The class name that messages use."""

    def __init__(self, kv: EtcdKV, prefix: str, timeout: timedelta | None) -> None:
        super().__init__(DEFAULT_STORE_TIMEOUT)
        if timeout is not None:
            self.set_timeout(timeout)
        if not isinstance(prefix, str):
            raise TypeError(f"The etcd store prefix must be a str, got {type(prefix).__name__}.")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._kv = kv
        self._closed = False

    def set(self, key: str | bytes, value: str | bytes) -> None:
        data = self._encode_value(to_bytes(value))
        with self._translate(f"set key {key!r}"):
            self._kv.put(self._etcd_key(key), data)

    def get(self, key: str | bytes) -> bytes:
        return self._wait_values([key], self.timeout)[0]

    def multi_get(
        self, keys: Sequence[str | bytes], timeout: timedelta | None = None
    ) -> list[bytes]:
        """Return the values of ``keys``, all within ``timeout`` (default: the store's)."""
        return self._wait_values(keys, timeout or self.timeout)

    def wait(self, keys: Sequence[str | bytes], timeout: timedelta | None = None) -> None:
        self._wait_values(keys, timeout or self.timeout)

    def get_if_exists(self, key: str | bytes) -> bytes | None:
        with self._translate(f"read key {key!r}"):
            return self._value(self._kv.get(self._etcd_key(key)), key)

    def check(self, keys: Sequence[str | bytes]) -> bool:
        return all(value is not None for value in self._values_if_exist(keys))

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
            return self._kv.delete(self._etcd_key(key))

    def num_keys(self) -> int:
        """Return the number of keys under the prefix (one request)."""
        with self._translate("count keys"):
            return self._kv.count_prefix(self.prefix.encode("utf-8"))

    def wait_for_change(self, key: str | bytes, current: bytes | None, timeout: float) -> None:
        """Return once ``key`` no longer holds ``current`` or ``timeout`` seconds pass.

        Reads the key once, then watches it from that read: no polling, and no
        write in between is missed.

        Raises:
            EtcdStoreConnectionError: etcd cannot be reached.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._translate(f"watch key {key!r}"):
            self._watch_until(key, deadline, lambda value: value != current)

    def close(self) -> None:
        """Make every later operation raise ``StoreClosedError``; the client is left open."""
        self._closed = True

    @abstractmethod
    def _etcd_key(self, key: str | bytes) -> bytes:
        raise NotImplementedError

    @abstractmethod
    def _encode_value(self, data: bytes) -> bytes:
        raise NotImplementedError

    @abstractmethod
    def _decode_value(self, entry: Entry, key: str | bytes) -> bytes:
        raise NotImplementedError

    @abstractmethod
    def _store_error(self, what: str, error: Exception) -> Exception:
        raise NotImplementedError

    def _value(self, entry: Entry | None, key: str | bytes) -> bytes | None:
        return None if entry is None else self._decode_value(entry, key)

    def _values_if_exist(self, keys: Sequence[str | bytes]) -> Iterable[bytes | None]:
        """The values of ``keys`` (``None`` when absent), read lazily, one key at a time."""
        return (self.get_if_exists(key) for key in keys)

    def _wait_values(self, keys: Sequence[str | bytes], timeout: timedelta) -> list[bytes]:
        limit = timeout.total_seconds()
        deadline = time.monotonic() + limit
        # One read of them all first (one request on v3): in the usual case every key
        # is there already. A missing key is watched until it appears, then the keys
        # still missing are read again at once: keys written together (a multi_set)
        # cost one watch, not one each.
        values = list(self._values_if_exist(keys))
        while None in values:
            position = values.index(None)
            key = keys[position]
            with self._translate(f"read key {key!r}"):
                found, value = self._watch_until(key, deadline, lambda v: v is not None)
            values[position] = value
            absent = [i for i, v in enumerate(values) if v is None]
            if absent:
                again = self._values_if_exist([keys[i] for i in absent])
                for i, v in zip(absent, again, strict=True):
                    values[i] = v
            missing = [keys[i] for i, v in enumerate(values) if v is None]
            if not found and missing:
                raise self.timeout_error(
                    f"Timed out after {limit:g} s waiting for keys {missing!r} in the etcd store "
                    f"{self.prefix!r} at {self._kv.endpoint}; no node set them. Check that "
                    "the node expected to write them is running."
                )
        return [v for v in values if v is not None]

    def _watch_until(
        self, key: str | bytes, deadline: float, done: Callable[[bytes | None], bool]
    ) -> tuple[bool, bytes | None]:
        found, entry = watch_until(
            self._kv, self._etcd_key(key), deadline, lambda e: done(self._value(e, key))
        )
        return found, self._value(entry, key)

    def _read_modify_write(self, key: str | bytes, update: _Update, what: str) -> bytes | None:
        """Apply ``update`` atomically.

        Returns the value written, or, when ``update`` declined, the current value
        (``None``: the key is absent).
        """
        etcd_key = self._etcd_key(key)
        with self._translate(what):
            contention = Contention(what, self.timeout)
            entry = self._kv.get(etcd_key)
            while True:
                current = self._value(entry, key)
                new = update(current)
                if new is None:
                    return current
                version = None if entry is None else entry.version
                swap = self._kv.put_if(etcd_key, self._encode_value(new), version)
                if swap.written:
                    return new
                contention.lost()
                entry = swap.current if swap.current_known else self._kv.get(etcd_key)

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn client errors into store errors that say what failed and where."""
        if self._closed:
            raise StoreClosedError(f"Cannot {what}: this {self._kind} ({self.prefix!r}) is closed.")
        try:
            yield
        except self.client_errors as e:
            raise self._store_error(what, e) from e
