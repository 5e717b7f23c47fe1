"""etcd-v3 backend specifics, on an etcd whose v2 API is off: options, lease, intents,
heartbeats, https with client certificates, etcd auth, a lost etcd.

The shared contract (test_backend_contract.py) and the multi-process scenarios
(test_backend_scenarios.py: 8 processes, elasticity, a SIGKILLed node, close) run
on etcd-v3 too.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from _etcd_metrics import metric
from _silent import closed_endpoint
from _threads import rendezvous as threaded_rendezvous

from rdzv import (
    RendezvousConnectionError,
    RendezvousInfo,
    RendezvousParameters,
    get_rendezvous_handler,
)
from rdzv.backends.etcd_v3 import EtcdV3RendezvousBackend, create_backend
from rdzv.core.intents import LOG_SEGMENT_SPAN
from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client
from rdzv.store.etcd_v3 import EtcdV3Store


def gateway(endpoint: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    """POST to etcd's v3 JSON gateway, as a test's own view of etcd."""
    request = urllib.request.Request(
        f"http://{endpoint}/v3/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if token is not None:
        request.add_header("Authorization", token)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def rendezvous(count: int, endpoint: str, **options: Any) -> list[RendezvousInfo]:
    """``count`` nodes (threads) of one new etcd-v3 run; their results in any order."""
    return threaded_rendezvous("etcd-v3", count, endpoint, **options)


@pytest.fixture
def backend(etcd_v3_server: EtcdServer) -> Iterator[EtcdV3RendezvousBackend]:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    yield EtcdV3RendezvousBackend(client, f"run-{uuid.uuid4().hex[:8]}", key_prefix="/v3test")
    client.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("protocol", "ftp"),
        ("read_timeout", 0),
        ("read_timeout", "soon"),
        ("ssl_cert", "/nonexistent/cert.pem"),
        ("ssl_cert_key", "/nonexistent/key.pem"),
        ("ca_cert", "/nonexistent/ca.pem"),
        ("ttl", -5),
        ("ttl", "long"),
        ("etcd_prefix", "no-leading-slash"),
        ("username", "root"),  # without a password
    ],
)
def test_invalid_option_is_named(option: str, value: object) -> None:
    params = RendezvousParameters("etcd-v3", "127.0.0.1:2379", "run", 1, 1, **{option: value})
    with pytest.raises(ValueError, match=option):
        create_backend(params)


def test_etcd_v3_is_a_registered_backend(etcd_v3_server: EtcdServer) -> None:
    params = RendezvousParameters("etcd-v3", etcd_v3_server.get_endpoint(), "run", 1, 1)
    handler = get_rendezvous_handler(params)
    assert handler.get_backend() == "etcd-v3"


def test_the_test_etcd_has_no_v2_api(etcd_v3_server: EtcdServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{etcd_v3_server.get_client_url()}/v2/keys/", timeout=10)
    assert error.value.code == 404


def test_nodes_rendezvous_and_share_the_store(etcd_v3_server: EtcdServer) -> None:
    infos = rendezvous(3, etcd_v3_server.get_endpoint())
    assert sorted(i.rank for i in infos) == [0, 1, 2]
    infos[0].store.set("hello", b"world")
    assert infos[2].store.get("hello") == b"world"


def test_etcd_prefix_moves_the_state_and_the_store(etcd_v3_server: EtcdServer) -> None:
    prefix = f"/custom-{uuid.uuid4().hex[:8]}"
    endpoint = etcd_v3_server.get_endpoint()
    params = RendezvousParameters("etcd-v3", endpoint, "run-p", 1, 1, etcd_prefix=prefix)
    backend, store = create_backend(params)
    assert backend.key == f"{prefix}/rendezvous/run-p"
    assert isinstance(store, EtcdV3Store) and store.prefix == f"{prefix}/store/"
    infos = rendezvous(1, endpoint, etcd_prefix=prefix)
    assert [i.rank for i in infos] == [0]
    assert store.num_keys() > 0  # the round's store keys went under the prefix


def test_state_key_carries_a_lease_of_one_to_two_ttls(etcd_v3_server: EtcdServer) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port())
    backend = EtcdV3RendezvousBackend(client, f"ttl-{uuid.uuid4().hex[:6]}", ttl=100)
    created = backend.set_state(b"one")
    assert created is not None
    kv, _ = client.get(backend.key.encode())
    assert kv is not None and kv.lease != 0
    lease = gateway(etcd_v3_server.get_endpoint(), "lease/timetolive", {"ID": str(kv.lease)})
    assert 100 <= int(lease["grantedTTL"]) <= 200
    assert int(lease["TTL"]) > 90


def test_a_revoked_lease_is_replaced_on_the_next_write(
    etcd_v3_server: EtcdServer, backend: EtcdV3RendezvousBackend
) -> None:
    created = backend.set_state(b"one")
    assert created is not None
    kv, _ = backend.client.get(backend.key.encode())
    assert kv is not None
    # Revoking the lease deletes the key too: the state is gone, as when it expires.
    gateway(etcd_v3_server.get_endpoint(), "lease/revoke", {"ID": str(kv.lease)})
    assert backend.get_state() is None
    again = backend.set_state(b"two")
    assert again is not None and again[2] is True
    kv, _ = backend.client.get(backend.key.encode())
    assert kv is not None and kv.lease != 0
    lease = gateway(etcd_v3_server.get_endpoint(), "lease/timetolive", {"ID": str(kv.lease)})
    assert int(lease["TTL"]) > 0  # granted again


def _leases(backend: EtcdV3RendezvousBackend) -> dict[bytes, int]:
    """The lease of each key of the run: its state, intents and heartbeats."""
    kvs = backend.client.get_prefix(backend.key.encode())
    return {kv.key: kv.lease for kv in kvs}


def _nodes_write(nodes: list[EtcdV3RendezvousBackend]) -> None:
    """The first writes the state; each posts an intent and beats (TTLs 7200 and 3600 s:
    no epoch of their leases ends during the test but once in half an hour)."""
    created = nodes[0].set_state(b"one")
    assert created is not None and created[2] is True
    for k, node in enumerate(nodes):
        node.post_intent(b"intent", created[1])
        node.beat(f"node-{k}", b"beat", 3600)


def test_the_nodes_of_a_run_share_one_lease_per_ttl(etcd_v3_server: EtcdServer) -> None:
    """A write with a TTL needs a lease, and a grant is a raft write: each node of a run
    granted its own (a first round of 256 nodes: 0.64 s, against 0.57 s shared). The
    nodes of a run now compute the lease of each TTL, and the first to find it missing
    grants it; another run has its own."""
    run = f"shared-{uuid.uuid4().hex[:6]}"
    port = etcd_v3_server.get_port()
    nodes = [EtcdV3RendezvousBackend(EtcdV3Client("127.0.0.1", port), run) for _ in range(3)]
    _nodes_write(nodes)
    leases = _leases(nodes[0])
    assert len(leases) == 7  # the state, three intents, three heartbeats
    state = leases[nodes[0].key.encode()]
    beats = {lease for key, lease in leases.items() if b".heartbeats/" in key}
    assert {lease for key, lease in leases.items() if b".intents/" in key} == {state}
    assert len(beats) == 1 and state not in beats and 0 not in beats
    other = EtcdV3RendezvousBackend(EtcdV3Client("127.0.0.1", port), run + "-other")
    _nodes_write([other])
    assert set(_leases(other).values()).isdisjoint({state, *beats})


def test_with_etcd_auth_each_node_keeps_leases_of_its_own(auth_etcd: str) -> None:
    """With auth, etcd checks the writer's rights to every key of a lease at each write
    on it: shared by a thousand heartbeats, that made every write slower."""
    host, port = auth_etcd.split(":")
    run = f"auth-{uuid.uuid4().hex[:6]}"
    nodes = [
        EtcdV3RendezvousBackend(
            EtcdV3Client(host, int(port), username="root", password="s3cret"), run
        )
        for _ in range(2)
    ]
    _nodes_write(nodes)
    leases = _leases(nodes[0])
    beats = {lease for key, lease in leases.items() if b".heartbeats/" in key}
    intents = {lease for key, lease in leases.items() if b".intents/" in key}
    assert len(beats) == 2 and len(intents) == 2


def test_with_etcd_auth_a_joining_node_grants_its_lease_while_it_reads_the_state(
    auth_etcd: str,
) -> None:
    """A grant is a raft write: in front of a node's first write, at 256 nodes, while
    the first to place itself waited for its grant, more found no steward and lost a
    write (0.6 lost writes a node, against 0.1). With leases of its own, the node's
    read of the state starts the grant; its intent and the state share the lease."""
    host, port = auth_etcd.split(":")
    client = EtcdV3Client(host, int(port), username="root", password="s3cret")
    backend = EtcdV3RendezvousBackend(client, f"prefetch-{uuid.uuid4().hex[:6]}")

    def grants() -> float:
        return metric(auth_etcd, "grpc_server_started_total", grpc_method="LeaseGrant")

    before = grants()
    assert backend.get_state() is None
    deadline = time.monotonic() + 5
    while grants() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert grants() - before == 1  # granted before any write
    created = backend.set_state(b"one")
    assert created is not None and created[2] is True
    backend.post_intent(b"intent", created[1])
    assert grants() - before == 1
    leases = _leases(backend)
    assert len(set(leases.values())) == 1 and 0 not in leases.values()


def test_wait_for_change_returns_the_state_it_fired_on(backend: EtcdV3RendezvousBackend) -> None:
    created = backend.set_state(b"one")
    assert created is not None
    second = backend.set_state(b"two", created[1])
    assert second is not None
    # A watch from the revision after "one" reports the write that followed at once.
    assert backend.wait_for_change(created[1], timeout=10) == (b"two", second[1])


def test_wait_for_change_with_a_stale_token_returns_the_current_state_at_once(
    etcd_v3_server: EtcdServer, backend: EtcdV3RendezvousBackend
) -> None:
    created = backend.set_state(b"one")
    assert created is not None
    second = backend.set_state(b"two", created[1])
    assert second is not None
    third = backend.set_state(b"three", second[1])
    assert third is not None
    # Even with the revisions in between compacted away: the watch is from now.
    gateway(etcd_v3_server.get_endpoint(), "kv/compaction", {"revision": str(third[1])})
    assert backend.wait_for_change(created[1], timeout=10) == (b"three", third[1])
    assert backend.wait_for_change(None, timeout=10) == (b"three", third[1])
    assert backend.wait_for_change(object(), timeout=10) == (b"three", third[1])
    assert backend.wait_for_change(third[1], timeout=0.2) is None


def test_intents_come_back_in_posting_order_after_the_cursor(
    backend: EtcdV3RendezvousBackend,
) -> None:
    assert backend.read_intents(0) == ([], 0)
    backend.post_intent(b"first\n", 0)
    backend.post_intent(b"second\n", 0)
    records, cursor = backend.read_intents(0)
    assert records == [b"first\n", b"second\n"]
    assert cursor > 0
    assert backend.read_intents(cursor) == ([], cursor)
    backend.post_intent(b"third\n", 0)
    records, later = backend.read_intents(cursor)
    assert records == [b"third\n"] and later > cursor


def _segments(backend: EtcdV3RendezvousBackend) -> list[int]:
    """The numbers of the intent log's segments that hold a key."""
    kvs = backend.client.get_prefix(f"{backend.key}.intents/".encode())
    return sorted({int(kv.key.decode().split("/")[-2]) for kv in kvs})


def test_the_intent_log_rolls_over_into_segments_and_deletes_the_old_as_on_v2(
    etcd_v3_server: EtcdServer,
) -> None:
    """The log of etcd-v3 is etcd-v2's (one implementation): a full segment read moves
    the cursor to the next one, a late post into an old segment is never read again,
    and the segment before the one being read is deleted once that one is full."""
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    span = LOG_SEGMENT_SPAN
    backend = EtcdV3RendezvousBackend(
        client, f"log-{uuid.uuid4().hex[:8]}", "/v3test", intent_segment_entries=3
    )
    backend.post_intent(b"a\n", 0)
    backend.post_intent(b"b\n", 0)
    records, cursor = backend.read_intents(0)
    assert records == [b"a\n", b"b\n"] and 0 < cursor < span
    backend.post_intent(b"c\n", cursor)
    assert backend.read_intents(cursor) == ([b"c\n"], span)  # full: on to segment 1
    backend.post_intent(b"late\n", span - 1)  # a node that read a state from before
    backend.post_intent(b"d\n", span)
    records, after_d = backend.read_intents(span)
    assert records == [b"d\n"] and span < after_d < 2 * span
    assert _segments(backend) == [0, 1]
    backend.post_intent(b"e\n", after_d)
    backend.post_intent(b"f\n", after_d)
    assert backend.read_intents(after_d) == ([b"e\n", b"f\n"], 2 * span)
    assert _segments(backend) == [1]
    client.close()


@pytest.mark.parametrize("entries", [0, -3])
def test_a_segment_size_that_is_not_positive_is_refused(
    etcd_v3_server: EtcdServer, entries: int
) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port())
    with pytest.raises(ValueError, match=rf"segment size \({entries} entries\) must be positive"):
        EtcdV3RendezvousBackend(client, "run", intent_segment_entries=entries)


def test_heartbeats_are_read_by_name(backend: EtcdV3RendezvousBackend) -> None:
    backend.beat("node-a", b"1.5", ttl=30)
    backend.beat("node-b", b"2.5", ttl=30)
    backend.beat("node-a", b"3.5", ttl=30)
    assert backend.read_beats(["node-a", "node-c"]) == {"node-a": b"3.5"}
    assert backend.read_beats(["node-a", "node-b"]) == {"node-a": b"3.5", "node-b": b"2.5"}


def test_creation_contacts_etcd_and_a_refused_connection_fails_at_once() -> None:
    endpoint = closed_endpoint()
    params = RendezvousParameters("etcd-v3", endpoint, "run", 1, 1, read_timeout=30)
    started = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match=endpoint):
        create_backend(params)
    assert time.monotonic() - started < 5


def test_stopped_etcd_is_a_connection_error_naming_the_endpoint() -> None:
    with EtcdServer(enable_v2=False) as server:
        endpoint = server.get_endpoint()
        params = RendezvousParameters("etcd-v3", endpoint, "gone", 1, 1, read_timeout=3)
        backend, _ = create_backend(params)
        assert backend.set_state(b"one") is not None
    with pytest.raises(RendezvousConnectionError, match=endpoint):
        backend.get_state()
    with pytest.raises(RendezvousConnectionError, match=endpoint):
        backend.wait_for_change(None, 1)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An etcd without v2 that speaks only https and demands a client certificate."""
    tmp = tmp_path_factory.mktemp("tls-v3")
    ca = trustme.CA()
    names = ("ca", "server", "server.key", "client", "key", "combined")
    files = {name: str(tmp / name) for name in names}
    ca.cert_pem.write_to_path(files["ca"])
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(files["server"])
    server.private_key_pem.write_to_path(files["server.key"])
    client = ca.issue_cert("rdzv-node")
    client.cert_chain_pems[0].write_to_path(files["client"])
    client.private_key_pem.write_to_path(files["key"])
    client.private_key_and_cert_chain_pem.write_to_path(files["combined"])
    with EtcdServer(
        cert_file=files["server"],
        key_file=files["server.key"],
        trusted_ca_file=files["ca"],
        client_cert_auth=True,
        client_cert_file=files["client"],
        client_key_file=files["key"],
        enable_v2=False,
    ) as etcd:
        yield {"endpoint": etcd.get_endpoint(), **files}


def test_nodes_rendezvous_over_https_with_client_certificates(tls_etcd: dict[str, Any]) -> None:
    infos = rendezvous(
        3,
        tls_etcd["endpoint"],
        protocol="https",
        ssl_cert=tls_etcd["client"],
        ssl_cert_key=tls_etcd["key"],
        ca_cert=tls_etcd["ca"],
    )
    assert sorted(i.rank for i in infos) == [0, 1, 2]
    infos[0].store.set("over", "tls")
    assert infos[1].store.get("over") == b"tls"


def test_a_client_certificate_file_holding_its_key_works_too(tls_etcd: dict[str, Any]) -> None:
    infos = rendezvous(
        1,
        tls_etcd["endpoint"],
        protocol="https",
        ssl_cert=tls_etcd["combined"],
        ca_cert=tls_etcd["ca"],
    )
    assert [i.rank for i in infos] == [0]


def test_https_without_a_client_certificate_is_a_connection_error(
    tls_etcd: dict[str, Any],
) -> None:
    params = RendezvousParameters(
        "etcd-v3",
        tls_etcd["endpoint"],
        "no-cert",
        1,
        1,
        protocol="https",
        ca_cert=tls_etcd["ca"],
        read_timeout=5,
    )
    with pytest.raises(RendezvousConnectionError, match=tls_etcd["endpoint"]):
        get_rendezvous_handler(params).next_rendezvous()


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[str]:
    """An etcd without v2, with auth on and one user, root (password s3cret)."""
    with EtcdServer(enable_v2=False) as etcd:
        endpoint = etcd.get_endpoint()
        gateway(endpoint, "auth/user/add", {"name": "root", "password": "s3cret"})
        gateway(endpoint, "auth/user/grant", {"user": "root", "role": "root"})
        gateway(endpoint, "auth/enable", {})
        yield endpoint


def test_username_and_password_reach_an_etcd_with_auth(auth_etcd: str) -> None:
    infos = rendezvous(2, auth_etcd, username="root", password="s3cret")
    assert sorted(i.rank for i in infos) == [0, 1]
    infos[0].store.set("secret", "ok")
    assert infos[1].store.get("secret") == b"ok"


def test_without_credentials_etcd_with_auth_is_a_connection_error(auth_etcd: str) -> None:
    anonymous = RendezvousParameters("etcd-v3", auth_etcd, "anon", 1, 1, read_timeout=2)
    with pytest.raises(RendezvousConnectionError, match=auth_etcd):
        get_rendezvous_handler(anonymous).next_rendezvous()


def test_a_wrong_password_is_a_connection_error_that_says_so(auth_etcd: str) -> None:
    params = RendezvousParameters(
        "etcd-v3", auth_etcd, "wrong", 1, 1, username="root", password="nope", read_timeout=2
    )
    with pytest.raises(RendezvousConnectionError, match="authentication failed"):
        get_rendezvous_handler(params).next_rendezvous()


def test_an_expired_token_is_renewed(auth_etcd: str) -> None:
    host, port = auth_etcd.split(":")
    client = EtcdV3Client(host, int(port), username="root", password="s3cret")
    backend = EtcdV3RendezvousBackend(client, f"token-{uuid.uuid4().hex[:6]}")
    assert backend.get_state() is None
    # What etcd says of a token it no longer knows (expired, or etcd restarted).
    client._session.headers["Authorization"] = "stale.token"
    written = backend.set_state(b"one")
    assert written is not None and written[2]
    # A watch from the token (no read first): the stale token is renewed inside it,
    # and the watch goes on until its timeout, as nothing moved.
    client._session.headers["Authorization"] = "stale.token"
    assert backend.wait_for_change(written[1], 0.3) is None
    assert backend.get_state() == (b"one", written[1])


def test_more_names_than_a_few_are_read_from_one_listing_of_the_board(
    backend: EtcdV3RendezvousBackend,
) -> None:
    for k in range(40):
        backend.beat(f"node-{k}", f"{k}.5".encode(), ttl=30)
    many = [f"node-{k}" for k in range(backend.FEW_BEATS + 5)] + ["node-gone"]
    assert backend.read_beats(many) == {n: f"{n[5:]}.5".encode() for n in many[:-1]}
