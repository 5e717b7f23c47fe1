"""What a node's operation has done so far, what it knows at a step, and the blocks that
every operation builds its next effect from (see :mod:`rdzv.core.protocol`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs

from rdzv.core import pacing
from rdzv.core.decisions import next_wakeup
from rdzv.core.effects import (
    CompareAndSet,
    Effect,
    Event,
    Fail,
    Failure,
    LogRead,
    ReadLog,
    Snapshot,
    WaitForChange,
)
from rdzv.core.intents import merge_heartbeats, segment_of
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState

__all__ = [
    "NOT_READ",
    "Context",
    "Op",
    "Outage",
    "Progress",
    "Step",
    "last_state",
    "leaving",
    "log_is_current",
    "read_log",
    "timeout_failure",
    "wait",
    "write",
]


class Op(enum.Enum):
    """The operations a node runs."""

    JOIN = "join"
    """``next_rendezvous``: leave the previous round, if any, and join until placed."""
    LEAVE = "leave"
    """Take this node out of the rendezvous: its join failed after the protocol ended."""
    CLOSE = "close"
    KEEP_ALIVE = "keep_alive"
    READ = "read"
    """Read the state, without its dead nodes (``num_nodes_waiting``, ``is_closed``)."""


@attrs.frozen
class Context:
    """What the shell knows at a step, besides the outcome.

    ``now`` is the node's clock (seconds since the epoch); ``draw`` a uniform random
    number in ``[0, 1)``; ``observed`` every heartbeat newer than the state's the node
    has seen (its own, and those read from the board); ``checked`` when it last read
    each node's record on the board; ``lag`` the longest one of its requests took,
    of those that ended within the last heartbeat expiry (the backend's lag as the
    node saw it: heartbeats are not judged late by less).
    """

    node: NodeDesc
    settings: RendezvousSettings
    now: float
    draw: float
    has_log: bool
    has_board: bool
    reconnect_window: float
    observed: Mapping[NodeDesc, float] = attrs.field(factory=dict)
    checked: Mapping[NodeDesc, float] = attrs.field(factory=dict)
    lag: float = 0.0

    @property
    def heartbeat_lag(self) -> float:
        """How much earlier this node judges heartbeats (:func:`.pacing.heartbeat_lag`)."""
        return pacing.heartbeat_lag(self.lag, self.settings.keep_alive_interval.total_seconds())


@attrs.frozen
class Outage:
    """Since when the backend has failed, and how many attempts failed in a row."""

    since: float
    failures: int


NOT_READ = object()
"""A token no state has: the log or the state was not read yet."""


@attrs.frozen(slots=False)
class Progress:
    """What an operation has done so far. Every field starts empty; :func:`step` evolves it.

    Not slotted, so that :meth:`evolve` can copy the instance's dict: a node evolves its
    progress about twice a step, and ``attrs.evolve`` over these fields was half of
    the core's CPU time in the simulator (7 to 8 us a call, against 1.3 us).
    """

    op: Op
    deadline: float
    leaving: int | None = None
    """JOIN: the round the node took part in and leaves (``None`` on its first join)."""
    ride_out: bool = True
    """Whether to try again through a backend outage (up to its reconnect window)."""
    known: bool = False
    """KEEP_ALIVE: whether the node has a heartbeat to keep alive (the last state it saw
    holds it, or it is joining)."""
    last: Effect | None = None
    issued: float = 0.0
    """When ``last`` was issued: how long a failed attempt took shows from it."""
    snap: Snapshot | None = None
    read_at: float = -math.inf
    """When ``snap`` was read (see :data:`~rdzv.core.pacing.MAX_VIEW_AGE`)."""
    seen: Any = NOT_READ
    """The token of the last state seen (``snap`` is cleared when it must be read again)."""
    outage: Outage | None = None
    lost: int = 0
    """Compare-and-sets lost in a row."""
    watch_all: bool = False
    """About to complete a round: check every member's heartbeat, not only those watched."""
    board_asked: float | None = None
    """When the board read made for the decision under way (its steps up to its write or
    wait) was asked: the decision judges heartbeats as of then, and reads the board no
    more, but to complete a round (see :mod:`rdzv.core.protocol`)."""
    backing_off: bool = False
    dropped: tuple[NodeDesc, ...] = ()
    posted: float | None = None
    """When this node last posted its join intent."""
    posted_segment: int = 0
    log: LogRead | None = None
    """The records read after ``log_from``, in log order, gathered over one or more reads."""
    log_from: int = -1
    log_token: Any = NOT_READ
    log_at: float = -math.inf
    """When the log read held was answered (the steward's pace runs from then)."""
    log_asked: float = -math.inf
    """When it was asked for: the intents in it are judged as of then."""
    polls: int = 0
    """Reads of the log in a row that found nothing new (the steward's pace)."""
    hold_since: float | None = None
    patience_until: float | None = None
    passed: int = 0
    """Patiences run out since the state last moved in which this node let others take
    over from the steward (see :mod:`rdzv.core.joining`)."""
    withdrawing: Failure | None = None
    """JOIN: the join failed with this; the node withdraws first."""
    withdraw_deadline: float = math.inf
    withdrawn: float | None = None
    withdrawn_segment: int = 0
    left: bool = False
    """The withdrawal (or a leave) was written."""

    def evolve(self, **changes: Any) -> Progress:
        """A copy with ``changes``, as ``attrs.evolve`` (no field has a validator).

        Raises:
            TypeError: a change names no field.
        """
        if not _FIELDS.issuperset(changes):
            raise TypeError(f"Progress has no field {sorted(set(changes) - _FIELDS)}")
        new = object.__new__(Progress)
        new.__dict__.update(self.__dict__, **changes)
        return new


_FIELDS = frozenset(field.name for field in attrs.fields(Progress))


@attrs.frozen
class Step:
    """One step's result: the progress to keep, the effect to perform, events to report."""

    progress: Progress
    effect: Effect
    events: tuple[Event, ...] = ()


def leaving(p: Progress) -> bool:
    return p.op is Op.LEAVE or p.withdrawing is not None


def last_state(p: Progress) -> RendezvousState:
    return p.snap.state if p.snap is not None else RendezvousState()


def write(p: Progress, new: RendezvousState, ctx: Context) -> tuple[Progress, Effect]:
    """Compare-and-set ``new`` on the token read, with every heartbeat the node has seen, and
    its own as of now: a node that writes is alive.

    A node that admitted itself from the log had its intent's time for a heartbeat:
    where a round trip took a third of the expiry, that heartbeat had expired by the
    time the write landed, the watcher dropped the node, and it posted again, until
    its join timed out (seed 124 with a node 0.95 s away, expiry 6 s).
    """
    assert p.snap is not None
    state = merge_heartbeats(merge_heartbeats(new, ctx.observed), {ctx.node: ctx.now})
    return p, CompareAndSet(state, p.snap.token)


def wait(
    p: Progress, view: RendezvousState, ctx: Context, until: float = math.inf
) -> tuple[Progress, Effect]:
    """Wait for a change of the state, no longer than ``until`` nor past the moment time
    alone may change a decision (:func:`rdzv.core.next_wakeup`)."""
    assert p.snap is not None
    token = p.snap.token
    if p.backing_off:
        # After a lost compare-and-set: the winner's write often carries ours.
        until = min(until, ctx.now + pacing.lost_write_backoff(p.lost, ctx.draw))
        p = p.evolve(backing_off=False)
    own = ctx.observed.get(ctx.node)
    # With a board, this node's heartbeats are its keep-alive's (beside the operation,
    # see rdzv.core.protocol): no wait ends for one.
    wake = next_wakeup(
        view,
        ctx.node,
        ctx.settings,
        ctx.now,
        p.deadline,
        own,
        beats=not ctx.has_board,
        lag=ctx.heartbeat_lag,
    )
    until = min(until, wake + pacing.WAKE_MARGIN, ctx.now + pacing.MAX_WAIT)
    return p, WaitForChange(token, max(until, ctx.now))


def timeout_failure(p: Progress, view: RendezvousState, ctx: Context) -> Fail:
    if p.op is Op.KEEP_ALIVE:
        return Fail(
            Failure.TIMEOUT,
            f"Node {ctx.node} could not write its heartbeat to the rendezvous "
            f"'{ctx.settings.run_id}' within heartbeat_timeout.",
            view,
        )
    others = len(set(view.participants) - {ctx.node})
    return Fail(
        Failure.TIMEOUT,
        f"The node {ctx.node} timed out in round {view.round} of the rendezvous "
        f"'{ctx.settings.run_id}': {others} other node(s) had joined and "
        f"{ctx.settings.min_nodes} are needed. Check that the other nodes are running and use "
        "the same run id and endpoint, or raise join_timeout.",
        view,
    )


def read_log(p: Progress, view: RendezvousState) -> ReadLog:
    """Read the log after the state's cursor; only what follows the last read when the
    records held start there (the log only grows: a steward reading it while a thousand
    nodes post would otherwise read the same records again at every poll).

    Not once the last read reached the next segment: nodes that read the state post
    into its cursor's segment until an admission moves the cursor, so that segment
    is read again whole.
    """
    cursor = view.intent_cursor
    if p.log is not None and p.log_from == cursor and segment_of(p.log.end) == segment_of(cursor):
        return ReadLog(p.log.end)
    return ReadLog(cursor)


def log_is_current(p: Progress, since: float | None) -> bool:
    """Whether the last log read was made on the current state and after ``since``."""
    assert p.snap is not None
    return (
        p.log is not None and p.log_token == p.snap.token and (since is None or p.log_at >= since)
    )
