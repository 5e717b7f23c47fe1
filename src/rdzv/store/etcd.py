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
from base64 import b64decode, b64encode
from datetime import timedelta
from typing import ClassVar

import etcd

from rdzv.etcd.kv import Entry, NotADirectory
from rdzv.etcd.kv_v2 import EtcdV2KV
from rdzv.etcd.store import EtcdKVStore
from rdzv.store.base import StoreError, StoreTimeoutError, key_to_bytes

__all__ = ["EtcdStore", "EtcdStoreConnectionError", "EtcdStoreError", "EtcdStoreTimeoutError"]


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


class EtcdStore(EtcdKVStore):
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

    timeout_error = EtcdStoreTimeoutError
    client_errors: ClassVar[tuple[type[Exception], ...]] = (etcd.EtcdException, NotADirectory)
    _kind = "EtcdStore"

    def __init__(
        self,
        etcd_client: etcd.Client,
        etcd_store_prefix: str,
        timeout: timedelta | None = None,
    ) -> None:
        super().__init__(EtcdV2KV(etcd_client), etcd_store_prefix, timeout)
        self.client = etcd_client

    def __repr__(self) -> str:
        return f"EtcdStore({self.client.base_uri}, prefix={self.prefix!r})"

    def _etcd_key(self, key: str | bytes) -> bytes:
        return (self.prefix + _encode(key_to_bytes(key))).encode("utf-8")

    def _encode_value(self, data: bytes) -> bytes:
        return _encode(data).encode("ascii")

    def _decode_value(self, entry: Entry, key: str | bytes) -> bytes:
        if entry.value is None:
            raise EtcdStoreError(
                f"etcd key {entry.key} of store key {key!r} is a directory, not a value: another "
                "key's base64 form continues it (see EtcdStore). Use keys that are not a "
                "prefix of one another, or write outside this store's prefix."
            )
        try:
            # As python-etcd's str, which b64decode reads as it always did.
            return b64decode(entry.value.decode("utf-8"), validate=True)
        except binascii.Error as e:
            raise EtcdStoreError(
                f"The value at etcd key {entry.key} (store key {key!r}) is not base64: it was "
                "not written by an EtcdStore. Keep other writers out of the store's prefix."
            ) from e

    def _store_error(self, what: str, error: Exception) -> Exception:
        """Turn python-etcd's exceptions into store errors that say what failed and where."""
        if isinstance(error, etcd.EtcdConnectionFailed):
            return EtcdStoreConnectionError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd at "
                f"{self.client.base_uri} did not answer ({error}). Check that etcd is running and "
                "that the endpoint, protocol and certificates are right."
            )
        if isinstance(error, (etcd.EtcdNotFile, etcd.EtcdNotDir, NotADirectory)):
            return EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd has a directory where "
                f"a value should be, or the reverse ({error}). Another key's base64 form continues "
                "this one (see EtcdStore), or something else writes under the prefix."
            )
        if isinstance(error, etcd.EtcdInsufficientPermissions):
            return EtcdStoreError(
                f"Could not {what} in the etcd store {self.prefix!r}: etcd at "
                f"{self.client.base_uri} denied it ({error}). Give the client a user with "
                "read-write access to the prefix."
            )
        return EtcdStoreError(
            f"Could not {what} in the etcd store {self.prefix!r} at {self.client.base_uri}: "
            f"{type(error).__name__}: {error}"
        )


def _encode(data: bytes) -> str:
    return b64encode(data).decode("ascii")
