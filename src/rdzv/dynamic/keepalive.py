"""The keep-alive thread: a node's heartbeats while it takes part in a round."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

__all__ = ["KeepAliveThread"]


class KeepAliveThread:
    """Calls ``beat`` (a bound method) after ``first`` seconds, then after whatever delay it
    returns, until stopped or until the method's object is collected.

    The thread holds only a weak reference to the object, so dropping the last
    reference to a handler stops its heartbeats (its node then expires).
    """

    def __init__(self, beat: Callable[[], float], first: float, name: str) -> None:
        self._stop = threading.Event()
        method = weakref.WeakMethod(beat)
        self._thread = threading.Thread(
            target=self._run, args=(method, first, self._stop), name=name, daemon=True
        )
        self._finalizer = weakref.finalize(beat.__self__, self._stop.set)  # type: ignore[attr-defined]
        self._finalizer.atexit = False
        self._thread.start()

    @staticmethod
    def _run(
        method: weakref.WeakMethod[Callable[[], float]], delay: float, stop: threading.Event
    ) -> None:
        while not stop.wait(delay):
            beat = method()
            if beat is None:
                return
            delay = beat()
            del beat

    def stop(self) -> None:
        """Stop and wait for the thread (unless called from it)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
