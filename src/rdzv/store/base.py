"""The key-value ``Store`` interface that a completed rendezvous hands to its nodes.

The operations and their semantics are those of torch's c10d ``Store``: keys are
strings (the etcd stores take ``bytes`` keys too, as torch's ``EtcdStore``), values
are bytes (``str`` values are stored UTF-8 encoded), ``get`` and ``wait`` block
until the keys exist or the store's timeout passes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

__all__ = [
    "DEFAULT_STORE_TIMEOUT",
    "Digests",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreTimeoutError",
    "to_bytes",
    "value_digest",
]

_K = TypeVar("_K")

DEFAULT_STORE_TIMEOUT = timedelta(seconds=300)
"""How long blocking operations wait by default (torch's default too)."""


def value_digest(value: bytes) -> bytes:
    """16 bytes that name ``value`` for :meth:`Store.get_if_changed` (BLAKE2b)."""
    return hashlib.blake2b(value, digest_size=16).digest()


class Digests:
    """:func:`value_digest` of the value each key holds, hashed once per value.

    A value polled a thousand times (the rendezvous state, 40 KB at 1,024 nodes) is
    hashed once: a value is known by its identity, and a key's new value replaces
    the old one. The TCP store's server and the c10d backend share it.
    """

    def __init__(self) -> None:
        self._known: dict[object, tuple[bytes, bytes]] = {}

    def of(self, key: object, value: bytes) -> bytes:
        """The digest of ``value``, which ``key`` holds now."""
        known = self._known.get(key)
        if known is None or known[0] is not value:
            known = (value, value_digest(value))
            self._known[key] = known
        return known[1]

    def forget(self, key: object) -> None:
        """``key`` holds nothing any more: let go of its value."""
        self._known.pop(key, None)


class StoreError(RuntimeError):
    """A store operation failed (connection lost, refused, protocol error)."""


class StoreTimeoutError(StoreError, TimeoutError):
    """A blocking store operation did not finish within its timeout."""


class StoreClosedError(StoreError):
    """The store was closed by this process; no further operation is possible."""


def to_bytes(value: str | bytes | bytearray | memoryview) -> bytes:
    """Normalise a value given as ``str`` (UTF-8) or any bytes-like object to ``bytes``.

    Raises:
        TypeError: the value is neither text nor bytes.
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"A store value must be str or bytes, got {type(value).__name__}.")


def key_value_pairs(keys: Sequence[_K], values: Sequence[str | bytes]) -> list[tuple[_K, bytes]]:
    """``multi_set``'s arguments as (key, value bytes) pairs.

    Raises:
        ValueError: the counts differ.
    """
    if len(keys) != len(values):
        raise ValueError(
            f"multi_set got {len(keys)} keys but {len(values)} values; give one value per key."
        )
    return [(key, to_bytes(value)) for key, value in zip(keys, values, strict=True)]


def check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty string.

    Raises:
        TypeError: the key is not a string.
        ValueError: the key is empty.
    """
    if not isinstance(key, str):
        raise TypeError(f"A store key must be a str, got {type(key).__name__}.")
    if not key:
        raise ValueError("A store key must be a non-empty string.")
    return key


def key_to_bytes(key: object) -> bytes:
    """The bytes a ``str`` (UTF-8) or ``bytes`` key names, as torch's ``EtcdStore`` reads keys.

    The etcd stores take both, so ``"k"`` and ``b"k"`` are one key and a key need
    not be text.

    Raises:
        TypeError: the key is neither ``str`` nor ``bytes``.
        ValueError: the key is empty.
    """
    if isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, bytes):
        data = key
    else:
        raise TypeError(f"A store key must be str or bytes, got {type(key).__name__}.")
    if not data:
        raise ValueError("A store key must be a non-empty string.")
    return data


class Store:
    """A key-value store shared by the nodes of a rendezvous.

    Implementations are thread-safe. ``timeout`` bounds every blocking operation
    unless one is given to the call.

    As torch's ``Store``, the class is not abstract: a subclass implements the
    operations it uses, and calling one it lacks raises ``NotImplementedError``
    (a ``RuntimeError``, as torch's is) naming the class and the operation. The
    other methods (``multi_get``, ``multi_set``, ``append``, ``get_if_exists``,
    ``wait_for_change``) have defaults built on ``set``, ``get``, ``check`` and
    ``compare_set``.
    """

    _timeout: timedelta = DEFAULT_STORE_TIMEOUT
    """The default of a subclass that does not call ``Store.__init__``."""

    def __init__(self, timeout: timedelta = DEFAULT_STORE_TIMEOUT) -> None:
        self._timeout = timeout

    @property
    def timeout(self) -> timedelta:
        """How long ``get`` and ``wait`` block before raising ``StoreTimeoutError``."""
        return self._timeout

    def set_timeout(self, timeout: timedelta) -> None:
        """Change the default timeout of blocking operations."""
        if timeout <= timedelta(0):
            raise ValueError(f"The store timeout ({timeout}) must be positive.")
        self._timeout = timeout

    def _not_implemented(self, operation: str) -> NotImplementedError:
        name = type(self).__name__
        return NotImplementedError(
            f"{name}.{operation}() is not implemented: {name} subclasses rdzv.Store but does "
            f"not define {operation}(). Define it in {name}, or do not call it."
        )

    def set(self, key: str, value: str | bytes) -> None:
        """Set ``key`` to ``value``, replacing any previous value."""
        raise self._not_implemented("set")

    def get(self, key: str) -> bytes:
        """Return the value of ``key``, waiting until it exists.

        Raises:
            StoreTimeoutError: the key did not appear within the store's timeout.
        """
        raise self._not_implemented("get")

    def add(self, key: str, amount: int) -> int:
        """Atomically add ``amount`` to the integer at ``key`` (0 if absent); return the sum."""
        raise self._not_implemented("add")

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        """Set ``key`` to ``desired_value`` if it holds ``expected_value``; return the value now.

        As in c10d: a missing key counts as holding ``b""``, so ``expected_value=b""``
        creates it; a missing key with any other expectation is left missing and
        ``expected_value`` is returned.
        """
        raise self._not_implemented("compare_set")

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        """Block until every key in ``keys`` exists.

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout``
                (default: the store's timeout).
        """
        raise self._not_implemented("wait")

    def check(self, keys: Sequence[str]) -> bool:
        """Return whether every key in ``keys`` exists, without waiting."""
        raise self._not_implemented("check")

    def delete_key(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        raise self._not_implemented("delete_key")

    def num_keys(self) -> int:
        """Return the number of keys in the store."""
        raise self._not_implemented("num_keys")

    def multi_get(self, keys: Sequence[str], timeout: timedelta | None = None) -> list[bytes]:
        """Return the values of ``keys``, waiting until all exist.

        One call does what ``wait`` then ``multi_get`` do in torch's API, in one
        request on the stores that can (etcd, TCP, file).

        Raises:
            StoreTimeoutError: some key did not appear within ``timeout`` (default:
                the store's timeout).
        """
        if timeout is not None:
            self.wait(keys, timeout)
        return [self.get(key) for key in keys]

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        """Set each of ``keys`` to the value at the same position of ``values``."""
        for key, value in key_value_pairs(keys, values):
            self.set(key, value)

    def append(self, key: str, value: str | bytes) -> None:
        """Append ``value`` to the bytes at ``key`` (creating it when absent).

        The default reads and compare-and-sets until it wins; stores with a native
        append override it.
        """
        data = to_bytes(value)
        current = b""
        while True:
            result = self.compare_set(key, current, current + data)
            if result == current + data:
                return
            current = result

    def wait_for_change(self, key: str, current: bytes | None, timeout: float) -> bytes | None:
        """Return once the value of ``key`` differs from ``current`` or ``timeout`` seconds pass.

        ``current=None`` means the key is absent. Returns the new value when the
        store has it at hand (it spares the caller a read), else ``None``: timed
        out, the key is gone, or the store does not say. This never raises on
        timeout: the caller re-reads and decides. The default polls every 50 ms;
        stores that can be told of a change (TCP store, etcd watch) override it so
        that a waiting rendezvous wakes as soon as the state moves.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            value = self.get_if_exists(key)
            if value != current:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(0.05, remaining))

    def multi_get_if_exists(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, ``None`` for each that does not exist, without waiting.

        The default asks key by key; stores that can answer in one request override it.
        """
        return [self.get_if_exists(key) for key in keys]

    def get_if_changed(self, key: str, digest: bytes) -> tuple[bool, bytes | None]:
        """``(False, None)`` while ``key`` holds the value whose :func:`value_digest` is
        ``digest``; else ``(True, value)``, the value ``None`` when the key does not exist.

        For a caller that polls a large value which rarely changes (a launcher's
        ``num_nodes_waiting()`` reads the rendezvous state): the TCP store answers
        an unchanged value in a few bytes. The default reads the value whole.
        """
        value = self.get_if_exists(key)
        if value is not None and value_digest(value) == digest:
            return False, None
        return True, value

    def get_if_exists(self, key: str) -> bytes | None:
        """Return the value of ``key``, or ``None`` when it does not exist, without waiting."""
        if not self.check([key]):
            return None
        return self.get(key)

    def close(self) -> None:
        """Release connections and threads; the default holds none."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
