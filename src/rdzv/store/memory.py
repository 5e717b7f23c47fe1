"""A thread-safe in-process ``Store``, for one-process jobs, tests and the demo."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreTimeoutError,
    check_key,
    to_bytes,
)

__all__ = ["InMemoryStore"]


class InMemoryStore(Store):
    """A dict guarded by a condition variable: every write wakes the waiters."""

    def __init__(self, timeout: timedelta = DEFAULT_STORE_TIMEOUT) -> None:
        super().__init__(timeout)
        self._data: dict[str, bytes] = {}
        self._changed = threading.Condition()

    def set(self, key: str, value: str | bytes) -> None:
        data = to_bytes(value)
        with self._changed:
            self._data[check_key(key)] = data
            self._changed.notify_all()

    def get(self, key: str) -> bytes:
        check_key(key)
        self.wait([key])
        with self._changed:
            return self._data[key]

    def get_if_exists(self, key: str) -> bytes | None:
        with self._changed:
            return self._data.get(check_key(key))

    def add(self, key: str, amount: int) -> int:
        with self._changed:
            current = self._data.get(check_key(key), b"0")
            try:
                total = int(current) + int(amount)
            except ValueError as e:
                raise ValueError(
                    f"add() needs an integer at key {key!r}, but it holds {current[:32]!r}."
                ) from e
            self._data[key] = str(total).encode()
            self._changed.notify_all()
            return total

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        expected, desired = to_bytes(expected_value), to_bytes(desired_value)
        with self._changed:
            current = self._data.get(check_key(key))
            if current is None:
                if expected:
                    return expected
            elif current != expected:
                return current
            self._data[key] = desired
            self._changed.notify_all()
            return desired

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        keys = [check_key(k) for k in keys]
        limit = (timeout or self.timeout).total_seconds()
        deadline = time.monotonic() + limit
        with self._changed:
            while not all(k in self._data for k in keys):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = [k for k in keys if k not in self._data]
                    raise StoreTimeoutError(
                        f"Timed out after {limit:g} s waiting for keys {missing!r}; no node set "
                        "them. Check that the node expected to write them is running."
                    )
                self._changed.wait(remaining)

    def check(self, keys: Sequence[str]) -> bool:
        with self._changed:
            return all(check_key(k) in self._data for k in keys)

    def delete_key(self, key: str) -> bool:
        with self._changed:
            existed = self._data.pop(check_key(key), None) is not None
            if existed:
                self._changed.notify_all()
            return existed

    def num_keys(self) -> int:
        with self._changed:
            return len(self._data)

    def append(self, key: str, value: str | bytes) -> None:
        data = to_bytes(value)
        with self._changed:
            self._data[check_key(key)] = self._data.get(key, b"") + data
            self._changed.notify_all()

    def wait_for_change(self, key: str, current: bytes | None, timeout: float) -> bytes | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            while self._data.get(key) == current:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return self._data.get(key)
