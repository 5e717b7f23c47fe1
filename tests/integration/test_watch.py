"""rdzv.watch on every backend: the events of a real run are exactly what happened.

Eight nodes (OS processes; threads on ``memory``) form a round; one is killed
(SIGKILL; on ``memory`` its heartbeats stop); the seven survivors see it missing,
re-form without it, and one of them closes the rendezvous. A watcher that never
joins follows it all from the test process, and its events must say: the eight
joined, round 0 completed with their ranks, the killed node was declared dead
(not "left"), round 1 completed with the survivors' ranks, the rendezvous
closed, and replaying the events gives the state the backend holds at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _nodes import Node
from _ports import free_port

import rdzv
from rdzv import RendezvousParameters, get_rendezvous_handler
from rdzv.core import NodeDesc, decode_state
from rdzv.core.events import (
    EMPTY,
    NodeDeclaredDead,
    NodeJoined,
    NodeLeft,
    RendezvousClosed,
    RoundCompleted,
    membership_of,
    replay,
)
from rdzv.etcd_server import EtcdServer
from rdzv.watching import Snapshot, WatchStatus, open_source

OPTIONS = {
    "last_call_timeout": 0.5,
    "join_timeout": 60,
    "keep_alive_interval": 0.5,
    "keep_alive_max_attempt": 3,
}
KILLED = 5


class Collector:
    """A watcher in a thread; its items in a list."""

    def __init__(self, params: RendezvousParameters) -> None:
        self.watcher = rdzv.watch(params)
        self.items: list[Any] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for item in self.watcher:
            self.items.append(item)

    def events(self) -> list[Any]:
        return [i for i in list(self.items) if not isinstance(i, Snapshot | WatchStatus)]

    def wait_for(self, kind: type, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(isinstance(e, kind) for e in self.events()):
            assert time.monotonic() < deadline, f"no {kind.__name__} in {self.events()}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.watcher.stop()
        self._thread.join(timeout=5)
        self.watcher.close()
        assert not self._thread.is_alive()


@pytest.fixture(params=["memory", "c10d", "etcd-v2", "etcd-v3"])
def where(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Backend, endpoint and options of a new run."""
    name = request.param
    options = dict(OPTIONS)
    if name in ("etcd-v2", "etcd-v3"):
        fixture = "etcd_server" if name == "etcd-v2" else "etcd_v3_server"
        server: EtcdServer = request.getfixturevalue(fixture)
        options["etcd_prefix"] = request.getfixturevalue("etcd_prefix")
        endpoint = server.get_endpoint()
    else:
        endpoint = f"127.0.0.1:{free_port()}"
    return {
        "backend": name,
        "endpoint": endpoint,
        "run_id": f"w-{uuid.uuid4().hex[:8]}",
        "options": options,
    }


class ProcessNodes:
    """The eight nodes as processes: node 0 hosts the c10d store."""

    def __init__(self, where: dict[str, Any]) -> None:
        config = {**where, "min_nodes": 7, "max_nodes": 8}
        self.nodes: list[Node] = []
        for _ in range(8):
            node = Node(config)
            node.expect("ready")
            self.nodes.append(node)

    def descs(self) -> list[NodeDesc]:
        return [NodeDesc("127.0.0.1", n.process.pid, 0) for n in self.nodes]

    def next_round(self, which: list[int]) -> dict[NodeDesc, int]:
        for i in which:
            self.nodes[i].send("next")
        return {self.descs()[i]: self.nodes[i].expect("round")["rank"] for i in which}

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def waiting(self, i: int) -> int:
        return int(self.nodes[i].ask("waiting", "waiting")["count"])

    def close(self, i: int) -> None:
        self.nodes[i].ask("shutdown", "shutdown")

    def stop(self) -> None:
        for node in reversed(self.nodes):  # the c10d host last
            node.close()


class ThreadNodes:
    """The eight nodes as handlers of the ``memory`` backend, in this process."""

    def __init__(self, where: dict[str, Any]) -> None:
        self.handlers = [
            get_rendezvous_handler(
                RendezvousParameters(
                    "memory", "", where["run_id"], 7, 8, "127.0.0.1", **where["options"]
                )
            )
            for _ in range(8)
        ]

    def descs(self) -> list[NodeDesc]:
        return [h._node for h in self.handlers]  # type: ignore[attr-defined]

    def next_round(self, which: list[int]) -> dict[NodeDesc, int]:
        ranks: dict[NodeDesc, int] = {}

        def join(i: int) -> None:
            ranks[self.descs()[i]] = self.handlers[i].next_rendezvous().rank

        threads = [threading.Thread(target=join, args=(i,)) for i in which]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return ranks

    def kill(self, i: int) -> None:
        self.handlers[i]._stop_heartbeats()  # type: ignore[attr-defined]

    def waiting(self, i: int) -> int:
        return self.handlers[i].num_nodes_waiting()

    def close(self, i: int) -> None:
        assert self.handlers[i].shutdown()

    def stop(self) -> None:
        for handler in self.handlers:
            handler._stop_heartbeats()  # type: ignore[attr-defined]


@pytest.fixture
def job(where: dict[str, Any]) -> Iterator[Callable[[], ProcessNodes | ThreadNodes]]:
    started: list[ProcessNodes | ThreadNodes] = []

    def start() -> ProcessNodes | ThreadNodes:
        nodes = ThreadNodes(where) if where["backend"] == "memory" else ProcessNodes(where)
        started.append(nodes)
        return nodes

    yield start
    for nodes in started:
        nodes.stop()


def _params(where: dict[str, Any]) -> RendezvousParameters:
    return RendezvousParameters(
        where["backend"], where["endpoint"], where["run_id"], 1, 1, **where["options"]
    )


@pytest.mark.slow
def test_the_events_of_a_run_with_a_killed_node_are_what_happened(
    where: dict[str, Any], job: Callable[[], ProcessNodes | ThreadNodes]
) -> None:
    nodes = job()  # on c10d, the store is up once node 0 is
    watching = Collector(_params(where))
    try:
        descs = nodes.descs()
        first = nodes.next_round(list(range(8)))
        nodes.kill(KILLED)
        survivors = [i for i in range(8) if i != KILLED]
        deadline = time.monotonic() + 30
        while nodes.waiting(survivors[0]) == 0:
            assert time.monotonic() < deadline, "the survivors never saw the killed node missing"
            time.sleep(0.1)
        second = nodes.next_round(survivors)
        nodes.close(survivors[-1])
        watching.wait_for(RendezvousClosed)
    finally:
        watching.stop()
    events = watching.events()

    completed = [e for e in events if isinstance(e, RoundCompleted)]
    assert [(e.round, e.world_size) for e in completed] == [(0, 8), (1, 7)]
    assert dict((node, rank) for rank, node in completed[0].ranks) == first
    assert dict((node, rank) for rank, node in completed[1].ranks) == second
    joined_first = {e.node for e in events if isinstance(e, NodeJoined) and e.round == 0}
    assert joined_first == set(descs)
    dead = [e for e in events if isinstance(e, NodeDeclaredDead)]
    assert [(e.node, e.round, e.role) for e in dead] == [(descs[KILLED], 0, "participant")]
    assert not [e for e in events if isinstance(e, NodeLeft)]
    assert isinstance(events[-1], RendezvousClosed)
    assert sum(isinstance(e, RendezvousClosed) for e in events) == 1

    source = open_source(_params(where))
    try:
        stored = source.backend.get_state()
    finally:
        source.close()
    assert stored is not None
    assert replay(EMPTY, events) == membership_of(decode_state(stored[0]))
