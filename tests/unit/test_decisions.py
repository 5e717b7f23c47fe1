"""What a node does next: every case of the decision functions, as plain values.

Settings throughout: 2 to 3 nodes, a 30 s last call, a heartbeat every 5 s, dead
after 3 missed ones (15 s). ``NOW`` is the clock reading handed to the decision and
``DEADLINE`` the deadline of the operation, far in the future unless a test says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

import attrs
import pytest

from rdzv.core import (
    ROLLBACK_PERIOD,
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    apply_action,
    deadline_after,
    decide_close,
    decide_exit,
    decide_join,
    decide_keep_alive,
    decide_leave,
    decide_rejoin,
    drop_dead_nodes,
    next_wakeup,
    should_keep_alive,
)

SETTINGS = RendezvousSettings(
    "run",
    min_nodes=2,
    max_nodes=3,
    timeout=RendezvousTimeout(join=600, last_call=30, close=30, heartbeat=5),
    keep_alive_interval=timedelta(seconds=5),
    keep_alive_max_attempt=3,
)
INTERVAL = 5.0
EXPIRY = 15.0
NOW = 1_000.0
DEADLINE = NOW + 600

A, B, C, D = (NodeDesc(f"node-{i}", 100 + i, 0) for i in range(4))
ME = NodeDesc("me", 1, 0)


def make_state(
    *,
    participants: Iterable[NodeDesc] = (),
    waiting: Iterable[NodeDesc] = (),
    redundant: Iterable[NodeDesc] = (),
    complete: bool = False,
    closed: bool = False,
    deadline: float | None = None,
    beat: float = NOW,
    beats: dict[NodeDesc, float] | None = None,
    world_size: int | None = None,
) -> RendezvousState:
    """A state whose members all beat at ``beat`` unless ``beats`` says otherwise.

    A complete round gets ranks in sort order and, unless given, a world size equal to
    its participants.
    """
    ordered = sorted(participants)
    ranks = {n: (r if complete else 0) for r, n in enumerate(ordered)}
    members = [*ordered, *waiting, *redundant]
    heartbeats = {n: beat for n in members}
    heartbeats.update(beats or {})
    if world_size is None:
        world_size = len(ordered) if complete else 0
    return RendezvousState(
        complete=complete,
        closed=closed,
        deadline=deadline,
        participants=ranks,
        wait_list=frozenset(waiting),
        redundancy_list=frozenset(redundant),
        last_heartbeats=heartbeats,
        world_size=world_size,
    )


def join(state: RendezvousState, *, now: float = NOW, deadline: float = DEADLINE) -> Action:
    return decide_join(state, ME, SETTINGS, now, deadline)


# --- Action --------------------------------------------------------------------------------

WRITING = {
    Action.KEEP_ALIVE,
    Action.ADD_TO_PARTICIPANTS,
    Action.ADD_TO_WAIT_LIST,
    Action.ADD_TO_REDUNDANCY_LIST,
    Action.REMOVE_FROM_PARTICIPANTS,
    Action.REMOVE_FROM_WAIT_LIST,
    Action.REMOVE_FROM_REDUNDANCY_LIST,
    Action.REJOIN,
    Action.MARK_RENDEZVOUS_COMPLETE,
    Action.MARK_RENDEZVOUS_CLOSED,
}
ENDING = {Action.FINISH, Action.ERROR_CLOSED, Action.ERROR_TIMEOUT, Action.GRACEFUL_EXIT}


@pytest.mark.parametrize("action", list(Action))
def test_action_changes_state_only_when_it_writes(action: Action) -> None:
    assert action.changes_state is (action in WRITING)


@pytest.mark.parametrize("action", list(Action))
def test_action_ends_operation_only_when_finished_failed_or_exited(action: Action) -> None:
    assert action.ends_operation is (action in ENDING)


def test_wait_neither_writes_nor_ends_the_operation() -> None:
    assert not Action.WAIT.changes_state
    assert not Action.WAIT.ends_operation


# --- decide_join: closed rendezvous ---------------------------------------------------------


def test_join_of_redundant_node_exits_gracefully_when_closed() -> None:
    state = make_state(participants=[A, B, C], redundant=[ME], complete=True, closed=True)
    assert join(state) is Action.GRACEFUL_EXIT


def test_join_of_redundant_node_exits_gracefully_when_closed_even_after_deadline() -> None:
    state = make_state(participants=[A, B, C], redundant=[ME], complete=True, closed=True)
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD + 1) is Action.GRACEFUL_EXIT


@pytest.mark.parametrize(
    "state",
    [
        make_state(participants=[A, ME], closed=True),
        make_state(participants=[A, ME], complete=True, closed=True),
        make_state(participants=[A, B], waiting=[ME], complete=True, closed=True),
        make_state(participants=[A, B], complete=True, closed=True),
        make_state(closed=True),
    ],
    ids=["participant", "participant-of-complete-round", "waiting", "stranger", "empty"],
)
def test_join_fails_when_closed_unless_redundant(state: RendezvousState) -> None:
    assert join(state) is Action.ERROR_CLOSED


# --- decide_join: redundant node ------------------------------------------------------------


def test_join_of_redundant_node_waits_while_round_is_full() -> None:
    state = make_state(participants=[A, B, C], redundant=[ME], complete=True)
    assert join(state) is Action.WAIT


def test_join_of_redundant_node_keeps_alive_while_round_is_full_and_heartbeat_is_due() -> None:
    state = make_state(
        participants=[A, B, C], redundant=[ME], complete=True, beats={ME: NOW - INTERVAL}
    )
    assert join(state) is Action.KEEP_ALIVE


def test_join_of_redundant_node_ignores_the_deadline_while_round_is_full() -> None:
    late = DEADLINE + ROLLBACK_PERIOD + 100
    state = make_state(participants=[A, B, C], redundant=[ME], complete=True, beat=late)
    assert join(state, now=late) is Action.WAIT


def test_join_of_redundant_node_leaves_redundancy_list_when_a_participant_is_lost() -> None:
    state = make_state(participants=[A, B], redundant=[ME], complete=True, world_size=3)
    assert join(state) is Action.REMOVE_FROM_REDUNDANCY_LIST


def test_join_of_redundant_node_leaves_redundancy_list_when_next_round_starts() -> None:
    state = make_state(redundant=[ME])
    assert join(state) is Action.REMOVE_FROM_REDUNDANCY_LIST


def test_join_of_redundant_node_leaves_redundancy_list_even_after_deadline() -> None:
    # Its deadline starts over when it leaves the list (see deadline_after).
    state = make_state(participants=[A], redundant=[ME])
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD + 100) is Action.REMOVE_FROM_REDUNDANCY_LIST


# --- decide_join: participant of a complete round --------------------------------------------


def test_join_finishes_for_participant_of_complete_round() -> None:
    state = make_state(participants=[A, ME], complete=True)
    assert join(state) is Action.FINISH


def test_join_finishes_for_participant_of_complete_round_even_after_deadline() -> None:
    state = make_state(participants=[A, ME], complete=True)
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD + 1) is Action.FINISH


def test_join_finishes_for_participant_of_complete_round_that_lost_a_participant() -> None:
    state = make_state(participants=[ME], complete=True, world_size=2)
    assert join(state) is Action.FINISH


# --- decide_join: past the deadline ---------------------------------------------------------


def test_join_rolls_back_participant_within_rollback_period_after_deadline() -> None:
    state = make_state(participants=[A, ME])
    assert join(state, now=DEADLINE + 1) is Action.REMOVE_FROM_PARTICIPANTS


def test_join_rolls_back_participant_at_the_end_of_the_rollback_period() -> None:
    state = make_state(participants=[A, ME])
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD) is Action.REMOVE_FROM_PARTICIPANTS


def test_join_rolls_back_waiting_node_within_rollback_period_after_deadline() -> None:
    state = make_state(participants=[A, B], waiting=[ME], complete=True)
    assert join(state, now=DEADLINE + 1) is Action.REMOVE_FROM_WAIT_LIST


def test_join_times_out_after_rollback_period() -> None:
    state = make_state(participants=[A, ME])
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD + 0.001) is Action.ERROR_TIMEOUT


def test_join_of_waiting_node_times_out_after_rollback_period() -> None:
    state = make_state(participants=[A, B], waiting=[ME], complete=True)
    assert join(state, now=DEADLINE + ROLLBACK_PERIOD + 0.001) is Action.ERROR_TIMEOUT


@pytest.mark.parametrize(
    "state",
    [make_state(participants=[A]), make_state(participants=[A, B], complete=True)],
    ids=["incomplete-round", "complete-round"],
)
def test_join_of_stranger_times_out_as_soon_as_deadline_passed(state: RendezvousState) -> None:
    assert join(state, now=DEADLINE + 0.001) is Action.ERROR_TIMEOUT


def test_join_is_not_late_at_exactly_the_deadline() -> None:
    assert join(make_state(participants=[A]), now=DEADLINE) is Action.ADD_TO_PARTICIPANTS


# --- decide_join: complete round, not a participant -----------------------------------------


def test_join_adds_to_wait_list_when_round_is_complete_and_has_room() -> None:
    state = make_state(participants=[A, B], complete=True)
    assert join(state) is Action.ADD_TO_WAIT_LIST


def test_join_adds_to_wait_list_when_complete_round_lost_a_participant_of_a_full_round() -> None:
    state = make_state(participants=[A, B], complete=True, world_size=3)
    assert join(state) is Action.ADD_TO_WAIT_LIST


def test_join_adds_to_redundancy_list_when_round_is_complete_and_full() -> None:
    state = make_state(participants=[A, B, C], complete=True)
    assert join(state) is Action.ADD_TO_REDUNDANCY_LIST


def test_join_of_waiting_node_waits_for_the_next_round() -> None:
    state = make_state(participants=[A, B], waiting=[ME], complete=True)
    assert join(state) is Action.WAIT


def test_join_of_waiting_node_waits_when_complete_round_is_full() -> None:
    state = make_state(participants=[A, B, C], waiting=[ME], complete=True)
    assert join(state) is Action.WAIT


def test_join_of_waiting_node_keeps_alive_when_heartbeat_is_due() -> None:
    state = make_state(
        participants=[A, B], waiting=[ME], complete=True, beats={ME: NOW - INTERVAL - 1}
    )
    assert join(state) is Action.KEEP_ALIVE


# --- decide_join: incomplete round ----------------------------------------------------------


def test_join_adds_to_participants_when_round_is_incomplete() -> None:
    assert join(make_state(participants=[A])) is Action.ADD_TO_PARTICIPANTS


def test_join_adds_to_participants_of_an_empty_first_round() -> None:
    assert join(RendezvousState()) is Action.ADD_TO_PARTICIPANTS


def test_join_of_waiting_node_joins_participants_when_next_round_starts() -> None:
    state = make_state(participants=[A], waiting=[ME])
    assert join(state) is Action.ADD_TO_PARTICIPANTS


def test_join_waits_for_more_participants_below_min_nodes() -> None:
    assert join(make_state(participants=[ME])) is Action.WAIT


def test_join_waits_when_last_call_deadline_not_passed() -> None:
    state = make_state(participants=[A, ME], deadline=NOW + 10)
    assert join(state) is Action.WAIT


def test_join_waits_at_exactly_the_last_call_deadline() -> None:
    state = make_state(participants=[A, ME], deadline=NOW)
    assert join(state) is Action.WAIT


def test_join_completes_round_after_last_call_deadline_with_min_nodes() -> None:
    state = make_state(participants=[A, ME], deadline=NOW - 0.001)
    assert join(state) is Action.MARK_RENDEZVOUS_COMPLETE


def test_join_completes_round_after_last_call_deadline_above_min_nodes() -> None:
    # Three is max_nodes: only reachable through a state not written by the reducers
    # (they complete the round on the spot), but the rule still allows it.
    state = make_state(participants=[A, B, ME], deadline=NOW - 1)
    assert join(state) is Action.MARK_RENDEZVOUS_COMPLETE


def test_join_never_completes_a_round_with_more_than_max_nodes() -> None:
    state = make_state(participants=[A, B, C, ME], deadline=NOW - 1)
    assert join(state) is Action.WAIT


def test_join_does_not_complete_a_round_without_last_call_deadline() -> None:
    state = make_state(participants=[A, ME], deadline=None)
    assert join(state) is Action.WAIT


def test_join_keeps_alive_while_waiting_for_participants_when_heartbeat_is_due() -> None:
    state = make_state(participants=[A, ME], deadline=NOW + 10, beats={ME: NOW - INTERVAL})
    assert join(state) is Action.KEEP_ALIVE


def test_join_completion_takes_precedence_over_a_due_heartbeat() -> None:
    state = make_state(participants=[A, ME], deadline=NOW - 1, beats={ME: NOW - INTERVAL})
    assert join(state) is Action.MARK_RENDEZVOUS_COMPLETE


# --- decide_leave ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (make_state(participants=[A, ME]), Action.REMOVE_FROM_PARTICIPANTS),
        (make_state(participants=[A, ME], complete=True), Action.REMOVE_FROM_PARTICIPANTS),
        (
            make_state(participants=[A, B], waiting=[ME], complete=True),
            Action.REMOVE_FROM_WAIT_LIST,
        ),
        (
            make_state(participants=[A, B, C], redundant=[ME], complete=True),
            Action.REMOVE_FROM_REDUNDANCY_LIST,
        ),
    ],
    ids=["participant", "participant-of-complete-round", "waiting", "redundant"],
)
def test_leave_takes_the_node_out_of_whichever_list_holds_it(
    state: RendezvousState, action: Action
) -> None:
    assert decide_leave(state, ME, SETTINGS, NOW, DEADLINE) is action
    left = apply_action(state, action, ME, SETTINGS, NOW)
    assert left.role_of(ME) is None
    assert decide_leave(left, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH


def test_leave_finishes_at_once_for_a_stranger_or_a_closed_rendezvous() -> None:
    assert decide_leave(make_state(participants=[A]), ME, SETTINGS, NOW, DEADLINE) is Action.FINISH
    closed = make_state(participants=[A, ME], closed=True)
    assert decide_leave(closed, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH


def test_leave_times_out_after_its_deadline() -> None:
    state = make_state(participants=[A, ME])
    assert decide_leave(state, ME, SETTINGS, DEADLINE + 0.001, DEADLINE) is Action.ERROR_TIMEOUT


# --- decide_exit ----------------------------------------------------------------------------


@pytest.mark.parametrize("complete", [False, True])
def test_exit_removes_participant(complete: bool) -> None:
    state = make_state(participants=[A, ME], complete=complete)
    assert decide_exit(state, ME, SETTINGS, NOW, DEADLINE) is Action.REMOVE_FROM_PARTICIPANTS


def test_exit_of_participant_times_out_after_deadline() -> None:
    state = make_state(participants=[A, ME])
    assert decide_exit(state, ME, SETTINGS, DEADLINE + 0.001, DEADLINE) is Action.ERROR_TIMEOUT


def test_exit_of_participant_is_not_late_at_exactly_the_deadline() -> None:
    state = make_state(participants=[A, ME])
    assert decide_exit(state, ME, SETTINGS, DEADLINE, DEADLINE) is Action.REMOVE_FROM_PARTICIPANTS


@pytest.mark.parametrize(
    "state",
    [
        make_state(participants=[A, B], waiting=[ME], complete=True),
        make_state(participants=[A, B, C], redundant=[ME], complete=True),
        make_state(participants=[A]),
        RendezvousState(),
    ],
    ids=["waiting", "redundant", "stranger", "empty"],
)
def test_exit_finishes_at_once_when_not_a_participant(state: RendezvousState) -> None:
    assert decide_exit(state, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH
    assert decide_exit(state, ME, SETTINGS, DEADLINE + 100, DEADLINE) is Action.FINISH


def test_exit_removes_participant_of_a_closed_rendezvous() -> None:
    state = make_state(participants=[A, ME], complete=True, closed=True)
    assert decide_exit(state, ME, SETTINGS, NOW, DEADLINE) is Action.REMOVE_FROM_PARTICIPANTS


# --- decide_rejoin --------------------------------------------------------------------------


def test_rejoin_leaves_the_round_the_node_took_part_in_and_joins_the_next() -> None:
    state = make_state(participants=[A, ME], complete=True)
    assert decide_rejoin(state, ME, SETTINGS, NOW, DEADLINE, state.round) is Action.REJOIN


def test_rejoin_times_out_after_its_deadline() -> None:
    state = make_state(participants=[A, ME], complete=True)
    late = DEADLINE + 0.001
    assert decide_rejoin(state, ME, SETTINGS, late, DEADLINE, state.round) is Action.ERROR_TIMEOUT


@pytest.mark.parametrize(
    ("state", "leaving", "expected"),
    [
        # The first join: a participant of a complete round is done.
        (make_state(participants=[A, ME], complete=True), None, Action.FINISH),
        # A newer round than the one left: the node is in it already.
        (attrs.evolve(make_state(participants=[A, ME], complete=True), round=4), 3, Action.FINISH),
        # Left already, and waits for the others to leave.
        (make_state(participants=[A], waiting=[ME], complete=True), 0, Action.WAIT),
        # Dropped meanwhile (its heartbeats stopped): a plain join.
        (make_state(participants=[A, B], complete=True), 0, Action.ADD_TO_WAIT_LIST),
        (make_state(participants=[A, ME], complete=True, closed=True), 0, Action.ERROR_CLOSED),
    ],
    ids=["first-join", "newer-round", "waiting", "dropped", "closed"],
)
def test_rejoin_is_a_join_once_the_node_is_out_of_the_round_it_leaves(
    state: RendezvousState, leaving: int | None, expected: Action
) -> None:
    assert decide_rejoin(state, ME, SETTINGS, NOW, DEADLINE, leaving) is expected


# --- decide_close ---------------------------------------------------------------------------


def test_close_marks_rendezvous_closed() -> None:
    state = make_state(participants=[A, ME], complete=True)
    assert decide_close(state, ME, SETTINGS, NOW, DEADLINE) is Action.MARK_RENDEZVOUS_CLOSED


def test_close_by_a_stranger_marks_rendezvous_closed() -> None:
    assert decide_close(RendezvousState(), ME, SETTINGS, NOW, DEADLINE) is (
        Action.MARK_RENDEZVOUS_CLOSED
    )


def test_close_finishes_at_once_when_already_closed() -> None:
    state = make_state(participants=[A], closed=True)
    assert decide_close(state, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH


def test_close_of_a_closed_rendezvous_finishes_even_after_deadline() -> None:
    state = make_state(closed=True)
    assert decide_close(state, ME, SETTINGS, DEADLINE + 1, DEADLINE) is Action.FINISH


def test_close_times_out_after_deadline() -> None:
    state = make_state(participants=[A])
    assert decide_close(state, ME, SETTINGS, DEADLINE + 0.001, DEADLINE) is Action.ERROR_TIMEOUT


# --- decide_keep_alive and should_keep_alive -------------------------------------------------


@pytest.mark.parametrize("role", ["participant", "waiting", "redundant"])
def test_keep_alive_writes_a_heartbeat_when_one_is_due(role: str) -> None:
    lists = {"participant": "participants", "waiting": "waiting", "redundant": "redundant"}
    state = make_state(**{lists[role]: [ME]}, beats={ME: NOW - INTERVAL})  # type: ignore[arg-type]
    assert decide_keep_alive(state, ME, SETTINGS, NOW, DEADLINE) is Action.KEEP_ALIVE


def test_keep_alive_finishes_when_heartbeat_is_not_due() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - INTERVAL + 0.001})
    assert decide_keep_alive(state, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH


def test_keep_alive_of_a_node_the_state_does_not_know_sends_nothing() -> None:
    state = make_state(participants=[A], beats={A: NOW - 100})
    assert decide_keep_alive(state, ME, SETTINGS, NOW, DEADLINE) is Action.FINISH


def test_keep_alive_times_out_after_deadline_when_a_heartbeat_is_due() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - INTERVAL})
    assert decide_keep_alive(state, ME, SETTINGS, DEADLINE + 1, DEADLINE) is Action.ERROR_TIMEOUT


def test_keep_alive_finishes_after_deadline_when_no_heartbeat_is_due() -> None:
    state = make_state(participants=[ME], beats={ME: DEADLINE})
    assert decide_keep_alive(state, ME, SETTINGS, DEADLINE + 1, DEADLINE) is Action.FINISH


def test_keep_alive_continues_after_close() -> None:
    state = make_state(participants=[ME], closed=True, beats={ME: NOW - INTERVAL})
    assert decide_keep_alive(state, ME, SETTINGS, NOW, DEADLINE) is Action.KEEP_ALIVE


def test_should_keep_alive_is_false_for_a_node_the_state_does_not_know() -> None:
    assert not should_keep_alive(make_state(participants=[A]), ME, SETTINGS, NOW)


def test_should_keep_alive_is_true_exactly_one_interval_after_the_last_heartbeat() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - INTERVAL})
    assert should_keep_alive(state, ME, SETTINGS, NOW)


def test_should_keep_alive_is_true_long_after_the_last_heartbeat() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - 10 * INTERVAL})
    assert should_keep_alive(state, ME, SETTINGS, NOW)


def test_should_keep_alive_is_false_within_one_interval_of_the_last_heartbeat() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - INTERVAL + 0.001})
    assert not should_keep_alive(state, ME, SETTINGS, NOW)


def test_should_keep_alive_looks_at_this_nodes_heartbeat_only() -> None:
    state = make_state(participants=[A, ME], beats={A: NOW - 100, ME: NOW})
    assert not should_keep_alive(state, ME, SETTINGS, NOW)


# --- deadline_after -------------------------------------------------------------------------


def test_deadline_after_leaving_redundancy_list_is_a_full_join_timeout_from_now() -> None:
    assert deadline_after(Action.REMOVE_FROM_REDUNDANCY_LIST, NOW - 50, SETTINGS, NOW) == (
        NOW + 600
    )


@pytest.mark.parametrize(
    "action", [a for a in Action if a is not Action.REMOVE_FROM_REDUNDANCY_LIST]
)
def test_deadline_after_any_other_action_is_unchanged(action: Action) -> None:
    assert deadline_after(action, DEADLINE, SETTINGS, NOW) == DEADLINE


# --- next_wakeup ----------------------------------------------------------------------------


def wakeup(state: RendezvousState, *, now: float = NOW, deadline: float = DEADLINE) -> float:
    return next_wakeup(state, ME, SETTINGS, now, deadline)


def just_after(t: float) -> float:
    return math.nextafter(t, math.inf)


def test_next_wakeup_is_this_nodes_next_heartbeat_when_it_comes_first() -> None:
    state = make_state(participants=[ME], beats={ME: NOW - 1})
    assert wakeup(state) == NOW - 1 + INTERVAL


def test_next_wakeup_is_just_after_the_last_call_deadline_of_an_incomplete_round() -> None:
    state = make_state(participants=[A, ME], deadline=NOW + 2)
    assert wakeup(state) == just_after(NOW + 2)
    assert join(state, now=wakeup(state)) is Action.MARK_RENDEZVOUS_COMPLETE


def test_next_wakeup_ignores_the_last_call_deadline_of_a_complete_round() -> None:
    # A complete round has no deadline in practice; a stale one must not wake anybody.
    state = make_state(participants=[A, ME], complete=True, deadline=NOW + 2)
    assert wakeup(state) == NOW + INTERVAL


def test_next_wakeup_is_just_after_another_nodes_heartbeat_expires() -> None:
    state = make_state(participants=[A, ME], beats={A: NOW - EXPIRY + 1, ME: NOW})
    assert wakeup(state) == just_after(NOW - EXPIRY + 1 + EXPIRY)


def test_next_wakeup_is_the_expiry_as_a_node_that_saw_the_backend_lag_judges_it() -> None:
    state = make_state(participants=[A, ME], beats={A: NOW - EXPIRY + 1, ME: NOW})
    woken = next_wakeup(state, ME, SETTINGS, NOW, DEADLINE, beats=False, lag=8.0)
    assert woken == just_after(NOW - EXPIRY + 1 + EXPIRY + 8.0)


def test_next_wakeup_ignores_the_expiry_of_this_nodes_own_heartbeat() -> None:
    # Its own heartbeat comes due (NOW + 5) before it expires (NOW + 15).
    settings = RendezvousSettings("run", 2, 3, keep_alive_max_attempt=1)
    state = make_state(participants=[ME], beats={ME: NOW})
    assert next_wakeup(state, ME, settings, NOW, DEADLINE) == NOW + 5


def test_next_wakeup_is_just_after_the_operation_deadline() -> None:
    state = make_state(participants=[ME])
    assert wakeup(state, deadline=NOW + 1) == just_after(NOW + 1)


def test_next_wakeup_is_just_after_the_rollback_period_once_the_deadline_passed() -> None:
    state = make_state(participants=[A, B], redundant=[ME], complete=True, beat=NOW + 100)
    deadline = NOW - 1
    assert wakeup(state, deadline=deadline) == just_after(deadline + ROLLBACK_PERIOD)


def test_next_wakeup_is_never_when_nothing_is_ahead() -> None:
    state = make_state(redundant=[ME], beat=NOW - 1)
    settings = RendezvousSettings("run", 2, 3, keep_alive_interval=timedelta(seconds=0.5))
    assert next_wakeup(state, ME, settings, NOW, NOW - 100) == math.inf


def test_next_wakeup_picks_the_earliest_of_every_candidate() -> None:
    state = make_state(
        participants=[A, B, ME],
        deadline=NOW + 3,
        beats={A: NOW - EXPIRY + 4, B: NOW - EXPIRY + 2.5, ME: NOW - INTERVAL + 3.5},
    )
    assert wakeup(state, deadline=NOW + 6) == just_after(NOW + 2.5)


@pytest.mark.parametrize(
    ("state", "deadline"),
    [
        (make_state(participants=[A, ME], deadline=NOW), DEADLINE),
        (
            make_state(
                participants=[A, B, C], redundant=[ME], complete=True, beats={A: NOW - EXPIRY}
            ),
            DEADLINE,
        ),
        (make_state(participants=[A, B], waiting=[ME], complete=True), NOW),
    ],
    ids=["last-call-deadline", "heartbeat-expiry", "operation-deadline"],
)
def test_next_wakeup_at_a_boundary_wakes_when_the_decision_changes_not_later(
    state: RendezvousState, deadline: float
) -> None:
    # Each comparison is strict: at NOW nothing happens yet, just after it does.
    def decision(t: float) -> Action:
        return join(drop_dead_nodes(state, SETTINGS, t)[0], now=t, deadline=deadline)

    assert decision(NOW) is Action.WAIT
    wake = wakeup(state, deadline=deadline)
    assert NOW < wake <= just_after(NOW)
    assert decision(wake) is not decision(NOW)
