"""The intent log and the heartbeat board: joins and heartbeats outside the state.

At scale, one compare-and-set per joining node and per heartbeat makes every node
fight for one key, and every write wakes every waiting node: the work grows with
the square of the node count. Backends that can (etcd, the TCP store) therefore
offer two side channels, and this module is their pure half (the words are
defined in the glossary of ``docs/concepts.rst``):

- **The intent log.** A joining node appends a *join intent* (no contention); a
  node that leaves before it was placed appends a *withdrawal*. One *admission*
  places every pending record in one compare-and-set (:func:`admit`), and the
  state's *cursor* records how far into the log it has admitted. The log is kept
  in *segments*: a position is ``segment * LOG_SEGMENT_SPAN + offset``.
- **The steward.** Every pending node could write the same admission, and all
  but one compare-and-set would fail. So one node, the steward, writes it
  (:func:`steward`), and holds it while it would change no decision
  (:func:`should_hold`); the others wait, for a while, for its write.
- **The heartbeat board.** A node refreshes its own heartbeat record instead of
  the shared state; readers merge the records into the state they decide on
  (:func:`merge_heartbeats`), so the shared state changes only when membership does.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.transitions import Draft

__all__ = [
    "LOG_SEGMENT_SPAN",
    "MAX_RECORD_SIZE",
    "JoinIntent",
    "LogRecord",
    "Withdrawal",
    "admit",
    "decode_beat",
    "decode_records",
    "encode_beat",
    "encode_record",
    "merge_heartbeats",
    "moves",
    "needs_fence",
    "pending_joins",
    "segment_of",
    "should_hold",
    "steward",
]

MAX_RECORD_SIZE = 4096
"""Longest log record accepted; longer lines in the log are skipped."""

LOG_SEGMENT_SPAN = 1 << 40
"""A log position is ``segment * LOG_SEGMENT_SPAN + offset`` within the segment.

A backend whose log never rolls over stays in segment 0. An offset is a count
(records, bytes, or etcd's index, which counts every change of a cluster): 2**40
is more than etcd reaches in years at ten thousand writes a second.
"""

_WITHDRAWN = "withdrawn"


@attrs.frozen
class JoinIntent:
    """A node asking to join, and when it asked (by its own clock).

    ``leaves`` is the complete round the node took part in and leaves to join the
    next (:attr:`rdzv.core.Action.REJOIN`), ``None`` for a plain join.
    """

    node: NodeDesc
    posted: float
    leaves: int | None = None


@attrs.frozen
class Withdrawal:
    """A node taking back its join intents: its join ended without a rank.

    Every intent of the node before it in the log is void, and the node leaves
    whichever list of the state holds it. Later intents count again.
    """

    node: NodeDesc
    posted: float


LogRecord = JoinIntent | Withdrawal


def segment_of(position: int) -> int:
    """The segment that log position ``position`` lies in."""
    return position // LOG_SEGMENT_SPAN


def encode_record(record: LogRecord) -> bytes:
    """One log line: a JSON array and a newline.

    A join intent is ``[addr, pid, local_id, posted]``, then the round it leaves if
    any; a withdrawal is ``[addr, pid, local_id, posted, "withdrawn"]``.
    """
    node = record.node
    line: list[object] = [node.addr, node.pid, node.local_id, record.posted]
    if isinstance(record, Withdrawal):
        line.append(_WITHDRAWN)
    elif record.leaves is not None:
        line.append(record.leaves)
    return json.dumps(line, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _decode_record(line: bytes) -> LogRecord | None:
    # Checked before the cache, which must not keep a hostile megabyte line alive.
    return None if len(line) > MAX_RECORD_SIZE else _parse_record(line)


@functools.lru_cache(maxsize=1 << 16)
def _parse_record(line: bytes) -> LogRecord | None:
    """One line's record (memoised: every node of a process that admits reads the
    same pending lines, a thousand of them at a large rendezvous). Room for a log of
    65,536 lines (a few MB): a smaller cache thrashed once the log outgrew it, and the
    ten thousand nodes of a simulation each kept their own copy of every record
    (24 GB at 10,000 nodes, until the kernel killed it)."""
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, list) or len(fields) not in (4, 5):
        return None
    addr, pid, local_id, posted, *rest = fields
    if not (isinstance(addr, str) and addr and all(type(v) is int for v in (pid, local_id))):
        return None
    if not addr.isprintable():  # pending joins reach terminals: no escape sequences
        return None
    if type(posted) not in (int, float) or not math.isfinite(posted):
        return None
    node = NodeDesc(addr, pid, local_id)
    if not rest:
        return JoinIntent(node, float(posted))
    if rest[0] == _WITHDRAWN:
        return Withdrawal(node, float(posted))
    leaves = rest[0]
    if type(leaves) is not int or leaves < 0:
        return None
    return JoinIntent(node, float(posted), leaves)


def decode_records(chunks: Iterable[bytes]) -> tuple[list[LogRecord], int]:
    """Parse log chunks (each one or more lines); return the records and the count of bad lines.

    A bad line is skipped rather than raised: anyone who can append to the log
    could otherwise stop every join. Its node posts again after an interval.
    """
    records: list[LogRecord] = []
    bad = 0
    for chunk in chunks:
        for line in chunk.splitlines():
            if not line.strip():
                continue
            record = _decode_record(line)
            if record is None:
                bad += 1
            else:
                records.append(record)
    return records, bad


def _fresh_since(settings: RendezvousSettings, now: float) -> float:
    """The oldest posting time of a join intent still young enough to admit: its node
    posted it within the heartbeat expiry, so it was alive then, as a heartbeat would say."""
    return now - settings.heartbeat_expiry


def admit(
    state: RendezvousState,
    records: Sequence[LogRecord],
    cursor: int,
    settings: RendezvousSettings,
    now: float,
    asked: float | None = None,
    own: NodeDesc | None = None,
) -> RendezvousState:
    """Apply every pending record, as each node's own step would; move the cursor.

    ``asked``: the time as of which an intent is judged fresh (``None``: ``now``), as
    :func:`pending_joins` judges it: when the log was asked for, or a completion's
    check of every member (see :mod:`rdzv.core.joining`). ``own``: the node admitting,
    whose intents are fresh whatever their age, as it is alive: a node whose post and
    log read took the expiry between them found its own intent expired at each log
    read, posted it again, and never joined (seed 310724).

    - A fresh join intent places its node where :func:`rdzv.core.decide_join` would
      (a node leaving the current complete round leaves it first; the last one out
      starts the next round, which the waiting nodes join at once). The node's
      heartbeat is the intent's time: a node that died after posting expires as
      it would have.
    - A withdrawal takes its node out of whichever list holds it, before any join
      of the batch is placed; the node's intents before it are void.
    - Skipped: intents older than the heartbeat expiry (their node gave up or
      died; a live one posts again), intents of nodes a join would not move, and
      everything once the rendezvous is closed.

    Returns ``state`` itself when nothing moves and the cursor stays.

    Raises:
        ValueError: ``cursor`` is behind the state's.
    """
    if cursor < state.intent_cursor:
        raise ValueError(
            f"The intent cursor cannot move back (from {state.intent_cursor} to {cursor})."
        )
    draft = Draft.of(state)
    if not state.closed:
        # Withdrawals first: a node's leave is concurrent with the others' joins, so
        # taking it first is an order the nodes could have had, and the one that never
        # completes a round with a node that is leaving it. Its intents before its last
        # withdrawal are void; those after count again.
        last_withdrawal = {r.node: i for i, r in enumerate(records) if isinstance(r, Withdrawal)}
        # All of them are out before the next round takes in the wait list: one by one,
        # the last participant's leave would start it with a waiting node whose own
        # withdrawal comes later, and that node would leave a gap in its ranks.
        draft.drop([node for node in last_withdrawal if node in draft.beats], settings)
        if not draft.complete and draft.wait_list:
            draft.promote(settings, now)
        oldest = _fresh_since(settings, now if asked is None else asked)
        for i, record in enumerate(records):
            if (
                isinstance(record, JoinIntent)
                and (record.posted >= oldest or record.node == own)
                and i > last_withdrawal.get(record.node, -1)
            ):
                _join(draft, record, settings, now)
    if not draft.changed:
        return state if cursor == state.intent_cursor else attrs.evolve(state, intent_cursor=cursor)
    return draft.build(state, intent_cursor=cursor)


def _join(draft: Draft, intent: JoinIntent, settings: RendezvousSettings, now: float) -> None:
    node = intent.node
    if draft.complete and intent.leaves == draft.round and node in draft.participants:
        draft.leave(node, settings, now)
    if node in draft.participants or node in draft.redundant:
        return
    if draft.complete and node in draft.wait_list:
        return
    draft.place(node, settings, now, intent.posted)


def moves(state: RendezvousState, intent: JoinIntent) -> bool:
    """Whether admitting ``intent`` into ``state`` would move its node."""
    role = state.role_of(intent.node)
    if role is None:
        return True
    if role == "waiting":
        return not state.complete
    leaves = intent.leaves is not None and intent.leaves == state.round
    return leaves and state.complete and role == "participant"


def pending_joins(
    state: RendezvousState,
    records: Sequence[LogRecord],
    settings: RendezvousSettings,
    now: float,
    own: NodeDesc | None = None,
) -> dict[NodeDesc, JoinIntent]:
    """The nodes an admission of ``records`` would move, each with its first such intent,
    in log order; a withdrawal cancels the intents of its node before it.

    ``now`` is the time as of which an intent is judged fresh: when the records were
    asked for. Judged by the time the answer was handled, a node whose log reads, beat
    and post each took a second (keep-alive 1 s x 3) found its own intent expired at
    every read, posted it again, and never joined (a simulated node whose round trips
    took a second). ``own``: the node asking, whose intents are fresh to it whatever
    their age (see :func:`admit`).
    """
    pending: dict[NodeDesc, JoinIntent] = {}
    if state.closed:
        return pending
    oldest = _fresh_since(settings, now)
    members = state.last_heartbeats  # every member: a stranger's intent always moves it
    for record in records:
        if isinstance(record, Withdrawal):
            pending.pop(record.node, None)
        elif (
            (record.posted >= oldest or record.node == own)
            and record.node not in pending
            and (record.node not in members or moves(state, record))
        ):
            pending[record.node] = record
    return pending


def steward(state: RendezvousState, *, rejoining: bool = False) -> NodeDesc | None:
    """The node expected to write the next admission, and the completion of a round.

    The smallest participant of an incomplete round, which waits in its own join
    for the round to complete; in a complete round, the smallest node of the wait
    list, which waits for the next round. With an empty wait list, the participants
    of a complete round are training, and only a node that leaves the round
    (``rejoining``: the survivors of a failure) can expect the smallest of them to
    rejoin too. ``None`` when the state names nobody: a node that finds no steward
    places itself then, and the winner of that write is the steward.
    """
    if state.closed:
        return None
    if not state.complete:
        return state.first_participant
    if state.first_waiting is not None:
        return state.first_waiting
    return state.first_participant if rejoining else None


def should_hold(
    state: RendezvousState,
    records: Sequence[LogRecord],
    settings: RendezvousSettings,
    now: float,
    pending: Mapping[NodeDesc, JoinIntent] | None = None,
) -> bool:
    """Whether admitting ``records`` now would be a write for nothing.

    ``pending``: :func:`pending_joins` of the same arguments, when the caller has it
    (a scan of the whole log: at a thousand nodes, most of a pending node's step).

    An admission that changes no decision of any node only wakes every node of the
    round to read a larger state. The steward holds it (for one keep-alive interval
    at most, see :mod:`rdzv.core.joining`):

    - while an incomplete round could not reach ``min_nodes`` even with every
      pending node: the tens of writes of a thousand nodes arriving over a few
      seconds become one;
    - while the survivors of a complete round that every participant already
      knows to restart (it lost a node, or nodes wait) leave it, and some
      participant has not yet: until the last one leaves, the leavers only wait,
      and the next round starts with the batch that takes out the last. A
      newcomer, or a leaver no one else knows of, is admitted at once (the
      participants learn of it from the wait list).
    """
    if state.closed:
        return False
    if pending is None:
        pending = pending_joins(state, records, settings, now)
    if state.complete:
        leaving = {n for n, i in pending.items() if i.leaves == state.round}
        if len(leaving) < len(pending):
            return False  # a newcomer
        # Only while every participant already sees a reason to rejoin (the round lost
        # a node, or nodes wait): otherwise these leavers in the wait list are how the
        # others learn it.
        told = bool(state.wait_list) or state.world_size > len(state.participants)
        return told and bool(leaving) and not leaving.issuperset(state.participants)
    joining = pending.keys() | state.wait_list
    return len(state.participants) + len(joining) < settings.min_nodes


def needs_fence(state: RendezvousState, records: Sequence[LogRecord], node: NodeDesc) -> bool:
    """Whether ``node``, leaving, must write the state to make its leave final.

    It must when the state holds it, or when the pending ``records`` hold an
    intent of it: an admission that read that intent before the node's withdrawal
    could otherwise still be written and place the node after it left. Writing
    the state after the withdrawal makes such an admission lose its
    compare-and-set; the admission that follows reads the withdrawal.
    """
    if state.closed:
        return False
    if state.role_of(node) is not None:
        return True
    return any(isinstance(r, JoinIntent) and r.node == node for r in records)


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
