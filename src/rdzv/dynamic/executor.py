"""The loop that carries out an operation: read -> decide -> reduce -> compare-and-set.

This is where the pure core meets the backend and the clock. One iteration:

1. read the state (or take the one a lost compare-and-set returned);
2. merge the heartbeats seen outside it and drop the nodes whose heartbeat
   expired (:func:`rdzv.core.drop_dead_nodes`);
3. ask the operation's decision function for the next action;
4. if it writes, apply it with :func:`rdzv.core.apply_action` and compare-and-set;
   if it waits, block in ``backend.wait_for_change`` until the state moves or
   :func:`rdzv.core.next_wakeup` says time alone may change the decision.

Torch sleeps one second whenever it waits; here a node wakes on the change.

When the backend offers the side channels of :mod:`rdzv.core.intents`, a join
posts an intent and admits every pending one in a single write, and a heartbeat
goes to the node's own record instead of the shared state: the state then
changes a few times per round instead of once per node and per heartbeat.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import attrs

from rdzv.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousGracefulExitError,
    RendezvousTimeoutError,
)
from rdzv.core import (
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    apply_action,
    dead_nodes,
    deadline_after,
    decode_state,
    drop_dead_nodes,
    encode_state,
    next_wakeup,
)
from rdzv.core.intents import (
    JoinIntent,
    admit_intents,
    decode_beat,
    decode_intents,
    encode_beat,
    encode_intent,
    folder,
    merge_heartbeats,
    should_hold,
)
from rdzv.dynamic.backend import HeartbeatBoard, IntentLog, RendezvousBackend, Token

__all__ = ["Clock", "Decide", "RendezvousOpExecutor", "wall_clock"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Decide = Callable[[RendezvousState, NodeDesc, RendezvousSettings, float, float], Action]

MAX_WAIT = 2.0
"""Longest single wait for a change; a safety net should a backend miss a notification."""
_WAKE_MARGIN = 0.005
"""Sleep a little past a wake-up time: the decisions compare with strict inequalities."""
_UNSEEN_INTENT_WAIT = 0.05
"""Pause when this node's own intent is not visible yet, before reading the log again."""

_PATIENCE = 1.0
"""Longest wait for the write of the node designated to make it (see :class:`_Deferral`)."""

_HOLD_POLL = 0.1
"""How often, at most, the designated node reads the log while it holds the fold (see
should_hold); it starts at a few milliseconds, for the nodes of a small job arrive together."""

_PLACEMENTS = frozenset(
    {
        Action.ADD_TO_PARTICIPANTS,
        Action.ADD_TO_WAIT_LIST,
        Action.ADD_TO_REDUNDANCY_LIST,
        Action.REJOIN,
    }
)


def wall_clock() -> float:
    """Seconds since the epoch, to the millisecond (shorter to encode, and enough)."""
    return round(time.time(), 3)


@attrs.define
class _Outage:
    """Since when the backend has failed, and how many attempts failed: paces the retries."""

    since: float
    failures: int = 0
    attempt_started: float | None = None
    """When the last retry began: how long an attempt takes shows from it."""

    def next_pause(self) -> float:
        """A random pause that grows with each failure (0.05 s up to 1 s), so that the
        nodes of a job do not all come back at the same instant."""
        self.failures += 1
        return random.uniform(0.5, 1.0) * min(0.05 * 2.0 ** (self.failures - 1), 1.0)  # noqa: S311


@attrs.define
class _Deferral:
    """Waiting for another node to make a write that every waiting node would make.

    When a thousand nodes would each admit the same pending joins, or mark the
    same round complete, all but one compare-and-set fails, and each failure
    costs a thousand-node state each way. So one node is designated (the first
    pending intent's, the smallest participant) and the others wait for its
    write. A designated node that died or stalls costs at most its patience:
    then the others write themselves.
    """

    since: float | None = None
    patience: float = 0.0

    def defer(self, node: NodeDesc, designated: NodeDesc | None, now: float) -> float:
        """Seconds to wait for ``designated``'s write; 0 when this node should write."""
        if designated is None or designated == node:
            return 0.0
        if self.since is None:
            self.since = now
            self.patience = random.uniform(0.5, 1.0) * _PATIENCE  # noqa: S311
        return max(self.since + self.patience - now, 0.0)

    def progressed(self) -> None:
        """The state moved: whoever is designated now gets a full patience."""
        self.since = None


@attrs.define
class _Joining:
    """What a node's join has done with the intent log so far."""

    posted: float | None = None
    """When it last posted its intent."""
    holds: int = 0
    """Times it held the fold (see should_hold): its log reads grow further apart."""
    held_since: float | None = None
    """When it began to hold the fold: it holds for one keep-alive interval at most,
    since the pending nodes are kept alive only by posting their intents again."""


@attrs.frozen
class _Snapshot:
    state: RendezvousState
    token: Token | None


class RendezvousOpExecutor:
    """Runs operations of one node against a backend.

    Operations from several threads may run at once: each compare-and-set is
    checked by the backend, so no lock is held across an operation (a join that
    waits minutes must not block ``is_closed`` in another thread). The last state
    seen is kept so that the handler can read ranks without another request.
    """

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
        self._last = _Snapshot(RendezvousState(), None)
        self._intents = backend if isinstance(backend, IntentLog) else None
        self._board = backend if isinstance(backend, HeartbeatBoard) else None
        self._observed: dict[NodeDesc, float] = {}
        """Heartbeats read from the board, and this node's own last one."""
        self._interval = settings.keep_alive_interval.total_seconds()
        self._refresh_age = settings.heartbeat_expiry - self._interval
        """Age at which a waiting node posts its intent again, before it would expire."""

    @property
    def state(self) -> RendezvousState:
        """The state as of the last read or write, heartbeats seen outside it merged."""
        return self._last.state

    def beat(self) -> bool:
        """Write this node's heartbeat record straight to the board, without reading the state.

        A heartbeat on a board changes nothing in the state, so reading a thousand-node
        state first, as :func:`decide_keep_alive <rdzv.core.decide_keep_alive>` needs,
        would only multiply its cost. Returns ``False`` when the backend has no board
        (the caller then runs the keep-alive operation); a node the last state seen
        does not know sends nothing.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """
        if self._board is None:
            return False
        if self._node in self._last.state.last_heartbeats:
            self._beat(self._board, self._clock())
        return True

    def last_heartbeat(self) -> float | None:
        """When this node last sent a heartbeat, as far as this process knows."""
        beats = [self._last.state.last_heartbeats.get(self._node), self._observed.get(self._node)]
        return max((b for b in beats if b is not None), default=None)

    def read(self) -> RendezvousState:
        """Fetch the state, without its dead nodes.

        Raises:
            RendezvousConnectionError: the backend stayed unreachable for its
                ``reconnect_window``.
            RendezvousStateError: the stored state is corrupt.
        """
        outage: _Outage | None = None
        while True:
            try:
                snapshot = self._fetch()
                state, _ = self._view(snapshot.state, self._clock())
                break
            except RendezvousConnectionError as error:
                outage = outage or _Outage(self._clock())
                self._pause_or_raise(outage, error, math.inf)
        self._last = attrs.evolve(snapshot, state=state)
        return state

    def run(
        self,
        decide: Decide,
        deadline: float,
        *,
        renew_deadline: bool = False,
        ride_out_outages: bool = True,
    ) -> RendezvousState:
        """Drive ``decide`` until it finishes; return the final state.

        ``deadline`` is on the clock's scale. With ``renew_deadline`` the deadline
        restarts when the node leaves the redundancy list (a join). With
        ``ride_out_outages`` a failed request is tried again (see
        :meth:`_pause_or_raise`); callers that retry on their own schedule (the
        heartbeats) turn it off.

        Raises:
            RendezvousClosedError, RendezvousTimeoutError, RendezvousGracefulExitError:
                the decision says so.
            RendezvousConnectionError: the backend stayed unreachable for its
                ``reconnect_window``, or until the deadline.
            RendezvousStateError: the stored state is corrupt.
        """
        snapshot: _Snapshot | None = None
        outage: _Outage | None = None
        deferral = _Deferral()
        lost_writes = 0
        joining = _Joining()
        while True:
            try:
                if snapshot is None:
                    snapshot = self._fetch()
                    if outage is not None:
                        self._log_recovery(outage)
                        outage = None
                now = self._clock()
                state, dropped = self._view(snapshot.state, now)
                action = decide(state, self._node, self._settings, now, deadline)
                if action.ends_operation:
                    self._last = attrs.evolve(snapshot, state=state)
                    self._raise_if_failed(action, state)
                    return state
                if action is Action.KEEP_ALIVE and self._board is not None:
                    self._beat(self._board, now)
                    continue
                if action in _PLACEMENTS and self._intents is not None:
                    leaves = state.round if action is Action.REJOIN else None
                    wait = self._join_step(self._intents, state, now, leaves, joining, deferral)
                    if isinstance(wait, float):
                        snapshot = self._await(snapshot, wait, deferral) if wait else None
                        continue
                    new = wait
                elif action is Action.MARK_RENDEZVOUS_COMPLETE and (
                    patience := deferral.defer(self._node, min(state.participants), now)
                ):
                    snapshot = self._await(snapshot, patience, deferral)
                    continue
                elif action is Action.WAIT and not dropped:
                    wake = next_wakeup(state, self._node, self._settings, now, deadline)
                    timeout = min(max(wake - now + _WAKE_MARGIN, 0.0), MAX_WAIT)
                    changed = self._backend.wait_for_change(snapshot.token, timeout)
                    if changed is None:
                        snapshot = None
                    else:
                        snapshot = _Snapshot(decode_state(changed[0]), changed[1])
                    continue
                elif action is Action.WAIT:
                    new = state  # write the removal of the dead so that everyone sees it
                else:
                    logger.debug(
                        "Node %s: %s in round %d of '%s'.",
                        self._node,
                        action.value,
                        state.round,
                        self._settings.run_id,
                    )
                    new = apply_action(state, action, self._node, self._settings, now)
                    if renew_deadline:
                        deadline = deadline_after(action, deadline, self._settings, now)
                snapshot, written = self._write(new, snapshot.token)
                deferral.progressed()
                if written:
                    lost_writes = 0
                else:
                    lost_writes += 1
                    snapshot = self._back_off(snapshot, lost_writes)
            except RendezvousConnectionError as error:
                if not ride_out_outages:
                    raise
                outage = outage or _Outage(self._clock())
                self._pause_or_raise(outage, error, deadline)
                snapshot = None

    def _pause_or_raise(
        self, outage: _Outage, error: RendezvousConnectionError, deadline: float
    ) -> None:
        """Sleep before the next attempt, or raise ``error`` if the outage lasted too long.

        Every write is a compare-and-set decided on a fresh read, so trying again
        after a failed request (even one that reached the backend) is safe.
        """
        pause = outage.next_pause()
        now = self._clock()
        attempt = 0.0 if outage.attempt_started is None else now - outage.attempt_started
        window = self._backend.reconnect_window
        # Give up when the next attempt would end past the window (a refused
        # connection may take connect_timeout to fail), so the error comes in time.
        if now + pause + attempt >= min(outage.since + window, deadline):
            raise error
        # One warning per outage; the retries themselves are details.
        log = logger.warning if outage.failures == 1 else logger.debug
        log(
            "Node %s: the rendezvous backend failed; trying again for up to %.0f s: %s",
            self._node,
            window,
            error,
        )
        time.sleep(pause)
        outage.attempt_started = self._clock()

    def _log_recovery(self, outage: _Outage) -> None:
        logger.warning(
            "Node %s: the rendezvous backend answers again, after %.1f s and %d failed attempt(s).",
            self._node,
            self._clock() - outage.since,
            outage.failures,
        )

    def _view(
        self, state: RendezvousState, now: float
    ) -> tuple[RendezvousState, tuple[NodeDesc, ...]]:
        """The state to decide on: heartbeats seen outside it merged, dead nodes dropped.

        The board is read only when a node looks dead by what is known already, so
        a healthy rendezvous costs no extra request.
        """
        view = merge_heartbeats(state, self._observed)
        if self._board is not None and dead_nodes(view, self._settings, now, self._node):
            self._read_board(self._board, view)
            view = merge_heartbeats(view, self._observed)
        # This node runs, so it is alive, even if its own heartbeat came late.
        view, dropped = drop_dead_nodes(view, self._settings, now, self._node)
        if dropped:
            logger.info(
                "Rendezvous '%s': dropping node(s) %s, no heartbeat for %.1f s.",
                self._settings.run_id,
                ", ".join(map(str, dropped)),
                self._settings.heartbeat_expiry,
            )
        return view, dropped

    def _read_board(self, board: HeartbeatBoard, view: RendezvousState) -> None:
        members = {str(node): node for node in view.members()}
        for name, record in board.read_beats(sorted(members)).items():
            beat = decode_beat(record)
            node = members.get(name)
            if beat is not None and node is not None:
                self._observed[node] = max(beat, self._observed.get(node, beat))

    def _beat(self, board: HeartbeatBoard, now: float) -> None:
        # The record may vanish once the node would count as dead anyway.
        board.beat(str(self._node), encode_beat(now), 2 * self._settings.heartbeat_expiry)
        self._observed[self._node] = now

    def _join_step(
        self,
        log: IntentLog,
        state: RendezvousState,
        now: float,
        leaves: int | None,
        joining: _Joining,
        deferral: _Deferral,
    ) -> RendezvousState | float:
        """One step of a join through the intent log: the state to write, or seconds to wait.

        Post this node's intent (again before it would expire), read the pending
        ones; the first pending node folds them, and holds the fold while the
        round cannot reach ``min_nodes``; the others wait for its write. A wait
        of 0 means: read the state again now.
        """
        if joining.posted is None or now - joining.posted >= self._refresh_age:
            log.post_intent(encode_intent(JoinIntent(self._node, now, leaves)), state.intent_cursor)
            joining.posted = now
        intents, cursor = self._pending(log, state, now, leaves)
        designated = folder(state, intents, self._settings, now)
        # Held for an interval already: fold what came, so that the state (and the
        # heartbeats it then watches) keeps those nodes alive.
        held_long = joining.held_since is not None and now - joining.held_since >= self._interval
        if not held_long and should_hold(state, intents, self._settings, now):
            # The folder watches the log (often at first: the nodes of a small job
            # arrive together); the others wait for its fold.
            if designated == self._node and joining.held_since is None:
                joining.held_since = now
            joining.holds += 1
            poll = min(_HOLD_POLL, 0.002 * 2**joining.holds)
            return poll if designated == self._node else float(self._interval)
        joining.held_since = None
        patience = deferral.defer(self._node, designated, now)
        if patience > 0:
            return patience
        new = admit_intents(state, intents, cursor, self._settings, now)
        if new is state:
            time.sleep(_UNSEEN_INTENT_WAIT)
            return 0.0
        return new

    def _pending(
        self, log: IntentLog, state: RendezvousState, now: float, leaves: int | None
    ) -> tuple[list[JoinIntent], int]:
        """The pending intents and the log's end.

        This node's intent may not be among them (it went to a segment after a full
        one): admitting the rest moves the state's cursor on to where it is.
        """
        records, cursor = log.read_intents(state.intent_cursor)
        intents, bad = decode_intents(records)
        if bad:
            logger.warning(
                "Rendezvous '%s': skipped %d join intent record(s) that do not decode.",
                self._settings.run_id,
                bad,
            )
        fresh = now - self._settings.heartbeat_expiry
        if not any(i.node == self._node and i.posted >= fresh for i in intents):
            # Ours was admitted and dropped since, expired, or went to a log segment
            # that rolled over: post it again, where the log is now.
            log.post_intent(encode_intent(JoinIntent(self._node, now, leaves)), cursor)
            records, cursor = log.read_intents(state.intent_cursor)
            intents, _ = decode_intents(records)
        return intents, cursor

    def _await(self, snapshot: _Snapshot, patience: float, deferral: _Deferral) -> _Snapshot | None:
        """Wait up to ``patience`` s for the designated node's write (see :class:`_Deferral`)."""
        changed = self._backend.wait_for_change(snapshot.token, patience)
        if changed is None:
            return None
        deferral.progressed()
        return _Snapshot(decode_state(changed[0]), changed[1])

    def _raise_if_failed(self, action: Action, state: RendezvousState) -> None:
        run_id = self._settings.run_id
        if action is Action.ERROR_CLOSED:
            raise RendezvousClosedError(
                f"The rendezvous '{run_id}' is closed: the job is finishing and admits no node. "
                "Start a new job with another run id to rendezvous again."
            )
        if action is Action.ERROR_TIMEOUT:
            others = len(set(state.participants) - {self._node})
            raise RendezvousTimeoutError(
                f"The node {self._node} timed out in round {state.round} of the rendezvous "
                f"'{run_id}': {others} other node(s) had joined and {self._settings.min_nodes} "
                "are needed. Check that the other nodes are running and use the same run id and "
                "endpoint, or raise join_timeout."
            )
        if action is Action.GRACEFUL_EXIT:
            raise RendezvousGracefulExitError(
                f"The rendezvous '{run_id}' closed while node {self._node} was redundant; "
                "it was not needed and exits."
            )

    def _fetch(self) -> _Snapshot:
        result = self._backend.get_state()
        if result is None:
            return _Snapshot(RendezvousState(), None)
        data, token = result
        return _Snapshot(decode_state(data), token)

    def _write(self, new: RendezvousState, token: Token | None) -> tuple[_Snapshot, bool]:
        result = self._backend.set_state(encode_state(new), token)
        if result is None:
            return self._fetch(), False
        data, new_token, written = result
        # What we wrote needs no decoding; what someone else wrote does.
        state = new if written else decode_state(data)
        self._last = _Snapshot(state, new_token)
        return self._last, written

    def _back_off(self, snapshot: _Snapshot, lost_writes: int) -> _Snapshot:
        """After a lost compare-and-set, wait a random while for the next write.

        Nodes that lost together would otherwise try again together. Waiting for a
        change rather than sleeping lets the winner's write wake them at once, and
        that write often carries their own join (it admitted every pending intent),
        so they need not write at all.
        """
        limit = min(0.002 * 2 ** (lost_writes - 1), 0.1)
        changed = self._backend.wait_for_change(snapshot.token, random.uniform(0, limit))  # noqa: S311
        if changed is not None:
            return _Snapshot(decode_state(changed[0]), changed[1])
        return self._fetch()
