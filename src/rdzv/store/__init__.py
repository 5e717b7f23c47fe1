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


# The TCP store pulls in asyncio (~25 ms), so it and the file store are imported on
# first use as well; this __getattr__ handles their names and defers the rest to the
# one above.
if TYPE_CHECKING:
    from rdzv.store.file import FileStore as FileStore
    from rdzv.store.tcp import TCPStore as TCPStore
    from rdzv.store.tcp_protocol import StoreAuthenticationError as StoreAuthenticationError
    from rdzv.store.tcp_protocol import StoreConnectionError as StoreConnectionError
    from rdzv.store.tcp_protocol import StoreProtocolError as StoreProtocolError
    from rdzv.store.tcp_server import TCPStoreServer as TCPStoreServer

_LAZY_LOCAL = {
    "FileStore": "rdzv.store.file",
    "StoreAuthenticationError": "rdzv.store.tcp_protocol",
    "StoreConnectionError": "rdzv.store.tcp_protocol",
    "StoreProtocolError": "rdzv.store.tcp_protocol",
    "TCPStore": "rdzv.store.tcp",
    "TCPStoreServer": "rdzv.store.tcp_server",
}
__all__ += list(_LAZY_LOCAL)
_getattr_before_local_stores = __getattr__


def __getattr__(name: str) -> object:  # type: ignore[no-redef]
    module = _LAZY_LOCAL.get(name)
    if module is None:
        return _getattr_before_local_stores(name)
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(module), name)
