"""The ``etcd-v2`` backend: the rendezvous state under one etcd v2 key.

The value is base64 of the codec's bytes, written with a TTL that each write
renews (an abandoned run cleans itself up); the key's ``modifiedIndex`` is the
fencing token, and compare-and-set is etcd's ``prevIndex``/``prevExist``. A node
waiting for others watches the key from its token, so it wakes on the next write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import etcd

from rdzv._lazy import lazy_getattr
from rdzv.api import RendezvousConnectionError, RendezvousParameters, RendezvousStateError
from rdzv.backends.base import Token
from rdzv.core.intents import LOG_SEGMENT_SPAN
from rdzv.etcd.backend import EtcdKVBackend
from rdzv.etcd.kv import Entry, EtcdV2KV, v2_entry
from rdzv.etcd.v2_connect import ETCD_ERRORS, check_etcd_v2, connection_error, create_etcd_client
from rdzv.etcd.v2_dirs import V2Directories
from rdzv.store.etcd import EtcdStore

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_STORE_PREFIX",
    "EtcdRendezvousBackend",
    "create_backend",
    "etcd_prefixes",
]

DEFAULT_KEY_PREFIX = "/rdzv/rendezvous"
"""Where states live by default: not torch's ``/torch/elastic/rendezvous``, so an rdzv job
and a torch job with the same run id never overwrite each other's state."""
DEFAULT_STORE_PREFIX = "/rdzv/store"


_INDEX_LIMIT = LOG_SEGMENT_SPAN
"""A log position is ``segment * LOG_SEGMENT_SPAN + createdIndex`` of the last record read
(see :data:`rdzv.core.intents.LOG_SEGMENT_SPAN`), so an etcd index must stay below it.

etcd v2's index (``X-Etcd-Index``, the v2 store's) counts every v2 change the
cluster made since it was created (writes, deletes, TTL expiries) and never
resets. 2**40 is about 1.1e12: even at a sustained 10 000 v2 writes a second,
more than etcd takes (each write is a raft proposal), it would need 3.5 years
to get there, so in practice the index stays far below. An index that does
reach it is reported (:class:`RendezvousStateError`) rather than spilled into
the segment number. A cursor written before the log had segments (a bare etcd
index) reads as segment 0 from that index, which is what it meant.
"""


class EtcdRendezvousBackend(EtcdKVBackend):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>`` (torch's signature).

    Join intents are etcd's in-order keys in segment directories
    ``<key_prefix>/<run_id>.intents/<segment>/`` (0, 1, 2, ...); a log position is
    the segment and the creation index of the last record read in it. Once the
    state has admitted a whole segment of at least ``intent_segment_entries``
    records, the log moves on to the next directory and the older ones are
    deleted, so that reading the log costs the records still pending plus less
    than one segment, not every intent of the last :attr:`INTENT_TTL` seconds.
    Heartbeats are keys with a TTL under ``<key_prefix>/<run_id>.heartbeats/``,
    one per node.

    Args:
        client: the ``etcd.Client`` to use.
        run_id: the job's id.
        key_prefix: etcd directory of the key (default :data:`DEFAULT_KEY_PREFIX`).
        ttl: seconds the state outlives its last write (default two hours).
        intent_segment_entries: records a segment of the intent log holds before
            the log moves on to the next one (default 256).

    Raises:
        ValueError: an empty run id, a non-positive TTL or a segment size that is
            not positive.
    """

    INTENT_TTL = 300
    """Seconds an intent stays in etcd, a safety net: segments are deleted once
    admitted, and a node not admitted by then posts again."""
    DEFAULT_SEGMENT_ENTRIES = 256
    client_errors = ETCD_ERRORS

    def __init__(
        self,
        client: etcd.Client,
        run_id: str,
        key_prefix: str | None = None,
        ttl: int | None = None,
        *,
        intent_segment_entries: int = DEFAULT_SEGMENT_ENTRIES,
    ) -> None:
        prefix = DEFAULT_KEY_PREFIX if key_prefix is None else key_prefix
        super().__init__(EtcdV2KV(client), run_id, prefix, ttl)
        if intent_segment_entries <= 0:
            raise ValueError(
                f"The intent log segment size ({intent_segment_entries} entries) must be positive."
            )
        self._client = client
        self._intents_dir = f"{self._key}.intents"
        self._segment_entries = intent_segment_entries
        self._beats_dir = f"{self._key}.heartbeats"
        self._dirs = V2Directories(client, self._key)

    @property
    def name(self) -> str:
        return "etcd-v2"

    @property
    def _endpoint(self) -> str:
        return self._kv.endpoint

    def _connection_error(self, error: BaseException) -> RendezvousConnectionError:
        return connection_error(self._endpoint, error)

    def _state_text(self, value: bytes) -> str:
        return value.decode("utf-8")  # python-etcd's str, as the state was always read

    def _read(self) -> tuple[Entry | None, int | None]:
        """The state's key (``None`` when absent) and etcd's index at the read, if known."""
        try:
            entry, index = self._kv.read_to_watch(self._raw_key)
        except ETCD_ERRORS as e:
            raise connection_error(self._endpoint, e) from e
        return entry, None if index is None or index < 0 else index

    def _segment_dir(self, segment: int) -> str:
        return f"{self._intents_dir}/{segment}"

    @staticmethod
    def _split_cursor(cursor: int) -> tuple[int, int]:
        """The segment and the etcd index within it that log position ``cursor`` names."""
        if cursor < 0:
            raise ValueError(f"An intent log position cannot be negative ({cursor}).")
        segment, index = divmod(cursor, LOG_SEGMENT_SPAN)
        return segment, index

    def post_intent(self, record: bytes, cursor: int) -> None:
        """Append ``record`` to the segment that ``cursor`` names (see :class:`IntentLog`)."""
        path = self._segment_dir(self._split_cursor(cursor)[0])
        self._dirs.write(path, record.decode("utf-8"), path, ttl=self.INTENT_TTL, append=True)

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        """The records of the cursor's segment created after its index, in creation order.

        Only that segment's directory is read. When it holds at least
        ``intent_segment_entries`` records, all of them are read now, so the
        position returned is the start of the next segment, and the segments
        before this one are deleted: nobody needs them any more (a state that
        points into one is stale, and its compare-and-set fails). A record posted
        to this segment after this read is never admitted; its node sees that and
        posts again, at the position the state has then.

        Raises:
            RendezvousConnectionError: etcd cannot be reached.
            RendezvousStateError: a plain key stands where the log's directory
                belongs, or etcd's index outgrew the log positions.
        """
        segment, start = self._split_cursor(cursor)
        entries = self._dirs.files(self._segment_dir(segment))
        fresh = sorted((e.created, e.value) for e in entries if e.created > start)
        records = [(value or "").encode("utf-8") for _, value in fresh]
        last = fresh[-1][0] if fresh else start
        if last >= _INDEX_LIMIT:
            raise RendezvousStateError(
                f"The etcd at {self._endpoint} has reached index {last}, beyond the log "
                f"positions of the etcd-v2 backend (below 2**40) for the rendezvous state "
                f"{self._key}. Use the etcd-v3 backend, or an etcd cluster started afresh."
            )
        if len(entries) >= self._segment_entries:
            self._dirs.delete_numbered_below(self._intents_dir, segment)
            return records, (segment + 1) * LOG_SEGMENT_SPAN
        return records, segment * LOG_SEGMENT_SPAN + last

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        path = f"{self._beats_dir}/{name}"
        self._dirs.write(path, record.decode("ascii"), self._beats_dir, ttl=max(1, math.ceil(ttl)))

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        wanted = set(names)
        found: dict[str, bytes] = {}
        for entry in self._dirs.files(self._beats_dir):
            name = entry.key.rsplit("/", 1)[-1]
            if name in wanted and entry.value is not None:
                found[name] = entry.value.encode("utf-8", "replace")
        return found

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        """Watch the key for the first write after ``token`` (or its creation).

        The watch reports the value it fired on, which is returned so that the
        waiting node need not read it again.
        """
        if timeout <= 0:
            return None
        deadline = time.monotonic() + timeout
        wait_index = token + 1 if isinstance(token, int) else None
        if wait_index is None:
            # No state when the caller read: watching "from now" would miss one
            # created since, and the caller would sleep through its whole timeout
            # (a late admission could then miss the last call). Watch from a fresh read.
            current, index = self._read()
            if current is not None:
                return self._decode(current)
            wait_index = None if index is None else index + 1
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None  # (python-etcd would wait without end on 0, and raise below)
            options: dict[str, Any] = {"wait": True, "timeout": remaining}
            if wait_index is not None:
                options["waitIndex"] = wait_index
            try:
                event = self._client.read(self._key, **options)
            except etcd.EtcdEventIndexCleared:
                # etcd keeps only its last 1000 events, and a thousand intents and
                # heartbeats push a quiet state's index out of them: answering "read
                # again" then would spin. Watch from now on if the state has not moved.
                current, index = self._read()
                if current is None:
                    return None
                if current.version != token or deadline <= time.monotonic():
                    return self._decode(current)
                wait_index = None if index is None else index + 1
                continue
            except (etcd.EtcdWatchTimedOut, etcd.EtcdKeyNotFound):
                return None  # timed out, or the key went: read again
            except ETCD_ERRORS as e:
                raise connection_error(self._endpoint, e) from e
            if event.action in ("set", "create", "compareAndSwap", "update") and event.value:
                return self._decode(v2_entry(event))
            return None  # expired or deleted


def etcd_prefixes(params: RendezvousParameters) -> tuple[str, str]:
    """The key prefix of the state and of the store that ``etcd_prefix`` names.

    Default ``/rdzv``: the state at ``/rdzv/rendezvous/<run_id>``, the store under
    ``/rdzv/store``; ``etcd-v2`` and ``etcd-v3`` read the option alike.

    Raises:
        ValueError: ``etcd_prefix`` is not a path starting with ``/``.
    """
    prefix = params.get("etcd_prefix")
    if prefix is None:
        return DEFAULT_KEY_PREFIX, DEFAULT_STORE_PREFIX
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError(
            f"The rendezvous option 'etcd_prefix' ({prefix!r}) must be an etcd path starting "
            "with '/'."
        )
    root = prefix.rstrip("/")
    return f"{root}/rendezvous", f"{root}/store"


def create_backend(params: RendezvousParameters) -> tuple[EtcdRendezvousBackend, EtcdStore]:
    """The backend and the store for ``params`` (torch's function, rdzv's key prefixes).

    Options: those of :func:`rdzv.etcd.v2_connect.etcd_client_options`, plus
    ``etcd_prefix`` (default ``/rdzv``) under which the state
    (``<prefix>/rendezvous/<run_id>``) and the store (``<prefix>/store``) live,
    and ``ttl`` (seconds the state outlives its last write, default 7200).

    The state's key is read once here, so that a wrong endpoint, an etcd down or
    hung, missing credentials or an etcd without the v2 API fail the creation,
    within ``read_timeout``, rather than the first rendezvous (torch's client
    also contacts etcd when it is built).

    Raises:
        ValueError: an invalid option, named in the message.
        RendezvousConnectionError: etcd did not answer within ``read_timeout``,
            refused the read, or serves no v2 API; the message says what to do.
    """
    ttl = params.get_as_int("ttl")
    if ttl is not None and ttl <= 0:
        raise ValueError(f"The rendezvous option 'ttl' ({ttl}) must be positive.")
    key_prefix, store_prefix = etcd_prefixes(params)
    client = create_etcd_client(params)
    backend = EtcdRendezvousBackend(client, params.run_id, key_prefix=key_prefix, ttl=ttl)
    check_etcd_v2(client, backend.key)
    return backend, EtcdStore(client, store_prefix)


# create_etcd_v2_handler moved to rdzv.dynamic.wiring, since a backend does not import the
# handler; it stays importable from here and is imported when first asked for.
__getattr__ = lazy_getattr(__name__, {"create_etcd_v2_handler": "rdzv.dynamic.wiring"})
