"""A backend in virtual time: the state, the intent log in segments, the heartbeat board.

It implements the same contract as the real backends (:class:`RendezvousBackend`,
:class:`IntentLog`, :class:`HeartbeatBoard`), so the shell's own
:func:`rdzv.dynamic.perform.perform` runs against it. A call takes no time here:
the simulation decides *when* the server applies each request (see
:mod:`rdzv.sim.world`). The log rolls over into segments as the c10d and etcd-v2
logs do, so a post with a stale cursor can land in a segment nobody reads again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from rdzv.backends.base import (
    UNCHANGED,
    HeartbeatBoard,
    IntentLog,
    RendezvousBackend,
    Token,
    Unchanged,
)
from rdzv.core.intents import LOG_SEGMENT_SPAN, segment_of

__all__ = ["SimBackend", "Traffic"]


@attrs.define
class Traffic:
    """Requests and bytes, counted as a real backend would see them."""

    requests: int = 0
    writes: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    lost_writes: int = 0
    records_read: int = 0
    """Intent log records read: what a join costs the nodes that read the log."""
    beats_asked: int = 0
    """Heartbeat records asked for on the board: what liveness checks cost."""

    def add(self, *, write: bool = False, written: int = 0, read: int = 0) -> None:
        self.requests += 1
        self.writes += write
        self.bytes_written += written
        self.bytes_read += read


class SimBackend(RendezvousBackend, IntentLog, HeartbeatBoard):
    """One run's state (bytes and a version token), log and board, as a server holds them.

    Args:
        segment_records: records a log segment holds before the log moves on once
            the state has admitted all of it (small, so that runs roll over).
        reconnect_window: what :attr:`reconnect_window` reports to the nodes.
    """

    def __init__(
        self,
        *,
        segment_records: int = 8,
        reconnect_window: float = 5.0,
        size: Callable[[bytes], int] = len,
        stored: Callable[[bytes], None] | None = None,
    ) -> None:
        self.value: bytes | None = None
        self.size = size
        """The bytes a stored value stands for (see :mod:`rdzv.sim.sharing`)."""
        self._stored = stored
        self.version = 0
        self.segments: dict[int, list[bytes]] = {}
        self.beats: dict[str, bytes] = {}
        self.traffic = Traffic()
        self._segment_records = segment_records
        self._window = reconnect_window

    @property
    def name(self) -> str:
        return "sim"

    @property
    def reconnect_window(self) -> float:
        return self._window

    @property
    def token(self) -> Token | None:
        """The current version's token (``None`` while there is no state)."""
        return None if self.value is None else self.version

    def get_state(self) -> tuple[bytes, Token] | None:
        self.traffic.add(read=self.size(self.value or b""))
        return None if self.value is None else (self.value, self.version)

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        if self.value is not None and token == self.version:
            self.traffic.add(read=0)
            return UNCHANGED
        return self.get_state()

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        self.traffic.add(write=True, written=self.size(state))
        if token == self.token:
            self.value, self.version = state, self.version + 1
            if self._stored is not None:
                self._stored(state)
            return state, self.version, True
        self.traffic.lost_writes += 1
        self.traffic.bytes_read += self.size(self.value or b"")
        return None if self.value is None else (self.value, self.version, False)

    def post_intent(self, record: bytes, cursor: int) -> None:
        self.traffic.add(write=True, written=len(record))
        self.segments.setdefault(segment_of(cursor), []).append(record)

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        segment, offset = divmod(cursor, LOG_SEGMENT_SPAN)
        records = self.segments.get(segment, [])
        fresh = records[offset:]
        self.traffic.add(read=sum(map(len, fresh)))
        self.traffic.records_read += len(fresh)
        if len(records) >= self._segment_records:
            # Read to its end and full: the log goes on in the next segment.
            self.segments.pop(segment - 1, None)
            return fresh, (segment + 1) * LOG_SEGMENT_SPAN
        return fresh, max(cursor, segment * LOG_SEGMENT_SPAN + len(records))

    def log_bytes(self, cursor: int) -> int:
        """The bytes a read of the log from ``cursor`` returns (a look, not a read)."""
        segment, offset = divmod(cursor, LOG_SEGMENT_SPAN)
        return sum(map(len, self.segments.get(segment, [])[offset:]))

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self.traffic.add(write=True, written=len(record))
        self.beats[name] = record

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        found = {name: self.beats[name] for name in names if name in self.beats}
        self.traffic.beats_asked += len(names)
        self.traffic.add(read=sum(map(len, found.values())))
        return found
