"""Handler creators of rdzv's own dynamic backends: a backend wired into a handler.

The backends (:mod:`rdzv.backends`) sit below the handler and do not know it; this
module is the one place that joins them. Each creator builds its backend and
store from the launcher's parameters with the backend module's ``create_backend``
and hands both to :func:`~rdzv.dynamic.handler.create_handler`. The registry
(:mod:`rdzv.registry`) names these functions; each imports its backend module
when first called, so that a handler of one backend loads no other backend's
client.
"""

from __future__ import annotations

from rdzv.api import RendezvousParameters
from rdzv.dynamic.handler import DynamicRendezvousHandler, create_handler

__all__ = [
    "create_c10d_handler",
    "create_etcd_v2_handler",
    "create_etcd_v3_handler",
    "create_memory_handler",
]


def create_c10d_handler(params: RendezvousParameters) -> DynamicRendezvousHandler:
    """Handler creator registered as ``c10d`` and ``tcp``.

    The backend is named ``c10d`` either way (as torch's); the handler's
    ``get_backend()`` is the name it was asked for, because the registry, like
    torch's, checks that a handler reports the name it was created under.
    """
    from rdzv.backends import c10d  # noqa: PLC0415 - only the backend asked for

    backend, store = c10d.create_backend(params)
    return create_handler(store, backend, params, backend_name=params.backend)


def create_etcd_v2_handler(params: RendezvousParameters) -> DynamicRendezvousHandler:
    """Handler creator registered as ``etcd-v2``."""
    from rdzv.backends import etcd  # noqa: PLC0415 - only the backend asked for

    backend, store = etcd.create_backend(params)
    return create_handler(store, backend, params)


def create_etcd_v3_handler(params: RendezvousParameters) -> DynamicRendezvousHandler:
    """Handler creator registered as ``etcd-v3``."""
    from rdzv.backends import etcd_v3  # noqa: PLC0415 - only the backend asked for

    backend, store = etcd_v3.create_backend(params)
    return create_handler(store, backend, params)


def create_memory_handler(params: RendezvousParameters) -> DynamicRendezvousHandler:
    """Handler creator for the ``memory`` backend (the endpoint is ignored).

    The handlers of one run id in one process share one backend and one store.
    """
    from rdzv.backends import memory  # noqa: PLC0415 - only the backend asked for

    backend, store = memory.create_backend(params)
    return create_handler(store, backend, params)
