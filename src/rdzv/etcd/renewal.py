"""When a node renews the TTL of the rendezvous state, and what it says when it cannot.

A stable round writes no state (heartbeats have keys of their own), so each node's
heartbeats renew it (:meth:`rdzv.etcd.backend.EtcdKVBackend.beat`): while one node
beats, the state does not expire; once none does, it expires as after its last write.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from rdzv.api import RendezvousConnectionError

__all__ = ["RENEWAL", "StateRenewal"]

logger = logging.getLogger(__name__)

RENEWAL = (0.125, 0.25)
"""A node renews the state's TTL at its first beat this many TTLs (drawn between the two)
after its last renewal: the renewals of a round's nodes spread over time. At most a
quarter apart, a node alone keeps the state: etcd-v2 refreshes it once less than three
quarters are left (:data:`rdzv.etcd.kv_v2.RENEW_BELOW`), so half a TTL is left to
spare, less the keep-alive interval a beat may come late."""


class StateRenewal:
    """One node's renewals of the state at ``key``, written with a TTL of ``ttl`` seconds."""

    def __init__(self, key: str, ttl: int) -> None:
        self._key = key
        self._ttl = ttl
        self._at = self._next()
        self._failed = False

    def due(self) -> bool:
        """Whether the next heartbeat renews the state."""
        return time.monotonic() >= self._at

    def renew(self, request: Callable[[], None]) -> None:
        """Send ``request`` (the renewal); a failure is logged once until one succeeds, and
        the renewal stays due, for the next heartbeat."""
        try:
            request()
        except RendezvousConnectionError as e:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "Could not renew the TTL (%d s) of the rendezvous state %s: %s. Trying "
                    "again at each heartbeat; the state expires if none succeeds in time.",
                    self._ttl,
                    self._key,
                    e,
                )
            return
        if self._failed:
            self._failed = False
            logger.info("The TTL of the rendezvous state %s is renewed again.", self._key)
        self._at = self._next()

    def _next(self) -> float:
        return time.monotonic() + self._ttl * random.uniform(*RENEWAL)  # noqa: S311
