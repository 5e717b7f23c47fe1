"""The events between two states: one test per transition, replay, and the JSON form.

Settings: 2 to 3 nodes, heartbeat expiry 15 s. Each scenario applies the core's own
reducers, derives the events, and checks both the events and that replaying them
gives the new state's membership.
"""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdzv.api import RendezvousEventError
from rdzv.core import (
    Action,
    IllegalTransitionError,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    apply_action,
    drop_dead_nodes,
)
from rdzv.core.event_json import EVENT_TYPES, event_from_json, event_to_json, parse_node
from rdzv.core.events import (
    EMPTY,
    Event,
    Membership,
    NodeDeclaredDead,
    NodeJoined,
    NodeLeft,
    RendezvousClosed,
    RoundAbandoned,
    RoundCompleted,
    RoundStarted,
    StateReset,
    events_between,
    membership_of,
    replay,
)

SETTINGS = RendezvousSettings("run", 2, 3)
EXPIRY = SETTINGS.heartbeat_expiry
NOW = 1_000.0
A = NodeDesc("alpha", 9, 0)
B = NodeDesc("alpha", 10, 0)
C = NodeDesc("beta", 1, 0)
D = NodeDesc("beta", 1, 1)


def act(state: RendezvousState, action: Action, node: NodeDesc, now: float = NOW):
    return apply_action(state, action, node, SETTINGS, now)


def between(before: RendezvousState | None, after: RendezvousState, **kw) -> tuple[Event, ...]:
    events = events_between(before, after, at=kw.pop("at", NOW), expiry=EXPIRY, **kw)
    assert replay(membership_of(before), events) == membership_of(after)
    return events


def forming(*nodes: NodeDesc) -> RendezvousState:
    state = RendezvousState()
    for node in nodes:
        state = act(state, Action.ADD_TO_PARTICIPANTS, node)
    return state


def complete(*nodes: NodeDesc) -> RendezvousState:
    state = forming(*nodes)
    return state if state.complete else act(state, Action.MARK_RENDEZVOUS_COMPLETE, nodes[0])


def test_the_same_state_gives_no_event() -> None:
    state = complete(A, B)
    assert between(state, state) == ()


def test_a_heartbeat_gives_no_event() -> None:
    state = complete(A, B)
    assert between(state, act(state, Action.KEEP_ALIVE, A, NOW + 1)) == ()


def test_the_first_state_names_its_first_participant() -> None:
    assert between(None, forming(A)) == (NodeJoined(NOW, 0, A, "participant"),)


def test_a_watcher_that_starts_late_sees_the_round_start_then_everyone() -> None:
    state = attrs.evolve(complete(A, B), round=4)
    assert between(None, state) == (
        RoundStarted(NOW, 4),
        NodeJoined(NOW, 4, A, "participant"),
        NodeJoined(NOW, 4, B, "participant"),
        RoundCompleted(NOW, 4, 2, ((0, A), (1, B))),
    )


def test_joining_the_participants() -> None:
    before = forming(A)
    assert between(before, act(before, Action.ADD_TO_PARTICIPANTS, B)) == (
        NodeJoined(NOW, 0, B, "participant"),
    )


def test_joining_a_complete_round_puts_the_node_on_the_wait_list() -> None:
    before = complete(A, B)
    assert between(before, act(before, Action.ADD_TO_WAIT_LIST, C)) == (
        NodeJoined(NOW, 0, C, "waiting"),
    )


def test_joining_a_full_round_puts_the_node_on_the_redundancy_list() -> None:
    before = forming(A, B, C)  # max_nodes: complete at once
    assert between(before, act(before, Action.ADD_TO_REDUNDANCY_LIST, D)) == (
        NodeJoined(NOW, 0, D, "redundant"),
    )


def test_reaching_max_nodes_completes_the_round_with_its_ranks() -> None:
    before = forming(B, A)
    assert between(before, act(before, Action.ADD_TO_PARTICIPANTS, C)) == (
        NodeJoined(NOW, 0, C, "participant"),
        RoundCompleted(NOW, 0, 3, ((0, A), (1, B), (2, C))),
    )


def test_the_end_of_the_last_call_completes_the_round() -> None:
    before = forming(A, B)
    assert between(before, act(before, Action.MARK_RENDEZVOUS_COMPLETE, A)) == (
        RoundCompleted(NOW, 0, 2, ((0, A), (1, B))),
    )


def test_a_node_that_removes_itself_with_a_fresh_heartbeat_left() -> None:
    before = forming(A, B)
    assert between(before, act(before, Action.REMOVE_FROM_PARTICIPANTS, B)) == (
        NodeLeft(NOW, 0, B, "participant", NOW),
    )


@pytest.mark.parametrize(
    ("action", "role", "setup"),
    [
        (Action.REMOVE_FROM_WAIT_LIST, "waiting", Action.ADD_TO_WAIT_LIST),
        (Action.REMOVE_FROM_REDUNDANCY_LIST, "redundant", Action.ADD_TO_REDUNDANCY_LIST),
    ],
)
def test_leaving_a_list(action: Action, role: str, setup: Action) -> None:
    before = act(complete(A, B, C), setup, D)
    assert between(before, act(before, action, D)) == (NodeLeft(NOW, 0, D, role, NOW),)  # type: ignore[arg-type]


def test_a_node_dropped_after_its_heartbeat_expired_is_declared_dead() -> None:
    before = act(complete(A, B), Action.KEEP_ALIVE, A, NOW + 20)
    after, dropped = drop_dead_nodes(before, SETTINGS, NOW + 20)
    assert dropped == (B,)
    assert between(before, after, at=NOW + 20) == (
        NodeDeclaredDead(NOW + 20, 0, B, "participant", NOW),
    )


def test_a_heartbeat_read_outside_the_state_makes_a_dropped_node_one_that_left() -> None:
    """On a heartbeat board the state's heartbeats are old; the caller's readings decide."""
    before = complete(A, B)
    after = act(before, Action.REMOVE_FROM_PARTICIPANTS, B, NOW + 20)
    assert between(before, after, at=NOW + 20, beats={B: NOW + 19}) == (
        NodeLeft(NOW + 20, 0, B, "participant", NOW + 19),
    )
    assert between(before, after, at=NOW + 20, beats={B: NOW - 5}) == (
        NodeDeclaredDead(NOW + 20, 0, B, "participant", NOW),
    )


def test_a_node_gone_while_the_watcher_could_not_read_is_not_surely_dead() -> None:
    """Read at NOW, then not for 60 s: B's heartbeat was fresh when last seen."""
    before = complete(A, B)
    after = act(before, Action.REMOVE_FROM_PARTICIPANTS, B)
    assert between(before, after, at=NOW + 60, before_at=NOW) == (
        NodeLeft(NOW + 60, 0, B, "participant", NOW, certain=False),
    )


def test_a_node_whose_heartbeat_had_expired_when_last_read_is_surely_dead() -> None:
    before = complete(A, B)
    after = act(before, Action.REMOVE_FROM_PARTICIPANTS, B)
    assert between(before, after, at=NOW + 60, before_at=NOW + EXPIRY + 1) == (
        NodeDeclaredDead(NOW + 60, 0, B, "participant", NOW),
    )


def test_a_node_whose_heartbeat_is_fresh_after_a_gap_surely_left() -> None:
    before = complete(A, B)
    after = act(before, Action.REMOVE_FROM_PARTICIPANTS, B)
    assert between(before, after, at=NOW + 60, before_at=NOW, beats={B: NOW + 50}) == (
        NodeLeft(NOW + 60, 0, B, "participant", NOW + 50),
    )


def test_an_uncertain_departure_keeps_its_flag_in_json() -> None:
    event = NodeLeft(NOW, 0, B, "participant", NOW - 30, certain=False)
    document = event_to_json(event)
    assert document["certain"] is False
    assert event_from_json(document) == event
    del document["certain"]  # written before the field existed
    assert event_from_json(document) == attrs.evolve(event, certain=True)


def test_a_rejoining_participant_moves_to_the_wait_list() -> None:
    before = complete(A, B)
    assert between(before, act(before, Action.REJOIN, A)) == (
        NodeJoined(NOW, 0, A, "waiting", "participant"),
    )


def test_the_last_participant_to_rejoin_abandons_the_round_and_starts_the_next() -> None:
    before = act(complete(A, B), Action.REJOIN, A)
    after = act(before, Action.REJOIN, B)
    assert between(before, after) == (
        RoundAbandoned(NOW, 0),
        RoundStarted(NOW, 1),
        NodeJoined(NOW, 1, A, "participant", "waiting"),
        NodeJoined(NOW, 1, B, "participant", "participant"),  # of round 0
    )


def test_a_round_whose_last_participant_died_is_abandoned() -> None:
    before = complete(A, B)
    after, _ = drop_dead_nodes(act(before, Action.KEEP_ALIVE, A, NOW - 100), SETTINGS, NOW + 20)
    assert between(before, after, at=NOW + 20) == (
        NodeDeclaredDead(NOW + 20, 0, A, "participant", NOW),
        NodeDeclaredDead(NOW + 20, 0, B, "participant", NOW),
        RoundAbandoned(NOW + 20, 0),
        RoundStarted(NOW + 20, 1),
    )


def test_completion_moves_the_waiting_nodes_that_do_not_fit_to_the_redundancy_list() -> None:
    before = act(act(complete(A, B), Action.ADD_TO_WAIT_LIST, C), Action.ADD_TO_WAIT_LIST, D)
    after = attrs.evolve(before, round=1, complete=False, world_size=0, participants={A: 0, B: 0})
    after = act(after, Action.ADD_TO_PARTICIPANTS, C)  # three: full, complete
    events = between(before, after)
    assert NodeJoined(NOW, 1, D, "redundant", "waiting") in events
    assert events[-1] == RoundCompleted(NOW, 1, 3, ((0, A), (1, B), (2, C)))


def test_closing() -> None:
    before = complete(A, B)
    assert between(before, act(before, Action.MARK_RENDEZVOUS_CLOSED, A)) == (
        RendezvousClosed(NOW, 0),
    )


def test_a_state_that_goes_back_is_a_reset_and_then_described_from_scratch() -> None:
    before = attrs.evolve(complete(A, B), round=3)
    after = forming(C)
    assert between(before, after) == (StateReset(NOW, 0), NodeJoined(NOW, 0, C, "participant"))


def test_a_closed_state_opened_again_is_a_reset() -> None:
    before = act(complete(A, B), Action.MARK_RENDEZVOUS_CLOSED, A)
    assert between(before, complete(A, B))[0] == StateReset(NOW, 0)


def test_a_new_job_in_the_same_round_is_a_reset() -> None:
    """A restarted c10d host or a re-created key: round 0 again, other nodes complete."""
    after = complete(C, D)
    assert between(complete(A, B), after) == (
        StateReset(NOW, 0),
        NodeJoined(NOW, 0, C, "participant"),
        NodeJoined(NOW, 0, D, "participant"),
        RoundCompleted(NOW, 0, 2, ((0, C), (1, D))),
    )


def test_a_complete_round_whose_ranks_changed_is_a_reset() -> None:
    before = complete(A, B)
    after = attrs.evolve(before, participants={A: 1, B: 0})
    assert between(before, after)[0] == StateReset(NOW, 0)


def test_a_complete_round_that_forms_again_is_a_reset() -> None:
    assert between(complete(A, B), forming(A))[0] == StateReset(NOW, 0)


def test_a_watcher_that_missed_states_still_reaches_the_last() -> None:
    """A complete round seen only after a participant died: the ranks seen, the size it had."""
    full = complete(A, B, C)
    after, _ = drop_dead_nodes(
        act(act(full, Action.KEEP_ALIVE, A, NOW + 20), Action.KEEP_ALIVE, B, NOW + 20),
        SETTINGS,
        NOW + 20,
    )
    assert between(forming(A), after, at=NOW + 20) == (
        NodeJoined(NOW + 20, 0, B, "participant"),
        RoundCompleted(NOW + 20, 0, 3, ((0, A), (1, B))),
    )


# -- any sequence of transitions, and any subsequence of it --------------------------

NODES = [A, B, C, D]
ACTIONS = [a for a in Action if a.changes_state and a is not Action.KEEP_ALIVE]


RUNS = st.lists(st.tuples(st.sampled_from(ACTIONS), st.sampled_from(NODES)), max_size=30)
SEEN = st.lists(st.booleans(), min_size=30, max_size=30)


def _run(steps: list[tuple[Action, NodeDesc]]) -> list[RendezvousState]:
    states = [RendezvousState()]
    for i, (action, node) in enumerate(steps):
        try:
            states.append(act(states[-1], action, node, NOW + i))
        except IllegalTransitionError:
            continue
    return states


def _watch(watched: list[RendezvousState]) -> tuple[Membership, list[Event]]:
    view, before, seen = EMPTY, None, []
    for state in watched:
        events = events_between(before, state, at=NOW + 100, expiry=EXPIRY)
        for event in events:
            assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event
        view, before = replay(view, events), state
        seen.extend(events)
    return view, seen


@settings(max_examples=200, deadline=None)
@given(RUNS, SEEN)
def test_replaying_the_events_of_any_run_seen_in_part_gives_its_last_state(
    steps: list[tuple[Action, NodeDesc]], seen: list[bool]
) -> None:
    states = _run(steps)
    watched = [s for s, keep in zip(states, seen, strict=False) if keep] + [states[-1]]
    view, events = _watch(watched)
    assert view == membership_of(states[-1])
    assert not any(isinstance(e, StateReset) for e in events)  # rdzv never goes back


@settings(max_examples=200, deadline=None)
@given(RUNS, SEEN, RUNS, SEEN)
def test_replaying_the_events_of_a_run_then_a_reset_and_a_new_run_gives_the_last_state(
    first: list[tuple[Action, NodeDesc]],
    seen_first: list[bool],
    second: list[tuple[Action, NodeDesc]],
    seen_second: list[bool],
) -> None:
    """The state is reset (a restarted c10d host, a re-created key) and a new job starts."""
    old, new = _run(first), _run(second)
    watched = [s for s, keep in zip(old, seen_first, strict=False) if keep] + [old[-1]]
    watched += [s for s, keep in zip(new, seen_second, strict=False) if keep] + [new[-1]]
    view, _ = _watch(watched)
    assert view == membership_of(new[-1])


# -- the JSON form ---------------------------------------------------------------------


def test_every_event_type_has_a_json_name() -> None:
    assert set(EVENT_TYPES.values()) == set(Event.__args__)  # type: ignore[attr-defined]


def test_the_json_form_of_a_completed_round() -> None:
    event = RoundCompleted(NOW, 2, 2, ((0, A), (1, NodeDesc("10.0.0.1", 42, 0))))
    assert event_to_json(event) == {
        "format": 1,
        "type": "round_completed",
        "at": NOW,
        "round": 2,
        "world_size": 2,
        "ranks": [{"rank": 0, "node": "alpha_9_0"}, {"rank": 1, "node": "10.0.0.1_42_0"}],
    }


@pytest.mark.parametrize(
    "name",
    ["a_\u0661_0", "a_1_\u0661", "a_\u00b2_0", "evil\x1b]0;x\x07_1_0", "a\nb_1_0"],
    ids=["arabic-indic-pid", "arabic-indic-local-id", "superscript", "escape", "newline"],
)
def test_a_node_name_with_other_digits_or_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(RendezvousEventError, match="a node must be 'addr_pid_localid'"):
        parse_node(name)


def test_a_node_with_underscores_in_its_address_survives_its_name() -> None:
    node = NodeDesc("my_host_name", 7, 3)
    assert parse_node(str(node)) == node


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "an event is a JSON object"),
        ({"type": "node_left"}, "unknown event format None"),
        ({"format": 2, "type": "node_left"}, "unknown event format 2"),
        ({"format": 1, "type": "exec"}, "unknown event type 'exec'"),
        ({"format": 1, "type": ["node_left"]}, "unknown event type \\['node_left'\\]"),
        ({"format": 1, "type": "round_started", "at": float("nan"), "round": 1}, "finite"),
        ({"format": 1, "type": "round_started", "at": float("inf"), "round": 1}, "finite"),
        ({"format": 1, "type": "round_started", "round": 1}, "the event has no 'at'"),
        ({"format": 1, "type": "round_started", "at": "x", "round": 1}, "'at' must be a number"),
        ({"format": 1, "type": "round_started", "at": 1, "round": -1}, "'round' must be a non"),
        (
            {"format": 1, "type": "node_left", "at": 1, "round": 1, "node": "x", "role": "waiting"},
            "a node must be 'addr_pid_localid'",
        ),
        (
            {
                "format": 1,
                "type": "node_left",
                "at": 1,
                "round": 1,
                "node": "a_1_0",
                "role": "boss",
            },
            "'role' must be one of participant, waiting, redundant",
        ),
        (
            {
                "format": 1,
                "type": "round_completed",
                "at": 1,
                "round": 1,
                "world_size": 1,
                "ranks": {},
            },
            "'ranks' must be a list",
        ),
    ],
)
def test_a_bad_document_says_which_field_is_wrong(document: object, message: str) -> None:
    with pytest.raises(RendezvousEventError, match=message):
        event_from_json(document)  # type: ignore[arg-type]
