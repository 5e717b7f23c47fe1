"""The plug-in in one process: torch's registry finds it, results and errors are torch's."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch.distributed as dist
from _torchrun import free_port
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
from torch.distributed.elastic.utils.store import barrier

from rdzv import rendezvous_handler_registry
from rdzv.api import RendezvousClosedError
from rdzv.etcd_server import EtcdServer
from rdzv.store.tcp import TCPStore
from rdzv.torch_plugin import (
    TORCHRUN_BACKENDS,
    TorchRendezvousHandler,
    TorchStoreAdapter,
    create_torch_handler,
)

FAST = {"last_call_timeout": "0.1", "join_timeout": "60"}


def torch_params(backend: str, endpoint: str, **options: str) -> torch_api.RendezvousParameters:
    return torch_api.RendezvousParameters(
        backend,
        endpoint,
        f"plugin-{uuid.uuid4().hex[:12]}",
        1,
        1,
        local_addr="127.0.0.1",
        **{**FAST, **options},
    )


@pytest.fixture
def c10d_handler() -> Iterator[torch_api.RendezvousHandler]:
    handler = get_rendezvous_handler(torch_params("rdzv-c10d", f"127.0.0.1:{free_port()}"))
    try:
        yield handler
    finally:
        handler.shutdown()


@pytest.fixture
def info(c10d_handler: torch_api.RendezvousHandler) -> torch_api.RendezvousInfo:
    return c10d_handler.next_rendezvous()


def test_torch_registry_builds_the_handler_under_the_torchrun_name(
    c10d_handler: torch_api.RendezvousHandler,
) -> None:
    assert isinstance(c10d_handler, TorchRendezvousHandler)
    assert isinstance(c10d_handler, torch_api.RendezvousHandler)
    assert c10d_handler.get_backend() == "rdzv-c10d"
    assert c10d_handler.rdzv_handler.get_backend() == "c10d"
    assert c10d_handler.get_run_id().startswith("plugin-")
    assert c10d_handler.use_agent_store is False


def test_a_round_comes_back_in_torch_types(info: torch_api.RendezvousInfo) -> None:
    assert isinstance(info, torch_api.RendezvousInfo)
    assert (info.rank, info.world_size) == (0, 1)
    assert isinstance(info.store, dist.Store)
    bootstrap = info.bootstrap_store_info
    assert isinstance(bootstrap, torch_api.RendezvousStoreInfo)
    assert bootstrap.master_addr == "127.0.0.1"
    assert bootstrap.master_port > 0


def test_the_store_answers_torch_calls_directly_and_through_a_torch_prefix_store(
    info: torch_api.RendezvousInfo,
) -> None:
    store = info.store
    store.set("key", "value")
    assert store.get("key") == b"value"
    assert store.add("counter", 2) == 2
    assert store.add("counter", 3) == 5
    store.multi_set(["a", "b"], ["1", "2"])
    assert store.multi_get(["a", "b"]) == [b"1", b"2"]
    assert store.check(["a", "b"])
    assert not store.check(["a", "missing"])
    assert store.delete_key("a")
    assert not store.check(["a"])
    assert store.num_keys() > 0

    # torch's C++ PrefixStore reaches the Python methods through pybind.
    prefixed = dist.PrefixStore("worker", store)
    prefixed.set("k", b"v")
    assert store.get("worker/k") == b"v"
    assert prefixed.compare_set("k", b"v", b"w") == b"w"
    assert prefixed.compare_set("k", b"v", b"x") == b"w"
    prefixed.append("log", b"1")
    prefixed.append("log", b"2")
    assert prefixed.multi_get(["log", "k"]) == [b"12", b"w"]
    prefixed.wait(["k"])


def test_the_store_timeout_is_the_adapters_own(info: torch_api.RendezvousInfo) -> None:
    store = info.store
    assert isinstance(store, TorchStoreAdapter)
    shared = store.rdzv_store.timeout
    store.set_timeout(timedelta(seconds=0.5))
    assert store.timeout == timedelta(seconds=0.5)
    assert store.rdzv_store.timeout == shared  # the backend's store is left alone
    with pytest.raises(dist.DistStoreError):
        store.get("never-set")
    with pytest.raises(dist.DistStoreError):
        dist.PrefixStore("worker", store).wait(["never-set"])
    with pytest.raises(ValueError, match="must be positive"):
        store.set_timeout(timedelta(0))


def test_a_barrier_that_times_out_raises_what_torchs_agent_catches(
    info: torch_api.RendezvousInfo,
) -> None:
    with pytest.raises(dist.DistStoreError):
        barrier(info.store, world_size=2, key_prefix="exit", barrier_timeout=0.5)
    barrier(info.store, world_size=1, key_prefix="alone", barrier_timeout=10)


def test_a_store_whose_host_is_gone_raises_dist_network_error() -> None:
    port = free_port()
    host = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=5))
    client = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=5))
    store = TorchStoreAdapter(client)
    store.set("key", "value")
    host.close()
    with pytest.raises(dist.DistNetworkError):
        store.get("key")
    client.close()


def test_a_closed_rendezvous_raises_torchs_closed_error(
    c10d_handler: torch_api.RendezvousHandler,
) -> None:
    c10d_handler.next_rendezvous()
    c10d_handler.set_closed()
    assert c10d_handler.is_closed()
    with pytest.raises(torch_api.RendezvousClosedError) as raised:
        c10d_handler.next_rendezvous()
    assert isinstance(raised.value.__cause__, RendezvousClosedError)
    assert c10d_handler.num_nodes_waiting() == 0


def test_an_unreachable_store_raises_torchs_connection_error() -> None:
    params = torch_params(
        "rdzv-c10d", f"127.0.0.1:{free_port()}", is_host="false", connect_timeout="0.5"
    )
    with pytest.raises(torch_api.RendezvousConnectionError, match="Cannot reach"):
        get_rendezvous_handler(params)


def test_a_backend_rdzv_does_not_provide_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="rdzv-c10d, rdzv-etcd, rdzv-etcd-v2, rdzv-etcd-v3"):
        create_torch_handler(torch_params("rdzv-nope", "127.0.0.1:1"))


@pytest.mark.parametrize("backend", ["rdzv-etcd-v2", "rdzv-etcd", "rdzv-etcd-v3"])
def test_etcd_backends_run_a_round(request: pytest.FixtureRequest, backend: str) -> None:
    assert TORCHRUN_BACKENDS[backend] in rendezvous_handler_registry.names()
    # rdzv-etcd-v3 runs on an etcd without the v2 API, as etcd 3.6 and later.
    server: EtcdServer = request.getfixturevalue(
        "etcd_v3_server" if backend == "rdzv-etcd-v3" else "etcd_server"
    )
    handler = get_rendezvous_handler(torch_params(backend, server.get_endpoint()))
    try:
        assert handler.get_backend() == backend
        info = handler.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
        info.store.set("key", b"value")
        assert info.store.get("key") == b"value"
    finally:
        handler.shutdown()


def test_importing_rdzv_and_building_a_handler_imports_no_torch() -> None:
    code = (
        "import sys, rdzv, rdzv.registry, rdzv.backends.c10d, rdzv.backends.etcd\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_etcd_of_rdzv_etcd_v3_serves_no_v2_api(etcd_v3_server: EtcdServer) -> None:
    """The etcd-v3 jobs run where torch's etcd backends cannot: v2 requests get a 404."""
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{etcd_v3_server.get_endpoint()}/v2/keys/", timeout=10)
    assert raised.value.code == 404
