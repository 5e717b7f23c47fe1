"""How a join ends, on real backends: the three bugs of issue 15, as a user met them.

Nodes are threads of this process, each with its own handler and backend client;
the c10d store is a real TCP store (hosted by the first handler), the etcd-v2
backend a real etcd, and memory the in-process backend.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _threads import next_round

from rdzv import (
    DynamicRendezvousHandler,
    RendezvousParameters,
    RendezvousTimeoutError,
    get_rendezvous_handler,
)
from rdzv.etcd_server import EtcdServer

BACKENDS = ["memory", "c10d", "etcd-v2"]

Make = Callable[..., DynamicRendezvousHandler]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, etcd_prefix: str) -> Iterator[Make]:
    """Handlers of one new run on the backend under test: ``make(min, max, **options)``."""
    backend = request.param
    options: dict[str, Any] = {}
    if backend == "c10d":
        endpoint = f"127.0.0.1:{_free_port()}"
    elif backend == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        endpoint, options = server.get_endpoint(), {"etcd_prefix": etcd_prefix}
    else:
        endpoint = ""
    run_id = f"endings-{uuid.uuid4().hex[:8]}"
    made: list[DynamicRendezvousHandler] = []

    def handler(min_nodes: int, max_nodes: int, **more: Any) -> DynamicRendezvousHandler:
        params = RendezvousParameters(
            backend, endpoint, run_id, min_nodes, max_nodes, "127.0.0.1", **options, **more
        )
        made.append(get_rendezvous_handler(params))  # type: ignore[arg-type]
        return made[-1]

    yield handler
    for h in made:
        h._stop_heartbeats()


def test_a_node_that_timed_out_is_not_admitted_by_a_later_round(make: Make) -> None:
    """Bug 1: its pending intent made it a ghost rank 0 of the next round, and the round
    failed after 19 s waiting for the gone node's address."""
    gone = make(2, 2, join_timeout=1.5)
    with pytest.raises(RendezvousTimeoutError):
        gone.next_rendezvous()
    pair = [make(2, 2, join_timeout=20), make(2, 2, join_timeout=20)]
    started = time.monotonic()
    infos = next_round(pair)
    assert len(infos) == 2, "the two new nodes did not form a round"
    assert sorted(i.rank for i in infos) == [0, 1]
    assert {i.world_size for i in infos} == {2}
    state = pair[0]._executor.state
    assert gone.node not in state.members()
    assert time.monotonic() - started < 10


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_node_dropped_while_it_did_not_beat_learns_it_and_all_meet_again(make: Make) -> None:
    """Bug 3: a node stopped past the heartbeat expiry, then resumed, polled
    num_nodes_waiting() == 0 for ever while the others went on without it."""
    options = {
        "keep_alive_interval": 0.3,
        "keep_alive_max_attempt": 2,
        "last_call_timeout": 0.2,
        "join_timeout": 20,
    }
    nodes = [make(2, 3, **options) for _ in range(3)]
    assert len(next_round(nodes)) == 3
    first_round = nodes[0].round
    stopped, others = nodes[2], nodes[:2]  # nodes[0] hosts the c10d store
    stopped._stop_heartbeats()  # as SIGSTOP would; its process keeps its handler
    _wait_for(lambda: others[0].num_nodes_waiting() > 0, 10, "the others to see the loss")
    assert len(next_round(others)) == 2
    assert others[0].round > first_round
    # Resumed: the round it joined went on without it, and it is told so.
    assert stopped.num_nodes_waiting() >= 1
    # Its launcher rendezvous again; the others see it waiting; all three meet.
    late: list[Any] = []
    joiner = threading.Thread(target=lambda: late.append(stopped.next_rendezvous()))
    joiner.start()
    _wait_for(lambda: others[0].num_nodes_waiting() > 0, 10, "the others to see it waiting")
    infos = next_round(others)
    joiner.join(timeout=30)
    everyone = [*infos, *late]
    assert sorted(i.rank for i in everyone) == [0, 1, 2]
    assert {i.world_size for i in everyone} == {3}
    assert stopped.num_nodes_waiting() == 0
