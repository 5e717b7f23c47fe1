"""torch 2.13's legacy ``EtcdRendezvousHandler`` and rdzv's, as nodes of one rendezvous.

Each node runs in its own process (``_interop_node.py``); torch's nodes are
torch's own code, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import etcd
import torch
from _interop_driver import Node, wait_until
from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

from rdzv.etcd_server import EtcdServer
from rdzv.legacy.protocol import decode_state, encode_state
from rdzv.store.etcd import EtcdStore


def join_all(nodes: list[Node], timeout: float = 60) -> list[dict[str, Any]]:
    for node in nodes:
        node.send("next")
    return [node.expect("round", timeout) for node in nodes]


def active_version_text(server: EtcdServer, prefix: str) -> str:
    client = server.get_client()
    (key,) = [
        leaf.key
        for leaf in client.read(prefix, recursive=True).leaves
        if leaf.key.endswith("/rdzv/active_version")
    ]
    value = client.read(key).value
    assert value is not None
    return value


def test_torch_is_the_pinned_version() -> None:
    assert torch.__version__.split("+")[0] == "2.13.0"


def test_two_torch_and_two_rdzv_nodes_complete_one_round_and_share_its_store(
    start_nodes: Callable[..., list[Node]], etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    nodes = start_nodes(["torch", "rdzv", "torch", "rdzv"], 4, 4)
    rounds = join_all(nodes)
    assert sorted(r["rank"] for r in rounds) == [0, 1, 2, 3]
    assert {r["world_size"] for r in rounds} == {4}
    assert len({r["version"] for r in rounds}) == 1
    assert len({(r["master_addr"], r["master_port"]) for r in rounds}) == 1

    torch_node, rdzv_node = nodes[0], nodes[1]
    rdzv_node.ask("set from-rdzv hello-torch", "value")
    assert torch_node.ask("get from-rdzv", "value")["value"] == "hello-torch"
    torch_node.ask("set from-torch hello-rdzv", "value")
    assert rdzv_node.ask("get from-torch", "value")["value"] == "hello-rdzv"

    # The final state, whoever wrote it last, is in the exact bytes rdzv writes.
    text = active_version_text(etcd_server, etcd_prefix)
    assert encode_state(decode_state(text, "active_version")) == text
    assert decode_state(text, "active_version").status == "final"


def test_a_close_by_one_library_stops_the_other(
    start_nodes: Callable[..., list[Node]],
) -> None:
    torch_node, rdzv_node = start_nodes(["torch", "rdzv"], 2, 2)
    join_all([torch_node, rdzv_node])
    assert torch_node.ask("closed", "closed")["value"] is False
    assert rdzv_node.ask("shutdown", "shutdown")["value"] is True
    assert torch_node.ask("closed", "closed")["value"] is True
    assert torch_node.ask("next", "error")["type"] == "RendezvousClosedError"


def test_a_late_node_is_counted_by_both_and_all_four_complete_the_next_round(
    start_nodes: Callable[..., list[Node]],
) -> None:
    first = start_nodes(["torch", "rdzv", "torch"], 3, 4)
    first_rounds = join_all(first)
    (late,) = start_nodes(["rdzv"], 3, 4)
    late.send("next")
    wait_until(
        lambda: first[0].ask("waiting", "waiting")["count"] > 0,
        timeout=30,
        what="torch to count the late rdzv node as waiting",
    )
    assert first[1].ask("waiting", "waiting")["count"] > 0
    for node in first:
        node.send("next")
    # torch's nodes leave the round by letting their keep-alive keys expire (10 s).
    rounds = [node.expect("round", 90) for node in [*first, late]]
    assert sorted(r["rank"] for r in rounds) == [0, 1, 2, 3]
    assert {r["world_size"] for r in rounds} == {4}
    assert len({r["version"] for r in rounds}) == 1
    assert rounds[0]["version"] > first_rounds[0]["version"]


def test_an_rdzv_store_and_a_torch_store_read_each_others_keys(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    client: etcd.Client = etcd_server.get_client()
    ours = EtcdStore(client, etcd_prefix + "/kv")
    theirs = TorchEtcdStore(client, etcd_prefix + "/kv")
    ours.set("a/b c", b"\x00\xffbytes")
    assert theirs.get("a/b c") == b"\x00\xffbytes"
    theirs.set("counter", "5")
    assert ours.add("counter", 2) == 7
    assert theirs.add("counter", 1) == 8
