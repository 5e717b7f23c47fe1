"""How a join ends, on real backends: the three bugs of issue 15, as a user met them.

Nodes are threads of this process, each with its own handler and backend client;
the c10d store is a real TCP store (hosted by the first handler), the etcd-v2
backend a real etcd, and memory the in-process backend.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _ports import free_port
from _threads import next_round

from rdzv import (
    DynamicRendezvousHandler,
    InMemoryBackend,
    InMemoryStore,
    RendezvousParameters,
    RendezvousTimeoutError,
    create_handler,
    get_rendezvous_handler,
)
from rdzv.backends.c10d import create_backend as create_c10d_backend
from rdzv.backends.etcd import create_backend as create_etcd_backend
from rdzv.dynamic.backend import HeartbeatBoard, IntentLog, RendezvousBackend
from rdzv.etcd_server import EtcdServer

BACKENDS = ["memory", "c10d", "etcd-v2"]

Make = Callable[..., DynamicRendezvousHandler]


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, etcd_prefix: str) -> Iterator[Make]:
    """Handlers of one new run on the backend under test: ``make(min, max, **options)``."""
    backend = request.param
    options: dict[str, Any] = {}
    if backend == "c10d":
        endpoint = f"127.0.0.1:{free_port()}"
    elif backend == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        endpoint, options = server.get_endpoint(), {"etcd_prefix": etcd_prefix}
    else:
        endpoint = ""
    run_id = f"endings-{uuid.uuid4().hex[:8]}"
    made: list[DynamicRendezvousHandler] = []

    def handler(min_nodes: int, max_nodes: int, **more: Any) -> DynamicRendezvousHandler:
        params = RendezvousParameters(
            backend, endpoint, run_id, min_nodes, max_nodes, "127.0.0.1", **options, **more
        )
        made.append(get_rendezvous_handler(params))  # type: ignore[arg-type]
        return made[-1]

    yield handler
    for h in made:
        h._stop_heartbeats()


def test_a_node_that_timed_out_is_not_admitted_by_a_later_round(make: Make) -> None:
    """Bug 1: its pending intent made it a ghost rank 0 of the next round, and the round
    failed after 19 s waiting for the gone node's address."""
    gone = make(2, 2, join_timeout=1.5)
    with pytest.raises(RendezvousTimeoutError):
        gone.next_rendezvous()
    pair = [make(2, 2, join_timeout=20), make(2, 2, join_timeout=20)]
    started = time.monotonic()
    infos = next_round(pair)
    assert len(infos) == 2, "the two new nodes did not form a round"
    assert sorted(i.rank for i in infos) == [0, 1]
    assert {i.world_size for i in infos} == {2}
    state = pair[0]._executor.state
    assert gone.node not in state.members()
    assert time.monotonic() - started < 10


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_node_dropped_while_it_did_not_beat_learns_it_and_all_meet_again(make: Make) -> None:
    """Bug 3: a node stopped past the heartbeat expiry, then resumed, polled
    num_nodes_waiting() == 0 for ever while the others went on without it."""
    options = {
        "keep_alive_interval": 0.3,
        "keep_alive_max_attempt": 2,
        "last_call_timeout": 0.2,
        "join_timeout": 20,
    }
    nodes = [make(2, 3, **options) for _ in range(3)]
    assert len(next_round(nodes)) == 3
    first_round = nodes[0].round
    stopped, others = nodes[2], nodes[:2]  # nodes[0] hosts the c10d store
    stopped._stop_heartbeats()  # as SIGSTOP would; its process keeps its handler
    _wait_for(lambda: others[0].num_nodes_waiting() > 0, 10, "the others to see the loss")
    assert len(next_round(others)) == 2
    assert others[0].round > first_round
    # Resumed: the round it joined went on without it, and it is told so.
    assert stopped.num_nodes_waiting() >= 1
    # Its launcher rendezvous again; the others see it waiting; all three meet.
    late: list[Any] = []
    joiner = threading.Thread(target=lambda: late.append(stopped.next_rendezvous()))
    joiner.start()
    _wait_for(lambda: others[0].num_nodes_waiting() > 0, 10, "the others to see it waiting")
    infos = next_round(others)
    joiner.join(timeout=30)
    everyone = [*infos, *late]
    assert sorted(i.rank for i in everyone) == [0, 1, 2]
    assert {i.world_size for i in everyone} == {3}
    assert stopped.num_nodes_waiting() == 0


class _AlwaysLosing(RendezvousBackend, IntentLog, HeartbeatBoard):
    """A real backend whose compare-and-set always loses, as if another writer always won,
    and whose waits return at once (so that a back-off costs no time)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def name(self) -> str:
        return str(self._inner.name)

    def get_state(self) -> Any:
        return self._inner.get_state()

    def set_state(self, state: bytes, token: Any = None) -> Any:
        current = self._inner.get_state()
        if current is None:
            self._inner.set_state(state, None)  # someone else's first write
            current = self._inner.get_state()
        return (*current, False)

    def wait_for_change(self, token: Any, timeout: float) -> Any:
        return None

    def post_intent(self, record: bytes, cursor: int) -> None:
        self._inner.post_intent(record, cursor)

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        return self._inner.read_intents(cursor)  # type: ignore[no-any-return]

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self._inner.beat(name, record, ttl)

    def read_beats(self, names: Any) -> dict[str, bytes]:
        return self._inner.read_beats(names)  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_node_whose_writes_always_lose_times_out_without_overflow(
    backend: str, request: pytest.FixtureRequest, etcd_prefix: str
) -> None:
    """Bug 2: the back-off computed 0.002 * 2**n before capping it, and raised
    OverflowError past a thousand lost writes (about 39 s with real waits; at once
    here, where waits cost nothing)."""
    options: dict[str, Any] = {"join_timeout": 1}
    if backend == "c10d":
        params = RendezvousParameters(
            backend, f"127.0.0.1:{free_port()}", "losing", 2, 2, "127.0.0.1", **options
        )
        inner, store = create_c10d_backend(params)
    elif backend == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        options["etcd_prefix"] = etcd_prefix
        params = RendezvousParameters(
            backend, server.get_endpoint(), "losing", 2, 2, "127.0.0.1", **options
        )
        inner, store = create_etcd_backend(params)
    else:
        params = RendezvousParameters(backend, "", "losing", 2, 2, "127.0.0.1", **options)
        inner, store = InMemoryBackend(), InMemoryStore()
    handler = create_handler(store, _AlwaysLosing(inner), params)
    started = time.monotonic()
    with pytest.raises(RendezvousTimeoutError):
        handler.next_rendezvous()
    assert time.monotonic() - started < 20
