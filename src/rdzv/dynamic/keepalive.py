"""A node's heartbeats: when to send them, and the thread that sends them."""

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
    """Sends a node's heartbeats from its first join (:meth:`joining` on a backend with a
    board, :meth:`joined` otherwise) to :meth:`stop`.

    Each beat holds ``lock``, which the handler's reads share (a launcher's polls wait
    for a beat in flight, as torch's do: that holds their pace to the backend's).
    A heartbeat is due one interval after the last one this node knows of: its own,
    or the one an admission wrote for it. When a read first shows the node in the
    state, :meth:`nudge` wakes the thread to time its next beat from that record, so
    that a node admitted late in its intent's life beats before the record expires.
    After a failure the next attempt comes a random fraction of an interval later,
    not at once: an overdue heartbeat would otherwise be retried in a tight loop by
    every node against a backend that is coming back.
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
        self._interval = settings.keep_alive_interval.total_seconds()
        self._thread: KeepAliveThread | None = None
        self._joining_since: float | None = None
        self._beating = lock

    def joining(self) -> None:
        """A join starts: the beats go on beside it (started if need be).

        A member beats once its heartbeat is late (:func:`~rdzv.core.pacing.late_beat`),
        and a node the state does not hold yet from when it would post its intent
        again (:func:`~rdzv.core.pacing.intent_refresh_age`): admitted,
        it has its intent's time for a heartbeat, and a node far from the backend
        learnt of its admission when that had expired; the completion read the board
        for it, found nothing newer, and dropped it. Not sooner: from an interval, the
        4,096 nodes of a first round on c10d beat 2.9 times each instead of 0.7, and the
        round took 34 s instead of 10.
        """
        self._joining_since = self._clock()
        self._start()
        self.nudge()

    def joined(self) -> None:
        """A join returned: the beats go on (started if need be), and one already due is
        sent at once, on the caller's thread.

        Right after a round completes the caller reads the round's address from the
        store, and a beat in flight on another thread would make the store open a
        second connection, thousands of them when a large round completes.
        """
        self._joining_since = None
        if self._thread is None:
            self._start()
            return
        if self._until_due() <= 0 and self._beating.acquire(blocking=False):
            try:  # (not while a beat or a read is in flight: no wait for it)
                self._beat()
            finally:
                self._beating.release()
        self.nudge()  # due an interval after the last beat again, not once late

    def _start(self) -> None:
        """Start the thread: at once if a beat is due (sent here), else at a random point
        of the time left, as the nodes of a round all joined at one instant."""
        if self._thread is not None:
            return
        due = self._due()
        if due is not None and due <= self._clock():
            first = self.beat()
        else:
            first = pacing.first_heartbeat(self._delay(), random.random())  # noqa: S311
        self._thread = KeepAliveThread(self.beat, first, f"rdzv-keep-alive-{self._node}")

    def nudge(self) -> None:
        """Time the next heartbeat again now: the state may hold a newer one of this node."""
        thread = self._thread
        if thread is not None:
            thread.wake()

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
        self._joining_since = None

    def beat(self) -> float:
        """Send a heartbeat if one is due; return the seconds until the next attempt."""
        with self._beating:  # the thread's, or the caller's of joined(); and a launcher's reads
            return self._beat()

    def _beat(self) -> float:
        known = self._executor.knows_this_node() or self._joining_since is not None
        if known and (early := self._until_due()) > 0:
            return early  # woken by a nudge, or the state's record of this node is newer
        try:
            deadline = self._clock() + self._settings.timeout.heartbeat.total_seconds()
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
            # Not in the state, nor joining (evicted): nothing to keep alive; its
            # launcher learns it from num_nodes_waiting().
            return self._interval
        return self._delay()

    def _due(self) -> float | None:
        return pacing.beat_due(
            self._executor.last_heartbeat(),
            self._joining_since,
            self._executor.knows_this_node(),
            self._settings.heartbeat_expiry,
            self._interval,
        )

    def _until_due(self) -> float:
        due = self._due()
        return 0.0 if due is None else due - self._clock()

    def _delay(self) -> float:
        due = self._due()
        last = None if due is None else due - self._interval
        return pacing.heartbeat_delay(last, self._clock(), self._interval)


UNEXPECTED_RETRY = 1.0
"""Seconds, at least, before a heartbeat that raised an unexpected error is tried again."""


class KeepAliveThread:
    """Calls ``beat`` (a bound method) after ``first`` seconds, then after whatever delay it
    returns (or at once when woken), until stopped or until the method's object is
    collected. An unexpected error of ``beat`` is logged, and the beats go on.

    The thread holds only a weak reference to the object, so dropping the last
    reference to a handler stops its heartbeats (its node then expires).
    """

    def __init__(self, beat: Callable[[], float], first: float, name: str) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        method = weakref.WeakMethod(beat)
        self._thread = threading.Thread(
            target=self._run, args=(method, first, self._stop, self._wake), name=name, daemon=True
        )
        self._release = track(beat.__self__, self._halt, "keep-alive thread")  # type: ignore[attr-defined]
        self._thread.start()

    @staticmethod
    def _run(
        method: weakref.WeakMethod[Callable[[], float]],
        delay: float,
        stop: threading.Event,
        wake: threading.Event,
    ) -> None:
        while True:
            wake.wait(delay)
            wake.clear()
            if stop.is_set():
                return
            beat = method()
            if beat is None:
                return
            try:
                delay = beat()
            except Exception:
                # Not for good: its node would be dropped, join again, and be dropped
                # again, for ever, its thread never started again.
                delay = max(delay, UNEXPECTED_RETRY)
                logger.exception(
                    "The heartbeats of %s failed unexpectedly (a bug in rdzv; please "
                    "report it); the next comes in %.1f s.",
                    threading.current_thread().name,
                    delay,
                )
            del beat

    def wake(self) -> None:
        """Call ``beat`` now rather than after the delay it last returned."""
        self._wake.set()

    def _halt(self) -> None:
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Stop, and wait up to ``timeout`` seconds for the thread (unless called from it);
        whether it has ended (or is the caller)."""
        self._release()  # halts the thread
        if threading.current_thread() is self._thread:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
