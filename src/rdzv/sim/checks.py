"""What must hold in every simulated run: safety after every write, liveness at the end.

Safety (checked on every state a compare-and-set writes):

- the round never goes back, a closed rendezvous stays closed, the log cursor
  never goes back, the encoded state stays within the codec's bound;
- a round completes with ``min_nodes`` to ``max_nodes`` participants ranked
  ``0..n-1`` once each, and afterwards only loses participants, keeping ranks;
- every rank a node was given is the one its round completed with;
- the events derived from each pair of successive states, replayed, give the
  second state (:mod:`rdzv.sim.replay`);
- a node whose join ended without a rank, and that took itself out, is in no
  round completed afterwards (until it joins again); one that could not (it
  crashed, or the backend was unreachable) is in none completed by a write
  decided more than the heartbeat expiry (and twice the clock skew, and the
  backend's lag as the deciding node saw it) later.

Liveness (:func:`converged`): once faults stop, every live node ends in one
common complete round, or all have stopped after the rendezvous closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import attrs

from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState, num_nodes_waiting
from rdzv.core.codec import MAX_ENCODED_SIZE
from rdzv.sim.replay import EventReplay

__all__ = ["Absence", "Checker"]

_EPSILON = 1e-6


@attrs.define
class Absence:
    """A time when a node must not be placed: after its join ended without a rank."""

    start: float
    graceful: bool
    end: float = math.inf


@attrs.define
class _Completed:
    participants: dict[NodeDesc, int]
    world_size: int
    at: float


class Checker:
    """Collects violations; ``violations`` is empty when the run was sound."""

    def __init__(
        self,
        settings: RendezvousSettings,
        skew: float,
        size_of: Callable[[RendezvousState], int],
        *,
        epoch: float = 0.0,
    ) -> None:
        """``epoch``: the nodes' clock reading at simulated time 0 (their heartbeats use it)."""
        self._settings = settings
        self._ghost_bound = settings.heartbeat_expiry + 2 * skew + _EPSILON
        self._size_of = size_of
        self._last: RendezvousState | None = None
        self._completed: dict[int, _Completed] = {}
        self._absences: dict[NodeDesc, list[Absence]] = {}
        self.violations: list[str] = []
        self.rounds_completed = 0
        self.replay = EventReplay(settings.heartbeat_expiry, epoch)

    def _fail(self, message: str) -> None:
        self.violations.append(message)

    def node_ended(self, node: NodeDesc, at: float, *, graceful: bool) -> None:
        """``node``'s join ended without a rank at ``at`` (true time)."""
        self._absences.setdefault(node, []).append(Absence(at, graceful))

    def node_joins(self, node: NodeDesc, at: float) -> None:
        """``node`` starts a join at ``at``: the absence it was in ends."""
        for absence in self._absences.get(node, ()):
            absence.end = min(absence.end, at)

    def ranked(self, node: NodeDesc, round_: int, rank: int, world_size: int) -> None:
        """A join returned this rank: it must be the rank its round completed with."""
        done = self._completed.get(round_)
        if done is None:
            self._fail(f"{node} got rank {rank} of round {round_}, which never completed")
            return
        if done.participants.get(node) != rank or done.world_size != world_size:
            self._fail(
                f"{node} got rank {rank}/{world_size} of round {round_}, which completed with "
                f"{done.participants.get(node)}/{done.world_size}"
            )

    def written(self, state: RendezvousState, at: float, decided: float, lag: float = 0.0) -> None:
        """A compare-and-set wrote ``state``: applied at ``at``, decided at ``decided`` (a
        write decided on a board read: when the board was asked, as of which the node
        knows the heartbeats), by a node that saw the backend lag ``lag`` seconds (and
        judged heartbeats that much earlier)."""
        last = self._last
        if last is not None:
            if state.round < last.round:
                self._fail(f"the round went back from {last.round} to {state.round}")
            if last.closed and not state.closed:
                self._fail("a closed rendezvous was opened again")
            if state.intent_cursor < last.intent_cursor:
                self._fail(f"the cursor went back from {last.intent_cursor}")
        self._last = state
        size = self._size_of(state)
        if size > MAX_ENCODED_SIZE:
            self._fail(f"the encoded state is {size} bytes, above {MAX_ENCODED_SIZE}")
        self._consistent(state)
        replayed = self.replay.written(state, at)
        if replayed is not None:
            self._fail(replayed)
        if state.complete:
            self._complete(state, at, decided, lag)

    def _consistent(self, state: RendezvousState) -> None:
        lists = [set(state.participants), set(state.wait_list), set(state.redundancy_list)]
        if sum(map(len, lists)) != len(set().union(*lists)):
            self._fail(f"a node is in two lists in round {state.round}")
        if set().union(*lists) != set(state.last_heartbeats):
            self._fail(f"the heartbeats do not match the members in round {state.round}")

    def _complete(self, state: RendezvousState, at: float, decided: float, lag: float) -> None:
        done = self._completed.get(state.round)
        if done is None:
            ranks = sorted(state.participants.values())
            n = len(ranks)
            s = self._settings
            if ranks != list(range(n)) or state.world_size != n:
                self._fail(f"round {state.round} completed with ranks {ranks}")
            if not s.min_nodes <= n <= s.max_nodes:
                self._fail(f"round {state.round} completed with {n} participants")
            self._completed[state.round] = _Completed(dict(state.participants), n, at)
            self.rounds_completed += 1
            self._ghosts(state, at, decided, lag)
            return
        for node, rank in state.participants.items():
            if done.participants.get(node) != rank:
                self._fail(f"{node} joined complete round {state.round} (rank {rank})")
        if state.world_size != done.world_size:
            self._fail(f"the world size of round {state.round} changed")

    def _ghosts(self, state: RendezvousState, at: float, decided: float, lag: float) -> None:
        for node in state.participants:
            for absence in self._absences.get(node, ()):
                if decided >= absence.end:
                    continue
                if absence.graceful:
                    ghost = at > absence.start
                else:
                    ghost = decided - lag > absence.start + self._ghost_bound
                if ghost:
                    how = "left" if absence.graceful else "died"
                    self._fail(
                        f"{node}, whose join ended without a rank ({how} at "
                        f"{absence.start:.3f}), is a participant of round {state.round} "
                        f"completed at {at:.3f}"
                    )


def converged(
    view: RendezvousState,
    live: Iterable[tuple[NodeDesc, int | None, bool]],
    settings: RendezvousSettings,
) -> bool:
    """Whether the live nodes are at rest in one common round.

    ``live`` gives each live node, the round it last joined and whether it is in a
    join right now. ``view`` is the state without its dead nodes.
    """
    nodes = list(live)
    if view.closed:
        return not nodes
    if not view.complete or view.wait_list:
        return False
    placed = [n for n in nodes if n[0] in view.participants]
    if len(placed) != min(len(nodes), settings.max_nodes) or len(view.participants) != len(placed):
        return False
    for node, joined, joining in placed:
        if joining or joined != view.round or num_nodes_waiting(view, node, joined):
            return False
    # The rest (more than max_nodes) wait in the redundancy list.
    return all(n in view.redundancy_list for n, _, _ in nodes if n not in view.participants)
