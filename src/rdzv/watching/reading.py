"""Reads of what nodes keep outside the state: the heartbeat board and the intent log.

Both are read without joining and without writing. The state says who is a
member; the board says when each member last beat (the state's own heartbeats
are those of its admission, soon old); the log holds the joins no state has
admitted yet (the nodes of a round that cannot reach ``min_nodes`` wait there).
"""

from __future__ import annotations

from collections.abc import Iterable

from rdzv.backends.base import HeartbeatBoard, IntentLog, RendezvousBackend
from rdzv.core import NodeDesc, RendezvousState
from rdzv.core.intents import JoinIntent, Withdrawal, decode_beat, decode_records, moves

__all__ = ["read_board", "read_pending"]


def read_board(backend: RendezvousBackend, nodes: Iterable[NodeDesc]) -> dict[NodeDesc, float]:
    """The heartbeat each of ``nodes`` last wrote to the board (those that have a record).

    One request whatever the number of nodes; nothing on a backend without a board.

    Raises:
        RendezvousConnectionError: the backend cannot be reached.
    """
    if not isinstance(backend, HeartbeatBoard):
        return {}
    named = {str(node): node for node in nodes}
    if not named:
        return {}
    records = backend.read_beats(sorted(named))
    return {
        named[name]: beat
        for name, record in records.items()
        if name in named and (beat := decode_beat(record)) is not None
    }


def read_pending(backend: RendezvousBackend, state: RendezvousState) -> tuple[JoinIntent, ...]:
    """The join intents after the state's cursor that would still place their node.

    The freshness of an intent is not judged here (that needs the run's settings);
    the caller shows its age. One request.

    Raises:
        RendezvousConnectionError: the backend cannot be reached.
    """
    if not isinstance(backend, IntentLog):
        return ()
    records, _ = backend.read_intents(state.intent_cursor)
    decoded, _ = decode_records(records)
    latest: dict[NodeDesc, JoinIntent] = {}
    for record in decoded:
        if isinstance(record, Withdrawal):
            latest.pop(record.node, None)  # its join ended: it waits no more
        elif moves(state, record):
            latest[record.node] = record
    return tuple(sorted(latest.values(), key=lambda i: i.node))
