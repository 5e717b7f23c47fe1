"""The legacy etcd rendezvous protocol: key paths, TTLs and state documents, as torch 2.13 has them.

Everything here is pure: no etcd, no clock. ``rdzv.legacy.rendezvous`` does the
I/O; this module says where the keys are, what the JSON state under
``active_version`` looks like in each phase, and how one phase's document
becomes the next.

The state goes ``setup -> joinable -> frozen -> final``; ``closed`` may replace
any of them. Its JSON is byte for byte what torch writes (``json.dumps`` with
its default separators, fields in torch's order), so torch nodes and rdzv nodes
take part in one rendezvous::

    {"status": "setup"}
    {"status": "joinable", "version": "3", "participants": [0, 1]}
    {"status": "frozen", "version": "3", "participants": [0, 1], "keep_alives": []}
    {"status": "final", "version": "3", "participants": [0, 1],
     "keep_alives": ["<prefix>run_<id>/rdzv/v_3/rank_0", ...], "num_workers_waiting": 0}

``version`` is a string (the text of the ``version_counter`` key); a rank is the
number of participants when the node joined.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal, get_args

import attrs

from rdzv.api import RendezvousStateError

__all__ = [
    "DEFAULT_ETCD_PREFIX",
    "FROZEN_TTL",
    "JOINABLE_TTL",
    "KEEP_ALIVE_TTL",
    "RUN_DIR_TTL",
    "SETUP",
    "SETUP_TTL",
    "LegacyPaths",
    "LegacyState",
    "Status",
    "add_keep_alive",
    "add_participant",
    "add_waiting",
    "close",
    "decode_state",
    "encode_state",
    "freeze",
    "joinable",
]

DEFAULT_ETCD_PREFIX: Final = "/torchelastic/p2p"
"""torch's default ``etcd_prefix``: jobs of both libraries meet under it."""

SETUP_TTL: Final = 5
"""Seconds a ``setup`` state lives: a node that dies while creating a round frees the key."""
FROZEN_TTL: Final = 10
"""Seconds a ``frozen`` state outlives its last write: a node that dies before confirming
ends the round."""
JOINABLE_TTL: Final = 10
"""Seconds a ``joinable`` state with at least ``min_nodes`` participants outlives its last
write; the node that waits out the last call renews it."""
KEEP_ALIVE_TTL: Final = 10
"""Seconds a participant's ``rank_<r>`` key outlives its last renewal."""
RUN_DIR_TTL: Final = 7200
"""Seconds the ``run_<id>`` directory lives, so an etcd that outlives jobs gets cleaned up."""

Status = Literal["setup", "joinable", "frozen", "final", "closed"]
_STATUSES: frozenset[str] = frozenset(get_args(Status))

# Which fields each status carries, in the order torch writes them. A closed
# state keeps whatever the state it closed had.
_FIELD_ORDER = ("status", "version", "participants", "keep_alives", "num_workers_waiting")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "setup": ("status",),
    "joinable": ("status", "version", "participants"),
    "frozen": ("status", "version", "participants", "keep_alives"),
    "final": _FIELD_ORDER,
}

MAX_DOCUMENT_SIZE: Final = 16 * 1024 * 1024
"""Largest state document accepted; anything larger is not a rendezvous state."""

_VERSION = re.compile(r"^[0-9]{1,18}$")
_PREFIX = re.compile(r"^(/[^/]+)*/?$")


def _with_slash(prefix: str) -> str:
    return prefix if prefix.endswith("/") else prefix + "/"


@attrs.frozen
class LegacyPaths:
    """The etcd keys of one run, spelled exactly as torch spells them.

    Spelling matters: participants' keep-alive keys are stored as text in the
    state and compared with the keys etcd lists, so ``prefix`` must be an
    absolute path without empty segments (etcd would normalise ``//`` and the
    comparison would fail).

    Raises:
        ValueError: the prefix is not an absolute etcd path, or the run id is empty.
    """

    prefix: str = attrs.field(converter=_with_slash)
    run_id: str

    def __attrs_post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"The rendezvous option 'etcd_prefix' ({self.prefix!r}) must be an absolute etcd "
                "path such as /torchelastic/p2p: starting with '/', without '//'."
            )
        if not self.run_id:
            raise ValueError("The run id must be a non-empty string.")

    def path(self, tail: str) -> str:
        """``<prefix>run_<run_id>/<tail>``, the way torch joins them."""
        return f"{self.prefix}run_{self.run_id}/{tail.lstrip('/')}"

    @property
    def run_dir(self) -> str:
        """The run's directory (with a TTL of :data:`RUN_DIR_TTL`)."""
        return self.path("")

    @property
    def rdzv_dir(self) -> str:
        """The directory of everything the rendezvous writes."""
        return self.path("rdzv")

    @property
    def active_version(self) -> str:
        """The key holding the JSON state of the current round."""
        return self.path("rdzv/active_version")

    @property
    def version_counter(self) -> str:
        """The key holding the last round number handed out."""
        return self.path("rdzv/version_counter")

    def round_dir(self, version: str) -> str:
        """The directory of round ``version``: keep-alive keys, extra data, the store."""
        return self.path(f"rdzv/v_{version}")

    def rank_key(self, version: str, rank: int) -> str:
        """The keep-alive key of ``rank`` in round ``version``."""
        return self.path(f"rdzv/v_{version}/rank_{rank}")

    def extra_data(self, version: str) -> str:
        """The key of round ``version``'s extra data (a JSON object)."""
        return self.path(f"rdzv/v_{version}/extra_data")

    def kv_dir(self, version: str) -> str:
        """The directory of round ``version``'s ``EtcdStore``."""
        return self.path(f"rdzv/v_{version}/kv")


@attrs.frozen
class LegacyState:
    """One state document under ``active_version``; absent fields are ``None``."""

    status: Status
    version: str | None = None
    participants: tuple[int, ...] | None = None
    keep_alives: tuple[str, ...] | None = None
    num_workers_waiting: int | None = None

    @property
    def round(self) -> int:
        """The round number (``version`` as an int), 0 for a state without one."""
        return int(self.version) if self.version is not None else 0

    def is_phase(self, status: Status, version: str | None) -> bool:
        """Whether this is state ``status`` of round ``version``."""
        return self.status == status and self.version == version


SETUP: Final = LegacyState("setup")
"""The placeholder a node writes while it creates a round."""


def joinable(version: str) -> LegacyState:
    """A new round that nodes may join."""
    return LegacyState("joinable", version, ())


def add_participant(
    state: LegacyState, min_nodes: int, max_nodes: int
) -> tuple[LegacyState, int, int | None]:
    """Add a node to a joinable round: the new state, the node's rank and the key's TTL.

    The round freezes when it reaches ``max_nodes``; from ``min_nodes`` on it gets
    a TTL, so that it ends if the node waiting out the last call dies.

    Raises:
        RendezvousStateError: the state is not joinable or is already full.
    """
    participants = _require(state.participants, "participants", state)
    if state.status != "joinable" or len(participants) >= max_nodes:
        raise RendezvousStateError(
            f"Cannot join the rendezvous state {encode_state(state)}: it is not joinable or "
            f"already has max_nodes ({max_nodes}) participants. All nodes of a job must use the "
            "same max_nodes."
        )
    rank = len(participants)
    joined = attrs.evolve(state, participants=(*participants, rank))
    if rank + 1 == max_nodes:
        return freeze(joined), rank, FROZEN_TTL
    return joined, rank, JOINABLE_TTL if rank + 1 >= min_nodes else None


def freeze(state: LegacyState) -> LegacyState:
    """Close the join window: the participants are fixed and must now confirm."""
    return attrs.evolve(state, status="frozen", keep_alives=())


def add_keep_alive(state: LegacyState, key: str) -> LegacyState:
    """Record a participant's confirmation; the last one makes the round final.

    Raises:
        RendezvousStateError: the state is not frozen.
    """
    keep_alives = _require(state.keep_alives, "keep_alives", state)
    participants = _require(state.participants, "participants", state)
    if state.status != "frozen":
        raise RendezvousStateError(
            f"Cannot confirm membership in the rendezvous state {encode_state(state)}: it is "
            "not frozen."
        )
    confirmed = attrs.evolve(state, keep_alives=(*keep_alives, key))
    if len(confirmed.keep_alives or ()) == len(participants):
        return attrs.evolve(confirmed, status="final", num_workers_waiting=0)
    return confirmed


def add_waiting(state: LegacyState) -> LegacyState:
    """Count one more node waiting for the next round of a final state.

    Raises:
        RendezvousStateError: the state is not final.
    """
    waiting = _require(state.num_workers_waiting, "num_workers_waiting", state)
    if state.status != "final":
        raise RendezvousStateError(
            f"Cannot wait for the next round in the rendezvous state {encode_state(state)}: it "
            "is not final."
        )
    return attrs.evolve(state, num_workers_waiting=waiting + 1)


def close(state: LegacyState | None) -> LegacyState:
    """The closed form of ``state`` (torch changes only the status); ``None``: no state yet."""
    if state is None:
        return LegacyState("closed")
    return attrs.evolve(state, status="closed")


def _require(value: Any, name: str, state: LegacyState) -> Any:
    if value is None:
        raise RendezvousStateError(
            f"The rendezvous state {encode_state(state)} has no '{name}' field."
        )
    return value


def encode_state(state: LegacyState) -> str:
    """The JSON text torch writes for ``state`` (same fields, order and separators)."""
    document: dict[str, Any] = {}
    for name in _FIELD_ORDER:
        value = getattr(state, name)
        if value is not None:
            document[name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(document)


def decode_state(text: str | None, where: str) -> LegacyState:
    """Parse and validate a state document read from ``where`` (an etcd key).

    Raises:
        RendezvousStateError: the text is not JSON, or not a state this protocol
            writes; the message says what is wrong and what to do.
    """
    if text is None:
        raise _state_error(where, "it is a directory or holds no value", text)
    if len(text) > MAX_DOCUMENT_SIZE:
        raise _state_error(where, f"it is larger than {MAX_DOCUMENT_SIZE} bytes", text)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _state_error(where, f"it is not JSON ({e})", text) from e
    if not isinstance(document, dict):
        raise _state_error(where, "it is not a JSON object", text)
    unknown = sorted(set(document) - set(_FIELD_ORDER))
    if unknown:
        raise _state_error(where, f"it has unknown fields {unknown}", text)
    status = document.get("status")
    if status not in _STATUSES:
        raise _state_error(where, f"its status {status!r} is not one of {sorted(_STATUSES)}", text)
    required = _REQUIRED.get(status)
    if required is not None and set(document) != set(required):
        raise _state_error(where, f"a {status} state has exactly the fields {list(required)}", text)
    return LegacyState(
        status=status,
        version=_field(document, "version", _is_version, "a string of digits", where, text),
        participants=_tuple_field(document, "participants", _is_count, where, text),
        keep_alives=_tuple_field(document, "keep_alives", _is_key, where, text),
        num_workers_waiting=_field(
            document, "num_workers_waiting", _is_count, "a non-negative integer", where, text
        ),
    )


def _is_version(value: object) -> bool:
    return isinstance(value, str) and bool(_VERSION.match(value))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_key(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _field(
    document: dict[str, Any], name: str, valid: Any, what: str, where: str, text: str
) -> Any:
    value = document.get(name)
    if value is not None and not valid(value):
        raise _state_error(where, f"its '{name}' ({value!r:.80}) is not {what}", text)
    return value


def _tuple_field(
    document: dict[str, Any], name: str, valid: Any, where: str, text: str
) -> tuple[Any, ...] | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(valid(item) for item in value):
        kind = "non-negative integers" if name == "participants" else "etcd keys"
        raise _state_error(where, f"its '{name}' is not a list of {kind}", text)
    return tuple(value)


def _state_error(where: str, problem: str, text: str | None) -> RendezvousStateError:
    shown = "nothing" if text is None else repr(text[:200])
    return RendezvousStateError(
        f"The legacy etcd rendezvous state at {where} is unreadable: {problem}. It holds "
        f"{shown}. Nothing was changed. If another program writes there, give this job its own "
        "etcd_prefix or run id; otherwise delete the key and restart the nodes."
    )
