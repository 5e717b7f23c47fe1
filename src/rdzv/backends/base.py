"""``RendezvousBackend``: where the shared rendezvous state lives.

The contract is torch's: opaque bytes guarded by a fencing token, written only by
compare-and-set. rdzv adds :meth:`RendezvousBackend.wait_for_change` so that a
waiting node wakes when the state moves instead of polling once a second.
"""

from __future__ import annotations

import binascii
import enum
import time
from abc import ABC, abstractmethod
from base64 import b64decode, b64encode
from collections.abc import Sequence
from typing import Any

from rdzv.api import RendezvousStateError

__all__ = [
    "UNCHANGED",
    "HeartbeatBoard",
    "IntentLog",
    "RendezvousBackend",
    "Token",
    "Unchanged",
    "decode_base64_state",
    "encode_base64_state",
]

Token = Any
"""An opaque fencing token; only the backend that issued it interprets it."""


class Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED`."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED
"""What :meth:`RendezvousBackend.get_state_if_changed` returns for the state the caller has."""


class RendezvousBackend(ABC):
    """Holds the encoded rendezvous state of one run."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The backend's registered name."""

    @abstractmethod
    def get_state(self) -> tuple[bytes, Token] | None:
        """Return the encoded state and its fencing token, or ``None`` when there is none.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
            RendezvousStateError: the stored value is not an encoded state.
        """

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        """:meth:`get_state`, or :data:`UNCHANGED` if the state is still the one ``token`` names.

        A launcher polls ``num_nodes_waiting()`` every few tenths of a second on
        every node, and each poll reads the state: tens of kilobytes each at a
        thousand nodes, for a state that rarely changed. Backends that can ask
        whether it changed in a small request (the TCP store, etcd v3) override
        this; the default reads the state whole.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
            RendezvousStateError: the stored value is not an encoded state.
        """
        return self.get_state()

    @abstractmethod
    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        """Write ``state`` if ``token`` is still current; return ``(state, token, written)``.

        - ``token`` matches the stored one: ``state`` is written and returned with
          its new token and ``True``.
        - ``token`` is stale, unknown or malformed: nothing is written; the stored
          state is returned with its token and ``False``.
        - ``token`` is ``None``: ``state`` is written only if there is no state yet.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
            RendezvousStateError: the stored value is not an encoded state.
        """

    @property
    def reconnect_window(self) -> float:
        """Seconds an operation keeps retrying while this backend is unreachable.

        A brief outage (etcd restarting, a dropped connection) should cost a
        rendezvous a few seconds, not fail every node at once; an outage longer
        than this is reported as ``RendezvousConnectionError``. Backends that cannot
        be unreachable keep the default, 0: no retry.
        """
        return 0.0

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        """Return when the state may differ from the one ``token`` names, or after ``timeout`` s.

        Returns the new state and its token when the backend saw them (an etcd
        watch reports the value it fires on), which spares the caller a read;
        ``None`` means "read again". Returning early is always allowed, so the
        default just sleeps a little. Backends that can watch (etcd, the TCP
        store) override it to wake on the first change.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
            RendezvousStateError: the new value is not an encoded state.
        """
        time.sleep(min(max(timeout, 0.0), 0.05))
        return None

    def release_waits(self) -> None:
        """Free what :meth:`wait_for_change` kept open for the next wait.

        An etcd v3 watch stays open from one wait to the next, so that each wait
        costs etcd no new stream and no read; the handler calls this when an
        operation ends and no other of the node's runs. The default keeps
        nothing and frees nothing.
        """
        return None


class IntentLog(ABC):
    """Optional capability: an append-only log where joining nodes post themselves.

    Posting never contends, so a thousand nodes can announce themselves at once;
    the next node to write the state admits them all in one compare-and-set (see
    :mod:`rdzv.core.intents`). Positions are backend-defined integers that grow.
    """

    @abstractmethod
    def post_intent(self, record: bytes, cursor: int) -> None:
        """Append one record to the log.

        ``cursor`` is the log position in the state the node read; a backend whose
        log rolls over into new segments (to bound its size) posts into the
        segment the cursor names. A record posted to a segment that was rolled
        over meanwhile is never admitted; the node sees that and posts again.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """

    @abstractmethod
    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        """The records after position ``cursor``, and the position after the last one.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """


class HeartbeatBoard(ABC):
    """Optional capability: one small heartbeat record per node, outside the state.

    A heartbeat then costs one tiny write instead of rewriting the shared state,
    and the state changes (and wakes every waiting node) only when membership does.
    """

    @abstractmethod
    def beat(self, name: str, record: bytes, ttl: float) -> None:
        """Write ``name``'s heartbeat record; it may vanish after ``ttl`` seconds.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """

    @abstractmethod
    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        """The heartbeat records of ``names`` that exist.

        Raises:
            RendezvousConnectionError: the backend cannot be reached.
        """


def encode_base64_state(state: bytes) -> bytes:
    """Base64 of an encoded state, as backends store it (text-safe in etcd and c10d)."""
    return b64encode(state)


def decode_base64_state(value: bytes | str, where: str) -> bytes:
    """Undo :func:`encode_base64_state`.

    Raises:
        RendezvousStateError: ``value`` is not base64; ``where`` names the key so
            that the message says what to delete.
    """
    try:
        return b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RendezvousStateError(
            f"The rendezvous state at {where} is not base64 ({e}); it was not written by rdzv. "
            "Overwrite it with `rdzv close --force` (or delete that key), then restart the "
            "nodes with a new run id."
        ) from e
