"""EtcdStore against a real etcd: every operation, blocking across processes, torch interop."""

from __future__ import annotations

import multiprocessing
import threading
import time
from base64 import b64encode
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import timedelta

import _etcd_workers
import etcd
import pytest

from rdzv.etcd_server import EtcdServer
from rdzv.store.base import StoreClosedError, StoreTimeoutError
from rdzv.store.etcd import (
    EtcdStore,
    EtcdStoreConnectionError,
    EtcdStoreError,
    EtcdStoreTimeoutError,
)
from rdzv.store.prefix import PrefixStore

SHORT = timedelta(seconds=0.3)


@pytest.fixture
def store(etcd_client: etcd.Client, etcd_prefix: str) -> EtcdStore:
    return EtcdStore(etcd_client, etcd_prefix, timeout=timedelta(seconds=10))


def _b64(text: str) -> str:
    return b64encode(text.encode()).decode()


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


# --- set / get ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", b"text"),
        ("grüße", "grüße".encode()),
        (b"\x00\xff binary \n", b"\x00\xff binary \n"),
        (b"", b""),
        (b"x" * 100_000, b"x" * 100_000),
    ],
)
def test_set_then_get_returns_the_bytes(
    store: EtcdStore, value: str | bytes, expected: bytes
) -> None:
    store.set("key", value)
    assert store.get("key") == expected


def test_set_replaces_the_value(store: EtcdStore) -> None:
    store.set("key", "one")
    store.set("key", "two")
    assert store.get("key") == b"two"


def test_layout_is_prefix_slash_base64_key_with_base64_value(
    store: EtcdStore, etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    store.set("rank/0", b"\x01\x02")
    node = etcd_client.read(f"{etcd_prefix}/{_b64('rank/0')}")
    assert node.value == b64encode(b"\x01\x02").decode()


def test_prefix_with_trailing_slash_or_without_leading_slash_is_the_same_store(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    EtcdStore(etcd_client, etcd_prefix + "/").set("k", "v")
    assert EtcdStore(etcd_client, etcd_prefix.lstrip("/")).get("k") == b"v"


def test_a_bytes_key_names_the_etcd_key_torch_gives_it(
    store: EtcdStore, etcd_client: etcd.Client
) -> None:
    """torch base64-encodes a bytes key as it is and a str key as UTF-8, so b"raw" and
    "raw" are one key, and a key that is not UTF-8 works too."""
    store.set(b"raw", "v")
    assert store.get("raw") == b"v"
    assert etcd_client.read(store.prefix + _b64("raw")).value == _b64("v")
    binary = b"\xff\x00key"
    store.set(binary, b"x")
    assert etcd_client.read(store.prefix + b64encode(binary).decode()).value == _b64("x")
    assert store.get(binary) == b"x"


def test_every_operation_takes_a_bytes_key(store: EtcdStore) -> None:
    binary = b"\xfe-key"
    assert store.add(binary, 2) == 2
    assert store.add(b"\xfe-key", 3) == 5
    assert store.check([binary])
    store.wait([binary], timeout=SHORT)
    assert store.multi_get([binary]) == [b"5"]
    assert store.compare_set(binary, "5", "six") == b"six"
    store.append(binary, "!")
    assert store.get_if_exists(binary) == b"six!"
    store.multi_set([b"a", "b"], ["1", "2"])
    assert store.multi_get(["a", b"b"]) == [b"1", b"2"]
    assert store.delete_key(binary)
    assert not store.check([binary])


def test_keys_whose_base64_contains_a_slash_work(store: EtcdStore) -> None:
    keys = ["\u00bf\u00bf", "???a", "\u00ff\u00ff"]  # wr/Cvw==, Pz8/YQ==, w7/Dvw==
    assert all("/" in _b64(k).rstrip("/") for k in keys)
    for key in keys:
        store.set(key, key)
    assert [store.get(k) for k in keys] == [k.encode() for k in keys]
    assert store.num_keys() == 3


def test_get_blocks_until_another_process_sets_the_key(
    etcd_server: EtcdServer, store: EtcdStore, etcd_prefix: str
) -> None:
    with _spawn_pool(1) as pool:
        setter = pool.submit(
            _etcd_workers.set_after, etcd_server.get_port(), etcd_prefix, "late", b"here", 0.5
        )
        value = store.get("late")
        woke_at = time.time()
        set_at = setter.result()
    assert value == b"here"
    assert woke_at - set_at < 0.25, "a watch wakes the getter as soon as the key is set"


def test_get_times_out_naming_the_key(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    store = EtcdStore(etcd_client, etcd_prefix, timeout=SHORT)
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="'never'") as failure:
        store.get("never")
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5
    assert isinstance(failure.value, TimeoutError)
    assert etcd_prefix in str(failure.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.get("never"),
        lambda store: store.wait(["never"]),
        lambda store: store.multi_get(["never"]),
        lambda store: PrefixStore("p", store).get("never"),
    ],
    ids=["get", "wait", "multi_get", "prefix-store-get"],
)
def test_a_key_that_never_appears_is_a_lookup_error_as_in_torch(
    etcd_client: etcd.Client, etcd_prefix: str, call: Callable[[EtcdStore], object]
) -> None:
    """torch's EtcdStore raises LookupError there, and code written for it catches that."""
    store = EtcdStore(etcd_client, etcd_prefix, timeout=SHORT)
    with pytest.raises(LookupError, match="never") as failure:
        call(store)
    error = failure.value
    assert isinstance(error, EtcdStoreTimeoutError)
    assert isinstance(error, StoreTimeoutError) and isinstance(error, TimeoutError)
    assert isinstance(error, RuntimeError)  # as torch's TCPStore's timeout (DistStoreError)


def test_get_ignores_writes_to_other_keys_and_deletes(store: EtcdStore) -> None:
    store.set_timeout(timedelta(seconds=5))

    def writer() -> None:
        time.sleep(0.1)
        store.set("other", "x")
        store.set("wanted", "first")
        store.delete_key("wanted")

    thread = threading.Thread(target=writer)
    thread.start()
    assert store.get("wanted") == b"first"
    thread.join()


def test_get_wakes_for_a_key_created_after_it_was_deleted(store: EtcdStore) -> None:
    store.set("k", "old")
    store.delete_key("k")

    def writer() -> None:
        time.sleep(0.2)
        store.set("k", "new")

    thread = threading.Thread(target=writer)
    thread.start()
    assert store.get("k") == b"new"
    thread.join()


# --- wait / check / multi ----------------------------------------------------


def test_wait_returns_once_all_keys_exist(store: EtcdStore) -> None:
    def writer() -> None:
        for key in ("a", "b", "c"):
            time.sleep(0.05)
            store.set(key, key)

    thread = threading.Thread(target=writer)
    thread.start()
    store.wait(["a", "b", "c"])
    thread.join()
    assert store.check(["a", "b", "c"])


def test_wait_timeout_names_only_the_missing_keys(store: EtcdStore) -> None:
    store.set("present", "1")
    with pytest.raises(StoreTimeoutError) as failure:
        store.wait(["present", "absent1", "absent2"], timeout=SHORT)
    message = str(failure.value)
    assert "'absent1'" in message and "'absent2'" in message
    assert "'present'" not in message


def test_wait_uses_the_override_timeout(store: EtcdStore) -> None:
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError):
        store.wait(["nope"], timeout=timedelta(seconds=0.2))
    assert time.monotonic() - started < 1.5


def test_check_does_not_wait(store: EtcdStore) -> None:
    store.set("a", "1")
    started = time.monotonic()
    assert store.check(["a"])
    assert not store.check(["a", "b"])
    assert store.check([])
    assert time.monotonic() - started < 0.5


def test_multi_set_and_multi_get(store: EtcdStore) -> None:
    store.multi_set(["x", "y", "z"], ["1", b"2", "3"])
    assert store.multi_get(["z", "x", "y"]) == [b"3", b"1", b"2"]
    with pytest.raises(ValueError, match="one value per key"):
        store.multi_set(["x"], [])


def test_get_if_exists(store: EtcdStore) -> None:
    assert store.get_if_exists("k") is None
    store.set("k", "")
    assert store.get_if_exists("k") == b""


# --- add ---------------------------------------------------------------------


def test_add_starts_from_zero_and_returns_the_sum(store: EtcdStore) -> None:
    assert store.add("n", 5) == 5
    assert store.add("n", -7) == -2
    assert store.add("n", 0) == -2
    assert store.get("n") == b"-2"


def test_add_to_a_non_integer_raises_value_error(store: EtcdStore) -> None:
    store.set("n", "abc")
    with pytest.raises(ValueError, match="integer"):
        store.add("n", 1)


def test_add_is_atomic_across_eight_processes(
    etcd_server: EtcdServer, store: EtcdStore, etcd_prefix: str
) -> None:
    writers, times = 8, 25
    with _spawn_pool(writers) as pool:
        futures = [
            pool.submit(_etcd_workers.add_many, etcd_server.get_port(), etcd_prefix, "n", times)
            for _ in range(writers)
        ]
        time.sleep(0.5)  # let the workers start so that they contend
        store.set("go", "1")
        results = [value for future in futures for value in future.result()]
    assert store.get("n") == str(writers * times).encode()
    assert sorted(results) == list(range(1, writers * times + 1)), "each add saw its own total"


# --- compare_set / append / delete / num_keys -----------------------------------


def test_compare_set_on_a_missing_key_with_empty_expectation_creates_it(store: EtcdStore) -> None:
    assert store.compare_set("k", "", "new") == b"new"
    assert store.get("k") == b"new"


def test_compare_set_on_a_missing_key_with_other_expectation_leaves_it_missing(
    store: EtcdStore,
) -> None:
    assert store.compare_set("k", "expected", "new") == b"expected"
    assert not store.check(["k"])


def test_compare_set_swaps_on_match_and_returns_current_on_mismatch(store: EtcdStore) -> None:
    store.set("k", "a")
    assert store.compare_set("k", "a", "b") == b"b"
    assert store.compare_set("k", "a", "c") == b"b"
    assert store.get("k") == b"b"


def test_compare_set_on_an_existing_empty_value(store: EtcdStore) -> None:
    store.set("k", b"")
    assert store.compare_set("k", b"", b"filled") == b"filled"


def test_compare_set_has_one_winner_among_threads(store: EtcdStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: store.compare_set("k", "", f"w{i}"), range(8)))
    winner = store.get("k")
    assert results.count(winner) == 8, "the losers see the winner's value"


def test_append_creates_and_extends(store: EtcdStore) -> None:
    store.append("log", "a")
    store.append("log", b"b")
    assert store.get("log") == b"ab"


def test_append_from_threads_loses_nothing(store: EtcdStore) -> None:
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: store.append("log", f"{i},"), range(30)))
    assert sorted(store.get("log").decode().rstrip(",").split(",")) == sorted(
        str(i) for i in range(30)
    )


def test_delete_key_reports_whether_it_existed(store: EtcdStore) -> None:
    store.set("k", "v")
    assert store.delete_key("k") is True
    assert store.delete_key("k") is False
    assert store.get_if_exists("k") is None


def test_num_keys_counts_keys_under_the_prefix_only(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    store = EtcdStore(etcd_client, etcd_prefix)
    neighbour = EtcdStore(etcd_client, etcd_prefix + "-neighbour")
    assert store.num_keys() == 0
    store.multi_set(["a", "b", "???a"], ["1", "2", "3"])
    neighbour.set("c", "3")
    assert store.num_keys() == 3
    store.delete_key("???a")  # base64 Pz8/YQ==: leaves the empty etcd directory Pz8
    store.delete_key("a")
    assert store.num_keys() == 1


def test_prefix_store_over_etcd_store(store: EtcdStore) -> None:
    view = PrefixStore("round-1", store)
    view.set("MASTER_ADDR", "host")
    assert store.get("round-1/MASTER_ADDR") == b"host"
    assert view.add("count", 2) == 2


# --- wait_for_change ---------------------------------------------------------


def test_wait_for_change_returns_at_once_when_the_value_already_differs(store: EtcdStore) -> None:
    store.set("k", "now")
    started = time.monotonic()
    store.wait_for_change("k", b"before", timeout=5)
    store.wait_for_change("absent", b"before", timeout=5)
    assert time.monotonic() - started < 0.5


def test_wait_for_change_wakes_on_set_and_on_delete(store: EtcdStore) -> None:
    store.set("k", "v1")

    def writer() -> None:
        time.sleep(0.2)
        store.set("k", "v2")
        time.sleep(0.2)
        store.delete_key("k")

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    store.wait_for_change("k", b"v1", timeout=5)
    assert store.get("k") == b"v2"
    store.wait_for_change("k", b"v2", timeout=5)
    assert store.get_if_exists("k") is None
    assert time.monotonic() - started < 1.5
    thread.join()


def test_wait_for_change_wakes_when_an_absent_key_appears(store: EtcdStore) -> None:
    timer = threading.Timer(0.2, store.set, ("k", "born"))
    timer.start()
    started = time.monotonic()
    store.wait_for_change("k", None, timeout=5)
    assert time.monotonic() - started < 1.5
    timer.join()


def test_wait_for_change_ignores_rewrites_of_the_same_value_and_times_out(
    store: EtcdStore,
) -> None:
    store.set("k", "same")
    timer = threading.Timer(0.1, store.set, ("k", "same"))
    timer.start()
    started = time.monotonic()
    store.wait_for_change("k", b"same", timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5
    timer.join()


def test_wait_for_change_watches_instead_of_polling(
    store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set("k", "v")
    calls: list[bool] = []
    real_read = store.client.read

    def counting_read(key: str, **kwargs: object) -> etcd.EtcdResult:
        calls.append(bool(kwargs.get("wait")))
        return real_read(key, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store.client, "read", counting_read)
    store.wait_for_change("k", b"v", timeout=1.0)
    assert calls == [False, True], "one read, then one watch for the whole timeout"


def test_waits_on_a_key_written_more_than_a_thousand_events_ago(
    etcd_client: etcd.Client, store: EtcdStore
) -> None:
    # etcd v2 keeps the last 1000 events; watching from the key's own index
    # would fail with "event index cleared".
    store.set("old", "v")
    for i in range(1010):
        etcd_client.write(f"{store.prefix}churn", str(i))
    timer = threading.Timer(0.2, store.set, ("old", "new"))
    timer.start()
    started = time.monotonic()
    store.wait_for_change("old", b"v", timeout=5)
    assert time.monotonic() - started < 2
    timer.join()
    assert store.get("old") == b"new"


# --- errors ------------------------------------------------------------------


def test_unreachable_etcd_raises_a_connection_error_naming_the_endpoint() -> None:
    with EtcdServer() as server:
        port = server.get_port()
        client = server.get_client(read_timeout=2)
    store = EtcdStore(client, "/gone", timeout=timedelta(seconds=5))
    started = time.monotonic()
    for operation in (
        lambda: store.set("k", "v"),
        lambda: store.get("k"),
        lambda: store.add("k", 1),
        store.num_keys,
        lambda: store.wait_for_change("k", None, 1.0),
    ):
        with pytest.raises(EtcdStoreConnectionError, match=f"127.0.0.1:{port}"):
            operation()
    assert time.monotonic() - started < 3


def test_blocked_get_fails_fast_when_etcd_stops() -> None:
    server = EtcdServer()
    server.start()
    store = EtcdStore(server.get_client(read_timeout=2), "/stopping", timeout=timedelta(seconds=30))
    outcome: list[BaseException] = []

    def getter() -> None:
        try:
            store.get("never")
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop(kill=True)  # a graceful stop would wait ~5 s for the open watch
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert len(outcome) == 1 and isinstance(outcome[0], EtcdStoreConnectionError)


def test_a_value_that_is_not_base64_is_reported(
    store: EtcdStore, etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    etcd_client.write(f"{etcd_prefix}/{_b64('k')}", "not base64!")
    with pytest.raises(EtcdStoreError, match="not base64"):
        store.get("k")


def test_colliding_base64_keys_raise_a_store_error(store: EtcdStore) -> None:
    store.set("ab?", "file")  # base64 "YWI/": the etcd file .../YWI
    with pytest.raises(EtcdStoreError, match="directory"):
        store.set("ab?c", "needs YWI as a directory")


def test_closed_store_refuses_operations(store: EtcdStore) -> None:
    store.close()
    with pytest.raises(StoreClosedError):
        store.set("k", "v")
    with pytest.raises(StoreClosedError):
        store.get("k")


def test_invalid_keys_and_timeouts(store: EtcdStore, etcd_client: etcd.Client) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        store.set("", "v")
    with pytest.raises(ValueError, match="non-empty"):
        store.set(b"", "v")
    with pytest.raises(TypeError, match="str or bytes"):
        store.set(1, "v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        EtcdStore(etcd_client, "/p", timeout=timedelta(0))
