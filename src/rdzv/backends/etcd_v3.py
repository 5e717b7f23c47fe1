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
from rdzv.backends.base import (
    HeartbeatBoard,
    IntentLog,
    RendezvousBackend,
    Token,
    decode_base64_state,
    encode_base64_state,
)
from rdzv.backends.etcd import DEFAULT_KEY_PREFIX, etcd_prefixes
from rdzv.etcd.v3_client import EtcdV3Client, EtcdV3Error, KeyValue, create_etcd_v3_client
from rdzv.store.etcd_v3 import EtcdV3Store

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "EtcdV3RendezvousBackend",
    "create_backend",
]


def _connection_error(client: EtcdV3Client, error: EtcdV3Error) -> RendezvousConnectionError:
    return RendezvousConnectionError(
        f"etcd (v3 API) at {client.endpoint} failed: {error}. Check that etcd runs there, that "
        "this host can reach it (protocol, certificates, credentials), or raise read_timeout."
    )


class EtcdV3RendezvousBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>`` in etcd's v3 key space.

    Args:
        client: the :class:`~rdzv.etcd.v3_client.EtcdV3Client` to use.
        run_id: the job's id.
        key_prefix: where the key lives (default :data:`DEFAULT_KEY_PREFIX`).
        ttl: seconds the state outlives its last write at least (default two hours).

    Raises:
        ValueError: an empty run id or a non-positive TTL.
    """

    DEFAULT_TTL = 7200
    INTENT_TTL = 300
    """Seconds an intent stays in etcd at least; a node not admitted by then posts again."""

    def __init__(
        self,
        client: EtcdV3Client,
        run_id: str,
        key_prefix: str | None = None,
        ttl: int | None = None,
    ) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"The TTL of the rendezvous state ({ttl}) must be positive.")
        self._client = client
        prefix = DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix.rstrip("/")
        self._key = f"{prefix}/{run_id}"
        self._raw_key = self._key.encode("utf-8")
        self._intents_prefix = f"{self._key}.intents/".encode()
        self._beats_prefix = f"{self._key}.heartbeats/".encode()
        self._ttl = ttl or self.DEFAULT_TTL

    @property
    def name(self) -> str:
        return "etcd-v3"

    @property
    def reconnect_window(self) -> float:
        """The client's ``read_timeout``: how long an etcd outage may last before it is reported.

        (The property the ``etcd-v2`` backend offers too; executors that retry through
        a brief outage read it.)
        """
        return float(self._client.read_timeout)

    @property
    def key(self) -> str:
        """The etcd key that holds the state."""
        return self._key

    @property
    def client(self) -> EtcdV3Client:
        """The client this backend uses (``rdzv status`` reads the raw key with it)."""
        return self._client

    def _decode(self, kv: KeyValue) -> tuple[bytes, Token]:
        where = f"etcd key {self._key} at {self._client.endpoint}"
        return decode_base64_state(kv.value, where), kv.mod_revision

    def get_state(self) -> tuple[bytes, Token] | None:
        try:
            kv, _ = self._client.get(self._raw_key)
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e
        return None if kv is None else self._decode(kv)

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        if token is None:
            expected: int | None = None
        elif isinstance(token, int) and not isinstance(token, bool) and token > 0:
            expected = token
        else:
            return self._current_state()  # a malformed token can never match
        try:
            written, revision, current = self._client.put_if(
                self._raw_key, encode_base64_state(state), expected, ttl=self._ttl
            )
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e
        if written:
            return bytes(state), revision, True
        return None if current is None else (*self._decode(current), False)

    def _current_state(self) -> tuple[bytes, Token, bool] | None:
        current = self.get_state()
        return None if current is None else (*current, False)

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
            event = self._client.watch(self._raw_key, seen, timeout)
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e
        if event is None or event.deleted:
            return None  # timed out, or the key expired or was deleted: read again
        return self._decode(event.kv)

    def post_intent(self, record: bytes, cursor: int) -> None:
        # A random name: unique without a read, and its create revision orders it.
        key = self._intents_prefix + uuid.uuid4().hex.encode()
        try:
            self._client.put(key, record, ttl=self.INTENT_TTL)
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        try:
            kvs = self._client.get_prefix(
                self._intents_prefix, min_create_revision=cursor + 1, by_creation=True
            )
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e
        fresh = [kv for kv in kvs if kv.create_revision > cursor]
        return [kv.value for kv in fresh], max([cursor, *(kv.create_revision for kv in fresh)])

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        try:
            self._client.put(self._beats_prefix + name.encode("utf-8"), record, ttl=ttl)
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        wanted = set(names)
        try:
            kvs = self._client.get_prefix(self._beats_prefix)
        except EtcdV3Error as e:
            raise _connection_error(self._client, e) from e
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
        raise _connection_error(client, e) from e
    return backend, EtcdV3Store(client, store_prefix)


# create_etcd_v3_handler moved to rdzv.dynamic.wiring, since a backend does not import the
# handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_etcd_v3_handler": "rdzv.dynamic.wiring"})
