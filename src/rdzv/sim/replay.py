"""The events of a run, replayed: they must lead from each written state to the next.

After every write of a simulated run, :class:`EventReplay` derives the events
between the previous state and the new one (:func:`rdzv.core.events.events_between`),
sends each through its JSON form and back, applies them to the membership it
replayed so far, and compares the result with the new state's membership. A
watcher that reads every state thus reproduces the run from its events alone.
"""

from __future__ import annotations

from rdzv.core import RendezvousState
from rdzv.core.event_json import event_from_json, event_to_json
from rdzv.core.events import EMPTY, NodeDeclaredDead, events_between, membership_of, replay

__all__ = ["EventReplay"]


class EventReplay:
    """Replays the events of successive states; :meth:`written` says what went wrong."""

    def __init__(self, expiry: float, epoch: float = 0.0) -> None:
        self._expiry = expiry
        self._epoch = epoch
        self._last: RendezvousState | None = None
        self._view = EMPTY
        self.events = 0
        self.declared_dead = 0

    def written(self, state: RendezvousState, at: float) -> str | None:
        """Derive and replay the events up to ``state``, written at ``at`` (simulated time);
        a violation, or ``None``."""
        events = events_between(self._last, state, at=self._epoch + at, expiry=self._expiry)
        self._last = state
        self.events += len(events)
        self.declared_dead += sum(isinstance(e, NodeDeclaredDead) for e in events)
        for event in events:
            if event_from_json(event_to_json(event)) != event:
                return f"the event {event} does not survive its JSON form"
        self._view = replay(self._view, events)
        expected = membership_of(state)
        if self._view == expected:
            return None
        replayed, self._view = self._view, expected
        return (
            f"replaying the events {events} gave {replayed}, "
            f"but round {state.round} was written as {expected}"
        )
