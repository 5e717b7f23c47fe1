"""The public contract of a rendezvous: handler interface, parameters, results, errors.

Names and semantics follow ``torch.distributed.elastic.rendezvous.api`` so that code
written against torch ports by changing an import.
"""

from __future__ import annotations

import math
import socket
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from rdzv.store.base import Store

__all__ = [
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousEventError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousInfo",
    "RendezvousOptionError",
    "RendezvousOptionWarning",
    "RendezvousParameters",
    "RendezvousStateError",
    "RendezvousStoreInfo",
    "RendezvousTimeoutError",
]


class RendezvousError(Exception):
    """Base type of every rendezvous error."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous is closed: the job is finishing and admits no node."""


class RendezvousTimeoutError(RendezvousError):
    """The rendezvous did not complete before its deadline."""


class RendezvousConnectionError(RendezvousError):
    """The backend that holds the rendezvous state could not be reached."""


class RendezvousStateError(RendezvousError):
    """The rendezvous state in the backend is corrupt or of an unknown format."""


class RendezvousEventError(RendezvousError, ValueError):
    """A document is not a rendezvous event of a format this rdzv reads (see rdzv.core.event_json).

    Also a ``ValueError``: it is a bad value handed in, like a malformed argument.
    """


class RendezvousGracefulExitError(RendezvousError):
    """This node was not needed (it was redundant) and the rendezvous closed.

    Raised to unwind the caller's stack; it is not a failure.
    """


class RendezvousOptionError(ValueError, TypeError):
    """An option of :class:`RendezvousParameters` is given as ``None`` where it needs a value.

    torch refuses ``None`` for these options with a ``TypeError``; rdzv's other
    invalid-option errors are ``ValueError``. This error is both, so an ``except``
    written for either catches it. It is not a :class:`RendezvousError`: it is a
    mistake in the configuration, not a failure of the rendezvous. See
    :mod:`rdzv.options` for which options take ``None`` as their default.
    """


class RendezvousOptionWarning(UserWarning):
    """An option of :class:`RendezvousParameters` is read by none of rdzv's backends.

    Usually a misspelt name (``join_timout``); the option has no effect. The
    message names the closest known option. Turn it into an error in tests with
    ``warnings.simplefilter("error", RendezvousOptionWarning)`` or pytest's
    ``-W error::rdzv.RendezvousOptionWarning``.
    """


@attrs.frozen
class RendezvousStoreInfo:
    """Address and port that trainers use to bootstrap their own communication.

    ``MASTER_ADDR``/``MASTER_PORT`` are the environment variables that torch's
    launcher sets from it.
    """

    MASTER_ADDR_KEY: ClassVar[str] = "MASTER_ADDR"
    MASTER_PORT_KEY: ClassVar[str] = "MASTER_PORT"

    master_addr: str
    master_port: int

    @staticmethod
    def build(
        rank: int,
        store: Store,
        local_addr: str | None,
        server_port: int | None = None,
        timeout: timedelta | None = None,
    ) -> RendezvousStoreInfo:
        """Publish (rank 0) or read (other ranks) the master address of this round.

        ``store`` must be the round's own store (a per-round prefix), so that a node
        joining in a later round reads the value rank 0 wrote for that round and
        never waits for one written only in an earlier round. Rank 0 advertises
        ``server_port`` when it hosts a shared store, else a free port of its host.

        Raises:
            StoreTimeoutError: rank 0 did not publish within ``timeout`` (default: the
                store's timeout).
        """
        if rank == 0:
            addr = local_addr or socket.getfqdn()
            port = server_port or _free_port()
            store.multi_set(
                [RendezvousStoreInfo.MASTER_ADDR_KEY, RendezvousStoreInfo.MASTER_PORT_KEY],
                [addr.encode(), str(port).encode()],
            )
            return RendezvousStoreInfo(addr, port)
        addr_b, port_b = store.multi_get(
            [RendezvousStoreInfo.MASTER_ADDR_KEY, RendezvousStoreInfo.MASTER_PORT_KEY], timeout
        )
        return RendezvousStoreInfo(addr_b.decode(), int(port_b.decode()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


class RendezvousInfo:
    """What a node gets from a completed rendezvous.

    ``store`` is private to this round; ``rank`` is unique in ``0..world_size-1``.
    """

    def __init__(
        self,
        store: Store,
        rank: int,
        world_size: int,
        bootstrap_store_info: RendezvousStoreInfo,
    ) -> None:
        self._store = store
        self._rank = rank
        self._world_size = world_size
        self._bootstrap_store_info = bootstrap_store_info

    @property
    def store(self) -> Store:
        """Key-value store shared by the nodes of this round."""
        return self._store

    @property
    def rank(self) -> int:
        """This node's rank in the round."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Number of nodes in the round."""
        return self._world_size

    @property
    def bootstrap_store_info(self) -> RendezvousStoreInfo:
        """Master address and port for this round's trainers."""
        return self._bootstrap_store_info

    def __repr__(self) -> str:
        return (
            f"RendezvousInfo(rank={self._rank}, world_size={self._world_size}, "
            f"bootstrap_store_info={self._bootstrap_store_info!r})"
        )


class RendezvousHandler(ABC):
    """The rendezvous barrier that every node of a job calls."""

    @abstractmethod
    def get_backend(self) -> str:
        """Name of the backend, as registered (``c10d``, ``etcd-v2``, ...)."""

    @property
    def use_agent_store(self) -> bool:
        """Whether the store returned by :meth:`next_rendezvous` may be shared with trainers."""
        return False

    @abstractmethod
    def next_rendezvous(self) -> RendezvousInfo:
        """Block until this node is part of a completed round, and return it.

        Raises:
            RendezvousClosedError: the rendezvous is closed.
            RendezvousConnectionError: the backend cannot be reached.
            RendezvousStateError: the state in the backend is corrupt.
            RendezvousTimeoutError: the round did not complete on time.
            RendezvousGracefulExitError: this node was redundant and the job closed.
        """

    @abstractmethod
    def is_closed(self) -> bool:
        """Whether the rendezvous is closed (eventually consistent; not a barrier)."""

    @abstractmethod
    def set_closed(self) -> None:
        """Close it: every later ``next_rendezvous`` raises ``RendezvousClosedError``.

        The close propagates eventually; it is not a barrier.
        """

    @abstractmethod
    def num_nodes_waiting(self) -> int:
        """How many nodes wait for a new round; a launcher re-rendezvous when it is above 0."""

    @abstractmethod
    def get_run_id(self) -> str:
        """The job's run id, shared by all its nodes."""

    @abstractmethod
    def shutdown(self) -> bool:
        """Release what the handler holds; return whether it succeeded."""


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}.")


class RendezvousParameters:
    """Everything needed to build a :class:`RendezvousHandler`.

    Args:
        backend: registered backend name, e.g. ``c10d`` or ``etcd-v2``.
        endpoint: ``<host>[:<port>]`` of the backend.
        run_id: id shared by all nodes of one job.
        min_nodes: fewest nodes that may form a round (>= 1).
        max_nodes: most nodes admitted to a round (>= min_nodes).
        local_addr: address this node advertises; defaults to its FQDN.
        **kwargs: backend options (``join_timeout``, ``read_timeout``, ...).

    Raises:
        ValueError: an empty backend name, ``min_nodes < 1`` or ``max_nodes < min_nodes``.
    """

    def __init__(
        self,
        backend: str,
        endpoint: str,
        run_id: str,
        min_nodes: int,
        max_nodes: int,
        local_addr: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not backend:
            raise ValueError("The rendezvous backend name must be a non-empty string.")
        _check_positive_int("min_nodes", min_nodes)
        _check_positive_int("max_nodes", max_nodes)
        if min_nodes < 1:
            raise ValueError(
                f"The minimum number of rendezvous nodes ({min_nodes}) must be greater than zero."
            )
        if max_nodes < min_nodes:
            raise ValueError(
                f"The maximum number of rendezvous nodes ({max_nodes}) must be greater than or "
                f"equal to the minimum number of rendezvous nodes ({min_nodes})."
            )
        self.backend = backend
        self.endpoint = endpoint
        self.run_id = run_id
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.config: dict[str, Any] = kwargs
        self.local_addr = local_addr

    def __repr__(self) -> str:
        return (
            f"RendezvousParameters(backend={self.backend!r}, endpoint={self.endpoint!r}, "
            f"run_id={self.run_id!r}, min_nodes={self.min_nodes}, max_nodes={self.max_nodes}, "
            f"local_addr={self.local_addr!r}, config={self.config!r})"
        )

    def get(self, key: str, default: Any = None) -> Any:
        """Return the option ``key``, or ``default`` when it is not set."""
        return self.config.get(key, default)

    def get_as_bool(self, key: str, default: bool | None = None) -> bool | None:
        """Return the option ``key`` as a bool (``1/true/t/yes/y`` or ``0/false/f/no/n``).

        Raises:
            ValueError: the value is not one of those spellings.
        """
        value = self.get(key, default)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value in (0, 1):
                return bool(value)
        elif isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "t", "yes", "y"):
                return True
            if lowered in ("0", "false", "f", "no", "n"):
                return False
        raise ValueError(
            f"The rendezvous configuration option '{key}' does not represent a valid boolean "
            f"value: {value!r}."
        )

    def get_as_int(self, key: str, default: int | None = None) -> int | None:
        """Return the option ``key`` as an int.

        Raises:
            ValueError: the value is not an integer.
        """
        value = self.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(
                f"The rendezvous configuration option '{key}' does not represent a valid "
                f"integer value: {value!r}."
            )
        try:
            return int(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"The rendezvous configuration option '{key}' does not represent a valid "
                f"integer value: {value!r}."
            ) from e

    def get_as_float(self, key: str, default: float | None = None) -> float | None:
        """Return the option ``key`` as a float (rdzv accepts fractions of a second).

        Raises:
            ValueError: the value is not a finite number.
        """
        value = self.get(key, default)
        if value is None:
            return None
        try:
            result = float(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"The rendezvous configuration option '{key}' does not represent a valid "
                f"number: {value!r}."
            ) from e
        if isinstance(value, bool) or not math.isfinite(result):
            raise ValueError(
                f"The rendezvous configuration option '{key}' does not represent a valid "
                f"number: {value!r}."
            )
        return result
