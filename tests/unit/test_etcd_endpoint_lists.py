"""Clients built from an endpoint that lists a cluster's members: one set of options for all.

Building a client sends no request, so these need no etcd.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rdzv import RendezvousParameters
from rdzv.etcd.v2_client import ClusterClient
from rdzv.etcd_client import create_etcd_client
from rdzv.etcd_v3_client import create_etcd_v3_client


def params(endpoint: str, **options: object) -> RendezvousParameters:
    return RendezvousParameters("etcd-v2", endpoint, "run", 1, 1, **options)


@pytest.fixture
def ca(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not read before a request")
    return str(path)


def test_a_list_gives_a_v2_cluster_client_whose_tls_and_credentials_serve_every_member(
    ca: str,
) -> None:
    client = create_etcd_client(
        params("h1,h2:2380", protocol="https", ca_cert=ca, username="u", password="p")
    )
    assert isinstance(client, ClusterClient)
    assert client.base_uri == "https://h1:2379,https://h2:2380"
    assert client.pool.urls == ("https://h1:2379", "https://h2:2380")
    assert client.http is not None and client.http.connection_pool_kw["ca_certs"] == ca
    assert (client.username, client.password) == ("u", "p")


def test_a_single_endpoint_gives_a_client_of_that_one_member() -> None:
    client = create_etcd_client(params("h1:2379"))
    assert isinstance(client, ClusterClient)
    assert client.base_uri == "http://h1:2379"
    assert client.pool.urls == ("http://h1:2379",)


def test_a_list_gives_a_v3_client_of_every_member_with_the_same_tls(ca: str) -> None:
    client = create_etcd_v3_client(params("h1,[::1]:2380", protocol="https", ca_cert=ca))
    assert client.endpoint == "https://h1:2379,https://[::1]:2380"
    assert client._session.verify == ca


def test_a_bad_member_in_the_list_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="lists h1:1 twice"):
        create_etcd_client(params("h1:1,h1:1"))
