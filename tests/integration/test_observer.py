"""A handler's observer, on the in-memory backend: what it is told, and that it cannot break."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest

from rdzv import InMemoryBackend, InMemoryStore, RendezvousParameters, create_handler
from rdzv.core.progress import Op
from rdzv.dynamic.handler import DynamicRendezvousHandler
from rdzv.dynamic.observer import Observation, OperationEnded, StateWritten


def two_nodes() -> list[DynamicRendezvousHandler]:
    backend, store, run_id = InMemoryBackend(), InMemoryStore(), f"run-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters("memory", "", run_id, 2, 2, "127.0.0.1", join_timeout=10)
    return [create_handler(store, backend, params) for _ in range(2)]


def meet(nodes: list[DynamicRendezvousHandler]) -> list[int]:
    ranks: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: ranks.append(n.next_rendezvous().rank)) for n in nodes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(ranks)


def test_the_observer_sees_the_writes_and_the_ends_of_operations() -> None:
    nodes = two_nodes()
    seen: list[Observation] = []
    for node in nodes:
        node.observe(seen.append)
    assert meet(nodes) == [0, 1]
    for node in nodes:
        assert node.shutdown() is True

    ends = [(o.op, o.error) for o in seen if isinstance(o, OperationEnded)]
    assert ends.count((Op.JOIN, None)) == 2
    assert ends.count((Op.CLOSE, None)) == 2
    writes = [o for o in seen if isinstance(o, StateWritten) and o.written]
    assert any(w.after.complete and not w.before.complete for w in writes)
    assert [w.op for w in writes if w.after.closed and not w.before.closed] == [Op.CLOSE]


def test_an_observer_that_raises_is_logged_and_the_rendezvous_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(observation: Observation) -> None:
        raise RuntimeError("observer bug")

    nodes = two_nodes()
    for node in nodes:
        node.observe(broken)
    with caplog.at_level(logging.WARNING, logger="rdzv.dynamic.observer"):
        assert meet(nodes) == [0, 1]
        assert [node.shutdown() for node in nodes] == [True, True]
    assert "the rendezvous observer" in caplog.text
    assert "observer bug" in caplog.text
