"""A launcher's polls ask whether the state changed instead of reading it whole.

``num_nodes_waiting()`` and ``is_closed()`` read the state each time a launcher
polls (every few tenths of a second on every node). The handler gives the backend
the token of the last state the node saw, and takes that state again when the
backend answers :data:`~rdzv.backends.base.UNCHANGED`.
"""

from __future__ import annotations

from rdzv import RendezvousParameters
from rdzv.backends.base import UNCHANGED, Token, Unchanged
from rdzv.backends.memory import InMemoryBackend
from rdzv.dynamic.handler import create_handler
from rdzv.store.memory import InMemoryStore


class _Asks(InMemoryBackend):
    """Answers UNCHANGED for the current version, and counts whole reads and asks."""

    def __init__(self) -> None:
        super().__init__()
        self.whole_reads = 0
        self.asked: list[Token] = []

    def get_state(self) -> tuple[bytes, Token] | None:
        self.whole_reads += 1
        return super().get_state()

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        self.asked.append(token)
        current = super().get_state()
        if current is not None and current[1] == token:
            return UNCHANGED
        return self.get_state()


def test_polls_after_a_round_ask_with_the_token_seen_and_read_nothing_whole() -> None:
    backend = _Asks()
    params = RendezvousParameters("asks", "", "poll-run", 1, 1, keep_alive_interval=3600)
    handler = create_handler(InMemoryStore(), backend, params, backend_name="asks")
    try:
        handler.next_rendezvous()
        stored = backend.get_state()
        assert stored is not None
        reads, backend.asked = backend.whole_reads, []
        for _ in range(5):
            assert handler.num_nodes_waiting() == 0
            assert handler.is_closed() is False
        assert backend.whole_reads == reads  # ten polls, no state read whole
        assert backend.asked == [stored[1]] * 10
    finally:
        handler.shutdown()


def test_a_poll_after_a_change_reads_the_new_state() -> None:
    backend = _Asks()
    params = RendezvousParameters("asks", "", "poll-change", 1, 1, keep_alive_interval=3600)
    handler = create_handler(InMemoryStore(), backend, params, backend_name="asks")
    other = create_handler(InMemoryStore(), backend, params, backend_name="asks")
    try:
        handler.next_rendezvous()
        assert handler.is_closed() is False
        other.set_closed()  # another node's write: the token the first node holds is old
        reads = backend.whole_reads
        assert handler.is_closed() is True
        assert backend.whole_reads == reads + 1
    finally:
        handler.shutdown()
        other.shutdown()
