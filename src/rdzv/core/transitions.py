"""How the state changes: one placement engine, and one reducer per action on top of it.

Every change of membership goes through :class:`Draft`, a mutable working copy of
a state: a single action (:func:`apply_action`), a batch of join intents
(:func:`rdzv.core.intents.admit`) and the removal of dead nodes
(:func:`rdzv.core.drop_dead_nodes`) all use its few rules, so that a batch and
the same joins one by one cannot disagree. Building a new state costs one copy
of the old, however many nodes move.

``apply_action(state, action, node, settings, now)`` returns the new state and
leaves ``state`` as it was. An action that does not apply to the state (a node
removing itself from a list it is not in) raises :class:`IllegalTransitionError`
instead of guessing: the decision functions never produce one, so it marks a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NoReturn

import attrs

from rdzv.core.decisions import Action, placement
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState

__all__ = [
    "Draft",
    "IllegalTransitionError",
    "apply_action",
]


class IllegalTransitionError(ValueError):
    """An action was applied to a state in which it has no meaning."""


@attrs.define
class Draft:
    """A mutable copy of a state, for building one new state out of many changes.

    Its methods are the rules of membership; :meth:`build` freezes the result.
    ``changed`` tells whether any rule moved anything.
    """

    round: int
    complete: bool
    deadline: float | None
    world_size: int
    participants: dict[NodeDesc, int]
    wait_list: set[NodeDesc]
    redundant: set[NodeDesc]
    beats: dict[NodeDesc, float]
    changed: bool = False

    @classmethod
    def of(cls, state: RendezvousState) -> Draft:
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

    def build(self, state: RendezvousState, intent_cursor: int | None = None) -> RendezvousState:
        """The frozen state: ``state`` with this draft's membership (and cursor)."""
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
            intent_cursor=state.intent_cursor if intent_cursor is None else intent_cursor,
        )

    # -- joining ---------------------------------------------------------------------

    def add(self, node: NodeDesc, settings: RendezvousSettings, now: float, beat: float) -> None:
        """``node`` joins the participants of the incomplete round.

        Reaching ``min_nodes`` starts the last call; reaching ``max_nodes`` completes
        the round at once.
        """
        self.participants[node] = 0
        self.wait_list.discard(node)
        self.redundant.discard(node)
        self.beats[node] = beat
        self.changed = True
        if len(self.participants) == settings.min_nodes:
            self.deadline = now + settings.timeout.last_call.total_seconds()
        if len(self.participants) >= settings.max_nodes:
            self.mark_complete(settings)

    def place(self, node: NodeDesc, settings: RendezvousSettings, now: float, beat: float) -> None:
        """``node`` goes where :func:`rdzv.core.decisions.placement` sends a newcomer."""
        where = placement(self, settings)
        if where is Action.ADD_TO_PARTICIPANTS:
            self.add(node, settings, now, beat)
            return
        self.beats[node] = beat
        self.changed = True
        if where is Action.ADD_TO_WAIT_LIST:
            self.wait_list.add(node)
            self.redundant.discard(node)
        else:
            self.redundant.add(node)

    def promote(self, settings: RendezvousSettings, now: float) -> None:
        """Waiting nodes join an incomplete round, as each would on its next look."""
        for node in sorted(self.wait_list):
            if self.complete:
                return
            self.add(node, settings, now, self.beats.get(node, now))

    def mark_complete(self, settings: RendezvousSettings) -> None:
        """The participants are final: rank them in node order.

        Waiting nodes that did not fit (the round is full) move to the redundancy
        list: they wait for room, not for the next round. Left in the wait list
        (torch leaves them there), they would count in ``num_nodes_waiting`` and
        make every launcher start a new round, which again could not take them,
        for ever.
        """
        self.participants = {n: rank for rank, n in enumerate(sorted(self.participants))}
        self.complete, self.deadline = True, None
        self.world_size = len(self.participants)
        self.changed = True
        if self.wait_list and len(self.participants) >= settings.max_nodes:
            self.redundant |= self.wait_list
            self.wait_list = set()

    # -- leaving ---------------------------------------------------------------------

    def remove(self, node: NodeDesc, settings: RendezvousSettings) -> bool:
        """Take ``node`` out of whichever list holds it; whether it was a participant.

        Losing a participant: a complete round with nobody left moves on to the
        next, incomplete round; an incomplete round that fell below ``min_nodes``
        loses its last-call deadline.
        """
        self.beats.pop(node, None)
        self.wait_list.discard(node)
        self.redundant.discard(node)
        self.changed = True
        if self.participants.pop(node, None) is None:
            return False
        if self.complete:
            if not self.participants:
                self.round, self.complete, self.world_size = self.round + 1, False, 0
        elif len(self.participants) < settings.min_nodes:
            self.deadline = None
        return True

    def leave(self, node: NodeDesc, settings: RendezvousSettings, now: float) -> None:
        """``node`` leaves its round for good; if it was the last one out of a complete
        round, the waiting nodes join the next at once, as each would on its next look."""
        was_complete = self.complete
        if self.remove(node, settings) and was_complete and not self.complete:
            self.promote(settings, now)

    def drop(self, nodes: Iterable[NodeDesc], settings: RendezvousSettings) -> None:
        """Take out nodes found dead or withdrawn, with no promotion: the waiting nodes join
        the next round themselves, or the caller promotes them once all are out."""
        for node in nodes:
            self.remove(node, settings)


Reducer = Callable[[RendezvousState, NodeDesc, RendezvousSettings, float], RendezvousState]


def _illegal(action: Action, node: NodeDesc, state: RendezvousState, why: str) -> NoReturn:
    raise IllegalTransitionError(
        f"Action {action.name} cannot be applied for node {node} in round {state.round} "
        f"(complete={state.complete}, closed={state.closed}): {why}."
    )


def _with(state: RendezvousState, change: Callable[[Draft], object]) -> RendezvousState:
    draft = Draft.of(state)
    change(draft)
    return draft.build(state)


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
    return _with(state, lambda d: d.add(node, settings, now, now))


def _add_to_wait_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if node in state.participants or node in state.wait_list:
        _illegal(Action.ADD_TO_WAIT_LIST, node, state, "the node already takes part or waits")

    def wait(draft: Draft) -> None:
        draft.redundant.discard(node)
        draft.wait_list.add(node)
        draft.beats[node] = now

    return _with(state, wait)


def _add_to_redundancy_list(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if state.role_of(node) is not None:
        _illegal(Action.ADD_TO_REDUNDANCY_LIST, node, state, "the node is already known")

    def redundant(draft: Draft) -> None:
        draft.redundant.add(node)
        draft.beats[node] = now

    return _with(state, redundant)


def _remover(action: Action, role: str, why: str) -> Reducer:
    def reducer(
        state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
    ) -> RendezvousState:
        if state.role_of(node) != role:
            _illegal(action, node, state, why)
        return _with(state, lambda d: d.remove(node, settings))

    return reducer


def _rejoin(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    if not state.complete or node not in state.participants:
        _illegal(Action.REJOIN, node, state, "only a participant of a complete round leaves it")

    def rejoin(draft: Draft) -> None:
        draft.leave(node, settings, now)
        draft.place(node, settings, now, now)

    return _with(state, rejoin)


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
    return _with(state, lambda d: d.mark_complete(settings))


def _mark_rendezvous_closed(
    state: RendezvousState, node: NodeDesc, settings: RendezvousSettings, now: float
) -> RendezvousState:
    return attrs.evolve(state, closed=True)


TRANSITIONS: dict[Action, Reducer] = {
    Action.KEEP_ALIVE: _keep_alive,
    Action.ADD_TO_PARTICIPANTS: _add_to_participants,
    Action.ADD_TO_WAIT_LIST: _add_to_wait_list,
    Action.ADD_TO_REDUNDANCY_LIST: _add_to_redundancy_list,
    Action.REMOVE_FROM_PARTICIPANTS: _remover(
        Action.REMOVE_FROM_PARTICIPANTS, "participant", "the node is not a participant"
    ),
    Action.REMOVE_FROM_WAIT_LIST: _remover(
        Action.REMOVE_FROM_WAIT_LIST, "waiting", "the node is not waiting"
    ),
    Action.REMOVE_FROM_REDUNDANCY_LIST: _remover(
        Action.REMOVE_FROM_REDUNDANCY_LIST, "redundant", "the node is not redundant"
    ),
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
