"""The RendezvousBackend contract, held by every backend: memory, etcd-v2, etcd-v3 and c10d."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from rdzv import InMemoryBackend, RendezvousBackend, RendezvousStateError
from rdzv.backends.base import UNCHANGED
from rdzv.backends.c10d import C10dRendezvousBackend
from rdzv.backends.etcd import EtcdRendezvousBackend
from rdzv.backends.etcd_v3 import EtcdV3RendezvousBackend
from rdzv.core import decode_state
from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client
from rdzv.store.tcp import TCPStore

Plant = Callable[[str], None]
"""Writes a raw value where the backend keeps its state."""


@pytest.fixture(params=["memory", "etcd-v2", "etcd-v3", "c10d"])
def backend_and_plant(request: pytest.FixtureRequest) -> Iterator[tuple[RendezvousBackend, Plant]]:
    run_id = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        memory = InMemoryBackend()

        def plant_memory(value: str) -> None:
            memory._state = value.encode()
            memory._version += 1

        yield memory, plant_memory
    elif request.param == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        client = server.get_client()
        backend = EtcdRendezvousBackend(client, run_id, key_prefix="/contract")
        yield backend, lambda value: client.write(backend.key, value)
    elif request.param == "etcd-v3":
        v3_server: EtcdServer = request.getfixturevalue("etcd_v3_server")
        v3_client = EtcdV3Client("127.0.0.1", v3_server.get_port(), read_timeout=10)
        v3 = EtcdV3RendezvousBackend(v3_client, run_id, key_prefix="/contract")
        yield v3, lambda value: v3_client.put(v3.key.encode(), value.encode())
        v3_client.close()
    else:
        store = TCPStore("127.0.0.1", 0, is_master=True)
        c10d = C10dRendezvousBackend(store, run_id)
        yield c10d, lambda value: store.set(c10d.key, value)
        store.close()


def test_empty_backend_has_no_state(backend_and_plant: tuple[RendezvousBackend, Plant]) -> None:
    backend, _ = backend_and_plant
    assert backend.get_state() is None


def test_set_without_token_creates_the_state_once(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    created = backend.set_state(b"first")
    assert created is not None
    assert created[0] == b"first" and created[2] is True
    again = backend.set_state(b"second")
    assert again is not None
    assert again[0] == b"first" and again[2] is False
    assert backend.get_state() == (b"first", created[1])


def test_set_with_current_token_replaces_the_state(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    created = backend.set_state(b"one")
    assert created is not None
    replaced = backend.set_state(b"two", created[1])
    assert replaced is not None
    assert replaced[0] == b"two" and replaced[2] is True
    assert replaced[1] != created[1]
    assert backend.get_state() == (b"two", replaced[1])


@pytest.mark.parametrize("kind", ["stale", "malformed"])
def test_set_with_a_bad_token_returns_the_current_state(
    backend_and_plant: tuple[RendezvousBackend, Plant], kind: str
) -> None:
    backend, _ = backend_and_plant
    first = backend.set_state(b"one")
    assert first is not None
    second = backend.set_state(b"two", first[1])
    assert second is not None
    token = first[1] if kind == "stale" else object()
    result = backend.set_state(b"three", token)
    assert result == (b"two", second[1], False)


@pytest.mark.parametrize("value", ["not base64 !!", "%%%%"])
def test_corrupt_value_raises_state_error(
    backend_and_plant: tuple[RendezvousBackend, Plant], value: str
) -> None:
    backend, plant = backend_and_plant
    plant(value)
    with pytest.raises(RendezvousStateError, match=r"not base64|not written by rdzv"):
        result = backend.get_state()  # etcd-v2 and c10d check their base64 here,
        assert result is not None
        decode_state(result[0])  # the in-memory backend stores raw bytes: the codec checks


ASKS_WHETHER_CHANGED = {"c10d", "etcd-v3"}
"""Backends whose poll of an unchanged state is a small request (the others read it)."""


def test_get_state_if_changed_answers_unchanged_or_the_state_and_then_the_new_one(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    first = backend.set_state(b"one")
    assert first is not None
    unchanged = backend.get_state_if_changed(first[1])
    if backend.name in ASKS_WHETHER_CHANGED:
        assert unchanged is UNCHANGED
    else:
        assert unchanged in (UNCHANGED, (b"one", first[1]))
    second = backend.set_state(b"two", first[1])
    assert second is not None
    assert backend.get_state_if_changed(first[1]) == (b"two", second[1])


def test_get_state_if_changed_with_a_token_that_names_no_state_reads_it_whole(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    assert backend.get_state_if_changed(object()) is None  # no state yet
    first = backend.set_state(b"one")
    assert first is not None
    assert backend.get_state_if_changed(object()) == (b"one", first[1])


def test_get_state_if_changed_checks_a_new_value_as_get_state_does(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, plant = backend_and_plant
    first = backend.set_state(b"one")
    assert first is not None
    plant("not base64 !!")
    with pytest.raises(RendezvousStateError, match=r"not base64|not written by rdzv"):
        result = backend.get_state_if_changed(first[1])
        assert result is not None and result is not UNCHANGED
        decode_state(result[0])  # the in-memory backend stores raw bytes: the codec checks


def test_wait_for_change_wakes_on_a_write_from_another_thread(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    created = backend.set_state(b"one")
    assert created is not None
    threading.Timer(0.2, backend.set_state, args=(b"two", created[1])).start()
    start = time.monotonic()
    backend.wait_for_change(created[1], timeout=10)
    elapsed = time.monotonic() - start
    assert 0.1 < elapsed < 5
    assert backend.get_state() is not None


def test_wait_for_change_returns_after_its_timeout_when_nothing_changes(
    backend_and_plant: tuple[RendezvousBackend, Plant],
) -> None:
    backend, _ = backend_and_plant
    created = backend.set_state(b"one")
    assert created is not None
    start = time.monotonic()
    backend.wait_for_change(created[1], timeout=0.3)
    assert time.monotonic() - start < 3


def test_etcd_state_carries_a_ttl_renewed_on_write(etcd_server: EtcdServer) -> None:
    client = etcd_server.get_client()
    backend = EtcdRendezvousBackend(client, "ttl-run", key_prefix="/ttl", ttl=100)
    created = backend.set_state(b"one")
    assert created is not None
    assert 0 < (client.read(backend.key).ttl or 0) <= 100
    client.write(backend.key, client.read(backend.key).value, ttl=5, prevIndex=created[1])
    current = backend.get_state()
    assert current is not None
    assert backend.set_state(b"two", current[1]) is not None
    assert (client.read(backend.key).ttl or 0) > 5
