"""What the protocol asks the shell to do, what the shell reports back, and what happened.

The protocol (:mod:`rdzv.core.protocol`) never touches a backend. Each step
returns one *effect*, a frozen record the shell performs (or the simulator, in
virtual time); the shell answers with an *outcome*, which the next step takes.
Alongside, a step may return *events*: what a log line or an operator would want
to know. After wsproto and h11: the core says what to do, the caller does it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rdzv.core.intents import LogRecord
from rdzv.core.model import NodeDesc, RendezvousState

__all__ = [
    "BeatWritten",
    "BeatsRead",
    "Changed",
    "CompareAndSet",
    "Effect",
    "Event",
    "Fail",
    "Failure",
    "Finish",
    "LogRead",
    "Outcome",
    "Post",
    "Posted",
    "ReadBeats",
    "ReadLog",
    "ReadState",
    "Sleep",
    "Slept",
    "Snapshot",
    "Started",
    "StateRead",
    "Unreachable",
    "WaitForChange",
    "WriteBeat",
    "Written",
]


@attrs.frozen
class Snapshot:
    """A state as the backend holds it, and the fencing token that names that version."""

    state: RendezvousState
    token: Any


# -- effects -------------------------------------------------------------------------


@attrs.frozen
class ReadState:
    """Read the state and its token. Outcome: :class:`StateRead`."""


@attrs.frozen
class CompareAndSet:
    """Write ``state`` if the stored token is still ``token``. Outcome: :class:`Written`."""

    state: RendezvousState
    token: Any


@attrs.frozen
class Post:
    """Append ``record`` to the intent log, into the segment that ``cursor`` names.
    Outcome: :class:`Posted`."""

    record: LogRecord
    cursor: int


@attrs.frozen
class ReadLog:
    """Read the intent log after position ``cursor``. Outcome: :class:`LogRead`."""

    cursor: int


@attrs.frozen
class WriteBeat:
    """Write this node's heartbeat record on the board, with time ``at``.
    Outcome: :class:`BeatWritten`."""

    at: float


@attrs.frozen
class ReadBeats:
    """Read the heartbeat records of ``nodes`` from the board. Outcome: :class:`BeatsRead`.

    ``at``: the node's clock when it asked. The records it gets are at least that
    recent, and no more is sure: the answer may wait for a loaded host to handle it.
    """

    nodes: tuple[NodeDesc, ...]
    at: float


@attrs.frozen
class WaitForChange:
    """Block until the state is no longer the one ``token`` names, or until ``until``.
    Outcome: :class:`Changed`."""

    token: Any
    until: float


@attrs.frozen
class Sleep:
    """Do nothing until ``until``. Outcome: :class:`Slept`."""

    until: float


@attrs.frozen
class Finish:
    """The operation is done; ``state`` is the last one seen (as the node decided on it)."""

    state: RendezvousState


class Failure(enum.Enum):
    """Why an operation ended without finishing."""

    CLOSED = "closed"
    TIMEOUT = "timeout"
    GRACEFUL_EXIT = "graceful_exit"
    UNREACHABLE = "unreachable"


@attrs.frozen
class Fail:
    """The operation ended with an error; ``message`` says what happened and what to do."""

    failure: Failure
    message: str
    state: RendezvousState


Effect = (
    ReadState
    | CompareAndSet
    | Post
    | ReadLog
    | WriteBeat
    | ReadBeats
    | WaitForChange
    | Sleep
    | Finish
    | Fail
)


# -- outcomes ------------------------------------------------------------------------


@attrs.frozen
class Started:
    """The first outcome of every operation: nothing has been done yet."""


@attrs.frozen
class StateRead:
    """The state read, or ``None`` when the backend holds none yet."""

    snapshot: Snapshot | None


@attrs.frozen
class Written:
    """A compare-and-set's answer: the state now stored (``None``: there is none) and
    whether it is the one written."""

    snapshot: Snapshot | None
    written: bool


@attrs.frozen
class Posted:
    """The record was appended."""


@attrs.frozen
class LogRead:
    """The records after the cursor, in log order, the position after the last one, and
    how many lines did not decode (skipped)."""

    records: Sequence[LogRecord]
    end: int
    bad: int = 0


@attrs.frozen
class BeatWritten:
    """The heartbeat record was written."""


@attrs.frozen
class BeatsRead:
    """The heartbeat records found, by node."""

    beats: Mapping[NodeDesc, float]


@attrs.frozen
class Changed:
    """A wait ended: the new state when the backend reported it, else ``None`` (read again)."""

    snapshot: Snapshot | None


@attrs.frozen
class Slept:
    """A sleep ended."""


@attrs.frozen
class Unreachable:
    """The effect failed: the backend could not be reached. It may have been applied."""

    message: str


Outcome = (
    Started
    | StateRead
    | Written
    | Posted
    | LogRead
    | BeatWritten
    | BeatsRead
    | Changed
    | Slept
    | Unreachable
)


# -- events --------------------------------------------------------------------------


@attrs.frozen
class Event:
    """Something worth a log line. ``kind`` is one word; ``level`` follows :mod:`logging`
    names (``debug``, ``info``, ``warning``); ``message`` is the line itself."""

    kind: str
    level: str
    message: str
