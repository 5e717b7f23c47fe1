"""What a node remembers between operations (:class:`rdzv.dynamic.perform.Memory`)."""

from __future__ import annotations

from rdzv.core import NodeDesc
from rdzv.core.effects import BeatsRead, ReadBeats
from rdzv.dynamic.perform import Memory

A = NodeDesc("a", 1, 0)
B = NodeDesc("b", 2, 0)


def test_a_board_reading_is_dated_when_it_was_asked_for_not_when_it_was_handled() -> None:
    """The records were read at some moment between the request and its handling: only
    the request's time is sure. Dated at handling, a reading that waited 0.7 s for a
    core on a loaded host made nodes whose heartbeats were under the expiry look
    dead: in the simulator, the watcher of 1,024 nodes on two cores dropped 140 live
    ones at once."""
    memory = Memory()
    memory.update(A, ReadBeats((B,), at=100.0), BeatsRead({B: 96.5}))
    assert memory.checked[B] == 100.0
    assert memory.observed[B] == 96.5


def test_the_lag_is_the_longest_request_that_ended_within_the_window() -> None:
    memory = Memory()
    memory.took(10.0, 8.0)  # a request that waited out an 8 s stall
    memory.took(11.0, 0.3)
    assert memory.lag(12.0, window=3.0) == 8.0
    assert memory.lag(13.5, window=3.0) == 0.3  # the stall ended more than 3 s ago
    assert memory.lag(20.0, window=3.0) == 0.0


def test_requests_of_a_healthy_backend_leave_no_lag() -> None:
    memory = Memory()
    for i in range(1000):
        memory.took(100.0 + i / 100, 0.002)  # loopback: milliseconds
    assert memory.lag(110.0, window=3.0) == 0.0
