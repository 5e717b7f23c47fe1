"""Following one run's rendezvous: read, derive the events, wait for the next change.

The :class:`Watcher` reads the state, derives the events since its last read
(:func:`rdzv.core.events.events_between`) and then blocks in the backend's own
change notification (``wait_for_change``: an etcd watch, the TCP store's wait)
until the state moves. It never polls the state. What nodes keep outside the
state (their heartbeats on the board, joins not yet admitted in the log) has no
notification; the watcher reads both when the state changes and once per
``refresh`` (the keep-alive interval by default), so that heartbeat ages stay
current: one board read and one log read per interval, whatever the size of
the job.

It writes nothing. A state that does not decode, no state, an unreachable backend:
each is reported (a :class:`WatchStatus` and the next :class:`Snapshot`) and the
watcher goes on; it waits for the bad value to change, and retries an
unreachable backend with a growing pause up to ``refresh``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rdzv.api import RendezvousConnectionError, RendezvousStateError
from rdzv.backends.base import Token
from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState, decode_state
from rdzv.core.events import Event, events_between
from rdzv.core.intents import JoinIntent, merge_heartbeats
from rdzv.watching.reading import read_board, read_pending
from rdzv.watching.records import LastRound, Snapshot, Status, WatchItem, WatchStatus
from rdzv.watching.source import Source

__all__ = ["Watcher"]

_FIRST_RETRY = 0.5
_SHORTEST_WAIT = 0.05
LONGEST_WAIT = 5.0
"""Longest single wait for a change: :meth:`Watcher.stop` takes effect within it (a wait
in flight is not interrupted), whatever the refresh period."""


class _Stopped(Exception):
    """The watcher was stopped before it opened its source."""


class Watcher:
    """Yields events, status changes and snapshots of one run until :meth:`stop`.

    Iterate it (in one thread); :meth:`stop` may be called from any thread and
    ends the iteration within :data:`LONGEST_WAIT` or ``refresh`` seconds,
    whichever is shorter (a wait for a change in flight is not interrupted), or
    the backend's request timeout. A snapshot follows every change; with no
    change, one per ``refresh``.

    Raises (from iteration):
        ValueError: an invalid option, found when the backend is opened.
        ImportError: ``etcd-v3`` without its extra.
    """

    def __init__(
        self,
        opener: Callable[[], Source],
        settings: RendezvousSettings,
        where: str,
        *,
        refresh: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._opener = opener
        self._source: Source | None = None
        self.settings = settings
        self.where = where
        self._refresh = refresh or settings.keep_alive_interval.total_seconds()
        self._clock = clock
        self._stopped = threading.Event()
        self._status: Status | None = None
        self._message: str | None = None
        self._state: RendezvousState | None = None
        self._token: Token | None = None
        self._fetched: tuple[bytes, Token] | None = None
        self._beats: dict[NodeDesc, float] = {}
        self._known_at: float | None = None  # until when self._state was known to hold
        self._pending: tuple[JoinIntent, ...] = ()
        self._last_round = LastRound()
        self._retry = _FIRST_RETRY
        self._next_refresh = 0.0

    @property
    def refresh(self) -> float:
        """Seconds between two reads of heartbeats and pending joins, with no change."""
        return self._refresh

    def stop(self) -> None:
        """End the iteration (from any thread)."""
        self._stopped.set()

    def close(self) -> None:
        """Stop and release the backend's connection."""
        self.stop()
        self._release()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchItem]:
        try:
            while not self._stopped.is_set():
                yield from self._look()
                if not self._stopped.is_set():
                    self._wait()
        finally:  # also when the caller breaks out of its loop
            self._release()

    # -- one look --------------------------------------------------------------------

    def _look(self) -> Iterator[WatchItem]:
        now = self._clock()
        due = time.monotonic() >= self._next_refresh
        try:
            source = self._open()
            events = self._read(source, now, due)
        except _Stopped:
            return
        except RendezvousConnectionError as e:
            events = ()
            self._set_status("unreachable", f"{e} The watcher tries again every few seconds.")
            self._release()  # reconnect from scratch once the backend is back
            due = True
        if self._status_changed:
            self._status_changed = False
            yield WatchStatus(now, self._status or "ok", self._message)
        yield from events
        if events or due or self._status != "ok":
            if due:
                self._next_refresh = time.monotonic() + self._refresh
            yield self.snapshot(now)

    def _release(self) -> None:
        source, self._source, self._fetched = self._source, None, None
        if source is not None:
            source.close()

    def _open(self) -> Source:
        if self._stopped.is_set():  # closed from another thread: open nothing it would leak
            raise _Stopped
        if self._source is None:
            self._source = self._opener()
        return self._source

    def _read(self, source: Source, now: float, due: bool) -> tuple[Event, ...]:
        fetched, self._fetched = self._fetched, None
        try:
            if fetched is None:
                fetched = source.backend.get_state()
            state = None if fetched is None else decode_state(fetched[0])
        except RendezvousStateError as e:
            self._token = fetched[1] if fetched is not None else source.raw_token()
            self._set_status(
                "corrupt", f"{source.where}: {e} The watcher shows the state once it decodes."
            )
            return ()
        if fetched is None or state is None:
            self._token = None
            if due:
                self._pending = read_pending(source.backend, RendezvousState())
            self._set_status(
                "no_state", _no_state_message(self.settings.run_id, self.where, self._pending)
            )
            return ()
        changed = fetched[1] != self._token or self._state is None or self._status != "ok"
        self._token = fetched[1]
        events: tuple[Event, ...] = ()
        if changed or due:
            before = self._state
            gone = frozenset() if before is None else before.members() - state.members()
            self._observe(source, state.members() | gone)
            if changed:
                events = events_between(
                    before,
                    state,
                    at=now,
                    expiry=self._expiry,
                    beats=self._beats,
                    before_at=self._known_at,
                )
                self._state = state
                self._last_round = self._last_round.after(events)
            self._pending = read_pending(source.backend, state)
        self._known_at = now
        self._set_status("ok", None)
        return events

    def _observe(self, source: Source, nodes: frozenset[NodeDesc]) -> None:
        seen = read_board(source.backend, nodes)
        # A record gone from the board (a restarted store) keeps its earlier reading.
        kept = {n: b for n, b in self._beats.items() if n in nodes}
        self._beats = kept | {n: max(b, kept.get(n, b)) for n, b in seen.items()}

    @property
    def _expiry(self) -> float:
        return self.settings.heartbeat_expiry

    _status_changed = False

    def _set_status(self, status: Status, message: str | None) -> None:
        """Note a status or message that differs from the last (the first ``ok`` is no news)."""
        if (status, message) != (self._status, self._message):
            self._status_changed = not (self._status is None and status == "ok")
            self._status, self._message = status, message
        if status != "unreachable":
            self._retry = _FIRST_RETRY

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The picture now: the last state read with the board's heartbeats, and the rest."""
        state = self._state
        if state is not None and self._beats:
            state = merge_heartbeats(state, self._beats)
        return Snapshot(
            self._clock() if now is None else now,
            self.settings.run_id,
            self.where if self._source is None else self._source.where,
            self.settings,
            self._status or "ok",
            self._message,
            state,
            self._pending,
            self._last_round.completed,
            self._last_round.gone,
        )

    # -- waiting ---------------------------------------------------------------------

    def _wait(self) -> None:
        if self._status == "unreachable" or self._source is None:
            self._stopped.wait(self._retry)
            self._retry = min(self._retry * 2, self._refresh)
            return
        timeout = max(min(self._next_refresh - time.monotonic(), LONGEST_WAIT), _SHORTEST_WAIT)
        try:
            self._fetched = self._source.backend.wait_for_change(self._token, timeout)
        except (RendezvousConnectionError, RendezvousStateError):
            self._fetched = None  # the next read says what it is
            return
        if self._status == "ok":
            self._known_at = self._clock()  # unchanged until the wait ended


def _no_state_message(run_id: str, where: str, pending: tuple[JoinIntent, ...]) -> str:
    waiting = f" {len(pending)} join(s) are pending." if pending else ""
    return (
        f"There is no rendezvous state for run id '{run_id}' ({where}): "
        "no round has formed yet, the state expired (etcd TTL), or the c10d store was "
        f"restarted.{waiting} Check the run id and the endpoint; the watcher shows the "
        "round as soon as one forms."
    )
