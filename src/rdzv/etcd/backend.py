"""The state half of both etcd backends, over :class:`~rdzv.etcd.kv.EtcdKV`.

:class:`~rdzv.backends.etcd.EtcdRendezvousBackend` (v2) and
:class:`~rdzv.backends.etcd_v3.EtcdV3RendezvousBackend` subclass
:class:`EtcdKVBackend`, which keeps the state of a run under one key: base64 of
the codec's bytes, written with a TTL that each write renews (an abandoned run
cleans itself up); the key's version is the fencing token, and compare-and-set
is the protocol's ``put_if``. The subclasses add what their API lays out
differently: the intent log, the heartbeats and how errors read.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from rdzv.api import RendezvousConnectionError
from rdzv.backends.base import (
    HeartbeatBoard,
    IntentLog,
    RendezvousBackend,
    Token,
    decode_base64_state,
    encode_base64_state,
)
from rdzv.etcd.kv import Entry, EtcdKV

__all__ = ["EtcdKVBackend"]


class EtcdKVBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>``; subclassed per API.

    Raises:
        ValueError: an empty run id or a non-positive TTL.
    """

    DEFAULT_TTL = 7200
    """Seconds the state outlives its last write unless ``ttl`` says otherwise."""
    client_errors: ClassVar[tuple[type[BaseException], ...]]
    """The client's errors, which :meth:`_connection_error` reports."""

    def __init__(self, kv: EtcdKV, run_id: str, key_prefix: str, ttl: int | None) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"The TTL of the rendezvous state ({ttl}) must be positive.")
        self._kv = kv
        self._key = f"{key_prefix.rstrip('/')}/{run_id}"
        self._raw_key = self._key.encode("utf-8")
        self._ttl = ttl or self.DEFAULT_TTL

    @property
    def reconnect_window(self) -> float:
        """The client's ``read_timeout``: how long an etcd outage may last before it is reported.

        (Executors that retry through a brief outage read it.)
        """
        return self._kv.read_timeout

    @property
    def key(self) -> str:
        """The etcd key that holds the state."""
        return self._key

    def get_state(self) -> tuple[bytes, Token] | None:
        try:
            entry = self._kv.get(self._raw_key)
        except self.client_errors as e:
            raise self._connection_error(e) from e
        return None if entry is None else self._decode(entry)

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        if token is None:
            expected: int | None = None
        elif isinstance(token, int) and not isinstance(token, bool) and token > 0:
            expected = token
        else:
            return self._current_state()  # a malformed token can never match
        try:
            swap = self._kv.put_if(
                self._raw_key, encode_base64_state(state), expected, ttl=self._ttl
            )
        except self.client_errors as e:
            raise self._connection_error(e) from e
        if swap.written:
            return bytes(state), swap.version, True
        if not swap.current_known:
            return self._current_state()
        return None if swap.current is None else (*self._decode(swap.current), False)

    @abstractmethod
    def _connection_error(self, error: BaseException) -> RendezvousConnectionError:
        """The error that reports a failed request to etcd, and what to do."""
        raise NotImplementedError

    def _state_text(self, value: bytes) -> bytes | str:
        """The stored state as :func:`~rdzv.backends.base.decode_base64_state` reads it."""
        return value

    def _decode(self, entry: Entry) -> tuple[bytes, Token]:
        where = f"etcd key {self._key} at {self._kv.endpoint}"
        return decode_base64_state(self._state_text(entry.value or b""), where), entry.version

    def _current_state(self) -> tuple[bytes, Token, bool] | None:
        current = self.get_state()
        return None if current is None else (*current, False)
