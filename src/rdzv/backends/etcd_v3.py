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

Join intents are keys ``<key>.intents/<random>`` whose create revision is their
position in the log; heartbeats are keys ``<key>.heartbeats/<node>``. Both are
attached to leases, as their v2 counterparts carry a TTL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.backends.base import Token
from rdzv.backends.etcd import DEFAULT_KEY_PREFIX, etcd_prefixes
from rdzv.etcd.backend import EtcdKVBackend
from rdzv.etcd.kv import EtcdV3KV
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

    Raises:
        ValueError: an empty run id or a non-positive TTL.
    """

    INTENT_TTL = 300
    """Seconds an intent stays in etcd at least; a node not admitted by then posts again."""
    client_errors = (EtcdV3Error,)

    def __init__(
        self,
        client: EtcdV3Client,
        run_id: str,
        key_prefix: str | None = None,
        ttl: int | None = None,
    ) -> None:
        prefix = DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix
        super().__init__(EtcdV3KV(client), run_id, prefix, ttl)
        self._client = client
        self._intents_prefix = f"{self._key}.intents/".encode()
        self._beats_prefix = f"{self._key}.heartbeats/".encode()

    @property
    def name(self) -> str:
        return "etcd-v3"

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

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        """Return the state once it is no longer the one ``token`` names (``None``: no state).

        The watch reports the value it fired on, which is returned so that the
        waiting node need not read it again. A malformed token names no state:
        the current one is returned at once.
        """
        seen = token if isinstance(token, int) and not isinstance(token, bool) else None
        if token is not None and seen is None:
            seen = -1  # matches no revision
        try:
            change = self._kv.watch(self._raw_key, seen, timeout)
        except EtcdV3Error as e:
            raise self._connection_error(e) from e
        if change is None or change.entry is None:
            return None  # timed out, or the key expired or was deleted: read again
        return self._decode(change.entry)

    def post_intent(self, record: bytes, cursor: int) -> None:
        # A random name: unique without a read, and its create revision orders it.
        key = self._intents_prefix + uuid.uuid4().hex.encode()
        try:
            self._client.put(key, record, ttl=self.INTENT_TTL)
        except EtcdV3Error as e:
            raise self._connection_error(e) from e

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        try:
            kvs = self._client.get_prefix(
                self._intents_prefix, min_create_revision=cursor + 1, by_creation=True
            )
        except EtcdV3Error as e:
            raise self._connection_error(e) from e
        fresh = [kv for kv in kvs if kv.create_revision > cursor]
        return [kv.value for kv in fresh], max([cursor, *(kv.create_revision for kv in fresh)])

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        try:
            self._client.put(self._beats_prefix + name.encode("utf-8"), record, ttl=ttl)
        except EtcdV3Error as e:
            raise self._connection_error(e) from e

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        wanted = set(names)
        try:
            kvs = self._client.get_prefix(self._beats_prefix)
        except EtcdV3Error as e:
            raise self._connection_error(e) from e
        found: dict[str, bytes] = {}
        for kv in kvs:
            name = kv.key[len(self._beats_prefix) :].decode("utf-8", "replace")
            if name in wanted:
                found[name] = kv.value
        return found


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
    ttl = params.get_as_int("ttl")
    if ttl is not None and ttl <= 0:
        raise ValueError(f"The rendezvous option 'ttl' ({ttl}) must be positive.")
    key_prefix, store_prefix = etcd_prefixes(params)
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
