"""Fixtures shared by the integration tests: a real etcd for the whole session."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import etcd
import pytest

from rdzv.etcd.cluster import EtcdCluster
from rdzv.etcd_server import EtcdServer


def unique_etcd_prefix(label: str = "test") -> str:
    """Return an etcd key prefix that no other test uses: ``/rdzv-test/<label>-<random>``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:60]
    return f"/rdzv-test/{safe}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A started etcd (v2 API, plain http on 127.0.0.1), stopped at the end of the session."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_client(etcd_server: EtcdServer) -> etcd.Client:
    """A fresh python-etcd client of the session's etcd (read_timeout 10 s)."""
    return etcd_server.get_client()


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> str:
    """An etcd key prefix unique to this test (see :func:`unique_etcd_prefix`)."""
    return unique_etcd_prefix(request.node.name)


@pytest.fixture(scope="session")
def etcd_v3_server() -> Iterator[EtcdServer]:
    """A started etcd with the v2 API switched off (as etcd 3.6), for the etcd-v3 backend."""
    server = EtcdServer(enable_v2=False)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_cluster_session() -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster (v2 and v3 API) on loopback, for the whole session."""
    cluster = EtcdCluster(3)
    cluster.start(timeout=60)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_cluster(etcd_cluster_session: EtcdCluster) -> Iterator[EtcdCluster]:
    """The session's 3-member cluster, whole again after the test: every member that a
    test killed is restarted, every paused one resumed."""
    cluster = etcd_cluster_session
    try:
        yield cluster
    finally:
        for member in cluster.members:
            if member.paused:
                cluster.resume(member.index)
            elif not member.is_running():
                cluster.restart(member.index)
        cluster.wait_until_ready(60)
