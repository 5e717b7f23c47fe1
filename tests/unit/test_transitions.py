"""How the state changes: every reducer through ``apply_action``, legal and illegal.

Settings: 2 to 4 nodes, a 30 s last call. Every legal transition also checks that
the state it started from is unchanged; every illegal one that it raises and leaves
the state as it was.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import pytest

from rdzv.core import (
    Action,
    IllegalTransitionError,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    apply_action,
    decode_state,
    encode_state,
)
from rdzv.core.transitions import TRANSITIONS

SETTINGS = RendezvousSettings("run", 2, 4, timeout=RendezvousTimeout(last_call=30))
NOW = 1_000.0
EARLIER = 900.0
LAST_CALL = NOW + 30

# Insertion order differs from sort order: ranks must follow the sort order.
A = NodeDesc("alpha", 9, 0)
B = NodeDesc("alpha", 10, 0)
C = NodeDesc("beta", 1, 0)
D = NodeDesc("beta", 1, 1)
E = NodeDesc("gamma", 5, 0)


def make_state(
    *,
    participants: Iterable[NodeDesc] = (),
    waiting: Iterable[NodeDesc] = (),
    redundant: Iterable[NodeDesc] = (),
    complete: bool = False,
    closed: bool = False,
    deadline: float | None = None,
    round: int = 3,
    world_size: int | None = None,
) -> RendezvousState:
    """A state whose members all beat at ``EARLIER``; complete rounds ranked in sort order."""
    ordered = sorted(participants)
    members = [*ordered, *waiting, *redundant]
    return RendezvousState(
        round=round,
        complete=complete,
        deadline=deadline,
        closed=closed,
        participants={n: (r if complete else 0) for r, n in enumerate(ordered)},
        wait_list=frozenset(waiting),
        redundancy_list=frozenset(redundant),
        last_heartbeats=dict.fromkeys(members, EARLIER),
        world_size=(len(ordered) if complete else 0) if world_size is None else world_size,
    )


def apply(state: RendezvousState, action: Action, node: NodeDesc) -> RendezvousState:
    """Apply ``action`` and check that ``state`` itself did not change."""
    before = encode_state(state)
    new = apply_action(state, action, node, SETTINGS, NOW)
    assert encode_state(state) == before
    assert decode_state(before) == state
    return new


def assert_illegal(state: RendezvousState, action: Action, node: NodeDesc) -> None:
    before = encode_state(state)
    with pytest.raises(IllegalTransitionError) as info:
        apply_action(state, action, node, SETTINGS, NOW)
    assert encode_state(state) == before
    message = str(info.value)
    assert action.name in message
    assert str(node) in message
    assert f"round {state.round}" in message


# --- KEEP_ALIVE -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        make_state(participants=[A, B]),
        make_state(participants=[A], waiting=[B]),
        make_state(participants=[A], redundant=[B]),
    ],
    ids=["participant", "waiting", "redundant"],
)
def test_keep_alive_updates_only_this_nodes_heartbeat(state: RendezvousState) -> None:
    new = apply(state, Action.KEEP_ALIVE, B)
    assert new.last_heartbeats[B] == NOW
    assert new.last_heartbeats[A] == EARLIER
    assert new == attrs.evolve(state, last_heartbeats={A: EARLIER, B: NOW})


def test_keep_alive_of_a_node_the_state_does_not_know_is_illegal() -> None:
    assert_illegal(make_state(participants=[A]), Action.KEEP_ALIVE, B)


# --- ADD_TO_PARTICIPANTS --------------------------------------------------------------------


def test_first_participant_joins_with_rank_zero_and_a_heartbeat_but_no_deadline() -> None:
    new = apply(RendezvousState(), Action.ADD_TO_PARTICIPANTS, A)
    assert dict(new.participants) == {A: 0}
    assert dict(new.last_heartbeats) == {A: NOW}
    assert new.deadline is None
    assert not new.complete
    assert new.world_size == 0
    assert new.round == 0


def test_reaching_min_nodes_sets_the_last_call_deadline() -> None:
    new = apply(make_state(participants=[A]), Action.ADD_TO_PARTICIPANTS, B)
    assert dict(new.participants) == {A: 0, B: 0}
    assert new.deadline == LAST_CALL
    assert not new.complete


def test_joining_above_min_nodes_keeps_the_first_last_call_deadline() -> None:
    state = make_state(participants=[A, B], deadline=NOW - 10)
    new = apply(state, Action.ADD_TO_PARTICIPANTS, C)
    assert new.deadline == NOW - 10
    assert not new.complete
    assert len(new.participants) == 3


def test_reaching_max_nodes_completes_the_round_at_once_with_sorted_ranks() -> None:
    state = make_state(participants=[E, C, A], deadline=NOW - 10)
    new = apply(state, Action.ADD_TO_PARTICIPANTS, B)
    assert new.complete
    assert dict(new.participants) == {A: 0, B: 1, C: 2, E: 3}
    assert new.world_size == 4
    assert new.deadline is None
    assert new.round == state.round
    assert new.last_heartbeats[B] == NOW


def test_min_equal_to_max_completes_the_round_with_no_last_call() -> None:
    settings = RendezvousSettings("run", 2, 2)
    new = apply_action(make_state(participants=[B]), Action.ADD_TO_PARTICIPANTS, A, settings, NOW)
    assert new.complete
    assert dict(new.participants) == {A: 0, B: 1}
    assert new.world_size == 2
    assert new.deadline is None


def test_waiting_node_moves_from_wait_list_to_participants() -> None:
    state = make_state(participants=[A], waiting=[B, C])
    new = apply(state, Action.ADD_TO_PARTICIPANTS, B)
    assert set(new.participants) == {A, B}
    assert new.wait_list == frozenset({C})
    assert new.last_heartbeats[B] == NOW


@pytest.mark.parametrize(
    ("state", "node"),
    [
        (make_state(participants=[A, C], complete=True), E),
        (make_state(participants=[A, B], waiting=[C], complete=True), C),
        (make_state(participants=[A, B]), B),
        (make_state(participants=[A], redundant=[B]), B),
    ],
    ids=["stranger-into-complete-round", "waiting-into-complete-round", "participant", "redundant"],
)
def test_adding_to_participants_is_illegal_unless_new_or_waiting_in_incomplete_round(
    state: RendezvousState, node: NodeDesc
) -> None:
    assert_illegal(state, Action.ADD_TO_PARTICIPANTS, node)


# --- ADD_TO_WAIT_LIST -----------------------------------------------------------------------


def test_adding_to_wait_list_adds_the_node_with_a_heartbeat() -> None:
    state = make_state(participants=[A, B], complete=True)
    new = apply(state, Action.ADD_TO_WAIT_LIST, C)
    assert new.wait_list == frozenset({C})
    assert new.last_heartbeats[C] == NOW
    assert new.participants == state.participants
    assert new.complete
    assert new.world_size == 2


def test_adding_to_wait_list_takes_the_node_off_the_redundancy_list() -> None:
    state = make_state(participants=[A, B], redundant=[C, D], complete=True)
    new = apply(state, Action.ADD_TO_WAIT_LIST, C)
    assert new.wait_list == frozenset({C})
    assert new.redundancy_list == frozenset({D})
    assert new.last_heartbeats[C] == NOW


@pytest.mark.parametrize("node", [A, C], ids=["participant", "waiting"])
def test_adding_to_wait_list_is_illegal_for_a_participant_or_waiting_node(node: NodeDesc) -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True)
    assert_illegal(state, Action.ADD_TO_WAIT_LIST, node)


# --- ADD_TO_REDUNDANCY_LIST -----------------------------------------------------------------


def test_adding_to_redundancy_list_adds_the_node_with_a_heartbeat() -> None:
    state = make_state(participants=[A, B, C, D], complete=True)
    new = apply(state, Action.ADD_TO_REDUNDANCY_LIST, E)
    assert new.redundancy_list == frozenset({E})
    assert new.last_heartbeats[E] == NOW
    assert new == attrs.evolve(
        state, redundancy_list={E}, last_heartbeats={**state.last_heartbeats, E: NOW}
    )


@pytest.mark.parametrize("node", [A, D, E], ids=["participant", "waiting", "redundant"])
def test_adding_to_redundancy_list_is_illegal_for_a_known_node(node: NodeDesc) -> None:
    state = make_state(participants=[A, B, C], waiting=[D], redundant=[E], complete=True)
    assert_illegal(state, Action.ADD_TO_REDUNDANCY_LIST, node)


# --- REMOVE_FROM_PARTICIPANTS ---------------------------------------------------------------


def test_leaving_a_complete_round_keeps_it_complete_with_the_others_ranks_and_world_size() -> None:
    state = make_state(participants=[A, B, C], waiting=[D], complete=True)
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, B)
    assert new.complete
    assert dict(new.participants) == {A: 0, C: 2}
    assert new.world_size == 3
    assert B not in new.last_heartbeats
    assert new.round == state.round
    assert new.wait_list == frozenset({D})


def test_removing_the_last_participant_of_a_complete_round_starts_the_next_round() -> None:
    state = make_state(participants=[A], waiting=[B], redundant=[C], complete=True, world_size=3)
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, A)
    assert new.round == state.round + 1
    assert not new.complete
    assert new.world_size == 0
    assert dict(new.participants) == {}
    assert new.deadline is None
    assert new.wait_list == frozenset({B})
    assert new.redundancy_list == frozenset({C})
    assert set(new.last_heartbeats) == {B, C}


def test_falling_below_min_nodes_clears_the_last_call_deadline() -> None:
    state = make_state(participants=[A, B], deadline=LAST_CALL)
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, A)
    assert dict(new.participants) == {B: 0}
    assert new.deadline is None
    assert not new.complete
    assert new.round == state.round


def test_leaving_an_incomplete_round_above_min_nodes_keeps_the_last_call_deadline() -> None:
    state = make_state(participants=[A, B, C], deadline=LAST_CALL)
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, C)
    assert set(new.participants) == {A, B}
    assert new.deadline == LAST_CALL


def test_removing_the_last_participant_of_an_incomplete_round_stays_in_the_round() -> None:
    state = make_state(participants=[A])
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, A)
    assert new == attrs.evolve(state, participants={}, last_heartbeats={})


@pytest.mark.parametrize("node", [C, D, E], ids=["waiting", "redundant", "stranger"])
def test_removing_a_non_participant_from_participants_is_illegal(node: NodeDesc) -> None:
    state = make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True)
    assert_illegal(state, Action.REMOVE_FROM_PARTICIPANTS, node)


# --- REMOVE_FROM_WAIT_LIST and REMOVE_FROM_REDUNDANCY_LIST ----------------------------------


def test_leaving_the_wait_list_drops_the_node_and_its_heartbeat() -> None:
    state = make_state(participants=[A, B], waiting=[C, D], complete=True)
    new = apply(state, Action.REMOVE_FROM_WAIT_LIST, C)
    assert new == attrs.evolve(
        state, wait_list={D}, last_heartbeats={A: EARLIER, B: EARLIER, D: EARLIER}
    )


@pytest.mark.parametrize("node", [A, D, E], ids=["participant", "redundant", "stranger"])
def test_removing_a_node_that_does_not_wait_from_the_wait_list_is_illegal(node: NodeDesc) -> None:
    state = make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True)
    assert_illegal(state, Action.REMOVE_FROM_WAIT_LIST, node)


def test_leaving_the_redundancy_list_drops_the_node_and_its_heartbeat() -> None:
    state = make_state(participants=[A, B], redundant=[C, D], complete=True, world_size=4)
    new = apply(state, Action.REMOVE_FROM_REDUNDANCY_LIST, C)
    assert new == attrs.evolve(
        state, redundancy_list={D}, last_heartbeats={A: EARLIER, B: EARLIER, D: EARLIER}
    )


@pytest.mark.parametrize("node", [A, C, E], ids=["participant", "waiting", "stranger"])
def test_removing_a_node_that_is_not_redundant_from_the_redundancy_list_is_illegal(
    node: NodeDesc,
) -> None:
    state = make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True)
    assert_illegal(state, Action.REMOVE_FROM_REDUNDANCY_LIST, node)


# --- MARK_RENDEZVOUS_COMPLETE ---------------------------------------------------------------


def test_completing_a_round_assigns_ranks_in_node_order_and_sets_world_size() -> None:
    state = make_state(participants=[C, B, A], waiting=[D], deadline=NOW - 1)
    new = apply(state, Action.MARK_RENDEZVOUS_COMPLETE, C)
    assert new.complete
    assert dict(new.participants) == {A: 0, B: 1, C: 2}
    assert new.world_size == 3
    assert new.deadline is None
    assert new.round == state.round
    assert new.wait_list == frozenset({D})
    assert new.last_heartbeats == state.last_heartbeats


def test_completing_a_round_with_exactly_min_nodes() -> None:
    state = make_state(participants=[B, A], deadline=NOW - 1)
    new = apply(state, Action.MARK_RENDEZVOUS_COMPLETE, A)
    assert dict(new.participants) == {A: 0, B: 1}
    assert new.world_size == 2


def test_completing_a_round_below_min_nodes_is_illegal() -> None:
    assert_illegal(make_state(participants=[A]), Action.MARK_RENDEZVOUS_COMPLETE, A)


def test_completing_a_complete_round_again_is_illegal() -> None:
    state = make_state(participants=[A, B], complete=True)
    assert_illegal(state, Action.MARK_RENDEZVOUS_COMPLETE, A)


# --- MARK_RENDEZVOUS_CLOSED and the closed state --------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        RendezvousState(),
        make_state(participants=[A, B], deadline=LAST_CALL),
        make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True),
    ],
    ids=["empty", "incomplete", "complete"],
)
def test_closing_sets_closed_and_changes_nothing_else(state: RendezvousState) -> None:
    new = apply(state, Action.MARK_RENDEZVOUS_CLOSED, E)
    assert new == attrs.evolve(state, closed=True)


def test_closing_a_closed_rendezvous_leaves_it_closed() -> None:
    state = make_state(participants=[A, B], complete=True, closed=True)
    assert apply(state, Action.MARK_RENDEZVOUS_CLOSED, A) == state


@pytest.mark.parametrize(
    ("action", "node"),
    [
        (Action.KEEP_ALIVE, A),
        (Action.REMOVE_FROM_PARTICIPANTS, A),
        (Action.REMOVE_FROM_WAIT_LIST, C),
        (Action.REMOVE_FROM_REDUNDANCY_LIST, D),
        (Action.MARK_RENDEZVOUS_CLOSED, E),
    ],
)
def test_close_is_terminal_for_what_nodes_still_do_after_it(action: Action, node: NodeDesc) -> None:
    state = make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True, closed=True)
    assert apply(state, action, node).closed


def test_close_is_terminal_even_when_the_last_participant_leaves() -> None:
    state = make_state(participants=[A], complete=True, closed=True)
    new = apply(state, Action.REMOVE_FROM_PARTICIPANTS, A)
    assert new.closed
    assert new.round == state.round + 1


def test_no_reducer_reopens_a_closed_rendezvous() -> None:
    states = [
        make_state(participants=[A], waiting=[B], closed=True),
        make_state(participants=[A, B], deadline=NOW - 1, closed=True),
        make_state(participants=[A, B], waiting=[C], redundant=[D], complete=True, closed=True),
    ]
    applied = 0
    for state in states:
        for action in TRANSITIONS:
            for node in (A, B, C, D, E):
                try:
                    new = apply(state, action, node)
                except IllegalTransitionError:
                    continue
                applied += 1
                assert new.closed, (action, node)
    assert applied > 20


# --- actions that write nothing -------------------------------------------------------------


def test_every_writing_action_has_a_reducer_and_no_other_does() -> None:
    assert set(TRANSITIONS) == {a for a in Action if a.changes_state}


@pytest.mark.parametrize("action", [a for a in Action if not a.changes_state])
def test_applying_an_action_that_writes_nothing_is_illegal(action: Action) -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True)
    assert_illegal(state, action, A)


def test_an_illegal_transition_says_why_and_in_which_state() -> None:
    state = make_state(participants=[A], round=7)
    with pytest.raises(IllegalTransitionError, match="the node is not waiting") as info:
        apply_action(state, Action.REMOVE_FROM_WAIT_LIST, A, SETTINGS, NOW)
    assert "REMOVE_FROM_WAIT_LIST" in str(info.value)
    assert "round 7" in str(info.value)
    assert "complete=False" in str(info.value)
    assert "closed=False" in str(info.value)


def test_illegal_transition_error_is_a_value_error() -> None:
    assert issubclass(IllegalTransitionError, ValueError)
