"""``EtcdCluster``: three real etcd members on loopback, their leader and their faults."""

from __future__ import annotations

import gc
import os
import time

import pytest
from _nodes import process_gone, wait_until

from rdzv.etcd.cluster import EtcdCluster
from rdzv.etcd_server import EtcdServerError


def test_a_killed_leader_is_replaced_and_rejoins_when_restarted(etcd_cluster: EtcdCluster) -> None:
    old = etcd_cluster.leader()
    etcd_cluster.kill(old)
    assert not etcd_cluster.members[old].is_running()
    new = etcd_cluster.leader(timeout=15)
    assert new != old
    etcd_cluster.restart(old)
    etcd_cluster.wait_until_ready(15)
    assert etcd_cluster.members[old].answers(1.0)


def test_a_paused_member_answers_nothing_until_resumed(etcd_cluster: EtcdCluster) -> None:
    follower = (etcd_cluster.leader() + 1) % 3
    etcd_cluster.pause(follower)
    started = time.monotonic()
    assert not etcd_cluster.members[follower].answers(0.5)
    assert time.monotonic() - started < 2
    etcd_cluster.resume(follower)
    wait_until(lambda: etcd_cluster.members[follower].answers(0.5), 15, "the member to answer")


def test_the_endpoint_lists_every_member_in_order(etcd_cluster: EtcdCluster) -> None:
    assert etcd_cluster.endpoint == ",".join(m.endpoint for m in etcd_cluster.members)
    assert len({m.client_port for m in etcd_cluster.members}) == 3


def test_stop_and_a_dropped_cluster_leave_no_process_nor_directory() -> None:
    cluster = EtcdCluster(1)
    cluster.start()
    member = cluster.members[0]
    pid, data_dir = member.pid, member.data_dir
    assert pid is not None
    cluster.pause(0)  # a paused member is stopped all the same
    cluster.stop()
    assert process_gone(pid) and not os.path.exists(data_dir)

    dropped = EtcdCluster(1)
    dropped.start()
    pid = dropped.members[0].pid
    assert pid is not None
    del dropped
    gc.collect()
    wait_until(lambda: process_gone(pid), 15, "the reaper to stop the dropped cluster's member")


def test_a_member_index_out_of_range_and_a_second_start_are_refused(
    etcd_cluster: EtcdCluster,
) -> None:
    with pytest.raises(IndexError, match="the cluster has 3"):
        etcd_cluster.kill(3)
    with pytest.raises(EtcdServerError, match="already started"):
        etcd_cluster.start()
    with pytest.raises(ValueError, match="1 to 9"):
        EtcdCluster(0)
