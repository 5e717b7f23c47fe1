"""A watch kept open across waits, on a real etcd: one stream, one read, nothing left open.

etcd's own metrics count what it served: watch streams started and open
(``grpc_server_started_total``, ``etcd_debugging_mvcc_watch_stream_total``) and
reads (``Range``). Tests share the session's etcd, so they compare counts taken
before and after.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
import warnings

from _etcd_metrics import metric as _metric

from rdzv import RendezvousInfo, RendezvousParameters, get_rendezvous_handler
from rdzv.etcd.polls import KEPT_WATCH_SECONDS
from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client


def _served(server: EtcdServer) -> tuple[float, float, float]:
    """Watch streams started, watch streams open, and reads, so far."""
    return (
        _metric(server, "grpc_server_started_total", grpc_method="Watch", grpc_type="bidi_stream"),
        _metric(server, "etcd_debugging_mvcc_watch_stream_total"),
        _metric(server, "grpc_server_started_total", grpc_method="Range"),
    )


def _key() -> bytes:
    return f"/kept/{uuid.uuid4().hex[:8]}".encode()


def test_waits_that_keep_their_watch_share_one_stream_and_one_read(
    etcd_v3_server: EtcdServer,
) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    writer = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    first = writer.put(key, b"1")
    started, open_before, reads = _served(etcd_v3_server)
    try:
        assert client.watch(key, first, 0.3, keep=True) is None  # nothing moved
        second = writer.put(key, b"2")
        event = client.watch(key, first, 5, keep=True)
        assert event is not None and (event.kv.value, event.kv.mod_revision) == (b"2", second)
        third = writer.put(key, b"3")
        event = client.watch(key, second, 5, keep=True)
        assert event is not None and (event.kv.value, event.kv.mod_revision) == (b"3", third)
        now_started, now_open, now_reads = _served(etcd_v3_server)
        assert now_started - started == 1  # one stream for three waits
        assert now_open - open_before == 1  # kept open between them
        assert now_reads - reads == 1  # the key read once, when the stream opened
    finally:
        client.release_watches()
    deadline = time.monotonic() + 10
    while _served(etcd_v3_server)[1] > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _served(etcd_v3_server)[1] <= open_before
    client.close()
    writer.close()


def test_a_kept_watch_reports_the_newest_version_and_none_the_caller_has_passed(
    etcd_v3_server: EtcdServer,
) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    first = client.put(key, b"1")
    try:
        assert client.watch(key, first, 0.2, keep=True) is None
        client.put(key, b"2")
        third = client.put(key, b"3")
        # Both writes wait in the stream: the wait reports the last, not the one after `first`.
        # Room for both events to reach the client: once, in CI, only the first had.
        time.sleep(0.5)
        event = client.watch(key, first, 5, keep=True)
        assert event is not None and (event.kv.value, event.kv.mod_revision) == (b"3", third)
        # A caller that saw the newest version waits for the next, however the stream lags.
        started = time.monotonic()
        assert client.watch(key, third, 0.5, keep=True) is None
        assert time.monotonic() - started >= 0.45
        client.delete(key)
        event = client.watch(key, third, 5, keep=True)
        assert event is not None and event.deleted
    finally:
        client.close()


def test_a_watch_not_kept_is_closed_when_it_returns(etcd_v3_server: EtcdServer) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    version = client.put(key, b"1")
    _, open_before, _ = _served(etcd_v3_server)
    assert client.watch(key, version, 0.2) is None
    deadline = time.monotonic() + 10
    while _served(etcd_v3_server)[1] > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _served(etcd_v3_server)[1] <= open_before
    client.close()


def test_a_rendezvous_that_waited_leaves_no_watch_open(etcd_v3_server: EtcdServer) -> None:
    run_id = f"kept-{uuid.uuid4().hex[:8]}"
    endpoint = etcd_v3_server.get_endpoint()
    started, open_before, _ = _served(etcd_v3_server)
    params = RendezvousParameters("etcd-v3", endpoint, run_id, 3, 3, "127.0.0.1")
    handlers = [get_rendezvous_handler(params) for _ in range(3)]
    infos: list[RendezvousInfo] = []
    early = [
        threading.Thread(target=lambda h=h: infos.append(h.next_rendezvous())) for h in handlers[:2]
    ]
    try:
        for thread in early:
            thread.start()
        # Two of three nodes cannot form the round: they wait, on watches kept open.
        deadline = time.monotonic() + 10
        while _served(etcd_v3_server)[0] < started + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _served(etcd_v3_server)[0] >= started + 2
        infos.append(handlers[2].next_rendezvous())
        for thread in early:
            thread.join(timeout=30)
        assert sorted(info.rank for info in infos) == [0, 1, 2]
        deadline = time.monotonic() + 10
        while _served(etcd_v3_server)[1] > open_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _served(etcd_v3_server)[1] <= open_before
    finally:
        for handler in handlers:
            handler.shutdown()


def test_two_threads_may_wait_on_one_key_of_one_client(etcd_v3_server: EtcdServer) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    first = client.put(key, b"1")
    seen: list[bytes] = []

    def wait() -> None:
        event = client.watch(key, first, 10, keep=True)
        seen.append(b"" if event is None else event.kv.value)

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    client.put(key, b"2")
    for thread in threads:
        thread.join(timeout=15)
    assert seen == [b"2", b"2"]
    client.close()


def test_a_client_dropped_without_close_closes_its_connections_and_watches_quietly(
    etcd_v3_server: EtcdServer,
) -> None:
    """As urllib3's pools did: a handler dropped unclosed leaves no socket to the GC's warning."""
    _, open_before, _ = _served(etcd_v3_server)
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    revision = client.put(key, b"1")  # an idle connection kept for the next request
    assert client.watch(key, revision, 0.2, keep=True) is None  # a watch kept open
    assert _served(etcd_v3_server)[1] == open_before + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    deadline = time.monotonic() + 10
    while _served(etcd_v3_server)[1] > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _served(etcd_v3_server)[1] <= open_before  # etcd saw the watch closed


def _txns(server: EtcdServer) -> float:
    return _metric(server, "grpc_server_started_total", grpc_method="Txn")


def test_polls_of_an_unchanged_key_wait_on_a_kept_watch_instead_of_asking(
    etcd_v3_server: EtcdServer,
) -> None:
    """A poll's conditional read costs etcd about 320 µs through the gateway. A second
    one in a row that finds the key unchanged leaves a watch from its revision on;
    the polls after it make no request until etcd sends something on that watch, or
    KEPT_WATCH_SECONDS pass and one read confirms the silence."""
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    version = client.put(key, b"1")
    started, open_before, _ = _served(etcd_v3_server)
    try:
        before = _txns(etcd_v3_server)
        for _ in range(2):  # the second read leaves the watch
            assert client.get_if_changed(key, version) == (False, None)
        assert _txns(etcd_v3_server) == before + 2
        assert _served(etcd_v3_server)[:2] == (started + 1, open_before + 1)
        for _ in range(50):
            assert client.get_if_changed(key, version) == (False, None)
        assert _txns(etcd_v3_server) == before + 2
        time.sleep(KEPT_WATCH_SECONDS + 0.1)  # then one read confirms the silence
        assert client.get_if_changed(key, version) == (False, None)
        assert _txns(etcd_v3_server) == before + 3
        assert _served(etcd_v3_server)[0] == started + 1  # the same watch waits on
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while _served(etcd_v3_server)[1] > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _served(etcd_v3_server)[1] <= open_before  # closed with its client


def test_a_change_ends_the_polls_kept_watch_and_the_next_poll_reads_it(
    etcd_v3_server: EtcdServer,
) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    writer = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    key = _key()
    version = client.put(key, b"1")
    try:
        for _ in range(2):  # the second read leaves the watch
            assert client.get_if_changed(key, version) == (False, None)
        second = writer.put(key, b"2")
        deadline = time.monotonic() + KEPT_WATCH_SECONDS / 2  # sooner than a confirming read
        while (seen := client.get_if_changed(key, version)) == (False, None):
            assert time.monotonic() < deadline, "the poll did not see the change from its watch"
            time.sleep(0.01)
        changed, kv = seen
        assert changed and kv is not None and (kv.value, kv.mod_revision) == (b"2", second)
        for _ in range(2):  # a new watch from here
            assert client.get_if_changed(key, second) == (False, None)
        writer.delete(key)
        deadline = time.monotonic() + KEPT_WATCH_SECONDS / 2
        while (seen := client.get_if_changed(key, second)) == (False, None):
            assert time.monotonic() < deadline, "the poll did not see the deletion"
            time.sleep(0.01)
        assert seen == (True, None)
    finally:
        client.close()
        writer.close()
