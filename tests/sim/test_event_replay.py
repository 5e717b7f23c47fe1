"""The simulator replays the events of every run (rdzv.sim.replay); the check can fail."""

from __future__ import annotations

import pytest

from rdzv.core import events
from rdzv.sim import Faults, Scenario, World, replay


def _killed_job() -> Scenario:
    """Eight nodes form a round; node 3 crashes; the seven re-form without it."""
    return Scenario(
        nodes=8,
        min_nodes=7,
        max_nodes=8,
        last_call=0.2,
        faults=Faults(until=10.0, crashes=((3, 4.0),)),
    )


def test_the_events_of_a_run_with_a_crash_replay_to_every_state() -> None:
    world = World(_killed_job(), seed=5)
    result = world.run()
    assert not result.violations, result.trace
    assert world.checker.replay.events >= 8 + 1 + 7  # joins, the death, the re-formed round
    assert world.checker.replay.declared_dead == 1


def test_the_replay_check_sees_an_event_that_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    def without_departures(before, after, **kw):  # type: ignore[no-untyped-def]
        found = events.events_between(before, after, **kw)
        gone = (events.NodeDeclaredDead, events.NodeLeft)
        return tuple(e for e in found if not isinstance(e, gone))

    monkeypatch.setattr(replay, "events_between", without_departures)
    result = World(_killed_job(), seed=5).run()
    assert any("replaying the events" in v for v in result.violations)
