"""The backend of a run, opened to be read and never written: what a watcher reads.

It is the backend a node builds from the same :class:`~rdzv.api.RendezvousParameters`,
except that on ``c10d`` it connects as a client only (``is_host=false``): a
watcher must never start a store of its own, which nodes would then take for
theirs. Besides the backend, a :class:`Source` reads the fencing token of a
stored value that does not decode, so that a watcher can wait for that value to
change instead of polling it.
"""

from __future__ import annotations

from collections.abc import Callable

from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.backends.base import RendezvousBackend, Token

__all__ = ["WATCHABLE", "Source", "open_source"]

WATCHABLE = ("c10d", "tcp", "etcd-v2", "etcd-v3", "memory")
"""The backends whose state can be watched: those of the dynamic handler."""


class Source:
    """One run's backend, for reading.

    Attributes:
        backend: the run's :class:`~rdzv.backends.base.RendezvousBackend`.
        where: the backend, endpoint and key, for messages.
    """

    def __init__(
        self,
        backend: RendezvousBackend,
        where: str,
        raw_token: Callable[[], Token | None],
        release: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.where = where
        self._raw_token = raw_token
        self._release = release

    def raw_token(self) -> Token | None:
        """The fencing token of the stored value, even when that value does not decode.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """
        return self._raw_token()

    def close(self) -> None:
        """Release the connection (idempotent)."""
        self._release()


def open_source(params: RendezvousParameters) -> Source:
    """Open the backend that ``params`` names, read-only.

    Raises:
        ValueError: the backend is not one of :data:`WATCHABLE`, or an option is invalid.
        RendezvousConnectionError: the backend cannot be reached.
        ImportError: ``etcd-v3`` without its extra (the message says what to install).
    """
    name = params.backend
    if name not in WATCHABLE:
        raise ValueError(
            f"The rendezvous backend {name!r} cannot be watched: its state is not one rdzv "
            f"reads. Watch one of {', '.join(WATCHABLE)}."
        )
    if name == "memory":
        return _open_memory(params)
    if name == "etcd-v2":
        return _open_etcd(params)
    if name == "etcd-v3":
        return _open_etcd_v3(params)
    return _open_c10d(params)


def _client_only(params: RendezvousParameters) -> RendezvousParameters:
    options = {**params.config, "is_host": False}
    return RendezvousParameters(
        params.backend, params.endpoint, params.run_id, 1, 1, params.local_addr, **options
    )


def _open_memory(params: RendezvousParameters) -> Source:
    from rdzv.backends.memory import shared_backend  # noqa: PLC0415 - only the backend asked for

    backend = shared_backend(params.run_id)

    def raw_token() -> Token | None:
        current = backend.get_state()
        return None if current is None else current[1]

    return Source(backend, f"memory, run {params.run_id}", raw_token, lambda: None)


def _open_c10d(params: RendezvousParameters) -> Source:
    from rdzv.backends.c10d import create_backend  # noqa: PLC0415 - only the backend asked for
    from rdzv.store.base import StoreError  # noqa: PLC0415

    backend, store = create_backend(_client_only(params))

    def raw_token() -> Token | None:
        # c10d's fencing token is the stored value itself.
        try:
            return store.get_if_exists(backend.key)
        except StoreError as e:
            raise RendezvousConnectionError(f"The rendezvous store failed: {e}") from e

    where = f"{params.backend} store at {params.endpoint}, key {backend.key}"
    return Source(backend, where, raw_token, store.close)


def _open_etcd(params: RendezvousParameters) -> Source:
    import etcd  # noqa: PLC0415 - python-etcd costs ~0.1 s to import

    from rdzv.backends.etcd import create_backend  # noqa: PLC0415
    from rdzv.etcd.v2_connect import (  # noqa: PLC0415
        ETCD_ERRORS,
        connection_error,
        create_etcd_client,
    )

    backend, _ = create_backend(params)
    client = create_etcd_client(params)

    def raw_token() -> Token | None:
        # etcd's fencing token is the key's modifiedIndex, whatever its value.
        try:
            index: int = client.read(backend.key).modifiedIndex
        except etcd.EtcdKeyNotFound:
            return None
        except ETCD_ERRORS as e:
            raise connection_error(params.endpoint, e) from e
        return index

    return Source(backend, f"etcd-v2 at {params.endpoint}, key {backend.key}", raw_token, _nothing)


def _open_etcd_v3(params: RendezvousParameters) -> Source:
    from rdzv.backends.etcd_v3 import create_backend  # noqa: PLC0415
    from rdzv.etcd.v3_client import EtcdV3Error  # noqa: PLC0415

    backend, _ = create_backend(params)

    def raw_token() -> Token | None:
        # The fencing token is the key's mod revision, whatever its value.
        try:
            kv, _ = backend.client.get(backend.key.encode("utf-8"))
        except EtcdV3Error as e:
            raise RendezvousConnectionError(
                f"etcd (v3 API) at {params.endpoint} failed: {e}. Check that etcd is running "
                "and reachable at that endpoint."
            ) from e
        return None if kv is None else kv.mod_revision

    where = f"etcd-v3 at {params.endpoint}, key {backend.key}"
    return Source(backend, where, raw_token, backend.client.close)


def _nothing() -> None:
    """python-etcd opens a connection per request: nothing to release."""
