"""rdzv's file store: one file, several threads and OS processes of this host."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import _store_workers
import pytest

from rdzv.store.base import StoreClosedError, StoreError, StoreTimeoutError
from rdzv.store.file import FileStore


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def open_store(path: str) -> Iterator[Callable[..., FileStore]]:
    """Open stores on the test's file (timeout 5 s unless told), closed after the test."""
    made: list[FileStore] = []

    def make(timeout: float = 5.0, world_size: int = -1) -> FileStore:
        store = FileStore(path, world_size, timedelta(seconds=timeout))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def later(open_store: Callable[..., FileStore]) -> Iterator[Callable[..., None]]:
    """Run a call after a delay on a timer thread; joined before the stores close."""
    timers: list[threading.Timer] = []

    def schedule(delay: float, function: Callable[..., object], *args: object) -> None:
        timer = threading.Timer(delay, function, args)
        timers.append(timer)
        timer.start()

    yield schedule
    for timer in timers:
        timer.join(10)


@pytest.fixture
def store(open_store: Callable[..., FileStore]) -> FileStore:
    return open_store()


def test_value_set_through_one_instance_is_read_through_another(
    open_store: Callable[..., FileStore],
) -> None:
    writer, reader = open_store(), open_store()
    writer.set("k", "text")
    writer.set("b", bytes(range(256)))
    assert reader.get("k") == b"text"
    assert reader.get("b") == bytes(range(256))


def test_set_replaces_the_previous_value(store: FileStore) -> None:
    store.set("k", b"one")
    store.set("k", b"")
    assert store.get("k") == b""


def test_get_waits_for_a_key_set_by_another_process(path: str) -> None:
    store = FileStore(path, timeout=timedelta(seconds=20))
    worker = _store_workers.start("file", path, "set_after", "late", "here", 0.5)
    try:
        assert store.get("late") == b"here"
        woke = time.time()
        set_at = _store_workers.result(worker)
    finally:
        _store_workers.stop(worker)
    store.close()
    assert woke - set_at < 0.5


def test_get_times_out_naming_the_missing_key(open_store: Callable[..., FileStore]) -> None:
    store = open_store(timeout=0.2)
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="'absent'"):
        store.get("absent")
    assert 0.15 < time.monotonic() - started < 1.5


def test_add_starts_from_zero_and_returns_the_running_sum(store: FileStore) -> None:
    assert store.add("n", 5) == 5
    assert store.add("n", -7) == -2
    assert store.get("n") == b"-2"


def test_add_on_a_value_that_is_not_an_integer_raises_value_error(store: FileStore) -> None:
    store.set("text", b"hello")
    with pytest.raises(ValueError, match="needs an integer at key 'text'"):
        store.add("text", 1)


def test_add_is_atomic_across_eight_processes(store: FileStore, path: str) -> None:
    workers, times = 8, 200
    processes = [
        _store_workers.start("file", path, "add", "counter", times) for _ in range(workers)
    ]
    try:
        _store_workers.wait_until_ready(store, workers)
        store.set("go", b"1")
        returned = [v for process in processes for v in _store_workers.result(process)]
    finally:
        _store_workers.stop(*processes)
    assert store.get("counter") == str(workers * times).encode()
    assert sorted(returned) == list(range(1, workers * times + 1))


def test_add_is_atomic_across_threads_of_one_instance(store: FileStore) -> None:
    def work() -> None:
        for _ in range(100):
            store.add("n", 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.get("n") == b"800"


def test_compare_set_follows_c10d_semantics(store: FileStore) -> None:
    assert store.compare_set("missing", b"old", b"new") == b"old"
    assert not store.check(["missing"])
    assert store.compare_set("k", b"", b"first") == b"first"
    assert store.compare_set("k", b"x", b"second") == b"first"
    assert store.compare_set("k", b"first", b"second") == b"second"
    assert store.get("k") == b"second"


def test_wait_returns_once_every_key_exists(
    open_store: Callable[..., FileStore], later: Callable[..., None]
) -> None:
    store, other = open_store(), open_store()
    store.set("a", b"1")
    later(0.1, other.set, "b", b"2")
    store.wait(["a", "b"], timedelta(seconds=5))


def test_wait_timeout_names_only_the_missing_keys(store: FileStore) -> None:
    store.set("present", b"1")
    with pytest.raises(StoreTimeoutError) as info:
        store.wait(["present", "missing"], timedelta(seconds=0.1))
    assert "['missing']" in str(info.value)


def test_check_delete_and_num_keys(store: FileStore) -> None:
    store.multi_set(["a", "b"], [b"1", b"2"])
    assert store.check(["a", "b"]) and not store.check(["a", "c"])
    assert store.num_keys() == 2
    assert store.delete_key("a")
    assert not store.delete_key("a")
    assert store.num_keys() == 1
    assert store.get_if_exists("a") is None


def test_multi_get_keeps_the_order_of_keys(store: FileStore) -> None:
    store.multi_set(["x", "y"], [b"1", "2"])
    assert store.multi_get(["y", "x"]) == [b"2", b"1"]


def test_append_creates_then_extends_a_value(open_store: Callable[..., FileStore]) -> None:
    a, b = open_store(), open_store()
    a.append("log", b"ab")
    b.append("log", "cd")
    assert a.get("log") == b"abcd"


def test_get_if_exists_distinguishes_absent_from_empty(store: FileStore) -> None:
    assert store.get_if_exists("k") is None
    store.set("k", b"")
    assert store.get_if_exists("k") == b""


def test_wait_for_change_wakes_on_a_write_and_returns_quietly_at_its_timeout(
    open_store: Callable[..., FileStore], later: Callable[..., None]
) -> None:
    store, other = open_store(), open_store()
    store.set("state", b"v1")
    later(0.1, other.set, "state", b"v2")
    started = time.monotonic()
    store.wait_for_change("state", b"v1", timeout=5)
    assert time.monotonic() - started < 1
    started = time.monotonic()
    store.wait_for_change("state", b"v2", timeout=0.1)
    assert time.monotonic() - started >= 0.09


def test_internal_counters_are_not_user_keys(open_store: Callable[..., FileStore]) -> None:
    store = open_store()
    open_store()
    assert store.num_keys() == 0


def test_last_of_a_full_world_to_close_removes_the_file(path: str) -> None:
    first, second = FileStore(path, world_size=2), FileStore(path, world_size=2)
    first.set("k", b"v")
    first.close()
    assert os.path.exists(path)
    second.close()
    assert not os.path.exists(path)


def test_file_is_kept_without_a_world_size(path: str) -> None:
    FileStore(path).close()
    assert os.path.exists(path)
    with FileStore(path) as again:
        again.set("k", b"v")


def test_operations_after_close_raise_store_closed_error(store: FileStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        store.set("k", b"v")


def test_a_file_that_is_not_a_store_is_refused(path: str) -> None:
    Path(path).write_bytes(b"#!/bin/sh\necho hello\n")
    with pytest.raises(StoreError, match="not an rdzv file store"):
        FileStore(path)


def test_a_record_torn_by_a_crashed_writer_is_ignored_and_dropped(
    open_store: Callable[..., FileStore], path: str
) -> None:
    store = open_store()
    store.set("k", b"v")
    with open(path, "ab") as f:
        f.write(b"S\x00\x00\x00\x05par")  # a set of a 5-byte key, cut short
    reader = open_store()
    assert reader.get("k") == b"v"
    reader.set("after", b"ok")
    assert open_store().multi_get(["k", "after"]) == [b"v", b"ok"]


def test_corrupt_record_raises_store_error(store: FileStore, path: str) -> None:
    with open(path, "ab") as f:
        f.write(b"Zjunk")
    with pytest.raises(StoreError, match="corrupt"):
        store.get_if_exists("k")


def test_a_forked_child_gets_its_own_lock_and_does_not_count_itself_out(path: str) -> None:
    parent = FileStore(path, world_size=1, timeout=timedelta(seconds=5))
    parent.set("k", b"v")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for _ in range(100):
                parent.add("n", 1)
            parent.close()
            code = 0
        finally:
            os._exit(code)
    for _ in range(100):
        parent.add("n", 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.get("n") == b"200"
    assert os.path.exists(path)
    parent.close()
    assert not os.path.exists(path)


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_file_locked_by_a_stuck_process_times_out_within_the_store_timeout(
    path: str, open_store: Callable[..., FileStore]
) -> None:
    store = open_store(timeout=0.5)
    store.set("key", b"value")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreTimeoutError, match=r"stayed locked by another process for 0\.5 s"):
            store.get("key")
        store.set_timeout(timedelta(seconds=0.2))
        with pytest.raises(StoreTimeoutError, match=r"for 0\.2 s"):
            store.set("key", b"other")
    finally:
        holder.kill()
        holder.wait(10)
    assert store.get("key") == b"value"
