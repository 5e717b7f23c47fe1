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
