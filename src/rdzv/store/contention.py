"""The pacing of a compare-and-swap loop on a hot key, shared by the etcd stores.

etcd has no atomic update of a value, so ``add``, ``append`` and ``compare_set``
read, compute and swap, and try again when another writer swapped first.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

from rdzv.store.base import StoreTimeoutError

__all__ = ["Contention"]

_BACKOFF_BASE = 0.001
_BACKOFF_CAP = 0.05


class Contention:
    """Paces a compare-and-swap loop that keeps losing, and bounds it by the store timeout."""

    def __init__(self, what: str, timeout: timedelta) -> None:
        self._what = what
        self._timeout = timeout.total_seconds()
        self._deadline = time.monotonic() + self._timeout
        self._attempt = 0

    def lost(self) -> None:
        """Sleep before the next try (full jitter: losers do not retry in step).

        Raises:
            StoreTimeoutError: the loop has run for the whole store timeout.
        """
        pause = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**self._attempt))  # noqa: S311
        self._attempt += 1
        if time.monotonic() + pause > self._deadline:
            raise StoreTimeoutError(
                f"Could not {self._what} within {self._timeout:g} s: other writers changed "
                f"the key first {self._attempt} times (etcd has no atomic update, so the "
                "store retries a compare-and-swap). Spread the writers over more keys, "
                "or raise the store timeout."
            )
        time.sleep(pause)
