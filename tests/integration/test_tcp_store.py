"""rdzv's TCP store over real loopback sockets, with other OS processes where it matters."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import _store_workers
import pytest

from rdzv.store import tcp_server
from rdzv.store.base import StoreClosedError, StoreError, StoreTimeoutError, value_digest
from rdzv.store.prefix import PrefixStore
from rdzv.store.tcp import TCPStore, TCPStoreServer
from rdzv.store.tcp_protocol import (
    AUTH_TOKEN_ENV,
    MAGIC,
    MAX_HANDSHAKE_FRAME_SIZE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    PREFIX,
    ErrorCode,
    Frame,
    FrameDecoder,
    Op,
    Status,
    StoreAuthenticationError,
    StoreConnectionError,
    StoreProtocolError,
    encode_frame,
    encode_int,
)

LOOPBACK = "127.0.0.1"
SERVER_THREAD = "rdzv-tcp-store-server"
TOKEN = "correct horse battery staple"


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(SERVER_THREAD)]


def _threads_but_the_reaper() -> set[threading.Thread]:
    """Threads of this process but the reaper's, which comes and goes on its own."""
    return {t for t in threading.enumerate() if t.name != "rdzv-reaper"}


def _collected_server_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Server threads started since ``before`` and still running once dropped stores are
    collected; the reaper stops them on its own thread, so this waits up to 10 s."""
    gc.collect()
    deadline = time.monotonic() + 10
    while True:
        left = [t for t in _server_threads() if t not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _no_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)


@pytest.fixture(autouse=True)
def _no_leaked_server_threads() -> Iterator[None]:
    before = set(_server_threads())
    yield
    leaked = _collected_server_threads(before)
    assert not leaked, f"server threads left running: {leaked}"


@pytest.fixture
def server() -> Iterator[TCPStoreServer]:
    with TCPStoreServer(LOOPBACK, 0, handshake_timeout=0.5) as srv:
        yield srv


@pytest.fixture
def connect(server: TCPStoreServer) -> Iterator[Callable[..., TCPStore]]:
    """Make clients of ``server`` (timeout 5 s unless told), closed after the test."""
    made: list[TCPStore] = []

    def make(timeout: float = 5.0, **kwargs: object) -> TCPStore:
        store = TCPStore(
            LOOPBACK,
            server.port,
            timeout=timedelta(seconds=timeout),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def later(connect: Callable[..., TCPStore]) -> Iterator[Callable[..., None]]:
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
def store(connect: Callable[..., TCPStore]) -> TCPStore:
    return connect()


class Canary:
    """A well-behaved client that sets and reads back a key in a loop on its own thread."""

    def __init__(self, store: TCPStore) -> None:
        self.store = store
        self.rounds = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = str(self.rounds).encode()
                self.store.set("canary", value)
                assert self.store.get("canary") == value
                self.rounds += 1
            except BaseException as e:
                self.errors.append(e)
                return
            time.sleep(0.001)

    def check(self) -> None:
        """Stop, and assert that the canary made progress without a single error."""
        seen = self.rounds
        time.sleep(0.05)
        self._stop.set()
        self._thread.join(5)
        assert not self.errors, self.errors
        assert self.rounds > seen, "the canary made no progress"


@pytest.fixture
def canary(connect: Callable[..., TCPStore]) -> Iterator[Canary]:
    bird = Canary(connect())
    yield bird
    bird.check()


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    return sock


def _read_frame(sock: socket.socket, decoder: FrameDecoder | None = None) -> Frame | None:
    """Read one frame, or return None when the server closes first."""
    decoder = decoder or FrameDecoder()
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        data = sock.recv(65536)
        if not data:
            return None
        decoder.feed(data)


def _raw_ready(port: int) -> tuple[socket.socket, FrameDecoder]:
    """A raw socket past the handshake of a server without a token."""
    sock = _raw(port)
    sock.sendall(PREFIX)
    assert sock.recv(5, socket.MSG_WAITALL) == PREFIX
    decoder = FrameDecoder()
    challenge = _read_frame(sock, decoder)
    assert challenge is not None and challenge.code == Status.CHALLENGE
    return sock, decoder


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _error_code(frame: Frame | None) -> int:
    assert frame is not None and frame.code == Status.ERROR, frame
    return frame.args[0][0]


# -- semantics of each operation -------------------------------------------------------


def test_value_set_by_one_client_is_read_by_another(connect: Callable[..., TCPStore]) -> None:
    writer, reader = connect(), connect()
    writer.set("k", "text")
    writer.set("b", bytes(range(256)))
    assert reader.get("k") == b"text"
    assert reader.get("b") == bytes(range(256))


def test_set_replaces_the_previous_value(store: TCPStore) -> None:
    store.set("k", b"one")
    store.set("k", b"")
    assert store.get("k") == b""


def test_get_waits_for_a_key_set_by_another_process(server: TCPStoreServer) -> None:
    store = TCPStore(LOOPBACK, server.port, timeout=timedelta(seconds=20))
    worker = _store_workers.start("tcp", server.port, "set_after", "late", "here", 0.5)
    try:
        assert store.get("late") == b"here"
        woke = time.time()
        set_at = _store_workers.result(worker)
    finally:
        _store_workers.stop(worker)
    store.close()
    assert woke - set_at < 0.5, "get should wake as soon as the key is set, not poll"


def test_get_times_out_naming_the_missing_key(connect: Callable[..., TCPStore]) -> None:
    store = connect(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="'absent'"):
        store.get("absent")
    assert 0.25 < time.monotonic() - started < 2
    store.set("after", b"1")  # the connection survives a timeout
    assert store.get("after") == b"1"


def test_get_if_changed_answers_unchanged_only_for_the_digest_of_the_value_held(
    store: TCPStore,
) -> None:
    assert store.get_if_changed("polled", value_digest(b"v1")) == (True, None)  # missing
    store.set("polled", b"v1")
    assert store.get_if_changed("polled", value_digest(b"v1")) == (False, None)
    assert store.get_if_changed("polled", value_digest(b"v0")) == (True, b"v1")
    store.set("polled", b"v2")  # a new value: its digest is taken afresh
    assert store.get_if_changed("polled", value_digest(b"v1")) == (True, b"v2")
    assert store.get_if_changed("polled", value_digest(b"v2")) == (False, None)
    store.delete_key("polled")
    assert store.get_if_changed("polled", value_digest(b"v2")) == (True, None)
    prefixed = PrefixStore("run/", store)
    prefixed.set("k", b"x")
    assert prefixed.get_if_changed("k", value_digest(b"x")) == (False, None)
    assert prefixed.get_if_changed("k", value_digest(b"y")) == (True, b"x")


def test_add_starts_from_zero_and_returns_the_running_sum(store: TCPStore) -> None:
    assert store.add("n", 5) == 5
    assert store.add("n", -7) == -2
    assert store.get("n") == b"-2"
    store.set("m", "40")
    assert store.add("m", 2) == 42


def test_add_on_a_value_that_is_not_an_integer_raises_value_error(store: TCPStore) -> None:
    store.set("text", b"hello")
    with pytest.raises(ValueError, match="needs an integer at key 'text'"):
        store.add("text", 1)
    assert store.get("text") == b"hello"


def test_add_past_the_64_bit_range_raises_value_error(store: TCPStore) -> None:
    store.add("big", 2**63 - 1)
    with pytest.raises(ValueError, match="overflow"):
        store.add("big", 1)


def test_add_is_atomic_across_eight_processes(store: TCPStore) -> None:
    workers, times = 8, 200
    processes = [
        _store_workers.start("tcp", store.port, "add", "counter", times) for _ in range(workers)
    ]
    try:
        _store_workers.wait_until_ready(store, workers)
        store.set("go", b"1")
        returned = [v for process in processes for v in _store_workers.result(process)]
    finally:
        _store_workers.stop(*processes)
    assert store.get("counter") == str(workers * times).encode()
    assert sorted(returned) == list(range(1, workers * times + 1))


def test_compare_set_creates_a_missing_key_when_expecting_empty(store: TCPStore) -> None:
    assert store.compare_set("k", b"", b"first") == b"first"
    assert store.get("k") == b"first"


def test_compare_set_on_a_missing_key_returns_the_expectation_and_creates_nothing(
    store: TCPStore,
) -> None:
    assert store.compare_set("k", b"old", b"new") == b"old"
    assert not store.check(["k"])


def test_compare_set_swaps_only_when_the_value_matches(store: TCPStore) -> None:
    store.set("k", b"a")
    assert store.compare_set("k", b"x", b"b") == b"a"
    assert store.get("k") == b"a"
    assert store.compare_set("k", b"a", b"b") == b"b"
    assert store.get("k") == b"b"


def test_compare_set_does_not_treat_an_existing_empty_value_as_missing(store: TCPStore) -> None:
    store.set("k", b"")
    assert store.compare_set("k", b"", b"v") == b"v"
    assert store.compare_set("k", b"", b"w") == b"v"


def test_wait_returns_once_every_key_exists(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    store.set("a", b"1")
    later(0.2, other.set, "b", b"2")
    started = time.monotonic()
    store.wait(["a", "b"], timedelta(seconds=5))
    assert time.monotonic() - started < 2


def test_wait_timeout_names_only_the_missing_keys(store: TCPStore) -> None:
    store.set("present", b"1")
    with pytest.raises(StoreTimeoutError) as info:
        store.wait(["present", "missing"], timedelta(seconds=0.2))
    assert "'missing'" in str(info.value)
    assert "'present'" not in str(info.value).split("(")[0]


def test_wait_on_no_keys_returns_at_once(store: TCPStore) -> None:
    store.wait([], timedelta(seconds=0.1))


def test_check_tells_whether_all_keys_exist(store: TCPStore) -> None:
    store.set("a", b"")
    assert store.check(["a"])
    assert not store.check(["a", "b"])
    assert store.check([])


def test_delete_key_reports_whether_it_existed(store: TCPStore) -> None:
    store.set("k", b"v")
    assert store.delete_key("k")
    assert not store.delete_key("k")
    assert store.get_if_exists("k") is None


def test_num_keys_counts_every_key(store: TCPStore) -> None:
    assert store.num_keys() == 0
    store.multi_set(["a", "b", "c"], [b"1", b"2", b"3"])
    store.delete_key("b")
    assert store.num_keys() == 2


def test_multi_set_and_multi_get_keep_the_order_of_keys(store: TCPStore) -> None:
    store.multi_set(["x", "y", "z"], [b"1", "2", b"3"])
    assert store.multi_get(["z", "x", "y"]) == [b"3", b"1", b"2"]
    assert store.multi_get([]) == []


def test_multi_set_with_mismatched_lengths_raises_value_error(store: TCPStore) -> None:
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        store.multi_set(["a", "b"], [b"1"])


def test_multi_get_waits_for_all_keys(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    store.set("a", b"1")
    later(0.1, other.set, "b", b"2")
    assert store.multi_get(["a", "b"]) == [b"1", b"2"]


def test_append_creates_then_extends_a_value(store: TCPStore) -> None:
    store.append("log", b"ab")
    store.append("log", "cd")
    assert store.get("log") == b"abcd"


def test_get_if_exists_distinguishes_absent_from_empty(store: TCPStore) -> None:
    assert store.get_if_exists("k") is None
    store.set("k", b"")
    assert store.get_if_exists("k") == b""


def test_wait_for_change_wakes_on_a_write_by_another_client(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    store.set("state", b"v1")
    later(0.2, other.set, "state", b"v2")
    started = time.monotonic()
    assert store.wait_for_change("state", b"v1", timeout=5) == b"v2"  # the new value
    assert 0.15 < time.monotonic() - started < 1.5


def test_wait_for_change_returns_at_once_when_the_value_already_differs(store: TCPStore) -> None:
    store.set("state", b"v2")
    started = time.monotonic()
    assert store.wait_for_change("state", b"v1", timeout=5) == b"v2"
    assert store.wait_for_change("state", None, timeout=5) == b"v2"
    assert time.monotonic() - started < 0.5


def test_wait_for_change_returns_without_raising_at_its_timeout(store: TCPStore) -> None:
    store.set("state", b"same")
    started = time.monotonic()
    assert store.wait_for_change("state", b"same", timeout=0.2) is None
    assert store.wait_for_change("absent", None, timeout=0.1) is None
    assert 0.25 < time.monotonic() - started < 1.5


def test_wait_for_change_sees_a_key_created_and_a_key_deleted(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    later(0.1, other.set, "k", b"")
    started = time.monotonic()
    assert store.wait_for_change("k", None, timeout=5) == b""  # created, empty
    later(0.1, other.delete_key, "k")
    assert store.wait_for_change("k", b"", timeout=5) is None  # deleted
    assert time.monotonic() - started < 2
    assert store.get_if_exists("k") is None


def test_a_write_of_the_same_value_does_not_count_as_a_change(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    store.set("k", b"v")
    later(0.05, other.set, "k", b"v")
    started = time.monotonic()
    store.wait_for_change("k", b"v", timeout=0.3)
    assert time.monotonic() - started >= 0.28


def test_blocking_get_does_not_hold_up_other_threads_of_the_same_client(
    store: TCPStore,
) -> None:
    result: list[bytes] = []
    blocked = threading.Thread(target=lambda: result.append(store.get("later")))
    blocked.start()
    time.sleep(0.1)
    started = time.monotonic()
    for i in range(50):
        store.set(f"k{i}", b"v")
        assert store.get(f"k{i}") == b"v"
    assert time.monotonic() - started < 2
    store.set("later", b"done")
    blocked.join(5)
    assert result == [b"done"]


def test_many_threads_share_one_client(store: TCPStore) -> None:
    def work(n: int) -> None:
        for _ in range(50):
            store.add("shared", 1)
        store.set(f"t{n}", b"x")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.get("shared") == b"800"
    assert store.check([f"t{n}" for n in range(16)])


def test_keys_and_values_over_the_limits_raise_value_error_before_sending(
    store: TCPStore,
) -> None:
    with pytest.raises(ValueError, match="key of"):
        store.set("k" * (MAX_KEY_SIZE + 1), b"")
    with pytest.raises(ValueError, match="value of"):
        store.set("k", b"x" * (MAX_VALUE_SIZE + 1))
    store.set("k", b"ok")


def test_append_past_the_value_limit_is_refused_and_the_value_kept(store: TCPStore) -> None:
    store.set("k", b"x" * (MAX_VALUE_SIZE - 1))
    with pytest.raises(ValueError, match="past the value limit"):
        store.append("k", b"yy")
    assert len(store.get("k")) == MAX_VALUE_SIZE - 1


def test_empty_and_non_string_keys_are_rejected(store: TCPStore) -> None:
    with pytest.raises(ValueError):
        store.set("", b"v")
    with pytest.raises(TypeError):
        store.set(b"k", b"v")  # type: ignore[arg-type]


def test_an_unbounded_timeout_waits_until_the_key_is_set(
    connect: Callable[..., TCPStore], later: Callable[..., None]
) -> None:
    store, other = connect(), connect()
    store.set_timeout(timedelta.max)
    later(0.1, other.set, "k", b"v")
    store.wait(["k"], timedelta.max)
    assert store.get("k") == b"v"


def test_set_timeout_changes_how_long_get_waits(store: TCPStore) -> None:
    store.set_timeout(timedelta(seconds=0.2))
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError):
        store.get("absent")
    assert time.monotonic() - started < 1.5


# -- lifecycle ---------------------------------------------------------------------------


def test_master_serves_other_clients_on_the_port_it_picked() -> None:
    master = TCPStore(LOOPBACK, 0, is_master=True, timeout=timedelta(seconds=5))
    assert master.port > 0 and master.host == LOOPBACK
    client = TCPStore(LOOPBACK, master.port, timeout=timedelta(seconds=5))
    client.set("k", b"v")
    assert master.get("k") == b"v"
    client.close()
    master.close()


def test_master_close_stops_the_server_thread_and_frees_the_port() -> None:
    before = _threads_but_the_reaper()
    master = TCPStore(LOOPBACK, 0, is_master=True, timeout=timedelta(seconds=5))
    client = TCPStore(LOOPBACK, master.port, timeout=timedelta(seconds=5))
    client.set("k", b"v")
    port = master.port
    client.close()
    master.close()
    master.close()
    assert _threads_but_the_reaper() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=1).close()
    again = TCPStoreServer(LOOPBACK, port).start()
    assert again.port == port
    again.stop()


def test_unreferenced_master_is_stopped_by_garbage_collection() -> None:
    master = TCPStore(LOOPBACK, 0, is_master=True, timeout=timedelta(seconds=5))
    port = master.port
    assert _server_threads()
    del master
    assert not _collected_server_threads(set())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=1).close()


def test_closing_a_forked_copy_leaves_the_parents_store_and_server_working() -> None:
    with TCPStore(LOOPBACK, 0, is_master=True, timeout=timedelta(seconds=5)) as master:
        client = TCPStore(LOOPBACK, master.port, timeout=timedelta(seconds=5))
        result: list[bytes] = []
        blocked = threading.Thread(target=lambda: result.append(client.get("later")))
        blocked.start()
        time.sleep(0.2)  # the parent's thread is now waiting on a borrowed connection
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                client.close()
                master.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        master.set("later", b"v")
        blocked.join(5)
        assert result == [b"v"]
        client.close()


def test_operations_after_close_raise_store_closed_error(store: TCPStore) -> None:
    store.close()
    with pytest.raises(StoreClosedError):
        store.set("k", b"v")


def test_closing_a_client_wakes_its_thread_blocked_in_get(store: TCPStore) -> None:
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            store.get("never")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.2)
    store.close()
    thread.join(2)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError)


def test_master_with_world_size_waits_until_every_worker_has_connected() -> None:
    probe = TCPStoreServer(LOOPBACK, 0).start()
    port = probe.port
    probe.stop()
    masters: list[TCPStore] = []
    thread = threading.Thread(
        target=lambda: masters.append(TCPStore(LOOPBACK, port, 3, True, timedelta(seconds=10)))
    )
    thread.start()
    workers = []
    for _ in range(2):
        time.sleep(0.2)
        assert not masters
        workers.append(TCPStore(LOOPBACK, port, 3, False, timedelta(seconds=10), connect_timeout=5))
    thread.join(5)
    assert masters and masters[0].get("init/") == b"3"
    for w in workers:
        w.close()
    masters[0].close()


def test_master_gives_up_waiting_for_workers_after_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="Only 1 of 2 workers"):
        TCPStore(LOOPBACK, 0, 2, True, timedelta(seconds=0.3))
    assert time.monotonic() - started < 2


def test_multi_tenant_masters_on_one_port_share_a_server() -> None:
    first = TCPStore(LOOPBACK, 0, is_master=True, multi_tenant=True)
    second = TCPStore(LOOPBACK, first.port, is_master=True, multi_tenant=True)
    assert second.server is first.server
    first.set("k", b"v")
    first.close()
    assert second.get("k") == b"v"
    second.close()
    assert not _server_threads()


def test_standalone_server_serves_as_a_context_manager() -> None:
    with TCPStoreServer(LOOPBACK, 0) as srv:
        assert srv.is_running
        with TCPStore(LOOPBACK, srv.port) as client:
            client.set("k", b"v")
            assert client.get("k") == b"v"
    assert not srv.is_running


def test_wait_blocks_until_the_server_is_stopped() -> None:
    srv = TCPStoreServer(LOOPBACK, 0).start()
    assert not srv.wait(0.1)
    threading.Timer(0.1, srv.stop).start()
    assert srv.wait(5)
    assert not srv.is_running


def test_binding_a_port_in_use_raises_connection_error_naming_it(server: TCPStoreServer) -> None:
    with pytest.raises(StoreConnectionError, match=f"{LOOPBACK}:{server.port}"):
        TCPStoreServer(LOOPBACK, server.port).start()


def test_master_listens_on_loopback_for_a_loopback_host() -> None:
    with TCPStore(LOOPBACK, 0, is_master=True) as master:
        assert master.server is not None and master.server.host == LOOPBACK


# -- authentication ----------------------------------------------------------------------


@pytest.fixture
def secure_server() -> Iterator[TCPStoreServer]:
    with TCPStoreServer(LOOPBACK, 0, auth_token=TOKEN) as srv:
        yield srv


def test_client_with_the_right_token_works(secure_server: TCPStoreServer) -> None:
    with TCPStore(LOOPBACK, secure_server.port, auth_token=TOKEN) as store:
        store.set("k", b"v")
        assert store.get("k") == b"v"


def test_token_is_read_from_the_environment(
    secure_server: TCPStoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AUTH_TOKEN_ENV, TOKEN)
    with TCPStore(LOOPBACK, secure_server.port) as store:
        store.set("k", b"v")


def test_master_with_a_token_admits_only_clients_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TCPStore(LOOPBACK, 0, is_master=True, auth_token=TOKEN) as master:
        with TCPStore(LOOPBACK, master.port, auth_token=TOKEN) as client:
            client.set("k", b"v")
        with pytest.raises(StoreAuthenticationError):
            TCPStore(LOOPBACK, master.port)


def test_client_without_a_token_is_refused_with_what_to_set(
    secure_server: TCPStoreServer,
) -> None:
    with pytest.raises(StoreAuthenticationError, match=f"requires an auth token.*{AUTH_TOKEN_ENV}"):
        TCPStore(LOOPBACK, secure_server.port)


def test_client_with_a_wrong_token_is_refused(secure_server: TCPStoreServer) -> None:
    with pytest.raises(StoreAuthenticationError, match="refused this client's auth token"):
        TCPStore(LOOPBACK, secure_server.port, auth_token="wrong")


def test_client_with_a_token_refuses_a_server_without_one(server: TCPStoreServer) -> None:
    with pytest.raises(StoreAuthenticationError, match="does not require one"):
        TCPStore(LOOPBACK, server.port, auth_token=TOKEN)


def test_request_without_authenticating_is_refused_and_closed(
    secure_server: TCPStoreServer,
) -> None:
    sock = _raw(secure_server.port)
    sock.sendall(PREFIX)
    decoder = FrameDecoder()
    assert sock.recv(5, socket.MSG_WAITALL) == PREFIX
    challenge = _read_frame(sock, decoder)
    assert challenge is not None and challenge.args[1] == b"\x01"
    sock.sendall(encode_frame(Op.SET, (b"k", b"v")))
    assert _error_code(_read_frame(sock, decoder)) == ErrorCode.AUTH_REQUIRED
    assert _closed_by_peer(sock)
    sock.close()


def test_unauthenticated_peer_cannot_announce_a_large_frame(
    secure_server: TCPStoreServer,
) -> None:
    sock = _raw(secure_server.port)
    sock.sendall(PREFIX)
    decoder = FrameDecoder()
    assert sock.recv(5, socket.MSG_WAITALL) == PREFIX
    _read_frame(sock, decoder)
    sock.sendall(struct.pack(">I", MAX_HANDSHAKE_FRAME_SIZE + 1))
    assert _error_code(_read_frame(sock, decoder)) == ErrorCode.PROTOCOL
    assert _closed_by_peer(sock)
    sock.close()


class _RecordingProxy:
    """Forwards one TCP port to another and keeps every byte each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upstream = bytearray()
        self.downstream = bytearray()
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((LOOPBACK, self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, self.upstream)).start()
            threading.Thread(target=self._pump, args=(server, client, self.downstream)).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        try:
            while data := source.recv(65536):
                record += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_token_never_crosses_the_wire(secure_server: TCPStoreServer) -> None:
    proxy = _RecordingProxy(secure_server.port)
    try:
        with TCPStore(LOOPBACK, proxy.port, auth_token=TOKEN) as store:
            store.set("k", b"v")
            assert store.get("k") == b"v"
    finally:
        proxy.close()
    assert proxy.upstream.startswith(PREFIX)
    assert len(proxy.upstream) > 64  # the proof went through the proxy
    for recorded in (proxy.upstream, proxy.downstream):
        assert TOKEN.encode() not in recorded
        assert TOKEN.encode("utf-16-le") not in recorded


# -- hostile peers -----------------------------------------------------------------------


def test_random_bytes_are_dropped_and_other_clients_carry_on(
    server: TCPStoreServer, canary: Canary
) -> None:
    for seed in range(20):
        sock = _raw(server.port)
        sock.sendall(os.urandom(1 + seed * 50))
        assert _closed_by_peer(sock)
        sock.close()


def test_random_bytes_after_the_handshake_are_refused(
    server: TCPStoreServer, canary: Canary
) -> None:
    sock, decoder = _raw_ready(server.port)
    sock.sendall(struct.pack(">I", 10) + os.urandom(10))
    frame = _read_frame(sock, decoder)
    assert frame is None or _error_code(frame) == ErrorCode.PROTOCOL
    assert _closed_by_peer(sock)
    sock.close()


def test_oversized_length_header_gets_an_error_reply_and_a_closed_connection(
    server: TCPStoreServer, canary: Canary
) -> None:
    sock, decoder = _raw_ready(server.port)
    sock.sendall(struct.pack(">I", 0xFFFFFFFF))
    assert _error_code(_read_frame(sock, decoder)) == ErrorCode.PROTOCOL
    assert _closed_by_peer(sock)
    sock.close()


def test_half_sent_frame_holds_up_only_its_own_connection(
    server: TCPStoreServer, canary: Canary, store: TCPStore
) -> None:
    sock, _ = _raw_ready(server.port)
    frame = encode_frame(Op.SET, (b"half", b"x" * 1000))
    sock.sendall(frame[: len(frame) // 2])
    time.sleep(0.3)
    assert store.get_if_exists("half") is None
    sock.close()
    store.set("after", b"ok")


def test_silent_connections_are_dropped_after_the_handshake_deadline(
    server: TCPStoreServer, canary: Canary
) -> None:
    silent = [_raw(server.port) for _ in range(300)]
    deadline = time.monotonic() + 5
    while server.num_connections > 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Only the canary's connections remain once the 0.5 s handshake deadline passed.
    while server.num_connections > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.num_connections <= 2
    assert all(_closed_by_peer(sock) for sock in silent)
    for sock in silent:
        sock.close()


def test_idle_connection_that_completed_the_handshake_stays_open(
    server: TCPStoreServer,
) -> None:
    sock, decoder = _raw_ready(server.port)
    time.sleep(0.8)  # past the handshake deadline of the fixture's server
    sock.sendall(encode_frame(Op.PING))
    assert _read_frame(sock, decoder) == Frame(Status.OK, ())
    sock.close()


def test_unknown_protocol_version_gets_an_error_reply(
    server: TCPStoreServer, canary: Canary
) -> None:
    sock = _raw(server.port)
    sock.sendall(MAGIC + b"\x02")
    assert sock.recv(5, socket.MSG_WAITALL) == PREFIX
    frame = _read_frame(sock)
    assert _error_code(frame) == ErrorCode.VERSION
    assert frame is not None and b"version 1" in frame.args[1]
    assert _closed_by_peer(sock)
    sock.close()


def test_client_refuses_a_server_of_another_protocol_version() -> None:
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(5)
        conn.sendall(MAGIC + b"\x09" + b"\x00" * 16)
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises(StoreProtocolError, match="speaks protocol version 9"):
        TCPStore(LOOPBACK, port)
    thread.join(2)
    listener.close()


def test_client_refuses_a_peer_that_is_not_a_store() -> None:
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises(StoreProtocolError, match="did not greet as an rdzv TCP store"):
        TCPStore(LOOPBACK, port)
    thread.join(2)
    listener.close()


def test_unknown_request_code_gets_an_error_and_a_closed_connection(
    server: TCPStoreServer, canary: Canary
) -> None:
    sock, decoder = _raw_ready(server.port)
    sock.sendall(encode_frame(99))
    assert _error_code(_read_frame(sock, decoder)) == ErrorCode.PROTOCOL
    assert _closed_by_peer(sock)
    sock.close()


def test_request_with_the_wrong_arguments_gets_an_error_and_a_closed_connection(
    server: TCPStoreServer, canary: Canary
) -> None:
    sock, decoder = _raw_ready(server.port)
    sock.sendall(encode_frame(Op.GET, (b"k", b"not-8-bytes!")))
    assert _error_code(_read_frame(sock, decoder)) == ErrorCode.PROTOCOL
    assert _closed_by_peer(sock)
    sock.close()


def test_pipelined_requests_are_answered_in_order(server: TCPStoreServer) -> None:
    sock, decoder = _raw_ready(server.port)
    sock.sendall(
        encode_frame(Op.GET, (b"p", encode_int(2000)))
        + encode_frame(Op.SET, (b"p", b"v"))  # answered only after the GET above
        + encode_frame(Op.GET, (b"q", encode_int(100)))
        + encode_frame(Op.NUM_KEYS)
    )
    with TCPStore(LOOPBACK, server.port) as other:
        other.set("p", b"first")
    assert _read_frame(sock, decoder) == Frame(Status.OK, (b"first",))
    assert _read_frame(sock, decoder) == Frame(Status.OK, ())
    timeout = _read_frame(sock, decoder)
    assert _error_code(timeout) == ErrorCode.TIMEOUT
    assert timeout is not None and timeout.args[2:] == (b"q",)
    assert _read_frame(sock, decoder) == Frame(Status.OK, (encode_int(1),))
    sock.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_peer_that_never_reads_its_replies_does_not_grow_server_memory(
    server: TCPStoreServer, canary: Canary, store: TCPStore
) -> None:
    store.set("big", b"x" * (1 << 20))
    sock, _ = _raw_ready(server.port)
    sock.setblocking(False)
    request = encode_frame(Op.GET, (b"big", encode_int(1000)))
    before = _rss_bytes()
    sent = 0
    deadline = time.monotonic() + 3
    while sent < 300 and time.monotonic() < deadline:
        try:
            sock.send(request)
            sent += 1
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(0.3)
    assert _rss_bytes() - before < 40 << 20, "replies to an unread peer piled up"
    assert store.get("canary")
    sock.close()


# -- failures ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.create_server((LOOPBACK, 0)) as sock:
        port: int = sock.getsockname()[1]
        return port


def test_nothing_listening_raises_connection_error_quickly_with_the_address() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match=f"{LOOPBACK}:{port}"):
        TCPStore(LOOPBACK, port, timeout=timedelta(seconds=300))
    assert time.monotonic() - started < 3.5


def test_connect_timeout_bounds_the_retries() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match=r"within 0\.3 s"):
        TCPStore(LOOPBACK, port, connect_timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_client_retries_until_a_starting_server_listens() -> None:
    port = _free_port()
    holder: list[TCPStoreServer] = []
    timer = threading.Timer(0.3, lambda: holder.append(TCPStoreServer(LOOPBACK, port).start()))
    timer.start()
    try:
        with TCPStore(LOOPBACK, port, connect_timeout=5) as store:
            store.set("k", b"v")
    finally:
        timer.join()
        for srv in holder:
            srv.stop()


def _dropping_listener(port: int, drops: int) -> threading.Thread:
    """Accept ``drops`` connections on ``port`` and close each without a word, as a store
    too busy to finish their handshake in time does; then stop listening."""
    listener = socket.create_server((LOOPBACK, port))

    def serve() -> None:
        with listener:
            for _ in range(drops):
                conn, _ = listener.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_handshake_the_store_dropped_is_tried_again_within_the_connect_timeout() -> None:
    """Thousands of nodes connecting at once to a busy store: it drops the handshakes it
    could not finish in time. The client connects again, as after a refusal."""
    port = _free_port()
    dropper = _dropping_listener(port, drops=1)
    holder: list[TCPStoreServer] = []

    def start_the_store() -> None:
        dropper.join(10)
        holder.append(TCPStoreServer(LOOPBACK, port).start())

    starter = threading.Thread(target=start_the_store, daemon=True)
    starter.start()
    try:
        with TCPStore(LOOPBACK, port, connect_timeout=10) as store:
            store.set("k", b"v")
            assert store.get("k") == b"v"
    finally:
        starter.join(10)
        for srv in holder:
            srv.stop()


def test_a_store_that_drops_every_handshake_fails_at_the_connect_timeout() -> None:
    port = _free_port()
    dropper = _dropping_listener(port, drops=1000)
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match=r"dropped the connection during the handshake"):
        TCPStore(LOOPBACK, port, connect_timeout=1.0)
    assert 0.6 < time.monotonic() - started < 3  # not at the first drop
    with contextlib.suppress(OSError):  # let the listener thread end
        for _ in range(1000):
            socket.create_connection((LOOPBACK, port), timeout=1).close()
    dropper.join(10)


def test_unknown_host_raises_connection_error_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(StoreConnectionError, match="resolve"):
        TCPStore("no-such-host.invalid", 1234)
    assert time.monotonic() - started < 5


_HOST_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from datetime import timedelta
    from rdzv.store.tcp import TCPStore
    store = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=60))
    print(store.port, flush=True)
    time.sleep(60)
    """
)


def test_client_blocked_in_get_raises_promptly_when_the_host_process_is_killed() -> None:
    host = subprocess.Popen([sys.executable, "-c", _HOST_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        port = int(host.stdout.readline())
        client = TCPStore(LOOPBACK, port, timeout=timedelta(seconds=60))
        outcome: list[BaseException] = []
        raised_at: list[float] = []

        def blocked() -> None:
            try:
                client.get("never")
            except BaseException as e:
                outcome.append(e)
                raised_at.append(time.monotonic())

        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(host.pid, signal.SIGKILL)
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StoreConnectionError)
        assert f"{LOOPBACK}:{port}" in str(outcome[0])
        assert raised_at[0] - killed_at < 2
        with pytest.raises(StoreError):
            client.set("k", b"v")
        client.close()
    finally:
        host.kill()
        host.wait()
        if host.stdout is not None:
            host.stdout.close()


def test_stopping_the_server_wakes_every_waiting_client(
    server: TCPStoreServer, connect: Callable[..., TCPStore]
) -> None:
    clients = [connect(timeout=30) for _ in range(3)]
    errors: list[BaseException] = []

    def blocked(client: TCPStore) -> None:
        try:
            client.wait(["never"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=blocked, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    time.sleep(0.2)
    server.stop()
    for t in threads:
        t.join(3)
    assert len(errors) == 3
    assert all(isinstance(e, StoreConnectionError) for e in errors)


def test_server_module_refuses_a_non_positive_handshake_timeout() -> None:
    with pytest.raises(ValueError):
        tcp_server.TCPStoreServer(LOOPBACK, 0, handshake_timeout=0)
