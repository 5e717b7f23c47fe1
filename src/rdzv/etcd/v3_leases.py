"""Leases that keys of one TTL share, so that a write with a TTL costs one request.

On v3 a key with a TTL is attached to a lease, and a grant is a raft write. A lease
of twice the TTL serves every write of that TTL while at least the TTL remains on
it; a key written so lives between one and two TTLs past its last write.

By default a client shares its leases among its own writes. Writers that share a
*scope* (the nodes of one rendezvous) share leases among them too: the lease of a
TTL and a moment is one whose id each computes (:func:`shared_lease_id`), granted
by whichever first finds it missing. Then a round of a thousand nodes grants a
few leases rather than one a node (a raft write each: a first round of 256 nodes
took 0.57 s instead of 0.64). A client's own lease, by contrast, can be granted
beforehand (:meth:`LeaseCache.prefetch`), on a thread that ends with the grant.
:class:`~rdzv.etcd.v3_client.EtcdV3Client` keeps one :class:`LeaseCache`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rdzv.etcd.v3_wire import EtcdV3Error, int_field

__all__ = ["LeaseCache", "shared_lease_id"]

_T = TypeVar("_T")


def shared_lease_id(scope: str, seconds: int, now: float) -> int:
    """The lease that writes of ``scope`` with a TTL of ``seconds`` use at wall time ``now``.

    A lease serves half a TTL of wall time (an *epoch*) and is granted for twice
    the TTL. A key written under it lives at least the TTL while the writers'
    clocks differ by less than a quarter of it (it was granted no earlier than
    the epoch's start by the earliest clock, and used no later than its end by
    the latest), and at most twice the TTL. The id is a hash of the scope, the
    TTL and the epoch, so different runs and TTLs never share one.
    """
    epoch = math.floor(2 * now / seconds)
    digest = hashlib.blake2b(f"{scope}\0{seconds}\0{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1) or 1


class LeaseCache:
    """A lease per TTL (and scope), granted through ``post`` when missing or low; thread-safe.

    Args:
        post: sends a request to the gateway (path, body) and returns the answer.
        endpoint: names etcd in errors.
        read_timeout: seconds a grant may take; a write waits no longer for one that
            :meth:`prefetch` started, then grants its own.
    """

    def __init__(
        self,
        post: Callable[[str, dict[str, Any]], dict[str, Any]],
        endpoint: Callable[[], str],
        read_timeout: float,
    ) -> None:
        self._post = post
        self._endpoint = endpoint
        self._read_timeout = read_timeout
        self._lock = threading.Lock()
        self._leases: dict[int, tuple[int, float]] = {}
        """TTL -> (lease id, monotonic time until which the lease has at least TTL left)."""
        self._coming: dict[int, threading.Event] = {}
        """TTL -> set once the grant that :meth:`prefetch` started has ended."""

    def prefetch(self, ttl: float) -> None:
        """Grant the lease of ``ttl`` on a thread of its own, unless one is cached or coming.

        A write that needs it meanwhile waits for that grant rather than asking for
        another; should it fail, the write grants one itself and reports the error.
        """
        seconds = max(1, math.ceil(ttl))
        with self._lock:
            if self._valid(seconds) is not None or seconds in self._coming:
                return
            done = self._coming[seconds] = threading.Event()

        def grant() -> None:
            try:
                self._grant(seconds)
            except Exception:  # noqa: S110 - the write that needs it grants again
                pass
            finally:
                with self._lock:
                    del self._coming[seconds]
                done.set()

        threading.Thread(target=grant, name="rdzv-etcd-lease", daemon=True).start()

    def with_lease(
        self, ttl: float | None, attempt: Callable[[int], _T], shared: str | None = None
    ) -> _T:
        """Run ``attempt(lease_id)``; if etcd lacks that lease, grant it and run it once more.

        Without ``ttl`` the lease id is 0: no lease. With ``shared``, the lease is the
        one of that scope (:func:`shared_lease_id`), granted here only if missing
        (another writer of the scope may have granted it meanwhile); without, this
        client's own, cached.
        """
        if ttl is None:
            return attempt(0)
        seconds = max(1, math.ceil(ttl))
        if shared is not None:
            lease = shared_lease_id(shared, seconds, time.time())
            try:
                return attempt(lease)
            except EtcdV3Error as e:
                if "lease not found" not in str(e):
                    raise
            self._grant_shared(lease, seconds)
            return attempt(lease)
        lease = self._lease(seconds)
        try:
            return attempt(lease)
        except EtcdV3Error as e:
            if "lease not found" not in str(e):
                raise
            with self._lock:
                if self._leases.get(seconds, (0, 0.0))[0] == lease:
                    del self._leases[seconds]
            return attempt(self._lease(seconds))

    def _grant_shared(self, lease: int, seconds: int) -> None:
        try:
            self._post("lease/grant", {"ID": str(lease), "TTL": str(2 * seconds)})
        except EtcdV3Error as e:
            if "lease already exists" not in str(e):
                raise  # else another writer of the scope granted it first

    def _lease(self, seconds: int) -> int:
        """A lease with at least ``seconds`` left, granted anew when the cached one runs low."""
        with self._lock:
            lease = self._valid(seconds)
            coming = self._coming.get(seconds)
        if lease is not None:
            return lease
        if coming is not None:
            coming.wait(self._read_timeout)
            with self._lock:
                lease = self._valid(seconds)
            if lease is not None:
                return lease
        return self._grant(seconds)

    def _valid(self, seconds: int) -> int | None:
        """The cached lease of ``seconds`` while it has at least that left (lock held)."""
        cached = self._leases.get(seconds)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        return None

    def _grant(self, seconds: int) -> int:
        started = time.monotonic()
        result = self._post("lease/grant", {"TTL": str(2 * seconds)})
        lease, granted = int_field(result.get("ID")), int_field(result.get("TTL"))
        if lease == 0:
            raise EtcdV3Error(f"etcd at {self._endpoint()} granted no lease: {result!r}")
        with self._lock:
            # Counted from before the request: the lease may be older than it looks.
            self._leases[seconds] = (lease, started + max(granted, seconds) - seconds)
        return lease
