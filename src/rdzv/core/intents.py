"""Joins and heartbeats that reach the state without each node writing it.

At scale, one compare-and-set per joining node and per heartbeat makes every node
fight for one key, and every write wakes every waiting node: the work grows with
the square of the node count. Backends that can (etcd, the TCP store) therefore
offer two side channels, and this module is their pure half:

- **Join intents.** A joining node posts a small record to an append-only log
  (no contention); whichever node next writes the state admits every pending
  intent in one compare-and-set (:func:`admit_intents`). The state records how
  far into the log it has admitted (``intent_cursor``).
- **Heartbeats.** A node refreshes its own heartbeat record instead of the shared
  state; readers merge the records into the state they decide on
  (:func:`merge_heartbeats`), so the shared state changes only when membership does.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.transitions import place_newcomers

__all__ = [
    "MAX_INTENT_SIZE",
    "JoinIntent",
    "admit_intents",
    "decode_beat",
    "decode_intents",
    "encode_beat",
    "encode_intent",
    "folder",
    "merge_heartbeats",
    "moves",
    "should_hold",
]

MAX_INTENT_SIZE = 4096
"""Longest intent record accepted; longer lines in the log are skipped."""


@attrs.frozen
class JoinIntent:
    """A node asking to join, and when it asked.

    ``leaves`` is the complete round the node took part in and leaves to join the
    next (:attr:`rdzv.core.Action.REJOIN`), ``None`` for a plain join.
    """

    node: NodeDesc
    posted: float
    leaves: int | None = None


def encode_intent(intent: JoinIntent) -> bytes:
    """One log record: a JSON array (``[addr, pid, local_id, posted]``, then the round
    it leaves, if any) and a newline."""
    node = intent.node
    record: list[object] = [node.addr, node.pid, node.local_id, intent.posted]
    if intent.leaves is not None:
        record.append(intent.leaves)
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _decode_intent(line: bytes) -> JoinIntent | None:
    # Checked before the cache, which must not keep a hostile megabyte line alive.
    return None if len(line) > MAX_INTENT_SIZE else _parse_intent(line)


@functools.lru_cache(maxsize=4096)
def _parse_intent(line: bytes) -> JoinIntent | None:
    """One record's intent (memoised: every node of a process that folds reads the
    same pending records, a thousand of them at a large rendezvous)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, list) or len(record) not in (4, 5):
        return None
    addr, pid, local_id, posted, *rest = record
    leaves = rest[0] if rest else None
    ints_ok = all(type(v) is int for v in (pid, local_id))
    if not (isinstance(addr, str) and addr and ints_ok):
        return None
    if type(posted) not in (int, float) or not math.isfinite(posted):
        return None
    if leaves is not None and (type(leaves) is not int or leaves < 0):
        return None
    return JoinIntent(NodeDesc(addr, pid, local_id), float(posted), leaves)


def decode_intents(records: Iterable[bytes]) -> tuple[list[JoinIntent], int]:
    """Parse log records (each one or more lines); return the intents and the count of bad lines.

    A bad line is skipped rather than raised: anyone who can append to the log
    could otherwise stop every join. Its node posts again after an interval.
    """
    intents: list[JoinIntent] = []
    bad = 0
    for record in records:
        for line in record.splitlines():
            if not line.strip():
                continue
            intent = _decode_intent(line)
            if intent is None:
                bad += 1
            else:
                intents.append(intent)
    return intents, bad


def admit_intents(
    state: RendezvousState,
    intents: Sequence[JoinIntent],
    cursor: int,
    settings: RendezvousSettings,
    now: float,
) -> RendezvousState:
    """Place every fresh intent's node as its own join would, and advance the cursor.

    Nodes are taken in log order; each goes where :func:`decide_join` sends a
    newcomer (participants, wait list or redundancy list), so a batch admits
    exactly what the same joins one by one would (a waiting node moves to the
    participants of a new round). Skipped: nodes whose join would not place them
    (participants, a redundant node waiting for room), intents older than the
    heartbeat expiry (their node gave up or died; a live one posts again), and
    everything once the rendezvous is closed.
    """
    if cursor < state.intent_cursor:
        raise ValueError(
            f"The intent cursor cannot move back (from {state.intent_cursor} to {cursor})."
        )
    joins = [(i.node, i.leaves) for i in _fresh(intents, settings, now)]
    new = place_newcomers(state, joins, settings, now)
    if cursor == state.intent_cursor and new is state:
        return state
    return attrs.evolve(new, intent_cursor=cursor)


def _fresh(
    intents: Sequence[JoinIntent], settings: RendezvousSettings, now: float
) -> list[JoinIntent]:
    expired_before = now - settings.heartbeat_expiry
    return [intent for intent in intents if intent.posted >= expired_before]


def moves(state: RendezvousState, intent: JoinIntent) -> bool:
    """Whether admitting ``intent`` into ``state`` would move its node."""
    role = state.role_of(intent.node)
    if role is None:
        return True
    if role == "waiting":
        return not state.complete
    leaves = intent.leaves is not None and intent.leaves == state.round
    return leaves and state.complete and role == "participant"


def folder(
    state: RendezvousState,
    intents: Sequence[JoinIntent],
    settings: RendezvousSettings,
    now: float,
) -> NodeDesc | None:
    """The node that should admit the pending ``intents``: the first one a fold would move.

    Every pending node could write the same fold, and all but one would lose the
    compare-and-set (a thousand lost writes of a thousand-node state). So the
    others wait for this one's write, and fold themselves only if it does not
    come (see the executor). ``None`` when no intent would move anyone.
    """
    return next((i.node for i in _fresh(intents, settings, now) if moves(state, i)), None)


def should_hold(
    state: RendezvousState,
    intents: Sequence[JoinIntent],
    settings: RendezvousSettings,
    now: float,
) -> bool:
    """Whether admitting ``intents`` now would be a write for nothing.

    While an incomplete round could not reach ``min_nodes`` even with every
    pending node, a fold changes no decision of any node: it only wakes every
    node of the round to read a larger state. Holding the fold until the round
    can reach ``min_nodes`` turns the tens of writes of a thousand nodes
    arriving over a few seconds into one. (The last call starts when the round
    reaches ``min_nodes``, as it would have.)
    """
    if state.closed or state.complete:
        return False
    joining = {i.node for i in _fresh(intents, settings, now) if moves(state, i)}
    return len(state.participants) + len(joining | state.wait_list) < settings.min_nodes


def encode_beat(when: float) -> bytes:
    """A heartbeat record: the time, as text."""
    return repr(float(when)).encode()


def decode_beat(value: bytes | str | None) -> float | None:
    """The time in a heartbeat record, or ``None`` when it is not one."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    try:
        when = float(text)
    except ValueError:
        return None
    return when if math.isfinite(when) else None


def merge_heartbeats(state: RendezvousState, observed: Mapping[NodeDesc, float]) -> RendezvousState:
    """The state with each member's heartbeat raised to the newest one observed.

    Only members are touched, and a heartbeat never moves back: a stale record
    cannot revive a node the state already dropped, nor age a live one.
    """
    fresher = {
        node: beat
        for node, beat in observed.items()
        if beat > state.last_heartbeats.get(node, math.inf)
    }
    if not fresher:
        return state
    return attrs.evolve(state, last_heartbeats={**state.last_heartbeats, **fresher})
