"""EtcdV3Store: the c10d Store operations on an etcd whose v2 API is off."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from _etcd_metrics import metric

from rdzv import RendezvousStoreInfo
from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client
from rdzv.store.base import StoreClosedError, StoreTimeoutError
from rdzv.store.etcd import EtcdStoreConnectionError, EtcdStoreError, EtcdStoreTimeoutError
from rdzv.store.etcd_v3 import EtcdV3Store


@pytest.fixture
def client(etcd_v3_server: EtcdServer) -> Iterator[EtcdV3Client]:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    yield client
    client.close()


@pytest.fixture
def store(client: EtcdV3Client) -> EtcdV3Store:
    return EtcdV3Store(client, f"/store-test/{uuid.uuid4().hex[:8]}", timedelta(seconds=10))


def test_set_then_get_returns_the_bytes(store: EtcdV3Store) -> None:
    store.set("key", "välue")
    store.set("raw", b"\x00\xff")
    assert store.get("key") == "välue".encode()
    assert store.get("raw") == b"\x00\xff"


def test_keys_live_as_plain_etcd_keys_under_the_prefix(
    store: EtcdV3Store, client: EtcdV3Client
) -> None:
    store.set("a/b ü", "v")
    kv, _ = client.get(f"{store.prefix}a/b ü".encode())
    assert kv is not None and kv.value == b"v"


def test_get_waits_for_a_key_set_by_another_thread(store: EtcdV3Store) -> None:
    threading.Timer(0.2, store.set, args=("late", "here")).start()
    assert store.get("late") == b"here"


def test_get_of_a_missing_key_times_out_naming_it(store: EtcdV3Store) -> None:
    store.set_timeout(timedelta(seconds=0.3))
    with pytest.raises(StoreTimeoutError, match="never"):
        store.get("never")


def test_a_key_that_never_appears_is_a_lookup_error_as_with_etcd_store(
    store: EtcdV3Store,
) -> None:
    store.set_timeout(timedelta(seconds=0.3))
    for call in (lambda: store.get("never"), lambda: store.wait(["never"])):
        with pytest.raises(LookupError, match="never") as failure:
            call()
        assert isinstance(failure.value, EtcdStoreTimeoutError)
        assert isinstance(failure.value, StoreTimeoutError)


def test_a_bytes_key_is_the_etcd_key_of_those_bytes(
    store: EtcdV3Store, client: EtcdV3Client
) -> None:
    store.set(b"raw", "v")
    assert store.get("raw") == b"v"
    binary = b"\xff\x00key"
    store.set(binary, "x")
    kv, _ = client.get(store.prefix.encode() + binary)
    assert kv is not None and kv.value == b"x"
    assert store.add(b"n", 2) == 2
    assert store.check([binary, b"n", "raw"])
    store.wait([binary], timeout=timedelta(seconds=1))
    assert store.compare_set(binary, "x", "y") == b"y"
    assert store.multi_get([binary, "n"]) == [b"y", b"2"]
    assert store.delete_key(binary)
    assert store.get_if_exists(binary) is None


def test_wait_and_multi_get_cover_every_key(store: EtcdV3Store) -> None:
    store.multi_set(["a", "b"], ["1", "2"])
    threading.Timer(0.2, store.set, args=("c", "3")).start()
    store.wait(["a", "b", "c"])
    assert store.multi_get(["a", "b", "c"]) == [b"1", b"2", b"3"]
    with pytest.raises(StoreTimeoutError, match="'d'"):
        store.wait(["a", "d"], timedelta(seconds=0.2))


def test_check_and_multi_get_if_exists_do_not_wait(store: EtcdV3Store) -> None:
    store.set("x", "1")
    assert store.check(["x"]) is True
    assert store.check(["x", "y"]) is False
    keys = [f"k{i}" for i in range(200)]  # more than one transaction's worth
    store.multi_set(keys[::2], ["v"] * 100)
    values = store.multi_get_if_exists(keys)
    assert values == [b"v" if i % 2 == 0 else None for i in range(200)]


def test_add_from_many_threads_counts_every_call(store: EtcdV3Store) -> None:
    def work() -> None:
        for _ in range(10):
            store.add("counter", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.add("counter", 0) == 40
    assert store.get("counter") == b"40"


def test_add_to_a_non_integer_says_what_is_there(store: EtcdV3Store) -> None:
    store.set("word", "hello")
    with pytest.raises(ValueError, match="hello"):
        store.add("word", 1)


def test_compare_set_follows_c10d(store: EtcdV3Store) -> None:
    # A missing key holds b"": only an empty expectation creates it.
    assert store.compare_set("k", "x", "y") == b"x"
    assert store.check(["k"]) is False
    assert store.compare_set("k", "", "first") == b"first"
    assert store.compare_set("k", "wrong", "second") == b"first"
    assert store.compare_set("k", "first", "second") == b"second"
    store.set("empty", "")
    assert store.compare_set("empty", "", "filled") == b"filled"


def test_append_concatenates(store: EtcdV3Store) -> None:
    store.append("log", "a")
    store.append("log", b"b")
    assert store.get("log") == b"ab"


def test_delete_and_num_keys(store: EtcdV3Store) -> None:
    assert store.num_keys() == 0
    store.multi_set(["a", "b"], ["1", "2"])
    assert store.num_keys() == 2
    assert store.delete_key("a") is True
    assert store.delete_key("a") is False
    assert store.num_keys() == 1


def test_wait_for_change_wakes_on_a_write(store: EtcdV3Store) -> None:
    store.set("flag", "0")
    threading.Timer(0.2, store.set, args=("flag", "1")).start()
    store.wait_for_change("flag", b"0", timeout=10)
    assert store.get("flag") == b"1"


def test_a_closed_store_refuses_operations(store: EtcdV3Store) -> None:
    store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        store.set("k", "v")


def test_bad_keys_and_values_are_type_errors(store: EtcdV3Store) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        store.set("", "v")
    with pytest.raises(ValueError, match="non-empty"):
        store.set(b"", "v")
    with pytest.raises(TypeError, match="str or bytes"):
        store.set(1, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes"):
        store.set("k", 1)  # type: ignore[arg-type]


def test_a_stopped_etcd_is_a_connection_error_naming_the_endpoint() -> None:
    with EtcdServer(enable_v2=False) as server:
        client = EtcdV3Client("127.0.0.1", server.get_port(), read_timeout=3)
        store = EtcdV3Store(client, "/gone")
        store.set("k", "v")
    with pytest.raises(EtcdStoreConnectionError, match=re.escape(client.endpoint)):
        store.get("k")
    assert issubclass(EtcdStoreConnectionError, EtcdStoreError)


def test_a_wait_for_keys_that_are_all_there_is_one_read(
    store: EtcdV3Store, etcd_v3_server: EtcdServer
) -> None:
    store.multi_set(["a", "b"], [b"1", b"2"])

    def served() -> tuple[float, float]:
        txns = metric(etcd_v3_server, "grpc_server_started_total", grpc_method="Txn")
        return txns, metric(etcd_v3_server, "grpc_server_started_total", grpc_method="Range")

    before = served()
    store.wait(["a", "b"])
    assert store.multi_get(["a", "b"]) == [b"1", b"2"]
    after = served()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 0)  # one transaction each


def _served(server: EtcdServer) -> dict[str, float]:
    """The requests etcd has served so far, by method."""
    methods = ("Txn", "Range", "Put", "Watch")
    return {m: metric(server, "grpc_server_started_total", grpc_method=m) for m in methods}


def _since(server: EtcdServer, before: dict[str, float]) -> dict[str, float]:
    return {m: n - before[m] for m, n in _served(server).items() if n - before[m]}


def test_multi_set_is_one_transaction(store: EtcdV3Store, etcd_v3_server: EtcdServer) -> None:
    before = _served(etcd_v3_server)
    store.multi_set(["a", "b", "c"], ["1", b"2", "3"])
    assert _since(etcd_v3_server, before) == {"Txn": 1}
    assert store.multi_get(["c", "a", "b"]) == [b"3", b"1", b"2"]
    with pytest.raises(ValueError, match="one value per key"):
        store.multi_set(["a"], [])


def test_keys_set_together_while_a_node_waits_are_read_again_at_once(
    store: EtcdV3Store, client: EtcdV3Client, etcd_v3_server: EtcdServer
) -> None:
    # The waiter watches the first key; once it appears, one read covers the others
    # (one request on v3) rather than a read of each in turn.
    writer = EtcdV3Store(client, store.prefix)
    got: list[list[bytes]] = []
    waiter = threading.Thread(target=lambda: got.append(store.multi_get(["a", "b", "c"])))
    before = _served(etcd_v3_server)
    waiter.start()
    while not _since(etcd_v3_server, before).get("Watch"):
        time.sleep(0.01)
    writer.multi_set(["a", "b", "c"], ["1", "2", "3"])
    waiter.join(10)
    assert got == [[b"1", b"2", b"3"]]
    served = _since(etcd_v3_server, before)
    # A read of all three, the watch (which reads its key once open), one read of the
    # other two; and the writer's transaction.
    assert served == {"Txn": 3, "Range": 2, "Watch": 1}


def test_a_round_s_address_is_published_in_one_request_and_read_in_one(
    store: EtcdV3Store, etcd_v3_server: EtcdServer
) -> None:
    before = _served(etcd_v3_server)
    published = RendezvousStoreInfo.build(0, store, "10.1.2.3", server_port=29500)
    assert _since(etcd_v3_server, before) == {"Txn": 1}
    before = _served(etcd_v3_server)
    assert RendezvousStoreInfo.build(1, store, "10.9.9.9", timeout=timedelta(seconds=5)) == (
        published
    )
    assert _since(etcd_v3_server, before) == {"Txn": 1}
