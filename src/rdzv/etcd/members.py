"""The members of one etcd cluster that a client may ask, and which of them to ask first.

Both etcd clients of rdzv (python-etcd for the v2 API, rdzv's own for v3) send
each request through a :class:`MemberPool`. One request gets one time budget
(the client's ``read_timeout``, or a watch's own timeout). The pool tries the
members in turn within it: the one that answered last, then the others in the
order listed, then those that failed lately (by the age of their failure). A
member that fails is avoided for :data:`AVOID_SECONDS`, so that a dead or hung
one costs one request, not every request. An ordinary request gives each member
an equal share of the budget: a hung member (SIGSTOPped, partitioned) then costs
``read_timeout / members`` before the next one is asked, and the whole pass stays
within ``read_timeout``. A watch gives each member what remains of its timeout:
it waits on one member, and moves on only when that member fails.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["AVOID_SECONDS", "PASS_PAUSE", "MemberPool"]

logger = logging.getLogger(__name__)

PASS_PAUSE = 0.1
"""Seconds between two passes over members that all failed (see :meth:`MemberPool.call`)."""

AVOID_SECONDS = 10.0
"""How long a member that failed is tried only after the others."""

_T = TypeVar("_T")


class MemberPool:
    """The client URLs of one cluster's members and how recently each failed; thread-safe.

    Args:
        urls: ``protocol://host:port`` of each member, in the user's order.
        is_member_failure: whether an exception of an attempt says the member
            failed (unreachable, timed out, without a leader) rather than that
            the cluster answered (a key not found, a failed compare, a denial).
        exhausted: the exception to raise when every member failed, from the
            list of ``(url, failure)``; with one member the failure itself is raised.
    """

    def __init__(
        self,
        urls: Sequence[str],
        is_member_failure: Callable[[BaseException], bool],
        exhausted: Callable[[list[tuple[str, BaseException]]], BaseException],
    ) -> None:
        if not urls:
            raise ValueError("An etcd cluster needs at least one member.")
        self._urls = tuple(urls)
        self._is_member_failure = is_member_failure
        self._exhausted = exhausted
        self._lock = threading.Lock()
        self._current = 0
        self._failed_at: dict[int, float] = {}

    @property
    def urls(self) -> tuple[str, ...]:
        """Every member's URL, in the order given."""
        return self._urls

    def describe(self) -> str:
        """The members' URLs joined by commas, for messages: errors name every member."""
        return ",".join(self._urls)

    def order(self) -> list[int]:
        """The members to try, best first: the last that answered, the others, the failed."""
        now = time.monotonic()
        with self._lock:
            count = len(self._urls)
            rotation = [(self._current + k) % count for k in range(count)]
            healthy = [i for i in rotation if self._healthy(i, now)]
            failed = sorted(
                (i for i in rotation if i not in healthy), key=lambda i: self._failed_at[i]
            )
        return healthy + failed

    def call(self, attempt: Callable[[str, float], _T], budget: float, *, split: bool) -> _T:
        """Return ``attempt(url, timeout)`` from the first member that does not fail.

        The members are tried in turn, within ``budget`` seconds in all. With
        ``split`` each gets ``budget / members`` of what remains, else what remains.
        When every member failed and time remains (the cluster is electing a leader:
        the old one is gone, the others answer "no leader" or not at all), they are
        tried again after :data:`PASS_PAUSE`, until the budget is spent; an infinite
        budget gets one pass. An exception that is not a member failure is raised
        at once.

        Raises:
            BaseException: the single member's failure, or ``exhausted(...)`` of
                every failure of the last pass when there are several members.
        """
        deadline = time.monotonic() + budget
        while True:
            share = (deadline - time.monotonic()) / len(self._urls) if split else budget
            failures: list[tuple[str, BaseException]] = []
            for index in self.order():
                remaining = deadline - time.monotonic()
                if failures and remaining <= 0:
                    break
                url = self._urls[index]
                try:
                    result = attempt(url, max(min(share, remaining), 0.001))
                except Exception as e:
                    if not self._is_member_failure(e):
                        raise
                    self._failed(index, e)
                    if len(self._urls) == 1:
                        raise
                    failures.append((url, e))
                    continue
                self._answered(index)
                return result
            remaining = deadline - time.monotonic()
            if math.isinf(budget) or remaining <= PASS_PAUSE:
                raise self._exhausted(failures) from failures[-1][1]
            time.sleep(PASS_PAUSE)

    def _healthy(self, index: int, now: float) -> bool:
        failed = self._failed_at.get(index)
        return failed is None or now - failed >= AVOID_SECONDS

    def _answered(self, index: int) -> None:
        with self._lock:
            self._failed_at.pop(index, None)
            self._current = index

    def _failed(self, index: int, error: BaseException) -> None:
        with self._lock:
            self._failed_at[index] = time.monotonic()
            if index != self._current or len(self._urls) == 1:
                return
            now = time.monotonic()
            count = len(self._urls)
            later = [(index + k) % count for k in range(1, count)]
            fine = [i for i in later if self._healthy(i, now)]
            self._current = (fine or later)[0]
            moved_to = self._urls[self._current]
        # One line a move: only the thread whose failure moves the pool logs it.
        logger.warning(
            "etcd member %s failed (%s: %s); moving to %s.",
            self._urls[index],
            type(error).__name__,
            str(error)[:200],
            moved_to,
        )
