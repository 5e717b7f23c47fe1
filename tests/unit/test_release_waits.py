"""The handler frees what waits kept open (``release_waits``) once no operation runs.

An operation that ends while another is between two of its waits must leave the
other's kept watch alone: a launcher thread asking ``num_nodes_waiting()`` during
a join would otherwise cost the join a new watch stream and a read each time.
"""

from __future__ import annotations

import threading

import pytest

from rdzv import RendezvousParameters, RendezvousTimeoutError
from rdzv.backends.base import Token
from rdzv.backends.memory import InMemoryBackend
from rdzv.dynamic.handler import create_handler
from rdzv.store.memory import InMemoryStore


class _Releases(InMemoryBackend):
    """Counts release_waits, and holds a wait until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.releases = 0
        self.waiting = threading.Event()
        self.go = threading.Event()

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        self.waiting.set()
        self.go.wait(timeout)
        return super().wait_for_change(token, 0.0)

    def release_waits(self) -> None:
        self.releases += 1


def test_an_operation_that_ends_during_a_join_leaves_the_join_its_waits() -> None:
    backend = _Releases()
    params = RendezvousParameters("mine", "", "release-run", 2, 2, join_timeout=2)
    handler = create_handler(InMemoryStore(), backend, params, backend_name="mine")
    failures: list[BaseException] = []

    def join() -> None:
        with pytest.raises(RendezvousTimeoutError) as error:
            handler.next_rendezvous()  # the second node never comes
        failures.append(error.value)

    joining = threading.Thread(target=join)
    joining.start()
    assert backend.waiting.wait(10)
    assert handler.num_nodes_waiting() == 0
    assert backend.releases == 0  # the join still runs: its waits are kept
    backend.go.set()
    joining.join(timeout=30)
    assert failures
    assert backend.releases >= 1  # released once the join ended
    handler.shutdown()
