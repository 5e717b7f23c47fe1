"""Joining and leaving through the intent log: the rules of one step of a join.

A node that needs placing posts a *join intent*, again before it would expire,
and again when the log rolled over to a new segment without placing it. The
*steward* (:func:`~rdzv.core.intents.steward`) reads the log at a growing pace and
writes the *admission*; it *holds* it while the round cannot reach ``min_nodes``,
for one keep-alive interval at most. When the state names no steward, a node
places itself before it posts, as a join without a log does, and the winner of
that write is the steward; in a round of :data:`~rdzv.core.pacing.FIRST_MOVER_ROUND` nodes
or fewer, the node of the first pending intent admits instead, and holds alike
(one write on the way, where reading the log costs nothing). Every other pending
node waits for that write, for its *patience*; then it admits itself.

A join that ends without a rank (timeout, or a failure in the shell) *withdraws*:
it posts a withdrawal, reads the state again, and writes it once more unless
nothing of it is left to admit, so that no admission read before the withdrawal
can still be written (see :func:`~rdzv.core.intents.needs_fence`). The words are
those of the glossary in ``docs/concepts.rst``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rdzv.core import pacing
from rdzv.core.decisions import ROLLBACK_PERIOD, Action, deadline_after, decide_leave, decide_rejoin
from rdzv.core.effects import (
    Effect,
    Event,
    Fail,
    Failure,
    Finish,
    Post,
    ReadLog,
)
from rdzv.core.intents import (
    JoinIntent,
    LogRecord,
    Withdrawal,
    admit,
    needs_fence,
    pending_joins,
    segment_of,
    should_hold,
    steward,
)
from rdzv.core.model import NodeDesc, RendezvousState
from rdzv.core.progress import (
    Context,
    Progress,
    Step,
    last_state,
    log_is_current,
    read_log,
    timeout_failure,
    wait,
    write,
)
from rdzv.core.transitions import apply_action

__all__ = ["completes", "end", "join_step", "withdraw"]


_PLACEMENTS = frozenset(
    {
        Action.ADD_TO_PARTICIPANTS,
        Action.ADD_TO_WAIT_LIST,
        Action.ADD_TO_REDUNDANCY_LIST,
        Action.REJOIN,
    }
)


def join_step(
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
        p = p.evolve(
            withdrawing=Failure.TIMEOUT,
            withdraw_deadline=max(p.deadline, now) + ROLLBACK_PERIOD,
        )
        return withdraw(p, view, ctx, events)
    if action is Action.KEEP_ALIVE and (ctx.has_board or isinstance(p.last, ReadLog)):
        # With a board, the node's heartbeats are its keep-alive's, sent beside the join:
        # a join that beat between its steps beat late wherever a step took a large part
        # of the expiry, and on etcd-v2 at 1,024 nodes a beat took a second, which the
        # join then spent on it instead of on the round. Without a board, a log read is
        # the last input of a decision: the beat (a write of the state) comes after it.
        # On a loaded etcd-v2 a steward's log reads took 3 s, so a beat was due after
        # each: it beat, read the log again, beat again, and never admitted anyone.
        action = Action.WAIT
    if action is Action.KEEP_ALIVE:
        return write(p, apply_action(view, action, node, settings, now), ctx)
    if action in _PLACEMENTS and ctx.has_log:
        return _pending(p, view, action, ctx)
    if action is Action.MARK_RENDEZVOUS_COMPLETE:
        return _by_steward(p, view, action, ctx)
    if action is Action.WAIT:
        duty = steward(view) == node
        if duty and ctx.has_log:
            return _steward(p, view, ctx)
        if p.dropped and (duty or steward(view) is None):
            return write(p, view, ctx)  # the removal of the dead, so that everyone sees it
        return wait(p, view, ctx)
    new = apply_action(view, action, node, settings, now)
    p = p.evolve(deadline=deadline_after(action, p.deadline, settings, now))
    return write(p, new, ctx)


def completes(view: RendezvousState, written: RendezvousState) -> bool:
    """Whether writing ``written`` over ``view`` completes a round (gives ranks)."""
    return written.complete and not (view.complete and view.round == written.round)


def _admit(
    p: Progress, view: RendezvousState, records: Sequence[LogRecord], end: int, ctx: Context
) -> RendezvousState:
    """The admission of ``records``, their intents judged fresh as of when the log was
    asked for; or, when that admission completes a round, as of the completion's check
    of every member (the board read it made, or now).

    The first, because a node whose log reads took a second found its own intent
    expired at each read, posted it again, and never joined. The second, because an
    intent admitted into a completed round is a member's heartbeat like the others:
    judged as of the log's asking, an intent 2.96 s old then (expiry 3 s) put a node
    dead since into the round completed 0.9 s later (seed 301046).
    """
    settings, now = ctx.settings, ctx.now
    new = admit(view, records, end, settings, now, p.log_asked, ctx.node)
    if completes(view, new):
        checked = now if p.board_asked is None else p.board_asked
        new = admit(view, records, end, settings, now, checked, ctx.node)
    return new


def _patience(p: Progress, ctx: Context, *, may_hold: bool = False) -> tuple[Progress, float]:
    """When this node stops waiting for the steward's write and writes itself.

    ``may_hold``: the steward may hold the write for one keep-alive interval.
    """
    if p.patience_until is not None:
        return p, p.patience_until
    wait = pacing.patience(ctx.draw)
    if may_hold:
        wait += ctx.settings.keep_alive_interval.total_seconds()
    until = ctx.now + wait
    return p.evolve(patience_until=until), until


def _takes_over(p: Progress, view: RendezvousState, ctx: Context, rejoining: bool) -> bool:
    """Whether this node, out of patience with the steward, reads the log to admit in its
    place.

    Every pending node doing so would read the whole log, N records by each of N nodes:
    a steward that a loaded machine only slowed would then drown under the work of
    those replacing it. So of the nodes that may be waiting with this one, about
    :data:`~rdzv.core.pacing.TAKEOVERS` take over, drawn at random, and twice as
    many after each patience that brought no write, up to
    :data:`~rdzv.core.pacing.MAX_TAKEOVERS` per patience: each node draws again at
    each patience, so any node does in time. Those waiting are the nodes the round
    still lacks for ``min_nodes`` or, ``rejoining``, the other participants leaving
    a complete round: counting only the former, which a complete round does not
    lack, every survivor of a round of 1,024 took over and read the log (on etcd-v2,
    1,400 records each; the re-form took 23 s instead of 10).
    """
    if rejoining:
        waiting = len(view.participants) - 1
    else:
        waiting = ctx.settings.min_nodes - len(view.participants) - len(view.wait_list)
    return ctx.draw * max(waiting, 1) < pacing.takeovers(p.passed)


def _by_steward(
    p: Progress, view: RendezvousState, action: Action, ctx: Context
) -> tuple[Progress, Effect]:
    """A write every participant would make (completing the round): the steward makes it,
    the others only once their patience ran out."""
    chosen = steward(view)
    if chosen is not None and chosen != ctx.node:
        p, until = _patience(p, ctx, may_hold=False)
        if ctx.now >= until and not _completes_instead(p, view, ctx):
            # Out of patience, but others take over first: patience once more.
            p, until = _patience(p.evolve(patience_until=None, passed=p.passed + 1), ctx)
        if ctx.now < until:
            return wait(p, view, ctx, until)
    return write(p, apply_action(view, action, ctx.node, ctx.settings, ctx.now), ctx)


def _completes_instead(p: Progress, view: RendezvousState, ctx: Context) -> bool:
    """Whether this participant, out of patience with the steward, completes the round in
    its place: about :data:`~rdzv.core.pacing.TAKEOVERS` of them per patience, doubling,
    as for an admission (see :func:`_takes_over`). The node that completes a round
    reads every member's heartbeat record first: on a loaded host, where a patience
    is a step or two, every participant of a round of 1,024 did (in the simulator, at
    0.7 ms a step on two cores, 103.6 board records a node on average, 1,600 each
    of those that completed)."""
    others = max(len(view.participants) - 1, 1)
    return ctx.draw * others < pacing.takeovers(p.passed)


def _pending(
    p: Progress, view: RendezvousState, action: Action, ctx: Context
) -> tuple[Progress, Effect]:
    """This node is not placed yet (or leaves its round): post, then wait or admit."""
    node, settings, now = ctx.node, ctx.settings, ctx.now
    rejoining = action is Action.REJOIN
    post = Post(JoinIntent(node, now, view.round if rejoining else None), view.intent_cursor)
    chosen = steward(view, rejoining=rejoining)
    if chosen is None and settings.min_nodes > pacing.FIRST_MOVER_ROUND and p.posted is None:
        # Nobody is named to admit (an empty round, or a complete one with nobody
        # waiting): place ourselves, as a join without a log would, before posting.
        # The winner of this compare-and-set is the steward the others wait for;
        # finding the first pending intent instead, every node would read the whole
        # log. Posting first widened the window in which every node of a large job
        # still saw no steward, and each of those lost a write.
        return write(p, apply_action(view, action, node, settings, now), ctx)
    lost = p.posted is not None and segment_of(view.intent_cursor) > p.posted_segment
    if p.posted is None or lost:
        return p, post
    interval = settings.keep_alive_interval.total_seconds()
    repost_at = p.posted + pacing.intent_refresh_age(settings.heartbeat_expiry, interval)
    if chosen is None and settings.min_nodes > pacing.FIRST_MOVER_ROUND:
        return write(p, apply_action(view, action, node, settings, now), ctx)  # as above
    # The steward holds while the round cannot reach min_nodes, even with us, and while
    # survivors leave a complete round (see should_hold).
    short = len(view.participants) + len(view.wait_list) + 1 < settings.min_nodes
    holding = short if not view.complete else rejoining
    named = chosen is not None
    p, until = _patience(p, ctx, may_hold=named and holding)
    patient = now < until
    if named and chosen != node and not patient and not _takes_over(p, view, ctx, rejoining):
        # Out of patience, but others take over first: patience once more.
        passed = p.evolve(patience_until=None, passed=p.passed + 1)
        p, until = _patience(passed, ctx, may_hold=holding)
        patient = True
    if named and chosen != node and patient:
        # Waiting: post again before the intent would expire.
        return (p, post) if now >= repost_at else wait(p, view, ctx, min(until, repost_at))
    # The steward reads the log at its pace; so does the first pending node of a small
    # round with no steward while it holds the first admission (hold_since set).
    reads_at_pace = chosen == node or (not named and p.hold_since is not None)
    polled = not reads_at_pace or now < p.log_at + pacing.steward_poll(p.polls)
    if not log_is_current(p, p.posted) or not polled:
        return p, read_log(p, view)
    assert p.log is not None
    log = p.log
    pending = pending_joins(view, log.records, settings, p.log_asked, node)
    if node not in pending:
        # Our intent is gone: admitted and dropped since, expired, or posted to a
        # segment that rolled over. Post it again, where the log is now.
        return p, post
    first = next(iter(pending))
    holder = (node == chosen and patient) or (not named and node == first)
    if holder and _holds(p, view, ctx, pending):
        # The steward rejoins too, and holds the survivors' admission until the last
        # of them leaves the round; or, in a small round with no steward yet, the first
        # pending node holds the first admission while the round could not reach
        # min_nodes with it (see should_hold): one write places the nodes that came.
        p = p.evolve(hold_since=p.hold_since if p.hold_since is not None else now)
        return wait(p, view, ctx, min(now + pacing.steward_poll(p.polls), repost_at))
    if (
        node not in (chosen, first)
        and not patient
        and should_hold(view, log.records, settings, p.log_asked, pending)
    ):
        # The steward is late (the first pending node admits in its place), but an
        # admission would change no decision: writing it anyway, every pending
        # node would lose its compare-and-set to another. A dead one's intent expires.
        p, until = _patience(p.evolve(patience_until=None), ctx, may_hold=True)
        return (p, post) if now >= repost_at else wait(p, view, ctx, min(until, repost_at))
    if node in (chosen, first) or not patient:
        new = _admit(p, view, log.records, log.end, ctx)
        return write(p.evolve(hold_since=None), new, ctx)
    return (p, post) if now >= repost_at else wait(p, view, ctx, min(until, repost_at))


def _holds(
    p: Progress,
    view: RendezvousState,
    ctx: Context,
    pending: Mapping[NodeDesc, JoinIntent] | None = None,
) -> bool:
    """Whether the steward holds the admission of the log it read (one interval at most);
    ``pending``, the log's pending joins, when the caller has them."""
    assert p.log is not None
    interval = ctx.settings.keep_alive_interval.total_seconds()
    if p.hold_since is not None and ctx.now - p.hold_since >= interval:
        return False
    if any(isinstance(r, Withdrawal) and view.role_of(r.node) for r in p.log.records):
        return False  # a leave is written at once
    return should_hold(view, p.log.records, ctx.settings, p.log_asked, pending)


def _steward(p: Progress, view: RendezvousState, ctx: Context) -> tuple[Progress, Effect]:
    """The steward's duty while it waits in its own join: read the log, admit, or hold."""
    settings, now = ctx.settings, ctx.now
    next_read = p.log_at + pacing.steward_poll(p.polls)
    if not log_is_current(p, None) or now >= next_read:
        return p, read_log(p, view)
    assert p.log is not None
    records, end = p.log.records, p.log.end
    pending = pending_joins(view, records, settings, p.log_asked, ctx.node)
    members = view.members()
    withdrawn = any(isinstance(r, Withdrawal) and r.node in members for r in records)
    if not pending and not withdrawn:
        if p.dropped:
            return write(p, view, ctx)  # the removal of the dead, so that everyone sees it
        return wait(p.evolve(hold_since=None), view, ctx, next_read)
    if _holds(p, view, ctx, pending):
        p = p.evolve(hold_since=p.hold_since if p.hold_since is not None else now)
        return wait(p, view, ctx, next_read)
    new = _admit(p, view, records, end, ctx)
    return write(p.evolve(hold_since=None), new, ctx)


# -- leaving ---------------------------------------------------------------------------


def withdraw(
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
        return write(p, apply_action(view, action, node, settings, now), ctx)
    if p.withdrawn is None:
        return p, Post(Withdrawal(node, now), view.intent_cursor)
    if not log_is_current(p, p.withdrawn):
        return p, read_log(p, view)
    assert p.log is not None
    records = p.log.records
    if not needs_fence(view, records, node):
        return _ended(p, view, ctx, events, gave_up=False)
    visible = any(isinstance(r, Withdrawal) and r.node == node for r in records)
    if not visible and segment_of(view.intent_cursor) > p.withdrawn_segment:
        # Posted to a segment that rolled over: post it again, where the log is now.
        return p, Post(Withdrawal(node, now), view.intent_cursor)
    # This node's withdrawal is admitted with the others' records, so it leaves with
    # every other withdrawn node before anyone joins: its leave and their joins are
    # concurrent, so that order is one the nodes could have had, and the one that never
    # completes a round with a node that is leaving it.
    records = [*(r for r in records if r.node != node), Withdrawal(node, now)]
    return write(p, _admit(p, view, records, p.log.end, ctx), ctx)


def _ended(
    p: Progress, view: RendezvousState, ctx: Context, events: list[Event], *, gave_up: bool
) -> tuple[Progress, Effect]:
    return p, end(p, ctx, events, gave_up=gave_up, view=view).effect


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


def end(
    p: Progress,
    ctx: Context,
    events: list[Event],
    *,
    gave_up: bool,
    view: RendezvousState | None = None,
) -> Step:
    """The end of a leave: the join's timeout when the join withdrew on one, else done."""
    if gave_up:
        _could_not_leave(ctx, events)
    state = view or last_state(p)
    effect = timeout_failure(p, state, ctx) if p.withdrawing is not None else Finish(state)
    return Step(p.evolve(last=effect), effect, tuple(events))
