"""Fixtures of the interop tests: torch and rdzv nodes in one legacy etcd rendezvous.

Run by ``nox -s interop``, which installs torch 2.13.0; the default ``tests``
session does not collect this directory.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import etcd
import pytest
from _interop_driver import Node

from rdzv.etcd_server import EtcdServer
from rdzv.legacy.protocol import decode_state, encode_state


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


class StateRecorder:
    """Records every value written to an ``active_version`` key under a prefix, in order."""

    def __init__(self, server: EtcdServer, prefix: str) -> None:
        self._client = server.get_client()
        self._prefix = prefix
        self._stop = threading.Event()
        self.values: list[str] = []
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        index: int | None = None
        while not self._stop.is_set():
            try:
                event = self._client.read(
                    self._prefix, recursive=True, wait=True, waitIndex=index, timeout=0.5
                )
            except etcd.EtcdWatchTimedOut:
                continue
            except etcd.EtcdKeyNotFound:
                time.sleep(0.05)
                continue
            index = event.modifiedIndex + 1
            if event.key.endswith("/rdzv/active_version") and event.value is not None:
                self.values.append(event.value)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.values


@pytest.fixture
def start_nodes(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[Callable[..., list[Node]]]:
    """``start_nodes(["torch", "rdzv"], min_nodes, max_nodes, **options)``: nodes of one run."""
    nodes: list[Node] = []
    run_id = f"interop-{uuid.uuid4().hex[:8]}"
    # Every state either library writes during the test must be one rdzv reads and
    # writes back byte for byte.
    recorder = StateRecorder(etcd_server, etcd_prefix)

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
    states = recorder.stop()
    assert not nodes or states, "no rendezvous state was seen"
    for text in states:
        assert encode_state(decode_state(text, "active_version")) == text
