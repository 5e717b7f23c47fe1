"""``rdzv status --watch``: the view redrawn on every change, or one event per line.

Both follow a :class:`rdzv.watching.Watcher`, so they wake when the backend
reports a change, not on a timer. The document of a snapshot is ``rdzv status
--json``'s (:func:`rdzv.cli.status.describe`) with the watcher's fields added:
``missing`` and ``last_complete_round``; ``result`` may also be ``unreachable``.
``rdzv status --serve`` sends the same documents to the browser.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from typing import Any

from rdzv.api import RendezvousConnectionError
from rdzv.cli._common import CommandError, ExitStatus, Output, sigterm_interrupts
from rdzv.cli._target import open_target
from rdzv.cli.status import Reading, describe, format_text
from rdzv.core import RendezvousSettings
from rdzv.core.events import (
    Event,
    NodeDeclaredDead,
    NodeJoined,
    NodeLeft,
    RendezvousClosed,
    RoundAbandoned,
    RoundCompleted,
    RoundStarted,
)
from rdzv.watching import Snapshot, Source, Watcher, WatchItem, WatchStatus, item_to_json

__all__ = ["describe_event", "describe_snapshot", "run_watch", "watcher_for"]

_CLEAR_SCREEN = "\x1b[H\x1b[2J"
_RECENT = 10
"""Events shown under the terminal view."""


def watcher_for(args: argparse.Namespace, settings: RendezvousSettings) -> Watcher:
    """A watcher of the run the command line names; a backend down is its status, not an error.

    Raises (from iteration):
        CommandError: an invalid option (status USAGE).
    """

    def opener() -> Source:
        try:
            return open_target(args)
        except CommandError as e:
            if e.status == ExitStatus.USAGE:
                raise
            raise RendezvousConnectionError(str(e)) from e

    where = f"{args.backend} at {args.endpoint}"
    return Watcher(opener, settings, where, refresh=args.watch or None)


def describe_snapshot(snapshot: Snapshot, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON document of a snapshot (that of ``rdzv status --json``, with more fields).

    The state is the last one read even when the backend cannot be read now; then
    ``result`` says why (``unreachable``, ``no_state``, ``corrupt``) and ``error``
    what to do.
    """
    reading = Reading(snapshot.state, None, pending=snapshot.pending)
    document = describe(
        reading,
        snapshot.settings,
        round(snapshot.at, 3),
        backend=args.backend,
        endpoint=args.endpoint,
        where=snapshot.where,
    )
    document["result"] = snapshot.status
    document["error"] = snapshot.message
    done = snapshot.last_complete
    document["last_complete_round"] = (
        None if done is None else {"round": done.round, "world_size": done.world_size}
    )
    document["missing"] = [
        {"rank": rank, "node": str(node), "gone": _how(snapshot, node)}
        for rank, node in snapshot.missing
    ]
    return document


def _how(snapshot: Snapshot, node: object) -> str | None:
    gone = snapshot.gone.get(node)  # type: ignore[call-overload]
    if isinstance(gone, NodeDeclaredDead):
        return "dead"
    return None if gone is None else "left"


def describe_event(event: Event | WatchStatus) -> str:
    """One line for people: what happened."""
    if isinstance(event, WatchStatus):
        return "watching again" if event.status == "ok" else f"{event.status}: {event.message}"
    where = f"round {event.round}"
    if isinstance(event, NodeJoined):
        was = f" (was {event.previous})" if event.previous else ""
        return f"{where}: {event.node} joined as {event.role}{was}"
    if isinstance(event, NodeLeft):
        unseen = "" if event.certain else ", or died: gone while the watcher could not read"
        return f"{where}: {event.node} left ({event.role}{unseen})"
    if isinstance(event, NodeDeclaredDead):
        return f"{where}: {event.node} declared dead ({event.role}, heartbeat expired)"
    if isinstance(event, RoundCompleted):
        return f"{where} completed, world size {event.world_size}"
    if isinstance(event, RoundAbandoned):
        return f"{where} abandoned"
    if isinstance(event, RoundStarted):
        return f"{where} started"
    if isinstance(event, RendezvousClosed):
        return f"{where}: the rendezvous closed"
    return f"{where}: the state was reset by another writer"


def format_watch(document: dict[str, Any], recent: list[str]) -> list[str]:
    """The terminal view of a snapshot document and the latest events."""
    lines: list[str] = []
    if document["result"] != "ok":
        lines.append(f"!! {document['result']}: {document['error']}")
    if document["state"] is not None:
        lines += format_text({**document, "result": "ok"})
    elif document["result"] == "ok":
        lines += format_text(document)
    else:
        lines.append(f"rendezvous '{document['run_id']}' ({document['where']})")
    done = document["last_complete_round"]
    if done is not None and document["missing"]:
        lines.append(
            f"missing against round {done['round']} (world size {done['world_size']}): "
            + ", ".join(
                f"rank {m['rank']} {m['node']}" + (f" ({m['gone']})" if m["gone"] else "")
                for m in document["missing"]
            )
        )
    if recent:
        lines.append("recent events:")
        lines += [f"  {line}" for line in recent]
    return lines


def run_watch(args: argparse.Namespace, settings: RendezvousSettings, out: Output) -> int:
    """Follow the run until Ctrl-C or SIGTERM; exit status 0 then.

    Raises:
        CommandError: an invalid option.
    """
    clear = not args.json and sys.stdout.isatty()
    recent: deque[str] = deque(maxlen=_RECENT)
    watcher = watcher_for(args, settings)
    try:
        with sigterm_interrupts(), watcher:
            for item in watcher:
                _show(item, args, out, recent, clear)
    except KeyboardInterrupt:
        pass
    return ExitStatus.OK


def _show(
    item: WatchItem, args: argparse.Namespace, out: Output, recent: deque[str], clear: bool
) -> None:
    if args.json:
        if not isinstance(item, Snapshot):
            out(json.dumps(item_to_json(item)))
        return
    if not isinstance(item, Snapshot):
        recent.append(
            f"{time.strftime('%H:%M:%S', time.localtime(item.at))}  {describe_event(item)}"
        )
        return
    text = "\n".join(format_watch(describe_snapshot(item, args), list(recent)))
    if clear:
        out(f"{_CLEAR_SCREEN}on every change; Ctrl-C to stop\n{text}")
    else:
        out(f"--- {_clock(item.at)}\n{text}")


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))
