"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), built on etcd3gw.

The ``etcd-v3`` backend and :class:`rdzv.store.etcd_v3.EtcdV3Store` share it. It
speaks only the v3 API, so it works on etcd 3.6 and later, which have no v2 API.

etcd3gw (the maintained client of etcd's gateway) supplies, for each member, the
per-request timeout, the mapping of HTTP failures to exceptions and transactions,
all on one shared ``requests`` session (TLS, credentials). Four things it lacks
are done here:

- **Several members.** Given the members of a cluster, each request goes through
  a :class:`~rdzv.etcd.members.MemberPool`: a member that fails (refused, reset,
  timed out, without a leader) hands the request to the next, within the same
  ``read_timeout``.

- **Authentication.** etcd3gw 2.7 has no username/password: this client asks
  ``/v3/auth/authenticate`` for a token, sends it in the ``Authorization`` header,
  and authenticates again when etcd reports the token expired.
- **A bounded watch.** etcd3gw opens a watch stream with no timeout (a dead etcd
  hangs it), runs a thread pool per watch, and ignores a watch that etcd cancels
  (compacted history). :meth:`EtcdV3Client.watch` reads the stream in the calling
  thread, returns at its timeout, and reports a cancelled watch.
- **Typed results.** The gateway sends int64 fields as strings and keys and values
  as base64; :class:`KeyValue` holds them decoded (:mod:`rdzv.etcd.v3_wire`).

Keys attached to a TTL share leases: one lease of twice the TTL serves every write
of that TTL while at least the TTL remains on it, so a write costs one request
rather than two, and a key lives between one and two TTLs past its last write.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

try:
    import etcd3gw
    import requests
    from etcd3gw import exceptions as etcd3gw_exceptions
except ImportError as _missing:  # pragma: no cover - the message is the point
    raise ImportError(
        f"The etcd-v3 backend needs the etcd3gw package ({_missing}). Install it with "
        "`pip install 'rdzv[etcd3]'`."
    ) from _missing

from rdzv.api import RendezvousParameters
from rdzv.etcd.members import MemberPool
from rdzv.etcd.v2_connect import etcd_client_options, etcd_members
from rdzv.etcd.v3_wire import (
    API_PATH,
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
    "KeyValue",
    "WatchEvent",
    "create_etcd_v3_client",
    "prefix_range_end",
]

MAX_TXN_OPS = 128
"""Operations per transaction: etcd's default ``--max-txn-ops``."""

_T = TypeVar("_T")

_CREATED = "created"
"""A watch stream's first message: etcd watches the key from now on."""
_GIVE_UP = "give up"
"""etcd cancelled the watch in a way the caller recovers from by reading again."""


def _is_read_timeout(error: requests.RequestException) -> bool:
    if isinstance(error, requests.Timeout):
        return True
    # A timed-out read of a streamed body surfaces as ConnectionError(ReadTimeoutError).
    cause = error.args[0] if error.args else None
    return type(cause).__name__ == "ReadTimeoutError"


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
        session = requests.Session()
        # As with python-etcd: etcd is reached directly, whatever proxy variables
        # or .netrc the environment has. (requests makes one attempt per request
        # by default, so a failure surfaces within read_timeout.)
        session.trust_env = False
        if ca_cert is not None:
            session.verify = ca_cert
        if cert is not None:
            session.cert = cert
        self._session = session
        members = [(host, port), *other_members]
        # One gateway a member, sharing the session; each request gets an equal
        # share of read_timeout, so that a hung member leaves time for the others.
        share = read_timeout / len(members)
        gateways = [
            etcd3gw.Etcd3Client(
                host=h,
                port=p,
                protocol=protocol,
                timeout=share,
                api_path=API_PATH,
                session=session,
            )
            for h, p in members
        ]
        self._gateways = {gateway.base_url: gateway for gateway in gateways}
        self._pool = MemberPool(
            [gateway.base_url for gateway in gateways],
            is_member_failure,
            lambda failures: exhausted(self.endpoint, failures),
        )
        self._read_timeout = read_timeout
        self._credentials = (username, password) if username and password else None
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self._lease_lock = threading.Lock()
        self._leases: dict[int, tuple[int, float]] = {}
        """TTL -> (lease id, monotonic time until which the lease has at least TTL left)."""

    @property
    def endpoint(self) -> str:
        """``protocol://host:port`` of etcd; of every member, joined by commas, for a cluster."""
        return self._pool.describe()

    @property
    def pool(self) -> MemberPool:
        """The members and their health."""
        return self._pool

    @property
    def read_timeout(self) -> float:
        """Seconds a request other than a watch may take (on all members together)."""
        return self._read_timeout

    def __repr__(self) -> str:
        return f"EtcdV3Client({self.endpoint})"

    # -- requests -------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (``None`` when absent) and etcd's revision at the time of the read."""
        result = self._post("kv/range", {"key": b64(key)})
        kvs = result.get("kvs") or []
        return (key_value(kvs[0]) if kvs else None), header_revision(result)

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
        result = self._post("kv/range", body)
        return [key_value(item) for item in result.get("kvs") or []]

    def count_prefix(self, prefix: bytes) -> int:
        """How many keys start with ``prefix``."""
        body = {
            "key": b64(prefix),
            "range_end": b64(prefix_range_end(prefix)),
            "count_only": True,
        }
        return int_field(self._post("kv/range", body).get("count"))

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        """The keys (``None`` for each absent one), read in one transaction per 128 keys."""
        found: list[KeyValue | None] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[start : start + MAX_TXN_OPS]
            ranges = [{"request_range": {"key": b64(key)}} for key in chunk]
            result = self._post("kv/txn", {"compare": [], "success": ranges, "failure": []})
            for response in result.get("responses") or []:
                kvs = (response.get("response_range") or {}).get("kvs") or []
                found.append(key_value(kvs[0]) if kvs else None)
        if len(found) != len(keys):
            raise EtcdV3Error(f"etcd answered {len(found)} reads for {len(keys)} keys.")
        return found

    def put(self, key: bytes, value: bytes, *, ttl: float | None = None) -> int:
        """Write ``key``; with ``ttl`` it vanishes one to two TTLs later. Returns its revision."""

        def attempt(lease: int) -> int:
            body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
            if lease:
                body["lease"] = str(lease)
            return header_revision(self._post("kv/put", body))

        return self._with_lease(ttl, attempt)

    def put_if(
        self, key: bytes, value: bytes, mod_revision: int | None, *, ttl: float | None = None
    ) -> tuple[bool, int, KeyValue | None]:
        """Write ``key`` if its mod revision is ``mod_revision`` (``None``: if it is absent).

        Returns ``(True, revision of the write, None)``, or ``(False, 0, current)``
        where ``current`` is the key as it is (``None`` when absent): one
        transaction either way.
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
            result = self._post("kv/txn", txn)
            if result.get("succeeded"):
                return True, header_revision(result), None
            responses = result.get("responses") or [{}]
            kvs = (responses[0].get("response_range") or {}).get("kvs") or []
            return False, 0, (key_value(kvs[0]) if kvs else None)

        return self._with_lease(ttl, attempt)

    def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (with ``prefix``: every key starting with it); return how many went."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_range_end(key))
        return int_field(self._post("kv/deleterange", body).get("deleted"))

    def watch(self, key: bytes, seen: int | None, timeout: float) -> WatchEvent | None:
        """Wait up to ``timeout`` s until ``key`` differs from the version the caller saw.

        ``seen`` is the mod revision of that version, ``None`` when the key was
        absent. Returns the key's new version (or its deletion) at once if it moved
        already, else the first change etcd reports; ``None`` when the timeout
        passed or the stream ended (the caller reads the key again). A member that
        fails while the watch is open hands it to the next member, which reads
        the key again once its watch is open: no change is missed.

        Why not a watch from ``seen + 1``: etcd delivers the events of a watch that
        starts in the past from a loop that runs every 100 ms, and any write to any
        key puts a watch from ``seen + 1`` in the past. A watch from now is served
        as writes happen; one read once it is open covers what came before (and
        a compacted history never matters).
        """
        if timeout <= 0:
            return None
        self._ensure_token()
        deadline = time.monotonic() + timeout

        def attempt(url: str, seconds: float) -> WatchEvent | None:
            return self._watch_on(url, key, seen, deadline)

        return self._pool.call(attempt, timeout, split=False)

    def _watch_on(
        self, url: str, key: bytes, seen: int | None, deadline: float
    ) -> WatchEvent | None:
        """:meth:`watch` on the member at ``url``, until ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            response = self._session.post(
                url + API_PATH + "watch",
                json={"create_request": {"key": b64(key)}},
                stream=True,
                # Connect within read_timeout; then each read of the stream may
                # block at most until the deadline.
                timeout=(min(self._read_timeout, remaining), remaining),
            )
        except requests.RequestException as e:
            if _is_read_timeout(e):
                return None  # no answer before the deadline: the watch timed out
            raise connection_error(url, "watch", e) from e
        try:
            if response.status_code != requests.codes["ok"]:
                raise status_error(url, "watch", response.status_code, response.text)
            buffer = b""
            for chunk in response.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = self._watch_line(url, line)
                    if event is _CREATED:
                        current, _ = self.get(key)
                        if current is None and seen is not None:
                            return WatchEvent(KeyValue(key, b"", 0, 0), deleted=True)
                        if current is not None and current.mod_revision != seen:
                            return WatchEvent(current, deleted=False)
                    elif isinstance(event, WatchEvent):
                        return event
                    elif event is _GIVE_UP:
                        return None
                if time.monotonic() >= deadline:
                    return None
            if time.monotonic() < deadline:
                # The stream ended before the deadline: the member went away.
                raise EtcdV3ConnectionError(f"etcd at {url} ended a watch stream early.")
            return None
        except requests.RequestException as e:
            if _is_read_timeout(e):
                return None
            raise connection_error(url, "watch", e) from e
        finally:
            response.close()

    def close(self) -> None:
        """Close the HTTP connections; a later request opens new ones."""
        self._session.close()

    # -- internals ------------------------------------------------------------------

    def _watch_line(self, url: str, line: bytes) -> WatchEvent | str | None:
        """One line of a watch stream: an event, :data:`_CREATED`, :data:`_GIVE_UP` ("stop,
        read again") or ``None`` (nothing to act on)."""
        if not line.strip():
            return None
        try:
            message = json.loads(line)
        except ValueError as e:
            raise EtcdV3Error(f"etcd's watch stream sent a line that is not JSON ({e}).") from e
        if not isinstance(message, dict):
            raise EtcdV3Error("etcd's watch stream sent something other than a JSON object.")
        if "error" in message:
            error = message["error"]
            text = json.dumps(error) if not isinstance(error, str) else error
            if "invalid auth token" in text and self._credentials is not None:
                self._authenticate()
                return _GIVE_UP
            raise status_error(url, "watch", 0, text)
        result = message.get("result")
        if not isinstance(result, dict):
            return None
        if result.get("canceled"):
            reason = str(result.get("cancel_reason") or "")
            if int_field(result.get("compact_revision")) > 0:
                return _GIVE_UP
            # etcd cancels the watch of a stale token as "permission denied": take a
            # new token; should the user really lack the right, the caller's next
            # read says so.
            stale = "auth" in reason or "permission denied" in reason
            if stale and self._credentials is not None:
                self._authenticate()
                return _GIVE_UP
            raise EtcdV3Error(f"etcd at {url} cancelled a watch: {reason or 'no reason'}")
        if result.get("created"):
            return _CREATED
        events = result.get("events") or []
        if not events:
            return None  # a progress notice
        last = events[-1]
        if not isinstance(last, dict):
            raise EtcdV3Error("etcd's watch stream sent an event that is not a JSON object.")
        return WatchEvent(key_value(last.get("kv")), last.get("type") == "DELETE")

    def _with_lease(self, ttl: float | None, attempt: Callable[[int], _T]) -> _T:
        """Run ``attempt(lease_id)``; if etcd lost the cached lease, once more on a new one."""
        if ttl is None:
            return attempt(0)
        seconds = max(1, math.ceil(ttl))
        lease = self._lease(seconds)
        try:
            return attempt(lease)
        except EtcdV3Error as e:
            if "lease not found" not in str(e):
                raise
            with self._lease_lock:
                if self._leases.get(seconds, (0, 0.0))[0] == lease:
                    del self._leases[seconds]
            return attempt(self._lease(seconds))

    def _lease(self, seconds: int) -> int:
        """A lease with at least ``seconds`` left, granted anew when the cached one runs low."""
        with self._lease_lock:
            cached = self._leases.get(seconds)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
        started = time.monotonic()
        result = self._post("lease/grant", {"TTL": str(2 * seconds)})
        lease, granted = int_field(result.get("ID")), int_field(result.get("TTL"))
        if lease == 0:
            raise EtcdV3Error(f"etcd at {self.endpoint} granted no lease: {result!r}")
        with self._lease_lock:
            # Counted from before the request: the lease may be older than it looks.
            self._leases[seconds] = (lease, started + max(granted, seconds) - seconds)
        return lease

    def _ensure_token(self) -> None:
        if self._credentials is not None and self._token is None:
            self._authenticate()

    def _authenticate(self) -> None:
        assert self._credentials is not None
        name, password = self._credentials
        with self._auth_lock:
            session = self._session
            session.headers.pop("Authorization", None)
            result = self._request("auth/authenticate", {"name": name, "password": password})
            token = result.get("token")
            if not isinstance(token, str) or not token:
                raise EtcdV3Error(
                    f"etcd at {self.endpoint} accepted user {name!r} but sent no token; is auth "
                    "enabled there?"
                )
            session.headers["Authorization"] = token
            self._token = token

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the gateway path; authenticate first, and again once on expiry."""
        self._ensure_token()
        try:
            return self._request(path, body)
        except EtcdV3Error as e:
            if self._credentials is None or "invalid auth token" not in str(e):
                raise
        self._authenticate()
        return self._request(path, body)

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` of the members in turn, within ``read_timeout`` in all."""

        def attempt(url: str, _seconds: float) -> dict[str, Any]:
            # The gateway's own timeout is the member's share of read_timeout.
            return self._post_to(self._gateways[url], path, body)

        return self._pool.call(attempt, self._read_timeout, split=True)

    def _post_to(
        self, gateway: etcd3gw.Etcd3Client, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        url = gateway.base_url
        try:
            if path == "kv/txn":
                result: Any = gateway.transaction(body)
            else:
                result = gateway.post(gateway.get_url(path), json=body)
        except (
            etcd3gw_exceptions.ConnectionFailedError,
            etcd3gw_exceptions.ConnectionTimeoutError,
        ) as e:
            raise connection_error(url, path, e) from e
        except etcd3gw_exceptions.Etcd3Exception as e:
            raise status_error(url, path, 0, e.detail_text) from e
        except (requests.RequestException, OSError) as e:
            raise connection_error(url, path, e) from e
        if not isinstance(result, dict):
            raise EtcdV3Error(f"etcd at {url} answered {path} with {result!r}.")
        return result


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
