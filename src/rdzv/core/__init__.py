"""The functional core: rendezvous state, decisions and transitions, all pure.

Nothing here reads a clock, does I/O, starts a thread or logs; the shell in
:mod:`rdzv.dynamic` does those and feeds the results in. Nothing here imports
from the shell.
"""

from rdzv.core.codec import decode_state, encode_state
from rdzv.core.decisions import (
    ROLLBACK_PERIOD,
    Action,
    deadline_after,
    decide_close,
    decide_exit,
    decide_join,
    decide_keep_alive,
    decide_leave,
    decide_rejoin,
    next_wakeup,
    should_keep_alive,
)
from rdzv.core.liveness import dead_nodes, drop_dead_nodes, num_nodes_waiting
from rdzv.core.model import NodeDesc, RendezvousSettings, RendezvousState, RendezvousTimeout
from rdzv.core.transitions import IllegalTransitionError, apply_action

__all__ = [
    "ROLLBACK_PERIOD",
    "Action",
    "IllegalTransitionError",
    "NodeDesc",
    "RendezvousSettings",
    "RendezvousState",
    "RendezvousTimeout",
    "apply_action",
    "dead_nodes",
    "deadline_after",
    "decide_close",
    "decide_exit",
    "decide_join",
    "decide_keep_alive",
    "decide_leave",
    "decide_rejoin",
    "decode_state",
    "drop_dead_nodes",
    "encode_state",
    "next_wakeup",
    "num_nodes_waiting",
    "should_keep_alive",
]
