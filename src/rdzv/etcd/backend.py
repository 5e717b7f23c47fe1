"""Both etcd backends, over :class:`~rdzv.etcd.kv.EtcdKV`.

:class:`~rdzv.backends.etcd.EtcdRendezvousBackend` (v2) and
:class:`~rdzv.backends.etcd_v3.EtcdV3RendezvousBackend` subclass
:class:`EtcdKVBackend`, which keeps the state of a run under one key: base64 of
the codec's bytes, written with a TTL that each write renews (an abandoned run
cleans itself up); the key's version is the fencing token, and compare-and-set
is the protocol's ``put_if``. A waiting node watches the key from its token.

Beside the state, in directories of the key-value protocol:

- the intent log, ``<key>.intents/<segment>/``: join intents in creation order;
  a log position is ``segment * LOG_SEGMENT_SPAN + creation index`` of the last
  record read. Once the state has admitted a whole segment of at least
  ``intent_segment_entries`` records, the log moves on to the next segment and
  the older ones are deleted, so that reading the log costs the records still
  pending plus less than one segment, not every intent of the last
  :attr:`EtcdKVBackend.INTENT_TTL` seconds;
- the heartbeats, ``<key>.heartbeats/<node>``, one per node, each with a TTL.

With heartbeats on their own keys, a stable round writes no state: each node's
beats renew the state's TTL now and then (:meth:`EtcdKVBackend.beat`), or it would
expire ``ttl`` after the round formed, and every launcher would restart its workers.

The subclasses add only their name, their client's errors and how they read.
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar

from rdzv.api import RendezvousConnectionError, RendezvousStateError
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
from rdzv.etcd.kv import Entry, EtcdKV, NotADirectory, watch_until
from rdzv.etcd.renewal import StateRenewal

__all__ = ["EtcdKVBackend"]


class EtcdKVBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """Holds the state of ``run_id`` at ``<key_prefix>/<run_id>``; subclassed per API.

    Raises:
        ValueError: an empty run id, a non-positive TTL or a segment size that is
            not positive.
    """

    DEFAULT_TTL = 7200
    """Seconds the state outlives its last write unless ``ttl`` says otherwise."""
    FEW_BEATS = 16
    """Up to this many names, :meth:`read_beats` reads their keys (v3: in one
    transaction; v2: a request each) rather than listing the whole board."""
    INTENT_TTL = 300
    """Seconds an intent stays in etcd at least, a safety net: segments are deleted
    once admitted, and a node not admitted by then posts again."""
    DEFAULT_SEGMENT_ENTRIES = 256
    client_errors: ClassVar[tuple[type[BaseException], ...]]
    """The client's errors, which :meth:`_connection_error` reports."""

    def __init__(
        self,
        kv: EtcdKV,
        run_id: str,
        key_prefix: str,
        ttl: int | None,
        intent_segment_entries: int = DEFAULT_SEGMENT_ENTRIES,
    ) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"The TTL of the rendezvous state ({ttl}) must be positive.")
        if intent_segment_entries <= 0:
            raise ValueError(
                f"The intent log segment size ({intent_segment_entries} entries) must be positive."
            )
        self._kv = kv
        self._key = f"{key_prefix.rstrip('/')}/{run_id}"
        self._raw_key = self._key.encode("utf-8")
        self._ttl = ttl or self.DEFAULT_TTL
        self._segment_entries = intent_segment_entries
        self._intents = f"{self._key}.intents".encode()
        self._beats = f"{self._key}.heartbeats".encode()
        self._renewal = StateRenewal(self._key, self._ttl)

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
        with self._requests():
            entry = self._kv.get(self._raw_key)
        return None if entry is None else self._decode(entry)

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        """On v3, one transaction with no value in its answer while the state is unchanged."""
        if not isinstance(token, int) or isinstance(token, bool) or token <= 0:
            return self.get_state()  # a malformed token names no state
        with self._requests():
            changed, entry = self._kv.get_if_changed(self._raw_key, token)
        if not changed:
            return UNCHANGED
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
        with self._requests():
            swap = self._kv.put_if(
                self._raw_key, encode_base64_state(state), expected, ttl=self._ttl
            )
        if swap.written:
            return bytes(state), swap.version, True
        if not swap.current_known:
            return self._current_state()
        return None if swap.current is None else (*self._decode(swap.current), False)

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        """Return the state once it is no longer the one ``token`` names (``None``: no state).

        The watch starts at the token, so no read comes first, and it reports the
        value it fired on, which is returned so that the waiting node need not
        read it again. A malformed token names no state: the current one is
        returned at once. On v3 the watch stays open for the next wait, until
        :meth:`release_waits`.
        """
        if timeout <= 0:
            return None
        valid = isinstance(token, int) and not isinstance(token, bool) and token > 0
        cursor = token if valid else None
        if token is not None and not valid:
            token = -1  # matches no version

        def moved(entry: Entry | None) -> bool:
            return (None if entry is None else entry.version) != token

        with self._requests():
            found, entry = watch_until(
                self._kv, self._raw_key, time.monotonic() + timeout, moved, cursor, keep=True
            )
        if not found or entry is None:
            return None  # timed out, or the key expired or was deleted: read again
        return self._decode(entry)

    def release_waits(self) -> None:
        """Close the watch of the state that waits kept open (v3; v2 keeps none)."""
        self._kv.release_watches()

    def post_intent(self, record: bytes, cursor: int) -> None:
        """Append ``record`` to the segment that ``cursor`` names (see :class:`IntentLog`)."""
        with self._requests():
            self._kv.append(self._segment(_segment_of(cursor)), record, ttl=self._intent_ttl())

    def _intent_ttl(self) -> float:
        """Seconds an intent is written to live (:attr:`INTENT_TTL`)."""
        return self.INTENT_TTL

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        """The records of the cursor's segment created after its index, in creation order.

        Only that segment is read. When it holds at least ``intent_segment_entries``
        records, all of them are read now, so the position returned is the start
        of the next segment, and the segments before this one are deleted: nobody
        needs them any more (a state that points into one is stale, and its
        compare-and-set fails). A record posted to this segment after this read
        is never admitted; its node sees that and posts again, at the position
        the state has then.

        Raises:
            RendezvousConnectionError: etcd cannot be reached.
            RendezvousStateError: a plain key stands where the log's directory
                belongs, or etcd's index outgrew the log positions.
        """
        segment = _segment_of(cursor)
        start = cursor - segment * LOG_SEGMENT_SPAN
        with self._requests():
            listed = self._kv.list_dir(self._segment(segment))
        fresh = sorted((item.created, item.value) for item in listed if item.created > start)
        last = fresh[-1][0] if fresh else start
        if last >= LOG_SEGMENT_SPAN:
            raise RendezvousStateError(
                f"The etcd at {self._kv.endpoint} has reached revision {last}, beyond the log "
                f"positions of rdzv's etcd backends (below 2**40) for the rendezvous state "
                f"{self._key}. Use an etcd cluster started afresh."
            )
        records = [value for _, value in fresh]
        if len(listed) >= self._segment_entries:
            with self._requests():
                self._kv.delete_dirs_below(self._intents, segment)
            return records, (segment + 1) * LOG_SEGMENT_SPAN
        return records, segment * LOG_SEGMENT_SPAN + last

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        """Write the record; and, every eighth to quarter of a TTL, renew the state's TTL.

        A stable round writes no state, so its nodes keep it alive: while one of them
        beats, the state does not expire; once none does, it expires as it would
        after its last write. A failed renewal does not fail the beat: it is tried
        again at the next one, and logged once until one succeeds.
        """
        with self._requests():
            self._kv.put(self._beat_key(name), record, ttl=ttl)
        if self._renewal.due():
            self._renewal.renew(self._renew_state)

    def _renew_state(self) -> None:
        with self._requests():
            self._kv.renew(self._raw_key, self._ttl)

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        """Up to :attr:`FEW_BEATS` names, their keys are read; more, the board is listed.

        A node checks only the suspects it has (usually one or two): a listing of
        the whole board for them would make every check cost the size of the job.
        """
        if len(names) <= self.FEW_BEATS:
            with self._requests():
                entries = self._kv.get_many([self._beat_key(name) for name in names])
            return {
                name: entry.value
                for name, entry in zip(names, entries, strict=True)
                if entry is not None and entry.value is not None
            }
        with self._requests():
            listed = self._kv.list_dir(self._beats)
        wanted = set(names)
        found: dict[str, bytes] = {}
        for item in listed:
            name = item.key.rsplit(b"/", 1)[-1].decode("utf-8", "replace")
            if name in wanted:
                found[name] = item.value
        return found

    @contextlib.contextmanager
    def _requests(self) -> Iterator[None]:
        """Report the client's errors as the backend's."""
        try:
            yield
        except NotADirectory as e:
            raise self._not_a_directory(e.path) from e
        except self.client_errors as e:
            raise self._connection_error(e) from e

    def _not_a_directory(self, path: str) -> RendezvousStateError:
        endpoint = self._kv.endpoint
        return RendezvousStateError(
            f"The etcd key {path} at {endpoint} is a plain key, but rdzv keeps a "
            "directory there (of join intents or heartbeats) for the rendezvous state "
            f"{self._key}. Something else wrote it; delete it (e.g. `curl -X DELETE "
            f"{endpoint}/v2/keys{path}`) and start the nodes again."
        )

    def _segment(self, segment: int) -> bytes:
        return self._intents + b"/" + str(segment).encode()

    def _beat_key(self, name: str) -> bytes:
        return self._beats + b"/" + name.encode("utf-8")

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


def _segment_of(cursor: int) -> int:
    if cursor < 0:
        raise ValueError(f"An intent log position cannot be negative ({cursor}).")
    return cursor // LOG_SEGMENT_SPAN
