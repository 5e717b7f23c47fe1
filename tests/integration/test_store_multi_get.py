"""What every store does alike with ``multi_get(keys, timeout)``: torch's ``wait`` then
``multi_get`` in one call, bounded by the timeout given, not the store's."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rdzv import InMemoryStore
from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client
from rdzv.store.base import Store, StoreTimeoutError
from rdzv.store.etcd import EtcdStore
from rdzv.store.etcd_v3 import EtcdV3Store
from rdzv.store.file import FileStore
from rdzv.store.tcp import TCPStore, TCPStoreServer

TIMEOUT = timedelta(seconds=30)
"""The stores' own timeout: far longer than the one each call gives."""


def _memory(_: pytest.FixtureRequest, __: Path) -> Iterator[Store]:
    yield InMemoryStore(TIMEOUT)


def _file(_: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = FileStore(str(tmp_path / "store"), -1, TIMEOUT)
    yield store
    store.close()


def _tcp(_: pytest.FixtureRequest, __: Path) -> Iterator[Store]:
    with TCPStoreServer("127.0.0.1", 0) as server:
        store = TCPStore("127.0.0.1", server.port, timeout=TIMEOUT)
        yield store
        store.close()


def _etcd_v2(request: pytest.FixtureRequest, _: Path) -> Iterator[Store]:
    server: EtcdServer = request.getfixturevalue("etcd_server")
    yield EtcdStore(server.get_client(), f"/multi-get/{uuid.uuid4().hex[:8]}", TIMEOUT)


def _etcd_v3(request: pytest.FixtureRequest, _: Path) -> Iterator[Store]:
    server: EtcdServer = request.getfixturevalue("etcd_v3_server")
    client = EtcdV3Client("127.0.0.1", server.get_port(), read_timeout=10)
    yield EtcdV3Store(client, f"/multi-get/{uuid.uuid4().hex[:8]}", TIMEOUT)
    client.close()


_STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[Store]]] = {
    "memory": _memory,
    "file": _file,
    "tcp": _tcp,
    "etcd-v2": _etcd_v2,
    "etcd-v3": _etcd_v3,
}


@pytest.fixture(params=sorted(_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from _STORES[request.param](request, tmp_path)


def test_multi_get_waits_no_longer_than_its_timeout(store: Store) -> None:
    store.set("a", "1")
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="'b'"):
        store.multi_get(["a", "b"], timedelta(seconds=0.2))
    assert time.monotonic() - started < TIMEOUT.total_seconds() / 2
    store.set("b", "2")
    assert store.multi_get(["b", "a"], timedelta(seconds=0.2)) == [b"2", b"1"]
