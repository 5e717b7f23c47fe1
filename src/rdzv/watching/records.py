"""What a watcher yields besides the core's events: snapshots, and changes of its own status.

A :class:`Snapshot` is the whole picture at one moment (the state with the
heartbeats read from the board, the pending joins, the last complete round and
who is missing from it); a :class:`WatchStatus` says that the watcher can read a
state again, or why it cannot. Both are frozen records; :func:`item_to_json`
gives the one-line JSON form that ``rdzv status --watch --json`` writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs

from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.event_json import EVENT_FORMAT, event_to_json
from rdzv.core.events import Event, NodeDeclaredDead, NodeJoined, NodeLeft, RoundCompleted
from rdzv.core.intents import JoinIntent

__all__ = ["Gone", "LastRound", "Snapshot", "Status", "WatchItem", "WatchStatus", "item_to_json"]

Status: TypeAlias = Literal["ok", "no_state", "corrupt", "unreachable"]
"""What the last read found: a state, none, a value that does not decode, no backend."""

Gone: TypeAlias = NodeLeft | NodeDeclaredDead


@attrs.frozen
class WatchStatus:
    """The watcher's status changed: ``ok`` again, or why it cannot show a state.

    ``message`` says what happened and what to do (``None`` for ``ok``).
    """

    at: float
    status: Status
    message: str | None = None


def _frozen(value: Mapping[NodeDesc, Gone]) -> Mapping[NodeDesc, Gone]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Snapshot:
    """The rendezvous as the watcher saw it at ``at``.

    Attributes:
        at: when (the watcher's clock, seconds since the epoch).
        run_id: the run watched.
        where: the backend, endpoint and key.
        settings: the keep-alive settings that decide when a node counts as dead.
        status: what the last read found; ``state`` is that of the last good read.
        message: what happened and what to do, unless ``status`` is ``ok``.
        state: the last state read, with each member's newest heartbeat from the board.
        pending: join intents no state has admitted yet.
        last_complete: the completion of the last complete round seen.
        gone: how each node of that round that is no longer in the state went.
    """

    at: float
    run_id: str
    where: str
    settings: RendezvousSettings
    status: Status
    message: str | None = None
    state: RendezvousState | None = None
    pending: tuple[JoinIntent, ...] = ()
    last_complete: RoundCompleted | None = None
    gone: Mapping[NodeDesc, Gone] = attrs.field(factory=dict, converter=_frozen)

    @property
    def missing(self) -> tuple[tuple[int, NodeDesc], ...]:
        """``(rank, node)`` of the last complete round whose node the state no longer has."""
        if self.last_complete is None:
            return ()
        members = frozenset() if self.state is None else self.state.members()
        return tuple((rank, node) for rank, node in self.last_complete.ranks if node not in members)


@attrs.frozen
class LastRound:
    """The last complete round seen, and how each of its nodes that is gone went.

    Pure bookkeeping over the events a watcher derives: :meth:`after` returns the
    record the events lead to.
    """

    completed: RoundCompleted | None = None
    gone: Mapping[NodeDesc, Gone] = attrs.field(factory=dict, converter=_frozen)

    def after(self, events: Iterable[Event]) -> LastRound:
        """This record once ``events`` happened, in order."""
        completed, gone = self.completed, dict(self.gone)
        for event in events:
            if isinstance(event, RoundCompleted):
                completed, gone = event, {}
            elif isinstance(event, NodeJoined):
                gone.pop(event.node, None)
            elif isinstance(event, NodeLeft | NodeDeclaredDead):
                gone[event.node] = event
        return LastRound(completed, gone)


WatchItem: TypeAlias = Event | WatchStatus | Snapshot
"""What :func:`rdzv.watch` yields."""


def item_to_json(item: Event | WatchStatus) -> dict[str, Any]:
    """The JSON object of an event or a status change (format of :mod:`rdzv.core.event_json`).

    A status change is ``{"format": 1, "type": "watch_status", "at", "status",
    "message"}``.
    """
    if isinstance(item, WatchStatus):
        return {
            "format": EVENT_FORMAT,
            "type": "watch_status",
            "at": item.at,
            "status": item.status,
            "message": item.message,
        }
    return event_to_json(item)
