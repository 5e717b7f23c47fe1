"""A rendezvous you can watch: N nodes meet, a late node arrives, all meet again.

Runs in one process on the in-memory backend (threads as nodes), so it needs
nothing installed and finishes in well under a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast
from uuid import uuid4

from rdzv.api import RendezvousInfo, RendezvousParameters
from rdzv.dynamic.handler import DynamicRendezvousHandler
from rdzv.registry import get_rendezvous_handler

__all__ = ["run_demo"]


def run_demo(nodes: int, min_nodes: int, max_nodes: int, output: Callable[[str], None]) -> int:
    """Run the demonstration, reporting through ``output``; return a process exit status."""
    run_id = f"demo-{uuid4().hex[:8]}"
    params = RendezvousParameters(
        "memory",
        "",
        run_id,
        min_nodes,
        max_nodes,
        local_addr="127.0.0.1",
        last_call_timeout=0.2,
        join_timeout=30,
    )
    handlers = [
        cast(DynamicRendezvousHandler, get_rendezvous_handler(params)) for _ in range(nodes)
    ]
    print_lock = threading.Lock()

    def say(line: str) -> None:
        with print_lock:
            output(line)

    say(f"rendezvous '{run_id}': {nodes} nodes, min {min_nodes}, max {max_nodes} (in-memory)")

    def join_all(members: list[int]) -> dict[int, RendezvousInfo]:
        results: dict[int, RendezvousInfo] = {}
        start = time.perf_counter()

        def join(i: int) -> None:
            info = handlers[i].next_rendezvous()
            results[i] = info
            say(
                f"  node {i} ({handlers[i].node}) has rank {info.rank} of {info.world_size}, "
                f"after {time.perf_counter() - start:.3f} s"
            )

        threads = [threading.Thread(target=join, args=(i,)) for i in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    try:
        first = list(range(nodes - 1)) if nodes > min_nodes else list(range(nodes))
        say(f"round 0: nodes {first} call next_rendezvous()")
        join_all(first)
        late = [i for i in range(nodes) if i not in first]
        if late:
            say(f"node {late[0]} arrives late and waits for the next round")
            waiter = threading.Thread(target=join_all, args=(late,))
            waiter.start()
            while handlers[first[0]].num_nodes_waiting() == 0:
                time.sleep(0.005)
            say(
                f"num_nodes_waiting() = {handlers[first[0]].num_nodes_waiting()}: "
                f"round 1: nodes {first} call next_rendezvous() again"
            )
            join_all(first)
            waiter.join()
        return 0
    finally:
        for handler in handlers:
            handler.shutdown()
        say("rendezvous closed")
