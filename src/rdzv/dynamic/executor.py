"""The executor: runs a node's operations by performing the effects the core asks for.

Every decision is the core's (:mod:`rdzv.core.protocol`); this loop only fetches
the next effect, performs it against the backend and the clock, and feeds the
outcome back: ``step -> perform -> step``, until the operation finishes or fails.
Waits block in ``backend.wait_for_change``, so a waiting node wakes when the
state moves instead of polling. The events a step returns become log lines; an
:mod:`observer <rdzv.dynamic.observer>`, when set, sees each write and each end.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from rdzv.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousTimeoutError,
)
from rdzv.backends.base import HeartbeatBoard, IntentLog, RendezvousBackend
from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.effects import (
    Changed,
    CompareAndSet,
    Effect,
    Event,
    Fail,
    Failure,
    Finish,
    Outcome,
    Sleep,
    Slept,
    Started,
    Unreachable,
    WaitForChange,
    Written,
)
from rdzv.core.protocol import Context, Progress, step
from rdzv.dynamic.observer import Observer, OperationEnded, StateWritten, notify
from rdzv.dynamic.perform import Memory, perform, snapshot_of

__all__ = ["Clock", "RendezvousOpExecutor", "wall_clock"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_ERRORS: dict[Failure, type[RendezvousError]] = {
    Failure.CLOSED: RendezvousClosedError,
    Failure.TIMEOUT: RendezvousTimeoutError,
    Failure.GRACEFUL_EXIT: RendezvousGracefulExitError,
    Failure.UNREACHABLE: RendezvousConnectionError,
}


def wall_clock() -> float:
    """Seconds since the epoch, to the millisecond (shorter to encode, and enough)."""
    return round(time.time(), 3)


class RendezvousOpExecutor:
    """Runs operations of one node against a backend.

    Operations from several threads may run at once: each compare-and-set is
    checked by the backend, so no lock is held across an operation (a join that
    waits minutes must not block ``is_closed`` in another thread). The last state
    seen is kept so that the handler can read ranks without another request.
    ``observer`` (``None``: none) is called as :mod:`rdzv.dynamic.observer` says.
    """

    observer: Observer | None = None
    on_admitted: Callable[[], None] | None = None
    """Called when a read or write shows this node in the state after one that did not:
    the keep-alive times its next beat by the heartbeat its admission wrote."""

    def __init__(
        self,
        node: NodeDesc,
        backend: RendezvousBackend,
        settings: RendezvousSettings,
        clock: Clock = wall_clock,
    ) -> None:
        self._node = node
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._memory = Memory()
        self._has_log = isinstance(backend, IntentLog)
        self._has_board = isinstance(backend, HeartbeatBoard)
        self._running = 0  # operations in progress (a join and a launcher's read may overlap)
        self._running_lock = threading.Lock()
        self._lagging = False  # a request took a keep-alive interval or more lately

    @property
    def has_board(self) -> bool:
        """Whether heartbeats go to a board of their own (and not into the state)."""
        return self._has_board

    @property
    def state(self) -> RendezvousState:
        """The state as of the last read or write."""
        return self._memory.last.state

    def knows_this_node(self) -> bool:
        """Whether the last state seen holds this node."""
        return self._node in self._memory.last.state.last_heartbeats

    def last_heartbeat(self) -> float | None:
        """When this node last sent a heartbeat, as far as this process knows."""
        return self._memory.last_heartbeat(self._node)

    def run(self, progress: Progress) -> RendezvousState:
        """Carry out the operation that ``progress`` starts; return the last state it saw.

        Raises:
            RendezvousClosedError, RendezvousTimeoutError, RendezvousGracefulExitError:
                the protocol ended the operation so.
            RendezvousConnectionError: the backend stayed unreachable for its
                ``reconnect_window``, or until the deadline.
            RendezvousStateError: the stored state is corrupt.
            RendezvousError: the backend or rdzv failed in an unexpected way.
        """
        op = progress.op
        with self._running_lock:
            self._running += 1
        try:
            state = self._run(progress)
        except RendezvousError as e:
            notify(self.observer, OperationEnded(op, self.state, e), self._node)
            raise
        finally:
            self._ended()
        notify(self.observer, OperationEnded(op, state), self._node)
        return state

    def _ended(self) -> None:
        """Free what waits kept open (an etcd v3 watch) once no other operation runs."""
        with self._running_lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self._backend.release_waits()

    def _run(self, progress: Progress) -> RendezvousState:
        outcome: Outcome = Started()
        while True:
            try:
                result = step(progress, outcome, self._context())
            except Exception as e:
                raise RendezvousError(
                    f"Node {self._node}: the rendezvous protocol failed ({type(e).__name__}: "
                    f"{e}). This is a bug in rdzv; please report it with this message."
                ) from e
            _report(result.events)
            progress, effect = result.progress, result.effect
            if isinstance(effect, Finish):
                return effect.state
            if isinstance(effect, Fail):
                raise _ERRORS[effect.failure](effect.message)
            outcome = self._perform(effect)
            if isinstance(effect, CompareAndSet) and isinstance(outcome, Written):
                self._wrote(progress, effect.state, outcome.written)

    def _wrote(self, progress: Progress, state: RendezvousState, written: bool) -> None:
        if self.observer is not None:
            before = progress.snap.state if progress.snap is not None else RendezvousState()
            beats = self._memory.observed
            wrote = StateWritten(progress.op, before, state, written, self._clock(), beats)
            notify(self.observer, wrote, self._node)

    def _context(self) -> Context:
        now = self._clock()
        return Context(
            self._node,
            self._settings,
            now,
            random.random(),  # noqa: S311 - spreads retries, not a secret
            self._has_log,
            self._has_board,
            self._backend.reconnect_window,
            self._memory.observed,
            self._memory.checked,
            self._memory.lag(now, self._settings.heartbeat_expiry),
        )

    def _perform(self, effect: Effect) -> Outcome:
        try:
            if isinstance(effect, WaitForChange):
                timeout = max(effect.until - self._clock(), 0.0)
                outcome: Outcome = Changed(
                    snapshot_of(self._backend.wait_for_change(effect.token, timeout))
                )
            elif isinstance(effect, Sleep):
                time.sleep(max(effect.until - self._clock(), 0.0))
                outcome = Slept()
            else:
                known = self._memory.last
                started = time.monotonic()
                try:
                    outcome = perform(
                        effect, self._backend, self._node, self._settings, known=known
                    )
                finally:
                    self._took(time.monotonic() - started)
        except RendezvousConnectionError as e:
            return Unreachable(str(e))
        except RendezvousError:
            raise
        except Exception as e:
            raise RendezvousError(
                f"The rendezvous backend '{self._backend.name}' failed in an unexpected way "
                f"({type(e).__name__}: {e}). Check the backend's configuration; if it is "
                "right, report this as a bug of the backend."
            ) from e
        admitted = self.on_admitted
        was_known = admitted is not None and self.knows_this_node()
        self._memory.update(self._node, effect, outcome)
        if admitted is not None and not was_known and self.knows_this_node():
            admitted()
        return outcome

    def _took(self, seconds: float) -> None:
        """Keep a request's time as the backend's lag (:attr:`Context.lag`), and say when
        it starts to count, and when it no longer does."""
        now = self._clock()
        self._memory.took(now, seconds)
        interval = self._settings.keep_alive_interval.total_seconds()
        if seconds >= interval:
            if not self._lagging:
                self._lagging = True
                logger.warning(
                    "Node %s: a request to the rendezvous backend '%s' took %.1f s, as long "
                    "as the keep-alive interval (%.1f s) or longer. Until its requests are "
                    "quick again, this node judges other nodes' heartbeats late by as much, "
                    "so that a stalled backend does not make them look dead; a node that "
                    "died meanwhile is dropped that much later. If this repeats, check the "
                    "backend's load and disk.",
                    self._node,
                    self._backend.name,
                    seconds,
                    interval,
                )
        elif self._lagging and self._memory.lag(now, self._settings.heartbeat_expiry) < interval:
            self._lagging = False
            logger.info(
                "Node %s: the rendezvous backend '%s' answers quickly again; heartbeats are "
                "judged by this node's clock again.",
                self._node,
                self._backend.name,
            )


def _report(events: tuple[Event, ...]) -> None:
    for event in events:
        logger.log(logging.getLevelName(event.level.upper()), "%s", event.message)
