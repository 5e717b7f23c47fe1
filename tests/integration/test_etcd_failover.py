"""Rendezvous on a real 3-member etcd cluster while members die, hang and restart.

Nodes are threads of this process, each with its own handler and etcd client, on
an endpoint that lists all three members. The session's cluster is made whole
again after each test (see the ``etcd_cluster`` fixture).
"""

from __future__ import annotations

import threading
import time

import pytest
from _cluster import (
    beats,
    complete_round,
    endpoint_from,
    follower,
    handlers,
    params,
    round_across,
    watch_waiting,
)

from rdzv import RendezvousConnectionError
from rdzv.etcd.cluster import EtcdCluster
from rdzv.etcd_client import create_etcd_client

BACKENDS = ["etcd-v2", "etcd-v3"]
READ_TIMEOUT = 3.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_leader_killed_while_32_nodes_rendezvous_gives_one_round_ranked_0_to_31(
    etcd_cluster: EtcdCluster, backend: str
) -> None:
    leader = etcd_cluster.leader()
    nodes = handlers(
        backend, endpoint_from(etcd_cluster, leader), 32, read_timeout=6, join_timeout=90
    )
    infos = round_across(nodes, lambda: etcd_cluster.kill(leader))
    assert not etcd_cluster.members[leader].is_running()
    assert {info.world_size for info in infos} == {32}
    for node in nodes:
        node.shutdown()


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_listed_member_killed_under_heartbeats_of_1s_x3_declares_nobody_dead(
    etcd_cluster: EtcdCluster, backend: str
) -> None:
    # A follower is listed first: every client talks to it until it dies. (A leader
    # killed is the test above: the election pause adds to the failover.)
    first = follower(etcd_cluster)
    endpoint = endpoint_from(etcd_cluster, first)
    nodes = handlers(
        backend,
        endpoint,
        8,
        read_timeout=READ_TIMEOUT,
        keep_alive_interval=1,
        keep_alive_max_attempt=3,
    )
    complete_round(nodes)
    etcd_cluster.kill(first)
    assert watch_waiting(nodes, 5.0) == {0}
    run_id = nodes[0].get_run_id()
    fresh = beats(backend, endpoint, run_id)
    assert len(fresh) == 8 and all(time.time() - when < 3 for when in fresh.values())
    for node in nodes:
        node.shutdown()


def test_rolling_restart_of_every_member_keeps_the_round_and_its_heartbeats(
    etcd_cluster: EtcdCluster,
) -> None:
    backend = "etcd-v3"
    endpoint = etcd_cluster.endpoint
    nodes = handlers(
        backend,
        endpoint,
        8,
        read_timeout=READ_TIMEOUT,
        keep_alive_interval=1,
        keep_alive_max_attempt=3,
    )
    complete_round(nodes)
    run_id = nodes[0].get_run_id()
    time.sleep(1.5)  # the first beats go to the board one interval after the round
    before = beats(backend, endpoint, run_id)
    assert len(before) == 8
    for member in etcd_cluster.members:
        etcd_cluster.restart(member.index)  # SIGTERM, then start on the same data
        assert watch_waiting(nodes, 1.5) == {0}
    after_restarts = beats(backend, endpoint, run_id)
    assert after_restarts.keys() == before.keys()
    assert all(after_restarts[name] > before[name] + 3 for name in before)
    assert not any(node.is_closed() for node in nodes)
    for node in nodes:
        node.shutdown()


def test_quorum_lost_fails_every_operation_in_read_timeout_naming_all_members_then_recovers(
    etcd_cluster: EtcdCluster,
) -> None:
    endpoint = etcd_cluster.endpoint
    (node,) = handlers("etcd-v3", endpoint, 1, read_timeout=READ_TIMEOUT, join_timeout=30)
    assert node.next_rendezvous().rank == 0
    survivor = etcd_cluster.leader()
    for member in etcd_cluster.members:
        if member.index != survivor:
            etcd_cluster.kill(member.index)
    operations = {
        "next_rendezvous": node.next_rendezvous,
        "num_nodes_waiting": node.num_nodes_waiting,
        "is_closed": node.is_closed,
        "set_closed": node.set_closed,
    }
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(RendezvousConnectionError) as caught:
            operation()
        took = time.monotonic() - started
        assert took < READ_TIMEOUT + 1.5, f"{name} took {took:.1f} s"
        for member in etcd_cluster.members:
            assert member.endpoint in str(caught.value), name

    for member in etcd_cluster.members:
        if member.index != survivor:
            etcd_cluster.restart(member.index)
    info = node.next_rendezvous()
    assert (info.rank, info.world_size) == (0, 1)
    node.shutdown()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hung_member_listed_first_is_skipped_after_its_share_of_read_timeout(
    etcd_cluster: EtcdCluster, backend: str
) -> None:
    hung = follower(etcd_cluster)
    (node,) = handlers(backend, endpoint_from(etcd_cluster, hung), 1, read_timeout=READ_TIMEOUT)
    etcd_cluster.pause(hung)
    started = time.monotonic()
    assert node.next_rendezvous().rank == 0
    assert time.monotonic() - started < READ_TIMEOUT + 2
    started = time.monotonic()
    assert node.num_nodes_waiting() == 0
    assert time.monotonic() - started < 0.5, "the hung member was asked again"
    node.shutdown()


def test_a_v2_write_in_flight_on_a_follower_when_the_leader_dies_moves_on_after_the_election(
    etcd_cluster: EtcdCluster,
) -> None:
    # The follower forwards the write to the leader, which dies with it; etcd answers
    # "request timed out" only after its own request timeout (7 s here), so the client
    # must notice the new leader itself, as etcd's v3 API answers "leader changed".
    leader = etcd_cluster.leader()
    endpoint = endpoint_from(etcd_cluster, follower(etcd_cluster))
    client = create_etcd_client(params("etcd-v2", endpoint, "probe", 1, read_timeout=30))
    killed_at: list[float] = []
    slowest: list[float] = []

    def write(k: int) -> None:
        while True:
            started = time.monotonic()
            client.write(f"/rdzv-failover-probe/{k}", "x")
            if killed_at and started < killed_at[0]:
                slowest.append(time.monotonic() - killed_at[0])
            if killed_at and started > killed_at[0]:
                return

    writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    killed_at.append(time.monotonic())
    etcd_cluster.kill(leader)
    for writer in writers:
        writer.join(timeout=60)
    assert slowest, "no write was in flight at the kill"
    assert max(slowest) < 4.0, f"writes in flight waited {max(slowest):.1f} s after the kill"


def test_a_v2_write_sent_to_a_follower_during_the_election_moves_on_once_a_leader_is_elected(
    etcd_cluster: EtcdCluster,
) -> None:
    # A write that reaches a follower after the leader died but before the follower
    # learns of the new one is forwarded to the dead leader and lost. When the election
    # ends before the write's first leadership check, that check already sees the new
    # leader: the write must still be given up, from the leader's age, not wait out
    # etcd's request timeout (7 s here). Writes sent every 0.1 s for 2.5 s after the
    # kill cover the election (about 1 to 2 s after it here).
    leader = etcd_cluster.leader()
    endpoint = endpoint_from(etcd_cluster, follower(etcd_cluster))
    client = create_etcd_client(params("etcd-v2", endpoint, "probe", 1, read_timeout=30))
    client.write("/rdzv-election-probe/warm", "x")
    took: dict[float, float] = {}

    def write(offset: float) -> None:
        time.sleep(offset)
        started = time.monotonic()
        client.write(f"/rdzv-election-probe/{offset:.1f}", "x")
        took[offset] = time.monotonic() - started

    writers = [threading.Thread(target=write, args=(k / 10,)) for k in range(26)]
    etcd_cluster.kill(leader)
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert len(took) == len(writers)
    slow = {offset: round(seconds, 1) for offset, seconds in took.items() if seconds >= 3.5}
    assert not slow, f"writes sent this long after the kill waited (s): {slow}"
