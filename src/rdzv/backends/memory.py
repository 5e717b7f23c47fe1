"""An in-process backend: the whole rendezvous in one process (threads), for tests and demos.

Handlers built by the registry under the name ``memory`` share one backend and
one store per run id within the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousParameters
from rdzv.backends.base import HeartbeatBoard, IntentLog, RendezvousBackend, Token
from rdzv.store.memory import InMemoryStore

__all__ = ["InMemoryBackend", "create_backend", "shared_backend"]


class InMemoryBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """The encoded state and a version counter (the fencing token) behind a condition.

    It also keeps a log of join intents and a heartbeat record per node, as the
    etcd and c10d backends do, so that in-process runs take the same path.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._state: bytes | None = None
        self._version = 0
        self._intents: list[bytes] = []
        self._beats: dict[str, bytes] = {}

    def post_intent(self, record: bytes, cursor: int) -> None:
        with self._changed:
            self._intents.append(bytes(record))

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        with self._changed:
            return self._intents[cursor:], max(cursor, len(self._intents))

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        with self._changed:
            self._beats[name] = bytes(record)

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        with self._changed:
            return {name: self._beats[name] for name in names if name in self._beats}

    @property
    def name(self) -> str:
        return "memory"

    def get_state(self) -> tuple[bytes, Token] | None:
        with self._changed:
            if self._state is None:
                return None
            return self._state, self._version

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        with self._changed:
            current_matches = (
                self._state is None
                if token is None
                else self._state is not None and token == self._version
            )
            if current_matches:
                self._state = bytes(state)
                self._version += 1
                self._changed.notify_all()
                return self._state, self._version, True
            if self._state is None:
                return None  # a token for a state that does not exist: nothing to return
            return self._state, self._version, False

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            while (self._version if self._state is not None else None) == token:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return None if self._state is None else (self._state, self._version)


_runs: dict[str, tuple[InMemoryBackend, InMemoryStore]] = {}
_runs_lock = threading.Lock()


def _shared(run_id: str) -> tuple[InMemoryBackend, InMemoryStore]:
    with _runs_lock:
        return _runs.setdefault(run_id, (InMemoryBackend(), InMemoryStore()))


def shared_backend(run_id: str) -> InMemoryBackend:
    """The backend that the ``memory`` handlers of ``run_id`` share in this process.

    A watcher (:func:`rdzv.watch`) reads it; one that starts before the first node
    creates it, and the nodes then use the same.
    """
    return _shared(run_id)[0]


def create_backend(params: RendezvousParameters) -> tuple[InMemoryBackend, InMemoryStore]:
    """The backend and store that the ``memory`` handlers of ``params.run_id`` share.

    The first call for a run id in this process creates them; the endpoint is ignored.
    """
    return _shared(params.run_id)


# create_memory_handler moved to rdzv.dynamic.wiring, since a backend does not import
# the handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_memory_handler": "rdzv.dynamic.wiring"})
