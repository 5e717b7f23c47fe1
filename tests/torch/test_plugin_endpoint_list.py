"""The plug-in with an endpoint that lists the members of an etcd cluster, one of them dead."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler

from rdzv.etcd.cluster import EtcdCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as started:
        yield started


@pytest.mark.parametrize("backend", ["rdzv-etcd-v2", "rdzv-etcd-v3", "rdzv-etcd"])
def test_torch_params_with_an_endpoint_list_rendezvous_past_a_dead_first_member(
    cluster: EtcdCluster, backend: str
) -> None:
    if cluster.members[0].is_running():
        cluster.kill(0)  # the member listed first: every client asks it first
    params = torch_api.RendezvousParameters(
        backend,
        cluster.endpoint,
        f"plugin-list-{uuid.uuid4().hex[:8]}",
        1,
        1,
        local_addr="127.0.0.1",
        last_call_timeout="0.1",
        read_timeout="5",
    )
    handler = get_rendezvous_handler(params)
    info = handler.next_rendezvous()
    assert (info.rank, info.world_size) == (0, 1)
    handler.shutdown()
