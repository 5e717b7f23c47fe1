"""c10d backend specifics: who hosts the TCP store, connection errors, the file store."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from _late import LateBackend
from _ports import free_port
from _threads import next_round

from rdzv import (
    DynamicRendezvousHandler,
    RendezvousConnectionError,
    RendezvousInfo,
    RendezvousParameters,
    get_rendezvous_handler,
)
from rdzv.backends.c10d import C10dRendezvousBackend, create_backend, is_local_address
from rdzv.core import decode_state
from rdzv.core.intents import segment_of
from rdzv.dynamic.handler import create_handler
from rdzv.store.tcp import TCPStore


def params(endpoint: str, **options: object) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "c10d-run", 1, 2, "127.0.0.1", **options)


def test_local_addresses_are_recognised_by_binding() -> None:
    assert is_local_address("127.0.0.1")
    assert is_local_address("localhost")
    assert not is_local_address("192.0.2.1")  # TEST-NET-1: never assigned to a host
    assert not is_local_address("no-such-host.invalid")


def test_nothing_listening_fails_quickly_naming_the_address() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match=f"127.0.0.1:{port}"):
        create_backend(params(f"127.0.0.1:{port}", is_host=False, connect_timeout=0.5))
    assert time.monotonic() - start < 5


def test_node_started_before_the_host_connects_once_it_listens() -> None:
    port = free_port()
    created: list[object] = []
    client = threading.Thread(
        target=lambda: created.append(create_backend(params(f"127.0.0.1:{port}", is_host=False)))
    )
    client.start()
    time.sleep(0.5)
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        client.join(timeout=15)
        assert created, "the early node never connected"
    finally:
        for _, store in created:  # type: ignore[misc]
            store.close()
        host.close()


def test_second_node_of_a_host_joins_the_store_the_first_serves() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    _, first_store = create_backend(params(endpoint))
    _, second_store = create_backend(params(endpoint))
    try:
        assert isinstance(first_store, TCPStore) and first_store.server is not None
        first_store.set("k", b"v")
        assert second_store.get("k") == b"v"
    finally:
        second_store.close()
        first_store.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [("store_type", "redis"), ("read_timeout", 0), ("connect_timeout", -1), ("is_host", "maybe")],
)
def test_invalid_option_is_named(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        create_backend(params(f"127.0.0.1:{free_port()}", **{option: value}))


def test_file_store_backend_rendezvous_two_nodes(tmp_path: Path) -> None:
    path = str(tmp_path / "rdzv-store")
    handlers = [
        get_rendezvous_handler(
            RendezvousParameters("c10d", path, "file-run", 2, 2, "127.0.0.1", store_type="file")
        )
        for _ in range(2)
    ]
    ranks: list[int] = []
    threads = [
        threading.Thread(target=lambda h=h, r=ranks: r.append(h.next_rendezvous().rank))
        for h in handlers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for handler in handlers:
        handler.shutdown()
    assert sorted(ranks) == [0, 1]


def test_the_intent_log_rolls_over_into_new_keys_and_deletes_the_old(tmp_path: Path) -> None:
    """Round after round of joins: the log moves to a new segment key once the state has
    admitted a full one, and deletes the one before, so it stays bounded; every round
    still gets its ranks."""
    port, run_id = free_port(), "rolling"
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        backends = [C10dRendezvousBackend(host, run_id, intent_segment_bytes=200) for _ in range(3)]
        settings = RendezvousParameters(
            "c10d", "", run_id, 3, 3, "127.0.0.1", last_call_timeout=0.05, join_timeout=30
        )
        handlers = [create_handler(host, backend, settings) for backend in backends]
        for round_ in range(8):
            ranks = [info.rank for info in next_round(handlers)]
            assert sorted(ranks) == [0, 1, 2], f"round {round_}: {ranks}"
        result = backends[0].get_state()
        assert result is not None
        segment = segment_of(decode_state(result[0]).intent_cursor)
        assert segment >= 3, "the log never rolled over"
        keys = [f"rdzv.intents.{run_id}.{number}" for number in range(segment + 2)]
        kept = [
            key for key, value in zip(keys, host.multi_get_if_exists(keys), strict=True) if value
        ]
        assert kept and set(kept) <= set(keys[segment - 1 :]), kept
    finally:
        for handler in handlers:
            handler.shutdown()
        host.close()


@pytest.mark.parametrize("name", ["c10d", "tcp"])
def test_the_backend_is_named_c10d_and_the_handler_reports_the_name_asked_for(name: str) -> None:
    """As torch's: the backend's name is ``c10d``; the registry checks that a handler's
    ``get_backend()`` is the requested name, so under the alias it is ``tcp``."""
    endpoint = f"127.0.0.1:{free_port()}"
    handler = get_rendezvous_handler(
        RendezvousParameters(name, endpoint, "named-run", 1, 1, "127.0.0.1")
    )
    client_params = RendezvousParameters(name, endpoint, "named-run", 1, 1, is_host=False)
    backend, store = create_backend(client_params)
    try:
        assert handler.get_backend() == name
        assert backend.name == "c10d"
        # torch's create_handler and from_backend: the handler takes the backend's name.
        assert create_handler(store, backend, client_params).get_backend() == "c10d"
        assert (
            DynamicRendezvousHandler.from_backend("named-run", store, backend, 1, 1).get_backend()
            == "c10d"
        )
    finally:
        store.close()
        handler.shutdown()


@pytest.mark.parametrize(("options", "seconds"), [({}, 60), ({"read_timeout": 7.5}, 7.5)])
def test_the_file_store_waits_read_timeout(
    tmp_path: Path, options: dict[str, object], seconds: float
) -> None:
    """torch's file store waits 300 s whatever read_timeout says; rdzv's honours it
    (default 60 s, as the TCP store's), a choice docs/migrating.rst explains."""
    path = str(tmp_path / "store")
    _, store = create_backend(params(path, store_type="file", **options))
    try:
        assert store.timeout == timedelta(seconds=seconds)
    finally:
        store.close()


def test_a_temporary_file_store_that_cannot_be_created_is_a_connection_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty endpoint with store_type=file asks for a temporary file; where the
    temporary directory is missing, the error says so and what to do."""
    missing = tmp_path / "no-such-directory"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))  # what TMPDIR would set
    with pytest.raises(RendezvousConnectionError, match="temporary file") as raised:
        create_backend(params("", store_type="file"))
    message = str(raised.value)
    assert str(missing) in message
    assert "endpoint" in message
    assert "TMPDIR" in message
    assert isinstance(raised.value.__cause__, OSError)


class _CountingLog(C10dRendezvousBackend):
    """A real c10d backend that counts the intent log records each read returns."""

    records_read = 0
    lock = threading.Lock()

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        chunks, end = super().read_intents(cursor)
        with self.lock:
            type(self).records_read += sum(chunk.count(b"\n") for chunk in chunks)
        return chunks, end


def test_nodes_arriving_together_do_not_each_read_the_whole_intent_log() -> None:
    """What tests/sim/test_costs.py found, on a real TCP store: 48 nodes (more than
    FIRST_MOVER_ROUND) join at once. Reading the log is the steward's work, on from its
    last read; each node reading it all, as before, read about half of 48 records."""
    n = 48
    port, run_id = free_port(), "log-cost"
    host = TCPStore("127.0.0.1", port, is_master=True)
    _CountingLog.records_read = 0
    try:
        settings = RendezvousParameters("c10d", "", run_id, n, n, "127.0.0.1", join_timeout=60)
        handlers = [create_handler(host, _CountingLog(host, run_id), settings) for _ in range(n)]
        ranks = [info.rank for info in next_round(handlers)]
        assert sorted(ranks) == list(range(n))
        per_node = _CountingLog.records_read / n
        assert per_node < 8, f"each node read {per_node:.1f} intent log records on average"
    finally:
        for handler in handlers:
            handler.shutdown()
        host.close()


def _fast_beats(
    run_id: str, min_nodes: int, max_nodes: int, join_timeout: float = 60
) -> RendezvousParameters:
    """A run whose heartbeats expire 0.6 s after the last (0.2 s x 3), on a store given
    to create_handler."""
    return RendezvousParameters(
        "c10d",
        "",
        run_id,
        min_nodes,
        max_nodes,
        "127.0.0.1",
        join_timeout=join_timeout,
        last_call_timeout=0.1,
        keep_alive_interval=0.2,
        keep_alive_max_attempt=3,
    )


@contextlib.contextmanager
def _formed(
    backend: type[C10dRendezvousBackend], settings: RendezvousParameters, n: int
) -> Iterator[list[DynamicRendezvousHandler]]:
    """``n`` nodes on a new TCP store, each on its own ``backend``, through a first round
    of all of them; shut down, with the store, afterwards."""
    host = TCPStore("127.0.0.1", free_port(), is_master=True)
    run_id = settings.run_id
    handlers = [create_handler(host, backend(host, run_id), settings) for _ in range(n)]
    try:
        assert sorted(info.rank for info in next_round(handlers)) == list(range(n))
        yield handlers
    finally:
        for handler in handlers:
            handler.shutdown()
        host.close()


class _CountingBoard(C10dRendezvousBackend):
    """A real c10d backend that counts the heartbeat records each check asks for."""

    asked = 0
    lock = threading.Lock()

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        with self.lock:
            type(self).asked += len(names)
        return super().read_beats(names)


def _crash(victim: DynamicRendezvousHandler, survivors: list[DynamicRendezvousHandler]) -> None:
    """Stop ``victim``'s heartbeats, as a crash would (no leave), and poll every survivor
    until each sees it dropped."""
    victim._stop_heartbeats()
    deadline = time.monotonic() + 30
    while 0 in [h.num_nodes_waiting() for h in survivors]:
        assert time.monotonic() < deadline, "the survivors never saw the node dropped"
        time.sleep(0.05)


def test_survivors_of_a_crash_do_not_each_read_the_whole_heartbeat_board() -> None:
    """What tests/sim/test_costs.py found, on a real TCP store: 32 nodes, heartbeats on
    the board, so the state's are stale once the round is older than the expiry. One
    node stops beating; the others poll, see it dropped and re-form. Each node used to
    read the board records of every member before it on each check (18 records a
    node here); it needs the watcher's record, and the rest only when it is dead."""
    n = 32
    with _formed(_CountingBoard, _fast_beats("board-cost", n - 1, n), n) as handlers:
        time.sleep(1.0)  # the state's heartbeats are all older than the expiry now
        victim, survivors = handlers[n // 2], handlers[: n // 2] + handlers[n // 2 + 1 :]
        _CountingBoard.asked = 0
        _crash(victim, survivors)
        infos = next_round(survivors)
        assert sorted(info.rank for info in infos) == list(range(n - 1))
        per_node = _CountingBoard.asked / (n - 1)
        assert per_node < 10, f"each survivor asked for {per_node:.1f} board records"


class _LogReaders(C10dRendezvousBackend):
    """A real c10d backend that notes which nodes read the intent log."""

    readers: ClassVar[set[int]] = set()
    lock = threading.Lock()

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        with self.lock:
            self.readers.add(id(self))
        return super().read_intents(cursor)


def test_survivors_waiting_for_a_late_steward_do_not_all_read_the_intent_log() -> None:
    """What tests/sim/test_loaded_host.py found, on a real TCP store: 64 nodes; one stops
    beating and is dropped. Every survivor rejoins at once but the steward, whose
    launcher comes 2 s later. Out of patience with it (0.7 to 1.2 s here), every
    waiting survivor took over and read the whole log; about 8 do now, twice as many
    after each further patience."""
    n = 64
    with _formed(_LogReaders, _fast_beats("late-steward", n - 1, n), n) as handlers:
        steward = min(handlers, key=lambda h: h._node)
        victim = max(handlers, key=lambda h: h._node)
        others = [h for h in handlers if h not in (steward, victim)]
        _crash(victim, [steward, *others])
        _LogReaders.readers.clear()
        infos: list[RendezvousInfo] = []
        threads = [
            threading.Thread(target=lambda h=h: infos.append(h.next_rendezvous())) for h in others
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        readers = len(_LogReaders.readers)
        infos.append(steward.next_rendezvous())
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(info.rank for info in infos) == list(range(n - 1))
        assert readers < n // 3, f"{readers} of {n - 2} waiting survivors read the log"


class _LateAnswers(C10dRendezvousBackend):
    """A real c10d backend on a loaded host: the answer to a board read is handled 0.7 s
    after the store sent it, as when the node waits that long for a CPU."""

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        beats = super().read_beats(names)
        time.sleep(0.7)
        return beats


def test_a_watcher_whose_board_reads_are_handled_late_drops_no_live_node() -> None:
    """What tests/sim/test_loaded_host.py found, on a real TCP store: two nodes, heartbeats
    expiring after 0.6 s. The watcher reads the other's record and handles the answer
    0.7 s later, when the heartbeat it holds has expired. Dated when it was handled, the
    reading confirmed the live node dead, and the watcher dropped it at its first poll;
    dated when it was asked for, it proves nothing, and the next reading finds a newer
    heartbeat."""
    with _formed(_LateAnswers, _fast_beats("late-answers", 2, 2), 2) as handlers:
        watcher = min(handlers, key=lambda h: h._node)  # the first member watches
        other = max(handlers, key=lambda h: h._node)
        time.sleep(1.0)  # the state's heartbeats are all older than the expiry now
        polls, deadline = 0, time.monotonic() + 6
        while time.monotonic() < deadline:
            assert watcher.num_nodes_waiting() == 0, f"the live node was dropped at poll {polls}"
            polls += 1
            time.sleep(0.05)  # room for the watcher's own heartbeats, which share its lock
        assert polls >= 8
        assert other.num_nodes_waiting() == 0


SLOW_STEP = 0.2
"""Seconds late a loaded node handles an answer: a third of the expiry in these tests."""


class _SlowSteps(C10dRendezvousBackend):
    """A real c10d backend on a host so loaded that a node handles each heartbeat's and
    each board read's answer SLOW_STEP late."""

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        super().beat(name, record, ttl)
        time.sleep(SLOW_STEP)

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        beats = super().read_beats(names)
        time.sleep(SLOW_STEP)
        return beats


def test_nodes_whose_every_step_is_late_still_rejoin() -> None:
    """What tests/sim/test_loaded_host.py found, on a real TCP store: three nodes rejoin a
    round whose state's heartbeats are old, each step of theirs 0.2 s late. Each read
    of the board for the watcher's record left a node's own heartbeat late again, so
    it beat instead of deciding, then read the board again, and so on: before, their
    joins timed out after 15 s; now they rejoin in about 3 s."""
    n = 3
    with _formed(_SlowSteps, _fast_beats("slow-steps", n, n, join_timeout=15), n) as handlers:
        time.sleep(1.0)  # the state's heartbeats are all older than the expiry now
        assert sorted(info.rank for info in next_round(handlers)) == list(range(n))


class _LateBoard(C10dRendezvousBackend):
    """A real c10d backend whose board reads are handled 0.5 s late once ``late`` is set:
    longer than the expiry less the interval (0.6 - 0.2 s), the regime of etcd-v2 at
    1,024 nodes on two cores (3 s reads, 3 s expiry, 1 s interval)."""

    late = False

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        beats = super().read_beats(names)
        if type(self).late:
            time.sleep(0.5)
        return beats


def test_a_node_whose_board_reads_outlast_the_expiry_less_the_interval_still_rejoins() -> None:
    """Three nodes; two rejoin at once and the third 1.5 s later, every board read handled
    0.5 s late. The last node read the board, found its own heartbeat late and beat, read
    the board again, found it late again, and so on; or, allowed one read, found its
    intent due again after each read, posted it, and read the log and the board again.
    Its join timed out after 15 s."""
    n = 3
    settings = _fast_beats("late-board", n, n, join_timeout=15)
    with _formed(_LateBoard, settings, n) as handlers:
        _LateBoard.late = True
        try:
            infos: list[RendezvousInfo] = []
            threads = [
                threading.Thread(target=lambda h=h: infos.append(h.next_rendezvous()))
                for h in handlers[:2]
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            infos.append(handlers[2].next_rendezvous())
            for thread in threads:
                thread.join(timeout=30)
        finally:
            _LateBoard.late = False
        assert sorted(info.rank for info in infos) == list(range(n))


class _FarAway(LateBackend):
    """Every request of the join answered an interval late (0.2 s) once ``late`` is set:
    each round trip takes as long as the keep-alive interval."""

    delay = 0.2


def test_nodes_whose_every_round_trip_takes_an_interval_still_rejoin() -> None:
    """What tests/sim/test_loaded_host.py found, on a real TCP store: three nodes rejoin,
    every read, post and beat of theirs answered an interval (0.2 s) late. Their own
    intents had expired by the time each log read came back, so they posted them again;
    a waiting node's beat was due again when the last came back, so it beat for ever."""
    n = 3
    settings = _fast_beats("far-away", n, n, join_timeout=15)
    with _formed(_FarAway, settings, n) as handlers:
        time.sleep(1.0)  # the state's heartbeats are all older than the expiry now
        _FarAway.late = True
        try:
            infos = next_round(handlers)
        finally:
            _FarAway.late = False
        assert sorted(info.rank for info in infos) == list(range(n))
