"""Releasing what a dropped object held, without ever blocking the garbage collector.

A finalizer runs wherever the collector happens to run: on any thread, at any
allocation, possibly while that very thread holds a lock the release needs, or is
inside the start-up of the server the release would join. So the only thing a
finalizer here does is put the release on a :class:`queue.SimpleQueue`, whose
``put`` is documented reentrant and safe in weakref callbacks. A daemon thread,
the reaper, runs the releases; it is started by ordinary code when an object is
tracked, and ends once nothing tracked is left. An explicit close runs the
release at once, on the caller's thread, and at interpreter exit every release
still pending runs on the main thread, so etcd processes and servers never
outlive a process that exits normally.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable

__all__ = ["Release", "reaper_alive", "track"]

logger = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
"""How long the reaper waits for work before it checks whether anything is tracked."""


class _Reaper:
    """The queue of collected owners' releases, the releases still tracked, and the thread."""

    def __init__(self) -> None:
        self.pending: queue.SimpleQueue[Release] = queue.SimpleQueue()
        self.reset()

    def reset(self) -> None:
        # Also after a fork: the child has no reaper thread, and the lock may have been
        # held at the fork. Releases tracked before it stay (each checks the pid).
        self.lock = threading.Lock()
        """Guards ``live`` and ``thread``; taken only by ordinary code, never by a finalizer."""
        self.live: dict[int, Release] = getattr(self, "live", {})
        self.thread: threading.Thread | None = None

    def add(self, release: Release) -> None:
        with self.lock:
            self.live[id(release)] = release
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.reap, name="rdzv-reaper", daemon=True)
                self.thread.start()

    def forget(self, release: Release) -> None:
        with self.lock:
            self.live.pop(id(release), None)

    def reap(self) -> None:
        while True:
            try:
                release = self.pending.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self.lock:
                    if not self.live and self.pending.empty():
                        self.thread = None
                        return
                continue
            _run(release)

    def release_all(self) -> None:
        """At exit: run every release still pending or tracked, on this thread."""
        while True:
            try:
                _run(self.pending.get_nowait())
            except queue.Empty:
                break
        with self.lock:
            live = list(self.live.values())
        for release in reversed(live):
            _run(release)


_reaper = _Reaper()


class Release:
    """Runs one release once: when called, or after its owner is collected.

    Keep it on the owner and call it from ``close()``; the call is idempotent and
    runs the release on the calling thread.
    """

    __slots__ = ("__weakref__", "_fn", "_once", "_ref", "what")

    def __init__(self, owner: object, fn: Callable[[], None], what: str) -> None:
        self._fn: Callable[[], None] | None = fn
        self._once = threading.Lock()
        self.what = what
        self._ref = weakref.ref(owner, self._collected)

    @property
    def alive(self) -> bool:
        """Whether the release has yet to run."""
        return self._fn is not None

    def _collected(self, _ref: object) -> None:
        # Runs inside the garbage collector: nothing but the reentrant put.
        _reaper.pending.put(self)

    def __call__(self) -> None:
        with self._once:
            fn, self._fn = self._fn, None
        if fn is None:
            return
        _reaper.forget(self)
        fn()


def track(owner: object, fn: Callable[[], None], what: str) -> Release:
    """Run ``fn`` once, when the returned :class:`Release` is called or ``owner`` is collected.

    ``fn`` must not refer to ``owner``, or the owner is never collected.
    """
    release = Release(owner, fn, what)
    _reaper.add(release)
    return release


def reaper_alive() -> bool:
    """Whether the reaper thread runs (it ends soon after nothing is tracked)."""
    thread = _reaper.thread
    return thread is not None and thread.is_alive()


def _run(release: Release) -> None:
    try:
        release()
    except Exception:
        logger.exception("Releasing a dropped %s failed.", release.what)


atexit.register(_reaper.release_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reaper.reset)
