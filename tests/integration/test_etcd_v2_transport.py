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

from rdzv import RendezvousParameters
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
