"""How the state changes: one pure reducer per action, chosen from a table.

``apply_action(state, action, node, settings, now)`` returns the new state and
leaves ``state`` as it was. An action that does not apply to the state (a node
removing itself from a list it is not in) raises :class:`IllegalTransitionError`
instead of guessing: the decision functions never produce one, so it marks a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NoReturn

import attrs

from rdzv.core.decisions import Action
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState

__all__ = [
    "IllegalTransitionError",
    "after_participant_removed",
    "apply_action",
    "place_newcomers",
]


class IllegalTransitionError(ValueError):
    """An action was applied to a state in which it has no meaning."""


Reducer = Callable[[RendezvousState, NodeDesc, RendezvousSettings, float], RendezvousState]


def _illegal(action: Action, node: NodeDesc, state: RendezvousState, why: str) -> NoReturn:
    raise IllegalTransitionError(
        f"Action {action.name} cannot be applied for node {node} in round {state.round} "
        f"(complete={state.complete}, closed={state.closed}): {why}."
    )


def after_participant_removed(
    state: RendezvousState, settings: RendezvousSettings
) -> RendezvousState:
    """What follows the loss of a participant, whether it left or was found dead.

    A complete round with nobody left moves on to the next, incomplete round. An
    incomplete round that fell below ``min_nodes`` loses its last-call deadline.
    """
    if state.complete:
        if not state.participants:
            return attrs.evolve(state, complete=False, round=state.round + 1, world_size=0)
        return state
    if len(state.participants) < settings.min_nodes:
        return attrs.evolve(state, deadline=None)
    return state


def _mark_complete(state: RendezvousState) -> RendezvousState:
    ranked = {node: rank for rank, node in enumerate(sorted(state.participants))}
    return attrs.evolve(
        state, complete=True, deadline=None, participants=ranked, world_size=len(ranked)
    )


def _keep_alive(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node not in state.last_heartbeats:
        _illegal(Action.KEEP_ALIVE, node, state, "the node is not part of the rendezvous")
    return attrs.evolve(state, last_heartbeats={**state.last_heartbeats, node: now})


def _add_to_participants(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if state.complete or node in state.participants or node in state.redundancy_list:
        _illegal(
            Action.ADD_TO_PARTICIPANTS,
            node,
            state,
            "only a new or waiting node joins an incomplete round",
        )
    participants = {**state.participants, node: 0}
    deadline = state.deadline
    if len(participants) == settings.min_nodes:
        deadline = now + settings.timeout.last_call.total_seconds()
    new = attrs.evolve(
        state,
        participants=participants,
        wait_list=state.wait_list - {node},
        last_heartbeats={**state.last_heartbeats, node: now},
        deadline=deadline,
    )
    if len(participants) >= settings.max_nodes:
        return _mark_complete(new)
    return new


def _add_to_wait_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node in state.participants or node in state.wait_list:
        _illegal(Action.ADD_TO_WAIT_LIST, node, state, "the node already takes part or waits")
    return attrs.evolve(
        state,
        wait_list=state.wait_list | {node},
        redundancy_list=state.redundancy_list - {node},
        last_heartbeats={**state.last_heartbeats, node: now},
    )


def _add_to_redundancy_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if state.role_of(node) is not None:
        _illegal(Action.ADD_TO_REDUNDANCY_LIST, node, state, "the node is already known")
    return attrs.evolve(
        state,
        redundancy_list=state.redundancy_list | {node},
        last_heartbeats={**state.last_heartbeats, node: now},
    )


def _without_heartbeat(state: RendezvousState, node: NodeDesc) -> dict[NodeDesc, float]:
    heartbeats = dict(state.last_heartbeats)
    heartbeats.pop(node, None)
    return heartbeats


def _remove_from_participants(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node not in state.participants:
        _illegal(Action.REMOVE_FROM_PARTICIPANTS, node, state, "the node is not a participant")
    participants = dict(state.participants)
    del participants[node]
    new = attrs.evolve(
        state, participants=participants, last_heartbeats=_without_heartbeat(state, node)
    )
    return after_participant_removed(new, settings)


def _remove_from_wait_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node not in state.wait_list:
        _illegal(Action.REMOVE_FROM_WAIT_LIST, node, state, "the node is not waiting")
    return attrs.evolve(
        state, wait_list=state.wait_list - {node}, last_heartbeats=_without_heartbeat(state, node)
    )


def _remove_from_redundancy_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node not in state.redundancy_list:
        _illegal(Action.REMOVE_FROM_REDUNDANCY_LIST, node, state, "the node is not redundant")
    return attrs.evolve(
        state,
        redundancy_list=state.redundancy_list - {node},
        last_heartbeats=_without_heartbeat(state, node),
    )


def _rejoin(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if not state.complete or node not in state.participants:
        _illegal(Action.REJOIN, node, state, "only a participant of a complete round leaves it")
    return place_newcomers(state, [(node, state.round)], settings, now)


def _mark_rendezvous_complete(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if state.complete or len(state.participants) < settings.min_nodes:
        _illegal(
            Action.MARK_RENDEZVOUS_COMPLETE,
            node,
            state,
            f"the round needs at least {settings.min_nodes} participants and must be incomplete",
        )
    return _mark_complete(state)


def _mark_rendezvous_closed(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    return attrs.evolve(state, closed=True)


TRANSITIONS: dict[Action, Reducer] = {
    Action.KEEP_ALIVE: _keep_alive,
    Action.ADD_TO_PARTICIPANTS: _add_to_participants,
    Action.ADD_TO_WAIT_LIST: _add_to_wait_list,
    Action.ADD_TO_REDUNDANCY_LIST: _add_to_redundancy_list,
    Action.REMOVE_FROM_PARTICIPANTS: _remove_from_participants,
    Action.REMOVE_FROM_WAIT_LIST: _remove_from_wait_list,
    Action.REMOVE_FROM_REDUNDANCY_LIST: _remove_from_redundancy_list,
    Action.REJOIN: _rejoin,
    Action.MARK_RENDEZVOUS_COMPLETE: _mark_rendezvous_complete,
    Action.MARK_RENDEZVOUS_CLOSED: _mark_rendezvous_closed,
}
"""Every action that writes, and its reducer. Actions absent here write nothing."""


def apply_action(
    state: RendezvousState,
    action: Action,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
) -> RendezvousState:
    """Return the state after ``node`` takes ``action`` at time ``now``.

    Raises:
        IllegalTransitionError: the action writes nothing (``WAIT``, ``FINISH``, an
            error) or does not apply to ``state``; ``state`` is unchanged.
    """
    reducer = TRANSITIONS.get(action)
    if reducer is None:
        _illegal(action, node, state, "this action writes nothing")
    return reducer(state, node, settings, now)


@attrs.define
class _Draft:
    """A mutable copy of a state, for building one new state out of many joins."""

    round: int
    complete: bool
    deadline: float | None
    world_size: int
    participants: dict[NodeDesc, int]
    wait_list: set[NodeDesc]
    redundant: set[NodeDesc]
    beats: dict[NodeDesc, float]

    @classmethod
    def of(cls, state: RendezvousState) -> _Draft:
        return cls(
            state.round,
            state.complete,
            state.deadline,
            state.world_size,
            dict(state.participants),
            set(state.wait_list),
            set(state.redundancy_list),
            dict(state.last_heartbeats),
        )

    def leave(self, node: NodeDesc, settings: RendezvousSettings, now: float) -> None:
        """A participant leaves its complete round; the last one out starts the next."""
        del self.participants[node]
        del self.beats[node]
        if not self.participants:
            self.round, self.complete, self.world_size = self.round + 1, False, 0
            self.promote(settings, now)

    def promote(self, settings: RendezvousSettings, now: float) -> None:
        """Waiting nodes join an incomplete round, as each would on its next look."""
        for node in sorted(self.wait_list):
            if self.complete:
                return
            self.add(node, settings, now)

    def add(self, node: NodeDesc, settings: RendezvousSettings, now: float) -> None:
        """``node`` joins the participants of the incomplete round."""
        self.participants[node] = 0
        self.wait_list.discard(node)
        self.beats[node] = now
        if len(self.participants) == settings.min_nodes:
            self.deadline = now + settings.timeout.last_call.total_seconds()
        if len(self.participants) >= settings.max_nodes:
            self.participants = {n: rank for rank, n in enumerate(sorted(self.participants))}
            self.complete, self.deadline = True, None
            self.world_size = len(self.participants)

    def place(self, node: NodeDesc, settings: RendezvousSettings, now: float) -> None:
        """``node`` goes where its own join would send a newcomer."""
        if not self.complete:
            self.add(node, settings, now)
            return
        self.beats[node] = now
        if len(self.participants) < settings.max_nodes:
            self.wait_list.add(node)
        else:
            self.redundant.add(node)

    def build(self, state: RendezvousState) -> RendezvousState:
        return attrs.evolve(
            state,
            round=self.round,
            complete=self.complete,
            deadline=self.deadline,
            world_size=self.world_size,
            participants=self.participants,
            wait_list=frozenset(self.wait_list),
            redundancy_list=frozenset(self.redundant),
            last_heartbeats=self.beats,
        )


def place_newcomers(
    state: RendezvousState,
    joins: Iterable[tuple[NodeDesc, int | None]],
    settings: RendezvousSettings,
    now: float,
) -> RendezvousState:
    """Place each ``(node, leaves)``, in order, where its own join would: one new state for all.

    The same as applying, node after node, the placement that
    :func:`rdzv.core.decisions.decide_join` chooses for it (participants of an
    incomplete round, else the wait list while the round has room, else the
    redundancy list), skipping nodes a join would not place (participants, nodes
    waiting in a complete round, redundant nodes). Applying the reducers one by
    one copies the state per node, which is quadratic in a batch of a thousand
    joins; this builds it once. A property test checks that both agree.

    ``leaves`` is the complete round the node leaves (or ``None``): if that is still
    the current round and the node takes part in it, the node first leaves it, as
    its exit would (see :func:`decide_rejoin
    <rdzv.core.decisions.decide_rejoin>`). When the last participant leaves,
    the next round starts, and the nodes of the wait list join it before the
    others are placed: each waiting node would, on its next look at the state.
    So a whole job re-forms in a few writes instead of two per node.
    """
    if state.closed:
        return state
    draft = _Draft.of(state)
    changed = False
    if not draft.complete and draft.wait_list:
        draft.promote(settings, now)
        changed = True
    for node, leaves in joins:
        if draft.complete and leaves == draft.round and node in draft.participants:
            draft.leave(node, settings, now)
            changed = True
        if node in draft.participants or node in draft.redundant:
            continue
        if draft.complete and node in draft.wait_list:
            continue
        draft.place(node, settings, now)
        changed = True
    return draft.build(state) if changed else state
