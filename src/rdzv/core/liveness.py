"""Which nodes are dead, and how many nodes a running round is missing.

A node is dead when its last heartbeat is older than
``keep_alive_interval * keep_alive_max_attempt``. Every node drops the dead ones
from the state it reads before deciding anything, as torch's sanitiser does.
"""

from __future__ import annotations

import attrs

from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.transitions import after_participant_removed

__all__ = ["dead_nodes", "drop_dead_nodes", "num_nodes_waiting"]


def dead_nodes(
    state: RendezvousState,
    settings: RendezvousSettings,
    now: float,
    spare: NodeDesc | None = None,
) -> tuple[NodeDesc, ...]:
    """The nodes whose heartbeat expired at ``now``, sorted, never ``spare``.

    A node passes itself as ``spare``: it is alive by definition while it runs,
    even if its own heartbeat came late (a loaded host, a paused timer).
    """
    expired_before = now - settings.heartbeat_expiry
    if state.oldest_heartbeat is None or state.oldest_heartbeat >= expired_before:
        return ()
    return tuple(
        sorted(
            node
            for node, beat in state.last_heartbeats.items()
            if beat < expired_before and node != spare
        )
    )


def drop_dead_nodes(
    state: RendezvousState,
    settings: RendezvousSettings,
    now: float,
    spare: NodeDesc | None = None,
) -> tuple[RendezvousState, tuple[NodeDesc, ...]]:
    """Return the state without its dead nodes (never ``spare``), and the nodes dropped.

    Losing a participant has the same consequences as a participant leaving
    (see :func:`rdzv.core.transitions.after_participant_removed`). When ``state``
    has no dead node it is returned as it is.
    """
    dead = dead_nodes(state, settings, now, spare)
    if not dead:
        return state, dead
    gone = frozenset(dead)
    new = attrs.evolve(
        state,
        participants={n: r for n, r in state.participants.items() if n not in gone},
        wait_list=state.wait_list - gone,
        redundancy_list=state.redundancy_list - gone,
        last_heartbeats={n: b for n, b in state.last_heartbeats.items() if n not in gone},
    )
    if any(node in state.participants for node in dead):
        new = after_participant_removed(new, settings)
    return new, dead


def num_nodes_waiting(state: RendezvousState) -> int:
    """How many nodes a launcher should make room for by starting a new round.

    The wait list, as in torch, plus every participant that a complete round
    has lost (it died or left): torch counts only the wait list, so when a
    participant dies its survivors are never told to re-rendezvous and hang in
    their collective (pytorch issue 111646). A launcher that polls this number
    and restarts the round when it is above 0 recovers from both.
    """
    missing = state.world_size - len(state.participants) if state.complete else 0
    return len(state.wait_list) + max(missing, 0)
