"""Helpers of the failover tests: endpoint lists, rounds of thread nodes, faults on time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from _threads import next_round

from rdzv import RendezvousHandler, RendezvousInfo, RendezvousParameters, get_rendezvous_handler
from rdzv.backends import etcd as etcd_v2
from rdzv.backends import etcd_v3
from rdzv.core.codec import decode_state
from rdzv.core.intents import decode_beat
from rdzv.etcd.cluster import EtcdCluster


def endpoint_from(cluster: EtcdCluster, first: int) -> str:
    """The cluster's endpoint list, rotated so that member ``first`` is listed (and asked) first."""
    members = cluster.members
    order = [members[(first + k) % len(members)] for k in range(len(members))]
    return ",".join(member.endpoint for member in order)


def follower(cluster: EtcdCluster) -> int:
    """A member that does not lead now."""
    return (cluster.leader() + 1) % len(cluster.members)


def params(
    backend: str, endpoint: str, run_id: str, nodes: int, **options: Any
) -> RendezvousParameters:
    return RendezvousParameters(backend, endpoint, run_id, nodes, nodes, "127.0.0.1", **options)


def handlers(backend: str, endpoint: str, nodes: int, **options: Any) -> list[RendezvousHandler]:
    """``nodes`` handlers of one new run (min = max = ``nodes``)."""
    run_id = f"failover-{uuid.uuid4().hex[:8]}"
    return [
        get_rendezvous_handler(params(backend, endpoint, run_id, nodes, **options))
        for _ in range(nodes)
    ]


def complete_round(handlers_: list[RendezvousHandler]) -> list[RendezvousInfo]:
    """Every handler joins (a thread each); the round must be complete and ranked."""
    infos = next_round(handlers_)
    assert sorted(info.rank for info in infos) == list(range(len(handlers_)))
    return infos


def round_across(
    handlers_: list[RendezvousHandler], fault: Callable[[], None], pause: float = 1.0
) -> list[RendezvousInfo]:
    """Half the handlers join, ``fault`` strikes ``pause`` s later, then the rest join.

    So the fault falls inside the rendezvous: the state and intents are written
    before it, and must be written after it for the round to complete.
    """
    results: list[RendezvousInfo] = []
    threads = [
        threading.Thread(target=lambda h=h: results.append(h.next_rendezvous())) for h in handlers_
    ]
    half = len(threads) // 2
    for thread in threads[:half]:
        thread.start()
    time.sleep(pause)
    fault()
    for thread in threads[half:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert sorted(info.rank for info in results) == list(range(len(handlers_)))
    return results


@contextmanager
def after(delay: float, fault: Callable[[], None]) -> Iterator[None]:
    """Run ``fault`` on a thread ``delay`` seconds into the block; re-raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        time.sleep(delay)
        try:
            fault()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def beats(backend: str, endpoint: str, run_id: str) -> dict[str, float]:
    """Each participant's last heartbeat time, read from the heartbeat board."""
    create = etcd_v2.create_backend if backend == "etcd-v2" else etcd_v3.create_backend
    board, _ = create(params(backend, endpoint, run_id, 1, read_timeout=5))
    current = board.get_state()
    assert current is not None
    names = [str(node) for node in decode_state(current[0]).participants]
    found = board.read_beats(names)
    return {name: when for name in names if (when := decode_beat(found.get(name))) is not None}


def watch_waiting(handlers_: list[RendezvousHandler], seconds: float) -> set[int]:
    """Every value ``num_nodes_waiting()`` of the handlers takes, sampled for ``seconds``."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.update(handler.num_nodes_waiting() for handler in handlers_)
        time.sleep(0.25)
    return seen
