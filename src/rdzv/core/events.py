"""What happened between two states of a rendezvous, as events: derived, never recorded.

Nodes do not log events anywhere: whoever watches the state (``rdzv status
--watch``, :func:`rdzv.watch`) derives them from each pair of successive states
it reads, with :func:`events_between`. A watcher may miss states between two
reads; the events it derives still lead from the first to the second, so
:func:`replay` of the events over the first state's :class:`Membership` gives the
second's. The simulator checks exactly that after every write of every run.

A node that is gone from the state either *left* (its join ended, it shut down)
or was *declared dead* (its heartbeat expired and a node dropped it). The state
does not say which; the heartbeats do: a node whose latest known heartbeat had
expired when the change was seen is dead, any other left. The caller passes the
heartbeats it read outside the state (the heartbeat board) as ``beats``. A
watcher that could not read for a while cannot always tell: see
:func:`events_between`'s ``before_at``.

The JSON form of the events is in :mod:`rdzv.core.event_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from rdzv.core.model import NodeDesc, RendezvousState

__all__ = [
    "EMPTY",
    "Event",
    "Membership",
    "NodeDeclaredDead",
    "NodeJoined",
    "NodeLeft",
    "RendezvousClosed",
    "Role",
    "RoundAbandoned",
    "RoundCompleted",
    "RoundStarted",
    "StateReset",
    "events_between",
    "membership_of",
    "replay",
]

Role: TypeAlias = Literal["participant", "waiting", "redundant"]
"""Where a node is: the participants, the wait list or the redundancy list."""

_NO_BEATS: Mapping[NodeDesc, float] = MappingProxyType({})


@attrs.frozen
class NodeJoined:
    """``node`` entered a list of round ``round``: joined, was placed or moved.

    ``previous`` is the list it was in (``None``: it was not in the state). A
    waiting node promoted into a forming round is ``waiting -> participant``; a
    participant that rejoins a complete round is ``participant -> waiting``, and
    one whose rejoin starts the next round ``participant -> participant``.
    """

    at: float
    round: int
    node: NodeDesc
    role: Role
    previous: Role | None = None


@attrs.frozen
class NodeLeft:
    """``node`` is gone from the state while its heartbeat was fresh: it left by itself.

    ``certain`` is false when it went while the watcher could not read: its
    heartbeat was fresh at the last read but has expired since, so it left or was
    dropped as dead, and the watcher cannot tell which.
    """

    at: float
    round: int
    node: NodeDesc
    role: Role
    last_heartbeat: float | None = None
    certain: bool = True


@attrs.frozen
class NodeDeclaredDead:
    """``node`` is gone from the state and its latest heartbeat had expired: it was dropped."""

    at: float
    round: int
    node: NodeDesc
    role: Role
    last_heartbeat: float | None = None


@attrs.frozen
class RoundCompleted:
    """Round ``round`` is complete: its participants are final and ranked.

    ``ranks`` lists ``(rank, node)`` by rank. A watcher that read the state only
    after a participant was lost sees fewer ranks than ``world_size``.
    """

    at: float
    round: int
    world_size: int
    ranks: tuple[tuple[int, NodeDesc], ...]


@attrs.frozen
class RoundAbandoned:
    """Round ``round`` is over: its participants left it (to re-form) or died.

    Emitted when the round moves on and the old round had participants or had
    completed; :class:`RoundStarted` follows with the new round.
    """

    at: float
    round: int


@attrs.frozen
class RoundStarted:
    """Round ``round`` is now the current one; it forms (nobody is ranked yet)."""

    at: float
    round: int


@attrs.frozen
class RendezvousClosed:
    """The rendezvous is closed (terminal): no node is admitted any more."""

    at: float
    round: int


@attrs.frozen
class StateReset:
    """The state went back: a lower round, a closed rendezvous open again, or a
    complete round that forms again or has another world size or other ranks.

    rdzv never writes that; another writer did (a restarted c10d host, a deleted
    and re-created key). Events after it describe the new state from scratch.
    """

    at: float
    round: int


Event: TypeAlias = (
    NodeJoined
    | NodeLeft
    | NodeDeclaredDead
    | RoundCompleted
    | RoundAbandoned
    | RoundStarted
    | RendezvousClosed
    | StateReset
)


def _frozen_ranks(value: Mapping[NodeDesc, int]) -> Mapping[NodeDesc, int]:
    return MappingProxyType(dict(value))


def _role_in(holder: RendezvousState | Membership, node: NodeDesc) -> Role | None:
    if node in holder.participants:
        return "participant"
    if node in holder.wait_list:
        return "waiting"
    if node in holder.redundancy_list:
        return "redundant"
    return None


@attrs.frozen
class Membership:
    """What the events describe of a state: round, completion, closing and the lists.

    Heartbeats, the last-call deadline and the intent cursor are not events and
    are left out.
    """

    round: int = 0
    complete: bool = False
    closed: bool = False
    world_size: int = 0
    participants: Mapping[NodeDesc, int] = attrs.field(factory=dict, converter=_frozen_ranks)
    wait_list: frozenset[NodeDesc] = frozenset()
    redundancy_list: frozenset[NodeDesc] = frozenset()

    def role_of(self, node: NodeDesc) -> Role | None:
        """The list that holds ``node``, or ``None``."""
        return _role_in(self, node)

    def members(self) -> frozenset[NodeDesc]:
        """Every node in a list."""
        return frozenset(self.participants) | self.wait_list | self.redundancy_list


EMPTY = Membership()
"""The membership before any state: what a watcher starts from."""


def membership_of(state: RendezvousState | None) -> Membership:
    """The :class:`Membership` of ``state`` (:data:`EMPTY` for no state)."""
    if state is None:
        return EMPTY
    return Membership(
        state.round,
        state.complete,
        state.closed,
        state.world_size,
        state.participants,
        state.wait_list,
        state.redundancy_list,
    )


def events_between(
    before: RendezvousState | None,
    after: RendezvousState,
    *,
    at: float,
    expiry: float,
    beats: Mapping[NodeDesc, float] = _NO_BEATS,
    before_at: float | None = None,
) -> tuple[Event, ...]:
    """The events that lead from ``before`` (``None``: no state) to ``after``, seen at ``at``.

    ``before_at`` (default ``at``) is until when ``before`` was known to hold: a
    node whose latest heartbeat had expired by then was declared dead, one whose
    heartbeat is fresh at ``at`` left, and one in between left or died unseen
    (``NodeLeft`` with ``certain=False``).

    In order: a reset if rdzv's writes cannot lead from ``before`` to ``after``
    (see :class:`StateReset`); the nodes gone (left or declared
    dead, by their latest heartbeat in ``before`` or ``beats`` against
    ``at - expiry``); the old round abandoned and the new one started if the round
    moved; the nodes that entered a list; the completion; the closing. Within each
    kind, nodes come in node order, so the same pair always gives the same events.
    """
    view = membership_of(before)
    out: list[Event] = []
    if before is not None and not _succeeds(view, after):
        out.append(StateReset(at, after.round))
        view = EMPTY
    for node in sorted(view.members() - after.members()):
        role = view.role_of(node)
        assert role is not None  # a member has a role
        beat = _latest_beat(node, before, beats)
        if beat is None or beat < (at if before_at is None else before_at) - expiry:
            out.append(NodeDeclaredDead(at, view.round, node, role, beat))
        else:
            out.append(NodeLeft(at, view.round, node, role, beat, beat >= at - expiry))
    view = replay(view, (e for e in out if not isinstance(e, StateReset)))
    prior = view  # the lists before the round moves: a participant's rejoin names its list
    if after.round != view.round:
        if view.participants or view.complete:
            out.append(RoundAbandoned(at, view.round))
        out.append(RoundStarted(at, after.round))
        view = _new_round(view, after.round)
    for node in after.members_in_order:
        role = _role_in(after, node)
        previous = prior.role_of(node)
        if role != view.role_of(node):
            assert role is not None  # a member has a role
            out.append(NodeJoined(at, after.round, node, role, previous))
    if after.complete and not (view.complete and view.round == after.round):
        ranks = tuple(sorted((rank, node) for node, rank in after.participants.items()))
        out.append(RoundCompleted(at, after.round, after.world_size, ranks))
    if after.closed and not view.closed:
        out.append(RendezvousClosed(at, after.round))
    return tuple(out)


def _succeeds(before: Membership, after: RendezvousState) -> bool:
    """Whether rdzv's own writes can lead from ``before`` to ``after``.

    The round only goes up; a closed rendezvous stays closed; a complete round
    stays complete, keeps its world size, and its remaining participants keep
    their ranks. Anything else
    was written by someone else: a restarted c10d host, a re-created key.
    """
    if after.round != before.round:
        return after.round > before.round
    if before.closed and not after.closed:
        return False
    if before.complete:
        return (
            after.complete
            and after.world_size == before.world_size
            and all(
                before.participants.get(node) == rank for node, rank in after.participants.items()
            )
        )
    return True


def _latest_beat(
    node: NodeDesc, before: RendezvousState | None, beats: Mapping[NodeDesc, float]
) -> float | None:
    known = None if before is None else before.last_heartbeats.get(node)
    seen = beats.get(node)
    if known is None or (seen is not None and seen > known):
        return seen
    return known


def _new_round(view: Membership, round_: int) -> Membership:
    return attrs.evolve(view, round=round_, complete=False, world_size=0, participants={})


def replay(view: Membership, events: Iterable[Event]) -> Membership:
    """The membership after ``events``, applied in order to ``view``.

    A node that joins the participants gets rank 0, as in a forming round; a
    :class:`RoundCompleted` gives the ranks. The events are applied to one working
    copy, so replaying an admission of many nodes costs one copy, not one each.
    """
    work = _Working.of(view)
    for event in events:
        work.apply(event)
    return work.build()


@attrs.define
class _Working:
    """A mutable copy of a :class:`Membership`, which :func:`replay` changes in place."""

    round: int
    complete: bool
    closed: bool
    world_size: int
    participants: dict[NodeDesc, int]
    wait_list: set[NodeDesc]
    redundant: set[NodeDesc]

    @classmethod
    def of(cls, view: Membership) -> _Working:
        return cls(
            view.round,
            view.complete,
            view.closed,
            view.world_size,
            dict(view.participants),
            set(view.wait_list),
            set(view.redundancy_list),
        )

    def build(self) -> Membership:
        return Membership(
            self.round,
            self.complete,
            self.closed,
            self.world_size,
            self.participants,
            frozenset(self.wait_list),
            frozenset(self.redundant),
        )

    def remove(self, node: NodeDesc) -> None:
        self.participants.pop(node, None)
        self.wait_list.discard(node)
        self.redundant.discard(node)

    def apply(self, event: Event) -> None:
        if isinstance(event, NodeJoined):
            self.remove(event.node)
            if event.role == "participant":
                self.participants[event.node] = 0
            elif event.role == "waiting":
                self.wait_list.add(event.node)
            else:
                self.redundant.add(event.node)
        elif isinstance(event, NodeLeft | NodeDeclaredDead):
            self.remove(event.node)
        elif isinstance(event, RoundCompleted):
            self.complete, self.world_size = True, event.world_size
            self.participants = {node: rank for rank, node in event.ranks}
        elif isinstance(event, RoundAbandoned | RoundStarted):
            self.complete, self.world_size, self.participants = False, 0, {}
            self.round = event.round
        elif isinstance(event, RendezvousClosed):
            self.closed = True
        else:  # StateReset: what follows describes the new state from scratch
            self.round, self.complete, self.closed, self.world_size = 0, False, False, 0
            self.participants, self.wait_list, self.redundant = {}, set(), set()
