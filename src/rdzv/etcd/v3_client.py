"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``).

The ``etcd-v3`` backend and :class:`rdzv.store.etcd_v3.EtcdV3Store` share it. It
speaks only the v3 API, so it works on etcd 3.6 and later, which have no v2 API.

Each request is one JSON POST through a :class:`GatewaySession`: connections
kept open to each member, made by urllib3 (a dependency of python-etcd already)
with the client's TLS settings, on which the session speaks HTTP itself
(:mod:`rdzv.etcd.connection`). A read of a key so costs about 145 µs of client
CPU against 370 µs through urllib3's own HTTP, which cost half of one through
requests and etcd3gw, the client before (``benchmarks/etcd_client_cost.py``).
Around it, with the help of the modules named:

- **Several members.** Given the members of a cluster, each request goes through
  a :class:`~rdzv.etcd.members.MemberPool`: a member that fails (refused, reset,
  timed out, without a leader) hands the request to the next, within the same
  ``read_timeout``.
- **Authentication** by username and password: a token, taken again when etcd
  reports it expired (:mod:`rdzv.etcd.v3_auth`).
- **A bounded watch**, read in the calling thread, that returns at its timeout,
  reports a cancelled watch, and on request stays open for the next wait
  (:mod:`rdzv.etcd.v3_watch`).
- **Typed results**: :class:`KeyValue` holds keys, values and revisions decoded
  from the gateway's base64 and strings (:mod:`rdzv.etcd.v3_wire`).

Keys attached to a TTL share leases, so that such a write costs one request
rather than two (:mod:`rdzv.etcd.v3_leases`).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from typing import Any

from rdzv.api import RendezvousParameters
from rdzv.etcd.connection import MemberConnection, MemberSession
from rdzv.etcd.members import MemberPool
from rdzv.etcd.polls import PollWatches
from rdzv.etcd.v2_connect import etcd_client_options, etcd_members
from rdzv.etcd.v3_auth import TokenAuth
from rdzv.etcd.v3_leases import LeaseCache
from rdzv.etcd.v3_watch import WatchReader
from rdzv.etcd.v3_wire import (
    API_PATH,
    TRANSPORT_ERRORS,
    EtcdV3ConnectionError,
    EtcdV3Error,
    KeyValue,
    WatchEvent,
    b64,
    connection_error,
    exhausted,
    header_revision,
    int_field,
    is_member_failure,
    key_value,
    prefix_range_end,
    status_error,
)

__all__ = [
    "MAX_TXN_OPS",
    "EtcdV3Client",
    "EtcdV3ConnectionError",
    "EtcdV3Error",
    "GatewaySession",
    "KeyValue",
    "WatchEvent",
    "create_etcd_v3_client",
    "prefix_range_end",
]

MAX_TXN_OPS = 128
"""Operations per transaction: etcd's default ``--max-txn-ops``."""


def _member_url(protocol: str, host: str, port: int) -> str:
    """``protocol://host:port`` of a member, an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{protocol}://{host}:{port}"


class GatewaySession(MemberSession):
    """A :class:`~rdzv.etcd.connection.MemberSession` that POSTs JSON to the v3 gateway."""

    def post(self, url: str, path: str, body: dict[str, Any], seconds: float) -> dict[str, Any]:
        """POST ``body`` to gateway ``path`` of the member at ``url``; its decoded answer.

        ``seconds`` bounds connecting, and then the whole answer.

        Raises:
            EtcdV3ConnectionError: the member did not answer, answered that it
                cannot serve now (HTTP 408, 503, 504), or sent no JSON.
            EtcdV3Error: the member refused the request.
        """
        try:
            status, _, data = self.exchange(
                url, API_PATH + path, json.dumps(body).encode(), seconds
            )
        except TRANSPORT_ERRORS as e:  # a timeout, a reset, an EtcdV3ConnectionError
            raise connection_error(url, path, e) from e
        if status != http.client.OK:
            raise status_error(url, path, status, data.decode("utf-8", "replace"))
        try:
            result = json.loads(data)
        except ValueError as e:
            raise connection_error(url, path, e) from e
        if not isinstance(result, dict):
            raise EtcdV3Error(f"etcd at {url} answered {path} with {result!r}.")
        return result


def _ranged_key(txn_result: dict[str, Any]) -> KeyValue | None:
    """The key a transaction's first response read (``None``: absent)."""
    responses = txn_result.get("responses") or [{}]
    kvs = (responses[0].get("response_range") or {}).get("kvs") or []
    return key_value(kvs[0]) if kvs else None


class EtcdV3Client:
    """The requests rdzv makes to etcd's v3 API; thread-safe.

    Args:
        host, port: etcd's client endpoint.
        protocol: ``http`` or ``https``.
        read_timeout: seconds any request other than a watch may take.
        cert: client certificate: a file holding certificate and key, or a
            ``(certificate, key)`` pair.
        ca_cert: CA that signed etcd's certificate (default: the system's CAs).
        username, password: etcd user (etcd auth); both or neither.

    Every method raises :class:`EtcdV3ConnectionError` when etcd cannot be reached
    and :class:`EtcdV3Error` when it refuses the request. No request is sent before
    the first call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: str = "http",
        read_timeout: float = 60,
        cert: str | tuple[str, str] | None = None,
        ca_cert: str | None = None,
        username: str | None = None,
        password: str | None = None,
        other_members: Sequence[tuple[str, int]] = (),
    ) -> None:
        if bool(username) != bool(password):
            raise ValueError("Give both username and password for etcd auth, or neither.")
        members = [(host, port), *other_members]
        urls = [_member_url(protocol, h, p) for h, p in members]
        self._session = GatewaySession(
            urls, cert=cert, ca_cert=ca_cert, headers={"Content-Type": "application/json"}
        )
        self._pool = MemberPool(
            urls, is_member_failure, lambda failures: exhausted(self.endpoint, failures)
        )
        self._read_timeout = read_timeout
        credentials = (username, password) if username and password else None
        self._credentials = credentials is not None
        self._auth = TokenAuth(
            self._session.headers, credentials, self._request, lambda: self.endpoint
        )
        self._leases = LeaseCache(self._auth.post, lambda: self.endpoint, read_timeout)
        self._watches = WatchReader(
            self._pool,
            self._session.connect,
            lambda: dict(self._session.headers),
            read_timeout,
            self.get,
            self._auth.renew,
        )
        self._polls = PollWatches(self._open_poll_watch, (OSError, EtcdV3Error))

    @property
    def endpoint(self) -> str:
        """``protocol://host:port`` of etcd; of every member, joined by commas, for a cluster."""
        return self._pool.describe()

    @property
    def pool(self) -> MemberPool:
        """The members and their health."""
        return self._pool

    @property
    def authenticates(self) -> bool:
        """Whether the client signs in as an etcd user (username and password)."""
        return self._credentials

    @property
    def read_timeout(self) -> float:
        """Seconds a request other than a watch may take (on all members together)."""
        return self._read_timeout

    def __repr__(self) -> str:
        return f"EtcdV3Client({self.endpoint})"

    # -- requests -------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (``None`` when absent) and etcd's revision at the time of the read."""
        result = self._auth.post("kv/range", {"key": b64(key)})
        kvs = result.get("kvs") or []
        return (key_value(kvs[0]) if kvs else None), header_revision(result)

    def get_if_changed(self, key: bytes, mod_revision: int) -> tuple[bool, KeyValue | None]:
        """``(False, None)`` while ``key``'s mod revision is ``mod_revision``; else ``(True,
        the key)``, ``None`` when absent. One transaction whose answer carries no value
        while the key is unchanged; or, after two such in a row, none: a watch left
        waiting answers while etcd sends nothing on it (see :mod:`rdzv.etcd.polls`)."""
        return self._polls.poll(key, mod_revision, lambda: self._txn_if_changed(key, mod_revision))

    def _txn_if_changed(
        self, key: bytes, mod_revision: int
    ) -> tuple[bool, KeyValue | None, int | None]:
        txn = {
            "compare": [
                {
                    "key": b64(key),
                    "result": "EQUAL",
                    "target": "MOD",
                    "mod_revision": str(mod_revision),
                }
            ],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        result = self._auth.post("kv/txn", txn)
        revision = header_revision(result)  # known as of it: a watch goes on from there
        changed = not result.get("succeeded")
        return changed, _ranged_key(result) if changed else None, revision or None

    def get_prefix(
        self, prefix: bytes, *, min_create_revision: int = 0, by_creation: bool = False
    ) -> list[KeyValue]:
        """The keys starting with ``prefix`` created at ``min_create_revision`` or later.

        Sorted by key, or with ``by_creation`` by create revision (oldest first).
        """
        body: dict[str, Any] = {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix))}
        if min_create_revision > 0:
            body["min_create_revision"] = str(min_create_revision)
        if by_creation:
            body.update(sort_order="ASCEND", sort_target="CREATE")
        result = self._auth.post("kv/range", body)
        return [key_value(item) for item in result.get("kvs") or []]

    def count_prefix(self, prefix: bytes) -> int:
        """How many keys start with ``prefix``."""
        body = {
            "key": b64(prefix),
            "range_end": b64(prefix_range_end(prefix)),
            "count_only": True,
        }
        return int_field(self._auth.post("kv/range", body).get("count"))

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        """The keys (``None`` for each absent one), read in one transaction per 128 keys."""
        ranges = [{"request_range": {"key": b64(key)}} for key in keys]
        found: list[KeyValue | None] = []
        for response in self._transactions(ranges):
            kvs = (response.get("response_range") or {}).get("kvs") or []
            found.append(key_value(kvs[0]) if kvs else None)
        if len(found) != len(keys):
            raise EtcdV3Error(f"etcd answered {len(found)} reads for {len(keys)} keys.")
        return found

    def _transactions(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run ``ops`` unconditionally, in one transaction per 128; their responses."""
        responses: list[dict[str, Any]] = []
        for start in range(0, len(ops), MAX_TXN_OPS):
            txn = {"compare": [], "success": ops[start : start + MAX_TXN_OPS], "failure": []}
            responses += self._auth.post("kv/txn", txn).get("responses") or []
        return responses

    def put(
        self, key: bytes, value: bytes, *, ttl: float | None = None, shared: str | None = None
    ) -> int:
        """Write ``key``; with ``ttl`` it vanishes one to two TTLs later. Returns its revision.

        ``shared`` names the writers whose keys of one TTL share leases (see
        :mod:`rdzv.etcd.v3_leases`); without it, this client's writes share them.
        """

        def attempt(lease: int) -> int:
            body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
            if lease:
                body["lease"] = str(lease)
            return header_revision(self._auth.post("kv/put", body))

        return self._leases.with_lease(ttl, attempt, shared)

    def prefetch_lease(self, ttl: float) -> None:
        """Start granting this client's lease for writes with ``ttl``, unless one is cached
        or coming: a write soon after finds it granted (see :class:`LeaseCache`)."""
        self._leases.prefetch(ttl)

    def keep_alive(self, key: bytes) -> bool:
        """Renew the lease ``key`` is attached to, to its full TTL; whether etcd holds it.

        Two requests, neither a raft write (a keys-only read, and a lease keep-alive,
        which the leader serves): the key's revisions do not change.
        """
        kvs = self._auth.post("kv/range", {"key": b64(key), "keys_only": True}).get("kvs") or []
        lease = key_value(kvs[0]).lease if kvs else 0
        if not lease:
            return False
        answer = self._auth.post("lease/keepalive", {"ID": str(lease)}).get("result") or {}
        return int_field(answer.get("TTL")) > 0

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Write each (key, value), in one transaction per 128 keys: atomic up to 128."""
        self._transactions([{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in items])

    def put_if(
        self,
        key: bytes,
        value: bytes,
        mod_revision: int | None,
        *,
        ttl: float | None = None,
        shared: str | None = None,
    ) -> tuple[bool, int, KeyValue | None]:
        """Write ``key`` if its mod revision is ``mod_revision`` (``None``: if it is absent).

        Returns ``(True, revision of the write, None)``, or ``(False, 0, current)``
        where ``current`` is the key as it is (``None`` when absent): one
        transaction either way. ``ttl`` and ``shared`` as for :meth:`put`.
        """
        encoded = b64(key)
        compare: dict[str, Any] = {"key": encoded, "result": "EQUAL"}
        if mod_revision is None:
            compare.update(target="CREATE", create_revision="0")
        else:
            compare.update(target="MOD", mod_revision=str(mod_revision))

        def attempt(lease: int) -> tuple[bool, int, KeyValue | None]:
            put: dict[str, Any] = {"key": encoded, "value": b64(value)}
            if lease:
                put["lease"] = str(lease)
            txn = {
                "compare": [compare],
                "success": [{"request_put": put}],
                "failure": [{"request_range": {"key": encoded}}],
            }
            result = self._auth.post("kv/txn", txn)
            if result.get("succeeded"):
                return True, header_revision(result), None
            return False, 0, _ranged_key(result)

        return self._leases.with_lease(ttl, attempt, shared)

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (with ``prefix``: every key starting with it); return how many went."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_range_end(key))
        return int_field(self._auth.post("kv/deleterange", body).get("deleted"))

    def watch(
        self, key: bytes, seen: int | None, timeout: float, *, keep: bool = False
    ) -> WatchEvent | None:
        """Wait up to ``timeout`` s until ``key`` differs from the version the caller saw.

        ``seen`` is the mod revision of that version, ``None`` when the key was
        absent. Returns the key's new version (or its deletion) at once if it moved
        already, else the first change etcd reports; ``None`` when the timeout
        passed or the stream ended (the caller reads the key again). A member that
        fails while the watch is open hands it to the next member, which reads
        the key again once its watch is open: no change is missed.

        With ``keep``, the watch stays open when this call returns, and the next
        call on ``key`` goes on with it: no new stream, no read. Call
        :meth:`release_watches` when no wait is near (:meth:`close` does too).

        Why not a watch from ``seen + 1``: etcd delivers the events of a watch that
        starts in the past from a loop that runs every 100 ms, and any write to any
        key puts a watch from ``seen + 1`` in the past. A watch from now is served
        as writes happen; one read once it is open covers what came before (and
        a compacted history never matters).
        """
        if timeout <= 0:
            return None
        self._auth.ensure_token()
        return self._watches.watch(key, seen, time.monotonic() + timeout, keep=keep)

    def release_watches(self) -> None:
        """Close the watches kept open by :meth:`watch` with ``keep``."""
        self._watches.release()

    def close(self) -> None:
        """Close the HTTP connections and kept watches; a later request opens new ones."""
        self._watches.release()
        self._polls.release()
        self._session.close()

    # -- internals ------------------------------------------------------------------

    def _open_poll_watch(self, key: bytes, revision: int) -> MemberConnection | None:
        self._auth.ensure_token()
        return self._watches.open_from(key, revision)

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` of the members in turn, within ``read_timeout`` in all."""

        def attempt(url: str, seconds: float) -> dict[str, Any]:
            # ``seconds``: the member's share of read_timeout, so that a hung
            # member leaves time for the others.
            return self._session.post(url, path, body, seconds)

        return self._pool.call(attempt, self._read_timeout, split=True)


def create_etcd_v3_client(params: RendezvousParameters) -> EtcdV3Client:
    """A client for the etcd at ``params.endpoint`` (default port 2379; a list for a cluster).

    Options are those of the ``etcd-v2`` backend, validated the same way (see
    :func:`rdzv.etcd.v2_connect.etcd_client_options`): ``read_timeout``, ``protocol``,
    ``ssl_cert``, ``ssl_cert_key``, ``ca_cert``, ``username``, ``password``.

    Raises:
        ValueError: an option is invalid; the message names it.
    """
    options = etcd_client_options(params)
    return EtcdV3Client(
        options["host"],
        options["port"],
        protocol=options["protocol"],
        read_timeout=options["read_timeout"],
        cert=options["cert"],
        ca_cert=options["ca_cert"],
        username=options["username"],
        password=options["password"],
        other_members=etcd_members(params)[1:],
    )
