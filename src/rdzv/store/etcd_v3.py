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

from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

from rdzv.etcd.kv import Entry
from rdzv.etcd.kv_v3 import EtcdV3KV
from rdzv.etcd.store import EtcdKVStore
from rdzv.etcd.v3_client import EtcdV3Client, EtcdV3ConnectionError, EtcdV3Error
from rdzv.store.base import key_to_bytes, key_value_pairs
from rdzv.store.etcd import EtcdStoreConnectionError, EtcdStoreError, EtcdStoreTimeoutError

__all__ = ["EtcdStoreConnectionError", "EtcdStoreError", "EtcdStoreTimeoutError", "EtcdV3Store"]


class EtcdV3Store(EtcdKVStore):
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

    timeout_error = EtcdStoreTimeoutError
    client_errors: ClassVar[tuple[type[Exception], ...]] = (EtcdV3Error,)
    _kind = "EtcdV3Store"

    def __init__(self, client: EtcdV3Client, prefix: str, timeout: timedelta | None = None) -> None:
        self._v3 = EtcdV3KV(client)
        super().__init__(self._v3, prefix, timeout)
        self.client = client

    def __repr__(self) -> str:
        return f"EtcdV3Store({self.client.endpoint}, prefix={self.prefix!r})"

    def multi_get_if_exists(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        """The values of ``keys`` (``None`` when absent) in one transaction per 128 keys."""
        etcd_keys = [self._etcd_key(key) for key in keys]
        with self._translate(f"read {len(keys)} keys"):
            entries = self._v3.get_many(etcd_keys)
        return [None if entry is None else entry.value for entry in entries]

    def multi_set(self, keys: Sequence[str | bytes], values: Sequence[str | bytes]) -> None:
        """Set every key to its value in one transaction per 128 keys.

        Raises:
            ValueError: the counts differ.
        """
        items = [(self._etcd_key(k), v) for k, v in key_value_pairs(keys, values)]
        with self._translate(f"set {len(keys)} keys"):
            self.client.put_many(items)

    def _values_if_exist(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        return self.multi_get_if_exists(keys)

    def _etcd_key(self, key: str | bytes) -> bytes:
        return self.prefix.encode("utf-8") + key_to_bytes(key)

    def _encode_value(self, data: bytes) -> bytes:
        return data

    def _decode_value(self, entry: Entry, key: str | bytes) -> bytes:
        assert entry.value is not None  # v3 has no directories
        return entry.value

    def _store_error(self, what: str, error: Exception) -> Exception:
        """Turn client errors into store errors that say what failed and where."""
        if isinstance(error, EtcdV3ConnectionError):
            return EtcdStoreConnectionError(
                f"Could not {what} in the etcd store {self.prefix!r}: {error}. Check that etcd is "
                "running and that the endpoint, protocol and certificates are right."
            )
        return EtcdStoreError(
            f"Could not {what} in the etcd store {self.prefix!r}: {error}. If etcd denied it, "
            "give the client a user with read-write access to the prefix."
        )
