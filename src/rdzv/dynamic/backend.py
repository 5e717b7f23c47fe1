"""The backend contract's former home, kept so that existing imports still work.

The contract (:class:`RendezvousBackend`, its fencing :data:`Token`, and the
optional :class:`IntentLog` and :class:`HeartbeatBoard`) lives in
:mod:`rdzv.backends.base`, below the handler that uses it; import it from there.
"""

from __future__ import annotations

from rdzv.backends.base import (
    HeartbeatBoard,
    IntentLog,
    RendezvousBackend,
    Token,
    decode_base64_state,
    encode_base64_state,
)

__all__ = [
    "HeartbeatBoard",
    "IntentLog",
    "RendezvousBackend",
    "Token",
    "decode_base64_state",
    "encode_base64_state",
]
