"""Key-value stores handed to the nodes of a rendezvous.

The TCP, file and etcd stores are imported on first use: python-etcd costs about
0.1 s to import and asyncio 25 ms, which a job that uses neither should not pay.
"""

from typing import TYPE_CHECKING

from rdzv._lazy import lazy_getattr
from rdzv.store.base import (
    DEFAULT_STORE_TIMEOUT,
    Store,
    StoreClosedError,
    StoreError,
    StoreTimeoutError,
)
from rdzv.store.memory import InMemoryStore
from rdzv.store.prefix import PrefixStore

if TYPE_CHECKING:
    from rdzv.store.etcd import (
        EtcdStore,
        EtcdStoreConnectionError,
        EtcdStoreError,
        EtcdStoreTimeoutError,
    )
    from rdzv.store.file import FileStore
    from rdzv.store.tcp import TCPStore
    from rdzv.store.tcp_protocol import (
        StoreAuthenticationError,
        StoreConnectionError,
        StoreProtocolError,
    )
    from rdzv.store.tcp_server import TCPStoreServer

_LAZY = {
    "EtcdStore": "rdzv.store.etcd",
    "EtcdStoreConnectionError": "rdzv.store.etcd",
    "EtcdStoreError": "rdzv.store.etcd",
    "EtcdStoreTimeoutError": "rdzv.store.etcd",
    "FileStore": "rdzv.store.file",
    "StoreAuthenticationError": "rdzv.store.tcp_protocol",
    "StoreConnectionError": "rdzv.store.tcp_protocol",
    "StoreProtocolError": "rdzv.store.tcp_protocol",
    "TCPStore": "rdzv.store.tcp",
    "TCPStoreServer": "rdzv.store.tcp_server",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "DEFAULT_STORE_TIMEOUT",
    "EtcdStore",
    "EtcdStoreConnectionError",
    "EtcdStoreError",
    "EtcdStoreTimeoutError",
    "FileStore",
    "InMemoryStore",
    "PrefixStore",
    "Store",
    "StoreAuthenticationError",
    "StoreClosedError",
    "StoreConnectionError",
    "StoreError",
    "StoreProtocolError",
    "StoreTimeoutError",
    "TCPStore",
    "TCPStoreServer",
]
