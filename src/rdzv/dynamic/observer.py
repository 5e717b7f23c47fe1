"""A node's own operations as they happen: the optional observer of a handler.

:meth:`DynamicRendezvousHandler.observe <rdzv.dynamic.handler.DynamicRendezvousHandler.observe>`
sets a callable that the node's executor calls with each state the node writes
(:class:`StateWritten`) and with the end of each operation (:class:`OperationEnded`).
The torchrun plug-in records them as torch's rendezvous events
(:mod:`rdzv.torch_events`); a watcher of the whole rendezvous needs no observer
(:func:`rdzv.watch`).

The observer runs on the thread of the operation (the keep-alive thread for
heartbeats), so it must return quickly. An exception from it is logged and
ignored: observing a rendezvous never breaks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs

from rdzv.api import RendezvousError
from rdzv.core import NodeDesc, RendezvousState
from rdzv.core.progress import Op

__all__ = ["Observation", "Observer", "OperationEnded", "StateWritten", "notify"]

logger = logging.getLogger(__name__)


@attrs.frozen
class StateWritten:
    """A compare-and-set of this node during ``op``, at ``at`` (the node's clock).

    ``before`` is the state the node decided on, ``after`` the state it tried to
    write; ``written`` says whether it was (else another node wrote first, and the
    node decides again). ``beats`` are the heartbeats the node knows of outside
    the state (the heartbeat board), for telling dead nodes from those that left
    (:func:`rdzv.core.events.events_between`).
    """

    op: Op
    before: RendezvousState
    after: RendezvousState
    written: bool
    at: float
    beats: Mapping[NodeDesc, float]


@attrs.frozen
class OperationEnded:
    """Operation ``op`` of this node ended: with the last state it saw, or with ``error``."""

    op: Op
    state: RendezvousState
    error: RendezvousError | None = None


Observation = StateWritten | OperationEnded
Observer = Callable[[Observation], None]


def notify(observer: Observer | None, observation: Observation, node: NodeDesc) -> None:
    """Call ``observer`` (if any) with ``observation``; log and ignore what it raises."""
    if observer is None:
        return
    try:
        observer(observation)
    except Exception:
        logger.warning(
            "Node %s: the rendezvous observer %r failed; the rendezvous goes on.",
            node,
            observer,
            exc_info=True,
        )
