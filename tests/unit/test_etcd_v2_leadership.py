"""When a v2 write waiting on a member is given up as dropped with a leader that is gone.

The real cluster shows the race in ``tests/integration/test_etcd_failover.py``;
these pin the decision and the parsing of etcd's ``leaderInfo.uptime``.
"""

from __future__ import annotations

import pytest

from rdzv.etcd.v2_client import Leadership, go_duration, write_lost

OLD = Leadership("StateFollower", "aaaa", 120.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("1.044786609s", 1.044786609),
        ("250ms", 0.25),
        ("12.5µs", 12.5e-6),
        ("3us", 3e-6),
        ("40ns", 40e-9),
        ("2m3.5s", 123.5),
        ("1h0m0s", 3600.0),
        ("2562047h47m16.854775807s", 2562047 * 3600 + 47 * 60 + 16.854775807),
        ("-1.5s", -1.5),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1.5", "1x", "1s garbage", "1s2", " 1s"])
def test_what_is_not_a_go_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        go_duration(text)


def test_a_write_waiting_on_a_member_whose_leader_stays_is_kept() -> None:
    assert not write_lost(OLD, OLD._replace(uptime=121.0), 1.0)


def test_a_leader_taken_after_the_write_was_sent_gives_it_up_even_when_seen_first() -> None:
    # The election ended between the write's arrival and its first check: the first
    # answer already names the new leader, which has led for less than the write waited.
    new = Leadership("StateFollower", "bbbb", 0.2)
    assert write_lost(new, new, 0.5)


def test_a_leader_that_changes_while_the_write_waits_gives_it_up() -> None:
    assert write_lost(OLD, Leadership("StateLeader", "bbbb", 30.0), 1.0)


@pytest.mark.parametrize(
    "seen",
    [Leadership("StateCandidate", "aaaa", 120.0), Leadership("StateFollower", "0", 120.0)],
)
def test_a_member_without_a_leader_gives_the_write_up(seen: Leadership) -> None:
    assert write_lost(OLD, seen, 1.0)
