"""Join intents admitted in batches, and heartbeat records merged into the state."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdzv.core import (
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    apply_action,
    decide_join,
)
from rdzv.core.intents import (
    MAX_INTENT_SIZE,
    JoinIntent,
    _parse_intent,
    admit_intents,
    decode_beat,
    decode_intents,
    encode_beat,
    encode_intent,
    folder,
    merge_heartbeats,
    moves,
    should_hold,
)

SETTINGS = RendezvousSettings(
    "run",
    2,
    3,
    timeout=RendezvousTimeout(last_call=30),
    keep_alive_interval=timedelta(seconds=5),
    keep_alive_max_attempt=3,
)
NOW = 1_000.0
NODES = [NodeDesc(f"node-{i}", 100 + i, 0) for i in range(6)]
A, B, C, D, E, F = NODES


def intent(node: NodeDesc, posted: float = NOW) -> JoinIntent:
    return JoinIntent(node, posted)


def joined(*nodes: NodeDesc, complete: bool = False) -> RendezvousState:
    """The state after ``nodes`` joined one by one (and the round completed if asked)."""
    state = RendezvousState()
    for node in nodes:
        state = apply_action(state, Action.ADD_TO_PARTICIPANTS, node, SETTINGS, NOW)
    if complete and not state.complete:
        state = apply_action(state, Action.MARK_RENDEZVOUS_COMPLETE, nodes[0], SETTINGS, NOW)
    return state


# -- the log records -------------------------------------------------------------------


@pytest.mark.parametrize("leaves", [None, 0, 12])
def test_an_intent_survives_encoding(leaves: int | None) -> None:
    original = JoinIntent(NodeDesc("host.example.com", 4242, 7), 1_795_000_000.125, leaves)
    intents, bad = decode_intents([encode_intent(original)])
    assert (intents, bad) == ([original], 0)


def test_several_records_in_one_chunk_are_read_in_order() -> None:
    chunk = b"".join(encode_intent(intent(n, NOW + i)) for i, n in enumerate(NODES))
    intents, bad = decode_intents([chunk])
    assert [i.node for i in intents] == NODES
    assert bad == 0


@pytest.mark.parametrize(
    "line",
    [
        b"garbage",
        b"[]",
        b'["a", 1, 0]',
        b'["a", "1", 0, 5.0]',
        b'["a", 1, true, 5.0]',
        b'["", 1, 0, 5.0]',
        b'["a", 1, 0, NaN]',
        b'["a", 1, 0, "soon"]',
        b'["a", 1, 0, 5.0, -1]',
        b'["a", 1, 0, 5.0, 1.5]',
        b'["a", 1, 0, 5.0, true]',
        b'["a", 1, 0, 5.0, 1, 2]',
        b'{"addr": "a"}',
        b'["' + b"x" * MAX_INTENT_SIZE + b'", 1, 0, 5.0]',
    ],
)
def test_a_bad_record_is_skipped_and_counted_not_raised(line: bytes) -> None:
    good = encode_intent(intent(A))
    intents, bad = decode_intents([line + b"\n" + good])
    assert [i.node for i in intents] == [A]
    assert bad == 1


def test_an_oversized_line_is_rejected_before_the_decode_cache() -> None:
    """The cache of decoded lines must not keep a hostile megabyte line alive."""
    before = _parse_intent.cache_info().currsize
    line = b'["' + b"x" * (1 << 20) + b'", 1, 0, 5.0]\n'
    assert decode_intents([line]) == ([], 1)
    assert _parse_intent.cache_info().currsize == before


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    intents, bad = decode_intents([data])
    assert bad >= 0
    assert all(isinstance(i, JoinIntent) for i in intents)


# -- admitting them --------------------------------------------------------------------


def test_intents_join_an_incomplete_round_and_start_the_last_call_at_min() -> None:
    state = admit_intents(RendezvousState(), [intent(A), intent(B)], 2, SETTINGS, NOW)
    assert set(state.participants) == {A, B}
    assert state.deadline == NOW + 30
    assert state.intent_cursor == 2
    assert state.last_heartbeats == {A: NOW, B: NOW}


def test_intents_that_fill_the_round_complete_it_with_sorted_ranks() -> None:
    state = admit_intents(RendezvousState(), [intent(C), intent(A), intent(B)], 3, SETTINGS, NOW)
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}
    assert state.world_size == 3


def test_intents_beyond_max_go_to_the_redundancy_list() -> None:
    batch = [intent(n) for n in (A, B, C, D)]
    state = admit_intents(RendezvousState(), batch, 4, SETTINGS, NOW)
    assert set(state.participants) == {A, B, C}
    assert state.redundancy_list == {D}


def test_an_intent_into_a_complete_round_with_room_waits() -> None:
    state = admit_intents(joined(A, B, complete=True), [intent(C)], 5, SETTINGS, NOW)
    assert state.wait_list == {C}
    assert state.participants == {A: 0, B: 1}


def test_a_waiting_node_becomes_a_participant_of_the_next_round() -> None:
    waiting = admit_intents(joined(A, B, complete=True), [intent(C)], 1, SETTINGS, NOW)
    next_round = RendezvousState(
        round=1, wait_list=waiting.wait_list, last_heartbeats={C: NOW}, intent_cursor=1
    )
    state = admit_intents(next_round, [intent(C)], 2, SETTINGS, NOW)
    assert C in state.participants
    assert not state.wait_list


def test_a_participants_own_intent_changes_nothing_but_the_cursor() -> None:
    state = joined(A, B)
    admitted = admit_intents(state, [intent(A)], 9, SETTINGS, NOW + 1)
    assert admitted.participants == state.participants
    assert admitted.last_heartbeats == state.last_heartbeats
    assert admitted.intent_cursor == 9


def test_an_intent_older_than_the_heartbeat_expiry_is_skipped() -> None:
    stale = intent(A, posted=NOW - SETTINGS.heartbeat_expiry - 1)
    state = admit_intents(RendezvousState(), [stale, intent(B)], 2, SETTINGS, NOW)
    assert set(state.participants) == {B}


def test_a_closed_rendezvous_admits_no_one() -> None:
    closed = RendezvousState(closed=True)
    state = admit_intents(closed, [intent(A)], 1, SETTINGS, NOW)
    assert not state.participants
    assert state.intent_cursor == 1


def test_nothing_to_admit_returns_the_same_state() -> None:
    state = joined(A)
    assert admit_intents(state, [], state.intent_cursor, SETTINGS, NOW) is state


def test_the_cursor_never_moves_back() -> None:
    with pytest.raises(ValueError, match="cannot move back"):
        admit_intents(RendezvousState(intent_cursor=5), [], 4, SETTINGS, NOW)


def _then(state: RendezvousState, action: Action, node: NodeDesc) -> RendezvousState:
    return apply_action(state, action, node, SETTINGS, NOW)


_STARTS = {
    "empty": RendezvousState(),
    "incomplete": joined(A),
    "at-min": joined(A, B),
    "complete": joined(A, B, complete=True),
    "complete-with-waiting": _then(joined(A, B, complete=True), Action.ADD_TO_WAIT_LIST, C),
    "full-with-redundant": _then(joined(A, B, C), Action.ADD_TO_REDUNDANCY_LIST, D),
    "next-round-with-waiting": _then(
        _then(
            _then(joined(A, B, complete=True), Action.ADD_TO_WAIT_LIST, C),
            Action.REMOVE_FROM_PARTICIPANTS,
            A,
        ),
        Action.REMOVE_FROM_PARTICIPANTS,
        B,
    ),
    "closed": _then(joined(A), Action.MARK_RENDEZVOUS_CLOSED, A),
}


def _one_by_one(
    state: RendezvousState, joins: list[tuple[NodeDesc, bool]], leaving: int
) -> RendezvousState:
    """What the joins do one after the other, each node writing for itself (torch's way):
    a leaver exits first; a waiting node joins as soon as the round is incomplete."""

    def waiting_join(state: RendezvousState) -> RendezvousState:
        for node in sorted(state.wait_list):
            if decide_join(state, node, SETTINGS, NOW, math.inf) is Action.ADD_TO_PARTICIPANTS:
                state = apply_action(state, Action.ADD_TO_PARTICIPANTS, node, SETTINGS, NOW)
        return state

    if not state.closed and not state.complete:
        state = waiting_join(state)
    for node, leaves in joins:
        if state.closed:
            break
        if leaves and state.round == leaving and state.complete and node in state.participants:
            state = apply_action(state, Action.REMOVE_FROM_PARTICIPANTS, node, SETTINGS, NOW)
            if not state.complete:
                state = waiting_join(state)
        action = decide_join(state, node, SETTINGS, NOW, math.inf)
        if action in (
            Action.ADD_TO_PARTICIPANTS,
            Action.ADD_TO_WAIT_LIST,
            Action.ADD_TO_REDUNDANCY_LIST,
        ):
            state = apply_action(state, action, node, SETTINGS, NOW)
    return state


@settings(max_examples=400)
@given(
    st.lists(st.tuples(st.sampled_from(NODES), st.booleans()), max_size=10),
    st.sampled_from(sorted(_STARTS)),
)
def test_a_batch_admits_what_the_same_joins_one_by_one_would(
    joins: list[tuple[NodeDesc, bool]], start: str
) -> None:
    initial = _STARTS[start]
    batch = [JoinIntent(n, NOW, initial.round if leaves else None) for n, leaves in joins]
    assert admit_intents(initial, batch, 0, SETTINGS, NOW) == _one_by_one(
        initial, joins, initial.round
    )


def test_the_survivors_of_a_round_re_form_in_one_batch() -> None:
    old = joined(A, B, C)
    batch = [JoinIntent(n, NOW, old.round) for n in (A, B, C)]
    state = admit_intents(old, batch, 3, SETTINGS, NOW)
    assert state.round == old.round + 1
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}


def test_leavers_wait_until_the_last_one_leaves_then_the_waiting_join_first() -> None:
    old = joined(A, B, C)
    first = admit_intents(old, [JoinIntent(C, NOW, old.round)], 1, SETTINGS, NOW)
    assert first.round == old.round
    assert first.wait_list == {C}
    second = admit_intents(first, [JoinIntent(n, NOW, old.round) for n in (A, B)], 3, SETTINGS, NOW)
    assert second.round == old.round + 1
    assert second.complete
    assert set(second.participants) == {A, B, C}


def test_a_leave_for_a_round_that_is_over_is_a_plain_join() -> None:
    state = admit_intents(joined(A, B), [JoinIntent(C, NOW, 7)], 1, SETTINGS, NOW)
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}
    assert state.round == 0


def test_the_first_pending_intent_that_moves_someone_names_the_folder() -> None:
    old = joined(A, B, C)
    pending = [
        intent(D, NOW - 100),  # expired
        intent(B),  # a participant already
        JoinIntent(C, NOW, 5),  # leaves a round that is over
        JoinIntent(A, NOW, old.round),  # leaves the current round: moves
        intent(E),
    ]
    assert folder(old, pending, SETTINGS, NOW) == A
    assert folder(RendezvousState(), [intent(D), intent(E)], SETTINGS, NOW) == D
    assert folder(old, [intent(B)], SETTINGS, NOW) is None


def test_a_fold_is_held_while_the_round_cannot_reach_min_nodes() -> None:
    # min_nodes is 2: one pending node alone changes no decision.
    assert should_hold(RendezvousState(), [intent(A)], SETTINGS, NOW)
    assert should_hold(RendezvousState(), [intent(A), intent(A)], SETTINGS, NOW)
    assert should_hold(RendezvousState(), [intent(A), intent(B, NOW - 100)], SETTINGS, NOW)
    assert not should_hold(RendezvousState(), [intent(A), intent(B)], SETTINGS, NOW)
    assert not should_hold(joined(A), [intent(B)], SETTINGS, NOW)
    # A waiting node of an incomplete round joins with the fold, intent or not.
    assert not should_hold(_STARTS["next-round-with-waiting"], [intent(D)], SETTINGS, NOW)
    # Into a complete round (the wait list) or a closed one: never held.
    assert not should_hold(joined(A, B, complete=True), [intent(C)], SETTINGS, NOW)
    assert not should_hold(RendezvousState(closed=True), [intent(A)], SETTINGS, NOW)


def test_a_waiting_node_moves_only_once_its_round_is_over() -> None:
    waiting = _STARTS["complete-with-waiting"]
    assert not moves(waiting, intent(C))
    assert moves(_STARTS["next-round-with-waiting"], intent(C))
    assert not moves(waiting, intent(A))
    assert moves(waiting, JoinIntent(A, NOW, waiting.round))


# -- heartbeat records -----------------------------------------------------------------


def test_a_heartbeat_record_survives_encoding() -> None:
    assert decode_beat(encode_beat(1_795_000_000.123)) == 1_795_000_000.123
    assert decode_beat(encode_beat(5).decode()) == 5.0


@pytest.mark.parametrize("value", [None, b"", b"soon", b"nan", b"inf", "\xff"])
def test_a_bad_heartbeat_record_reads_as_none(value: bytes | str | None) -> None:
    assert decode_beat(value) is None


def test_merge_raises_a_members_heartbeat_to_the_newest_seen() -> None:
    state = joined(A, B)
    merged = merge_heartbeats(state, {A: NOW + 5})
    assert merged.last_heartbeats == {A: NOW + 5, B: NOW}
    assert merged.oldest_heartbeat == NOW


def test_merge_never_moves_a_heartbeat_back_nor_adds_a_stranger() -> None:
    state = joined(A)
    assert merge_heartbeats(state, {A: NOW - 5, E: NOW + 5, F: NOW}) is state
