"""The records of the core: validation of settings and timeouts, node order, immutability."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState, RendezvousTimeout

A = NodeDesc("a", 1, 0)
B = NodeDesc("b", 1, 0)


# --- RendezvousTimeout ---------------------------------------------------------------------


def test_timeout_defaults_are_torchs() -> None:
    timeout = RendezvousTimeout()
    assert timeout.join == timedelta(seconds=600)
    assert timeout.last_call == timedelta(seconds=30)
    assert timeout.close == timedelta(seconds=30)
    assert timeout.heartbeat == timedelta(seconds=5)


def test_timeout_none_selects_the_default() -> None:
    timeout = RendezvousTimeout(join=None, last_call=None, close=None, heartbeat=None)
    assert timeout == RendezvousTimeout()


def test_timeout_accepts_numbers_of_seconds_and_timedeltas() -> None:
    timeout = RendezvousTimeout(join=12, last_call=1.5, close=timedelta(minutes=1), heartbeat=2)
    assert timeout.join == timedelta(seconds=12)
    assert timeout.last_call == timedelta(seconds=1.5)
    assert timeout.close == timedelta(seconds=60)
    assert timeout.heartbeat == timedelta(seconds=2)


@pytest.mark.parametrize("field", ["join", "last_call", "close", "heartbeat"])
@pytest.mark.parametrize("value", [0, -1, timedelta(0), timedelta(seconds=-3)])
def test_timeout_rejects_a_non_positive_value_and_names_it(field: str, value: object) -> None:
    shown = str(value if isinstance(value, timedelta) else timedelta(seconds=value))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"The {field} timeout \({shown}\) must be positive"):
        RendezvousTimeout(**{field: value})


@pytest.mark.parametrize("value", ["10", True, [1], object()])
def test_timeout_rejects_a_value_that_is_not_a_duration_and_names_it(value: object) -> None:
    with pytest.raises(TypeError, match="timedelta or a number of seconds") as info:
        RendezvousTimeout(join=value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


# --- RendezvousSettings --------------------------------------------------------------------


def test_settings_defaults_and_heartbeat_expiry() -> None:
    settings = RendezvousSettings("run", 1, 2)
    assert settings.timeout == RendezvousTimeout()
    assert settings.keep_alive_interval == timedelta(seconds=5)
    assert settings.keep_alive_max_attempt == 3
    assert settings.heartbeat_expiry == 15.0


def test_settings_heartbeat_expiry_is_interval_times_attempts() -> None:
    settings = RendezvousSettings(
        "run", 1, 2, keep_alive_interval=timedelta(seconds=0.5), keep_alive_max_attempt=4
    )
    assert settings.heartbeat_expiry == 2.0


def test_settings_accept_min_equal_to_max() -> None:
    assert RendezvousSettings("run", 3, 3).max_nodes == 3


def test_settings_reject_an_empty_run_id() -> None:
    with pytest.raises(ValueError, match="run id must be a non-empty string"):
        RendezvousSettings("", 1, 2)


@pytest.mark.parametrize("min_nodes", [0, -2])
def test_settings_reject_min_nodes_below_one_and_name_it(min_nodes: int) -> None:
    with pytest.raises(ValueError, match=rf"minimum number of nodes \({min_nodes}\)"):
        RendezvousSettings("run", min_nodes, 4)


def test_settings_reject_max_nodes_below_min_nodes_and_name_both() -> None:
    with pytest.raises(ValueError, match=r"maximum number of nodes \(2\).*minimum.*\(3\)"):
        RendezvousSettings("run", 3, 2)


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(seconds=-1)])
def test_settings_reject_a_non_positive_keep_alive_interval_and_name_it(
    interval: timedelta,
) -> None:
    with pytest.raises(ValueError, match=rf"keep-alive interval \({interval}\) must be positive"):
        RendezvousSettings("run", 1, 2, keep_alive_interval=interval)


@pytest.mark.parametrize("attempts", [0, -1])
def test_settings_reject_fewer_than_one_keep_alive_attempt_and_name_it(attempts: int) -> None:
    with pytest.raises(ValueError, match=rf"keep-alive max attempt \({attempts}\)"):
        RendezvousSettings("run", 1, 2, keep_alive_max_attempt=attempts)


def test_settings_are_frozen() -> None:
    settings = RendezvousSettings("run", 1, 2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.min_nodes = 5  # type: ignore[misc]


# --- NodeDesc ------------------------------------------------------------------------------


def test_node_str_is_addr_pid_local_id() -> None:
    assert str(NodeDesc("node-7.example.com", 4242, 3)) == "node-7.example.com_4242_3"


def test_nodes_sort_by_addr_then_pid_then_local_id() -> None:
    nodes = [
        NodeDesc("b", 1, 0),
        NodeDesc("a", 10, 0),
        NodeDesc("a", 9, 1),
        NodeDesc("a", 9, 0),
    ]
    assert sorted(nodes) == [
        NodeDesc("a", 9, 0),
        NodeDesc("a", 9, 1),
        NodeDesc("a", 10, 0),  # pids compare as numbers, not as text
        NodeDesc("b", 1, 0),
    ]


def test_nodes_are_equal_and_hash_equal_by_value() -> None:
    assert NodeDesc("a", 1, 0) == NodeDesc("a", 1, 0)
    assert len({NodeDesc("a", 1, 0), NodeDesc("a", 1, 0), NodeDesc("a", 1, 1)}) == 2


def test_nodes_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        A.pid = 2  # type: ignore[misc]


# --- RendezvousState -----------------------------------------------------------------------


def test_initial_state_is_an_empty_incomplete_round_zero() -> None:
    state = RendezvousState()
    assert state.round == 0
    assert not state.complete
    assert not state.closed
    assert state.deadline is None
    assert dict(state.participants) == {}
    assert state.wait_list == frozenset()
    assert state.redundancy_list == frozenset()
    assert dict(state.last_heartbeats) == {}
    assert state.world_size == 0


@pytest.mark.parametrize("field", ["round", "complete", "closed", "participants", "world_size"])
def test_state_fields_cannot_be_assigned(field: str) -> None:
    state = RendezvousState()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(state, field, getattr(state, field))


def test_state_mappings_are_read_only() -> None:
    state = RendezvousState(participants={A: 0}, last_heartbeats={A: 1.0})
    with pytest.raises(TypeError):
        state.participants[B] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        state.last_heartbeats[A] = 2.0  # type: ignore[index]
    with pytest.raises(TypeError):
        del state.participants[A]  # type: ignore[attr-defined]


def test_state_does_not_share_the_callers_dicts_and_sets() -> None:
    participants = {A: 0}
    heartbeats = {A: 1.0}
    waiting = {B}
    state = RendezvousState(
        participants=participants, wait_list=waiting, last_heartbeats=heartbeats
    )
    participants[B] = 1
    heartbeats[B] = 2.0
    waiting.add(A)
    assert dict(state.participants) == {A: 0}
    assert dict(state.last_heartbeats) == {A: 1.0}
    assert state.wait_list == frozenset({B})


def test_state_lists_are_frozensets() -> None:
    state = RendezvousState(wait_list=[A], redundancy_list=(B,))  # type: ignore[arg-type]
    assert isinstance(state.wait_list, frozenset)
    assert isinstance(state.redundancy_list, frozenset)


def test_states_with_equal_values_are_equal() -> None:
    one = RendezvousState(round=2, participants={A: 0, B: 1}, last_heartbeats={A: 1.0, B: 1.0})
    two = RendezvousState(round=2, participants={B: 1, A: 0}, last_heartbeats={B: 1.0, A: 1.0})
    assert one == two
    assert one != attrs.evolve(two, round=3)


def test_members_and_role_of_name_every_node_by_its_list() -> None:
    c, d = NodeDesc("c", 1, 0), NodeDesc("d", 1, 0)
    state = RendezvousState(
        participants={A: 0}, wait_list={B}, redundancy_list={c}, last_heartbeats={}
    )
    assert state.members() == frozenset({A, B, c})
    assert state.role_of(A) == "participant"
    assert state.role_of(B) == "waiting"
    assert state.role_of(c) == "redundant"
    assert state.role_of(d) is None


def test_oldest_heartbeat_is_the_earliest_heartbeat_or_none() -> None:
    assert RendezvousState().oldest_heartbeat is None
    state = RendezvousState(participants={A: 0}, wait_list={B}, last_heartbeats={A: 7.5, B: 3.0})
    assert state.oldest_heartbeat == 3.0


def test_oldest_heartbeat_follows_every_new_state() -> None:
    # dead_nodes trusts it to skip the scan: a stale value would hide dead nodes.
    state = RendezvousState(participants={A: 0}, last_heartbeats={A: 3.0})
    assert attrs.evolve(state, last_heartbeats={A: 9.0}).oldest_heartbeat == 9.0
    assert attrs.evolve(state, last_heartbeats={}).oldest_heartbeat is None


def test_oldest_heartbeat_is_derived_and_not_part_of_equality() -> None:
    state = RendezvousState(participants={A: 0}, last_heartbeats={A: 3.0})
    assert "oldest_heartbeat" not in repr(state)
    assert state == RendezvousState(participants={A: 0}, last_heartbeats={A: 3.0})
    with pytest.raises(TypeError):
        RendezvousState(oldest_heartbeat=1.0)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (NodeDesc("a", 9, 0), NodeDesc("a", 9, 1)),
        (NodeDesc("a", 9, 5), NodeDesc("a", 10, 0)),
        (NodeDesc("a", 99, 9), NodeDesc("b", 1, 0)),
    ],
)
def test_every_comparison_agrees_with_the_tuple_order(left: NodeDesc, right: NodeDesc) -> None:
    assert left < right and left <= right and right > left and right >= left
    assert not (right < left or right <= left or left > right or left >= right)
    assert left <= NodeDesc(left.addr, left.pid, left.local_id) >= left


def test_a_node_does_not_compare_with_another_type() -> None:
    with pytest.raises(TypeError):
        _ = NodeDesc("a", 1, 0) < ("a", 1, 0)  # type: ignore[operator]
