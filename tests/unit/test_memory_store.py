"""InMemoryStore and PrefixStore: the Store semantics every backend store shares."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from rdzv import InMemoryStore, PrefixStore, StoreTimeoutError


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore(timeout=timedelta(seconds=2))


def test_set_then_get_returns_bytes_for_str_and_bytes(store: InMemoryStore) -> None:
    store.set("a", "text")
    store.set("b", b"\x00\xff")
    assert store.get("a") == b"text"
    assert store.get("b") == b"\x00\xff"


def test_get_blocks_until_another_thread_sets_the_key(store: InMemoryStore) -> None:
    threading.Timer(0.1, store.set, args=("late", b"v")).start()
    start = time.monotonic()
    assert store.get("late") == b"v"
    assert time.monotonic() - start >= 0.09


def test_get_of_a_missing_key_times_out_naming_it(store: InMemoryStore) -> None:
    store.set_timeout(timedelta(milliseconds=100))
    with pytest.raises(StoreTimeoutError, match="missing-key"):
        store.get("missing-key")


def test_add_counts_atomically_under_threads(store: InMemoryStore) -> None:
    def work() -> None:
        for _ in range(500):
            store.add("n", 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.add("n", 0) == 4000
    assert store.get("n") == b"4000"


def test_add_to_a_non_integer_says_what_the_key_holds(store: InMemoryStore) -> None:
    store.set("word", "abc")
    with pytest.raises(ValueError, match="abc"):
        store.add("word", 1)


def test_compare_set_follows_c10d_semantics(store: InMemoryStore) -> None:
    assert store.compare_set("k", b"x", b"y") == b"x"  # missing + expectation: untouched
    assert not store.check(["k"])
    assert store.compare_set("k", b"", b"first") == b"first"  # missing + empty: created
    assert store.compare_set("k", b"wrong", b"z") == b"first"  # mismatch: current value
    assert store.compare_set("k", b"first", b"second") == b"second"
    assert store.get("k") == b"second"


def test_wait_check_delete_and_num_keys(store: InMemoryStore) -> None:
    store.multi_set(["a", "b"], ["1", "2"])
    store.wait(["a", "b"])
    assert store.check(["a", "b"])
    assert not store.check(["a", "c"])
    assert store.num_keys() == 2
    assert store.delete_key("a") is True
    assert store.delete_key("a") is False
    assert store.num_keys() == 1
    with pytest.raises(StoreTimeoutError, match="'a'"):
        store.wait(["a", "b"], timedelta(milliseconds=50))


def test_multi_get_and_multi_set_keep_order(store: InMemoryStore) -> None:
    store.multi_set(["x", "y", "z"], [b"1", b"2", b"3"])
    assert store.multi_get(["z", "x"]) == [b"3", b"1"]
    with pytest.raises(ValueError, match="one value per key"):
        store.multi_set(["x"], [b"1", b"2"])


def test_append_creates_then_extends(store: InMemoryStore) -> None:
    store.append("log", b"a")
    store.append("log", "b")
    assert store.get("log") == b"ab"


def test_wait_for_change_wakes_on_a_write_and_returns_on_timeout(store: InMemoryStore) -> None:
    start = time.monotonic()
    assert store.wait_for_change("k", None, 0.05) is None
    assert time.monotonic() - start >= 0.04
    threading.Timer(0.05, store.set, args=("k", b"1")).start()
    start = time.monotonic()
    assert store.wait_for_change("k", None, 5) == b"1"
    assert time.monotonic() - start < 2


def test_keys_must_be_non_empty_strings(store: InMemoryStore) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        store.set("", b"v")
    with pytest.raises(TypeError, match="str"):
        store.set(1, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes"):
        store.set("k", 1)  # type: ignore[arg-type]


def test_prefix_store_puts_keys_under_its_prefix(store: InMemoryStore) -> None:
    view = PrefixStore("round-1", store)
    view.set("k", b"v")
    view.add("n", 2)
    assert store.get("round-1/k") == b"v"
    assert view.get("k") == b"v"
    assert view.check(["k", "n"])
    assert view.multi_get(["k"]) == [b"v"]
    assert PrefixStore("round-2", store).check(["k"]) is False
    assert view.delete_key("k") is True
    assert view.timeout == store.timeout
