"""Fixtures of the interop tests: torch and rdzv nodes in one legacy etcd rendezvous.

Run by ``nox -s interop``, which installs torch 2.13.0; the default ``tests``
session does not collect this directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _interop_driver import Node

from rdzv.etcd_server import EtcdServer


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A started etcd (v2 API, plain http on 127.0.0.1), stopped at the end of the session."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def etcd_prefix() -> str:
    """An etcd prefix of this test's own, so that runs never meet across tests."""
    return f"/rdzv-interop/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def start_nodes(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[Callable[..., list[Node]]]:
    """``start_nodes(["torch", "rdzv"], min_nodes, max_nodes, **options)``: nodes of one run."""
    nodes: list[Node] = []
    run_id = f"interop-{uuid.uuid4().hex[:8]}"

    def start(impls: list[str], min_nodes: int, max_nodes: int, **options: Any) -> list[Node]:
        config = {
            "endpoint": etcd_server.get_endpoint(),
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
        started = [Node(impl, config) for impl in impls]
        for node in started:
            node.expect("ready")
        nodes.extend(started)
        return started

    yield start
    for node in nodes:
        node.close()
