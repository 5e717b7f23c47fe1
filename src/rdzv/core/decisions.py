"""What a node does next: one pure decision function per operation.

Each ``decide_*`` function looks at the shared state, this node, the settings, the
time ``now`` and the operation's ``deadline`` (both seconds since the epoch, read
by the caller) and returns an :class:`Action`. It changes nothing: the shell
applies the action with :func:`rdzv.core.transitions.apply_action` and writes the
result with compare-and-set, or waits when the action is :attr:`Action.WAIT`.

The rules are those of torch's dynamic rendezvous (``_RendezvousJoinOp`` and
friends); the docstrings below say each one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Protocol

from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState

__all__ = [
    "ROLLBACK_PERIOD",
    "Action",
    "deadline_after",
    "decide_close",
    "decide_exit",
    "decide_join",
    "decide_keep_alive",
    "decide_leave",
    "decide_rejoin",
    "next_wakeup",
    "placement",
    "should_keep_alive",
]

ROLLBACK_PERIOD = 5.0
"""Seconds after a join deadline during which a node still removes itself from the
state before giving up, so that the others need not wait for its heartbeat to expire."""


class Action(enum.Enum):
    """The next step of an operation."""

    KEEP_ALIVE = "keep_alive"
    ADD_TO_PARTICIPANTS = "add_to_participants"
    ADD_TO_WAIT_LIST = "add_to_wait_list"
    ADD_TO_REDUNDANCY_LIST = "add_to_redundancy_list"
    REMOVE_FROM_PARTICIPANTS = "remove_from_participants"
    REMOVE_FROM_WAIT_LIST = "remove_from_wait_list"
    REMOVE_FROM_REDUNDANCY_LIST = "remove_from_redundancy_list"
    REJOIN = "rejoin"
    """Leave the complete round this node took part in and join the next, in one write."""
    MARK_RENDEZVOUS_COMPLETE = "mark_rendezvous_complete"
    MARK_RENDEZVOUS_CLOSED = "mark_rendezvous_closed"
    WAIT = "wait"
    """Nothing to write: wait for the state to change or for :func:`next_wakeup`."""
    ERROR_CLOSED = "error_closed"
    ERROR_TIMEOUT = "error_timeout"
    GRACEFUL_EXIT = "graceful_exit"
    """This node was redundant and the rendezvous closed: leave without error."""
    FINISH = "finish"

    @property
    def changes_state(self) -> bool:
        """Whether the action is applied to the state and written back."""
        return self not in _NON_WRITING

    @property
    def ends_operation(self) -> bool:
        """Whether the operation stops here (finished, failed or exited)."""
        return self in _ENDING


_ENDING = frozenset(
    {Action.FINISH, Action.ERROR_CLOSED, Action.ERROR_TIMEOUT, Action.GRACEFUL_EXIT}
)
_NON_WRITING = _ENDING | {Action.WAIT}


class Round(Protocol):
    """What :func:`placement` looks at: a state, or a draft of one being built."""

    @property
    def complete(self) -> bool: ...

    @property
    def participants(self) -> Mapping[NodeDesc, int]: ...


def placement(round_: Round, settings: RendezvousSettings) -> Action:
    """Where a node that is not a participant goes when it joins: the one placement rule.

    The participants of an incomplete round; else the wait list while the round
    has room; else the redundancy list. A single join (:func:`decide_join`) and a
    batch of intents (:func:`rdzv.core.intents.admit`) both place nodes by it.
    """
    if not round_.complete:
        return Action.ADD_TO_PARTICIPANTS
    if len(round_.participants) < settings.max_nodes:
        return Action.ADD_TO_WAIT_LIST
    return Action.ADD_TO_REDUNDANCY_LIST


def _latest_beat(state: RendezvousState, node: NodeDesc, own_beat: float | None) -> float | None:
    last = state.last_heartbeats.get(node)
    if last is None or own_beat is None:
        return last
    return max(last, own_beat)


def should_keep_alive(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    own_beat: float | None = None,
) -> bool:
    """Whether ``node`` is known to the state and its last heartbeat is one interval old.

    ``own_beat`` is the node's latest heartbeat when it is newer than the state's
    (written to a heartbeat board rather than to the state).
    """
    last = _latest_beat(state, node, own_beat)
    if last is None:
        return False
    return last <= now - settings.keep_alive_interval.total_seconds()


def _keep_alive_or_wait(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    own_beat: float | None,
) -> Action:
    keep_alive = should_keep_alive(state, node, settings, now, own_beat)
    return Action.KEEP_ALIVE if keep_alive else Action.WAIT


def decide_join(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
    own_beat: float | None = None,
) -> Action:
    """Next step of ``next_rendezvous`` for ``node``.

    - A closed rendezvous fails the join, except for a redundant node, which exits
      gracefully.
    - A redundant node waits, without deadline, while the round is full; once it
      has room the node leaves the redundancy list and joins normally.
    - A participant of a complete round is done.
    - Past the deadline, a participant or a waiting node first removes itself
      (for :data:`ROLLBACK_PERIOD` seconds), then the join times out.
    - A node not yet placed goes where :func:`placement` sends it.
    - Once at least ``min_nodes`` have joined an incomplete round and its
      last-call deadline passed, a participant completes it.
    - Otherwise send a heartbeat when one is due (``own_beat``: see
      :func:`should_keep_alive`), or wait.
    """
    role = state.role_of(node)
    if state.closed:
        return Action.GRACEFUL_EXIT if role == "redundant" else Action.ERROR_CLOSED

    if role == "redundant":
        if len(state.participants) >= settings.max_nodes:
            return _keep_alive_or_wait(state, node, settings, now, own_beat)
        return Action.REMOVE_FROM_REDUNDANCY_LIST

    if state.complete and role == "participant":
        return Action.FINISH

    if now > deadline:
        if now <= deadline + ROLLBACK_PERIOD:
            if role == "participant":
                return Action.REMOVE_FROM_PARTICIPANTS
            if role == "waiting":
                return Action.REMOVE_FROM_WAIT_LIST
        return Action.ERROR_TIMEOUT

    if role is None or (role == "waiting" and not state.complete):
        return placement(state, settings)
    if (
        not state.complete
        and settings.min_nodes <= len(state.participants) <= settings.max_nodes
        and state.deadline is not None
        and state.deadline < now
    ):
        return Action.MARK_RENDEZVOUS_COMPLETE

    return _keep_alive_or_wait(state, node, settings, now, own_beat)


def decide_exit(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
) -> Action:
    """Leave the participants (done before every join, to leave the previous round)."""
    if node in state.participants:
        if now > deadline:
            return Action.ERROR_TIMEOUT
        return Action.REMOVE_FROM_PARTICIPANTS
    return Action.FINISH


def decide_rejoin(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
    leaving: int | None = None,
    own_beat: float | None = None,
) -> Action:
    """Next step of ``next_rendezvous`` for a node that took part in round ``leaving``.

    While that round is still current and complete and the node takes part in
    it, the node leaves it and joins the next in one step (:attr:`Action.REJOIN`):
    torch's exit then join, without the write in between, so the survivors of
    a failure re-form with one batch instead of a contended write each. Once the
    node has left (or was dropped), or when ``leaving`` is ``None`` (its first
    round), this is :func:`decide_join`.
    """
    if (
        leaving is not None
        and state.round == leaving
        and state.complete
        and not state.closed
        and node in state.participants
    ):
        return Action.ERROR_TIMEOUT if now > deadline else Action.REJOIN
    return decide_join(state, node, settings, now, deadline, own_beat)


_LEAVE = {
    "participant": Action.REMOVE_FROM_PARTICIPANTS,
    "waiting": Action.REMOVE_FROM_WAIT_LIST,
    "redundant": Action.REMOVE_FROM_REDUNDANCY_LIST,
}


def decide_leave(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
) -> Action:
    """Leave whichever list holds the node: what a node whose join failed does.

    Otherwise its peers would complete a round with it, or count it, until its
    heartbeat expired. Nothing to do in a closed rendezvous or for a stranger.
    """
    role = state.role_of(node)
    if role is None or state.closed:
        return Action.FINISH
    if now > deadline:
        return Action.ERROR_TIMEOUT
    return _LEAVE[role]


def decide_close(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
) -> Action:
    """Mark the rendezvous closed; closing a closed one is done at once."""
    if state.closed:
        return Action.FINISH
    if now > deadline:
        return Action.ERROR_TIMEOUT
    return Action.MARK_RENDEZVOUS_CLOSED


def decide_keep_alive(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
    own_beat: float | None = None,
) -> Action:
    """Write a heartbeat if one is due; a node the state no longer knows sends none."""
    if should_keep_alive(state, node, settings, now, own_beat):
        if now > deadline:
            return Action.ERROR_TIMEOUT
        return Action.KEEP_ALIVE
    return Action.FINISH


def deadline_after(
    action: Action, deadline: float, settings: RendezvousSettings, now: float
) -> float:
    """The join deadline once ``action`` is taken.

    A redundant node waits without deadline; when it leaves the redundancy list
    to take part, its join gets a full join timeout from that moment.
    """
    if action is Action.REMOVE_FROM_REDUNDANCY_LIST:
        return now + settings.timeout.join.total_seconds()
    return deadline


def next_wakeup(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    deadline: float,
    own_beat: float | None = None,
    *,
    beats: bool = True,
    lag: float = 0.0,
) -> float:
    """The earliest time after ``now`` at which a decision may change with no write
    (``inf``: none).

    A waiting node sleeps until then or until the backend reports a change,
    whichever comes first: the operation deadline (and the end of the rollback
    window), the last-call deadline, this node's next heartbeat (when the
    operation sends it: ``beats``), and the moment another node's heartbeat expires
    (``lag`` later, as the node judges heartbeats: see :class:`rdzv.core.protocol.Context`).

    Deadlines and expiries are compared strictly (``now > deadline``): the decision
    changes just *after* them, so those candidates are the next float up. Without
    that, a node woken at exactly a deadline would see no change and skip it.
    """

    def just_after(t: float) -> float:
        return math.nextafter(t, math.inf)

    candidates = [just_after(deadline), just_after(deadline + ROLLBACK_PERIOD)]
    if state.deadline is not None and not state.complete:
        candidates.append(just_after(state.deadline))
    own = _latest_beat(state, node, own_beat)
    if own is not None and beats:
        candidates.append(own + settings.keep_alive_interval.total_seconds())
    oldest = state.oldest_heartbeat
    if oldest is not None and oldest == state.last_heartbeats.get(node):
        # This node is the oldest: the next one is second in age order.
        oldest = next((b for b, n in state.beats_by_age if n != node), None)
    if oldest is not None:
        candidates.append(just_after(oldest + settings.heartbeat_expiry + lag))
    # Nothing ahead: only a write changes the decision (the caller caps its wait). Now
    # instead had a redundant node past its deadline, its heartbeats sent beside the
    # join, wait 5 ms at a time, read, and wait again (seed 310724).
    return min((t for t in candidates if t > now), default=math.inf)
