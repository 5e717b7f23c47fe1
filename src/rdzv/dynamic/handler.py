"""``DynamicRendezvousHandler``: elastic rendezvous over any :class:`RendezvousBackend`.

The handler owns the node's identity, the keep-alive thread and the per-round
store; every decision is the core's, every backend round-trip the executor's.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable
from datetime import timedelta

from rdzv.api import (
    RendezvousConnectionError,
    RendezvousError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)
from rdzv.backends.base import RendezvousBackend
from rdzv.core import (
    NodeDesc,
    RendezvousSettings,
    RendezvousTimeout,
    num_nodes_waiting,
    pacing,
    protocol,
)
from rdzv.dynamic.executor import Clock, RendezvousOpExecutor, wall_clock
from rdzv.dynamic.keepalive import Heartbeats
from rdzv.dynamic.observer import Observer
from rdzv.options import refuse_none
from rdzv.store.base import Store, StoreError, StoreTimeoutError
from rdzv.store.prefix import PrefixStore

__all__ = ["DynamicRendezvousHandler", "create_handler"]

logger = logging.getLogger(__name__)

_local_ids = itertools.count()
_local_ids_lock = threading.Lock()


def _new_node(local_addr: str | None) -> NodeDesc:
    """A node id unique across hosts (address), processes (pid) and handlers (counter)."""
    with _local_ids_lock:
        local_id = next(_local_ids)
    return NodeDesc(local_addr or socket.getfqdn(), os.getpid(), local_id)


class DynamicRendezvousHandler(RendezvousHandler):
    """Elastic rendezvous: rounds of ``min_nodes..max_nodes`` nodes, heartbeats, re-rounds.

    Build it with :meth:`from_backend` or :func:`create_handler`.
    """

    def __init__(
        self,
        node: NodeDesc,
        settings: RendezvousSettings,
        backend_name: str,
        store: Store,
        backend: RendezvousBackend,
        clock: Clock = wall_clock,
    ) -> None:
        self._node = node
        self._settings = settings
        self._backend_name = backend_name
        self._store = store
        self._clock = clock
        self._executor = RendezvousOpExecutor(node, backend, settings, clock)
        self._heartbeat_lock = threading.Lock()
        """Held by each heartbeat and by a launcher's reads (torch's): a node polled four
        times a second while it beat once, and with the polls free, 1,023 agents read
        the state of etcd-v2 at full rate while the survivors re-formed, which then took
        12 to 34 s and at times never ended, against 11 to 13 s with the lock."""
        self._heartbeats = Heartbeats(node, settings, self._executor, clock, self._heartbeat_lock)
        if self._executor.has_board:
            self._executor.on_admitted = _weakly(self._heartbeats.nudge)
        self._joined: int | None = None
        """The round the last ``next_rendezvous`` returned, which the next one leaves."""

    @classmethod
    def from_backend(
        cls,
        run_id: str,
        store: Store,
        backend: RendezvousBackend,
        min_nodes: int,
        max_nodes: int,
        local_addr: str | None = None,
        timeout: RendezvousTimeout | None = None,
        keep_alive_interval: float = 5,
        keep_alive_max_attempt: int = 3,
        *,
        clock: Clock = wall_clock,
        backend_name: str | None = None,
    ) -> DynamicRendezvousHandler:
        """Create a handler for a new node of ``run_id`` (torch's signature).

        Args:
            run_id: the job's id.
            store: the store handed to nodes, under a per-round prefix.
            backend: holds the shared state.
            min_nodes, max_nodes: bounds of a round.
            local_addr: address this node advertises (default: its FQDN).
            timeout: the :class:`RendezvousTimeout` (default: torch's).
            keep_alive_interval: seconds between heartbeats.
            keep_alive_max_attempt: missed heartbeats before a node counts as dead.
            clock: source of the time, seconds since the epoch (tests inject one).
            backend_name: what :meth:`get_backend` returns (as torch's, ``backend.name``
                by default): the name the registry was asked for, which it checks.

        Raises:
            ValueError: invalid settings (empty run id, bad bounds or intervals).
        """
        settings = RendezvousSettings(
            run_id=run_id,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            timeout=timeout or RendezvousTimeout(),
            keep_alive_interval=timedelta(seconds=keep_alive_interval),
            keep_alive_max_attempt=keep_alive_max_attempt,
        )
        name = backend_name or backend.name
        return cls(_new_node(local_addr), settings, name, store, backend, clock)

    @property
    def settings(self) -> RendezvousSettings:
        """The settings this node runs with."""
        return self._settings

    @property
    def node(self) -> NodeDesc:
        """This node's identity in the state."""
        return self._node

    @property
    def round(self) -> int:
        """The round of the state this node saw last (after ``next_rendezvous``: its round)."""
        return self._executor.state.round

    def observe(self, observer: Observer | None) -> None:
        """Call ``observer`` with this node's writes and operation ends (``None``: stop)."""
        self._executor.observer = observer

    def get_backend(self) -> str:
        return self._backend_name

    def get_run_id(self) -> str:
        return self._settings.run_id

    def next_rendezvous(self) -> RendezvousInfo:
        """Leave the previous round (if any) and join until a round includes this node.

        Each round has its own store prefix, and rank 0 of each round publishes the
        master address for that round, so a node that arrives late or becomes rank
        0 in a later round gets the right address at once. A join that ends without
        a rank takes this node out of the rendezvous first, so that no later round
        counts it.
        """
        run_id = self._settings.run_id
        logger.info("Node %s joins the next round of rendezvous '%s'.", self._node, run_id)
        if self._executor.has_board:
            # A beat writes only this node's record on the board: the beats go on beside
            # the join, which sends none, and the join does not wait for a beat in flight
            # (on etcd-v2 at 1,024 nodes a beat took a second, and a join waited for it).
            self._heartbeats.joining()
        else:
            self._stop_heartbeats()  # a beat writes the state: the join sends its own
        deadline = self._clock() + self._settings.timeout.join.total_seconds()
        try:
            state = self._executor.run(protocol.join(deadline, leaving=self._joined))
        except RendezvousError:
            self._stop_heartbeats()
            raise  # the protocol ended the join, and withdrew where it had to
        except BaseException:
            self._stop_heartbeats()
            self._leave()  # interrupted midway: an intent of this node may be pending
            raise
        try:
            self._joined = state.round
            self._heartbeats.joined()
            rank, world_size = state.participants[self._node], state.world_size
            store = PrefixStore(f"torch.rendezvous.{run_id}.{state.round}", self._store)
            wait = timedelta(seconds=max(deadline - self._clock(), 1.0))
            addr = self._node.addr
            bootstrap = _bootstrap_info(rank, state.round, store, addr, run_id, wait)
        except BaseException as e:
            self._stop_heartbeats()
            if not isinstance(e, RendezvousConnectionError):
                self._leave()
            raise
        logger.info(
            "Node %s joined round %d of rendezvous '%s' as rank %d of %d.",
            self._node,
            state.round,
            run_id,
            rank,
            world_size,
        )
        return RendezvousInfo(store, rank, world_size, bootstrap)

    def _leave(self) -> None:
        """Take this node out of the rendezvous after ``next_rendezvous`` failed, lest its
        peers complete a round with it and wait for its address until its heartbeat
        expires. Best effort, a few seconds at most: else the expiry removes it."""
        try:
            self._executor.run(protocol.leave(self._clock() + pacing.LEAVE_TIMEOUT))
        except RendezvousError as e:
            logger.warning(
                "Node %s could not leave rendezvous '%s' after its join failed (%s); its "
                "peers will drop it when its heartbeat expires.",
                self._node,
                self._settings.run_id,
                e,
            )

    def is_closed(self) -> bool:
        with self._heartbeat_lock:
            return self._executor.run(protocol.read()).closed

    def set_closed(self) -> None:
        self._close()

    def num_nodes_waiting(self) -> int:
        """Nodes waiting for a new round, plus participants the current round lost.

        The second part is rdzv's: when a participant dies, the survivors learn it
        here and restart the round, where torch's never do. A node that is itself
        no longer a participant of the round it joined (dropped while it was
        paused, or the round went on without it) counts itself, so that its
        launcher calls ``next_rendezvous()`` again.
        """
        with self._heartbeat_lock:
            state = self._executor.run(protocol.read())
        return num_nodes_waiting(state, self._node, self._joined)

    def shutdown(self) -> bool:
        """Stop heartbeats and close the rendezvous (torch's semantics); False on failure."""
        self._stop_heartbeats()
        try:
            self._close()
        except RendezvousError as e:
            logger.warning(
                "Node %s failed to close rendezvous '%s' on shutdown: %s",
                self._node,
                self._settings.run_id,
                e,
            )
            return False
        return True

    def _stop_heartbeats(self) -> None:
        """Stop this node's keep-alive (torch's private name, which harnesses call)."""
        self._heartbeats.stop()

    def _close(self) -> None:
        deadline = self._clock() + self._settings.timeout.close.total_seconds()
        self._executor.run(protocol.close(deadline))
        logger.info("Node %s closed rendezvous '%s'.", self._node, self._settings.run_id)


def _weakly(method: Callable[[], None]) -> Callable[[], None]:
    """``method``, held weakly: the executor holding the keep-alive's nudge made a cycle
    that kept a dropped handler's node beating until the collector ran, and its peers
    never saw it die."""
    ref = weakref.WeakMethod(method)

    def call() -> None:
        bound = ref()
        if bound is not None:
            bound()

    return call


def _bootstrap_info(
    rank: int, round_: int, store: Store, addr: str, run_id: str, wait: timedelta
) -> RendezvousStoreInfo:
    """The round's master address, waited for no longer than ``wait``.

    Raises:
        RendezvousTimeoutError: rank 0 did not publish it (it died right after the
            round completed): the caller starts the next round.
        RendezvousConnectionError: the store cannot be reached.
    """
    try:
        return RendezvousStoreInfo.build(rank, store, addr, timeout=wait)
    except StoreTimeoutError as e:
        raise RendezvousTimeoutError(
            f"Rank 0 of round {round_} of rendezvous '{run_id}' did not publish its address "
            f"within {wait.total_seconds():.0f} s; it may have died. Call next_rendezvous() "
            "again to form a new round."
        ) from e
    except StoreError as e:
        raise RendezvousConnectionError(
            f"The store of rendezvous '{run_id}' failed while reading the address of round "
            f"{round_}: {e}"
        ) from e


def _seconds(params: RendezvousParameters, *keys: str) -> float | None:
    for key in keys:
        value = params.get_as_float(key)
        if value is not None:
            if value <= 0:
                raise ValueError(f"The rendezvous option '{key}' ({value}) must be positive.")
            return value
    return None


def create_handler(
    store: Store,
    backend: RendezvousBackend,
    params: RendezvousParameters,
    *,
    backend_name: str | None = None,
) -> DynamicRendezvousHandler:
    """Build a handler from launcher parameters (torch's names and defaults).

    ====================== ============================================= =======
    option                 meaning                                       default
    ====================== ============================================= =======
    join_timeout           seconds for ``next_rendezvous`` to complete   600
    last_call_timeout      extra wait for more nodes once min is reached 30
    close_timeout          seconds for closing to complete               30
    heartbeat_timeout      seconds for one keep-alive write              5
    keep_alive_interval    seconds between heartbeats                    5
    keep_alive_max_attempt missed heartbeats before a node is dead       3
    ====================== ============================================= =======

    Seconds may be fractions. A timeout given as ``None`` takes its default, as in
    torch; ``keep_alive_interval`` or ``keep_alive_max_attempt`` given as ``None``
    is refused, as torch refuses it. ``backend_name`` is what the handler's
    ``get_backend()`` returns (default ``backend.name``, as torch's).

    Raises:
        RendezvousOptionError: a keep-alive option given as ``None``.
        ValueError: an invalid option, named in the message.
    """
    refuse_none(params, "keep_alive_interval", "keep_alive_max_attempt")
    timeout = RendezvousTimeout(
        join=_seconds(params, "join_timeout"),
        last_call=_seconds(params, "last_call_timeout"),
        close=_seconds(params, "close_timeout"),
        heartbeat=_seconds(params, "heartbeat_timeout", "heartbeat"),
    )
    interval = _seconds(params, "keep_alive_interval")
    attempts = params.get_as_int("keep_alive_max_attempt", 3)
    if attempts is None or attempts < 1:
        raise ValueError(
            f"The rendezvous option 'keep_alive_max_attempt' ({attempts}) must be at least 1."
        )
    return DynamicRendezvousHandler.from_backend(
        params.run_id,
        store,
        backend,
        params.min_nodes,
        params.max_nodes,
        params.local_addr,
        timeout,
        keep_alive_interval=5 if interval is None else interval,
        keep_alive_max_attempt=attempts,
        backend_name=backend_name,
    )
