"""DynamicRendezvousHandler end to end in one process, on the in-memory backend."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from rdzv import (
    DynamicRendezvousHandler,
    InMemoryBackend,
    InMemoryStore,
    PrefixStore,
    RendezvousClosedError,
    RendezvousGracefulExitError,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeout,
    RendezvousTimeoutError,
    create_handler,
)
from rdzv.core import (
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    apply_action,
    decode_state,
    encode_state,
)
from rdzv.dynamic.handler import _bootstrap_info


class Run:
    """One run id: a shared backend and store, and the handlers made for it."""

    def __init__(self, min_nodes: int, max_nodes: int, **timeouts: float) -> None:
        self.backend = InMemoryBackend()
        self.store = InMemoryStore()
        self.run_id = f"run-{uuid.uuid4().hex[:8]}"
        self.min_nodes, self.max_nodes = min_nodes, max_nodes
        self.options: dict[str, float] = {"last_call_timeout": 0.1, "join_timeout": 10}
        self.options.update(timeouts)
        self.handlers: list[DynamicRendezvousHandler] = []

    def handler(self, local_addr: str = "127.0.0.1") -> DynamicRendezvousHandler:
        params = RendezvousParameters(
            "memory", "", self.run_id, self.min_nodes, self.max_nodes, local_addr, **self.options
        )
        handler = create_handler(self.store, self.backend, params)
        self.handlers.append(handler)
        return handler

    def state(self):  # type: ignore[no-untyped-def]
        """The stored state (an empty one before the first write)."""
        result = self.backend.get_state()
        return RendezvousState() if result is None else decode_state(result[0])


@pytest.fixture
def make_run() -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(min_nodes: int, max_nodes: int, **timeouts: float) -> Run:
        run = Run(min_nodes, max_nodes, **timeouts)
        runs.append(run)
        return run

    yield make
    for run in runs:
        for handler in run.handlers:
            handler._stop_heartbeats()


def join_all(handlers: list[DynamicRendezvousHandler]) -> list[RendezvousInfo]:
    results: list[RendezvousInfo | BaseException | None] = [None] * len(handlers)

    def join(i: int) -> None:
        try:
            results[i] = handlers[i].next_rendezvous()
        except BaseException as e:  # reported below, in the test's thread
            results[i] = e

    threads = [threading.Thread(target=join, args=(i,)) for i in range(len(handlers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    assert all(isinstance(r, RendezvousInfo) for r in results)
    return results  # type: ignore[return-value]


def keep_alive_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rdzv-keep-alive")]


def test_eight_threads_get_ranks_0_to_7_in_one_round(make_run: Callable[..., Run]) -> None:
    run = make_run(8, 8)
    handlers = [run.handler() for _ in range(8)]
    start = time.perf_counter()
    infos = join_all(handlers)
    elapsed = time.perf_counter() - start
    print(f"8 threads rendezvoused in {elapsed * 1000:.1f} ms")
    assert sorted(info.rank for info in infos) == list(range(8))
    assert {info.world_size for info in infos} == {8}
    assert run.state().round == 0
    assert len({info.bootstrap_store_info for info in infos}) == 1


def test_round_with_min_nodes_completes_after_last_call(make_run: Callable[..., Run]) -> None:
    run = make_run(2, 4, last_call_timeout=0.3)
    start = time.perf_counter()
    infos = join_all([run.handler(), run.handler()])
    assert time.perf_counter() - start >= 0.3
    assert sorted(i.rank for i in infos) == [0, 1]
    assert run.state().complete


def test_store_of_a_round_is_shared_by_its_nodes(make_run: Callable[..., Run]) -> None:
    run = make_run(2, 2)
    first, second = join_all([run.handler(), run.handler()])
    first.store.set("greeting", b"hello")
    assert second.store.get("greeting") == b"hello"


def test_late_node_is_counted_waiting_and_joins_the_next_round(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(2, 4)
    members = [run.handler("10.0.0.2"), run.handler("10.0.0.3"), run.handler("10.0.0.4")]
    join_all(members)
    late = run.handler("10.0.0.1")
    late_result: list[RendezvousInfo] = []
    waiter = threading.Thread(target=lambda: late_result.append(late.next_rendezvous()))
    waiter.start()
    deadline = time.monotonic() + 5
    while members[0].num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "the late node never appeared in the wait list"
        time.sleep(0.01)
    assert members[0].num_nodes_waiting() == 1
    infos = join_all(members)
    waiter.join(timeout=10)
    assert late_result, "the late node did not complete the next round"
    everyone = [*infos, late_result[0]]
    assert sorted(i.rank for i in everyone) == [0, 1, 2, 3]
    assert {i.world_size for i in everyone} == {4}
    assert run.state().round == 1
    # The late node sorts first, so it is rank 0 of round 1 and its address is the master's.
    assert late_result[0].rank == 0
    assert {i.bootstrap_store_info.master_addr for i in everyone} == {"10.0.0.1"}


def test_bootstrap_info_follows_the_new_rank_zero_of_each_round(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(2, 2, keep_alive_interval=0.1, keep_alive_max_attempt=2)
    first_round = join_all([run.handler("10.0.0.5"), run.handler("10.0.0.6")])
    assert {i.bootstrap_store_info.master_addr for i in first_round} == {"10.0.0.5"}
    for handler in run.handlers:
        handler._stop_heartbeats()
    # Both die; two new nodes form round 1 and must not read round 0's address.
    second_round = join_all([run.handler("10.0.0.7"), run.handler("10.0.0.8")])
    assert {i.bootstrap_store_info.master_addr for i in second_round} == {"10.0.0.7"}


def test_dead_participant_makes_survivors_see_a_node_waiting(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(2, 3, keep_alive_interval=0.2, keep_alive_max_attempt=3)
    survivors = [run.handler(), run.handler()]
    doomed = run.handler()
    join_all([*survivors, doomed])
    run.handlers.remove(doomed)
    del doomed
    gc.collect()  # the last reference is gone: its heartbeats stop
    deadline = time.monotonic() + 15
    while survivors[0].num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "the survivors never learned of the dead node"
        time.sleep(0.05)
    assert survivors[1].num_nodes_waiting() == 1
    infos = join_all(survivors)
    assert sorted(i.rank for i in infos) == [0, 1]
    assert {i.world_size for i in infos} == {2}


def test_dropping_a_handler_stops_its_keep_alive_thread(make_run: Callable[..., Run]) -> None:
    """Without a collection: a reference cycle through the keep-alive (the executor held
    its nudge) kept a dropped handler's node beating until the collector next ran,
    minutes later for long-lived objects, and its peers never saw it die."""
    run = make_run(1, 1, keep_alive_interval=0.05)
    handler = run.handler()
    handler.next_rendezvous()
    assert len(keep_alive_threads()) == 1
    run.handlers.clear()
    gc.disable()
    try:
        del handler
        deadline = time.monotonic() + 2
        while keep_alive_threads():
            assert time.monotonic() < deadline, "the keep-alive thread outlived its handler"
            time.sleep(0.01)
    finally:
        gc.enable()


def test_keep_alive_refreshes_the_heartbeat_record_not_the_state(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(1, 1, keep_alive_interval=0.05)
    handler = run.handler()
    handler.next_rendezvous()
    state_before = run.backend.get_state()
    joined = run.state().last_heartbeats[handler.node]
    time.sleep(0.3)
    record = run.backend.read_beats([str(handler.node)])[str(handler.node)]
    assert float(record) > joined
    assert run.backend.get_state() == state_before  # the shared state did not move


def test_a_heartbeat_on_a_board_does_not_read_the_state(
    make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a thousand nodes, reading the whole state before each tiny heartbeat record
    would be nearly all of the keep-alive traffic."""
    run = make_run(1, 1, keep_alive_interval=0.05)
    handler = run.handler()
    handler.next_rendezvous()
    reads: list[float] = []
    get_state = run.backend.get_state

    def counted() -> Any:
        reads.append(time.monotonic())
        return get_state()

    monkeypatch.setattr(run.backend, "get_state", counted)
    before = run.state().last_heartbeats[handler.node]
    reads.clear()
    time.sleep(0.3)
    after = float(run.backend.read_beats([str(handler.node)])[str(handler.node)])
    assert after > before  # several heartbeats were sent...
    assert reads == []  # ...and none read the state


def test_shutdown_closes_the_rendezvous_and_stops_heartbeats(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(2, 2)
    first, second = run.handler(), run.handler()
    join_all([first, second])
    assert first.shutdown() is True
    assert not any(t.name.endswith(str(first.node)) for t in keep_alive_threads())
    assert second.is_closed()
    with pytest.raises(RendezvousClosedError, match="closed"):
        second.next_rendezvous()


def test_set_closed_makes_later_joins_fail(make_run: Callable[..., Run]) -> None:
    run = make_run(1, 2)
    closer = run.handler()
    closer.set_closed()
    assert run.handler().is_closed()
    with pytest.raises(RendezvousClosedError):
        run.handler().next_rendezvous()


def test_join_times_out_and_removes_itself(make_run: Callable[..., Run]) -> None:
    run = make_run(2, 2, join_timeout=0.3)
    lonely = run.handler()
    with pytest.raises(RendezvousTimeoutError, match="0 other node"):
        lonely.next_rendezvous()
    assert lonely.node not in run.state().members()


def test_node_beyond_max_is_redundant_and_exits_gracefully_on_close(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(2, 2)
    members = [run.handler(), run.handler()]
    join_all(members)
    extra = run.handler()
    errors: list[BaseException] = []

    def join_extra() -> None:
        try:
            extra.next_rendezvous()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=join_extra)
    thread.start()
    deadline = time.monotonic() + 5
    while extra.node not in run.state().redundancy_list:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert members[0].num_nodes_waiting() == 0
    members[0].set_closed()
    thread.join(timeout=5)
    assert len(errors) == 1
    assert isinstance(errors[0], RendezvousGracefulExitError)


def test_corrupt_state_raises_state_error(make_run: Callable[..., Run]) -> None:
    run = make_run(1, 1)
    run.backend.set_state(b"\x80\x04garbage")
    with pytest.raises(RendezvousStateError, match="pickle"):
        run.handler().next_rendezvous()


def test_from_backend_takes_torch_arguments() -> None:
    handler = DynamicRendezvousHandler.from_backend(
        "job",
        InMemoryStore(),
        InMemoryBackend(),
        1,
        1,
        "127.0.0.1",
        RendezvousTimeout(join=5),
        keep_alive_interval=1,
        keep_alive_max_attempt=2,
    )
    info = handler.next_rendezvous()
    handler.shutdown()
    assert (info.rank, info.world_size, handler.get_run_id()) == (0, 1, "job")
    assert handler.get_backend() == "memory"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("join_timeout", "soon", "join_timeout"),
        ("last_call_timeout", -1, "last_call_timeout"),
        ("keep_alive_interval", 0, "keep_alive_interval"),
        ("keep_alive_max_attempt", 0, "keep_alive_max_attempt"),
        ("keep_alive_max_attempt", "x", "keep_alive_max_attempt"),
    ],
)
def test_create_handler_names_the_invalid_option(option: str, value: object, message: str) -> None:
    params = RendezvousParameters("memory", "", "job", 1, 1, **{option: value})
    with pytest.raises(ValueError, match=message):
        create_handler(InMemoryStore(), InMemoryBackend(), params)


def test_a_rank_zero_that_never_publishes_is_a_timeout_within_the_join_deadline(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(1, 1)
    start = time.monotonic()
    with pytest.raises(RendezvousTimeoutError, match="did not publish its address"):
        # As rank 1 of a round whose rank 0 died before publishing.
        store = PrefixStore("round-7", run.store)
        _bootstrap_info(1, 7, store, "127.0.0.1", run.run_id, timedelta(seconds=0.2))
    assert time.monotonic() - start < 10


def test_a_node_whose_join_failed_leaves_the_state_at_once(make_run: Callable[..., Run]) -> None:
    """Joined with a ghost rank 0 that never publishes its address, the node gives up
    at its join deadline and takes itself out: its peers need not wait for its
    heartbeat to expire to stop counting it."""
    run = make_run(2, 2, join_timeout=1.5)
    handler = run.handler("127.0.0.1")
    ghost = NodeDesc("10.0.0.1", 1, 0)  # sorts first: rank 0, and it never publishes
    planted = apply_action(
        RendezvousState(), Action.ADD_TO_PARTICIPANTS, ghost, handler.settings, time.time()
    )
    run.backend.set_state(encode_state(planted), None)
    with pytest.raises(RendezvousTimeoutError, match="did not publish its address"):
        handler.next_rendezvous()
    state = run.state()
    assert state.complete and set(state.participants) == {ghost}
    assert state.role_of(handler.node) is None
    assert not keep_alive_threads()  # its heartbeats stopped with the failed join


class _SlowWrites(InMemoryBackend):
    """A memory backend whose state writes take ``seconds`` of the handler's clock, and
    which records the thread of every heartbeat."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.beaten_by: list[threading.Thread] = []

    def set_state(self, state: bytes, token: Any = None) -> Any:
        result = super().set_state(state, token)
        self.clock[0] += self.seconds
        return result

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self.beaten_by.append(threading.current_thread())
        super().beat(name, record, ttl)


def test_a_heartbeat_due_when_the_round_completes_is_sent_before_the_join_returns() -> None:
    """Sent on the caller's thread, not by the keep-alive thread while the caller reads the
    round's address: the node's store would then need a second connection, and a round
    of thousands of nodes completing together would open thousands at once."""
    now = [1_800_000_000.0]
    backend = _SlowWrites(now, seconds=6.0)  # the node's heartbeat is overdue once written
    settings = RendezvousSettings("run", 1, 1, keep_alive_interval=timedelta(seconds=5))
    node = NodeDesc("host", 1, 0)
    handler = DynamicRendezvousHandler(
        node, settings, "memory", InMemoryStore(), backend, clock=lambda: now[0]
    )
    info = handler.next_rendezvous()
    assert info.rank == 0
    assert backend.beaten_by and set(backend.beaten_by) == {threading.current_thread()}
    assert handler._executor.last_heartbeat() == now[0]  # fresh when the join returns
    handler.shutdown()
