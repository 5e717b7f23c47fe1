"""A simulated node's process, and an operation in flight on it."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from rdzv.core import NodeDesc, RendezvousSettings, protocol
from rdzv.core.effects import Effect, Fail, Finish
from rdzv.dynamic.perform import Memory

__all__ = ["Node", "Operation"]


@attrs.define
class Operation:
    """One operation in flight on a node."""

    progress: protocol.Progress
    on_end: Callable[[Operation, Finish | Fail], None]
    effect: Effect | None = None
    gave_up: bool = False
    """The operation could not take its node out in time (a ``leave_failed`` event)."""
    issued: float | None = None
    """True time its request in flight was sent (``None``: none, or a wait)."""
    lag: float = 0.0
    """The backend's lag its last decision took into account (``Context.lag``)."""


@attrs.define
class Node:
    """A node's process: what its protocol remembers, and what its shell is doing."""

    index: int
    desc: NodeDesc
    settings: RendezvousSettings
    skew: float
    slow: float
    memory: Memory = attrs.field(factory=Memory)
    joined: int | None = None
    started: bool = False
    crashed: bool = False
    exited: bool = False
    paused_until: float = 0.0
    joining: bool = False
    beating: bool = False
    beat_run: Operation | None = None
    beat_timer: int = 0
    """Numbers the node's heartbeat timers: a timer set again supersedes the last."""
    join_since: float | None = None
    """When its join under way started, by its clock (``None``: not joining)."""
    run: Operation | None = None
    """Its join, or its leave, in flight."""

    def knows_itself(self) -> bool:
        """Whether the last state it saw holds it."""
        return self.desc in self.memory.last.state.last_heartbeats
