"""etcd-v2 backend specifics: its options, https with client certificates, etcd auth."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd
import pytest
import trustme
from _etcd_metrics import metric
from _silent import closed_endpoint
from _threads import next_round
from _threads import rendezvous as threaded_rendezvous

from rdzv import (
    RendezvousConnectionError,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    get_rendezvous_handler,
)
from rdzv.backends.etcd import EtcdRendezvousBackend, create_backend
from rdzv.core import decode_state
from rdzv.dynamic.handler import create_handler
from rdzv.etcd_server import EtcdServer
from rdzv.store.etcd import EtcdStore

SEGMENT_SPAN = 2**40
"""A log position of the etcd-v2 backend: ``segment * SEGMENT_SPAN + etcd index``."""


def rendezvous(count: int, endpoint: str, **options: Any) -> list[RendezvousInfo]:
    """``count`` nodes (threads) of one new etcd-v2 run; their results in any order."""
    return threaded_rendezvous("etcd-v2", count, endpoint, **options)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("protocol", "ftp"),
        ("read_timeout", 0),
        ("read_timeout", "soon"),
        ("ssl_cert", "/nonexistent/cert.pem"),
        ("ca_cert", "/nonexistent/ca.pem"),
        ("ttl", -5),
        ("etcd_prefix", "no-leading-slash"),
        ("username", "root"),  # without a password
    ],
)
def test_invalid_option_is_named(option: str, value: object) -> None:
    params = RendezvousParameters("etcd-v2", "127.0.0.1:2379", "run", 1, 1, **{option: value})
    with pytest.raises(ValueError, match=option):
        create_backend(params)


def test_creation_contacts_etcd_and_a_refused_connection_fails_at_once() -> None:
    endpoint = closed_endpoint()
    params = RendezvousParameters("etcd-v2", endpoint, "run", 1, 1, read_timeout=30)
    started = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match=endpoint) as failure:
        create_backend(params)
    assert time.monotonic() - started < 5
    assert "Check that etcd runs there" in str(failure.value)


def test_etcd_prefix_moves_the_state_and_the_store(etcd_server: EtcdServer) -> None:
    prefix = f"/custom-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters(
        "etcd-v2", etcd_server.get_endpoint(), "run-p", 1, 1, etcd_prefix=prefix
    )
    backend, _ = create_backend(params)
    assert backend.key == f"{prefix}/rendezvous/run-p"
    infos = rendezvous(1, etcd_server.get_endpoint(), etcd_prefix=prefix)
    assert [i.rank for i in infos] == [0]
    assert etcd_server.get_client().read(f"{prefix}/store", recursive=True).dir


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An etcd that speaks only https and demands a client certificate."""
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    files = {name: str(tmp / name) for name in ("ca", "server", "server.key", "client", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(files["server"])
    server.private_key_pem.write_to_path(files["server.key"])
    client = ca.issue_cert("rdzv-node")
    client.cert_chain_pems[0].write_to_path(files["client"])
    client.private_key_pem.write_to_path(files["key"])
    with EtcdServer(
        cert_file=files["server"],
        key_file=files["server.key"],
        trusted_ca_file=files["ca"],
        client_cert_auth=True,
        client_cert_file=files["client"],
        client_key_file=files["key"],
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


def test_https_without_a_client_certificate_is_a_connection_error(
    tls_etcd: dict[str, Any],
) -> None:
    params = RendezvousParameters(
        "etcd-v2",
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


def _v2_auth(endpoint: str, path: str, body: dict[str, Any], password: str | None) -> None:
    request = urllib.request.Request(
        f"http://{endpoint}/v2/auth/{path}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    if password is not None:
        token = base64.b64encode(f"root:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_username_and_password_reach_an_etcd_with_auth(tmp_path: Path) -> None:
    with EtcdServer() as etcd:
        endpoint = etcd.get_endpoint()
        _v2_auth(endpoint, "users/root", {"user": "root", "password": "s3cret"}, None)
        _v2_auth(endpoint, "enable", {}, None)
        # The guest role may still read and write by default: take that away.
        _v2_auth(
            endpoint,
            "roles/guest",
            {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
            "s3cret",
        )
        infos = rendezvous(2, endpoint, username="root", password="s3cret")
        assert sorted(i.rank for i in infos) == [0, 1]
        anonymous = RendezvousParameters("etcd-v2", endpoint, "anon", 1, 1, read_timeout=5)
        with pytest.raises(RendezvousConnectionError, match=endpoint):
            get_rendezvous_handler(anonymous).next_rendezvous()


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this test alone, which it may stop and start again."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


def test_a_join_rides_out_a_brief_etcd_outage(own_etcd: EtcdServer) -> None:
    """A node that calls next_rendezvous() while etcd is down keeps trying (within
    read_timeout) and meets its peer once etcd is back, instead of failing at once."""
    endpoint, run_id = own_etcd.get_endpoint(), f"outage-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters(
        "etcd-v2", endpoint, run_id, 2, 2, "127.0.0.1", read_timeout=30, last_call_timeout=0.1
    )
    first, second = get_rendezvous_handler(params), get_rendezvous_handler(params)
    results: list[RendezvousInfo | BaseException] = []

    def join() -> None:
        try:
            results.append(first.next_rendezvous())
        except BaseException as e:  # reported in the test's thread
            results.append(e)

    own_etcd.stop(keep_data=True, kill=True)
    thread = threading.Thread(target=join)
    thread.start()
    try:
        thread.join(timeout=1.0)  # the join runs (and fails its requests) while etcd is down
        assert thread.is_alive(), results
        own_etcd.start(timeout=30)
        assert own_etcd.get_endpoint() == endpoint
        other = second.next_rendezvous()
        thread.join(timeout=60)
        assert len(results) == 1 and isinstance(results[0], RendezvousInfo), results
        assert {results[0].rank, other.rank} == {0, 1}
    finally:
        first.shutdown()
        second.shutdown()


def test_an_outage_longer_than_read_timeout_is_reported(own_etcd: EtcdServer) -> None:
    """The retries end after read_timeout: the caller learns etcd is gone, not a hang
    until the join timeout (10 minutes here)."""
    params = RendezvousParameters(
        "etcd-v2",
        own_etcd.get_endpoint(),
        f"gone-{uuid.uuid4().hex[:8]}",
        2,
        2,
        "127.0.0.1",
        read_timeout=1,
        join_timeout=600,
    )
    handler = get_rendezvous_handler(params)
    own_etcd.stop(keep_data=True, kill=True)
    with pytest.raises(RendezvousConnectionError, match="raise read_timeout"):
        handler.next_rendezvous()
    with pytest.raises(RendezvousConnectionError):
        handler.num_nodes_waiting()


@pytest.mark.parametrize("suffix", [".intents", ".intents/0", ".heartbeats"])
def test_a_plain_key_where_a_directory_belongs_is_a_state_error(
    etcd_server: EtcdServer, etcd_prefix: str, suffix: str
) -> None:
    """Something else wrote a plain key where rdzv keeps its intents or heartbeats:
    the node is told so, and how to recover (delete the key), not that etcd is down."""
    endpoint, run_id = etcd_server.get_endpoint(), f"plain-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters(
        "etcd-v2", endpoint, run_id, 1, 1, "127.0.0.1", etcd_prefix=etcd_prefix
    )
    backend, _ = create_backend(params)
    client = etcd_server.get_client()
    client.write(backend.key + suffix, "not a directory")
    handler = get_rendezvous_handler(params)
    with pytest.raises(RendezvousStateError, match=f"{backend.key}{suffix} .* is a plain key"):
        if suffix.startswith(".intents"):
            handler.next_rendezvous()
        else:
            backend.beat("node", b"1.0", 10)
    client.delete(backend.key + suffix)
    assert handler.next_rendezvous().rank == 0
    handler.shutdown()


def _segments(client: etcd.Client, backend: EtcdRendezvousBackend) -> list[int]:
    """The numbers of the intent log's segment directories that exist."""
    try:
        listing = client.read(f"{backend.key}.intents")
    except etcd.EtcdKeyNotFound:
        return []
    return sorted(
        int(child.key.rsplit("/", 1)[-1])
        for child in listing.children
        if child.dir and child.key != listing.key
    )


@pytest.mark.parametrize("entries", [0, -3])
def test_a_segment_size_that_is_not_positive_is_refused(
    etcd_client: etcd.Client, entries: int
) -> None:
    with pytest.raises(ValueError, match=rf"segment size \({entries} entries\) must be positive"):
        EtcdRendezvousBackend(etcd_client, "run", intent_segment_entries=entries)


def test_reading_the_intent_log_returns_only_the_pending_records(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    """A read costs the records after the cursor in its segment: those admitted in an
    earlier segment are not read again, and that segment is deleted once the next
    one is full."""
    backend = EtcdRendezvousBackend(etcd_client, "log", etcd_prefix, intent_segment_entries=3)
    assert backend.read_intents(0) == ([], 0)
    backend.post_intent(b"a\n", 0)
    backend.post_intent(b"b\n", 0)
    records, cursor = backend.read_intents(0)
    assert records == [b"a\n", b"b\n"]
    assert 0 < cursor < SEGMENT_SPAN  # segment 0, not full yet
    assert backend.read_intents(cursor) == ([], cursor)
    backend.post_intent(b"c\n", cursor)
    records, cursor = backend.read_intents(cursor)
    assert (records, cursor) == ([b"c\n"], SEGMENT_SPAN)  # full and read: on to segment 1
    late = cursor - 1  # a node that read a state from before the rollover
    backend.post_intent(b"late\n", late)  # lands in segment 0, which no state reads again
    backend.post_intent(b"d\n", cursor)
    records, after_d = backend.read_intents(cursor)
    assert records == [b"d\n"]
    assert SEGMENT_SPAN < after_d < 2 * SEGMENT_SPAN
    assert _segments(etcd_client, backend) == [0, 1]
    backend.post_intent(b"e\n", after_d)
    backend.post_intent(b"f\n", after_d)
    assert backend.read_intents(after_d) == ([b"e\n", b"f\n"], 2 * SEGMENT_SPAN)
    assert _segments(etcd_client, backend) == [1]
    assert backend.read_intents(2 * SEGMENT_SPAN) == ([], 2 * SEGMENT_SPAN)


def test_the_intent_log_rolls_over_into_new_segments_and_deletes_the_old(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    """Round after round of joins with a segment of one entry, so that the log rolls
    over at nearly every read and intents land in segments that rolled over
    meanwhile: every node is still admitted in every round (it posts again), and
    only the newest segments are kept."""
    count, run_id = 4, "rolling"
    settings = RendezvousParameters(
        "etcd-v2", "", run_id, count, count, "127.0.0.1", last_call_timeout=0.05, join_timeout=30
    )
    backends = [
        EtcdRendezvousBackend(
            etcd_server.get_client(),
            run_id,
            key_prefix=f"{etcd_prefix}/rendezvous",
            intent_segment_entries=1,
        )
        for _ in range(count)
    ]
    store_prefix = f"{etcd_prefix}/store"
    handlers = [
        create_handler(EtcdStore(etcd_server.get_client(), store_prefix), backend, settings)
        for backend in backends
    ]
    try:
        for round_ in range(6):
            ranks = [info.rank for info in next_round(handlers)]
            assert sorted(ranks) == list(range(count)), f"round {round_}: {ranks}"
        result = backends[0].get_state()
        assert result is not None
        segment = decode_state(result[0]).intent_cursor // SEGMENT_SPAN
        assert segment >= 6, "the log never rolled over"
        kept = _segments(etcd_server.get_client(), backends[0])
        # The last full segment read is kept, and the state's own once a node posts
        # there. Older ones are deleted; the margin of one more is for a node that
        # read a state two rollovers old and posted into (re-created) a deleted one.
        assert kept and min(kept) >= segment - 2 and len(kept) <= 3, (segment, kept)
    finally:
        for handler in handlers:
            handler.shutdown()


def test_a_wait_on_a_quiet_state_outlives_etcds_event_history(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    """etcd v2 keeps its last 1000 events. A state left alone while a thousand other
    keys change (intents, heartbeats) falls out of them: the wait must still wait, not
    return at once (every waiting node would spin re-reading), and must see a write."""
    backend = EtcdRendezvousBackend(etcd_client, "quiet", etcd_prefix)
    result = backend.set_state(b"first")
    assert result is not None
    token = result[1]
    for i in range(1050):
        backend.beat(f"node-{i}", b"1.0", 60)
    started = time.monotonic()
    assert backend.wait_for_change(token, 0.5) is None
    assert time.monotonic() - started >= 0.45

    timer = threading.Timer(0.3, lambda: backend.set_state(b"second", token))
    timer.start()
    changed = backend.wait_for_change(token, 5)
    timer.join()
    assert changed is not None
    assert changed[0] == b"second"


def test_a_wait_for_a_state_that_did_not_exist_sees_one_created_since(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    """A node that read no state and then waits must see a state created in between at
    once, not sleep through its timeout: a join that waited so could miss the last call
    and be left out of a round it arrived in time for."""
    backend = EtcdRendezvousBackend(etcd_client, "created", etcd_prefix)
    assert backend.get_state() is None
    assert backend.set_state(b"first") is not None  # another node, between read and wait
    started = time.monotonic()
    changed = backend.wait_for_change(None, 5)
    assert changed is not None
    assert changed[0] == b"first"
    assert time.monotonic() - started < 1

    timer = threading.Timer(0.3, lambda: backend.set_state(b"second", changed[1]))
    timer.start()
    later = backend.wait_for_change(changed[1], 5)
    timer.join()
    assert later is not None
    assert later[0] == b"second"


def test_a_few_suspects_beats_are_read_by_key_and_many_by_one_listing(
    etcd_server: EtcdServer, etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    # A node checks its suspects, often one or two: listing the whole board for them
    # made every check cost the size of the job.
    backend = EtcdRendezvousBackend(etcd_client, "beats", etcd_prefix)
    for k in range(40):
        backend.beat(f"node-{k}", f"{k}.5".encode(), ttl=30)

    def listings() -> float:
        return metric(etcd_server, "etcd_debugging_store_reads_total", action="getRecursive")

    before = listings()
    assert backend.read_beats(["node-3", "node-gone"]) == {"node-3": b"3.5"}
    assert listings() == before
    many = [f"node-{k}" for k in range(backend.FEW_BEATS + 1)]
    assert backend.read_beats(many) == {name: f"{name[5:]}.5".encode() for name in many}
    assert listings() == before + 1
