"""The rendezvous state as bytes, and back: versioned, validated, never pickled.

Layout: the 4-byte magic ``RDZV``, then zlib-compressed JSON of the wire record
:class:`_WireV1` (``cattrs`` turns it into the state and back). Each node is a
short array ``[addr, pid, local_id, heartbeat]`` (participants add their rank),
so a state of 1000 nodes stays around 15 KB where torch's pickle reaches 160 KB.

Decoding trusts nothing: whoever can write to the backend must not be able to
run code or crash a node with an unexpected exception. Every value that is not a
state this version wrote raises :class:`RendezvousStateError` saying why; sizes
are bounded before anything is allocated for them.
"""

from __future__ import annotations

import collections
import json
import math
import zlib
from typing import Any

import attrs
import cattrs

from rdzv.api import RendezvousStateError
from rdzv.core.model import NodeDesc, RendezvousState

__all__ = [
    "MAGIC",
    "MAX_DECODED_SIZE",
    "MAX_ENCODED_SIZE",
    "SCHEMA_VERSION",
    "decode_state",
    "encode_state",
]

MAGIC = b"RDZV"
SCHEMA_VERSION = 1
MAX_ENCODED_SIZE = 4 * 1024 * 1024
"""Largest encoded state accepted (about 250 000 nodes); anything larger is corrupt."""
MAX_DECODED_SIZE = 64 * 1024 * 1024
"""Largest JSON a state may inflate to: bounds the memory a compression bomb can take."""

_REMEDY = (
    "Nothing was run or changed. If this key belongs to another program, give rdzv its own "
    "key (another run id or etcd_prefix); otherwise overwrite it with `rdzv close --force` "
    "(or delete the key), then restart the nodes with a new run id."
)

_Node = tuple[str, int, int, float]
_Participant = tuple[str, int, int, float, int]


@attrs.frozen
class _WireV1:
    """Schema version 1 of the encoded state."""

    version: int
    round: int
    complete: bool
    deadline: float | None
    closed: bool
    world_size: int
    participants: list[_Participant]
    wait_list: list[_Node]
    redundancy_list: list[_Node]
    intent_cursor: int


def _strict(kind: type[Any]) -> Any:
    def structure(value: Any, _: type[Any]) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a boolean")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


_SHOWN_RANKS = 10
"""Wrong ranks an error names; a state of thousands of nodes would fill a screen."""

_converter = cattrs.Converter(forbid_extra_keys=True)
for _kind in (int, float, bool, str):
    _converter.register_structure_hook(_kind, _strict(_kind))


def _corrupt(reason: str) -> RendezvousStateError:
    return RendezvousStateError(f"The rendezvous state is corrupt: {reason}. {_REMEDY}")


def encode_state(state: RendezvousState) -> bytes:
    """Encode ``state``; equal states give equal bytes (lists are sorted).

    Times are written as floats: a state built with ``5`` equals one with ``5.0``
    and must encode the same.
    """

    def node(n: NodeDesc) -> _Node:
        return (n.addr, n.pid, n.local_id, float(state.last_heartbeats[n]))

    wire = _WireV1(
        version=SCHEMA_VERSION,
        round=state.round,
        complete=state.complete,
        deadline=None if state.deadline is None else float(state.deadline),
        closed=state.closed,
        world_size=state.world_size,
        participants=[(*node(n), state.participants[n]) for n in sorted(state.participants)],
        wait_list=[node(n) for n in sorted(state.wait_list)],
        redundancy_list=[node(n) for n in sorted(state.redundancy_list)],
        intent_cursor=state.intent_cursor,
    )
    text = json.dumps(_converter.unstructure(wire), separators=(",", ":"), allow_nan=False)
    return MAGIC + zlib.compress(text.encode("utf-8"), 6)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_DECODED_SIZE)
    except zlib.error as e:
        raise _corrupt(f"the compressed payload is damaged ({e})") from e
    if inflater.unconsumed_tail:
        raise _corrupt(f"it inflates to more than {MAX_DECODED_SIZE} bytes")
    if not inflater.eof:
        raise _corrupt("the compressed payload is truncated")
    if inflater.unused_data:
        raise _corrupt("there are bytes after the end of the compressed payload")
    return text


def _parse(data: bytes) -> dict[str, Any]:
    if not data:
        raise _corrupt("the value is empty")
    if len(data) > MAX_ENCODED_SIZE:
        raise _corrupt(f"it is {len(data)} bytes, more than the limit of {MAX_ENCODED_SIZE}")
    if not data.startswith(MAGIC):
        if data[:1] == b"\x80":
            raise _corrupt(
                "it is a Python pickle (torch's format, or a planted payload); rdzv never "
                "unpickles. Do not point rdzv and torch's dynamic rendezvous at the same key"
            )
        raise _corrupt(f"it does not start with {MAGIC!r}; it was not written by rdzv")
    try:
        document = json.loads(_inflate(data[len(MAGIC) :]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _corrupt(f"the payload is not JSON ({e})") from e
    if not isinstance(document, dict):
        raise _corrupt(f"expected a JSON object, got {type(document).__name__}")
    version = document.get("version")
    if version != SCHEMA_VERSION:
        raise _corrupt(
            f"it has schema version {version!r}, and this rdzv reads version {SCHEMA_VERSION}; "
            "run the same rdzv version on every node"
        )
    return document


def _check_time(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise _corrupt(f"{what} is not a finite time")


def _bad_ranks(ranks: list[int], world_size: int) -> str:
    counts = collections.Counter(ranks)
    bad = sorted(r for r, n in counts.items() if n > 1 or not 0 <= r < world_size)
    shown = ", ".join(map(str, bad[:_SHOWN_RANKS])) + (", ..." if len(bad) > _SHOWN_RANKS else "")
    return (
        f"{len(ranks)} participants hold ranks that are not distinct ranks below the world "
        f"size {world_size} (duplicated or out of range: {shown})"
    )


def _to_state(wire: _WireV1) -> RendezvousState:
    if wire.round < 0 or wire.world_size < 0 or wire.intent_cursor < 0:
        raise _corrupt("the round, the world size and the intent cursor cannot be negative")
    _check_time(wire.deadline, "the last-call deadline")
    heartbeats: dict[NodeDesc, float] = {}
    participants: dict[NodeDesc, int] = {}
    lists: list[set[NodeDesc]] = [set(), set()]

    def admit(entry: _Node, where: str) -> NodeDesc:
        if not entry[0].isprintable():  # it reaches terminals: no escape sequences
            shown = f"{entry[0]!r} (in {where})"
            raise _corrupt(f"a node address holds a character that is not printable: {shown}")
        node = NodeDesc(entry[0], entry[1], entry[2])
        if node in heartbeats:
            raise _corrupt(f"node {node} appears twice (again in {where})")
        _check_time(entry[3], f"the heartbeat of node {node}")
        heartbeats[node] = entry[3]
        return node

    for addr, pid, local_id, beat, rank in wire.participants:
        participants[admit((addr, pid, local_id, beat), "participants")] = rank
    for members, entries, where in zip(
        lists, (wire.wait_list, wire.redundancy_list), ("wait_list", "redundancy_list"), strict=True
    ):
        members.update(admit(entry, where) for entry in entries)

    ranks = list(participants.values())
    if wire.complete:
        if len(set(ranks)) != len(ranks) or any(not 0 <= r < wire.world_size for r in ranks):
            raise _corrupt(_bad_ranks(ranks, wire.world_size))
    elif any(ranks) or wire.world_size:
        raise _corrupt("an incomplete round cannot have ranks or a world size")
    return RendezvousState(
        round=wire.round,
        complete=wire.complete,
        deadline=wire.deadline,
        closed=wire.closed,
        participants=participants,
        wait_list=frozenset(lists[0]),
        redundancy_list=frozenset(lists[1]),
        last_heartbeats=heartbeats,
        world_size=wire.world_size,
        intent_cursor=wire.intent_cursor,
    )


def decode_state(data: bytes) -> RendezvousState:
    """Decode bytes written by :func:`encode_state`.

    The result is immutable, so equal bytes may share one decoded state; the shell
    does that (:func:`rdzv.dynamic.perform.decode_once`), this function keeps none.

    Raises:
        RendezvousStateError: ``data`` is empty, too large, not rdzv's format,
            damaged, of another schema version, or describes an impossible state;
            the message names the reason and, for a bad field, its path.
    """
    document = _parse(bytes(data))
    try:
        wire = _converter.structure(document, _WireV1)
    except Exception as e:
        if isinstance(e, cattrs.BaseValidationError):
            details = "; ".join(cattrs.transform_error(e))
        else:
            details = str(e)
        raise _corrupt(
            f"the fields do not match schema version {SCHEMA_VERSION} ({details})"
        ) from e
    return _to_state(wire)
