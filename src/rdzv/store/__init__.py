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
