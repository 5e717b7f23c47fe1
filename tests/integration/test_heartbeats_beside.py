"""A node's heartbeats run beside its other operations, on a real TCP store.

On a backend with a heartbeat board, a node's keep-alive writes only its own
record, so its join need not wait for a heartbeat, nor a heartbeat for the join:
on etcd-v2 at 1,024 nodes a beat took a second, a join waited behind it, and a
joining node beat in its join's place. (A launcher's reads do wait for a beat in
flight, as torch's do: that holds a thousand launchers' polls to the backend's pace.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from _late import LateBackend
from _ports import free_port
from _threads import next_round

from rdzv import DynamicRendezvousHandler, RendezvousGracefulExitError, RendezvousParameters
from rdzv.backends.base import Token, Unchanged
from rdzv.backends.c10d import C10dRendezvousBackend
from rdzv.dynamic.handler import create_handler
from rdzv.store.tcp import TCPStore


def _settings(run_id: str, n: int, interval: float, attempts: int) -> RendezvousParameters:
    return RendezvousParameters(
        "c10d",
        "",
        run_id,
        n,
        n,
        "127.0.0.1",
        join_timeout=15,
        last_call_timeout=0.1,
        keep_alive_interval=interval,
        keep_alive_max_attempt=attempts,
        heartbeat=30,
    )


@contextlib.contextmanager
def _formed(
    backend: type[C10dRendezvousBackend], settings: RendezvousParameters, n: int
) -> Iterator[list[DynamicRendezvousHandler]]:
    """``n`` nodes through a first round on a new TCP store; shut down afterwards."""
    host = TCPStore("127.0.0.1", free_port(), is_master=True)
    handlers = [create_handler(host, backend(host, settings.run_id), settings) for _ in range(n)]
    try:
        assert sorted(info.rank for info in next_round(handlers)) == list(range(n))
        yield handlers
    finally:
        _HeldBeat.release.set()
        for handler in handlers:
            handler.shutdown()
        host.close()


class _HeldBeat(C10dRendezvousBackend):
    """A real c10d backend whose first heartbeat after ``hold`` is set waits for
    ``release`` (a beat stuck on a slow backend); ``held`` names whose it is."""

    hold = False
    held: ClassVar[list[str]] = []
    entered = threading.Event()
    release = threading.Event()

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        if type(self).hold and not self.held:
            self.held.append(name)
            self.entered.set()
            self.release.wait(timeout=30)
        super().beat(name, record, ttl)

    @classmethod
    def reset(cls) -> None:
        cls.hold = False
        cls.held.clear()
        cls.entered.clear()
        cls.release.clear()


def _holder(handlers: list[DynamicRendezvousHandler]) -> DynamicRendezvousHandler:
    """The handler whose heartbeat is held, once one is."""
    assert _HeldBeat.entered.wait(timeout=10), "no heartbeat was sent in 10 s"
    return next(h for h in handlers if str(h.node) in _HeldBeat.held[0])


def test_a_join_does_not_wait_for_a_heartbeat_in_flight() -> None:
    """Both nodes rejoin while one's heartbeat is stuck: the join waited for the beat to
    end, up to the heartbeat timeout and a second."""
    _HeldBeat.reset()
    with _formed(_HeldBeat, _settings("held-join", 2, 0.2, 100), 2) as handlers:
        _HeldBeat.hold = True
        _holder(handlers)
        infos = next_round(handlers, timeout=5)
        assert not _HeldBeat.release.is_set()
        assert sorted(info.rank for info in infos) == [0, 1]


class _Far(LateBackend):
    """Every request answered 0.4 s late once ``late`` is set: two thirds of the expiry
    (0.2 s x 3), twice the interval."""

    delay = 0.4


def test_nodes_whose_every_round_trip_takes_most_of_the_expiry_still_rejoin() -> None:
    """What the simulator found with far nodes, on a real TCP store: three nodes rejoin,
    every request of theirs answered 0.4 s late against a 0.6 s expiry. A join that beat
    between its steps beat too seldom to stay in the state; a node admitted had its
    intent's time for a heartbeat, expired by the time it learnt of it; and a node that
    read the log found its own intent expired, posted it again, and read again."""
    n = 3
    settings = _settings("far", n, 0.2, 3)
    with _formed(_Far, settings, n) as handlers:
        rounds = [h.round for h in handlers]
        _Far.late = True
        try:
            infos = next_round(handlers)
        finally:
            _Far.late = False
        assert sorted(info.rank for info in infos) == list(range(n))
        assert [h.round for h in handlers] == [r + 1 for r in rounds]


class _CountingReads(C10dRendezvousBackend):
    """A real c10d backend that counts the state reads and waits of each instance."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0

    def get_state(self) -> tuple[bytes, Token] | None:
        self.reads += 1
        return super().get_state()

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        self.reads += 1
        return super().get_state_if_changed(token)

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        self.reads += 1
        return super().wait_for_change(token, timeout)


def test_a_redundant_node_past_its_deadline_waits_for_a_change_and_does_not_spin() -> None:
    """B finds the round full (max_nodes 1) and waits in the redundancy list past its join
    deadline and the rollback period after it. With nothing ahead for time alone to
    change, its waits ended at once: once its own beats no longer woke its join, it read
    the state every 5 ms (seed 310724 in the simulator; 890 reads in 3 s here). It waits
    for a change, up to two seconds at a time."""
    host = TCPStore("127.0.0.1", free_port(), is_master=True)
    settings = RendezvousParameters(
        "c10d", "", "redundant", 1, 1, "127.0.0.1", join_timeout=0.5, keep_alive_interval=0.2
    )
    backends = [_CountingReads(host, "redundant") for _ in range(2)]
    a, b = (create_handler(host, backend, settings) for backend in backends)
    ended: list[BaseException] = []

    def join_b() -> None:
        try:
            b.next_rendezvous()
        except RendezvousGracefulExitError as e:
            ended.append(e)

    try:
        assert a.next_rendezvous().rank == 0
        waiting = threading.Thread(target=join_b)
        waiting.start()
        time.sleep(6.0)  # past its deadline and the rollback period (5 s) after it
        before = backends[1].reads
        time.sleep(3.0)
        assert backends[1].reads - before <= 6
        a.set_closed()
        waiting.join(timeout=10)
        assert len(ended) == 1
    finally:
        a.shutdown()
        b.shutdown()
        host.close()
