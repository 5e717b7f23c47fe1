"""The watcher's record of the last complete round: which nodes of it are gone, and how."""

from __future__ import annotations

from rdzv.core import NodeDesc
from rdzv.core.events import NodeDeclaredDead, NodeJoined, NodeLeft, RoundCompleted
from rdzv.watching.records import LastRound

A = NodeDesc("alpha", 9, 0)
B = NodeDesc("alpha", 10, 0)
ROUND_0 = RoundCompleted(1.0, 0, 2, ((0, A), (1, B)))


def test_nothing_seen_is_no_round() -> None:
    assert LastRound().after(()) == LastRound()


def test_a_completion_is_remembered() -> None:
    assert LastRound().after([ROUND_0]) == LastRound(ROUND_0, {})


def test_a_node_of_the_round_that_goes_is_remembered_with_how_it_went() -> None:
    dead = NodeDeclaredDead(2.0, 0, B, "participant", 1.0)
    assert LastRound().after([ROUND_0, dead]).gone == {B: dead}


def test_a_node_that_joins_again_is_no_longer_gone() -> None:
    left = NodeLeft(2.0, 0, B, "participant", 1.0)
    back = NodeJoined(3.0, 0, B, "waiting")
    assert LastRound().after([ROUND_0, left]).after([back]).gone == {}


def test_the_next_completion_forgets_who_went_from_the_last() -> None:
    left = NodeLeft(2.0, 0, B, "participant", 1.0)
    round_1 = RoundCompleted(3.0, 1, 1, ((0, A),))
    assert LastRound().after([ROUND_0, left, round_1]) == LastRound(round_1, {})


def test_a_record_is_not_changed_by_what_follows() -> None:
    before = LastRound().after([ROUND_0])
    before.after([NodeLeft(2.0, 0, B, "participant", 1.0)])
    assert before.gone == {}
