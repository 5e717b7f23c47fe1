"""The static rendezvous (backend ``static``): a fixed world with ranks given up front.

There is nothing to agree on: each node is told its rank (``rank`` option) and
the world size is ``max_nodes``. Rank 0 hosts rdzv's TCP store at the endpoint;
the others connect to it. It is torch's ``static_tcp_rendezvous`` with rdzv's
store, for jobs whose nodes are known in advance (``torchrun --node-rank``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from rdzv.api import (
    RendezvousConnectionError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)
from rdzv.endpoint import parse_rendezvous_endpoint
from rdzv.options import refuse_none
from rdzv.store.base import Store, StoreError, StoreTimeoutError
from rdzv.store.prefix import PrefixStore
from rdzv.store.tcp import TCPStore

__all__ = ["DEFAULT_TIMEOUT", "StaticTCPRendezvous", "create_rdzv_handler", "create_static_handler"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 600
"""torch's default ``timeout`` of the static rendezvous, in seconds."""


class StaticTCPRendezvous(RendezvousHandler):
    """A rendezvous of a fixed world over a TCP store hosted by rank 0 (torch's signature).

    The store is created on the first :meth:`next_rendezvous` and kept for the
    later ones; trainers may share it (``use_agent_store``). Every call returns
    the same rank and world size: a static world has no second round.
    """

    def __init__(
        self,
        master_addr: str,
        master_port: int,
        rank: int,
        world_size: int,
        run_id: str,
        timeout: int,
    ) -> None:
        self.master_addr = master_addr
        self.master_port = master_port
        self.rank = rank
        self.world_size = world_size
        self.run_id = run_id
        self.timeout = timedelta(seconds=timeout)
        self._store: TCPStore | None = None

    def get_backend(self) -> str:
        return "static"

    @property
    def use_agent_store(self) -> bool:
        """``True``: the store of the rendezvous is the one trainers bootstrap from."""
        return True

    def next_rendezvous(self) -> RendezvousInfo:
        """Connect to (rank 0: host) the TCP store and return this node's fixed rank.

        Rank 0 returns once all ``world_size`` nodes have connected, like torch's.

        Raises:
            RendezvousTimeoutError: not every node connected within ``timeout``.
            RendezvousConnectionError: rank 0 could not listen at the endpoint, or
                another rank found nothing listening there within ``timeout``.
        """
        if self._store is None:
            self._store = self._open_store()
        store: Store = PrefixStore(self.run_id, self._store)
        # Trainers bootstrap from the agents' store itself, so its address is the
        # master address.
        bootstrap = RendezvousStoreInfo(self.master_addr, self.master_port)
        return RendezvousInfo(store, self.rank, self.world_size, bootstrap)

    def _open_store(self) -> TCPStore:
        address = f"{self.master_addr}:{self.master_port}"
        logger.info(
            "Static rendezvous '%s': rank %d opens the TCP store at %s.",
            self.run_id,
            self.rank,
            address,
        )
        try:
            return TCPStore(
                self.master_addr,
                self.master_port,
                self.world_size,
                is_master=self.rank == 0,
                timeout=self.timeout,
                multi_tenant=True,
                # Nodes of a static job start in any order: wait for rank 0's
                # store as long as torch does (the whole timeout), not 2 s.
                connect_timeout=self.timeout.total_seconds(),
            )
        except StoreTimeoutError as e:
            raise RendezvousTimeoutError(
                f"The static rendezvous '{self.run_id}' did not complete within {self.timeout}: "
                f"{e} Start all {self.world_size} nodes (ranks 0..{self.world_size - 1}) with "
                "the same endpoint, or raise 'timeout'."
            ) from e
        except StoreError as e:
            raise RendezvousConnectionError(
                f"Rank {self.rank} of the static rendezvous '{self.run_id}' could not "
                f"{'host' if self.rank == 0 else 'reach'} the TCP store at {address}: {e}"
            ) from e

    def is_closed(self) -> bool:
        """Always ``False``: a static rendezvous is never closed."""
        return False

    def set_closed(self) -> None:
        """Does nothing: a static world has no later rounds to refuse."""

    def num_nodes_waiting(self) -> int:
        """Always 0: no node can join a static world."""
        return 0

    def get_run_id(self) -> str:
        return self.run_id

    def shutdown(self) -> bool:
        """Returns ``True``; the store stays open, since trainers may still use it (as torch)."""
        return True


def create_rdzv_handler(params: RendezvousParameters) -> StaticTCPRendezvous:
    """Build the static handler for ``params`` (torch's function of the same name).

    Options: ``rank`` (required, ``0..max_nodes-1``), ``timeout`` (seconds, default 600).
    The endpoint is ``<master_addr>:<master_port>``; the world size is ``max_nodes``.

    Raises:
        RendezvousOptionError: ``rank`` or ``timeout`` given as ``None`` (torch
            fails on it too).
        ValueError: ``rank`` is missing or out of range, the endpoint is empty or has
            no port, or ``timeout`` is not a positive integer.
    """
    refuse_none(params, "rank", "timeout")
    if "rank" not in params.config:
        raise ValueError(
            "The rendezvous option 'rank' is absent from the RendezvousParameters; the static "
            "rendezvous needs each node's rank. Try adding --node-rank to the command."
        )
    endpoint = params.endpoint.strip()
    if not endpoint:
        raise ValueError(
            "The rendezvous 'endpoint' is absent from the RendezvousParameters; the static "
            "rendezvous needs rank 0's address. Try adding --master-addr and --master-port to "
            "the command."
        )
    master_addr, master_port = parse_rendezvous_endpoint(endpoint, -1)
    if master_port == -1:
        raise ValueError(
            f"The port is absent from the rendezvous endpoint '{endpoint}'. Try launching with "
            "--master-port, or write the endpoint as <host>:<port>."
        )
    world_size = params.max_nodes
    rank = params.get_as_int("rank")
    if rank is None or not 0 <= rank < world_size:
        raise ValueError(
            f"The rendezvous option 'rank' ({params.get('rank')!r}) must be an integer in "
            f"0..{world_size - 1} (the world size is max_nodes={world_size})."
        )
    timeout = params.get_as_int("timeout", DEFAULT_TIMEOUT)
    if timeout is None or timeout <= 0:
        raise ValueError(f"The rendezvous option 'timeout' ({timeout}) must be positive.")
    return StaticTCPRendezvous(master_addr, master_port, rank, world_size, params.run_id, timeout)


create_static_handler = create_rdzv_handler
"""The creator registered as backend ``static``."""
