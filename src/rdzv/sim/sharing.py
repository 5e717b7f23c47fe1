"""A codec for large simulations: every node shares one object per written state.

With the real codec each node decodes its own copy of every state it reads: at a
hundred thousand nodes that is the whole cost of a simulation, and it says nothing
about the protocol. Here a written state becomes a short handle that names it, and
reading returns the same object to everyone; the bytes a real backend would move
are still counted, from the size of the real encoding (computed once per state).
"""

from __future__ import annotations

import collections

from rdzv.core import RendezvousState, encode_state
from rdzv.dynamic.perform import StateCodec

__all__ = ["SharedStates"]


class SharedStates:
    """Handles for states, and their real encoded sizes.

    Only the most recent ``keep`` states are kept: the backend holds one, and the
    replies in flight a few more.
    """

    def __init__(self, keep: int = 256) -> None:
        self._states: collections.OrderedDict[bytes, RendezvousState] = collections.OrderedDict()
        self._sizes: dict[int, int] = {}
        """id(state) -> size, for the states kept (so that an id names one state)."""
        self._keep = keep
        self._next = 0
        self.stored = b""
        """The handle the backend holds now (see :class:`rdzv.sim.backend.SimBackend`)."""

    def encode(self, state: RendezvousState) -> bytes:
        self._next += 1
        handle = b"#%d" % self._next
        self._states[handle] = state
        while len(self._states) > self._keep:
            oldest, old = self._states.popitem(last=False)
            if oldest == self.stored:
                self._states[oldest] = old  # the backend's value is never forgotten
                self._states.move_to_end(oldest)
                continue
            self._sizes.pop(id(old), None)
        return handle

    def keep_stored(self, data: bytes) -> None:
        """The backend now holds ``data``: it must stay decodable."""
        self.stored = data

    def decode(self, data: bytes) -> RendezvousState:
        return self._states[data]

    def size(self, data: bytes) -> int:
        """The length of the real encoding of the state ``data`` names."""
        state = self._states.get(data)
        return len(data) if state is None else self.size_of(state)

    def size_of(self, state: RendezvousState) -> int:
        """The length of the real encoding of ``state`` (encoded once while it is kept)."""
        size = self._sizes.get(id(state))
        if size is None:
            size = len(encode_state(state))
            if any(kept is state for kept in reversed(self._states.values())):
                self._sizes[id(state)] = size
        return size

    @property
    def codec(self) -> StateCodec:
        return StateCodec(self.encode, self.decode)
