"""rdzv's rendezvous in torch's event stream: the torchrun plug-in's recorder.

torch's ``DynamicRendezvousHandler`` records what it does as
``torch.distributed.elastic.events.RdzvEvent`` records, sent to the event
destination ``dynamic_rendezvous`` (a ``logging.NullHandler`` unless a launcher
installs its own handler there, in which case torch records nothing at all). In
the plug-in, :class:`TorchEventRecorder` records the same events for rdzv's
handler, through ``torch.distributed.elastic.events.record_rdzv_event``: the same
``name`` (``dynamic_rendezvous.py:DynamicRendezvousHandler.next_rendezvous``...),
fields, node states and messages, at the same moments, so an event handler
written for torch's rendezvous sees rdzv's.

The moments of the handler (a join starts, ends with a rank or fails; a close; a
heartbeat; a failure of ``is_closed``, ``set_closed``, ``num_nodes_waiting`` or
``shutdown``) are torch's one for one. The changes to the state are recorded by
the node that writes them, one event per change of each state it writes (as
:func:`rdzv.core.events.events_between` derives them), then the write's outcome
(``run``: synced, or stale). rdzv's steward admits the nodes that posted join
intents, so one node may record ``_add_to_participants`` for several: the
message names the node added. Across all nodes a round gives the same events as
torch's; the nodes that record them may differ.

This module imports torch; only :mod:`rdzv.torch_plugin` imports it. Recording
never breaks a rendezvous: a failure to record is logged (once) and ignored.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback

from torch.distributed.elastic import events as torch_events
from torch.distributed.elastic.events.api import NodeState, RdzvEvent
from torch.distributed.elastic.events.handlers import get_logging_handler

from rdzv.api import RendezvousHandler
from rdzv.core import NodeDesc
from rdzv.core.events import (
    NodeDeclaredDead,
    NodeJoined,
    NodeLeft,
    RendezvousClosed,
    Role,
    RoundCompleted,
    events_between,
)
from rdzv.core.progress import Op
from rdzv.dynamic.handler import DynamicRendezvousHandler
from rdzv.dynamic.observer import Observation, OperationEnded, StateWritten

__all__ = ["TorchEventRecorder", "record_creation_failure"]

logger = logging.getLogger(__name__)

_HANDLER = "dynamic_rendezvous.py:DynamicRendezvousHandler"
_EXECUTOR = "dynamic_rendezvous.py:_DistributedRendezvousOpExecutor"
_HOLDER = "dynamic_rendezvous.py:_BackendRendezvousStateHolder"

# torch's name of each list in its method names, in its messages (when a node is added,
# then removed: torch's words), and whether its messages give the round after the current.
_LISTS: dict[Role, tuple[str, str, str, int]] = {
    "participant": ("participants", "participants", "participants", 0),
    "waiting": ("wait_list", "wait list", "wait list", 1),
    "redundant": ("redundancy_list", "redundancy list", "redundant list", 1),
}


def recording() -> bool:
    """Whether torch's rendezvous events go anywhere: torch skips them, as rdzv does,
    while the ``dynamic_rendezvous`` destination is a ``logging.NullHandler``."""
    try:
        handler = get_logging_handler("dynamic_rendezvous")
    except KeyError:  # the destination was removed: nothing to record to
        return False
    return not isinstance(handler, logging.NullHandler)


def _trace(error: BaseException | None) -> str:
    return "" if error is None else "".join(traceback.format_exception(error))


def record_creation_failure(run_id: str, error: BaseException) -> None:
    """Record that no handler could be made for ``run_id`` (torch's ``create_handler`` event)."""
    message = f"{type(error).__name__}: {error}"
    _record("dynamic_rendezvous.py:create_handler", run_id, message, NodeState.FAILED, error=error)


def _record(
    name: str,
    run_id: str,
    message: str,
    state: NodeState = NodeState.RUNNING,
    *,
    node: NodeDesc | None = None,
    rank: int | None = None,
    error: BaseException | None = None,
) -> bool:
    """Record one event as torch's ``_record`` does (by ``node``, else by this process);
    ``False`` if that failed (logged at debug level)."""
    try:
        if recording():
            event = RdzvEvent(
                name=name,
                run_id=run_id,
                message=message,
                hostname=socket.getfqdn() if node is None else node.addr,
                pid=os.getpid() if node is None else node.pid,
                node_state=state,
                rank=rank,
                local_id=None if node is None else node.local_id,
                error_trace=_trace(error),
            )
            torch_events.record_rdzv_event(event)
    except Exception:
        logger.debug("Could not record the torch rendezvous event %s.", name, exc_info=True)
        return False
    return True


class TorchEventRecorder:
    """Records one rdzv node's rendezvous as torch's ``DynamicRendezvousHandler`` does.

    Build it with :meth:`attach`. The plug-in's handler calls :meth:`joining`,
    :meth:`joined`, :meth:`failed` and :meth:`shutdown_failed`; the rdzv handler
    calls :meth:`observe` (see :mod:`rdzv.dynamic.observer`).
    """

    def __init__(self, run_id: str, node: NodeDesc | None, expiry: float) -> None:
        self._run_id = run_id
        self._node = node
        self._expiry = expiry
        self._round = 0
        self._close_error = "RendezvousError"
        self._warned = False

    @classmethod
    def attach(cls, handler: RendezvousHandler) -> TorchEventRecorder:
        """A recorder observing ``handler``. Only rdzv's ``DynamicRendezvousHandler`` has
        events: for any other (the legacy ``etcd`` one), as for torch's, it records none."""
        if not isinstance(handler, DynamicRendezvousHandler):
            return cls(handler.get_run_id(), None, 0.0)
        recorder = cls(handler.get_run_id(), handler.node, handler.settings.heartbeat_expiry)
        handler.observe(recorder.observe)
        return recorder

    def joining(self) -> None:
        """``next_rendezvous`` starts."""
        self._handler_event(
            "next_rendezvous",
            f"The node '{self._node}' attempts to join the next round of the rendezvous "
            f"'{self._run_id}'.",
        )

    def joined(self, rank: int, world_size: int) -> None:
        """``next_rendezvous`` returns ``rank`` in a world of ``world_size``."""
        self._handler_event(
            "next_rendezvous",
            f"The node '{self._node}' has joined round {self._round} of the rendezvous "
            f"'{self._run_id}' as rank {rank} in a world of size {world_size}.",
            rank=rank,
        )

    def failed(self, method: str, error: BaseException) -> None:
        """The handler's ``method`` raised ``error``."""
        message = f"{type(error).__name__}: {error}"
        self._handler_event(method, message, NodeState.FAILED, error=error)

    def shutdown_failed(self) -> None:
        """``shutdown`` returned ``False``: the rendezvous could not be closed."""
        self._handler_event(
            "shutdown",
            f"The node '{self._node}' has failed to shutdown the rendezvous '{self._run_id}' "
            f"due to an error of type {self._close_error}.",
            NodeState.FAILED,
        )

    def observe(self, observation: Observation) -> None:
        """The rdzv handler's observer: writes, heartbeats, closes and joined rounds."""
        if self._node is None:
            return
        if isinstance(observation, StateWritten):
            if recording():
                self._wrote(observation)
        elif observation.op is Op.JOIN and observation.error is None:
            self._round = observation.state.round
        elif observation.op is Op.KEEP_ALIVE:
            self._kept_alive(observation)
        elif observation.op is Op.CLOSE:
            self._closed(observation)

    def _kept_alive(self, ended: OperationEnded) -> None:
        target = f"the rendezvous '{self._run_id}'"
        if ended.error is None:
            message = f"The node '{self._node}' has sent a keep-alive heartbeat to {target}."
            self._handler_event("_keep_alive", message)
        else:
            message = (
                f"The node '{self._node}' has failed to send a keep-alive heartbeat to {target} "
                f"due to an error of type {type(ended.error).__name__}."
            )
            self._handler_event("_keep_alive", message, NodeState.FAILED, error=ended.error)

    def _closed(self, ended: OperationEnded) -> None:
        if ended.error is not None:
            self._close_error = type(ended.error).__name__
            return
        message = f"The node '{self._node}' has closed the rendezvous '{self._run_id}'."
        self._handler_event("_close", message, NodeState.SUCCEEDED)

    def _wrote(self, w: StateWritten) -> None:
        changes = events_between(w.before, w.after, at=w.at, expiry=self._expiry, beats=w.beats)
        dead = [f"'{e.node}'" for e in changes if isinstance(e, NodeDeclaredDead)]
        if dead:
            self._emit(
                f"{_HOLDER}.sync",
                f"As part of the sync operation the node(s) {', '.join(dead)} have been removed "
                f"from the rendezvous '{self._run_id}' since they had no heartbeat.",
            )
        for e in changes:
            if isinstance(e, NodeJoined):
                if e.previous == "participant":
                    self._changed_list(False, e.node, e.previous, w.before.round)
                self._changed_list(True, e.node, e.role, e.round)
            elif isinstance(e, NodeLeft):
                self._changed_list(False, e.node, e.role, e.round)
            elif isinstance(e, RoundCompleted | RendezvousClosed):
                self._marked(e)
        outcome = (
            "has successfully synced its local changes"
            if w.written
            else "has a stale state and failed to sync its local changes"
        )
        self._emit(
            f"{_EXECUTOR}.run",
            f"The node '{self._node}' {outcome} with other nodes in the rendezvous "
            f"'{self._run_id}'.",
        )

    def _changed_list(self, added: bool, node: NodeDesc, role: Role, round_: int) -> None:
        method, to_words, from_words, ahead = _LISTS[role]
        whom = "itself" if node == self._node else f"the node '{node}'"
        did = (
            f"added {whom} to the {to_words}" if added else f"removed {whom} from the {from_words}"
        )
        self._emit(
            f"{_EXECUTOR}._{'add_to' if added else 'remove_from'}_{method}",
            f"The node '{self._node}' {did} of round {round_ + ahead} of the rendezvous "
            f"'{self._run_id}'. Pending sync.",
        )

    def _marked(self, e: RoundCompleted | RendezvousClosed) -> None:
        if isinstance(e, RoundCompleted):
            method, what = "complete", f"round {e.round} of the rendezvous '{self._run_id}'"
            done = "complete"
        else:
            method, what, done = "closed", f"the rendezvous '{self._run_id}'", "closed"
        self._emit(
            f"{_EXECUTOR}._mark_rendezvous_{method}",
            f"The node '{self._node}' marked {what} as {done}. Pending sync.",
            NodeState.SUCCEEDED,
        )

    def _handler_event(
        self,
        method: str,
        message: str,
        state: NodeState = NodeState.RUNNING,
        *,
        rank: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self._node is not None:
            self._emit(f"{_HANDLER}.{method}", message, state, rank=rank, error=error)

    def _emit(
        self,
        name: str,
        message: str,
        state: NodeState = NodeState.RUNNING,
        *,
        rank: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        node = self._node
        if node is None:
            return
        recorded = _record(name, self._run_id, message, state, node=node, rank=rank, error=error)
        if not recorded and not self._warned:
            # Once: a broken destination would otherwise warn at every heartbeat.
            self._warned = True
            logger.warning(
                "Node %s could not record a torch rendezvous event (%s); the rendezvous goes "
                "on, and later failures are logged at debug level.",
                node,
                name,
                exc_info=True,
            )
