"""A real c10d backend whose answers come late: a node far from the TCP store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from rdzv.backends.base import Token, Unchanged
from rdzv.backends.c10d import C10dRendezvousBackend


class LateBackend(C10dRendezvousBackend):
    """Answers every request ``delay`` seconds late (a class setting) while the class's
    ``late`` is set: the request is made on time, and its answer comes back late."""

    delay: ClassVar[float] = 0.0
    late: ClassVar[bool] = False

    def _late(self) -> None:
        if type(self).late:
            time.sleep(type(self).delay)

    def get_state(self) -> tuple[bytes, Token] | None:
        answer = super().get_state()
        self._late()
        return answer

    def get_state_if_changed(self, token: Token) -> tuple[bytes, Token] | Unchanged | None:
        answer = super().get_state_if_changed(token)
        self._late()
        return answer

    def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool] | None:
        answer = super().set_state(state, token)
        self._late()
        return answer

    def wait_for_change(self, token: Token | None, timeout: float) -> tuple[bytes, Token] | None:
        answer = super().wait_for_change(token, timeout)
        self._late()
        return answer

    def post_intent(self, record: bytes, cursor: int) -> None:
        super().post_intent(record, cursor)
        self._late()

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        answer = super().read_intents(cursor)
        self._late()
        return answer

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        super().beat(name, record, ttl)
        self._late()

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        answer = super().read_beats(names)
        self._late()
        return answer
