"""The static rendezvous (backend ``static``): validation, and a fixed world on a TCP store."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor

import _static_workers
import pytest
from _ports import free_port

from rdzv import RendezvousParameters, get_rendezvous_handler
from rdzv.static import StaticTCPRendezvous


def params(endpoint: str = "127.0.0.1:29500", **options: object) -> RendezvousParameters:
    return RendezvousParameters("static", endpoint, "static-run", 2, 2, **options)


def test_missing_rank_is_a_value_error_naming_rank() -> None:
    with pytest.raises(ValueError, match=r"'rank'.*--node-rank"):
        get_rendezvous_handler(params())


def test_empty_endpoint_is_a_value_error_naming_the_endpoint() -> None:
    with pytest.raises(ValueError, match=r"'endpoint'.*--master-addr"):
        get_rendezvous_handler(params("  ", rank=0))


def test_endpoint_without_port_is_a_value_error_naming_the_port() -> None:
    with pytest.raises(ValueError, match=r"port is absent.*'node1'.*--master-port"):
        get_rendezvous_handler(params("node1", rank=0))


@pytest.mark.parametrize("rank", [-1, 2, "one"])
def test_rank_outside_the_world_is_a_value_error(rank: object) -> None:
    with pytest.raises(ValueError, match="'rank'"):
        get_rendezvous_handler(params(rank=rank))


@pytest.mark.parametrize("timeout", [0, "soon"])
def test_invalid_timeout_is_a_value_error(timeout: object) -> None:
    with pytest.raises(ValueError, match="'timeout'"):
        get_rendezvous_handler(params(rank=0, timeout=timeout))


def test_handler_takes_rank_world_size_and_timeout_from_the_parameters() -> None:
    handler = get_rendezvous_handler(params("10.0.0.1:1234", rank="1", timeout=42))
    assert isinstance(handler, StaticTCPRendezvous)
    assert (handler.master_addr, handler.master_port) == ("10.0.0.1", 1234)
    assert (handler.rank, handler.world_size) == (1, 2)
    assert handler.timeout.total_seconds() == 42
    assert handler.use_agent_store is True
    assert handler.get_backend() == "static"
    assert (handler.is_closed(), handler.num_nodes_waiting(), handler.shutdown()) == (
        False,
        0,
        True,
    )


def test_two_processes_rendezvous_statically_and_share_the_store() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    run_id = f"static-{uuid.uuid4().hex[:8]}"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Rank 1 first: it must wait for rank 0's store rather than fail at once.
        second = pool.submit(_static_workers.static_node, endpoint, 1, 2, run_id)
        first = pool.submit(_static_workers.static_node, endpoint, 0, 2, run_id)
        results = [first.result(timeout=60), second.result(timeout=60)]
    assert [r["rank"] for r in results] == [0, 1]
    assert {r["world_size"] for r in results} == {2}
    assert {r["master"] for r in results} == {("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))}
    assert {r["greeting"] for r in results} == {f"hello from {run_id}"}
    assert all(r["use_agent_store"] for r in results)
