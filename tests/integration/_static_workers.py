"""Functions run in other OS processes by the static rendezvous tests (spawned, so importable)."""

from __future__ import annotations

from typing import Any

from rdzv import RendezvousParameters, get_rendezvous_handler


def static_node(endpoint: str, rank: int, world_size: int, run_id: str) -> dict[str, Any]:
    """Rendezvous statically as ``rank``; rank 0 writes a key that every rank then reads."""
    params = RendezvousParameters(
        "static", endpoint, run_id, world_size, world_size, rank=rank, timeout=30
    )
    handler = get_rendezvous_handler(params)
    info = handler.next_rendezvous()
    if info.rank == 0:
        info.store.set("greeting", f"hello from {run_id}")
    greeting = info.store.get("greeting").decode()
    # Rank 0 hosts the store: it returns (and its server goes) only once every
    # other rank has said it is done with the store.
    if info.rank == 0:
        info.store.wait([f"done/{r}" for r in range(1, world_size)])
    else:
        info.store.set(f"done/{info.rank}", "1")
    return {
        "rank": info.rank,
        "world_size": info.world_size,
        "master": (info.bootstrap_store_info.master_addr, info.bootstrap_store_info.master_port),
        "greeting": greeting,
        "use_agent_store": handler.use_agent_store,
    }
