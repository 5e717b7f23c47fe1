"""A node's operations as one pure state machine: what it has done, and the next effect.

Every operation of a node (join, leave, close, keep-alive, read) runs the same
loop: the shell calls :func:`step` with the operation's :class:`Progress`, the
outcome of the last effect and a :class:`Context` (the time, a random draw, the
heartbeats the node has seen), and performs the effect that comes back, until it
is :class:`~rdzv.core.effects.Finish` or :class:`~rdzv.core.effects.Fail`. The
step reads no clock and does no I/O: the same inputs give the same effect, so a
simulator can run thousands of nodes through it in virtual time
(:mod:`rdzv.sim`), and the shell (:mod:`rdzv.dynamic.executor`) only performs.

The join through the intent log (see :mod:`rdzv.core.intents` and the glossary
in ``docs/concepts.rst``) is where most of the rules are:

- A node that needs placing posts a *join intent*, again before it would expire,
  and again when the log rolled over to a new segment without placing it.
- The *steward* (:func:`~rdzv.core.intents.steward`) reads the log at a growing
  pace and writes the *admission*; it *holds* it while the round cannot reach
  ``min_nodes``, for one keep-alive interval at most. When the state names no
  steward, the first pending intent's node admits at once.
- Every other pending node waits for the steward's write, for its *patience*;
  then it admits itself.
- A join that ends without a rank (timeout, or a failure in the shell) *withdraws*:
  it posts a withdrawal, and writes the state once more unless nothing of it is
  left to admit, so that no admission read before the withdrawal can still be
  written (see :func:`~rdzv.core.intents.needs_fence`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs

from rdzv.core import pacing
from rdzv.core.decisions import (
    ROLLBACK_PERIOD,
    Action,
    deadline_after,
    decide_close,
    decide_keep_alive,
    decide_leave,
    decide_rejoin,
    next_wakeup,
)
from rdzv.core.effects import (
    BeatsRead,
    Changed,
    CompareAndSet,
    Effect,
    Event,
    Fail,
    Failure,
    Finish,
    LogRead,
    Outcome,
    Post,
    Posted,
    ReadBeats,
    ReadLog,
    ReadState,
    Sleep,
    Slept,
    Snapshot,
    Started,
    StateRead,
    Unreachable,
    WaitForChange,
    WriteBeat,
    Written,
)
from rdzv.core.intents import (
    JoinIntent,
    Withdrawal,
    admit,
    merge_heartbeats,
    needs_fence,
    pending_joins,
    segment_of,
    should_hold,
    steward,
)
from rdzv.core.liveness import dead_nodes, drop_dead_nodes
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.transitions import Draft, apply_action

__all__ = [
    "Context",
    "Op",
    "Progress",
    "Step",
    "close",
    "join",
    "keep_alive",
    "leave",
    "read",
    "step",
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
    has seen (its own, and those read from the board).
    """

    node: NodeDesc
    settings: RendezvousSettings
    now: float
    draw: float
    has_log: bool
    has_board: bool
    reconnect_window: float
    observed: Mapping[NodeDesc, float] = attrs.field(factory=dict)


@attrs.frozen
class _Outage:
    since: float
    failures: int


_NOT_READ = object()


@attrs.frozen
class Progress:
    """What an operation has done so far. Every field starts empty; :func:`step` evolves it."""

    op: Op
    deadline: float
    leaving: int | None = None
    """JOIN: the round the node took part in and leaves (``None`` on its first join)."""
    ride_out: bool = True
    """Whether to try again through a backend outage (up to its reconnect window)."""
    known: bool = False
    """KEEP_ALIVE: whether the last state the node saw holds it."""
    last: Effect | None = None
    issued: float = 0.0
    """When ``last`` was issued: how long a failed attempt took shows from it."""
    snap: Snapshot | None = None
    seen: Any = _NOT_READ
    """The token of the last state seen (``snap`` is cleared when it must be read again)."""
    outage: _Outage | None = None
    lost: int = 0
    """Compare-and-sets lost in a row."""
    backing_off: bool = False
    dropped: tuple[NodeDesc, ...] = ()
    board_checked: frozenset[NodeDesc] = frozenset()
    board_at: float = -math.inf
    posted: float | None = None
    """When this node last posted its join intent."""
    posted_segment: int = 0
    log: LogRead | None = None
    log_token: Any = _NOT_READ
    log_at: float = -math.inf
    polls: int = 0
    """Reads of the log in a row that found nothing new (the steward's pace)."""
    hold_since: float | None = None
    patience_until: float | None = None
    withdrawing: Failure | None = None
    """JOIN: the join failed with this; the node withdraws first."""
    withdraw_deadline: float = math.inf
    withdrawn: float | None = None
    withdrawn_segment: int = 0
    left: bool = False
    """The withdrawal (or a leave) was written."""


@attrs.frozen
class Step:
    """One step's result: the progress to keep, the effect to perform, events to report."""

    progress: Progress
    effect: Effect
    events: tuple[Event, ...] = ()


def join(deadline: float, leaving: int | None = None) -> Progress:
    """A ``next_rendezvous`` that leaves round ``leaving`` (if any) and must end by ``deadline``."""
    return Progress(Op.JOIN, deadline, leaving=leaving)


def leave(deadline: float) -> Progress:
    """Take the node out of the rendezvous (withdrawing its intents), until ``deadline``."""
    return Progress(Op.LEAVE, deadline, withdrawing=None, withdraw_deadline=deadline)


def close(deadline: float) -> Progress:
    """Mark the rendezvous closed."""
    return Progress(Op.CLOSE, deadline)


def keep_alive(deadline: float, *, known: bool, ride_out: bool = False) -> Progress:
    """Send a heartbeat if one is due. ``known``: the last state seen holds the node."""
    return Progress(Op.KEEP_ALIVE, deadline, known=known, ride_out=ride_out)


def read() -> Progress:
    """Read the state once, without its dead nodes."""
    return Progress(Op.READ, math.inf)


def step(progress: Progress, outcome: Outcome, ctx: Context) -> Step:
    """The next effect of an operation, given the outcome of the last one."""
    events: list[Event] = []
    absorbed = _absorb(progress, outcome, ctx, events)
    if isinstance(absorbed, Step):
        return absorbed
    p, effect = _next(absorbed, ctx, events)
    return Step(attrs.evolve(p, last=effect, issued=ctx.now), effect, tuple(events))


# -- taking in an outcome --------------------------------------------------------------


def _absorb(p: Progress, outcome: Outcome, ctx: Context, events: list[Event]) -> Progress | Step:
    if isinstance(outcome, Unreachable):
        return _unreachable(p, outcome, ctx, events)
    if p.outage is not None and not isinstance(outcome, Slept | Started):
        events.append(
            Event(
                "backend_back",
                "warning",
                f"Node {ctx.node}: the rendezvous backend answers again, after "
                f"{ctx.now - p.outage.since:.1f} s and {p.outage.failures} failed attempt(s).",
            )
        )
        p = attrs.evolve(p, outage=None)
    if isinstance(outcome, StateRead):
        # No state stored yet reads as the empty state, written with no token.
        return _new_snapshot(p, outcome.snapshot or Snapshot(RendezvousState(), None))
    if isinstance(outcome, Changed):
        return _new_snapshot(p, outcome.snapshot)
    if isinstance(outcome, Written):
        if outcome.written:
            p = attrs.evolve(p, lost=0, left=p.left or _leaving(p))
        else:
            p = attrs.evolve(p, lost=p.lost + 1, backing_off=outcome.snapshot is not None)
        return _new_snapshot(p, outcome.snapshot)
    if isinstance(outcome, Posted) and isinstance(p.last, Post):
        segment = segment_of(p.last.cursor)
        if isinstance(p.last.record, Withdrawal):
            # What the node decides on next must be read after its withdrawal was in the
            # log: a state read before could miss an admission that placed it.
            return attrs.evolve(
                p, withdrawn=p.last.record.posted, withdrawn_segment=segment, snap=None
            )
        return attrs.evolve(p, posted=p.last.record.posted, posted_segment=segment)
    if isinstance(outcome, LogRead):
        if outcome.bad:
            events.append(
                Event(
                    "bad_records",
                    "warning",
                    f"Rendezvous '{ctx.settings.run_id}': skipped {outcome.bad} join intent "
                    "record(s) that do not decode.",
                )
            )
        if isinstance(p.last, ReadLog) and outcome.end < p.last.cursor:
            # A log never ends before where it was read from; never move the cursor back.
            outcome = attrs.evolve(outcome, end=p.last.cursor)
        quiet = p.log is not None and outcome.end == p.log.end
        token = p.snap.token if p.snap is not None else None
        return attrs.evolve(
            p,
            log=outcome,
            log_token=token,
            log_at=ctx.now,
            polls=p.polls + 1 if quiet else 0,
        )
    if isinstance(outcome, BeatsRead) and isinstance(p.last, ReadBeats):
        return attrs.evolve(p, board_checked=frozenset(p.last.nodes), board_at=ctx.now)
    return p


def _leaving(p: Progress) -> bool:
    return p.op is Op.LEAVE or p.withdrawing is not None


def _new_snapshot(p: Progress, snap: Snapshot | None) -> Progress:
    if snap is None:
        return attrs.evolve(p, snap=None)
    if p.seen is not _NOT_READ and snap.token == p.seen:
        return attrs.evolve(p, snap=snap)
    # The state moved: whoever is steward now gets a full patience again.
    return attrs.evolve(p, snap=snap, seen=snap.token, patience_until=None, polls=0)


def _unreachable(p: Progress, outcome: Unreachable, ctx: Context, events: list[Event]) -> Step:
    """Pause and try again, or give up: past the reconnect window, or the deadline."""
    outage = p.outage or _Outage(p.issued, 0)
    outage = _Outage(outage.since, outage.failures + 1)
    pause = pacing.outage_pause(outage.failures, ctx.draw)
    attempt = max(ctx.now - p.issued, 0.0)
    limit = outage.since + ctx.reconnect_window
    if _leaving(p):
        limit = min(limit, p.withdraw_deadline)
    elif p.op is not Op.READ:
        limit = min(limit, p.deadline)
    p = attrs.evolve(p, outage=outage, snap=None, log=None, log_token=_NOT_READ)
    # Give up when the next attempt would end past the limit (a refused connection
    # may take a connect timeout to fail), so that the error comes in time.
    if not p.ride_out or ctx.now + pause + attempt >= limit:
        if p.withdrawing is not None:
            return _end_withdrawal(p, ctx, events, gave_up=True)
        if p.op is Op.LEAVE:
            return _end_leave(p, ctx, events, gave_up=True)
        effect = Fail(Failure.UNREACHABLE, outcome.message, _last_state(p))
        return Step(attrs.evolve(p, last=effect), effect, tuple(events))
    level = "warning" if outage.failures == 1 else "debug"
    events.append(
        Event(
            "backend_down",
            level,
            f"Node {ctx.node}: the rendezvous backend failed; trying again for up to "
            f"{ctx.reconnect_window:.0f} s: {outcome.message}",
        )
    )
    pause_ = Sleep(ctx.now + pause)
    return Step(attrs.evolve(p, last=pause_, issued=ctx.now + pause), pause_, tuple(events))


def _last_state(p: Progress) -> RendezvousState:
    return p.snap.state if p.snap is not None else RendezvousState()


# -- choosing the next effect ----------------------------------------------------------


def _next(p: Progress, ctx: Context, events: list[Event]) -> tuple[Progress, Effect]:
    if p.snap is None and not (p.op is Op.KEEP_ALIVE and ctx.has_board):
        return p, ReadState()
    if p.op is Op.KEEP_ALIVE:
        return _keep_alive(p, ctx)
    view, dead, check = _view(p, ctx)
    if check is not None:
        return p, check
    p = attrs.evolve(p, dropped=_dropped(p, dead, ctx, events))
    if p.op is Op.READ:
        return p, Finish(view)
    if p.op is Op.CLOSE:
        return _close(p, view, ctx)
    if _leaving(p):
        return _withdraw(p, view, ctx, events)
    return _join(p, view, ctx, events)


def _view(
    p: Progress, ctx: Context
) -> tuple[RendezvousState, tuple[NodeDesc, ...], ReadBeats | None]:
    """The state to decide on and the nodes dropped from it as dead, or first a read of
    their board records.

    The board is read only for nodes that look dead by what is known already, and
    only once per interval for the same nodes, so a healthy rendezvous costs no
    extra request.
    """
    assert p.snap is not None
    state, settings = p.snap.state, ctx.settings
    suspects = dead_nodes(state, settings, ctx.now, ctx.node, ctx.observed)
    # At most one read of the board per decision: a slow node whose readings age on
    # the way back would otherwise read for ever.
    if suspects and ctx.has_board and not isinstance(p.last, ReadBeats):
        interval = settings.keep_alive_interval.total_seconds()
        stale = ctx.now - p.board_at >= interval
        if stale or not p.board_checked.issuperset(suspects):
            # Also those that expire within an interval, so that the next steps need none.
            soon = dead_nodes(state, settings, ctx.now + interval, ctx.node, ctx.observed)
            return state, (), ReadBeats(soon)
    view, dead = drop_dead_nodes(state, settings, ctx.now, ctx.node, ctx.observed)
    return view, dead, None


def _dropped(
    p: Progress, dead: tuple[NodeDesc, ...], ctx: Context, events: list[Event]
) -> tuple[NodeDesc, ...]:
    if dead and dead != p.dropped:
        events.append(
            Event(
                "dropped",
                "info",
                f"Rendezvous '{ctx.settings.run_id}': dropping node(s) "
                f"{', '.join(map(str, dead))}, no heartbeat for "
                f"{ctx.settings.heartbeat_expiry:.1f} s.",
            )
        )
    return dead


def _write(p: Progress, new: RendezvousState, ctx: Context) -> tuple[Progress, Effect]:
    """Compare-and-set ``new`` (with every heartbeat the node has seen) on the token read."""
    assert p.snap is not None
    return p, CompareAndSet(merge_heartbeats(new, ctx.observed), p.snap.token)


def _wait(
    p: Progress, view: RendezvousState, ctx: Context, until: float = math.inf
) -> tuple[Progress, Effect]:
    """Wait for a change of the state, no longer than ``until`` nor past the moment time
    alone may change a decision (:func:`rdzv.core.next_wakeup`)."""
    assert p.snap is not None
    token = p.snap.token
    if p.backing_off:
        # After a lost compare-and-set: the winner's write often carries ours.
        until = min(until, ctx.now + pacing.lost_write_backoff(p.lost, ctx.draw))
        p = attrs.evolve(p, backing_off=False)
    own = ctx.observed.get(ctx.node)
    wake = next_wakeup(view, ctx.node, ctx.settings, ctx.now, p.deadline, own)
    until = min(until, wake + pacing.WAKE_MARGIN, ctx.now + pacing.MAX_WAIT)
    return p, WaitForChange(token, max(until, ctx.now))


def _keep_alive(p: Progress, ctx: Context) -> tuple[Progress, Effect]:
    if ctx.has_board:
        if p.known and not isinstance(p.last, WriteBeat):
            return p, WriteBeat(ctx.now)
        return p, Finish(_last_state(p))
    assert p.snap is not None
    view, _ = drop_dead_nodes(p.snap.state, ctx.settings, ctx.now, ctx.node, ctx.observed)
    own = ctx.observed.get(ctx.node)
    action = decide_keep_alive(view, ctx.node, ctx.settings, ctx.now, p.deadline, own)
    if action is Action.FINISH:
        return p, Finish(view)
    if action is Action.ERROR_TIMEOUT:
        return p, _timeout(p, view, ctx)
    return _write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)


def _close(p: Progress, view: RendezvousState, ctx: Context) -> tuple[Progress, Effect]:
    action = decide_close(view, ctx.node, ctx.settings, ctx.now, p.deadline)
    if action is Action.FINISH:
        return p, Finish(view)
    if action is Action.ERROR_TIMEOUT:
        return p, Fail(
            Failure.TIMEOUT,
            f"Node {ctx.node} could not close the rendezvous '{ctx.settings.run_id}' within "
            "close_timeout: other nodes kept writing the state. Try again, or raise "
            "close_timeout.",
            view,
        )
    return _write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)


def _timeout(p: Progress, view: RendezvousState, ctx: Context) -> Fail:
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


# -- joining ---------------------------------------------------------------------------

_PLACEMENTS = frozenset(
    {
        Action.ADD_TO_PARTICIPANTS,
        Action.ADD_TO_WAIT_LIST,
        Action.ADD_TO_REDUNDANCY_LIST,
        Action.REJOIN,
    }
)


def _join(
    p: Progress, view: RendezvousState, ctx: Context, events: list[Event]
) -> tuple[Progress, Effect]:
    node, settings, now = ctx.node, ctx.settings, ctx.now
    own = ctx.observed.get(node)
    action = decide_rejoin(view, node, settings, now, p.deadline, p.leaving, own)
    if action is Action.FINISH:
        return p, Finish(view)
    if action is Action.ERROR_CLOSED:
        return p, Fail(
            Failure.CLOSED,
            f"The rendezvous '{settings.run_id}' is closed: the job is finishing and admits no "
            "node. Start a new job with another run id to rendezvous again.",
            view,
        )
    if action is Action.GRACEFUL_EXIT:
        return p, Fail(
            Failure.GRACEFUL_EXIT,
            f"The rendezvous '{settings.run_id}' closed while node {node} was redundant; it "
            "was not needed and exits.",
            view,
        )
    timed_out = action is Action.ERROR_TIMEOUT or (
        now > p.deadline
        and action in (Action.REMOVE_FROM_PARTICIPANTS, Action.REMOVE_FROM_WAIT_LIST)
    )
    if timed_out:
        # Withdraw before failing, whatever the state says: an intent of this node
        # may still be pending, and a later admission must never place it.
        p = attrs.evolve(
            p,
            withdrawing=Failure.TIMEOUT,
            withdraw_deadline=max(p.deadline, now) + ROLLBACK_PERIOD,
        )
        return _withdraw(p, view, ctx, events)
    if action is Action.KEEP_ALIVE:
        if ctx.has_board:
            return p, WriteBeat(now)
        return _write(p, apply_action(view, action, node, settings, now), ctx)
    if action in _PLACEMENTS and ctx.has_log:
        return _pending(p, view, action, ctx)
    if action is Action.MARK_RENDEZVOUS_COMPLETE:
        return _by_steward(p, view, action, ctx)
    if action is Action.WAIT:
        duty = steward(view) == node
        if duty and ctx.has_log:
            return _steward(p, view, ctx)
        if p.dropped and (duty or steward(view) is None):
            return _write(p, view, ctx)  # the removal of the dead, so that everyone sees it
        return _wait(p, view, ctx)
    new = apply_action(view, action, node, settings, now)
    p = attrs.evolve(p, deadline=deadline_after(action, p.deadline, settings, now))
    return _write(p, new, ctx)


def _patience(p: Progress, ctx: Context, *, may_hold: bool) -> tuple[Progress, float]:
    """When this node stops waiting for the steward's write and writes itself.

    ``may_hold``: the steward may hold the write for one keep-alive interval.
    """
    if p.patience_until is not None:
        return p, p.patience_until
    wait = pacing.patience(ctx.draw)
    if may_hold:
        wait += ctx.settings.keep_alive_interval.total_seconds()
    until = ctx.now + wait
    return attrs.evolve(p, patience_until=until), until


def _by_steward(
    p: Progress, view: RendezvousState, action: Action, ctx: Context
) -> tuple[Progress, Effect]:
    """A write every participant would make (completing the round): the steward makes it,
    the others only once their patience ran out."""
    chosen = steward(view)
    if chosen is not None and chosen != ctx.node:
        p, until = _patience(p, ctx, may_hold=False)
        if ctx.now < until:
            return _wait(p, view, ctx, until)
    return _write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)


def _refresh_age(settings: RendezvousSettings) -> float:
    """Age at which a pending node posts its intent again, before it would expire."""
    expiry = settings.heartbeat_expiry
    return max(expiry - settings.keep_alive_interval.total_seconds(), expiry / 2)


def _log_is_current(p: Progress, since: float | None) -> bool:
    """Whether the last log read was made on the current state and after ``since``."""
    assert p.snap is not None
    return (
        p.log is not None and p.log_token == p.snap.token and (since is None or p.log_at >= since)
    )


def _pending(
    p: Progress, view: RendezvousState, action: Action, ctx: Context
) -> tuple[Progress, Effect]:
    """This node is not placed yet (or leaves its round): post, then wait or admit."""
    node, settings, now = ctx.node, ctx.settings, ctx.now
    leaves = view.round if action is Action.REJOIN else None
    post = Post(JoinIntent(node, now, leaves), view.intent_cursor)
    lost = p.posted is not None and segment_of(view.intent_cursor) > p.posted_segment
    if p.posted is None or lost:
        return p, post
    own = ctx.observed.get(node)
    interval = settings.keep_alive_interval.total_seconds()
    if ctx.has_board and own is not None and now - own >= interval:
        return p, WriteBeat(now)  # a rejoining participant stays alive while it waits
    repost_at = p.posted + _refresh_age(settings)
    chosen = steward(view, rejoining=action is Action.REJOIN)
    # The steward holds only while the round cannot reach min_nodes, even with us.
    short = len(view.participants) + len(view.wait_list) + 1 < settings.min_nodes
    p, until = _patience(p, ctx, may_hold=chosen is not None and not view.complete and short)
    patient = now < until
    if chosen is not None and chosen != node and patient:
        # Waiting: post again before the intent would expire.
        return (p, post) if now >= repost_at else _wait(p, view, ctx, min(until, repost_at))
    if not _log_is_current(p, p.posted):
        return p, ReadLog(view.intent_cursor)
    assert p.log is not None
    pending = pending_joins(view, p.log.records, settings, now)
    if node not in pending:
        # Our intent is gone: admitted and dropped since, expired, or posted to a
        # segment that rolled over. Post it again, where the log is now.
        return p, post
    first = next(iter(pending))
    if node in (chosen, first) or not patient:
        return _write(p, admit(view, p.log.records, p.log.end, settings, now), ctx)
    return (p, post) if now >= repost_at else _wait(p, view, ctx, min(until, repost_at))


def _steward(p: Progress, view: RendezvousState, ctx: Context) -> tuple[Progress, Effect]:
    """The steward's duty while it waits in its own join: read the log, admit, or hold."""
    settings, now = ctx.settings, ctx.now
    next_read = p.log_at + pacing.steward_poll(p.polls)
    if not _log_is_current(p, None) or now >= next_read:
        return p, ReadLog(view.intent_cursor)
    assert p.log is not None
    records, end = p.log.records, p.log.end
    pending = pending_joins(view, records, settings, now)
    members = view.members()
    withdrawn = any(isinstance(r, Withdrawal) and r.node in members for r in records)
    if not pending and not withdrawn:
        if p.dropped:
            return _write(p, view, ctx)  # the removal of the dead, so that everyone sees it
        return _wait(attrs.evolve(p, hold_since=None), view, ctx, next_read)
    interval = settings.keep_alive_interval.total_seconds()
    held_long = p.hold_since is not None and now - p.hold_since >= interval
    if not withdrawn and not held_long and should_hold(view, records, settings, now):
        p = attrs.evolve(p, hold_since=p.hold_since if p.hold_since is not None else now)
        return _wait(p, view, ctx, next_read)
    new = admit(view, records, end, settings, now)
    return _write(attrs.evolve(p, hold_since=None), new, ctx)


# -- leaving ---------------------------------------------------------------------------


def _withdraw(
    p: Progress, view: RendezvousState, ctx: Context, events: list[Event]
) -> tuple[Progress, Effect]:
    """Take this node out for good: withdraw its intents, and fence off admissions in flight."""
    node, settings, now = ctx.node, ctx.settings, ctx.now
    if p.left or view.closed or (view.role_of(node) is None and not ctx.has_log):
        return _ended(p, view, ctx, events, gave_up=False)
    if now > p.withdraw_deadline:
        return _ended(p, view, ctx, events, gave_up=True)
    if not ctx.has_log:
        action = decide_leave(view, node, settings, now, p.withdraw_deadline)
        if action.ends_operation:
            return _ended(p, view, ctx, events, gave_up=action is Action.ERROR_TIMEOUT)
        return _write(p, apply_action(view, action, node, settings, now), ctx)
    if p.withdrawn is None:
        return p, Post(Withdrawal(node, now), view.intent_cursor)
    if not _log_is_current(p, p.withdrawn):
        return p, ReadLog(view.intent_cursor)
    assert p.log is not None
    records = p.log.records
    if not needs_fence(view, records, node):
        return _ended(p, view, ctx, events, gave_up=False)
    visible = any(isinstance(r, Withdrawal) and r.node == node for r in records)
    if not visible and segment_of(view.intent_cursor) > p.withdrawn_segment:
        # Posted to a segment that rolled over: post it again, where the log is now.
        return p, Post(Withdrawal(node, now), view.intent_cursor)
    # This node leaves first, then the others' records are admitted: its leave and
    # their joins are concurrent, so either order is one the nodes could have had,
    # and this one never completes a round with a node that is leaving it.
    draft = Draft.of(view)
    draft.leave(node, settings, now)
    others = [r for r in records if r.node != node]
    return _write(p, admit(draft.build(view), others, p.log.end, settings, now), ctx)


def _ended(
    p: Progress, view: RendezvousState, ctx: Context, events: list[Event], *, gave_up: bool
) -> tuple[Progress, Effect]:
    step_ = (
        _end_withdrawal(p, ctx, events, gave_up=gave_up, view=view)
        if p.withdrawing is not None
        else _end_leave(p, ctx, events, gave_up=gave_up, view=view)
    )
    return p, step_.effect


def _could_not_leave(ctx: Context, events: list[Event]) -> None:
    events.append(
        Event(
            "leave_failed",
            "warning",
            f"Node {ctx.node} could not take itself out of rendezvous '{ctx.settings.run_id}' "
            "in time; its peers will drop it when its heartbeat and intents expire "
            f"({ctx.settings.heartbeat_expiry:.0f} s).",
        )
    )


def _end_withdrawal(
    p: Progress,
    ctx: Context,
    events: list[Event],
    *,
    gave_up: bool,
    view: RendezvousState | None = None,
) -> Step:
    if gave_up:
        _could_not_leave(ctx, events)
    effect = _timeout(p, view or _last_state(p), ctx)
    return Step(attrs.evolve(p, last=effect), effect, tuple(events))


def _end_leave(
    p: Progress,
    ctx: Context,
    events: list[Event],
    *,
    gave_up: bool,
    view: RendezvousState | None = None,
) -> Step:
    if gave_up:
        _could_not_leave(ctx, events)
    effect = Finish(view or _last_state(p))
    return Step(attrs.evolve(p, last=effect), effect, tuple(events))
