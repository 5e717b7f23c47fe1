"""Rendezvous events as JSON objects, and back: versioned and validated, never eval'd.

One event is one flat JSON object (``rdzv status --watch --json`` writes one per
line)::

    {"format": 1, "type": "node_joined", "at": 1700000000.25, "round": 2,
     "node": "10.0.0.7_4242_0", "role": "participant", "previous": "waiting"}

``format`` changes only when a field changes meaning or goes away; fields may be
added. A node is written ``addr_pid_localid``, as rdzv names nodes everywhere.
Decoding checks every field and raises :class:`~rdzv.api.RendezvousEventError`
saying which is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, cast

from rdzv.api import RendezvousEventError
from rdzv.core.events import (
    Event,
    NodeDeclaredDead,
    NodeJoined,
    NodeLeft,
    RendezvousClosed,
    Role,
    RoundAbandoned,
    RoundCompleted,
    RoundStarted,
    StateReset,
)
from rdzv.core.model import NodeDesc

__all__ = ["EVENT_FORMAT", "EVENT_TYPES", "event_from_json", "event_to_json", "parse_node"]

EVENT_FORMAT = 1
"""Version of the JSON form of an event."""

EVENT_TYPES: dict[str, type[Event]] = {
    "node_joined": NodeJoined,
    "node_left": NodeLeft,
    "node_declared_dead": NodeDeclaredDead,
    "round_completed": RoundCompleted,
    "round_abandoned": RoundAbandoned,
    "round_started": RoundStarted,
    "rendezvous_closed": RendezvousClosed,
    "state_reset": StateReset,
}
"""The ``type`` of each event in JSON."""

_TYPE_NAMES = {kind: name for name, kind in EVENT_TYPES.items()}
_ROLES: tuple[Role, ...] = ("participant", "waiting", "redundant")


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON object of ``event`` (a dict of JSON values)."""
    out: dict[str, Any] = {
        "format": EVENT_FORMAT,
        "type": _TYPE_NAMES[type(event)],
        "at": event.at,
        "round": event.round,
    }
    if isinstance(event, NodeJoined):
        out.update(node=str(event.node), role=event.role, previous=event.previous)
    elif isinstance(event, NodeLeft | NodeDeclaredDead):
        out.update(node=str(event.node), role=event.role, last_heartbeat=event.last_heartbeat)
        if isinstance(event, NodeLeft):
            out["certain"] = event.certain
    elif isinstance(event, RoundCompleted):
        out["world_size"] = event.world_size
        out["ranks"] = [{"rank": rank, "node": str(node)} for rank, node in event.ranks]
    return out


def _digits(text: str) -> bool:
    """ASCII digits only: other scripts' digits pass ``isdigit`` and would not round-trip."""
    return text.isascii() and text.isdigit()


def parse_node(text: object) -> NodeDesc:
    """The node named ``addr_pid_localid``.

    Raises:
        RendezvousEventError: ``text`` is not such a name.
    """
    if not isinstance(text, str):
        raise RendezvousEventError(f"a node must be a string 'addr_pid_localid', got {text!r}")
    addr, _, rest = text.rpartition("_")
    addr, _, pid = addr.rpartition("_")
    if not (addr.isprintable() and _digits(pid) and _digits(rest)):
        raise RendezvousEventError(f"a node must be 'addr_pid_localid', got {text!r}")
    return NodeDesc(addr, int(pid), int(rest))


def event_from_json(document: Mapping[str, Any]) -> Event:
    """The event that :func:`event_to_json` wrote as ``document``.

    Raises:
        RendezvousEventError: ``document`` is not an event of a format this
            version reads; the message names the field.
    """
    if not isinstance(document, Mapping):
        raise RendezvousEventError(f"an event is a JSON object, got {type(document).__name__}")
    version = document.get("format")
    if version != EVENT_FORMAT:
        raise RendezvousEventError(
            f"unknown event format {version!r} (this rdzv reads format {EVENT_FORMAT})"
        )
    name = document.get("type")
    kind = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise RendezvousEventError(f"unknown event type {document.get('type')!r}")
    field = _Fields(document)
    at, round_ = field.number("at"), field.integer("round")
    if kind is NodeJoined:
        previous = document.get("previous")
        return NodeJoined(
            at,
            round_,
            field.node(),
            field.role("role"),
            None if previous is None else field.role("previous"),
        )
    if kind is NodeLeft or kind is NodeDeclaredDead:
        beat = None if document.get("last_heartbeat") is None else field.number("last_heartbeat")
        node, role = field.node(), field.role("role")
        if kind is NodeDeclaredDead:
            return NodeDeclaredDead(at, round_, node, role, beat)
        certain = "certain" not in document or field.boolean("certain")  # a field added later
        return NodeLeft(at, round_, node, role, beat, certain)
    if kind is RoundCompleted:
        return RoundCompleted(at, round_, field.integer("world_size"), field.ranks())
    simple = cast(Callable[[float, int], Event], kind)
    return simple(at, round_)


class _Fields:
    """Typed reads of the fields of one event document; each failure names its field."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def _get(self, name: str) -> Any:
        if name not in self._document:
            raise RendezvousEventError(f"the event has no {name!r}")
        return self._document[name]

    def number(self, name: str) -> float:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RendezvousEventError(f"{name!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise RendezvousEventError(f"{name!r} must be a finite number, got {value!r}")
        return float(value)

    def boolean(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise RendezvousEventError(f"{name!r} must be true or false, got {value!r}")
        return value

    def integer(self, name: str) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RendezvousEventError(f"{name!r} must be a non-negative integer, got {value!r}")
        return value

    def role(self, name: str) -> Role:
        value = self._get(name)
        for role in _ROLES:
            if value == role:
                return role
        raise RendezvousEventError(f"{name!r} must be one of {', '.join(_ROLES)}, got {value!r}")

    def node(self) -> NodeDesc:
        return parse_node(self._get("node"))

    def ranks(self) -> tuple[tuple[int, NodeDesc], ...]:
        value = self._get("ranks")
        if not isinstance(value, list):
            raise RendezvousEventError(f"'ranks' must be a list, got {value!r}")
        ranks = []
        for entry in value:
            if not isinstance(entry, Mapping):
                raise RendezvousEventError(f"each of 'ranks' must be an object, got {entry!r}")
            inner = _Fields(entry)
            ranks.append((inner.integer("rank"), inner.node()))
        return tuple(ranks)
