"""Leases that keys of one TTL share, so that a write with a TTL costs one request.

One lease of twice the TTL serves every write of that TTL while at least the TTL
remains on it; a key written so lives between one and two TTLs past its last
write. :class:`~rdzv.etcd.v3_client.EtcdV3Client` keeps one :class:`LeaseCache`.
A caller that knows it will write soon has the lease granted beforehand
(:meth:`LeaseCache.prefetch`), on a thread that ends with the grant.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rdzv.etcd.v3_wire import EtcdV3Error, int_field

__all__ = ["LeaseCache"]

_T = TypeVar("_T")


class LeaseCache:
    """A lease per TTL, granted through ``post`` and granted anew when it runs low; thread-safe.

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

    def with_lease(self, ttl: float | None, attempt: Callable[[int], _T]) -> _T:
        """Run ``attempt(lease_id)``; if etcd lost the cached lease, once more on a new one.

        Without ``ttl`` the lease id is 0: no lease.
        """
        if ttl is None:
            return attempt(0)
        seconds = max(1, math.ceil(ttl))
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
