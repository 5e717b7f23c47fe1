"""rdzv: elastic rendezvous for distributed training jobs, without torch.

Every node calls ``handler.next_rendezvous()`` and gets the round's store, a
unique rank and the world size. The public names are those of
``torch.distributed.elastic.rendezvous``, so code written against torch ports by
changing the import. Backends and stores that need more than the standard
library are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdzv._lazy import lazy_getattr
from rdzv.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousEventError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousOptionError,
    RendezvousOptionWarning,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)
from rdzv.backends.base import RendezvousBackend
from rdzv.core import RendezvousSettings, RendezvousTimeout
from rdzv.dynamic.handler import DynamicRendezvousHandler, create_handler
from rdzv.endpoint import parse_rendezvous_endpoint
from rdzv.registry import (
    RendezvousHandlerCreator,
    RendezvousHandlerRegistry,
    get_rendezvous_handler,
    rendezvous_handler_registry,
)
from rdzv.store import (
    InMemoryStore,
    PrefixStore,
    Store,
    StoreError,
    StoreTimeoutError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rdzv.backends.c10d import C10dRendezvousBackend
    from rdzv.backends.etcd import EtcdRendezvousBackend
    from rdzv.backends.memory import InMemoryBackend
    from rdzv.etcd.server import EtcdServer
    from rdzv.legacy.handler import EtcdRendezvousHandler
    from rdzv.static import StaticTCPRendezvous
    from rdzv.store import EtcdStore, FileStore, StoreAuthenticationError, TCPStore
    from rdzv.watching import Snapshot, Watcher, WatchStatus, watch

_LAZY = {
    "C10dRendezvousBackend": "rdzv.backends.c10d",
    "EtcdRendezvousBackend": "rdzv.backends.etcd",
    "EtcdRendezvousHandler": "rdzv.legacy.handler",
    "EtcdServer": "rdzv.etcd.server",
    "EtcdStore": "rdzv.store.etcd",
    "FileStore": "rdzv.store.file",
    "InMemoryBackend": "rdzv.backends.memory",
    "StaticTCPRendezvous": "rdzv.static",
    "StoreAuthenticationError": "rdzv.store.tcp_protocol",
    "TCPStore": "rdzv.store.tcp",
    "Snapshot": "rdzv.watching",
    "WatchStatus": "rdzv.watching",
    "Watcher": "rdzv.watching",
    "watch": "rdzv.watching",
}
"""Public names whose module is imported when the name is first used."""

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "C10dRendezvousBackend",
    "DynamicRendezvousHandler",
    "EtcdRendezvousBackend",
    "EtcdRendezvousHandler",
    "EtcdServer",
    "EtcdStore",
    "FileStore",
    "InMemoryBackend",
    "InMemoryStore",
    "PrefixStore",
    "RendezvousBackend",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousEventError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousHandlerCreator",
    "RendezvousHandlerRegistry",
    "RendezvousInfo",
    "RendezvousOptionError",
    "RendezvousOptionWarning",
    "RendezvousParameters",
    "RendezvousSettings",
    "RendezvousStateError",
    "RendezvousStoreInfo",
    "RendezvousTimeout",
    "RendezvousTimeoutError",
    "Snapshot",
    "StaticTCPRendezvous",
    "Store",
    "StoreAuthenticationError",
    "StoreError",
    "StoreTimeoutError",
    "TCPStore",
    "WatchStatus",
    "Watcher",
    "create_handler",
    "get_rendezvous_handler",
    "parse_rendezvous_endpoint",
    "rendezvous_handler_registry",
    "watch",
]
