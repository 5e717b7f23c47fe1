"""The node's protocol step by step: each test is a sequence of outcomes and the effects
that must follow, with no backend and no clock (after h11's state tests)."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from rdzv.core import (
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    apply_action,
    pacing,
    protocol,
)
from rdzv.core.effects import (
    BeatsRead,
    BeatWritten,
    Changed,
    CompareAndSet,
    Effect,
    Fail,
    Failure,
    Finish,
    LogRead,
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
from rdzv.core.intents import LOG_SEGMENT_SPAN, JoinIntent, Withdrawal

SETTINGS = RendezvousSettings(
    "run",
    2,
    3,
    timeout=RendezvousTimeout(join=60, last_call=5),
    keep_alive_interval=timedelta(seconds=1),
    keep_alive_max_attempt=3,
)
NOW = 1_800_000_000.0
A, B, C = (NodeDesc(f"node-{i}", 100 + i, 0) for i in range(3))


class Node:
    """One node's operation, stepped by hand: ``then(outcome)`` returns the next effect."""

    def __init__(
        self,
        progress: protocol.Progress,
        node: NodeDesc = A,
        settings: RendezvousSettings = SETTINGS,
        **context: object,
    ) -> None:
        self.progress = progress
        self.node = node
        self.settings = settings
        self.now = NOW
        self.draw = 0.5
        self.observed: dict[NodeDesc, float] = {}
        self.context = {"has_log": True, "has_board": True, "reconnect_window": 5.0, **context}
        self.events: list[str] = []

    def then(self, outcome: object, *, at: float | None = None) -> object:
        if at is not None:
            self.now = at
        ctx = protocol.Context(
            self.node,
            self.settings,
            self.now,
            self.draw,
            observed=self.observed,
            **self.context,  # type: ignore[arg-type]
        )
        step = protocol.step(self.progress, outcome, ctx)  # type: ignore[arg-type]
        self.progress = step.progress
        self.events += [e.kind for e in step.events]
        return step.effect


def joined(*nodes: NodeDesc, at: float = NOW) -> RendezvousState:
    state = RendezvousState()
    for node in nodes:
        state = apply_action(state, Action.ADD_TO_PARTICIPANTS, node, SETTINGS, at)
    return state


def snap(state: RendezvousState, token: int = 1) -> Snapshot:
    return Snapshot(state, token)


# -- joining ---------------------------------------------------------------------------


BIG = RendezvousSettings(
    "run", pacing.FIRST_MOVER_ROUND + 1, 100, keep_alive_interval=timedelta(seconds=1)
)


def test_a_node_that_finds_no_steward_places_itself_and_becomes_the_steward() -> None:
    """No state names a steward, in a round larger than FIRST_MOVER_ROUND: the node places
    itself, as a join without a log does, instead of reading the whole log to find the
    first pending intent (which every node of a large job arriving together would do).
    It writes before it posts: posting first, every node of a large job still found no
    steward after its post, and all but one lost a write (1.90 writes a node at 256
    nodes on etcd-v3 against 1.50)."""
    node = Node(protocol.join(NOW + 60), settings=BIG)
    assert node.then(Started()) == ReadState()
    effect = node.then(StateRead(None))
    assert isinstance(effect, CompareAndSet)
    assert effect.token is None  # no state yet: written only if there is none
    assert set(effect.state.participants) == {A}
    assert effect.state.intent_cursor == 0  # the log is for the steward to admit
    # Now the steward: it reads the log for the others.
    assert node.then(Written(snap(effect.state), True)) == ReadLog(0)


def test_a_node_that_loses_the_first_placement_waits_for_the_winner() -> None:
    node = Node(protocol.join(NOW + 60), node=B, settings=BIG)
    node.then(Started())
    mine = node.then(StateRead(None))
    assert isinstance(mine, CompareAndSet) and set(mine.state.participants) == {B}
    # A placed itself first, as the lost write's answer says: B posts its intent, and
    # after the lost write's short back-off waits for A, the steward, to admit it, for
    # its patience; it reads no log.
    assert node.then(Written(snap(joined(A)), False)) == Post(JoinIntent(B, NOW), 0)
    backoff = node.then(Posted())
    assert isinstance(backoff, WaitForChange) and backoff.until < NOW + 0.1
    assert node.then(Changed(None), at=backoff.until) == ReadState()
    wait = node.then(StateRead(snap(joined(A))))
    assert isinstance(wait, WaitForChange)
    interval = BIG.keep_alive_interval.total_seconds()  # A may hold: the round is short
    assert NOW + pacing.PATIENCE / 2 + interval <= wait.until <= NOW + pacing.PATIENCE + interval


def test_in_a_small_round_a_lone_node_holds_its_admission_for_an_interval_then_admits() -> None:
    """A round of FIRST_MOVER_ROUND nodes or fewer: with no steward, the first pending
    node reads the log and admits everyone in one write (no self-placement first)."""
    assert SETTINGS.min_nodes <= pacing.FIRST_MOVER_ROUND
    node = Node(protocol.join(NOW + 60))
    assert node.then(Started()) == ReadState()
    assert node.then(StateRead(None)) == Post(JoinIntent(A, NOW), 0)
    assert node.then(Posted()) == ReadLog(0)
    # The first pending node, alone: the round could not reach min_nodes with it, so it
    # holds the admission and reads the log again at the steward's pace.
    effect = node.then(LogRead([JoinIntent(A, NOW)], 1))
    assert effect == WaitForChange(None, NOW + pacing.STEWARD_POLL)
    interval = SETTINGS.keep_alive_interval.total_seconds()
    while not isinstance(effect, CompareAndSet):
        assert node.now <= NOW + interval + pacing.HOLD_POLL
        if isinstance(effect, WaitForChange):
            effect = node.then(Changed(None), at=effect.until)
        elif isinstance(effect, ReadState):
            effect = node.then(StateRead(None))
        else:
            assert isinstance(effect, ReadLog)
            effect = node.then(LogRead([JoinIntent(A, NOW)], 1))
    # One interval on, nobody came: it admits itself.
    assert node.now >= NOW + interval
    assert effect.token is None  # no state yet: written only if there is none
    assert set(effect.state.participants) == {A}
    assert effect.state.intent_cursor == 1
    # Its heartbeat is the time of the write, not its intent's: a node that writes is
    # alive, and its first beat is due an interval later.
    assert effect.state.last_heartbeats[A] == node.now
    assert node.then(Written(snap(effect.state), True)) == ReadLog(1)


def test_in_a_small_round_the_first_pending_node_admits_at_once_when_it_can_complete() -> None:
    node = Node(protocol.join(NOW + 60))
    node.then(Started())
    node.then(StateRead(None))
    node.then(Posted())
    # A second intent arrived with ours: one write places both.
    effect = node.then(LogRead([JoinIntent(A, NOW), JoinIntent(B, NOW)], 2))
    assert isinstance(effect, CompareAndSet)
    assert set(effect.state.participants) == {A, B}
    assert effect.state.intent_cursor == 2


def test_a_pending_node_waits_for_the_steward_then_admits_itself() -> None:
    node = Node(protocol.join(NOW + 60), node=B)
    node.then(Started())
    forming = joined(A)  # A is the steward: it admits newcomers
    assert node.then(StateRead(snap(forming))) == Post(JoinIntent(B, NOW), 0)
    wait = node.then(Posted())
    assert isinstance(wait, WaitForChange)
    assert NOW + pacing.PATIENCE / 2 <= wait.until <= NOW + pacing.PATIENCE
    # Its patience runs out with no write from A: it reads the log and admits itself.
    assert node.then(Changed(None), at=wait.until + 0.01) == ReadState()
    assert node.then(StateRead(snap(forming))) == ReadLog(0)
    effect = node.then(LogRead([JoinIntent(B, NOW)], 1))
    assert isinstance(effect, CompareAndSet)
    assert set(effect.state.participants) == {A, B}


def test_out_of_patience_a_few_nodes_take_over_first_and_more_after_each_patience() -> None:
    """A steward that keeps 99 nodes waiting (min_nodes 100) is not replaced by all 99 at
    once, each reading the whole log: about eight do (the draw decides), twice as many
    after each further patience, so any node does within a few."""
    settings = RendezvousSettings("run", 100, 100, keep_alive_interval=timedelta(seconds=1))
    forming = apply_action(RendezvousState(), Action.ADD_TO_PARTICIPANTS, A, settings, NOW)
    node = Node(protocol.join(NOW + 600), node=B, settings=settings)
    node.draw = 0.5  # 0.5 * 99 missing: it takes over once TAKEOVERS << passes > 49.5
    node.then(Started())
    node.then(StateRead(snap(forming)))
    effect = node.then(Posted())
    waited = NOW
    while not isinstance(effect, ReadLog):
        if isinstance(effect, Post):  # its intent would expire: posted again
            effect = node.then(Posted())
            continue
        if isinstance(effect, ReadBeats):  # is the steward alive? It is.
            effect = node.then(BeatsRead({A: node.now}))
            continue
        assert isinstance(effect, WaitForChange)
        assert node.then(Changed(None), at=effect.until + 0.01) == ReadState()
        waited = node.now
        effect = node.then(StateRead(snap(forming)))
    assert effect == ReadLog(0)  # now it reads the log, to admit in A's place
    assert node.progress.passed == 3  # 8 << 3 = 64 > 49.5: at the fourth patience
    assert NOW + 4 * (pacing.PATIENCE / 2 + 1) <= waited <= NOW + 4 * (pacing.PATIENCE + 1)
    # A node with a low draw takes over at its first patience.
    eager = Node(protocol.join(NOW + 600), node=C, settings=settings)
    eager.draw = 0.05
    eager.then(Started())
    eager.then(StateRead(snap(forming)))
    wait = eager.then(Posted())
    assert isinstance(wait, WaitForChange)
    assert eager.then(Changed(None), at=wait.until + 0.01) == ReadState()
    assert eager.then(StateRead(snap(forming))) == ReadLog(0)


def test_out_of_patience_a_few_participants_complete_the_round_in_the_stewards_place() -> None:
    """The node that completes a round reads every member's heartbeat record first: when
    every participant out of patience with the steward did, each of a round of 1,024
    on a loaded host read 1,600 board records (in the simulator). About eight do,
    twice as many after each further patience, as for an admission."""
    settings = RendezvousSettings(
        "run",
        50,
        100,
        timeout=RendezvousTimeout(last_call=0.1),
        keep_alive_interval=timedelta(seconds=5),
    )
    members = [NodeDesc(f"n{i:03}", 1, 0) for i in range(60)]
    forming = RendezvousState()
    for member in members:
        forming = apply_action(forming, Action.ADD_TO_PARTICIPANTS, member, settings, NOW - 1)
    node = Node(protocol.join(NOW + 600), node=members[1], settings=settings)
    node.draw = 0.5  # 0.5 * 59 others: it completes once TAKEOVERS << passes > 29.5
    node.then(Started())
    effect = node.then(StateRead(snap(forming)))
    while not isinstance(effect, CompareAndSet):
        assert isinstance(effect, WaitForChange)
        assert node.then(Changed(None), at=effect.until + 0.01) == ReadState()
        effect = node.then(StateRead(snap(forming)))
    assert effect.state.complete
    assert node.progress.passed == 2  # 8 << 2 = 32 > 29.5: at the third patience


def _take_over(size: int) -> tuple[Node, object]:
    """B, pending in a round of ``size`` that A and C formed 10 s ago (their heartbeats
    in the state long expired, as on a board), takes over from A; its next effect
    after reading the log."""
    settings = RendezvousSettings("run", size, size, keep_alive_interval=timedelta(seconds=1))
    forming = RendezvousState()
    for member in (A, C):
        forming = apply_action(forming, Action.ADD_TO_PARTICIPANTS, member, settings, NOW - 10)
    node = Node(protocol.join(NOW + 600), node=B, settings=settings)
    node.draw = 0.0
    node.then(Started())
    # A, the watcher, looks dead by the state: B reads A's record, and only A's.
    assert node.then(StateRead(snap(forming))) == ReadBeats((A,), NOW)
    node.observed = {A: node.now}
    assert node.then(BeatsRead({A: node.now})) == Post(JoinIntent(B, NOW), 0)
    wait = node.then(Posted())
    assert isinstance(wait, WaitForChange)
    assert node.then(Changed(None), at=wait.until + 0.01) == ReadState()
    assert node.then(StateRead(snap(forming))) == ReadLog(0)
    return node, node.then(LogRead([JoinIntent(B, NOW)], 1))


def test_a_node_reads_every_heartbeat_before_a_write_that_completes_a_round_only() -> None:
    """A write that leaves the round forming may carry a dead member on (the watcher, or
    the completion, drops it): when each node that placed itself read the whole board
    first, a re-form of 1,024 nodes on etcd-v2 read 490,000 records and never ended.
    The write that gives ranks checks every member first."""
    _, admission = _take_over(4)  # A, B and C: the round still lacks one
    assert isinstance(admission, CompareAndSet)
    assert not admission.state.complete and set(admission.state.participants) == {A, B, C}
    node, check = _take_over(3)  # A, B and C complete it: C is checked first
    assert check == ReadBeats((C,), node.now)
    node.observed = {A: node.now, C: node.now}
    completion = node.then(BeatsRead({C: node.now}))
    assert isinstance(completion, CompareAndSet) and completion.state.complete


def test_a_completion_judges_the_heartbeats_it_read_as_of_when_it_asked_for_them() -> None:
    """On etcd-v2 with 1,024 nodes a board read took 3 s: every heartbeat it brought had
    expired by the time it came back, and the node completing the round dropped all
    1,023 live members (a run stalled for 72 s). A member is dead for a completion when
    its heartbeat had expired when the board was asked, as for the watcher; dropping
    also those that had missed a beat by then (74b98f1) dropped hundreds of joining
    nodes, which beat once late by design, on every completion of a loaded host."""
    expiry = SETTINGS.heartbeat_expiry  # 3 s: an interval of 1 s, 3 attempts

    def complete(age_when_asked: float, answered_after: float) -> set[NodeDesc]:
        node, check = _take_over(3)  # A, B and C complete it: C is checked first
        assert check == ReadBeats((C,), node.now)
        asked = node.now
        beat = asked - age_when_asked
        node.observed = {A: asked, C: beat}
        node.context["checked"] = {C: asked}
        effect = node.then(BeatsRead({C: beat}), at=asked + answered_after)
        assert beat < node.now - expiry  # C's heartbeat has expired by the decision
        assert isinstance(effect, CompareAndSet)
        assert effect.state.complete == (C in effect.state.participants)
        return set(effect.state.participants)

    assert complete(age_when_asked=1.5, answered_after=1.6) == {A, B, C}  # on time
    assert complete(age_when_asked=2.5, answered_after=0.6) == {A, B, C}  # a beat late
    assert complete(age_when_asked=3.1, answered_after=0.1) == {A, B}  # expired already


def test_the_steward_holds_an_admission_that_could_not_reach_min_nodes() -> None:
    settings_min_3 = RendezvousSettings("run", 3, 3, keep_alive_interval=timedelta(seconds=1))
    steward = protocol.join(NOW + 60)
    node = Node(steward)
    ctx_settings = settings_min_3

    def step(outcome: object, at: float) -> object:
        own = {A: at}  # the steward's heartbeats are on the board
        ctx = protocol.Context(A, ctx_settings, at, 0.5, True, True, 5.0, own)
        result = protocol.step(node.progress, outcome, ctx)  # type: ignore[arg-type]
        node.progress = result.progress
        return result.effect

    state = apply_action(RendezvousState(), Action.ADD_TO_PARTICIPANTS, A, settings_min_3, NOW)
    step(Started(), NOW)
    assert step(StateRead(snap(state)), NOW) == ReadLog(0)
    # One newcomer: A and B cannot reach min_nodes (3); the steward holds.
    held = step(LogRead([JoinIntent(B, NOW)], 1), NOW)
    assert isinstance(held, WaitForChange)
    assert step(Changed(None), NOW + 0.5) == ReadState()
    # It reads on from where its last read ended: B's record is held, not read again.
    assert step(StateRead(snap(state)), NOW + 0.5) == ReadLog(1)
    assert isinstance(step(LogRead([], 1), NOW + 0.5), WaitForChange)
    # After one keep-alive interval it admits what came, to keep those nodes alive.
    assert step(Changed(None), NOW + 1.1) == ReadState()
    assert step(StateRead(snap(state)), NOW + 1.1) == ReadLog(1)
    admitted = step(LogRead([JoinIntent(B, NOW + 0.2)], 2), NOW + 1.1)
    assert isinstance(admitted, CompareAndSet)
    assert set(admitted.state.participants) == {A, B}
    assert admitted.state.intent_cursor == 2


def test_a_steward_whose_read_reached_the_next_segment_reads_the_states_segment_again() -> None:
    """Nodes post into the segment of the state they read until an admission moves the
    cursor, so a steward must not read on in the next segment while it holds."""
    settings_min_3 = RendezvousSettings("run", 3, 3, keep_alive_interval=timedelta(seconds=1))
    node = Node(protocol.join(NOW + 60), settings=settings_min_3)
    state = apply_action(RendezvousState(), Action.ADD_TO_PARTICIPANTS, A, settings_min_3, NOW)
    node.then(Started())
    assert node.then(StateRead(snap(state))) == ReadLog(0)
    # The segment is full: the read ends at the start of the next one.
    held = node.then(LogRead([JoinIntent(B, NOW)], LOG_SEGMENT_SPAN))
    assert isinstance(held, WaitForChange)
    assert node.then(Changed(None), at=held.until) == ReadState()
    assert node.then(StateRead(snap(state))) == ReadLog(0)


def test_an_admitted_node_finishes_once_its_round_completes() -> None:
    node = Node(protocol.join(NOW + 60), node=B)
    node.then(Started())
    complete = joined(A, B, C)
    effect = node.then(StateRead(snap(complete)))
    assert isinstance(effect, Finish)
    assert effect.state.participants[B] == 1


# -- ending without a rank -------------------------------------------------------------


def test_a_pending_node_that_times_out_withdraws_and_fences_before_it_fails() -> None:
    """Issue 15, bug 1: the intent of a node that gave up must never be admitted."""
    node = Node(protocol.join(NOW + 60), node=B)
    node.then(Started())
    forming = joined(A)
    node.then(StateRead(snap(forming)))
    node.then(Posted())  # its intent is in the log; A, the steward, has not admitted it
    late = NOW + 61
    forming = joined(A, at=late - 0.5)  # A is alive
    assert node.then(Changed(snap(forming, 2)), at=late) == Post(Withdrawal(B, late), 0)
    # The state it decides on must be read after the withdrawal is in the log.
    assert node.then(Posted()) == ReadState()
    assert node.then(StateRead(snap(forming, 2))) == ReadLog(0)
    fence = node.then(LogRead([JoinIntent(B, NOW), Withdrawal(B, late)], 2))
    assert isinstance(fence, CompareAndSet)
    assert B not in fence.state.members()
    assert fence.state.intent_cursor == 2  # consumed: no admission can read B's intent
    assert fence.token == 2
    failed = node.then(Written(snap(fence.state, 3), True))
    assert isinstance(failed, Fail)
    assert failed.failure is Failure.TIMEOUT
    assert "timed out" in failed.message


def test_a_leave_with_nothing_left_to_admit_ends_without_a_write() -> None:
    node = Node(protocol.leave(NOW + 5), node=C)
    node.then(Started())
    state = joined(A, B)
    assert node.then(StateRead(snap(state))) == Post(Withdrawal(C, NOW), 0)
    assert node.then(Posted()) == ReadState()
    assert node.then(StateRead(snap(state))) == ReadLog(0)
    assert isinstance(node.then(LogRead([Withdrawal(C, NOW)], 1)), Finish)


def test_a_leave_decided_on_a_state_read_before_the_withdrawal_would_miss_an_admission() -> None:
    """Found by the simulator: the leaver saw a state from before its withdrawal, in which
    it was not placed yet; an admission in between had placed it. It must read again."""
    node = Node(protocol.leave(NOW + 5), node=C)
    node.then(Started())
    before = joined(A, B)
    node.then(StateRead(snap(before, 1)))
    assert node.then(Posted()) == ReadState()
    placed = apply_action(before, Action.ADD_TO_PARTICIPANTS, C, SETTINGS, NOW)
    assert node.then(StateRead(snap(placed, 2))) == ReadLog(0)
    fence = node.then(LogRead([Withdrawal(C, NOW)], 1))
    assert isinstance(fence, CompareAndSet)
    assert C not in fence.state.members()


def test_a_withdrawal_posted_to_a_segment_that_rolled_over_is_posted_again() -> None:
    span = 1 << 40
    node = Node(protocol.leave(NOW + 5), node=C)
    node.then(Started())
    node.then(StateRead(snap(joined(A, B, C), 1)))  # posts to segment 0
    node.then(Posted())
    moved = joined(A, B, C)
    moved = type(moved)(  # the log went on in segment 1; C's withdrawal is in segment 0
        round=moved.round,
        complete=moved.complete,
        participants=moved.participants,
        last_heartbeats=moved.last_heartbeats,
        world_size=moved.world_size,
        intent_cursor=span,
    )
    node.then(StateRead(snap(moved, 2)))
    assert node.then(LogRead([], span)) == Post(Withdrawal(C, NOW), span)


# -- nothing unbounded -----------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 30, 1_100, 10**6, 10**12])
def test_back_offs_stay_finite_and_capped_however_many_attempts(attempts: int) -> None:
    """Issue 15, bug 2: ``0.002 * 2**n`` was computed before capping, an OverflowError
    past n = 1023 (a lone node held its fold 1,024 times after about 103 s)."""
    assert 0 < pacing.doubling(0.002, attempts, 0.1) <= 0.1
    assert 0 <= pacing.lost_write_backoff(attempts, 0.99) <= 0.1
    assert 0 < pacing.outage_pause(attempts, 0.99) <= 1.0
    assert 0 < pacing.steward_poll(attempts) <= pacing.HOLD_POLL


def test_a_node_that_lost_a_million_writes_in_a_row_still_waits_a_bounded_while() -> None:
    node = Node(protocol.join(NOW + 60), node=B)
    node.progress = protocol.Progress(protocol.Op.JOIN, NOW + 60, lost=10**6)
    node.then(Started())
    state = joined(A, B)
    wait = node.then(Written(snap(state, 7), False))
    assert isinstance(wait, WaitForChange)
    assert wait.until - NOW <= pacing.LOST_WRITE_BACKOFF[1]


def test_an_outage_pauses_then_fails_within_the_reconnect_window() -> None:
    node = Node(protocol.read())
    assert node.then(Started()) == ReadState()
    pause = node.then(Unreachable("refused"))
    assert isinstance(pause, Sleep)
    assert "backend_down" in node.events
    t = pause.until
    while True:
        assert node.then(Slept(), at=t) == ReadState()
        effect = node.then(Unreachable("refused"), at=t + 0.01)
        if isinstance(effect, Fail):
            break
        assert isinstance(effect, Sleep)
        t = effect.until
    assert effect.failure is Failure.UNREACHABLE
    assert t - NOW < 5.0


# -- heartbeats ------------------------------------------------------------------------


def test_a_known_node_beats_on_the_board_without_reading_the_state() -> None:
    node = Node(protocol.keep_alive(NOW + 5, known=True))
    assert node.then(Started()) == WriteBeat(NOW)
    assert isinstance(node.then(BeatWritten()), Finish)


def test_a_node_the_state_no_longer_holds_sends_no_heartbeat() -> None:
    node = Node(protocol.keep_alive(NOW + 5, known=False))
    assert isinstance(node.then(Started()), Finish)


def test_a_joining_member_leaves_its_heartbeats_to_the_keep_alive_where_there_is_a_board() -> None:
    """B is a participant of an incomplete round, its heartbeat due in half a second. With
    a board, its keep-alive beats beside the join: the join waits, and its wait does not
    end for the beat. A join that beat between its steps beat late wherever a step took
    a large part of the expiry; on etcd-v2 at 1,024 nodes a beat took a second, which
    the join spent on it instead of on the round."""
    state = attrs.evolve(joined(A, B, at=NOW), last_heartbeats={A: NOW, B: NOW - 0.5})
    node = Node(protocol.join(NOW + 60), node=B)
    node.then(Started())
    wait = node.then(StateRead(snap(state)))
    assert isinstance(wait, WaitForChange)
    assert wait.until == NOW + pacing.MAX_WAIT  # not B's beat, due at NOW + 0.5
    # Without a board, a beat writes the state, and the join sends it when due.
    node = Node(protocol.join(NOW + 60), node=B, has_board=False)
    node.then(Started())
    wait = node.then(StateRead(snap(state)))
    assert isinstance(wait, WaitForChange)
    assert wait.until < NOW + 0.6
    assert node.then(Changed(None), at=wait.until) == ReadState()
    written = node.then(StateRead(snap(state)), at=wait.until)
    assert isinstance(written, CompareAndSet)
    assert written.state.last_heartbeats[B] == wait.until


def test_the_time_comes_only_from_the_context() -> None:
    """The same inputs give the same effect, whenever the step runs."""
    first, second = Node(protocol.join(NOW + 60)), Node(protocol.join(NOW + 60))
    second.now = NOW + 0.5
    assert first.then(Started()) == second.then(Started())
    assert first.then(StateRead(None)) == Post(JoinIntent(A, NOW), 0)
    assert second.then(StateRead(None)) == Post(JoinIntent(A, NOW + 0.5), 0)


def _until_reads_log_or(node: Node, state: RendezvousState, passed: int) -> Effect:
    """Step a pending ``node``, which finds ``state`` and every member alive, until it
    reads the log or ``passed`` patiences have passed."""
    effect = node.then(Posted())
    while node.progress.passed < passed and not isinstance(effect, ReadLog):
        if isinstance(effect, Post):
            effect = node.then(Posted())
        elif isinstance(effect, ReadBeats):  # is the steward alive? It is.
            effect = node.then(BeatsRead(dict.fromkeys(effect.nodes, node.now)))
        elif isinstance(effect, ReadState):
            effect = node.then(StateRead(snap(state)))
        else:
            assert isinstance(effect, WaitForChange)
            effect = node.then(Changed(None), at=effect.until + 0.01)
    return effect


def test_the_nodes_that_take_over_per_patience_stop_doubling_at_max_takeovers() -> None:
    """On an overloaded machine a live steward's write took seconds; doubling the takers at
    every patience without a bound would have had all 4,095 pending nodes write."""
    settings = RendezvousSettings("run", 4096, 4096, keep_alive_interval=timedelta(seconds=1))
    forming = apply_action(RendezvousState(), Action.ADD_TO_PARTICIPANTS, A, settings, NOW)
    node = Node(protocol.join(NOW + 600), node=B, settings=settings)
    node.draw = 0.5  # 0.5 * 4095 missing > MAX_TAKEOVERS: it never takes over
    node.then(Started())
    node.then(StateRead(snap(forming)))
    assert not isinstance(_until_reads_log_or(node, forming, 30), ReadLog)
    # One whose draw falls within MAX_TAKEOVERS of the 4,095 missing still does.
    node.draw = (pacing.MAX_TAKEOVERS - 1) / 4095
    assert isinstance(_until_reads_log_or(node, forming, 60), ReadLog)


def test_of_the_survivors_leaving_a_complete_round_only_a_few_take_over_from_the_steward() -> None:
    """Found on etcd-v2 with 1,024 nodes, then in the simulator: a complete round lacks
    no node for ``min_nodes``, so every survivor waiting for the steward to admit its
    rejoin counted itself the only one, took over, and read the whole log (1,400
    records each; 810 log reads in a run that re-formed in 23 s, against 6 to 25 in
    runs of 10 s). About as many take over as from a forming round, among the other
    participants."""
    n = 300
    settings = RendezvousSettings("run", n - 1, n, keep_alive_interval=timedelta(seconds=1))
    nodes = [NodeDesc(f"node-{i:03}", 100 + i, 0) for i in range(n)]
    state = RendezvousState()
    for each in nodes:
        state = apply_action(state, Action.ADD_TO_PARTICIPANTS, each, settings, NOW)
    assert state.complete
    lost = apply_action(state, Action.REMOVE_FROM_PARTICIPANTS, nodes[-1], settings, NOW)
    node = Node(protocol.join(NOW + 600, leaving=0), node=nodes[5], settings=settings)
    node.observed = dict.fromkeys(nodes, NOW)
    node.draw = 0.5  # 0.5 * 298 other participants > MAX_TAKEOVERS: it never takes over
    node.then(Started())
    assert isinstance(node.then(StateRead(snap(lost))), Post)
    assert not isinstance(_until_reads_log_or(node, lost, 30), ReadLog)
    node.draw = (pacing.MAX_TAKEOVERS - 1) / (n - 2)
    assert isinstance(_until_reads_log_or(node, lost, 60), ReadLog)


# -- a loaded host: every step takes a large part of a second --------------------------


def _complete(*nodes: NodeDesc, at: float) -> RendezvousState:
    state = joined(*nodes, at=at)  # complete already at max_nodes
    if state.complete:
        return state
    return apply_action(state, Action.MARK_RENDEZVOUS_COMPLETE, nodes[0], SETTINGS, at)


def test_a_steward_decides_on_the_log_it_read_before_it_beats() -> None:
    """Found on etcd-v2 with 1,024 nodes: the steward's log reads took 3 s, so its beat was
    due when each came back, and the decision was the beat; after it, the log read was
    too old and the steward read again, and so on: 1,023 nodes waited 40 s for an
    admission. It decides on the log first (here, to hold it: C has not left)."""
    formed = _complete(A, C, at=NOW)
    state = apply_action(formed, Action.ADD_TO_WAIT_LIST, B, SETTINGS, NOW)
    node = Node(protocol.join(NOW + 60), node=B)
    node.then(Started())
    node.observed = {A: NOW, B: NOW, C: NOW}
    read = node.then(StateRead(snap(state)))
    assert isinstance(read, ReadLog)
    later = NOW + 1.5  # its beat is due
    node.observed = {A: later, B: NOW, C: later}
    log = LogRead([JoinIntent(A, NOW + 1.0, leaves=0)], read.cursor + 1)
    assert isinstance(node.then(log, at=later), WaitForChange)
    assert node.progress.hold_since == later


def test_a_join_busy_with_other_work_reads_the_state_again_before_deciding_on_an_old_one() -> None:
    """Found by the simulator with a loaded host: a rejoining survivor went from beats to
    posts to log reads, never waiting, so never reading the state: it decided on one
    10 s old, long after its round had formed without a write of its own."""
    node = Node(protocol.join(NOW + 60, leaving=0), node=B)
    node.then(Started())
    node.observed = {A: NOW, B: NOW}
    assert isinstance(node.then(StateRead(snap(_complete(A, B, at=NOW)))), Post)
    later = NOW + pacing.MAX_VIEW_AGE + 0.1
    node.observed = {A: later, B: later}
    assert node.then(Posted(), at=later) == ReadState()


def test_the_watcher_drops_only_the_members_the_board_confirmed_dead() -> None:
    """The board was read at NOW; C's heartbeat on it expired while the answer came back.
    C may have beaten since: the watcher keeps it until a reading confirms it. Dropping
    every member expired at the decision, the simulated watcher of 1,024 nodes on two
    loaded cores dropped live ones by the hundred."""
    node = Node(protocol.read(), node=A)
    node.then(Started())
    formed = _complete(A, B, C, at=NOW - 10)
    assert node.then(StateRead(snap(formed))) == ReadBeats((B, C), NOW)
    node.observed = {A: NOW, B: NOW - 0.5, C: NOW - 2.9}
    node.context["checked"] = {B: NOW, C: NOW}
    view = node.then(BeatsRead({B: NOW - 0.5, C: NOW - 2.9}), at=NOW + 0.5)
    assert isinstance(view, Finish) and C in view.state.participants


def _watcher_after_a_stall(lag: float) -> object:
    """Watcher A reads a round whose members last beat 8 s ago (keep-alive 1 s x 3), and
    the board confirms it; A's own requests took up to ``lag`` seconds lately."""
    node = Node(protocol.read(), node=A, lag=lag)
    node.then(Started())
    formed = _complete(A, B, C, at=NOW - 10)
    node.observed = {A: NOW, B: NOW - 8, C: NOW - 8}
    node.context["checked"] = {B: NOW, C: NOW}
    return node.then(StateRead(snap(formed)))


def test_the_watcher_drops_members_silent_past_the_expiry_of_a_backend_that_answers() -> None:
    effect = _watcher_after_a_stall(lag=0.0)
    assert isinstance(effect, CompareAndSet)
    assert set(effect.state.participants) == {A}


def test_heartbeats_are_not_judged_late_by_less_than_the_backend_took() -> None:
    """etcd was frozen for 8 s: no heartbeat could land, and A's own request waited the
    whole stall. Judging by its clock, the first node answered after an 8 s stall
    dropped every other (a real etcd-v2 and etcd-v3, ``tests/faults``), and every
    launcher restarted; judged 8 s earlier, all are alive."""
    effect = _watcher_after_a_stall(lag=8.0)
    assert isinstance(effect, Finish)
    assert set(effect.state.participants) == {A, B, C}


def test_progress_evolves_as_attrs_evolve_does_and_refuses_a_field_it_lacks() -> None:
    start = protocol.join(NOW + 60)
    changed = start.evolve(polls=3, snap=snap(joined(A)), lost=1)
    assert changed == attrs.evolve(start, polls=3, snap=snap(joined(A)), lost=1)
    assert start == protocol.join(NOW + 60)  # the original is left as it was
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        changed.polls = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="pols"):
        start.evolve(pols=3)


# -- a node whose reads outlast the expiry less the interval ---------------------------


def _complete_round(at: float) -> RendezvousState:
    """Round 0 of A and B, complete, with their heartbeats of ``at`` in the state."""
    state = joined(A, B, at=at)
    return apply_action(state, Action.MARK_RENDEZVOUS_COMPLETE, A, SETTINGS, at)


def test_a_decision_judges_the_board_as_of_when_it_was_asked_and_reads_it_once() -> None:
    """B rejoins a round whose state's heartbeats are old; it reads A's record, the
    watcher's, and the answer comes back a second later, when A's heartbeat in it has
    expired. Judging by the time it decided, B read the board again (after a beat,
    when the join still sent them), and on a real TCP store whose board reads
    were handled 0.5 s late (against a 0.6 s expiry) it did so until its join timed
    out. As of the asking, A was alive: B goes on to post its intent."""
    node = Node(protocol.join(NOW + 600, leaving=0), node=B)
    node.observed = {B: NOW - 1.2}
    node.then(Started())
    assert node.then(StateRead(snap(_complete_round(NOW - 10)))) == ReadBeats((A,), NOW)
    node.observed = {A: NOW - 2.2, B: NOW - 1.2}
    node.context["checked"] = {A: NOW}
    assert node.then(BeatsRead({A: NOW - 2.2}), at=NOW + 1.01) == Post(
        JoinIntent(B, NOW + 1.01, 0), 0
    )
    assert node.progress.board_asked == NOW
    # Its view is over a second old: it reads the state again, but not the board.
    assert node.then(Posted(), at=NOW + 1.02) == ReadState()
    wait = node.then(StateRead(snap(_complete_round(NOW - 10))), at=NOW + 1.03)
    assert isinstance(wait, WaitForChange)  # for A, the steward
    # The decision is made: the next one judges by its own time again.
    assert node.then(Changed(None), at=wait.until) == ReadState()
    assert node.progress.board_asked is None


def test_the_steward_judges_the_intents_it_read_as_of_when_it_asked_for_them() -> None:
    """B posted 2.5 s before the steward asked for the log, and the answer came back a
    second later, when B's intent had passed the 3 s expiry. Judging by then, the
    steward skipped it; a node whose every read took that long found its own intent
    expired at each read, posted it again, and never joined. Fresh when asked for, it
    is admitted."""
    node = Node(protocol.join(NOW + 60))
    node.observed = {A: NOW}
    node.then(Started())
    assert node.then(StateRead(snap(joined(A)))) == ReadLog(0)
    admitted = node.then(LogRead([JoinIntent(B, NOW - 2.5)], 1), at=NOW + 1.0)
    assert isinstance(admitted, CompareAndSet)
    assert set(admitted.state.participants) == {A, B}
    assert admitted.state.last_heartbeats[B] == NOW - 2.5  # B expires as its intent would


def test_an_admission_that_completes_a_round_judges_its_intents_as_of_its_check() -> None:
    """As above, but the admission would complete the round (two of two): B's intent was
    fresh when the log was asked for and had expired by the completion's check of every
    member. An admitted intent is a member's heartbeat like the others; judged as of the
    log's asking, a node dead since was given a rank (seed 301046). B stays out, and the
    round stays incomplete; the steward writes the cursor on."""
    settings = attrs.evolve(SETTINGS, min_nodes=2, max_nodes=2)
    node = Node(protocol.join(NOW + 60), settings=settings)
    node.observed = {A: NOW}
    node.then(Started())
    assert node.then(StateRead(snap(joined(A)))) == ReadLog(0)
    effect = node.then(LogRead([JoinIntent(B, NOW - 2.9)], 1), at=NOW + 1.0)
    assert isinstance(effect, CompareAndSet)
    assert not effect.state.complete
    assert set(effect.state.participants) == {A}
    assert effect.state.intent_cursor == 1
    # Fresh at the completion's check too, it completes the round.
    node = Node(protocol.join(NOW + 60), settings=settings)
    node.observed = {A: NOW}
    node.then(Started())
    node.then(StateRead(snap(joined(A))))
    effect = node.then(LogRead([JoinIntent(B, NOW - 1.9)], 1), at=NOW + 1.0)
    assert isinstance(effect, CompareAndSet)
    assert effect.state.complete and set(effect.state.participants) == {A, B}


def test_a_completion_reads_the_board_again_whatever_the_decision_read_before() -> None:
    """A lost completion, then a board read for B's record (B beat 2.5 s before) and a
    log read, a second each. When a join still beat between its steps, the next
    completion judged every member as of that board read, 5 s old by then, and gave B
    a rank though B's heartbeat had expired 4.7 s before (found in review). Each
    attempt to complete a round checks every member anew."""
    formed = joined(A, B, at=NOW)
    current = attrs.evolve(formed, last_heartbeats={A: NOW, B: NOW - 3.0})
    node = Node(protocol.join(NOW + 600))
    node.observed = {A: NOW}
    node.then(Started())
    node.then(StateRead(snap(formed)))
    assert isinstance(node.then(LogRead([JoinIntent(C, NOW)], 1), at=NOW + 0.1), CompareAndSet)
    assert node.then(Written(snap(current, 2), False), at=NOW + 0.2) == ReadBeats((B,), NOW + 0.2)
    node.observed = {A: NOW, B: NOW - 2.5}
    node.context["checked"] = {B: NOW + 0.2}
    assert node.then(BeatsRead({B: NOW - 2.5}), at=NOW + 1.2) == ReadLog(1)
    at = NOW + 2.2
    effect = node.then(LogRead([], 1), at=at)
    assert effect == ReadBeats((B,), at)  # not a completion judged as of NOW + 0.2
    assert node.progress.watch_all


def test_a_node_that_reads_the_log_admits_its_own_intent_however_old() -> None:
    """B, pending in the round that A stewards, takes over and reads the log, where its own
    intent was posted 3.5 s before it asked (expiry 3 s). A node whose post and log read
    took the expiry between them (a far node, seed 310724) found its own intent expired
    at each read, posted it again, and never joined. The node reading is alive: its own
    intent is fresh to it, and its write gives it a heartbeat as of then."""
    forming = joined(A)
    node = Node(protocol.join(NOW + 600), node=B)
    node.draw = 0.0  # it takes over at its first patience
    node.observed = {A: NOW}
    node.then(Started())
    assert isinstance(node.then(StateRead(snap(forming))), Post)
    read = _until_reads_log_or(node, forming, 5)
    assert isinstance(read, ReadLog)
    asked = node.now
    old = JoinIntent(B, asked - 3.5)
    effect = node.then(LogRead([old], read.cursor + 1), at=asked + 0.5)
    assert isinstance(effect, CompareAndSet)
    assert B in effect.state.participants
    assert effect.state.last_heartbeats[B] == asked + 0.5
