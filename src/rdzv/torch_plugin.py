"""The torchrun plug-in: torch's launcher runs its rendezvous on rdzv's backends.

torch discovers the plug-in through its entry-point group ``torchrun.handlers``,
where rdzv registers ``rdzv-c10d``, ``rdzv-etcd-v2``, ``rdzv-etcd-v3`` and
``rdzv-etcd`` (rdzv's ``c10d``, ``etcd-v2``, ``etcd-v3`` and ``etcd`` backends;
``rdzv-etcd-v3`` is the one for etcd 3.6 and later, which have no v2 API)::

    torchrun --nnodes=1:4 --nproc-per-node=8 --rdzv-backend=rdzv-c10d \\
        --rdzv-endpoint=host0:29400 --rdzv-id=job42 train.py

Each entry point loads to a function that torch calls once and that returns the
handler creator. The creator builds rdzv's handler and wraps it in
:class:`TorchRendezvousHandler`, which speaks torch's interface: torch's result
and error types, and a :class:`TorchStoreAdapter` (a ``torch.distributed.Store``)
over the round's rdzv store for the agent's own bookkeeping.

Trainers do not use that store. ``use_agent_store`` is false, so rank 0's
trainer hosts a torch ``TCPStore`` for ``init_process_group`` on the port that
rank 0's agent published for this round (a free port of its host), exactly as
torch's own handler does with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``. The agent
store cannot be shared: trainers would connect to it with torch's C++ ``TCPStore``
client, which does not speak rdzv's protocol (nor etcd's).

The handler records its rendezvous in torch's event stream
(``torch.distributed.elastic.events``) as torch's own handler does: see
:mod:`rdzv.torch_events`.

This module imports torch; ``import rdzv`` never imports this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

try:
    import torch.distributed as dist

    # torch.distributed re-exports Store only when built with distributed support,
    # which type checkers cannot see; this is where the class is defined.
    from torch._C._distributed_c10d import Store as _TorchStore
    from torch.distributed.elastic.rendezvous import api as torch_api
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"rdzv's torchrun plug-in needs torch, which cannot be imported ({e}). "
        "Install it with `pip install 'rdzv[torch]'`."
    ) from e

from rdzv.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeoutError,
)
from rdzv.registry import get_rendezvous_handler
from rdzv.store.base import Store, StoreError, StoreTimeoutError
from rdzv.store.tcp_protocol import StoreConnectionError
from rdzv.torch_events import TorchEventRecorder, record_creation_failure

__all__ = [
    "TORCHRUN_BACKENDS",
    "TorchRendezvousHandler",
    "TorchStoreAdapter",
    "c10d_handler_creator",
    "create_torch_handler",
    "etcd_handler_creator",
    "etcd_v2_handler_creator",
    "etcd_v3_handler_creator",
]

TorchHandlerCreator = Callable[[torch_api.RendezvousParameters], "TorchRendezvousHandler"]

TORCHRUN_BACKENDS: dict[str, str] = {
    "rdzv-c10d": "c10d",
    "rdzv-etcd-v2": "etcd-v2",
    "rdzv-etcd-v3": "etcd-v3",
    "rdzv-etcd": "etcd",
}
"""torchrun backend name -> the rdzv backend it runs on."""

# Most specific first: the first matching class wins.
_ERROR_TYPES: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (RendezvousGracefulExitError, torch_api.RendezvousGracefulExitError),
    (RendezvousClosedError, torch_api.RendezvousClosedError),
    (RendezvousTimeoutError, torch_api.RendezvousTimeoutError),
    (RendezvousConnectionError, torch_api.RendezvousConnectionError),
    (RendezvousStateError, torch_api.RendezvousStateError),
    (StoreTimeoutError, torch_api.RendezvousTimeoutError),
    (StoreError, torch_api.RendezvousConnectionError),
    (RendezvousError, torch_api.RendezvousError),
)


@contextlib.contextmanager
def _torch_rendezvous_errors() -> Iterator[None]:
    """Re-raise rdzv's errors as torch's, which torch's agent catches by type.

    The agent treats ``RendezvousGracefulExitError`` as a clean exit and the others
    as failures; the rdzv error stays attached as the cause.
    """
    try:
        yield
    except (RendezvousError, StoreError) as e:
        for rdzv_type, torch_type in _ERROR_TYPES:
            if isinstance(e, rdzv_type):
                raise torch_type(str(e)) from e
        raise  # pragma: no cover - RendezvousError is the last entry


@contextlib.contextmanager
def _torch_store_errors() -> Iterator[None]:
    """Re-raise rdzv's store errors as torch's: a timeout as ``DistStoreError`` (what
    torch's barrier catches), a lost connection as ``DistNetworkError``."""
    try:
        yield
    except StoreTimeoutError as e:
        raise dist.DistStoreError(str(e)) from e
    except (StoreConnectionError, ConnectionError) as e:
        raise dist.DistNetworkError(str(e)) from e
    except StoreError as e:
        if isinstance(e.__cause__, OSError):
            raise dist.DistNetworkError(str(e)) from e
        raise dist.DistStoreError(str(e)) from e


class TorchStoreAdapter(_TorchStore):
    """A ``torch.distributed.Store`` that forwards every operation to an rdzv store.

    torch's agent calls it from Python (``set``, ``get``, ``add``, ``wait``,
    ``multi_get``, ``multi_set``, the ``timeout`` property and ``set_timeout``) and
    C++ wrappers such as torch's ``PrefixStore`` call the same methods through
    pybind. Blocking operations honour this object's timeout, which starts at the
    rdzv store's and is changed by ``set_timeout`` without touching the rdzv store
    (which the rendezvous backend shares). Errors are torch's ``DistStoreError``
    (timeouts, bad requests) and ``DistNetworkError`` (connection lost).
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store
        self._timeout = store.timeout
        super().set_timeout(store.timeout)

    @property
    def rdzv_store(self) -> Store:
        """The rdzv store operations go to."""
        return self._store

    @property
    def timeout(self) -> timedelta:
        """How long ``get``, ``multi_get`` and ``wait`` block before ``DistStoreError``."""
        return self._timeout

    def set_timeout(self, timeout: timedelta) -> None:
        """Change the timeout of blocking operations of this adapter only."""
        if timeout <= timedelta(0):
            raise ValueError(f"The store timeout ({timeout}) must be positive.")
        self._timeout = timeout
        super().set_timeout(timeout)

    def set(self, key: str, value: str | bytes) -> None:
        with _torch_store_errors():
            self._store.set(key, value)

    def get(self, key: str) -> bytes:
        with _torch_store_errors():
            return self._store.multi_get([key], self._timeout)[0]

    def add(self, key: str, value: int) -> int:
        with _torch_store_errors():
            return self._store.add(key, value)

    def compare_set(
        self, key: str, expected_value: str | bytes, desired_value: str | bytes
    ) -> bytes:
        with _torch_store_errors():
            return self._store.compare_set(key, expected_value, desired_value)

    def wait(self, keys: Sequence[str], timeout: timedelta | None = None) -> None:
        with _torch_store_errors():
            self._store.wait(list(keys), timeout or self._timeout)

    def check(self, keys: Sequence[str]) -> bool:
        with _torch_store_errors():
            return self._store.check(list(keys))

    def delete_key(self, key: str) -> bool:
        with _torch_store_errors():
            return self._store.delete_key(key)

    def num_keys(self) -> int:
        with _torch_store_errors():
            return self._store.num_keys()

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        with _torch_store_errors():
            return self._store.multi_get(list(keys), self._timeout)

    def multi_set(self, keys: Sequence[str], values: Sequence[str | bytes]) -> None:
        with _torch_store_errors():
            self._store.multi_set(list(keys), list(values))

    def append(self, key: str, value: str | bytes) -> None:
        with _torch_store_errors():
            self._store.append(key, value)

    def has_extended_api(self) -> bool:
        """Yes: ``append``, ``multi_get`` and ``multi_set`` are implemented."""
        return True


class TorchRendezvousHandler(torch_api.RendezvousHandler):
    """torch's ``RendezvousHandler`` interface over an rdzv handler.

    Args:
        handler: the rdzv handler that does the work.
        backend: the name torch registered this handler under (``rdzv-c10d``...),
            which :meth:`get_backend` returns: torch's registry checks it against
            the requested name, while rdzv's handler reports its own (``c10d``).
    """

    def __init__(self, handler: RendezvousHandler, backend: str) -> None:
        self._handler = handler
        self._backend = backend
        self._events = TorchEventRecorder.attach(handler)

    @property
    def rdzv_handler(self) -> RendezvousHandler:
        """The wrapped rdzv handler."""
        return self._handler

    def get_backend(self) -> str:
        return self._backend

    @property
    def use_agent_store(self) -> bool:
        """False: trainers bootstrap on their own ``TCPStore`` (see the module docs)."""
        return False

    def next_rendezvous(self) -> torch_api.RendezvousInfo:
        """Join the next round; the result carries torch's types.

        Raises:
            torch's ``RendezvousClosedError``, ``RendezvousTimeoutError``,
            ``RendezvousConnectionError``, ``RendezvousStateError`` or
            ``RendezvousGracefulExitError``, from rdzv's error of the same name.
        """
        self._events.joining()
        with self._failures("next_rendezvous"):
            info = self._handler.next_rendezvous()
        self._events.joined(info.rank, info.world_size)
        bootstrap = info.bootstrap_store_info
        return torch_api.RendezvousInfo(
            TorchStoreAdapter(info.store),
            info.rank,
            info.world_size,
            torch_api.RendezvousStoreInfo(bootstrap.master_addr, bootstrap.master_port),
        )

    def is_closed(self) -> bool:
        with self._failures("is_closed"):
            return self._handler.is_closed()

    def set_closed(self) -> None:
        with self._failures("set_closed"):
            self._handler.set_closed()

    def num_nodes_waiting(self) -> int:
        with self._failures("num_nodes_waiting"):
            return self._handler.num_nodes_waiting()

    def get_run_id(self) -> str:
        return self._handler.get_run_id()

    def shutdown(self) -> bool:
        with self._failures("shutdown"):
            closed = self._handler.shutdown()
        if not closed:
            self._events.shutdown_failed()
        return closed

    @contextlib.contextmanager
    def _failures(self, method: str) -> Iterator[None]:
        """torch's errors for rdzv's, each recorded as torch's ``method`` records it."""
        try:
            with _torch_rendezvous_errors():
                yield
        except Exception as e:
            self._events.failed(method, e)
            raise

    def __repr__(self) -> str:
        return f"TorchRendezvousHandler({self._backend!r}, {self._handler!r})"


def create_torch_handler(
    params: torch_api.RendezvousParameters, rdzv_backend: str | None = None
) -> TorchRendezvousHandler:
    """Build rdzv's handler for torch's ``params`` and wrap it for torch.

    ``rdzv_backend`` is the rdzv backend to run on; by default the one that
    :data:`TORCHRUN_BACKENDS` maps ``params.backend`` to. Every option of
    ``--rdzv-conf`` is passed to rdzv as it is.

    Raises:
        ValueError: the backend is unknown or an option is invalid.
        torch's ``RendezvousConnectionError``: the backend cannot be reached.
    """
    backend = rdzv_backend or TORCHRUN_BACKENDS.get(params.backend)
    if backend is None:
        raise ValueError(
            f"The torchrun backend '{params.backend}' has no rdzv backend; rdzv provides "
            f"{', '.join(sorted(TORCHRUN_BACKENDS))}."
        )
    rdzv_params = RendezvousParameters(
        backend=backend,
        endpoint=params.endpoint,
        run_id=params.run_id,
        min_nodes=params.min_nodes,
        max_nodes=params.max_nodes,
        local_addr=params.local_addr,
        **params.config,
    )
    try:
        with _torch_rendezvous_errors():
            handler = get_rendezvous_handler(rdzv_params)
    except Exception as e:
        record_creation_failure(params.run_id, e)
        raise
    return TorchRendezvousHandler(handler, params.backend)


def _create_c10d(params: torch_api.RendezvousParameters) -> TorchRendezvousHandler:
    return create_torch_handler(params, "c10d")


def _create_etcd_v2(params: torch_api.RendezvousParameters) -> TorchRendezvousHandler:
    return create_torch_handler(params, "etcd-v2")


def _create_etcd_v3(params: torch_api.RendezvousParameters) -> TorchRendezvousHandler:
    return create_torch_handler(params, "etcd-v3")


def _create_etcd(params: torch_api.RendezvousParameters) -> TorchRendezvousHandler:
    # rdzv's legacy etcd rendezvous, looked up by name so that it is imported only here.
    return create_torch_handler(params, "etcd")


# torch loads each entry point and calls it to get the creator it registers. The
# creators are module-level functions, so registering twice registers the same one.


def c10d_handler_creator() -> TorchHandlerCreator:
    """Entry point ``rdzv-c10d``: the creator of handlers on rdzv's ``c10d`` backend."""
    return _create_c10d


def etcd_v2_handler_creator() -> TorchHandlerCreator:
    """Entry point ``rdzv-etcd-v2``: the creator of handlers on rdzv's ``etcd-v2`` backend."""
    return _create_etcd_v2


def etcd_v3_handler_creator() -> TorchHandlerCreator:
    """Entry point ``rdzv-etcd-v3``: the creator of handlers on rdzv's ``etcd-v3`` backend.

    For etcd 3.6 and later, where torch's etcd backends cannot run (no v2 API).
    """
    return _create_etcd_v3


def etcd_handler_creator() -> TorchHandlerCreator:
    """Entry point ``rdzv-etcd``: the creator of handlers on rdzv's legacy ``etcd`` backend."""
    return _create_etcd
