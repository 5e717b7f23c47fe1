"""The ``etcd-v3`` backend: the rendezvous state under one etcd v3 key.

etcd 3.6 removed the v2 API that ``etcd-v2`` (and torch's etcd backends) need;
this backend speaks v3 only, through etcd's JSON gateway (see
:mod:`rdzv.etcd.v3_client`), and keeps the contract of ``etcd-v2``:

- the value is base64 of the codec's bytes, at ``<prefix>/rendezvous/<run_id>``;
- the key's mod revision is the fencing token, and compare-and-set is one v3
  transaction comparing it (or, without a token, the key's absence);
- the key is attached to a lease of the ``ttl`` option, renewed by each write, so
  an abandoned rendezvous expires (between one and two TTLs after its last write);
- a waiting node watches the key and wakes on the first write after its token.

Join intents are keys ``<key>.intents/<segment>/<random>``, whose create revision
orders them in the log; heartbeats are keys ``<key>.heartbeats/<node>`` (see
:mod:`rdzv.etcd.backend`). Both are attached to leases, as their v2
counterparts carry a TTL. The nodes of a run share their leases
(:mod:`rdzv.etcd.v3_leases`).
"""

from __future__ import annotations

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.backends.base import Token
from rdzv.backends.etcd import DEFAULT_KEY_PREFIX, state_options
from rdzv.etcd.backend import EtcdKVBackend
from rdzv.etcd.kv_v3 import EtcdV3KV
from rdzv.etcd.v3_client import EtcdV3Client, EtcdV3Error, create_etcd_v3_client
from rdzv.store.etcd_v3 import EtcdV3Store

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "EtcdV3RendezvousBackend",
    "create_backend",
]


class EtcdV3RendezvousBackend(EtcdKVBackend):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>`` in etcd's v3 key space.

    Args:
        client: the :class:`~rdzv.etcd.v3_client.EtcdV3Client` to use.
        run_id: the job's id.
        key_prefix: where the key lives (default :data:`DEFAULT_KEY_PREFIX`).
        ttl: seconds the state outlives its last write at least (default two hours).
        intent_segment_entries: records a segment of the intent log holds before
            the log moves on to the next one (default 256).

    Raises:
        ValueError: an empty run id, a non-positive TTL or a segment size that is
            not positive.
    """

    client_errors = (EtcdV3Error,)

    def __init__(
        self,
        client: EtcdV3Client,
        run_id: str,
        key_prefix: str | None = None,
        ttl: int | None = None,
        *,
        intent_segment_entries: int = EtcdKVBackend.DEFAULT_SEGMENT_ENTRIES,
    ) -> None:
        prefix = DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix
        # The run's nodes share leases: a few a run rather than one a node (grants are
        # raft writes: a first round of 256 took 0.64 s with them, 0.57 s without). Not
        # with etcd auth: there every write on a lease checks the writer's rights to
        # every key on it, 3.5 ms a write once 4,000 heartbeats share one (against
        # 0.8 ms), and writers of different roles could not share at all.
        shared = None if client.authenticates else f"rdzv-run\0{prefix}\0{run_id}"
        self._kv: EtcdV3KV = EtcdV3KV(client, shared=shared)
        super().__init__(self._kv, run_id, prefix, ttl, intent_segment_entries)
        self._client = client

    @property
    def name(self) -> str:
        return "etcd-v3"

    def get_state(self) -> tuple[bytes, Token] | None:
        """Read the state; and, with leases of its own (etcd auth), have the client grant
        the one this node's next writes (its intent, a write of the state) will need.

        A grant is a raft write: in front of a node's first write, while the first node
        of a large job to place itself waited for its grant, more nodes found no
        steward and lost a write. Shared leases need no grant a node.
        """
        if self._kv.shared is None:
            self._client.prefetch_lease(self._ttl)
        return super().get_state()

    def _intent_ttl(self) -> float:
        """The state's TTL, not :attr:`INTENT_TTL`: one lease then serves the run's intents
        and its writes of the state (each TTL costs a lease, a raft write).
        An intent lives up to twice that unless its segment is deleted first, once
        admitted."""
        return float(max(self.INTENT_TTL, self._ttl))

    @property
    def client(self) -> EtcdV3Client:
        """The client this backend uses (``rdzv status`` reads the raw key with it)."""
        return self._client

    def _connection_error(self, error: BaseException) -> RendezvousConnectionError:
        return RendezvousConnectionError(
            f"etcd (v3 API) at {self._client.endpoint} failed: {error}. Check that etcd runs "
            "there, that this host can reach it (protocol, certificates, credentials), or "
            "raise read_timeout."
        )


def create_backend(params: RendezvousParameters) -> tuple[EtcdV3RendezvousBackend, EtcdV3Store]:
    """The backend and the store for ``params``.

    Options: those of ``etcd-v2`` (:func:`rdzv.etcd.v2_connect.etcd_client_options`:
    ``read_timeout``, ``protocol``, ``ssl_cert``, ``ssl_cert_key``, ``ca_cert``,
    ``username``, ``password``), ``etcd_prefix`` (default ``/rdzv``, see
    :func:`rdzv.backends.etcd.etcd_prefixes`) and ``ttl`` (seconds the state outlives
    its last write, default 7200).

    The state's key is read once here, as ``etcd-v2`` does, so that a wrong
    endpoint, an etcd down or hung, or wrong credentials fail the creation, within
    ``read_timeout``, rather than the first rendezvous.

    Raises:
        ValueError: an invalid option, named in the message.
        RendezvousConnectionError: etcd did not answer within ``read_timeout`` or
            refused the read; the message says what to do.
    """
    key_prefix, store_prefix, ttl = state_options(params)
    client = create_etcd_v3_client(params)
    backend = EtcdV3RendezvousBackend(client, params.run_id, key_prefix=key_prefix, ttl=ttl)
    try:
        client.get(backend._raw_key)
    except EtcdV3Error as e:
        raise backend._connection_error(e) from e
    return backend, EtcdV3Store(client, store_prefix)


# create_etcd_v3_handler moved to rdzv.dynamic.wiring, since a backend does not import the
# handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_etcd_v3_handler": "rdzv.dynamic.wiring"})
