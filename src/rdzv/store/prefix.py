"""``PrefixStore``: a view of a store in which every key is put under a prefix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from rdzv.store.base import Store, check_key

__all__ = ["PrefixStore"]


class PrefixStore(Store):
    """Every key ``k`` is stored as ``f"{prefix}/{k}"`` in the underlying store (torch's rule).

    ``num_keys`` counts the whole underlying store, as in torch.
    """

    def __init__(self, prefix: str, store: Store) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"The prefix must be a str, got {type(prefix).__name__}.")
        super().__init__(store.timeout)
        self._prefix = prefix
        self._store = store

    @property
    def underlying_store(self) -> Store:
        """The store this view writes to."""
        return self._store

    @property
    def prefix(self) -> str:
        """The prefix put before every key."""
        return self._prefix

    @property
    def timeout(self) -> timedelta:
        return self._store.timeout

    def set_timeout(self, timeout: timedelta) -> None:
        self._store.set_timeout(timeout)

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{check_key(key)}"

    def set(self, key: str, value: str | bytes) -> None:
        self._store.set(self._key(key), value)

    def get(self, key: str) -> bytes:
        return self._store.get(self._key(key))

    def multi_get_if_exists(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._store.multi_get_if_exists([self._key(k) for k in keys])

    def get_if_changed(self, key: str, digest: bytes) -> tuple[bool, bytes | None]:
        return self._store.get_if_changed(self._key(key), digest)

    def get_if_exists(self, key: str) -> bytes | None:
        return self._store.get_if_exists(self._key(key))

    def add(self, key: str, amount: int) -> int:
        return self._store.add(self._key(key), amount)

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        return self._store.compare_set(self._key(key), expected_value, desired_value)

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        self._store.wait([self._key(k) for k in keys], timeout)

    def check(self, keys: Sequence[str]) -> bool:
        return self._store.check([self._key(k) for k in keys])

    def delete_key(self, key: str) -> bool:
        return self._store.delete_key(self._key(key))

    def num_keys(self) -> int:
        return self._store.num_keys()

    def multi_get(self, keys: Sequence[str], timeout: timedelta | None = None) -> list[bytes]:
        return self._store.multi_get([self._key(k) for k in keys], timeout)

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        self._store.multi_set([self._key(k) for k in keys], values)

    def append(self, key: str, value: str | bytes) -> None:
        self._store.append(self._key(key), value)

    def wait_for_change(self, key: str, current: bytes | None, timeout: float) -> bytes | None:
        return self._store.wait_for_change(self._key(key), current, timeout)

    def close(self) -> None:
        """Does nothing: the underlying store belongs to whoever made it."""
