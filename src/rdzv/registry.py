"""The handler registry: backend name -> function that builds a handler from parameters.

Built-in backends are registered by dotted path and imported on first use, so
that ``import rdzv`` stays light and a missing optional dependency only matters
to the backend that needs it. Third-party backends register through the
entry-point group ``rdzv.handlers``: the entry point names the backend and loads
to a handler creator (a callable taking :class:`RendezvousParameters`).

Building a handler of one of rdzv's own backends warns about options that no
backend reads (:func:`rdzv.options.warn_unknown_options`), a typo being the
usual cause; a handler of a third-party backend is not checked, since its
options are its own.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from rdzv.api import RendezvousHandler, RendezvousParameters
from rdzv.options import warn_unknown_options

__all__ = [
    "ENTRY_POINT_GROUP",
    "RendezvousHandlerCreator",
    "RendezvousHandlerRegistry",
    "get_rendezvous_handler",
    "rendezvous_handler_registry",
]

RendezvousHandlerCreator = Callable[[RendezvousParameters], RendezvousHandler]

ENTRY_POINT_GROUP = "rdzv.handlers"

_BUILTIN: dict[str, str] = {
    "memory": "rdzv.dynamic.wiring:create_memory_handler",
    "etcd-v2": "rdzv.dynamic.wiring:create_etcd_v2_handler",
    "etcd-v3": "rdzv.dynamic.wiring:create_etcd_v3_handler",
    "c10d": "rdzv.dynamic.wiring:create_c10d_handler",
    "tcp": "rdzv.dynamic.wiring:create_c10d_handler",
    "etcd": "rdzv.legacy.handler:create_etcd_handler",
    "static": "rdzv.static:create_static_handler",
}
"""Backend name -> ``module:function`` of its creator."""


class RendezvousHandlerRegistry:
    """Maps backend names to handler creators."""

    def __init__(self) -> None:
        self._registry: dict[str, RendezvousHandlerCreator] = {}
        self._lazy: dict[str, str] = dict(_BUILTIN)
        self._builtin: dict[str, RendezvousHandlerCreator] = {}
        """The built-in creators loaded so far, whose options rdzv knows."""
        self._lock = threading.Lock()

    def register(self, backend: str, creator: RendezvousHandlerCreator) -> None:
        """Register ``creator`` under ``backend``.

        Raises:
            ValueError: the name is empty, or already registered with another creator.
        """
        if not backend:
            raise ValueError("The rendezvous backend name must be a non-empty string.")
        with self._lock:
            current = self._registry.get(backend)
            if current is not None and current != creator:
                raise ValueError(
                    f"The rendezvous backend '{backend}' cannot be registered with '{creator}' as "
                    f"it is already registered with '{current}'."
                )
            self._registry[backend] = creator
            self._lazy.pop(backend, None)

    def names(self) -> list[str]:
        """Every known backend name (registered, built-in and installed plug-ins), sorted."""
        plugins = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
        with self._lock:
            return sorted(set(self._registry) | set(self._lazy) | plugins)

    def create_handler(self, params: RendezvousParameters) -> RendezvousHandler:
        """Build the handler for ``params.backend``.

        Raises:
            ValueError: no backend of that name is registered, or its plug-in failed to load.
            RuntimeError: the handler's ``get_backend()`` is not the requested name
                (torch's check: a creator registered under a name reports that name).

        Warns:
            RendezvousOptionWarning: an option that no backend of rdzv reads (only
                for rdzv's own backends).
        """
        return self._create(params, stacklevel=3)

    def _create(self, params: RendezvousParameters, stacklevel: int) -> RendezvousHandler:
        """:meth:`create_handler`; ``stacklevel`` is the caller's frame, for the warning."""
        creator = self._creator(params.backend)
        with self._lock:
            builtin = self._builtin.get(params.backend) is creator
        if builtin:
            warn_unknown_options(params, stacklevel=stacklevel)
        handler = creator(params)
        if handler.get_backend() != params.backend:
            raise RuntimeError(
                f"The rendezvous backend '{handler.get_backend()}' does not match the requested "
                f"backend '{params.backend}'."
            )
        return handler

    def _creator(self, backend: str) -> RendezvousHandlerCreator:
        with self._lock:
            creator = self._registry.get(backend)
            path = self._lazy.get(backend)
        if creator is not None:
            return creator
        if path is not None:
            module_name, _, attr = path.partition(":")
            loaded: RendezvousHandlerCreator = getattr(importlib.import_module(module_name), attr)
            self.register(backend, loaded)
            with self._lock:
                self._builtin[backend] = loaded
            return loaded
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=backend):
            return self._load_plugin(backend, ep.value, ep.load)
        raise ValueError(
            f"The rendezvous backend '{backend}' is not registered. Known backends: "
            f"{', '.join(self.names())}. A third-party backend registers through the entry-point "
            f"group '{ENTRY_POINT_GROUP}' or `rendezvous_handler_registry.register`."
        )

    def _load_plugin(
        self, backend: str, value: str, load: Callable[[], object]
    ) -> RendezvousHandlerCreator:
        # Only the plug-in asked for is imported: a broken unrelated one cannot
        # stop a job that does not use it.
        try:
            creator = load()
        except Exception as e:
            raise ValueError(
                f"The rendezvous backend plug-in '{backend}' ({value}) failed to load: "
                f"{type(e).__name__}: {e}. Reinstall the package that provides it."
            ) from e
        if not callable(creator):
            raise ValueError(
                f"The rendezvous backend plug-in '{backend}' ({value}) is not callable; its entry "
                "point must name a function that takes RendezvousParameters."
            )
        self.register(backend, creator)
        return creator


rendezvous_handler_registry = RendezvousHandlerRegistry()
"""The registry that :func:`get_rendezvous_handler` and launchers use."""


def get_rendezvous_handler(params: RendezvousParameters) -> RendezvousHandler:
    """Build the handler that ``params.backend`` names.

    Raises:
        ValueError: the backend is unknown or its parameters are invalid.

    Warns:
        RendezvousOptionWarning: an option that no backend of rdzv reads.
    """
    return rendezvous_handler_registry._create(params, stacklevel=3)
