"""When a node's heartbeats are due (rdzv.core.pacing.beat_due), whoever sends them, and
how late it judges the others' (heartbeat_lag)."""

from __future__ import annotations

from rdzv.core.pacing import beat_due, heartbeat_lag

EXPIRY, INTERVAL = 3.0, 1.0


def test_outside_a_join_a_beat_is_due_an_interval_after_the_last() -> None:
    assert beat_due(100.0, None, True, EXPIRY, INTERVAL) == 101.0
    assert beat_due(None, None, False, EXPIRY, INTERVAL) is None  # nothing to keep alive


def test_a_joining_member_beats_once_late_halfway_from_due_to_expired() -> None:
    """Every interval, the survivors of a failure on etcd-v2 beat twice as often while they
    re-formed, and re-formed later."""
    assert beat_due(100.0, 99.0, True, EXPIRY, INTERVAL) == 102.0


def test_a_joining_node_not_yet_in_the_state_beats_when_it_would_post_its_intent_again() -> None:
    """From an interval after its join started, the 4,096 nodes of a first round on c10d
    beat 2.9 times each instead of 0.7, and the round took 34 s instead of 10."""
    assert beat_due(None, 50.0, False, EXPIRY, INTERVAL) == 52.0
    # An evicted node's own beats from before do not bring it sooner.
    assert beat_due(40.0, 50.0, False, EXPIRY, INTERVAL) == 52.0


def test_a_lag_under_one_interval_does_not_move_the_judgment_of_heartbeats() -> None:
    assert heartbeat_lag(0.4, interval=1.0) == 0.0
    assert heartbeat_lag(1.0, interval=1.0) == 1.0
    assert heartbeat_lag(8.0, interval=1.0) == 8.0
