"""Rendezvous across OS processes on the etcd-v2, etcd-v3 and c10d backends.

The same scenarios run on both: a round of 8, elasticity, a killed node, and a
backend lost mid-job. Node 0 is started first, so on c10d it hosts the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _nodes import Node, wait_until
from _ports import free_port

from rdzv.etcd_server import EtcdServer


@pytest.fixture(params=["etcd-v2", "etcd-v3", "c10d"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Backend name and endpoint: the session's etcd (etcd-v3: one without the v2 API), or
    for c10d a free port."""
    if request.param == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        yield {"backend": "etcd-v2", "endpoint": server.get_endpoint()}
    elif request.param == "etcd-v3":
        v3_server: EtcdServer = request.getfixturevalue("etcd_v3_server")
        yield {"backend": "etcd-v3", "endpoint": v3_server.get_endpoint()}
    else:
        yield {"backend": "c10d", "endpoint": f"127.0.0.1:{free_port()}"}


@pytest.fixture
def start_nodes(backend: dict[str, Any]) -> Iterator[Callable[..., list[Node]]]:
    nodes: list[Node] = []
    run_id = f"run-{uuid.uuid4().hex[:8]}"

    def start(count: int, min_nodes: int, max_nodes: int, **options: Any) -> list[Node]:
        config = {
            **backend,
            "run_id": run_id,
            "min_nodes": min_nodes,
            "max_nodes": max_nodes,
            "options": {"last_call_timeout": 0.5, "join_timeout": 60, **options},
        }
        started = []
        for _ in range(count):
            node = Node(config)
            node.expect("ready")  # one at a time: on c10d the first one hosts the store
            started.append(node)
        nodes.extend(started)
        return started

    yield start
    for node in nodes:
        node.close()


def join_all(nodes: list[Node], timeout: float = 60) -> list[dict[str, Any]]:
    for node in nodes:
        node.send("next")
    return [node.expect("round", timeout) for node in nodes]


def test_eight_processes_get_ranks_0_to_7_in_one_round(
    start_nodes: Callable[..., list[Node]],
) -> None:
    nodes = start_nodes(8, 8, 8)
    rounds = join_all(nodes)
    assert sorted(r["rank"] for r in rounds) == list(range(8))
    assert {r["world_size"] for r in rounds} == {8}
    assert len({r["round"] for r in rounds}) == 1
    assert len({(r["master_addr"], r["master_port"]) for r in rounds}) == 1
    nodes[0].ask("set greeting hello", "value")
    assert nodes[7].ask("get greeting", "value")["value"] == "hello"


def test_late_fourth_node_triggers_a_round_of_four(
    start_nodes: Callable[..., list[Node]],
) -> None:
    first = start_nodes(3, 2, 4)
    rounds = join_all(first)
    assert {r["world_size"] for r in rounds} == {3}
    late = start_nodes(1, 2, 4)[0]
    late.send("next")
    wait_until(
        lambda: first[0].ask("waiting", "waiting")["count"] > 0, 20, "num_nodes_waiting() > 0"
    )
    rounds = join_all(first)
    rounds.append(late.expect("round"))
    assert sorted(r["rank"] for r in rounds) == [0, 1, 2, 3]
    assert {r["world_size"] for r in rounds} == {4}
    assert len({r["round"] for r in rounds}) == 1


def test_survivors_of_a_killed_node_complete_a_round_of_two(
    start_nodes: Callable[..., list[Node]],
) -> None:
    nodes = start_nodes(3, 2, 3, keep_alive_interval=1, keep_alive_max_attempt=2)
    join_all(nodes)
    victim, survivors = nodes[2], nodes[:2]  # node 0 hosts the c10d store: spare it
    victim.kill()
    killed_at = time.monotonic()
    wait_until(
        lambda: survivors[0].ask("waiting", "waiting")["count"] > 0,
        20,
        "the survivors to see the dead node",
    )
    rounds = join_all(survivors)
    print(f"survivors re-formed a round {time.monotonic() - killed_at:.2f} s after the kill")
    assert sorted(r["rank"] for r in rounds) == [0, 1]
    assert {r["world_size"] for r in rounds} == {2}


def test_close_reaches_every_node(start_nodes: Callable[..., list[Node]]) -> None:
    nodes = start_nodes(2, 2, 2)
    join_all(nodes)
    # The closing node exits after its shutdown: on c10d it must not be the store's host.
    assert nodes[1].ask("shutdown", "shutdown")["value"] is True
    assert nodes[0].ask("closed", "closed")["value"] is True
    error = nodes[0].ask("next", "error")
    assert error["type"] == "RendezvousClosedError"


def test_lost_store_host_gives_connection_error_within_read_timeout() -> None:
    config = {
        "backend": "c10d",
        "endpoint": f"127.0.0.1:{free_port()}",
        "run_id": "lost-host",
        "min_nodes": 2,
        "max_nodes": 2,
        "options": {"read_timeout": 3, "join_timeout": 60},
    }
    host, other = Node(config), None
    try:
        host.expect("ready")
        other = Node(config)
        other.expect("ready")
        join_all([host, other])
        host.kill()
        start = time.monotonic()
        error = other.ask("next", "error", timeout=20)
        elapsed = time.monotonic() - start
        assert error["type"] == "RendezvousConnectionError"
        assert elapsed < 3 + 2, f"took {elapsed:.1f} s, more than read_timeout"
    finally:
        host.close()
        if other is not None:
            other.close()


def test_stopped_etcd_gives_connection_error_within_read_timeout() -> None:
    with EtcdServer() as server:
        config = {
            "backend": "etcd-v2",
            "endpoint": server.get_endpoint(),
            "run_id": "etcd-gone",
            "min_nodes": 2,
            "max_nodes": 2,
            "options": {"read_timeout": 3, "join_timeout": 60},
        }
        nodes = [Node(config), Node(config)]
        try:
            for node in nodes:
                node.expect("ready")
            join_all(nodes)
            address = server.get_endpoint()
            server.stop()
            start = time.monotonic()
            errors = [node.ask("next", "error", timeout=20) for node in nodes]
            elapsed = time.monotonic() - start
            assert {e["type"] for e in errors} == {"RendezvousConnectionError"}
            assert address in errors[0]["message"]
            assert elapsed < 2 * (3 + 2), f"took {elapsed:.1f} s"
        finally:
            for node in nodes:
                node.close()
