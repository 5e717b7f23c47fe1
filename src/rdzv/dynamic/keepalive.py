"""A node's heartbeats while it takes part in a round: when to send them, and the thread."""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections.abc import Callable

from rdzv._reaper import track
from rdzv.api import RendezvousError
from rdzv.core import NodeDesc, RendezvousSettings, pacing, protocol
from rdzv.dynamic.executor import Clock, RendezvousOpExecutor

__all__ = ["Heartbeats", "KeepAliveThread"]

logger = logging.getLogger(__name__)


class Heartbeats:
    """Sends a node's heartbeats from :meth:`start` to :meth:`stop`.

    Each one runs the keep-alive operation under ``lock``, which the handler's other
    reads share. After a failure the next attempt comes a random fraction of an
    interval later, not at once: an overdue heartbeat would otherwise be retried
    in a tight loop by every node against a backend that is coming back.
    """

    def __init__(
        self,
        node: NodeDesc,
        settings: RendezvousSettings,
        executor: RendezvousOpExecutor,
        clock: Clock,
        lock: threading.Lock,
    ) -> None:
        self._node = node
        self._settings = settings
        self._executor = executor
        self._clock = clock
        self._lock = lock
        self._interval = settings.keep_alive_interval.total_seconds()
        self._thread: KeepAliveThread | None = None

    def start(self) -> None:
        """Start sending heartbeats, the first at a random point of the time left.

        A heartbeat already due is sent at once, on the caller's thread: right after a
        round completes, the caller reads the round's address from the store, and a
        beat in flight on another thread would make the store open a second
        connection, thousands of them when a large round completes.
        """
        last = self._executor.last_heartbeat()
        if last is not None and last + self._interval <= self._clock():
            first = self.beat()
        else:
            first = pacing.first_heartbeat(self._delay(), random.random())  # noqa: S311
        self._thread = KeepAliveThread(self.beat, first, f"rdzv-keep-alive-{self._node}")

    def stop(self) -> None:
        """Stop, and wait for a heartbeat in flight: no longer than its own timeout (a beat
        never outlasts it), plus a second for the thread to notice."""
        if self._thread is not None:
            wait = self._settings.timeout.heartbeat.total_seconds() + 1.0
            if not self._thread.stop(wait):
                logger.warning(
                    "Node %s: a heartbeat was still in flight %.0f s after the keep-alive "
                    "was stopped; it is left to end on its own.",
                    self._node,
                    wait,
                )
            self._thread = None

    def beat(self) -> float:
        """Send a heartbeat if one is due; return the seconds until the next attempt."""
        with self._lock:
            try:
                deadline = self._clock() + self._settings.timeout.heartbeat.total_seconds()
                known = self._executor.knows_this_node()
                # retried here, and stop() must not wait through an outage
                self._executor.run(protocol.keep_alive(deadline, known=known))
            except RendezvousError as e:
                logger.warning(
                    "Node %s failed to send a heartbeat to rendezvous '%s': %s",
                    self._node,
                    self._settings.run_id,
                    e,
                )
                return pacing.heartbeat_retry(self._interval, random.random())  # noqa: S311
        if not known:
            # No longer in the state (evicted): nothing to keep alive; its launcher
            # learns it from num_nodes_waiting().
            return self._interval
        return self._delay()

    def _delay(self) -> float:
        return pacing.heartbeat_delay(
            self._executor.last_heartbeat(), self._clock(), self._interval
        )


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
        self._release = track(beat.__self__, self._stop.set, "keep-alive thread")  # type: ignore[attr-defined]
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

    def stop(self, timeout: float) -> bool:
        """Stop, and wait up to ``timeout`` seconds for the thread (unless called from it);
        whether it has ended (or is the caller)."""
        self._release()
        if threading.current_thread() is self._thread:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
