"""The ``c10d`` backend (alias ``tcp``): the state under one key of a store.

The embedded default: one node hosts rdzv's TCP store in its own process and the
others connect to it, so a job needs nothing but rdzv. The stored value is base64
of the codec's bytes and is its own fencing token (compare-and-set by value), as
in torch. A waiting node blocks in the store's wait-for-change on that key.

The hosting node is a single point of failure: if its process dies, every other
node gets ``RendezvousConnectionError`` within ``read_timeout``. Jobs that must
survive the loss of any one node use the ``etcd-v2`` backend.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousConnectionError, RendezvousParameters, RendezvousStateError
from rdzv.backends.base import (
    UNCHANGED,
    HeartbeatBoard,
    IntentLog,
    RendezvousBackend,
    Token,
    Unchanged,
    decode_base64_state,
    encode_base64_state,
)
from rdzv.core.intents import LOG_SEGMENT_SPAN
from rdzv.endpoint import parse_rendezvous_endpoint
from rdzv.options import refuse_none
from rdzv.store.base import Digests, Store, StoreError
from rdzv.store.file import FileStore
from rdzv.store.tcp import TCPStore

__all__ = [
    "DEFAULT_PORT",
    "C10dRendezvousBackend",
    "create_backend",
    "is_local_address",
]

DEFAULT_PORT = 29400
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds a node keeps trying to reach a store host that is not listening yet: long enough
for nodes started together (the host may come up a little later), short enough that a wrong
endpoint is reported quickly rather than after torch's full read timeout."""

_T = TypeVar("_T")


class C10dRendezvousBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """Holds the state of ``run_id`` in ``store`` (torch's signature).

    Join intents are appended to a log kept in segments, one key each
    (``rdzv.intents.<run_id>.<segment>``): once the state has admitted a whole
    segment of at least ``intent_segment_bytes``, the log moves on to the next
    key and the one before is deleted, so a long elastic job keeps a bounded log
    (one key without end would reach the store's value limit after some hundred
    thousand joins, and every admission reads its segment). A log position is
    ``segment * LOG_SEGMENT_SPAN + byte offset`` within the segment (see
    :data:`rdzv.core.intents.LOG_SEGMENT_SPAN`). Each node's heartbeat is
    a key of its own.

    Raises:
        ValueError: an empty run id, or a segment size that is not positive.
    """

    DEFAULT_SEGMENT_BYTES = 64 * 1024

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        intent_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if intent_segment_bytes <= 0:
            raise ValueError(
                f"The intent log segment size ({intent_segment_bytes}) must be positive."
            )
        self._store = store
        self._key = f"rdzv.rendezvous.{run_id}"
        self._intents_prefix = f"rdzv.intents.{run_id}."
        self._segment_bytes = intent_segment_bytes
        self._beats_prefix = f"rdzv.heartbeats.{run_id}."
        self._digests = Digests()  # a node polls with one token many times

    @property
    def name(self) -> str:
        """Always ``c10d``, as torch's, whichever name (``c10d`` or ``tcp``) built it."""
        return "c10d"

    @property
    def reconnect_window(self) -> float:
        """The store's timeout (``read_timeout``): an outage that long is reported."""
        return self._store.timeout.total_seconds()

    @property
    def key(self) -> str:
        """The store key that holds the state."""
        return self._key

    def _call(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except ValueError as e:
            # The store refused a value over its size limit (a segment of the intent
            # log that a partial record keeps from rolling over).
            raise RendezvousStateError(
                f"The rendezvous store refused a write for run key {self._key}: {e}. Start "
                "the job again with a new run id."
            ) from e
        except StoreError as e:
            raise RendezvousConnectionError(
                f"The rendezvous store failed: {str(e).rstrip('.')}. Check that the node "
                "hosting the store is "
                "alive and reachable; it is a single point of failure of the c10d backend."
            ) from e

    def _decode(self, value: bytes) -> tuple[bytes, Token]:
        return decode_base64_state(value, f"store key {self._key}"), value

    def get_state(self) -> tuple[bytes, Token] | None:
        value = self._call(lambda: self._store.get_if_exists(self._key))
        return None if value is None else self._decode(value)

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        """One small request while the state is the one ``token`` (its stored value) names."""
        if not isinstance(token, bytes) or not token:
            return self.get_state()
        digest = self._digests.of(self._key, token)
        changed, value = self._call(lambda: self._store.get_if_changed(self._key, digest))
        if not changed:
            return UNCHANGED
        return None if value is None else self._decode(value)

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        if token is not None and (not isinstance(token, bytes) or not token):
            current = self.get_state()  # a malformed token can never match
            return None if current is None else (*current, False)
        expected = token or b""
        desired = encode_base64_state(state)
        result = self._call(lambda: self._store.compare_set(self._key, expected, desired))
        if result == desired:
            return bytes(state), desired, True
        if token is not None and result == token:
            return None  # the key is gone (c10d answers a missing key with the expectation)
        return (*self._decode(result), False)

    def _segment_key(self, segment: int) -> str:
        return f"{self._intents_prefix}{segment}"

    def post_intent(self, record: bytes, cursor: int) -> None:
        key = self._segment_key(cursor // LOG_SEGMENT_SPAN)
        self._call(lambda: self._store.append(key, record))

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        segment, offset = divmod(cursor, LOG_SEGMENT_SPAN)
        log = self._call(lambda: self._store.get_if_exists(self._segment_key(segment))) or b""
        # Only whole records: an append may be seen half written by no one (the
        # store applies it at once), but a corrupt writer could leave a partial line.
        end = max(log.rfind(b"\n", offset) + 1, offset)
        records = [log[offset:end]] if end > offset else []
        if end >= self._segment_bytes and end == len(log):
            # All of this segment is read and it is full: the log goes on in the next
            # one. Nobody needs the one before any more: states that point into it
            # are stale, and their compare-and-set fails.
            if segment > 0:
                self._call(lambda: self._store.delete_key(self._segment_key(segment - 1)))
            return records, (segment + 1) * LOG_SEGMENT_SPAN
        return records, segment * LOG_SEGMENT_SPAN + end

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self._call(lambda: self._store.set(self._beats_prefix + name, record))

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        keys = [self._beats_prefix + name for name in names]
        values = self._call(lambda: self._store.multi_get_if_exists(keys))
        return {name: value for name, value in zip(names, values, strict=True) if value}

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        current = token if isinstance(token, bytes) else None
        value = self._call(lambda: self._store.wait_for_change(self._key, current, timeout))
        return None if value is None else self._decode(value)


def is_local_address(host: str) -> bool:
    """Whether ``host`` resolves to an address of this machine.

    Decided by binding a socket to each resolved address: only a local address
    binds. Torch compares hostnames and misses hosts whose name differs from the
    endpoint (pytorch issue 73656); a bind does not care about names.
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, address in infos:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address[0], 0))
            except OSError:
                continue
            return True
    return False


def _port_in_use(error: StoreError) -> bool:
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE


def _create_tcp_store(params: RendezvousParameters, timeout: timedelta) -> TCPStore:
    host, port = parse_rendezvous_endpoint(params.endpoint, DEFAULT_PORT)
    is_host = params.get_as_bool("is_host")
    connect_timeout = params.get_as_float("connect_timeout")  # None: the default
    if connect_timeout is None:
        connect_timeout = min(DEFAULT_CONNECT_TIMEOUT, timeout.total_seconds())
    if connect_timeout <= 0:
        raise ValueError(
            f"The rendezvous option 'connect_timeout' ({connect_timeout}) must be positive."
        )
    token = params.get("auth_token")
    if token is not None and not isinstance(token, (str, bytes)):
        raise ValueError("The rendezvous option 'auth_token' must be a string.")
    address = f"{host}:{port}"

    def connect(as_host: bool) -> TCPStore:
        return TCPStore(
            host,
            port,
            is_master=as_host,
            timeout=timeout,
            multi_tenant=True,
            auth_token=token,
            connect_timeout=connect_timeout,
        )

    try:
        if is_host is None and is_local_address(host):
            try:
                return connect(as_host=True)
            except StoreError as e:
                if not _port_in_use(e):
                    raise
                # Another process on this host serves the port already: join it.
        return connect(as_host=bool(is_host))
    except StoreError as e:
        raise RendezvousConnectionError(
            f"Cannot reach the rendezvous store at {address}: {e}"
        ) from e


def _create_file_store(params: RendezvousParameters, timeout: timedelta) -> FileStore:
    path = params.endpoint.strip() if params.endpoint else ""
    if not path:
        try:
            descriptor, path = tempfile.mkstemp(prefix="rdzv-store-")
        except OSError as e:
            raise RendezvousConnectionError(
                "Cannot create a temporary file for the rendezvous file store (the endpoint "
                f"is empty) in {tempfile.gettempdir()!r}: {e}. Give the path of a file that "
                "every node of this host can write as the endpoint, or point TMPDIR at a "
                "writable directory."
            ) from e
        os.close(descriptor)
    try:
        return FileStore(path, timeout=timeout)
    except (OSError, StoreError) as e:
        raise RendezvousConnectionError(
            f"Cannot open the rendezvous file store {path!r}: {e}. The endpoint of "
            "store_type=file is the path of a file that every node of this host can write."
        ) from e


def create_backend(params: RendezvousParameters) -> tuple[C10dRendezvousBackend, Store]:
    """The backend and its store for ``params`` (torch's function).

    Options:
        store_type: ``tcp`` (default) or ``file`` (one host, no ports; the endpoint
            is the file's path, a temporary file when empty).
        read_timeout: seconds any store operation may take (default 60), for the
            file store too. torch's file store always waits 300 s and ignores the
            option; rdzv keeps one meaning for it, so a timeout the user sets is
            the one that applies (``read_timeout=300`` gives torch's wait).
        is_host: whether this node hosts the TCP store. When not given, a node
            hosts if the endpoint's host is one of its own addresses (checked by
            binding to it, not by comparing hostnames) and the port is free; if
            another process of the host already serves the port, it connects.
        auth_token: shared secret of the TCP store (default ``$RDZV_AUTH_TOKEN``).
        connect_timeout: seconds to keep retrying a store that refuses connections
            (default 10, at most ``read_timeout``).

    ``None`` for ``read_timeout`` or ``store_type`` is refused (torch fails on it
    too); for ``is_host`` and ``connect_timeout`` it is the default.

    Raises:
        RendezvousOptionError: ``read_timeout`` or ``store_type`` given as ``None``.
        ValueError: an invalid option, named in the message.
        RendezvousConnectionError: the store cannot be reached or opened, or the
            temporary file of a file store without endpoint cannot be created.
    """
    refuse_none(params, "read_timeout", "store_type")
    read_timeout = params.get_as_float("read_timeout", 60)
    if read_timeout is None or read_timeout <= 0:
        raise ValueError(f"The rendezvous option 'read_timeout' ({read_timeout}) must be positive.")
    timeout = timedelta(seconds=read_timeout)
    store_type = str(params.get("store_type", "tcp")).strip().lower()
    store: Store
    if store_type == "tcp":
        store = _create_tcp_store(params, timeout)
    elif store_type == "file":
        store = _create_file_store(params, timeout)
    else:
        raise ValueError(
            f"The rendezvous option 'store_type' ({params.get('store_type')!r}) must be tcp "
            "or file."
        )
    return C10dRendezvousBackend(store, params.run_id), store


# create_c10d_handler moved to rdzv.dynamic.wiring, since a backend does not import the
# handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_c10d_handler": "rdzv.dynamic.wiring"})
