"""rdzv: elastic rendezvous for distributed training jobs, without torch.

Every node calls ``handler.next_rendezvous()`` and gets the round's store, a
unique rank and the world size. The public names are those of
``torch.distributed.elastic.rendezvous``, so code written against torch ports by
changing the import. Backends and stores that need more than the standard
library are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from rdzv.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)
from rdzv.core import RendezvousSettings, RendezvousTimeout
from rdzv.dynamic.backend import RendezvousBackend
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

_LAZY: dict[str, str] = {
    "InMemoryBackend": "rdzv.backends.memory",
}
"""Public names whose module is imported when the name is first used."""

__all__ = [
    "DynamicRendezvousHandler",
    "InMemoryBackend",
    "InMemoryStore",
    "PrefixStore",
    "RendezvousBackend",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousHandlerCreator",
    "RendezvousHandlerRegistry",
    "RendezvousInfo",
    "RendezvousParameters",
    "RendezvousSettings",
    "RendezvousStateError",
    "RendezvousStoreInfo",
    "RendezvousTimeout",
    "RendezvousTimeoutError",
    "Store",
    "StoreError",
    "StoreTimeoutError",
    "create_handler",
    "get_rendezvous_handler",
    "parse_rendezvous_endpoint",
    "rendezvous_handler_registry",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rdzv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
