"""``LeaseRenewal``: keep an etcd key alive by renewing its TTL from a background thread.

torch's legacy rendezvous renews its keys in a thread that catches two exception
types; any other etcd error (a timeout, a refused connection wrapped by
python-etcd, an etcd that is restarting) ends the thread without a word, and the
job's keys expire a few seconds later (pytorch issue 194870). Here every failure
is logged with its cause and retried with a capped, jittered exponential
backoff; after a success the normal interval resumes. Only two outcomes end the
renewal before :meth:`LeaseRenewal.stop`: the key is gone (its lease lapsed or
someone deleted it, and a renewal cannot bring it back), or etcd says this key
cannot have its TTL renewed at all (etcd 3.5's v2 API refuses to renew a
directory's TTL).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Final

import etcd

from rdzv._reaper import track

__all__ = ["MAX_RETRY_DELAY", "LeaseRenewal"]

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY: Final = 2.0
"""Longest wait between two attempts after a failure (never more than the interval):
well inside the 10 s TTL of a participant's key, so a key survives an etcd that is
away for a few seconds."""
_FIRST_RETRY_DELAY: Final = 0.25


class LeaseRenewal:
    """Renew the TTL of ``key`` every ``interval`` seconds (default ``ttl / 2``) until stopped.

    Args:
        client: the etcd client of the renewals. Its ``read_timeout`` bounds each
            attempt, and so how long :meth:`stop` may wait; give it one well under
            ``ttl``.
        key: the etcd key (or directory, with ``is_dir``) to keep alive.
        ttl: the TTL, in seconds, each renewal sets.
        is_dir: ``key`` is a directory, renewed the way etcd's v2 API documents
            for directories (``dir=true&prevExist=true``): a plain refresh fails.
        interval: seconds between renewals (default ``ttl / 2``, as torch).

    Raises:
        ValueError: a TTL or interval that is not positive.

    The thread holds no reference to this object: dropping it (and so the
    handler that owns it) stops the renewal, as :meth:`stop` does.
    """

    def __init__(
        self,
        client: etcd.Client,
        key: str,
        ttl: int,
        *,
        is_dir: bool = False,
        interval: float | None = None,
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.interval = ttl / 2 if interval is None else interval
        if ttl <= 0 or self.interval <= 0:
            raise ValueError(
                f"The TTL ({ttl}) and renewal interval ({self.interval}) of the lease of {key} "
                "must be positive."
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_renew_until_stopped,
            args=(client, key, ttl, is_dir, self.interval, self._stop),
            name=f"rdzv-lease:{key}",
            daemon=True,
        )
        self._join_timeout = client.read_timeout + 1.0
        self._release = track(self, self._stop.set, "lease keeper")

    def start(self) -> LeaseRenewal:
        """Start renewing (the first renewal happens at once); return ``self``."""
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        """Whether the renewal thread is still running."""
        return self._thread.is_alive()

    def stop(self, wait: bool = True) -> None:
        """Stop renewing; with ``wait``, return once the thread has ended.

        The key is left as it is: it expires one TTL after its last renewal.
        """
        self._release()
        if (
            wait
            and self._thread.ident is not None
            and self._thread is not threading.current_thread()
        ):
            self._thread.join(self._join_timeout)


def _renew_until_stopped(
    client: etcd.Client,
    key: str,
    ttl: int,
    is_dir: bool,
    interval: float,
    stop: threading.Event,
) -> None:
    failures = 0
    first_failure = 0.0
    delay = 0.0
    while not stop.wait(delay):
        try:
            _renew(client, key, ttl, is_dir)
        except etcd.EtcdKeyNotFound:
            logger.warning(
                "The etcd key %s is gone (its TTL of %d s ran out, or it was deleted); its lease "
                "renewal stops. If this node is still part of the round, the other nodes will "
                "start a new one.",
                key,
                ttl,
            )
            return
        # Deliberately broad: whatever goes wrong in one attempt (python-etcd's
        # errors, urllib3's, OSError, a bug in a dependency) must not end the
        # renewal, or the job's keys expire silently.
        except Exception as e:
            if _cannot_renew(e, is_dir):
                logger.info(
                    "etcd at %s cannot renew the TTL of the directory %s (%s); it keeps the TTL "
                    "of %d s it was created with, as it does for torch's nodes.",
                    client.base_uri,
                    key,
                    e,
                    ttl,
                )
                return
            failures += 1
            if failures == 1:
                first_failure = time.monotonic()
            delay = _retry_delay(failures, interval)
            # The first failure and then every power of two: a long etcd outage
            # is reported without one line every two seconds.
            if failures & (failures - 1) == 0:
                logger.warning(
                    "Renewing the lease of etcd key %s at %s failed (attempt %d): %s: %s. "
                    "Retrying in %.2f s; the key expires %d s after its last renewal.",
                    key,
                    client.base_uri,
                    failures,
                    type(e).__name__,
                    e,
                    delay,
                    ttl,
                )
            continue
        if failures:
            logger.warning(
                "Renewed the lease of etcd key %s again after %d failed attempts over %.1f s.",
                key,
                failures,
                time.monotonic() - first_failure,
            )
            failures = 0
        delay = interval


def _renew(client: etcd.Client, key: str, ttl: int, is_dir: bool) -> None:
    if is_dir:
        client.write(key, None, ttl=ttl, dir=True, prevExist=True)
    else:
        client.refresh(key, ttl=ttl)


def _cannot_renew(error: Exception, is_dir: bool) -> bool:
    """Whether etcd refused to renew a directory's TTL, which no retry changes."""
    if not is_dir or not isinstance(error, etcd.EtcdException):
        return False
    cause = str((error.payload or {}).get("cause", ""))
    return isinstance(error, etcd.EtcdNotFile) or "Not a file" in cause


def _retry_delay(failures: int, interval: float) -> float:
    """Exponential in the number of failures, capped, with equal jitter.

    Jitter keeps the nodes of a job from all hitting an etcd that comes back at once.
    """
    cap = min(interval, MAX_RETRY_DELAY)
    ceiling = min(cap, _FIRST_RETRY_DELAY * 2.0 ** min(failures - 1, 16))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrecy
