"""The failover pause: how long a rendezvous stops writing when the etcd leader is SIGKILLed.

Half of N nodes (threads of this process, each with its own handler and client)
join and wait for the others; then the leader is killed and the other half
join at that moment. The pause is the time from the kill until the state key
changes again (a write that went through the new leader), read by polling
every 10 ms from the surviving members. Then the round must complete. The
killed member is restarted before the next repeat.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from rdzv import RendezvousHandler, RendezvousParameters, get_rendezvous_handler
from rdzv.backends import etcd as etcd_v2
from rdzv.backends import etcd_v3
from rdzv.etcd.cluster import EtcdCluster

_POLL = 0.01


def _params(backend: str, endpoint: str, run_id: str, n: int) -> RendezvousParameters:
    return RendezvousParameters(
        backend, endpoint, run_id, n, n, "127.0.0.1", read_timeout=10, join_timeout=120
    )


def _token(backend: str, endpoint: str, run_id: str) -> Any:
    create = etcd_v2.create_backend if backend == "etcd-v2" else etcd_v3.create_backend
    reader, _ = create(_params(backend, endpoint, run_id, 1))

    def read() -> Any:
        current = reader.get_state()
        return None if current is None else current[1]

    return read


def pause_once(backend: str, cluster: EtcdCluster, n: int) -> float:
    """One kill; the pause in seconds (the round must complete)."""
    run_id = f"failover-{uuid.uuid4().hex[:8]}"
    handlers: list[RendezvousHandler] = [
        get_rendezvous_handler(_params(backend, cluster.endpoint, run_id, n)) for _ in range(n)
    ]
    ranks: list[int] = []
    threads = [
        threading.Thread(target=lambda h=h: ranks.append(h.next_rendezvous().rank))
        for h in handlers
    ]
    for thread in threads[: n // 2]:
        thread.start()
    read = _token(backend, cluster.endpoint, run_id)
    before = None
    while before is None or read() != before:  # until the first half has joined and waits
        before = read()
        time.sleep(0.5)
    leader = cluster.leader()
    killed = time.monotonic()
    cluster.kill(leader)
    for thread in threads[n // 2 :]:
        thread.start()
    while (now := read()) == before:
        time.sleep(_POLL)
    pause = time.monotonic() - killed
    for thread in threads:
        thread.join(timeout=120)
    for handler in handlers:
        handler.shutdown()
    cluster.restart(leader)
    cluster.wait_until_ready()
    if sorted(ranks) != list(range(n)) or now is None:
        raise RuntimeError(f"the round after the kill did not complete: {len(ranks)} of {n} ranks")
    return pause


def failover_pauses(backend: str, members: int, n: int, repeat: int) -> dict[str, Any]:
    """The median pause over ``repeat`` kills on a fresh cluster of ``members``."""
    with EtcdCluster(members, enable_v2=backend == "etcd-v2") as cluster:
        pauses = [pause_once(backend, cluster, n) for _ in range(repeat)]
    return {"backend": backend, "members": members, "nodes": n, "pauses": pauses,
            "median": statistics.median(pauses)}  # fmt: skip
