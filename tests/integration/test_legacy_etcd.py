"""The legacy etcd rendezvous (backend ``etcd``) on a real etcd.

Multi-node scenarios run each node in its own OS process (``_node.py``); checks
of a single handler's behaviour (errors, leases) run in the test process.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import etcd
import pytest
from _nodes import Node, wait_until

from rdzv import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeoutError,
    get_rendezvous_handler,
)
from rdzv.etcd_server import EtcdServer
from rdzv.legacy import EtcdRendezvousHandler
from rdzv.legacy.lease import LeaseRenewal
from rdzv.legacy.protocol import LegacyPaths, decode_state, encode_state


def new_run_id() -> str:
    return f"legacy-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_nodes(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[Callable[..., list[Node]]]:
    """Start node processes of one run (backend ``etcd``) under this test's etcd prefix."""
    nodes: list[Node] = []
    run_id = new_run_id()

    def start(
        count: int, min_nodes: int, max_nodes: int, server: EtcdServer | None = None, **options: Any
    ) -> list[Node]:
        config = {
            "backend": "etcd",
            "endpoint": (server or etcd_server).get_endpoint(),
            "run_id": run_id,
            "min_nodes": min_nodes,
            "max_nodes": max_nodes,
            "options": {
                "etcd_prefix": etcd_prefix,
                "last_call_timeout": 1,
                "timeout": 60,
                **options,
            },
        }
        started = [Node(config) for _ in range(count)]
        for node in started:
            node.expect("ready")
        nodes.extend(started)
        return started

    yield start
    for node in nodes:
        node.close()


def join_all(nodes: list[Node], timeout: float = 60) -> list[dict[str, Any]]:
    for node in nodes:
        node.send("next")
    return [node.expect("round", timeout) for node in nodes]


def handler(
    server: EtcdServer, prefix: str, run_id: str | None = None, **options: Any
) -> EtcdRendezvousHandler:
    """A handler in this process (``min_nodes``/``max_nodes`` 1 unless given)."""
    min_nodes = options.pop("min_nodes", 1)
    max_nodes = options.pop("max_nodes", min_nodes)
    params = RendezvousParameters(
        "etcd",
        server.get_endpoint(),
        run_id or new_run_id(),
        min_nodes,
        max_nodes,
        "127.0.0.1",
        etcd_prefix=prefix,
        **options,
    )
    created = get_rendezvous_handler(params)
    assert isinstance(created, EtcdRendezvousHandler)
    return created


def test_three_processes_complete_one_round_with_ranks_0_to_2(
    start_nodes: Callable[..., list[Node]],
) -> None:
    nodes = start_nodes(3, 3, 4)
    rounds = join_all(nodes)
    assert sorted(r["rank"] for r in rounds) == [0, 1, 2]
    assert {r["world_size"] for r in rounds} == {3}
    assert len({r["round"] for r in rounds}) == 1
    assert len({(r["master_addr"], r["master_port"]) for r in rounds}) == 1
    nodes[0].ask("set greeting hello", "value")
    assert nodes[2].ask("get greeting", "value")["value"] == "hello"


def test_late_fourth_node_is_counted_waiting_then_all_four_complete_the_next_round(
    start_nodes: Callable[..., list[Node]],
) -> None:
    first = start_nodes(3, 3, 4)
    first_rounds = join_all(first)
    (late,) = start_nodes(1, 3, 4)
    late.send("next")
    wait_until(
        lambda: first[0].ask("waiting", "waiting")["count"] > 0,
        timeout=30,
        what="the late node to be counted as waiting",
    )
    for node in first:
        node.send("next")
    rounds = [node.expect("round", 60) for node in [*first, late]]
    assert sorted(r["rank"] for r in rounds) == [0, 1, 2, 3]
    assert {r["world_size"] for r in rounds} == {4}
    assert {r["round"] for r in rounds} == {first_rounds[0]["round"] + 1}
    assert first[1].ask("waiting", "waiting")["count"] == 0


def test_set_closed_is_seen_by_the_others_and_next_rendezvous_raises_closed(
    start_nodes: Callable[..., list[Node]],
) -> None:
    nodes = start_nodes(2, 2, 2)
    join_all(nodes)
    assert nodes[1].ask("closed", "closed")["value"] is False
    assert nodes[0].ask("shutdown", "shutdown")["value"] is True
    assert nodes[1].ask("closed", "closed")["value"] is True
    error = nodes[1].ask("next", "error")
    assert error["type"] == "RendezvousClosedError"
    assert "closed" in error["message"]


def test_keep_alive_renewal_survives_an_etcd_restart(
    start_nodes: Callable[..., list[Node]], etcd_prefix: str
) -> None:
    # A server of its own: restarting the session's would disturb other tests.
    server = EtcdServer()
    server.start(timeout=30)
    try:
        (node,) = start_nodes(1, 1, 1, server=server)
        node.ask("next", "round")
        client = server.get_client(read_timeout=5)
        rank_keys = [
            leaf.key
            for leaf in client.read(etcd_prefix, recursive=True).leaves
            if leaf.key.endswith("/rank_0")
        ]
        assert len(rank_keys) == 1
        before = client.read(rank_keys[0]).modifiedIndex
        # Down across the node's next renewal (every 5 s), back before the 10 s
        # TTL runs out: torch's renewal thread dies at the first failed attempt.
        server.stop(keep_data=True, kill=True)
        time.sleep(6)
        server.start(timeout=30)
        client = server.get_client(read_timeout=5)

        def renewed() -> bool:
            return client.read(rank_keys[0]).modifiedIndex > before

        wait_until(renewed, timeout=15, what="a renewal of the keep-alive key after the restart")
        # The node logs the recovery just after the write that the test saw.
        wait_until(lambda: "again after" in node.stderr(), timeout=5, what="the recovery's log")
        assert "Renewing the lease of etcd key" in node.stderr()
        # Renewals go on at the normal interval after the recovery.
        after = client.read(rank_keys[0]).modifiedIndex
        wait_until(
            lambda: client.read(rank_keys[0]).modifiedIndex > after,
            timeout=15,
            what="the next regular renewal",
        )
    finally:
        server.stop()


def test_timeout_when_too_few_nodes_come(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    lonely = handler(etcd_server, etcd_prefix, min_nodes=2, timeout=1)
    started = time.monotonic()
    with pytest.raises(RendezvousTimeoutError, match="min_nodes=2"):
        lonely.next_rendezvous()
    assert time.monotonic() - started < 15
    lonely.shutdown()


def test_undecodable_state_raises_state_error(
    etcd_server: EtcdServer, etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    run_id = new_run_id()
    node = handler(etcd_server, etcd_prefix, run_id, timeout=10)
    paths = LegacyPaths(etcd_prefix, run_id)
    for garbage in ["{not json", '{"status": "joinable"}', '["final"]', '{"status": "gone"}']:
        etcd_client.write(paths.active_version, garbage)
        with pytest.raises(RendezvousStateError, match="unreadable"):
            node.next_rendezvous()
        with pytest.raises(RendezvousStateError):
            node.num_nodes_waiting()
        with pytest.raises(RendezvousStateError):
            node.is_closed()


def test_unreachable_etcd_raises_connection_error(etcd_prefix: str) -> None:
    server = EtcdServer()
    server.start(timeout=30)
    endpoint = server.get_endpoint()
    server.stop()
    params = RendezvousParameters("etcd", endpoint, new_run_id(), 1, 1, read_timeout=2)
    with pytest.raises(RendezvousConnectionError, match=endpoint):
        get_rendezvous_handler(params)


def test_set_closed_before_any_round_closes_the_run(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    run_id = new_run_id()
    first = handler(etcd_server, etcd_prefix, run_id)
    first.set_closed()
    second = handler(etcd_server, etcd_prefix, run_id)
    assert second.is_closed()
    with pytest.raises(RendezvousClosedError):
        second.next_rendezvous()


def test_states_are_written_as_torch_writes_them(
    etcd_server: EtcdServer, etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    run_id = new_run_id()
    node = handler(etcd_server, etcd_prefix, run_id)
    info = node.next_rendezvous()
    paths = LegacyPaths(etcd_prefix, run_id)
    text = etcd_client.read(paths.active_version).value
    rank_key = f"{etcd_prefix}/run_{run_id}/rdzv/v_1/rank_0"
    assert text == (
        '{"status": "final", "version": "1", "participants": [0], '
        f'"keep_alives": ["{rank_key}"], "num_workers_waiting": 0}}'
    )
    assert etcd_client.read(paths.version_counter).value == "1"
    assert etcd_client.read(rank_key).ttl is not None
    assert info.store.prefix == f"{etcd_prefix}/run_{run_id}/rdzv/v_1/kv/"  # type: ignore[attr-defined]
    node.set_closed()
    closed = etcd_client.read(paths.active_version).value
    assert closed == text.replace('"final"', '"closed"', 1)
    assert encode_state(decode_state(closed, "test")) == closed


def test_dropping_the_handler_stops_its_lease_threads(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    node = handler(etcd_server, etcd_prefix)
    node.next_rendezvous()
    leases = [t for t in threading.enumerate() if t.name.startswith("rdzv-lease:")]
    rank_lease = [t for t in leases if t.name.endswith("/rank_0")]
    assert len(rank_lease) == 1
    del node
    gc.collect()
    rank_lease[0].join(timeout=10)
    assert not rank_lease[0].is_alive()


def test_shutdown_stops_lease_renewal_and_closes(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    node = handler(etcd_server, etcd_prefix)
    node.next_rendezvous()
    assert node.shutdown() is True
    assert not [t for t in threading.enumerate() if t.name.startswith("rdzv-lease:" + etcd_prefix)]
    assert node.is_closed()


def test_extra_data_is_stored_and_loaded_per_round(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    node = handler(etcd_server, etcd_prefix)
    node.next_rendezvous()
    rdzv = node._rdzv_impl
    rdzv.store_extra_data("1", "a", {"x": 1})
    rdzv.store_extra_data("1", "b", [2])
    assert rdzv.load_extra_data("1", "a") == {"x": 1}
    assert rdzv.load_extra_data("1", "b") == [2]
    with pytest.raises(RendezvousTimeoutError, match="'c'"):
        rdzv.load_extra_data("1", "c", timeout=0.5)
    node.shutdown()


def test_torchs_certificate_option_names_reach_an_https_etcd(
    tmp_path: Path, etcd_prefix: str
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {name: tmp_path / name for name in ("ca", "server", "server-key", "client", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.cert_chain_pems[0].write_to_path(str(files["server"]))
    server_cert.private_key_pem.write_to_path(str(files["server-key"]))
    client_cert = ca.issue_cert("rdzv-legacy-client")
    client_cert.cert_chain_pems[0].write_to_path(str(files["client"]))
    client_cert.private_key_pem.write_to_path(str(files["key"]))
    with EtcdServer(
        cert_file=files["server"],
        key_file=files["server-key"],
        trusted_ca_file=files["ca"],
        client_cert_auth=True,
        client_cert_file=files["client"],
        client_key_file=files["key"],
    ) as server:
        node = handler(
            server,
            etcd_prefix,
            protocol="https",
            cacert=str(files["ca"]),
            cert=str(files["client"]),
            key=str(files["key"]),
        )
        assert node.next_rendezvous().rank == 0
        node.shutdown()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cacert": "/no/such/ca.pem"}, "'cacert'"),
        ({"cert": "/no/such/cert.pem"}, "'cert'"),
        ({"protocol": "gopher"}, "'protocol'"),
        ({"etcd_prefix": "relative/path"}, "'etcd_prefix'"),
        ({"timeout": "soon"}, "'timeout'"),
        ({"timeout": 0}, "'timeout'"),
        ({"last_call_timeout": -1}, "'last_call_timeout'"),
    ],
)
def test_invalid_options_are_value_errors_naming_the_option(
    etcd_server: EtcdServer, options: dict[str, Any], named: str
) -> None:
    params = RendezvousParameters("etcd", etcd_server.get_endpoint(), new_run_id(), 1, 1, **options)
    with pytest.raises(ValueError, match=named):
        get_rendezvous_handler(params)


def test_a_lease_ends_when_its_key_is_gone(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/rank_0"
    etcd_client.write(key, None, ttl=10)
    lease = LeaseRenewal(etcd_client, key, 10, interval=0.1).start()
    etcd_client.delete(key)
    wait_until(lambda: not lease.is_alive(), timeout=10, what="the lease to end")


def test_a_directory_lease_that_etcd_cannot_renew_ends_instead_of_retrying(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    etcd_client.write(etcd_prefix, None, dir=True, ttl=60)
    try:
        etcd_client.write(etcd_prefix, None, dir=True, ttl=60, prevExist=True)
        renewable = True
    except etcd.EtcdException:
        renewable = False  # etcd 3.5's v2 API: "Not a file"
    lease = LeaseRenewal(etcd_client, etcd_prefix, 60, is_dir=True).start()
    lease._thread.join(timeout=2)
    assert lease.is_alive() is renewable
    lease.stop()
    assert not lease.is_alive()
