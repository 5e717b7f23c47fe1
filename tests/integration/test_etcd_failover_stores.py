"""The legacy ``etcd`` handler and the etcd stores on a real 3-member cluster whose leader dies."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from _cluster import endpoint_from, params, round_across

from rdzv import get_rendezvous_handler
from rdzv.backends import etcd as etcd_v2
from rdzv.backends import etcd_v3
from rdzv.etcd.cluster import EtcdCluster
from rdzv.store.base import Store


def unique_prefix() -> str:
    return f"/rdzv-test/failover-{uuid.uuid4().hex[:12]}"


def test_legacy_etcd_handler_completes_a_round_across_a_leader_kill(
    etcd_cluster: EtcdCluster,
) -> None:
    leader = etcd_cluster.leader()
    endpoint = endpoint_from(etcd_cluster, leader)
    run_id = f"legacy-{uuid.uuid4().hex[:8]}"
    options = {
        "etcd_prefix": unique_prefix(),
        "last_call_timeout": 1,
        "timeout": 60,
        "read_timeout": 6,
    }
    nodes = [
        get_rendezvous_handler(params("etcd", endpoint, run_id, 4, **options)) for _ in range(4)
    ]
    infos = round_across(nodes, lambda: etcd_cluster.kill(leader))
    assert {info.world_size for info in infos} == {4}
    for node in nodes:
        node.shutdown()


def _store(backend: str, endpoint: str) -> Store:
    create = etcd_v2.create_backend if backend == "etcd-v2" else etcd_v3.create_backend
    options = {"read_timeout": 6, "etcd_prefix": unique_prefix()}
    _, store = create(params(backend, endpoint, "store", 1, **options))
    store.set_timeout(timedelta(seconds=30))
    return store


@pytest.mark.parametrize("backend", ["etcd-v2", "etcd-v3"])
def test_etcd_store_keeps_working_and_a_blocked_get_resumes_after_its_member_dies(
    etcd_cluster: EtcdCluster, backend: str
) -> None:
    leader = etcd_cluster.leader()
    store = _store(backend, endpoint_from(etcd_cluster, leader))
    store.set("before", b"1")
    got: list[bytes] = []
    waiter = threading.Thread(target=lambda: got.append(store.get("late")))
    waiter.start()
    time.sleep(0.5)  # the get now watches the key on the leader, the member asked first
    etcd_cluster.kill(leader)
    assert store.add("counter", 2) == 2
    assert store.get("before") == b"1"
    store.set("late", b"value")
    waiter.join(timeout=30)
    assert got == [b"value"]
