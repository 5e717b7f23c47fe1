"""Nodes of one rendezvous as threads of the test process."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from rdzv import RendezvousHandler, RendezvousInfo, RendezvousParameters, get_rendezvous_handler


def rendezvous(backend: str, count: int, endpoint: str, **options: Any) -> list[RendezvousInfo]:
    """``count`` nodes (threads) of one new run on ``backend``; their results in any order.

    Every handler is shut down afterwards.
    """
    run_id = f"{backend}-{uuid.uuid4().hex[:8]}"
    handlers = [
        get_rendezvous_handler(
            RendezvousParameters(backend, endpoint, run_id, count, count, "127.0.0.1", **options)
        )
        for _ in range(count)
    ]
    results = next_round(handlers)
    for handler in handlers:
        handler.shutdown()
    return results


def next_round(handlers: list[RendezvousHandler], timeout: float = 60) -> list[RendezvousInfo]:
    """Every handler calls ``next_rendezvous`` at once (a thread each); the results that
    came within ``timeout`` seconds for each thread."""
    results: list[RendezvousInfo] = []
    threads = [
        threading.Thread(target=lambda h=h: results.append(h.next_rendezvous())) for h in handlers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
