"""A node's operations as one pure state machine: what it has done, and the next effect.

Every operation of a node (join, leave, close, keep-alive, read) runs the same
loop: the shell calls :func:`step` with the operation's :class:`Progress`, the
outcome of the last effect and a :class:`Context` (the time, a random draw, the
heartbeats the node has seen), and performs the effect that comes back, until it
is :class:`~rdzv.core.effects.Finish` or :class:`~rdzv.core.effects.Fail`. The
step reads no clock and does no I/O: the same inputs give the same effect, so a
simulator can run thousands of nodes through it in virtual time
(:mod:`rdzv.sim`), and the shell (:mod:`rdzv.dynamic.executor`) only performs.

This module takes each outcome in (backend outages included), builds the view a
node decides on (without the dead nodes it watches, see
:func:`rdzv.core.liveness.watcher`) and runs the operation's rules: closing,
keeping alive and reading here, joining and leaving through the intent log in
:mod:`rdzv.core.joining`. The records it works with are in
:mod:`rdzv.core.progress`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import attrs

from rdzv.core import pacing
from rdzv.core.decisions import Action, decide_close, decide_keep_alive
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
from rdzv.core.intents import Withdrawal, segment_of
from rdzv.core.joining import completes, end, join_step, withdraw
from rdzv.core.liveness import (
    confirmed_dead,
    dead_nodes,
    drop_dead_nodes,
    drop_nodes,
    watcher,
)
from rdzv.core.model import NodeDesc, RendezvousState
from rdzv.core.progress import (
    NOT_READ,
    Context,
    Op,
    Outage,
    Progress,
    Step,
    last_state,
    leaving,
    timeout_failure,
    write,
)
from rdzv.core.transitions import apply_action

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
    """Send a heartbeat if one is due. ``known``: the node has one to keep alive (the last
    state seen holds it, or it is joining)."""
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
    return Step(p.evolve(last=effect, issued=ctx.now), effect, tuple(events))


# -- taking in an outcome --------------------------------------------------------------

_DECIDED = (CompareAndSet, WaitForChange, Sleep)
"""The effects that end a decision (a write, or a wait for the state to move). A decision
may take several steps (a post, a state or log read) between its board read and its
write; the board read, and a completion's check of every member, serve it alone."""


def _absorb(p: Progress, outcome: Outcome, ctx: Context, events: list[Event]) -> Progress | Step:
    if isinstance(p.last, _DECIDED) and (p.board_asked is not None or p.watch_all):
        # The decision is made: the next judges by its own time again, and a completion
        # (a write lost, tried again) checks every member again. Kept, a lost completion
        # left the node to complete a round 5 s later as of a board read made between,
        # with a node dead since (found in review).
        p = p.evolve(board_asked=None, watch_all=False)
    if isinstance(outcome, BeatsRead) and isinstance(p.last, ReadBeats):
        p = p.evolve(board_asked=p.last.at)
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
        p = p.evolve(outage=None)
    if isinstance(outcome, StateRead):
        # No state stored yet reads as the empty state, written with no token.
        return _new_snapshot(p, outcome.snapshot or Snapshot(RendezvousState(), None), ctx)
    if isinstance(outcome, Changed):
        return _new_snapshot(p, outcome.snapshot, ctx)
    if isinstance(outcome, Written):
        if outcome.written:
            p = p.evolve(lost=0, left=p.left or leaving(p))
        else:
            p = p.evolve(lost=p.lost + 1, backing_off=outcome.snapshot is not None)
        return _new_snapshot(p, outcome.snapshot, ctx)
    if isinstance(outcome, Posted) and isinstance(p.last, Post):
        segment = segment_of(p.last.cursor)
        if isinstance(p.last.record, Withdrawal):
            # What the node decides on next must be read after its withdrawal was in the
            # log: a state read before could miss an admission that placed it.
            return p.evolve(withdrawn=p.last.record.posted, withdrawn_segment=segment, snap=None)
        return p.evolve(posted=p.last.record.posted, posted_segment=segment)
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
        start = p.last.cursor if isinstance(p.last, ReadLog) else -1
        cursor = p.snap.state.intent_cursor if p.snap is not None else None
        if p.log is not None and start == p.log.end and p.log_from == cursor:
            # Read on from where the last read ended: the records before still pend.
            outcome = attrs.evolve(outcome, records=[*p.log.records, *outcome.records])
            start = p.log_from
        return p.evolve(
            log=outcome,
            log_from=start,
            log_token=token,
            log_at=ctx.now,
            log_asked=p.issued,
            polls=p.polls + 1 if quiet else 0,
        )
    return p


def _new_snapshot(p: Progress, snap: Snapshot | None, ctx: Context) -> Progress:
    if snap is None:
        return p.evolve(snap=None)
    if p.seen is not NOT_READ and snap.token == p.seen:
        return p.evolve(snap=snap, read_at=ctx.now)
    # The state moved: whoever is steward now gets a full patience again.
    return p.evolve(
        snap=snap, read_at=ctx.now, seen=snap.token, patience_until=None, passed=0, polls=0
    )


def _unreachable(p: Progress, outcome: Unreachable, ctx: Context, events: list[Event]) -> Step:
    """Pause and try again, or give up: past the reconnect window, or the deadline."""
    outage = p.outage or Outage(p.issued, 0)
    outage = Outage(outage.since, outage.failures + 1)
    pause = pacing.outage_pause(outage.failures, ctx.draw)
    attempt = max(ctx.now - p.issued, 0.0)
    limit = outage.since + ctx.reconnect_window
    if leaving(p):
        limit = min(limit, p.withdraw_deadline)
    elif p.op is not Op.READ:
        limit = min(limit, p.deadline)
    p = p.evolve(outage=outage, snap=None, log=None, log_token=NOT_READ)
    # Give up when the next attempt would end past the limit (a refused connection
    # may take a connect timeout to fail), so that the error comes in time.
    if not p.ride_out or ctx.now + pause + attempt >= limit:
        if leaving(p):
            return end(p, ctx, events, gave_up=True)
        effect = Fail(Failure.UNREACHABLE, outcome.message, last_state(p))
        return Step(p.evolve(last=effect), effect, tuple(events))
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
    return Step(p.evolve(last=pause_, issued=ctx.now + pause), pause_, tuple(events))


# -- choosing the next effect ----------------------------------------------------------


def _next(p: Progress, ctx: Context, events: list[Event]) -> tuple[Progress, Effect]:
    if p.op is Op.KEEP_ALIVE and ctx.has_board:
        return _keep_alive(p, ctx)
    if p.snap is None or _stale(p, ctx):
        return p, ReadState()
    if p.op is Op.KEEP_ALIVE:
        return _keep_alive(p, ctx)
    view, dead, check = _view(p, ctx)
    if check is not None:
        return p, check
    decided, effect = _decide(p.evolve(dropped=_dropped(p, dead, ctx, events)), view, ctx, events)
    if isinstance(effect, CompareAndSet) and not p.watch_all and completes(view, effect.state):
        # A round completes only without a dead node in it: the node that completes it
        # checks every member's heartbeat first, not only those it watches. Other
        # writes may carry a dead member on; the watcher, or that completion, drops
        # it. Checking before every write had each node that placed itself read
        # the whole board: a re-form of 1,024 nodes on etcd-v2 read 490,000
        # records in 1,320 listings, and never ended.
        # One more board read, of every member, for the completion.
        return _next(p.evolve(watch_all=True, board_asked=None), ctx, events)
    return decided, effect


def _stale(p: Progress, ctx: Context) -> bool:
    """Whether the state read is too old to decide on (:data:`~rdzv.core.pacing.MAX_VIEW_AGE`).

    Never right after a read: the node decides on what it read (a log read is for the
    state it has; a board reading serves the decision under way), or on a loaded host
    it would read for ever: in the simulator, on a host where steps waited over half
    a second for a core, a steward read the board, read the state again (it had aged
    past MAX_VIEW_AGE meanwhile), read the board for the members that state made look
    dead, and so on; its round of 1,023 never re-formed.
    """
    if isinstance(p.last, ReadState | ReadBeats | ReadLog):
        return False
    return ctx.now - p.read_at > pacing.MAX_VIEW_AGE


def _decide(
    p: Progress, view: RendezvousState, ctx: Context, events: list[Event]
) -> tuple[Progress, Effect]:
    if p.op is Op.READ:
        watching = view.members_in_order[:1] == (ctx.node,)
        if p.dropped and watching and not view.closed:
            # The watcher writes the dead out, so that every node sees the loss at
            # its next read (it watches only the nodes before the watcher).
            return write(p, view, ctx)
        return p, Finish(view)
    if p.op is Op.CLOSE:
        return _close(p, view, ctx)
    if leaving(p):
        return withdraw(p, view, ctx, events)
    return join_step(p, view, ctx, events)


def _view(
    p: Progress, ctx: Context
) -> tuple[RendezvousState, tuple[NodeDesc, ...], ReadBeats | None]:
    """The state to decide on and the nodes dropped from it as dead, or first a read of
    their heartbeat records on the board.

    Without a board the state's heartbeats are current, and every dead node is
    dropped. With one, a node drops only what it watches (see
    :func:`rdzv.core.liveness.watcher`): the watcher all members, the others the
    members before the watcher (and a node about to complete a round: all). It
    reads the board only for nodes that look dead by what it knows already, so a
    healthy rendezvous costs no extra request.
    """
    assert p.snap is not None
    state, settings, node = p.snap.state, ctx.settings, ctx.node
    if not ctx.has_board:
        return (*drop_dead_nodes(state, settings, _judged(ctx.now, ctx), node, ctx.observed), None)
    # Heartbeats are judged as of when the board was asked, once it was: on etcd-v2 at
    # 1,024 nodes a board read took 3 s, and every heartbeat it brought had expired by
    # the time it came back (a completion judged by then dropped all 1,023 live
    # members). Nor does a decision read the board twice (but to complete a round, see
    # _next and _absorb): judged by then, the reading of a node whose reads outlast the
    # expiry less the interval had aged past the expiry again when it came back; it
    # read the board again, beat, posted its intent again, read the board again, and so
    # on, and never joined (a real TCP store, 0.5 s reads against a 0.6 s expiry). A
    # node that died since the reading is the watcher's to find, as one that dies just
    # after the decision.
    # And as of the backend's lag before that (see _judged).
    now = _judged(ctx.now if p.board_asked is None else p.board_asked, ctx)
    checked = _checked(ctx)
    watching, head, unsure = watcher(state, node, settings, now, ctx.observed, checked)
    # None right after a log read, the last input of a decision, unless the write
    # completes a round: on a loaded host the steward's readings aged while it read the
    # log, and it read the board again instead of admitting, then the log again, and so on.
    may_read = p.board_asked is None and (p.watch_all or not isinstance(p.last, ReadLog))
    if watching == node or p.watch_all:
        suspects = dead_nodes(state, settings, now, node, ctx.observed)
        # Dead when the board, read after its heartbeat expired, had nothing newer.
        dead = tuple(
            n
            for n in suspects
            if confirmed_dead(checked.get(n), _beat(state, n, ctx), now, settings)
        )
        if may_read and len(dead) < len(suspects):
            # With those that expire within an interval, so that the next checks need none.
            soon = now + settings.keep_alive_interval.total_seconds()
            suspected = dead_nodes(state, settings, soon, node, ctx.observed)
            return state, (), ReadBeats(suspected, ctx.now)
        if p.watch_all:
            # A round completes only without a node whose heartbeat had expired, confirmed
            # or not (a crashed node in a new round would be a ghost rank): the watcher's
            # rule, applied to every member. Not whether a member had missed a beat
            # (74b98f1): a joining node beats once late by design, and on the loaded host
            # completions dropped 250 to 1,000 members each, 6,173 times, and the round
            # never re-formed.
            dead = suspects
        # The watcher drops only what the board confirmed: a heartbeat that expired
        # while the answer came back may be on the board already. Dropping those too,
        # the watcher of 1,024 nodes on two loaded cores dropped 267 live nodes.
        return drop_nodes(state, dead, settings), dead, None
    # Only the members up to the watcher: usually just the watcher's own record, once
    # it looks dead; the whole chain when several before it do.
    if unsure and may_read:
        return state, (), ReadBeats(unsure, ctx.now)
    return drop_nodes(state, head, settings), head, None


def _judged(moment: float, ctx: Context) -> float:
    """The time as of which heartbeats are judged: ``moment`` less the backend's lag.

    A backend that stalls (a frozen etcd, a stalled disk) holds every heartbeat with
    every other request: the first node to be answered after an 8 s stall found all
    the others' heartbeats expired (keep-alive 1 s x 3) and dropped them, and every
    launcher restarted. A node's own requests show how long the backend took lately
    (``ctx.lag``); a heartbeat is not judged late by less than that
    (:func:`rdzv.core.pacing.heartbeat_lag`).
    """
    return moment - ctx.heartbeat_lag


def _checked(ctx: Context) -> Mapping[NodeDesc, float]:
    """When the node read each board record, less the lag: what the board could hold."""
    lag = ctx.heartbeat_lag
    return _Earlier(ctx.checked, lag) if lag else ctx.checked


class _Earlier(Mapping[NodeDesc, float]):
    """``times``, each ``by`` seconds earlier; not a copy (a board holds thousands)."""

    def __init__(self, times: Mapping[NodeDesc, float], by: float) -> None:
        self._times = times
        self._by = by

    def __getitem__(self, node: NodeDesc) -> float:
        return self._times[node] - self._by

    def __iter__(self) -> Iterator[NodeDesc]:
        return iter(self._times)

    def __len__(self) -> int:
        return len(self._times)


def _beat(state: RendezvousState, node: NodeDesc, ctx: Context) -> float:
    """The latest heartbeat of ``node`` known: the state's, or a newer one seen."""
    beat = state.last_heartbeats[node]
    return max(beat, ctx.observed.get(node, beat))


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


def _keep_alive(p: Progress, ctx: Context) -> tuple[Progress, Effect]:
    if ctx.has_board:
        if p.known and not isinstance(p.last, WriteBeat):
            return p, WriteBeat(ctx.now)
        return p, Finish(last_state(p))
    assert p.snap is not None
    judged = _judged(ctx.now, ctx)
    view, _ = drop_dead_nodes(p.snap.state, ctx.settings, judged, ctx.node, ctx.observed)
    own = ctx.observed.get(ctx.node)
    action = decide_keep_alive(view, ctx.node, ctx.settings, ctx.now, p.deadline, own)
    if action is Action.FINISH:
        return p, Finish(view)
    if action is Action.ERROR_TIMEOUT:
        return p, timeout_failure(p, view, ctx)
    return write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)


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
    return write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)
