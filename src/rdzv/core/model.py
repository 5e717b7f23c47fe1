"""The values of the rendezvous: who is a node, what the shared state holds, the settings.

Every record is frozen. A transition never changes a state; it returns a new one
(see :mod:`rdzv.core.transitions`). Times are seconds since the Unix epoch, as
floats, because heartbeats and deadlines are compared across machines: the
caller passes the clock reading in, the core never reads a clock.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "NodeDesc",
    "RendezvousSettings",
    "RendezvousState",
    "RendezvousTimeout",
]


@attrs.frozen(cache_hash=True)
class NodeDesc:
    """One participant of a rendezvous: its address, process id and a per-process counter.

    Nodes sort by ``(addr, pid, local_id)``; ranks are given in that order. The
    comparisons are written out: attrs' generic ones cost a third of the CPU of
    a rendezvous of a thousand nodes (a million comparisons in one process).
    """

    addr: str
    pid: int
    local_id: int

    def __str__(self) -> str:
        return f"{self.addr}_{self.pid}_{self.local_id}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, NodeDesc):
            return NotImplemented
        return (self.addr, self.pid, self.local_id) < (other.addr, other.pid, other.local_id)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, NodeDesc):
            return NotImplemented
        return (self.addr, self.pid, self.local_id) <= (other.addr, other.pid, other.local_id)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, NodeDesc):
            return NotImplemented
        return (self.addr, self.pid, self.local_id) > (other.addr, other.pid, other.local_id)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, NodeDesc):
            return NotImplemented
        return (self.addr, self.pid, self.local_id) >= (other.addr, other.pid, other.local_id)


def _frozen_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


def _frozen_set(value: Iterable[NodeDesc]) -> frozenset[NodeDesc]:
    return value if isinstance(value, frozenset) else frozenset(value)


@attrs.frozen(eq=True)
class RendezvousState:
    """The state every node of a run shares through the backend.

    Attributes:
        round: the current round; it only grows.
        complete: whether this round's participants are final and ranked.
        deadline: when a round that has ``min_nodes`` completes anyway (last call).
        closed: terminal; the rendezvous admits no one any more.
        participants: node -> rank (ranks are 0 until the round completes).
        wait_list: nodes that arrived after completion and wait for the next round.
        redundancy_list: nodes that arrived when the round already had ``max_nodes``.
        last_heartbeats: node -> time of its last heartbeat, for every node above.
        world_size: number of participants when the round completed (0 before).
            When a participant of a complete round dies or leaves, the survivors
            see ``world_size`` above the number of participants and know that a
            new round is needed (see :func:`rdzv.core.liveness.num_nodes_waiting`).
        intent_cursor: how far into the backend's log of join intents the state
            has admitted (see :mod:`rdzv.core.intents`); 0 where there is no log.
    """

    round: int = 0
    complete: bool = False
    deadline: float | None = None
    closed: bool = False
    participants: Mapping[NodeDesc, int] = attrs.field(factory=dict, converter=_frozen_mapping)
    wait_list: frozenset[NodeDesc] = attrs.field(factory=frozenset, converter=_frozen_set)
    redundancy_list: frozenset[NodeDesc] = attrs.field(factory=frozenset, converter=_frozen_set)
    last_heartbeats: Mapping[NodeDesc, float] = attrs.field(factory=dict, converter=_frozen_mapping)
    world_size: int = 0
    intent_cursor: int = 0
    oldest_heartbeat: float | None = attrs.field(init=False, eq=False, repr=False)
    """The earliest of ``last_heartbeats`` (``None`` when empty), computed once: a
    waiting node checks it on every wake-up, and a scan of a thousand nodes each
    time would be the bulk of its work."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self, "oldest_heartbeat", min(self.last_heartbeats.values(), default=None)
        )

    @functools.cached_property
    def first_participant(self) -> NodeDesc | None:
        """The smallest participant (``None`` when there is none), computed once per state."""
        return min(self.participants, default=None)

    @functools.cached_property
    def first_waiting(self) -> NodeDesc | None:
        """The smallest node of the wait list (``None`` when empty), computed once per state."""
        return min(self.wait_list, default=None)

    @functools.cached_property
    def beats_by_age(self) -> tuple[tuple[float, NodeDesc], ...]:
        """Every ``(heartbeat, node)``, oldest first, sorted once per state.

        Finding the dead nodes then costs the number of old heartbeats, not the size
        of the state: at a hundred thousand nodes every node checks on each wake-up.
        """
        return tuple(sorted((beat, node) for node, beat in self.last_heartbeats.items()))

    @functools.cached_property
    def members_in_order(self) -> tuple[NodeDesc, ...]:
        """Participants, then the wait list, then the redundancy list, each sorted: the
        order in which members watch each other's heartbeats (see
        :func:`rdzv.core.liveness.watcher`). Computed once per state."""
        return (
            *sorted(self.participants),
            *sorted(self.wait_list),
            *sorted(self.redundancy_list),
        )

    @functools.cached_property
    def memo(self) -> dict[object, object]:
        """A cache for pure functions of this state (see :func:`rdzv.core.drop_dead_nodes`).

        The nodes of one process share a decoded state; what one of them derived
        from it (the state without its dead nodes) the others need not derive again.
        """
        return {}

    def members(self) -> frozenset[NodeDesc]:
        """Every node the state knows: participants, wait list and redundancy list."""
        return frozenset(self.participants) | self.wait_list | self.redundancy_list

    def role_of(self, node: NodeDesc) -> str | None:
        """``"participant"``, ``"waiting"``, ``"redundant"`` or ``None`` for a stranger."""
        if node in self.participants:
            return "participant"
        if node in self.wait_list:
            return "waiting"
        if node in self.redundancy_list:
            return "redundant"
        return None


def _seconds(value: timedelta | float | None, default: float) -> timedelta:
    if value is None:
        return timedelta(seconds=default)
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"A timeout must be a timedelta or a number of seconds, got {value!r}.")
    return timedelta(seconds=value)


def _join(value: timedelta | float | None) -> timedelta:
    return _seconds(value, 600)


def _last_call(value: timedelta | float | None) -> timedelta:
    return _seconds(value, 30)


def _close(value: timedelta | float | None) -> timedelta:
    return _seconds(value, 30)


def _heartbeat(value: timedelta | float | None) -> timedelta:
    return _seconds(value, 5)


def _check_positive(_: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"The {attribute.name} timeout ({value}) must be positive.")


@attrs.frozen
class RendezvousTimeout:
    """How long each part of the rendezvous may take (torch's names and defaults).

    Attributes:
        join: a call to ``next_rendezvous`` fails after this (600 s).
        last_call: once ``min_nodes`` joined, wait this long for more (30 s).
        close: closing the rendezvous fails after this (30 s).
        heartbeat: a keep-alive write fails after this (5 s).

    ``None`` selects the default, as in torch; numbers are seconds.

    Raises:
        ValueError: a timeout is zero or negative.
    """

    join: timedelta = attrs.field(default=None, converter=_join, validator=_check_positive)
    last_call: timedelta = attrs.field(
        default=None, converter=_last_call, validator=_check_positive
    )
    close: timedelta = attrs.field(default=None, converter=_close, validator=_check_positive)
    heartbeat: timedelta = attrs.field(
        default=None, converter=_heartbeat, validator=_check_positive
    )


def _check_settings(settings: RendezvousSettings) -> None:
    if not settings.run_id:
        raise ValueError("The run id must be a non-empty string.")
    if settings.min_nodes < 1:
        raise ValueError(
            f"The minimum number of nodes ({settings.min_nodes}) must be greater than zero."
        )
    if settings.max_nodes < settings.min_nodes:
        raise ValueError(
            f"The maximum number of nodes ({settings.max_nodes}) must be greater than or equal "
            f"to the minimum number of nodes ({settings.min_nodes})."
        )
    if settings.keep_alive_interval <= timedelta(0):
        raise ValueError(
            f"The keep-alive interval ({settings.keep_alive_interval}) must be positive."
        )
    if settings.keep_alive_max_attempt < 1:
        raise ValueError(
            f"The keep-alive max attempt ({settings.keep_alive_max_attempt}) must be at least 1."
        )


@attrs.frozen
class RendezvousSettings:
    """What every node of a run must agree on.

    Attributes:
        run_id: the job's id.
        min_nodes: fewest participants for a round to complete.
        max_nodes: most participants in a round; more go to the redundancy list.
        timeout: the :class:`RendezvousTimeout`.
        keep_alive_interval: time between two heartbeats of a node.
        keep_alive_max_attempt: heartbeats a node may miss before it counts as dead.

    Raises:
        ValueError: an empty run id, ``min_nodes < 1``, ``max_nodes < min_nodes``,
            a non-positive interval or attempt count.
    """

    run_id: str
    min_nodes: int
    max_nodes: int
    timeout: RendezvousTimeout = attrs.field(factory=RendezvousTimeout)
    keep_alive_interval: timedelta = timedelta(seconds=5)
    keep_alive_max_attempt: int = 3

    def __attrs_post_init__(self) -> None:
        _check_settings(self)

    @property
    def heartbeat_expiry(self) -> float:
        """Seconds without a heartbeat after which a node counts as dead."""
        return self.keep_alive_interval.total_seconds() * self.keep_alive_max_attempt
