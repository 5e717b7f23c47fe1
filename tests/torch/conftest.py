"""Fixtures of the torch plug-in tests (run by ``nox -s torch``, not by the default session)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _torchrun import Job

from rdzv.etcd_server import EtcdServer

pytest.importorskip("torch", reason="the torch plug-in tests need torch (nox -s torch)")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A started etcd (v2 API, plain http on 127.0.0.1), stopped at the end of the session."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(scope="session")
def etcd_v3_server() -> Iterator[EtcdServer]:
    """A started etcd with the v2 API off, as etcd 3.6 and later are (for rdzv-etcd-v3)."""
    server = EtcdServer(enable_v2=False)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def run_id() -> str:
    return f"torch-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Job]:
    """The torchrun agents of a test; stopped, with their trainers, however the test ends."""
    running = Job(tmp_path)
    try:
        yield running
    finally:
        running.close()
