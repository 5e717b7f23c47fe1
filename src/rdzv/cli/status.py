"""``rdzv status``: what a rendezvous looks like right now, read without joining it.

The report is built by pure functions of ``(reading, settings, now)``:
:func:`describe` gives the JSON document (its shape is stable, see
docs/operations.rst) and :func:`format_text` renders that document for people,
so the two never disagree. The command only reads the backend and prints.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import attrs

from rdzv.api import RendezvousConnectionError, RendezvousStateError
from rdzv.backends.base import HeartbeatBoard, RendezvousBackend, Token
from rdzv.cli._common import (
    CommandError,
    ExitStatus,
    Output,
    add_common_arguments,
    non_negative_int,
    positive_float,
)
from rdzv.cli._target import (
    add_keep_alive_arguments,
    add_target_arguments,
    open_target,
)
from rdzv.core import (
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    dead_nodes,
    decode_state,
    drop_dead_nodes,
    num_nodes_waiting,
)
from rdzv.core.intents import JoinIntent, decode_beat, merge_heartbeats
from rdzv.watching import reading
from rdzv.watching.source import Source

__all__ = [
    "FORMAT_VERSION",
    "Reading",
    "add_parser",
    "describe",
    "describe_state",
    "format_text",
    "read_pending",
    "read_state",
    "run_once",
]

FORMAT_VERSION = 1
"""Version of the ``--json`` document; it changes only when a field changes meaning or goes."""

DEFAULT_PAGE_PORT = 8229

EPILOG = """\
examples:
  rdzv status --backend c10d --endpoint node0:29400 --run-id job42
  rdzv status --backend etcd-v2 --endpoint etcd1:2379 --run-id job42 --json
  rdzv status --backend c10d --endpoint node0:29400 --run-id job42 --watch
  rdzv status --backend etcd-v2 --endpoint etcd1:2379 --run-id job42 --watch --json
  rdzv status --backend c10d --endpoint node0:29400 --run-id job42 --serve --port 8229

exit status: 0 the state was shown, 3 the state does not decode (the reason is
printed), 4 there is no state for this run id, 1 the backend cannot be reached,
2 a mistake on the command line. With --watch or --serve: 0 when stopped by
Ctrl-C or SIGTERM (a backend that cannot be read is shown, and watched on).
"""


@attrs.frozen
class Reading:
    """What one read of the backend found.

    Attributes:
        state: the decoded state, or ``None``.
        error: why the stored value does not decode, or ``None``. Both ``None``:
            the backend holds no state for the run.
        token: the fencing token of what was read (``None`` without a state).
    """

    state: RendezvousState | None
    error: str | None = None
    token: Token | None = None
    pending: tuple[JoinIntent, ...] = ()
    """Join intents no state has admitted yet (see :func:`read_pending`)."""

    @property
    def result(self) -> str:
        """``"ok"``, ``"no_state"`` or ``"corrupt"``."""
        if self.state is not None:
            return "ok"
        return "corrupt" if self.error is not None else "no_state"


def read_state(target: Source) -> Reading:
    """Read and decode the state; a value that does not decode is a reading, not an error.

    Raises:
        CommandError: the backend cannot be reached.
    """
    try:
        result = target.backend.get_state()
    except RendezvousStateError as e:
        return Reading(None, str(e))
    except RendezvousConnectionError as e:
        raise CommandError(str(e)) from e
    if result is None:
        return Reading(None, pending=read_pending(target.backend, RendezvousState()))
    data, token = result
    try:
        state = decode_state(data)
    except RendezvousStateError as e:
        return Reading(None, str(e), token)
    pending = read_pending(target.backend, state)
    return Reading(_with_heartbeat_records(target.backend, state), token=token, pending=pending)


def read_pending(backend: RendezvousBackend, state: RendezvousState) -> tuple[JoinIntent, ...]:
    """The join intents after the state's cursor that would still place their node.

    The nodes of a round that cannot reach ``min_nodes`` yet wait there, outside
    the state (see :func:`rdzv.core.intents.should_hold`): without them a job whose
    nodes are still arriving would look empty (see :func:`rdzv.watching.reading.read_pending`).

    Raises:
        CommandError: the backend cannot be reached.
    """
    try:
        return reading.read_pending(backend, state)
    except RendezvousConnectionError as e:
        raise CommandError(str(e)) from e


def _with_heartbeat_records(backend: object, state: RendezvousState) -> RendezvousState:
    """The state with the heartbeats that nodes keep outside it (see rdzv.core.intents).

    Without them a healthy node would show the age of its join, and look dead.

    Raises:
        CommandError: the backend cannot be reached.
    """
    if not isinstance(backend, HeartbeatBoard):
        return state
    members = {str(node): node for node in state.members()}
    try:
        records = backend.read_beats(sorted(members))
    except RendezvousConnectionError as e:
        raise CommandError(str(e)) from e
    observed = {
        members[name]: beat
        for name, record in records.items()
        if (beat := decode_beat(record)) is not None
    }
    return merge_heartbeats(state, observed)


def _node(
    node: NodeDesc, state: RendezvousState, now: float, dead: frozenset[NodeDesc]
) -> dict[str, Any]:
    beat = state.last_heartbeats[node]
    return {
        "node": str(node),
        "addr": node.addr,
        "pid": node.pid,
        "local_id": node.local_id,
        "last_heartbeat": beat,
        "heartbeat_age": round(now - beat, 3),
        "dead": node in dead,
    }


def describe_state(
    state: RendezvousState, settings: RendezvousSettings, now: float
) -> dict[str, Any]:
    """The ``state`` object of the JSON document (documented in docs/operations.rst).

    Nodes whose heartbeat is older than ``settings.heartbeat_expiry`` at ``now``
    are listed as dead; ``num_nodes_waiting`` is what the nodes compute, on the
    state without its dead nodes.
    """
    dead = dead_nodes(state, settings, now)
    dead_set = frozenset(dead)
    if state.complete:
        ordered = sorted(state.participants, key=lambda n: (state.participants[n], n))
    else:
        ordered = sorted(state.participants)
    participants = []
    for node in ordered:
        entry = _node(node, state, now, dead_set)
        entry["rank"] = state.participants[node] if state.complete else None
        participants.append(entry)
    alive, _ = drop_dead_nodes(state, settings, now)
    deadline = state.deadline
    return {
        "round": state.round,
        "complete": state.complete,
        "closed": state.closed,
        "world_size": state.world_size,
        "last_call_deadline": deadline,
        "last_call_remaining": None if deadline is None else round(deadline - now, 3),
        "participants": participants,
        "wait_list": [_node(n, state, now, dead_set) for n in sorted(state.wait_list)],
        "redundancy_list": [_node(n, state, now, dead_set) for n in sorted(state.redundancy_list)],
        "dead_nodes": [str(n) for n in dead],
        "num_nodes_waiting": num_nodes_waiting(alive),
    }


def describe(
    reading: Reading,
    settings: RendezvousSettings,
    now: float,
    *,
    backend: str,
    endpoint: str,
    where: str,
) -> dict[str, Any]:
    """The whole ``--json`` document for one reading (see docs/operations.rst)."""
    return {
        "format": FORMAT_VERSION,
        "run_id": settings.run_id,
        "backend": backend,
        "endpoint": endpoint,
        "where": where,
        "time": now,
        "keep_alive": {
            "interval": settings.keep_alive_interval.total_seconds(),
            "max_attempt": settings.keep_alive_max_attempt,
            "dead_after": settings.heartbeat_expiry,
        },
        "result": reading.result,
        "error": reading.error,
        "state": None if reading.state is None else describe_state(reading.state, settings, now),
        "pending_joins": [_pending(intent, settings, now) for intent in reading.pending],
    }


def _pending(intent: JoinIntent, settings: RendezvousSettings, now: float) -> dict[str, Any]:
    return {
        "node": str(intent.node),
        "addr": intent.node.addr,
        "pid": intent.node.pid,
        "posted": intent.posted,
        "age": round(now - intent.posted, 3),
        "expired": intent.posted < now - settings.heartbeat_expiry,
    }


def _pending_lines(document: dict[str, Any]) -> list[str]:
    pending = document.get("pending_joins") or []
    if not pending:
        return []
    lines = [
        f"pending joins ({len(pending)}), not in the state until the round can reach min_nodes:"
    ]
    for entry in pending:
        note = " (expired)" if entry["expired"] else ""
        lines.append(f"  {entry['node']}  posted {_seconds(entry['age'])} ago{note}")
    return lines


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _age(entry: dict[str, Any]) -> str:
    age = float(entry["heartbeat_age"])
    if age < 0:
        return f"{_seconds(-age)} in the future (the clocks differ)"
    text = f"{_seconds(age)} ago"
    return f"{text}  DEAD" if entry["dead"] else text


def _node_lines(entries: list[dict[str, Any]], with_rank: bool) -> list[str]:
    width = max([len(e["node"]) for e in entries] + [4])
    lines = [f"  {'rank':>4}  {'node':<{width}}  last heartbeat" if with_rank else ""]
    for e in entries:
        rank = "-" if e.get("rank") is None else str(e["rank"])
        head = f"  {rank:>4}  " if with_rank else "        "
        lines.append(f"{head}{e['node']:<{width}}  {_age(e)}")
    return [line for line in lines if line]


def _round_line(state: dict[str, Any]) -> str:
    if state["complete"]:
        progress = f"complete, world size {state['world_size']}"
    else:
        progress = f"forming, {len(state['participants'])} participant(s) so far"
    closed = "CLOSED (next_rendezvous raises RendezvousClosedError)" if state["closed"] else "open"
    return f"round {state['round']}: {progress}; {closed}"


def _last_call_line(state: dict[str, Any]) -> str:
    remaining = state["last_call_remaining"]
    if remaining is None:
        why = "the round is complete" if state["complete"] else "fewer than min_nodes joined"
        return f"last call: none ({why})"
    if remaining >= 0:
        return f"last call: ends in {_seconds(remaining)}"
    return f"last call: ended {_seconds(-remaining)} ago (the next node to look completes it)"


def format_text(document: dict[str, Any]) -> list[str]:
    """Render a :func:`describe` document as lines for a terminal."""
    header = f"rendezvous '{document['run_id']}' ({document['where']})"
    if document["result"] == "no_state" and document.get("pending_joins"):
        return [header, "no state yet: no round has formed.", *_pending_lines(document)]
    if document["result"] == "no_state":
        return [
            header,
            "no state: no node has joined this run id yet, the state expired (etcd TTL), "
            "or the c10d store was restarted. Check --run-id and --endpoint.",
        ]
    if document["result"] == "corrupt":
        return [header, f"the state does not decode: {document['error']}"]
    state = document["state"]
    keep_alive = document["keep_alive"]
    lines = [header, _round_line(state), _last_call_line(state)]
    participants = state["participants"]
    lines.append(f"participants ({len(participants)}):" if participants else "participants: none")
    if participants:
        lines += _node_lines(participants, with_rank=True)
    for key, title in (("wait_list", "wait list"), ("redundancy_list", "redundancy list")):
        entries = state[key]
        lines.append(f"{title} ({len(entries)}):" if entries else f"{title}: empty")
        lines += _node_lines(entries, with_rank=False) if entries else []
    dead = state["dead_nodes"]
    limit = (
        f"no heartbeat for more than {keep_alive['dead_after']:g} s = "
        f"{keep_alive['interval']:g} s x {keep_alive['max_attempt']}"
    )
    lines.append(
        f"dead nodes ({len(dead)}): {', '.join(dead)} ({limit})"
        if dead
        else f"dead nodes: none ({limit})"
    )
    waiting = state["num_nodes_waiting"]
    hint = " (the nodes will start a new round)" if waiting and not state["closed"] else ""
    lines.append(f"num_nodes_waiting: {waiting}{hint}")
    return lines + _pending_lines(document)


def _status_of(reading: Reading) -> ExitStatus:
    if reading.result == "corrupt":
        return ExitStatus.CORRUPT_STATE
    if reading.result == "no_state":
        return ExitStatus.NO_STATE
    return ExitStatus.OK


def _render(document: dict[str, Any], as_json: bool, *, compact: bool) -> str:
    if as_json:
        return json.dumps(document, indent=None if compact else 2, sort_keys=False)
    return "\n".join(format_text(document))


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``status`` to the ``rdzv`` sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "status",
        help="show a rendezvous (round, ranks, heartbeats, dead nodes) without joining it",
        description="Read the state of a rendezvous, without joining it, and show its round, "
        "whether it is complete and closed, the last-call deadline, every participant with its "
        "rank and the age of its last heartbeat, the wait and redundancy lists, the nodes that "
        "look dead and num_nodes_waiting().",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser)
    add_common_arguments(parser)
    add_keep_alive_arguments(parser)
    shown = parser.add_argument_group("output")
    shown.add_argument(
        "--json",
        action="store_true",
        help="print a JSON document (with --watch: one event per line)",
    )
    shown.add_argument(
        "--watch",
        nargs="?",
        type=positive_float,
        const=0.0,
        metavar="SECONDS",
        help="follow the rendezvous: redraw on every change of the state (with --json: one "
        "event per line) until Ctrl-C; heartbeats and pending joins are read every SECONDS "
        "(default: the keep-alive interval)",
    )
    page = parser.add_argument_group("web page (read-only, live)")
    page.add_argument(
        "--serve",
        action="store_true",
        help="serve a live page of the rendezvous on http://HOST:PORT/ until Ctrl-C",
    )
    page.add_argument(
        "--port",
        type=non_negative_int,
        default=DEFAULT_PAGE_PORT,
        help=f"port of the page (default {DEFAULT_PAGE_PORT}; 0: a free one)",
    )
    page.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; any other needs --token)",
    )
    page.add_argument(
        "--token",
        metavar="TOKEN",
        help="a secret the page's URL must carry (?token=TOKEN); required off loopback "
        "(default: $RDZV_STATUS_TOKEN)",
    )
    return parser


def run_once(args: argparse.Namespace, settings: RendezvousSettings, out: Output) -> int:
    """Print the rendezvous once (``rdzv status`` without ``--watch`` or ``--serve``);
    return the exit status.

    Raises:
        CommandError: the backend cannot be reached.
    """
    target = open_target(args)
    try:
        reading = read_state(target)
        out(_render(_document(reading, settings, args, target), args.json, compact=False))
        return _status_of(reading)
    finally:
        target.close()


def _document(
    reading: Reading, settings: RendezvousSettings, args: argparse.Namespace, target: Source
) -> dict[str, Any]:
    return describe(
        reading,
        settings,
        round(time.time(), 3),
        backend=args.backend,
        endpoint=args.endpoint,
        where=target.where,
    )
