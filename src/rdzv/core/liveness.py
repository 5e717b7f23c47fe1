"""Which nodes are dead, and how many nodes a running round is missing.

A node is dead when its last heartbeat is older than
``keep_alive_interval * keep_alive_max_attempt``. Every node drops the dead ones
from the state it reads before deciding anything, as torch's sanitiser does.

A node's latest heartbeat may be newer than the one the state holds: on backends
with a heartbeat board the nodes refresh their own records instead of the state.
The functions here take those newer readings as ``observed`` and never copy the
state to merge them, so that checking costs the number of *old* heartbeats, not
the size of the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.transitions import Draft

__all__ = [
    "confirmed_dead",
    "dead_nodes",
    "drop_dead_nodes",
    "drop_nodes",
    "is_evicted",
    "num_nodes_waiting",
    "watcher",
]

_NOTHING_OBSERVED: Mapping[NodeDesc, float] = {}


def dead_nodes(
    state: RendezvousState,
    settings: RendezvousSettings,
    now: float,
    spare: NodeDesc | None = None,
    observed: Mapping[NodeDesc, float] = _NOTHING_OBSERVED,
) -> tuple[NodeDesc, ...]:
    """The nodes whose heartbeat expired at ``now``, sorted, never ``spare``.

    A node passes itself as ``spare``: it is alive by definition while it runs,
    even if its own heartbeat came late (a loaded host, a paused timer).
    ``observed`` holds heartbeats newer than the state's, read elsewhere.
    """
    expiry = settings.heartbeat_expiry
    expired_before = now - expiry
    if state.oldest_heartbeat is None or state.oldest_heartbeat >= expired_before:
        return ()
    # The answer cannot change before the first heartbeat that is still alive expires,
    # unless ``observed`` changes: keep it in the state's memo until then. A watcher
    # that checks on every wake-up then scans a large state once per expiry, not
    # every few milliseconds. (``observed`` is replaced, never changed in place.)
    key = ("dead", spare)
    cached = state.memo.get(key)
    if isinstance(cached, _Dead) and cached.valid(observed, now):
        return cached.dead
    dead = []
    until = math.inf
    for beat, node in state.beats_by_age:
        if node == spare:
            continue
        if beat >= expired_before:
            until = min(until, beat + expiry)
            break  # the rest are younger
        latest = max(beat, observed.get(node, beat))  # a reading may be older than the state
        if latest < expired_before:
            dead.append(node)
        else:
            until = min(until, latest + expiry)
    result = tuple(sorted(dead))
    state.memo[key] = _Dead(observed, now, until, result)
    return result


@attrs.frozen
class _Dead:
    """:func:`dead_nodes` of a state for ``observed``, valid from ``since`` to ``until``."""

    observed: Mapping[NodeDesc, float]
    since: float
    until: float
    dead: tuple[NodeDesc, ...]

    def valid(self, observed: Mapping[NodeDesc, float], now: float) -> bool:
        return self.observed is observed and self.since <= now < self.until


def drop_dead_nodes(
    state: RendezvousState,
    settings: RendezvousSettings,
    now: float,
    spare: NodeDesc | None = None,
    observed: Mapping[NodeDesc, float] = _NOTHING_OBSERVED,
) -> tuple[RendezvousState, tuple[NodeDesc, ...]]:
    """Return the state without its dead nodes (never ``spare``), and the nodes dropped.

    When ``state`` has no dead node it is returned as it is.
    """
    dead = dead_nodes(state, settings, now, spare, observed)
    return drop_nodes(state, dead, settings), dead


def drop_nodes(
    state: RendezvousState, dead: tuple[NodeDesc, ...], settings: RendezvousSettings
) -> RendezvousState:
    """The state without ``dead`` (sorted), found dead; ``state`` itself when there are none.

    Losing a participant has the same consequences as a participant leaving
    (see :meth:`rdzv.core.transitions.Draft.remove`). The result depends only on
    the state and the nodes dropped, so it is kept in the state's memo for every
    other node that reads the same state and finds the same nodes dead.
    """
    if not dead:
        return state
    key = ("without", dead, settings.min_nodes)
    cached = state.memo.get(key)
    if isinstance(cached, RendezvousState):
        return cached
    draft = Draft.of(state)
    draft.drop(dead, settings)
    new = draft.build(state)
    state.memo[key] = new
    return new


def watcher(
    state: RendezvousState,
    node: NodeDesc,
    settings: RendezvousSettings,
    now: float,
    observed: Mapping[NodeDesc, float] = _NOTHING_OBSERVED,
    checked: Mapping[NodeDesc, float] = _NOTHING_OBSERVED,
) -> tuple[NodeDesc | None, tuple[NodeDesc, ...], tuple[NodeDesc, ...]]:
    """Who watches everyone's heartbeats; the members before it known dead; whose board
    records to read before that is sure.

    Members in :attr:`~rdzv.core.RendezvousState.members_in_order`; the first one
    not known to be dead watches all the others (``node`` is alive to itself).
    Every other node watches only the members up to the watcher, so that a node's
    check costs a heartbeat or two, not the whole state's: where heartbeats go to
    a board and not to the state, the state's own heartbeats are soon old, and
    reading everyone's record on every check made a rendezvous of N nodes read
    N * N records per interval. A node that the watcher finds dead, the watcher
    writes out of the state; the watcher's own death, every node sees.

    ``checked`` holds when each node's board record was last read: a member whose
    heartbeat looks expired is dead only if its record, read after the expiry,
    had nothing newer (see :func:`confirmed_dead`). The last element of the result
    lists the members to read before the watcher is sure, in order: the first
    member that looks dead but is not known to be (the watcher, unless its record
    is newer), then, while a chain of dead members precedes it, as many more as
    were found dead so far. On a board, the state's heartbeats are those of the
    round's formation, soon all expired: reading every member before itself made
    each node read its prefix of the board, half of it on average, on every check
    (seed 1 of ``test_costs``: 377 records a node at 400 nodes). One record settles
    the usual case, a live watcher. A chain of dead watchers is read in batches
    that grow by the number of dead found, those found earlier read again with
    them: read one at a time, a chain longer than the reads a node makes in an
    interval was never resolved, each confirmation expiring before the next (seed
    30084).
    """
    expiry = settings.heartbeat_expiry
    expired_before = now - expiry
    dead: list[NodeDesc] = []
    unsure: list[NodeDesc] = []
    found_dead = 0  # members known dead, or found dead by a reading that has since aged
    for member in state.members_in_order:
        if member == node:
            return (unsure[0] if unsure else node), tuple(dead), tuple(unsure)
        beat = state.last_heartbeats[member]
        seen = observed.get(member)
        if seen is not None and seen > beat:
            beat = seen
        if beat >= expired_before:
            return (unsure[0] if unsure else member), tuple(dead), tuple(unsure)
        read_at = checked.get(member)
        if confirmed_dead(read_at, beat, now, settings):
            dead.append(member)
            found_dead += 1
            continue
        unsure.append(member)
        if read_at is not None and read_at > beat + expiry:
            found_dead += 1
        if len(unsure) > found_dead:
            return unsure[0], tuple(dead), tuple(unsure)
    return (unsure[0] if unsure else None), tuple(dead), tuple(unsure)


def confirmed_dead(
    checked: float | None, beat: float, now: float, settings: RendezvousSettings
) -> bool:
    """Whether a node whose latest known heartbeat is ``beat`` is known to be dead at ``now``.

    Its board record, read at ``checked`` (when the read was asked for), must have had
    nothing newer after the heartbeat expired, and that reading must be younger than
    the expiry: a node still in the state that beats again (its process resumed
    after a pause) is alive again, and a reading kept for ever would never see it
    (seed 64). Not younger than an interval, as it was: on a host so loaded that an
    answer waits a second to be handled, no reading was ever young enough, and the
    watcher of 1,024 nodes never dropped the one that crashed.
    """
    if checked is None:
        return False
    expiry = settings.heartbeat_expiry
    return checked > beat + expiry and now - checked < expiry


def is_evicted(state: RendezvousState, node: NodeDesc, joined: int | None) -> bool:
    """Whether ``node``, which took part in round ``joined``, is no longer in it.

    It was dropped as dead (a pause longer than the heartbeat expiry, a network
    partition), or the round moved on without it. Its launcher must rendezvous
    again; nothing else would tell it.
    """
    if joined is None:
        return False
    return state.round != joined or node not in state.participants


def num_nodes_waiting(
    state: RendezvousState, node: NodeDesc | None = None, joined: int | None = None
) -> int:
    """How many nodes a launcher should make room for by starting a new round.

    The wait list, as in torch, plus every participant that a complete round
    has lost (it died or left): torch counts only the wait list, so when a
    participant dies its survivors are never told to re-rendezvous and hang in
    their collective (pytorch issue 111646). A launcher that polls this number
    and restarts the round when it is above 0 recovers from both.

    With ``node`` and the round it ``joined``, a node that is no longer a
    participant of that round counts itself (see :func:`is_evicted`), so that its
    launcher rendezvous again instead of training in a round that has gone on
    without it.
    """
    missing = state.world_size - len(state.participants) if state.complete else 0
    waiting = len(state.wait_list) + max(missing, 0)
    if node is not None and is_evicted(state, node, joined) and node not in state.wait_list:
        waiting += 1
    return waiting
