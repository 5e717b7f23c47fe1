"""Join intents and withdrawals admitted in batches, the steward, heartbeat records merged."""

from __future__ import annotations

import math
from datetime import timedelta

import attrs
import pytest
from hypothesis import assume, given, settings
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
    LOG_SEGMENT_SPAN,
    MAX_RECORD_SIZE,
    JoinIntent,
    LogRecord,
    Withdrawal,
    _parse_record,
    admit,
    decode_beat,
    decode_records,
    encode_beat,
    encode_record,
    merge_heartbeats,
    moves,
    needs_fence,
    segment_of,
    should_hold,
    steward,
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
    intents, bad = decode_records([encode_record(original)])
    assert (intents, bad) == ([original], 0)


def test_several_records_in_one_chunk_are_read_in_order() -> None:
    chunk = b"".join(encode_record(intent(n, NOW + i)) for i, n in enumerate(NODES))
    intents, bad = decode_records([chunk])
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
        b'["evil\\u001b]0;owned\\u0007", 1, 0, 5.0]',
        b'["a\\nb", 1, 0, 5.0]',
        b'["a", 1, 0, NaN]',
        b'["a", 1, 0, "soon"]',
        b'["a", 1, 0, 5.0, -1]',
        b'["a", 1, 0, 5.0, 1.5]',
        b'["a", 1, 0, 5.0, true]',
        b'["a", 1, 0, 5.0, 1, 2]',
        b'{"addr": "a"}',
        b'["' + b"x" * MAX_RECORD_SIZE + b'", 1, 0, 5.0]',
    ],
)
def test_a_bad_record_is_skipped_and_counted_not_raised(line: bytes) -> None:
    good = encode_record(intent(A))
    intents, bad = decode_records([line + b"\n" + good])
    assert [i.node for i in intents] == [A]
    assert bad == 1


def test_an_oversized_line_is_rejected_before_the_decode_cache() -> None:
    """The cache of decoded lines must not keep a hostile megabyte line alive."""
    before = _parse_record.cache_info().currsize
    line = b'["' + b"x" * (1 << 20) + b'", 1, 0, 5.0]\n'
    assert decode_records([line]) == ([], 1)
    assert _parse_record.cache_info().currsize == before


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    intents, bad = decode_records([data])
    assert bad >= 0
    assert all(isinstance(i, JoinIntent | Withdrawal) for i in intents)


# -- admitting them --------------------------------------------------------------------


def test_intents_join_an_incomplete_round_and_start_the_last_call_at_min() -> None:
    state = admit(RendezvousState(), [intent(A), intent(B)], 2, SETTINGS, NOW)
    assert set(state.participants) == {A, B}
    assert state.deadline == NOW + 30
    assert state.intent_cursor == 2
    assert state.last_heartbeats == {A: NOW, B: NOW}


def test_intents_that_fill_the_round_complete_it_with_sorted_ranks() -> None:
    state = admit(RendezvousState(), [intent(C), intent(A), intent(B)], 3, SETTINGS, NOW)
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}
    assert state.world_size == 3


def test_intents_beyond_max_go_to_the_redundancy_list() -> None:
    batch = [intent(n) for n in (A, B, C, D)]
    state = admit(RendezvousState(), batch, 4, SETTINGS, NOW)
    assert set(state.participants) == {A, B, C}
    assert state.redundancy_list == {D}


def test_an_intent_into_a_complete_round_with_room_waits() -> None:
    state = admit(joined(A, B, complete=True), [intent(C)], 5, SETTINGS, NOW)
    assert state.wait_list == {C}
    assert state.participants == {A: 0, B: 1}


def test_a_waiting_node_becomes_a_participant_of_the_next_round() -> None:
    waiting = admit(joined(A, B, complete=True), [intent(C)], 1, SETTINGS, NOW)
    next_round = RendezvousState(
        round=1, wait_list=waiting.wait_list, last_heartbeats={C: NOW}, intent_cursor=1
    )
    state = admit(next_round, [intent(C)], 2, SETTINGS, NOW)
    assert C in state.participants
    assert not state.wait_list


def test_a_participants_own_intent_changes_nothing_but_the_cursor() -> None:
    state = joined(A, B)
    admitted = admit(state, [intent(A)], 9, SETTINGS, NOW + 1)
    assert admitted.participants == state.participants
    assert admitted.last_heartbeats == state.last_heartbeats
    assert admitted.intent_cursor == 9


def test_an_intent_older_than_the_heartbeat_expiry_is_skipped() -> None:
    stale = intent(A, posted=NOW - SETTINGS.heartbeat_expiry - 1)
    state = admit(RendezvousState(), [stale, intent(B)], 2, SETTINGS, NOW)
    assert set(state.participants) == {B}


def test_a_closed_rendezvous_admits_no_one() -> None:
    closed = RendezvousState(closed=True)
    state = admit(closed, [intent(A)], 1, SETTINGS, NOW)
    assert not state.participants
    assert state.intent_cursor == 1


def test_nothing_to_admit_returns_the_same_state() -> None:
    state = joined(A)
    assert admit(state, [], state.intent_cursor, SETTINGS, NOW) is state


def test_the_cursor_never_moves_back() -> None:
    with pytest.raises(ValueError, match="cannot move back"):
        admit(RendezvousState(intent_cursor=5), [], 4, SETTINGS, NOW)


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


_LEAVE = {
    "participant": Action.REMOVE_FROM_PARTICIPANTS,
    "waiting": Action.REMOVE_FROM_WAIT_LIST,
    "redundant": Action.REMOVE_FROM_REDUNDANCY_LIST,
}


def _one_by_one(
    state: RendezvousState, moves_: list[tuple[NodeDesc, str]], leaving: int
) -> RendezvousState:
    """What the records do one after the other, each node writing for itself (torch's way):
    a node that withdraws leaves whichever list holds it; a leaver exits first; a waiting
    node joins as soon as the round is incomplete."""

    def waiting_join(state: RendezvousState) -> RendezvousState:
        for node in sorted(state.wait_list):
            if decide_join(state, node, SETTINGS, NOW, math.inf) is Action.ADD_TO_PARTICIPANTS:
                state = apply_action(state, Action.ADD_TO_PARTICIPANTS, node, SETTINGS, NOW)
        return state

    def leave(state: RendezvousState, node: NodeDesc) -> RendezvousState:
        was_complete = state.complete
        role = state.role_of(node)
        state = apply_action(state, _LEAVE[role], node, SETTINGS, NOW) if role else state
        if was_complete and not state.complete:
            state = waiting_join(state)
        return state

    # Withdrawals first (concurrent with the joins, so a legal order); a node's
    # intents before its last withdrawal are void.
    last_withdrawal = {node: i for i, (node, kind) in enumerate(moves_) if kind == "withdraw"}
    if not state.closed:
        for node in last_withdrawal:
            state = leave(state, node)
    if not state.closed and not state.complete:
        state = waiting_join(state)
    for i, (node, kind) in enumerate(moves_):
        if state.closed:
            break
        if kind == "withdraw" or i < last_withdrawal.get(node, -1):
            continue
        rejoining = kind == "rejoin" and state.round == leaving and state.complete
        if rejoining and node in state.participants:
            state = leave(state, node)
        action = decide_join(state, node, SETTINGS, NOW, math.inf)
        if action in (
            Action.ADD_TO_PARTICIPANTS,
            Action.ADD_TO_WAIT_LIST,
            Action.ADD_TO_REDUNDANCY_LIST,
        ):
            state = apply_action(state, action, node, SETTINGS, NOW)
    return state


def _record(node: NodeDesc, kind: str, leaving: int) -> LogRecord:
    if kind == "withdraw":
        return Withdrawal(node, NOW)
    return JoinIntent(node, NOW, leaving if kind == "rejoin" else None)


@settings(max_examples=400)
@given(
    st.lists(
        st.tuples(st.sampled_from(NODES), st.sampled_from(["join", "rejoin", "withdraw"])),
        max_size=10,
    ),
    st.sampled_from(sorted(_STARTS)),
)
def test_a_batch_admits_what_the_same_joins_and_withdrawals_one_by_one_would(
    moves_: list[tuple[NodeDesc, str]], start: str
) -> None:
    initial = _STARTS[start]
    batch = [_record(n, kind, initial.round) for n, kind in moves_]
    assert admit(initial, batch, 0, SETTINGS, NOW) == _one_by_one(initial, moves_, initial.round)


def test_the_survivors_of_a_round_re_form_in_one_batch() -> None:
    old = joined(A, B, C)
    batch = [JoinIntent(n, NOW, old.round) for n in (A, B, C)]
    state = admit(old, batch, 3, SETTINGS, NOW)
    assert state.round == old.round + 1
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}


def test_leavers_wait_until_the_last_one_leaves_then_the_waiting_join_first() -> None:
    old = joined(A, B, C)
    first = admit(old, [JoinIntent(C, NOW, old.round)], 1, SETTINGS, NOW)
    assert first.round == old.round
    assert first.wait_list == {C}
    second = admit(first, [JoinIntent(n, NOW, old.round) for n in (A, B)], 3, SETTINGS, NOW)
    assert second.round == old.round + 1
    assert second.complete
    assert set(second.participants) == {A, B, C}


def test_a_leave_for_a_round_that_is_over_is_a_plain_join() -> None:
    state = admit(joined(A, B), [JoinIntent(C, NOW, 7)], 1, SETTINGS, NOW)
    assert state.complete
    assert state.participants == {A: 0, B: 1, C: 2}
    assert state.round == 0


def test_an_admission_is_held_while_the_round_cannot_reach_min_nodes() -> None:
    # min_nodes is 2: one pending node alone changes no decision.
    assert should_hold(RendezvousState(), [intent(A)], SETTINGS, NOW)
    assert should_hold(RendezvousState(), [intent(A), intent(A)], SETTINGS, NOW)
    assert should_hold(RendezvousState(), [intent(A), intent(B, NOW - 100)], SETTINGS, NOW)
    assert should_hold(RendezvousState(), [intent(A), intent(B), Withdrawal(B, NOW)], SETTINGS, NOW)
    assert not should_hold(RendezvousState(), [intent(A), intent(B)], SETTINGS, NOW)
    assert not should_hold(joined(A), [intent(B)], SETTINGS, NOW)
    # A waiting node of an incomplete round joins with the fold, intent or not.
    assert not should_hold(_STARTS["next-round-with-waiting"], [intent(D)], SETTINGS, NOW)
    # Into a complete round (the wait list) or a closed one: never held.
    assert not should_hold(joined(A, B, complete=True), [intent(C)], SETTINGS, NOW)
    assert not should_hold(RendezvousState(closed=True), [intent(A)], SETTINGS, NOW)


def test_survivors_leaving_a_round_that_lost_a_node_are_held_until_the_last_leaves() -> None:
    old = joined(A, B, C)
    lost = apply_action(old, Action.REMOVE_FROM_PARTICIPANTS, C, SETTINGS, NOW)  # C died
    leave = [JoinIntent(A, NOW, old.round)]
    assert should_hold(lost, leave, SETTINGS, NOW)  # B has not left yet: A only waits
    assert not should_hold(lost, [*leave, JoinIntent(B, NOW, old.round)], SETTINGS, NOW)
    assert not should_hold(lost, [*leave, intent(D)], SETTINGS, NOW)  # a newcomer: at once
    # When the others have no reason to rejoin, the leaver in the wait list is how
    # they learn it (found by the simulator, seed 64: held, it waited for ever).
    assert not should_hold(old, leave, SETTINGS, NOW)


def test_a_waiting_node_moves_only_once_its_round_is_over() -> None:
    waiting = _STARTS["complete-with-waiting"]
    assert not moves(waiting, intent(C))
    assert moves(_STARTS["next-round-with-waiting"], intent(C))
    assert not moves(waiting, intent(A))
    assert moves(waiting, JoinIntent(A, NOW, waiting.round))


def test_a_withdrawal_survives_encoding_and_older_readers_skip_it() -> None:
    original = Withdrawal(NodeDesc("host.example.com", 4242, 7), 1_795_000_000.125)
    assert decode_records([encode_record(original)]) == ([original], 0)
    assert encode_record(original).endswith(b',"withdrawn"]\n')


def test_a_withdrawal_voids_the_intents_of_its_node_before_it() -> None:
    state = admit(RendezvousState(), [intent(A), intent(B), Withdrawal(A, NOW)], 3, SETTINGS, NOW)
    assert set(state.participants) == {B}
    assert state.intent_cursor == 3


def test_an_intent_after_a_withdrawal_counts_again() -> None:
    state = admit(RendezvousState(), [Withdrawal(A, NOW), intent(A), intent(B)], 3, SETTINGS, NOW)
    assert set(state.participants) == {A, B}


def test_a_withdrawal_takes_a_participant_out_of_a_complete_round() -> None:
    state = admit(joined(A, B, C), [Withdrawal(B, NOW)], 1, SETTINGS, NOW)
    assert set(state.participants) == {A, C}
    assert state.world_size == 3
    assert B not in state.last_heartbeats


def test_withdrawals_all_leave_before_the_next_round_takes_in_the_wait_list() -> None:
    """Simulator seed 30268: the last participant's withdrawal started the next round,
    which took in a waiting node whose own withdrawal came later in the batch; that
    node then left the round just completed, leaving a gap in its ranks."""
    state = admit(joined(A, B, complete=True), [intent(D), intent(E), intent(F)], 3, SETTINGS, NOW)
    assert (set(state.participants), state.wait_list) == ({A, B}, {D, E, F})
    # One by one, B's leave would start round 1 with D, E and F, complete at max_nodes,
    # and D's leave would then take rank 0 out of it.
    state = admit(
        state, [Withdrawal(A, NOW), Withdrawal(B, NOW), Withdrawal(D, NOW)], 6, SETTINGS, NOW
    )
    assert (state.round, set(state.participants), state.complete) == (1, {E, F}, False)
    assert D not in state.last_heartbeats


def test_a_withdrawal_of_a_stranger_changes_nothing_but_the_cursor() -> None:
    state = joined(A)
    assert admit(state, [Withdrawal(D, NOW)], 7, SETTINGS, NOW) == attrs.evolve(
        state, intent_cursor=7
    )


def test_an_admitted_node_beats_when_it_posted_not_when_it_was_admitted() -> None:
    """A node that died after posting expires when it would have, not an expiry later."""
    state = admit(RendezvousState(), [intent(A, NOW - 10)], 1, SETTINGS, NOW)
    assert state.last_heartbeats[A] == NOW - 10


def test_leaving_needs_a_write_only_while_something_could_still_place_the_node() -> None:
    assert needs_fence(joined(A), [], A)
    assert needs_fence(RendezvousState(), [intent(A), Withdrawal(A, NOW)], A)
    assert not needs_fence(RendezvousState(), [intent(B), Withdrawal(A, NOW)], A)
    assert not needs_fence(RendezvousState(), [], A)
    assert not needs_fence(RendezvousState(closed=True), [intent(A)], A)


def test_the_steward_is_the_smallest_node_waiting_in_its_own_join() -> None:
    assert steward(RendezvousState()) is None
    assert steward(joined(B, A)) == A
    complete = joined(A, B, C)
    assert steward(complete) is None  # its participants train
    assert steward(complete, rejoining=True) == A  # unless they re-form
    assert steward(_STARTS["complete-with-waiting"]) == C
    assert steward(_STARTS["closed"]) is None


def test_a_log_position_names_its_segment() -> None:
    assert segment_of(0) == 0
    assert segment_of(LOG_SEGMENT_SPAN - 1) == 0
    assert segment_of(3 * LOG_SEGMENT_SPAN + 17) == 3


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


@settings(max_examples=400)
@given(
    st.lists(
        st.tuples(st.sampled_from(NODES), st.sampled_from(["join", "rejoin", "withdraw"])),
        min_size=1,
        max_size=10,
    ),
    st.sampled_from(sorted(_STARTS)),
    st.data(),
)
def test_a_record_posted_twice_is_admitted_as_if_posted_once(
    moves_: list[tuple[NodeDesc, str]], start: str, data: st.DataObject
) -> None:
    # A post retried on another etcd member may have been applied on the first too. The
    # node posts nothing else before its retry ends, so the copy lands before its next
    # record, in the same admission or in a later one. Only a participant of a complete
    # round posts an intent to leave it.
    initial = _STARTS[start]
    assume(
        all(
            kind != "rejoin" or (initial.complete and node in initial.participants)
            for node, kind in moves_
        )
    )
    batch = [_record(n, kind, initial.round) for n, kind in moves_]
    i = data.draw(st.integers(0, len(batch) - 1))
    node = moves_[i][0]
    following = [k for k in range(i + 1, len(batch)) if moves_[k][0] == node]
    j = data.draw(st.integers(i + 1, following[0] if following else len(batch)))
    doubled = [*batch[:j], batch[i], *batch[j:]]
    once = admit(initial, batch, len(batch), SETTINGS, NOW)
    twice = admit(initial, doubled, len(doubled), SETTINGS, NOW)
    assert attrs.evolve(twice, intent_cursor=0) == attrs.evolve(once, intent_cursor=0)
    split = data.draw(st.integers(i + 1, j))  # the copy is in the second admission
    first = admit(initial, batch[:split], split, SETTINGS, NOW)
    once_split = admit(first, batch[split:], len(batch), SETTINGS, NOW)
    twice_split = admit(first, doubled[split:], len(doubled), SETTINGS, NOW)
    assert attrs.evolve(twice_split, intent_cursor=0) == attrs.evolve(once_split, intent_cursor=0)
