"""The v2 client's own HTTP (``ClusterClient`` on a ``MemberSession``) against a real etcd.

python-etcd's plain ``etcd.Client`` (urllib3) is the reference: what either writes,
the other reads the same, since torch's nodes and rdzv's share keys.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid

import etcd
import pytest
from _etcd_metrics import metric

from rdzv import RendezvousParameters
from rdzv.backends.base import UNCHANGED
from rdzv.backends.etcd import EtcdRendezvousBackend, create_backend
from rdzv.etcd.polls import KEPT_WATCH_SECONDS
from rdzv.etcd_client import create_etcd_client
from rdzv.etcd_server import EtcdServer

ODD_KEYS = ["a b", "ü/ß", "100%", "x+y", "r=s&t", "semi;colon", "tilde~", "@:!$'()*,"]
ODD_VALUES = ["a&b=c", "line\nbreak", "plus+space ", "ünïcode", "%41", ""]


def _client(server: EtcdServer, **options: object) -> etcd.Client:
    return create_etcd_client(
        RendezvousParameters("etcd-v2", server.get_endpoint(), "t", 1, 1, **options)
    )


def _plain(server: EtcdServer) -> etcd.Client:
    host, port = server.get_endpoint().rsplit(":", 1)
    return etcd.Client(host=host, port=int(port), read_timeout=10)


def _sockets_to(port: int) -> int:
    """Open TCP connections of this process to ``port`` on loopback."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.parametrize("key", ODD_KEYS)
def test_a_key_that_needs_escaping_is_the_same_key_for_python_etcd(
    etcd_server: EtcdServer, key: str
) -> None:
    path = f"/rdzv-v2-transport/{uuid.uuid4().hex}/{key}"
    ours, plain = _client(etcd_server), _plain(etcd_server)
    ours.write(path, "ours")
    assert plain.read(path).value == "ours"
    plain.write(path, "plain")
    assert ours.read(path).value == "plain"
    ours.delete(path)
    with pytest.raises(etcd.EtcdKeyNotFound):
        plain.read(path)


@pytest.mark.parametrize("key", ["q?r=s", "#frag", "%41"])
def test_a_key_with_a_query_fragment_or_escape_sign_is_that_key_itself(
    etcd_server: EtcdServer, key: str
) -> None:
    # python-etcd (urllib3) cuts such a key at "?" or "#" and reads "%41" as "A".
    directory = f"/rdzv-v2-transport/{uuid.uuid4().hex}"
    client = _client(etcd_server)
    client.write(f"{directory}/{key}", "v")
    listing = client.read(directory, recursive=True)
    assert [child.key for child in listing.leaves] == [f"{directory}/{key}"]
    assert client.read(f"{directory}/{key}").value == "v"


@pytest.mark.parametrize("value", ODD_VALUES)
def test_a_value_crosses_the_form_encoding_as_it_was(etcd_server: EtcdServer, value: str) -> None:
    path = f"/rdzv-v2-transport/{uuid.uuid4().hex}"
    ours, plain = _client(etcd_server), _plain(etcd_server)
    written = ours.write(path, value)
    assert plain.read(path).value == value
    swapped = ours.write(path, value + "!", prevIndex=written.modifiedIndex)
    assert ours.read(path).value == value + "!"
    with pytest.raises(etcd.EtcdCompareFailed):
        ours.write(path, "late", prevIndex=written.modifiedIndex)
    assert swapped.etcd_index >= swapped.modifiedIndex > written.modifiedIndex


def test_requests_of_one_thread_share_one_kept_connection(etcd_server: EtcdServer) -> None:
    port = int(etcd_server.get_endpoint().rsplit(":", 1)[1])
    gc.collect()  # the connections of clients that earlier tests dropped
    before = _sockets_to(port)
    client = _client(etcd_server)
    path = f"/rdzv-v2-transport/{uuid.uuid4().hex}"
    for k in range(50):
        client.write(path, str(k))
        assert client.read(path).value == str(k)
    assert _sockets_to(port) - before == 1


def test_a_watch_returns_the_change_and_one_without_a_change_times_out(
    etcd_server: EtcdServer,
) -> None:
    client = _client(etcd_server)
    path = f"/rdzv-v2-transport/{uuid.uuid4().hex}"
    index = client.write(path, "first").modifiedIndex
    threading.Timer(0.3, lambda: _plain(etcd_server).write(path, "second")).start()
    event = client.read(path, wait=True, waitIndex=index + 1, timeout=10)
    assert (event.value, event.action) == ("second", "set")
    started = time.monotonic()
    with pytest.raises(etcd.EtcdWatchTimedOut):
        client.read(path, wait=True, waitIndex=event.modifiedIndex + 1, timeout=0.5)
    assert time.monotonic() - started < 5
    assert client.read(path).value == "second"  # the client goes on after a timed-out watch


def test_an_unknown_method_is_refused_as_python_etcd_refuses_it(etcd_server: EtcdServer) -> None:
    with pytest.raises(etcd.EtcdException, match="HTTP method PATCH not supported"):
        _client(etcd_server).api_execute("/v2/keys/x", "PATCH")


def _poll_pair(server: EtcdServer) -> tuple[EtcdRendezvousBackend, EtcdRendezvousBackend]:
    params = RendezvousParameters("etcd-v2", server.get_endpoint(), uuid.uuid4().hex, 1, 1)
    return create_backend(params)[0], create_backend(params)[0]


def _gets(server: EtcdServer) -> float:
    return metric(server, "etcd_debugging_store_reads_total", action="get")


def _watchers(server: EtcdServer) -> float:
    return metric(server, "etcd_debugging_store_watchers")


def test_polls_of_an_unchanged_state_wait_on_a_kept_watch_instead_of_reading(
    etcd_server: EtcdServer,
) -> None:
    """v2 has no conditional read: each poll read the whole state. A second read in a
    row that finds it unchanged leaves a watch waiting; the polls after it make no
    request until etcd answers that watch, or KEPT_WATCH_SECONDS pass and one read
    confirms it."""
    poller, writer = _poll_pair(etcd_server)
    _, token, _ = writer.set_state(b"one")
    before = _gets(etcd_server)
    writer.get_state()
    one_read = _gets(etcd_server) - before  # what etcd counts for one
    watching = _watchers(etcd_server)
    assert poller.get_state_if_changed(token) is UNCHANGED  # reads
    assert _watchers(etcd_server) == watching
    assert poller.get_state_if_changed(token) is UNCHANGED  # reads, and sends the watch
    assert _watchers(etcd_server) == watching + 1
    before = _gets(etcd_server)
    for _ in range(50):
        assert poller.get_state_if_changed(token) is UNCHANGED
    assert _gets(etcd_server) == before
    # Past the kept time, one read confirms the silence; the same watch waits on.
    sent = metric(etcd_server, "etcd_debugging_store_watch_requests_total")
    time.sleep(KEPT_WATCH_SECONDS + 0.1)
    assert poller.get_state_if_changed(token) is UNCHANGED
    assert _gets(etcd_server) == before + one_read
    assert metric(etcd_server, "etcd_debugging_store_watch_requests_total") == sent
    assert _watchers(etcd_server) == watching + 1


def test_a_change_ends_the_kept_watch_and_the_next_poll_reads_it(etcd_server: EtcdServer) -> None:
    poller, writer = _poll_pair(etcd_server)
    _, token, _ = writer.set_state(b"one")
    watching = _watchers(etcd_server)
    for _ in range(2):  # the second read sends the watch
        assert poller.get_state_if_changed(token) is UNCHANGED
    written = writer.set_state(b"two", token)
    assert written is not None and written[2]
    deadline = time.monotonic() + KEPT_WATCH_SECONDS / 2  # sooner than a confirming read
    while (seen := poller.get_state_if_changed(token)) is UNCHANGED:
        assert time.monotonic() < deadline, "the poll did not see the change from its watch"
    assert seen == (b"two", written[1])
    assert _watchers(etcd_server) == watching  # the answered watch is closed
    for _ in range(2):  # a new one from here
        assert poller.get_state_if_changed(written[1]) is UNCHANGED
    etcd_server.get_client().delete(writer.key)
    deadline = time.monotonic() + KEPT_WATCH_SECONDS / 2
    while (seen := poller.get_state_if_changed(written[1])) is UNCHANGED:
        assert time.monotonic() < deadline, "the poll did not see the deletion"
    assert seen is None


def test_a_kept_watch_ends_with_its_backend(etcd_server: EtcdServer) -> None:
    poller, writer = _poll_pair(etcd_server)
    _, token, _ = writer.set_state(b"one")
    watching = _watchers(etcd_server)
    for _ in range(2):
        assert poller.get_state_if_changed(token) is UNCHANGED
    assert _watchers(etcd_server) == watching + 1
    del poller
    gc.collect()
    deadline = time.monotonic() + 5
    while _watchers(etcd_server) > watching:
        assert time.monotonic() < deadline, "etcd still holds the dropped backend's watch"
        time.sleep(0.05)
