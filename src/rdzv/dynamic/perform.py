"""Performing one effect of the protocol against a backend, and what a node remembers.

:func:`perform` carries out every effect that does not wait: it is the whole I/O
of the protocol, shared by the executor (real backends, real time) and the
simulator (a simulated backend, virtual time). Waiting effects
(:class:`~rdzv.core.effects.WaitForChange`, :class:`~rdzv.core.effects.Sleep`)
are left to the caller, which knows what time is.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs

from rdzv.backends.base import UNCHANGED, HeartbeatBoard, IntentLog, RendezvousBackend, Token
from rdzv.core import decode_state, encode_state
from rdzv.core.effects import (
    BeatsRead,
    BeatWritten,
    Changed,
    CompareAndSet,
    Effect,
    LogRead,
    Outcome,
    Post,
    Posted,
    ReadBeats,
    ReadLog,
    ReadState,
    Snapshot,
    StateRead,
    WriteBeat,
    Written,
)
from rdzv.core.intents import decode_beat, decode_records, encode_beat, encode_record
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState

__all__ = ["STATE_CODEC", "Memory", "StateCodec", "perform", "snapshot_of"]


LAG_FLOOR = 0.05
"""Seconds under which a request's time is not kept as the backend's lag: a loopback
request takes a millisecond, and a heartbeat expiry is seconds."""

_decoding = threading.Lock()
_recent: dict[bytes, RendezvousState] = {}
_RECENT = 4


def decode_once(data: bytes) -> RendezvousState:
    """:func:`~rdzv.core.decode_state`, once per process for the same bytes.

    The last :data:`_RECENT` states decoded are kept: a thousand nodes of one
    process woken by the same write would otherwise each decode the state (15 ms
    at 4,096 nodes), and all at the same moment. Only a miss takes the lock, so
    that the others find what the first decoded; a hit takes no lock, whose
    hand-off from thread to thread would cost a GIL switch each. Each decode is
    bounded work, so the wait for the lock is bounded too.
    """
    state = _recent.get(data)
    if state is None:
        with _decoding:
            state = _recent.get(data)
            if state is None:
                state = decode_state(data)
                if len(_recent) >= _RECENT:
                    _recent.pop(next(iter(_recent)))
                _recent[data] = state
    return state


@attrs.frozen
class StateCodec:
    """How states become the bytes a backend stores, and back (the simulator swaps it)."""

    encode: Callable[[RendezvousState], bytes] = encode_state
    decode: Callable[[bytes], RendezvousState] = decode_once


STATE_CODEC = StateCodec()


def snapshot_of(
    result: tuple[bytes, Token] | None, codec: StateCodec = STATE_CODEC
) -> Snapshot | None:
    """A backend's ``(bytes, token)`` as a :class:`Snapshot` (``None`` stays ``None``).

    Raises:
        RendezvousStateError: the bytes are not a state.
    """
    if result is None:
        return None
    data, token = result
    return Snapshot(codec.decode(data), token)


def perform(
    effect: Effect,
    backend: RendezvousBackend,
    node: NodeDesc,
    settings: RendezvousSettings,
    codec: StateCodec = STATE_CODEC,
    known: Snapshot | None = None,
) -> Outcome:
    """Carry out ``effect``, which must not wait, and return its outcome.

    ``known`` is the last state the node saw: a read asks the backend only whether
    it changed, and takes ``known`` again if it did not (a launcher's polls read
    a state that rarely moves).

    Raises:
        RendezvousConnectionError: the backend cannot be reached.
        RendezvousStateError: the backend holds something that is not a state.
        TypeError: ``effect`` waits, ends the operation, or needs a capability the
            backend lacks (the protocol never asks for one).
    """
    if isinstance(effect, ReadState):
        if known is None or known.token is None:
            return StateRead(snapshot_of(backend.get_state(), codec))
        fresh = backend.get_state_if_changed(known.token)
        return StateRead(known if fresh is UNCHANGED else snapshot_of(fresh, codec))
    if isinstance(effect, CompareAndSet):
        result = backend.set_state(codec.encode(effect.state), effect.token)
        if result is None:
            return Written(None, False)
        data, token, written = result
        # What we wrote needs no decoding; what someone else wrote does.
        state = effect.state if written else codec.decode(data)
        return Written(Snapshot(state, token), written)
    if isinstance(effect, Post) and isinstance(backend, IntentLog):
        backend.post_intent(encode_record(effect.record), effect.cursor)
        return Posted()
    if isinstance(effect, ReadLog) and isinstance(backend, IntentLog):
        chunks, end = backend.read_intents(effect.cursor)
        records, bad = decode_records(chunks)
        return LogRead(records, end, bad)
    if isinstance(effect, WriteBeat) and isinstance(backend, HeartbeatBoard):
        # The record may vanish once the node would count as dead anyway.
        backend.beat(str(node), encode_beat(effect.at), 2 * settings.heartbeat_expiry)
        return BeatWritten()
    if isinstance(effect, ReadBeats) and isinstance(backend, HeartbeatBoard):
        names = {str(n): n for n in effect.nodes}
        found = backend.read_beats(sorted(names))
        beats = {
            names[name]: beat
            for name, record in found.items()
            if name in names and (beat := decode_beat(record)) is not None
        }
        return BeatsRead(beats)
    raise TypeError(f"{type(effect).__name__} is not an effect to perform on {backend.name}.")


class Memory:
    """What one node remembers across operations: the last state seen and the heartbeats
    observed outside it (its own on the board, and those read from the board).

    Updated by whole replacement, so that a reader in another thread always sees a
    consistent mapping; the heartbeats under a lock, as a node's beats and its join
    both add to them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = Snapshot(RendezvousState(), None)
        self.observed: MappingProxyType[NodeDesc, float] = MappingProxyType({})
        self.checked: MappingProxyType[NodeDesc, float] = MappingProxyType({})
        """When the node last read each node's record on the board (its own clock)."""
        self._lags: collections.deque[tuple[float, float]] = collections.deque()
        """(end, seconds) of the requests that took :data:`LAG_FLOOR` or longer, oldest first."""

    def update(self, node: NodeDesc, effect: Effect, outcome: Outcome) -> None:
        """Take in what ``effect`` returned."""
        snapshot = getattr(outcome, "snapshot", None)
        if isinstance(outcome, StateRead | Written | Changed) and snapshot is not None:
            self.last = snapshot
        elif isinstance(outcome, BeatWritten) and isinstance(effect, WriteBeat):
            self._observe({node: effect.at})
        elif isinstance(outcome, BeatsRead) and isinstance(effect, ReadBeats):
            # Dated when asked: when the answer was handled, the records may be old news.
            self._observe(outcome.beats, dict.fromkeys(effect.nodes, effect.at))

    def _observe(
        self, beats: Mapping[NodeDesc, float], asked: Mapping[NodeDesc, float] | None = None
    ) -> None:
        with self._lock:
            seen = self.observed
            fresher = {n: b for n, b in beats.items() if b > seen.get(n, -float("inf"))}
            if fresher:
                self.observed = MappingProxyType({**seen, **fresher})
            if asked:
                self.checked = MappingProxyType({**self.checked, **asked})

    def took(self, end: float, seconds: float) -> None:
        """A request to the backend ended (answered, or failed) at ``end`` after ``seconds``."""
        if seconds < LAG_FLOOR:
            return
        with self._lock:
            self._lags.append((end, seconds))

    def lag(self, now: float, window: float) -> float:
        """The longest a request took of those that ended within ``window`` before ``now``."""
        with self._lock:
            lags = self._lags
            while lags and lags[0][0] < now - window:
                lags.popleft()
            return max((seconds for _, seconds in lags), default=0.0)

    def last_heartbeat(self, node: NodeDesc) -> float | None:
        """When ``node`` last sent a heartbeat, as far as this memory knows."""
        beats = [self.last.state.last_heartbeats.get(node), self.observed.get(node)]
        return max((b for b in beats if b is not None), default=None)
