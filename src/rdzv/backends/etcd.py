"""The ``etcd-v2`` backend: the rendezvous state under one etcd v2 key.

The value is base64 of the codec's bytes, written with a TTL that each write
renews (an abandoned run cleans itself up); the key's ``modifiedIndex`` is the
fencing token, and compare-and-set is etcd's ``prevIndex``/``prevExist``. A node
waiting for others watches the key from its token, so it wakes on the next write.
"""

from __future__ import annotations

import etcd

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.etcd.backend import EtcdKVBackend
from rdzv.etcd.kv_v2 import EtcdV2KV
from rdzv.etcd.v2_connect import ETCD_ERRORS, check_etcd_v2, connection_error, create_etcd_client
from rdzv.store.etcd import EtcdStore

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_STORE_PREFIX",
    "EtcdRendezvousBackend",
    "create_backend",
    "etcd_prefixes",
    "state_options",
]

DEFAULT_KEY_PREFIX = "/rdzv/rendezvous"
"""Where states live by default: not torch's ``/torch/elastic/rendezvous``, so an rdzv job
and a torch job with the same run id never overwrite each other's state."""
DEFAULT_STORE_PREFIX = "/rdzv/store"


class EtcdRendezvousBackend(EtcdKVBackend):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>`` (torch's signature).

    Join intents are etcd's in-order keys in segment directories
    ``<key_prefix>/<run_id>.intents/<segment>/`` (0, 1, 2, ...), and heartbeats
    keys with a TTL under ``<key_prefix>/<run_id>.heartbeats/``, one per node (see
    :mod:`rdzv.etcd.backend`). A log position's index is etcd v2's, which counts
    every v2 change the cluster made since it was created and never resets; it
    must stay below 2**40 (about 1.1e12: 3.5 years at 10 000 writes a second,
    more than etcd takes), else :class:`RendezvousStateError` says so.

    Args:
        client: the ``etcd.Client`` to use.
        run_id: the job's id.
        key_prefix: etcd directory of the key (default :data:`DEFAULT_KEY_PREFIX`).
        ttl: seconds the state outlives its last write (default two hours).
        intent_segment_entries: records a segment of the intent log holds before
            the log moves on to the next one (default 256).

    Raises:
        ValueError: an empty run id, a non-positive TTL or a segment size that is
            not positive.
    """

    client_errors = ETCD_ERRORS

    def __init__(
        self,
        client: etcd.Client,
        run_id: str,
        key_prefix: str | None = None,
        ttl: int | None = None,
        *,
        intent_segment_entries: int = EtcdKVBackend.DEFAULT_SEGMENT_ENTRIES,
    ) -> None:
        prefix = DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix
        super().__init__(EtcdV2KV(client), run_id, prefix, ttl, intent_segment_entries)

    @property
    def name(self) -> str:
        return "etcd-v2"

    def _connection_error(self, error: BaseException) -> RendezvousConnectionError:
        return connection_error(self._kv.endpoint, error)

    def _state_text(self, value: bytes) -> str:
        return value.decode("utf-8")  # python-etcd's str, as the state was always read


def etcd_prefixes(params: RendezvousParameters) -> tuple[str, str]:
    """The key prefix of the state and of the store that ``etcd_prefix`` names.

    Default ``/rdzv``: the state at ``/rdzv/rendezvous/<run_id>``, the store under
    ``/rdzv/store``; ``etcd-v2`` and ``etcd-v3`` read the option alike.

    Raises:
        ValueError: ``etcd_prefix`` is not a path starting with ``/``.
    """
    prefix = params.get("etcd_prefix")
    if prefix is None:
        return DEFAULT_KEY_PREFIX, DEFAULT_STORE_PREFIX
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError(
            f"The rendezvous option 'etcd_prefix' ({prefix!r}) must be an etcd path starting "
            "with '/'."
        )
    root = prefix.rstrip("/")
    return f"{root}/rendezvous", f"{root}/store"


def state_options(params: RendezvousParameters) -> tuple[str, str, int | None]:
    """The state's key prefix, the store's prefix (:func:`etcd_prefixes`) and the ``ttl``
    option (``None``: the default), which both etcd backends read alike.

    Raises:
        ValueError: an invalid ``etcd_prefix`` or ``ttl``.
    """
    ttl = params.get_as_int("ttl")
    if ttl is not None and ttl <= 0:
        raise ValueError(f"The rendezvous option 'ttl' ({ttl}) must be positive.")
    return (*etcd_prefixes(params), ttl)


def create_backend(params: RendezvousParameters) -> tuple[EtcdRendezvousBackend, EtcdStore]:
    """The backend and the store for ``params`` (torch's function, rdzv's key prefixes).

    Options: those of :func:`rdzv.etcd.v2_connect.etcd_client_options`, plus
    ``etcd_prefix`` (default ``/rdzv``) under which the state
    (``<prefix>/rendezvous/<run_id>``) and the store (``<prefix>/store``) live,
    and ``ttl`` (seconds the state outlives its last write, default 7200).

    The state's key is read once here, so that a wrong endpoint, an etcd down or
    hung, missing credentials or an etcd without the v2 API fail the creation,
    within ``read_timeout``, rather than the first rendezvous (torch's client
    also contacts etcd when it is built).

    Raises:
        ValueError: an invalid option, named in the message.
        RendezvousConnectionError: etcd did not answer within ``read_timeout``,
            refused the read, or serves no v2 API; the message says what to do.
    """
    key_prefix, store_prefix, ttl = state_options(params)
    client = create_etcd_client(params)
    backend = EtcdRendezvousBackend(client, params.run_id, key_prefix=key_prefix, ttl=ttl)
    check_etcd_v2(client, backend.key)
    return backend, EtcdStore(client, store_prefix)


# create_etcd_v2_handler moved to rdzv.dynamic.wiring, since a backend does not import the
# handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_etcd_v2_handler": "rdzv.dynamic.wiring"})
