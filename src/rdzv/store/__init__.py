"""Key-value stores handed to the nodes of a rendezvous."""

from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreError,
    StoreTimeoutError,
)
from rdzv.store.memory import InMemoryStore
from rdzv.store.prefix import PrefixStore

__all__ = [
    "DEFAULT_STORE_TIMEOUT",
    "InMemoryStore",
    "PrefixStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreTimeoutError",
]

# EtcdStore needs python-etcd (urllib3, dnspython: ~0.1 s to import), so it is
# imported when first used; TYPE_CHECKING gives type checkers the real classes.
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdzv.store.etcd import EtcdStore as EtcdStore
    from rdzv.store.etcd import EtcdStoreConnectionError as EtcdStoreConnectionError
    from rdzv.store.etcd import EtcdStoreError as EtcdStoreError

_LAZY_ETCD = ("EtcdStore", "EtcdStoreConnectionError", "EtcdStoreError")
__all__ += _LAZY_ETCD  # noqa: PLE0605


def __getattr__(name: str) -> object:
    if name in _LAZY_ETCD:
        from rdzv.store import etcd as etcd_store_module  # noqa: PLC0415

        return getattr(etcd_store_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
