"""A rendezvous node in its own process for the fault tests, driven through stdin and stdout.

Usage: ``python _fault_node.py '<json>'`` with ``backend``, ``endpoint``, ``run_id``,
``min_nodes``, ``max_nodes`` and ``options``. It answers ``{"event": "ready", "node",
"pid", "fds_before", "threads"}`` (descriptors open before the handler was made, and
the threads once it is made) or an ``error``, then reads one command per line and answers each with
one JSON object per line:

- ``next``: ``next_rendezvous()`` -> ``{"event": "round", "rank", "world_size", "round",
  "node", "elapsed"}`` or ``{"event": "error", "type", "message", "elapsed"}``. Any
  exception, not only a ``RendezvousError``, is reported: a test tells a documented
  error from a crash by its type.
- ``waiting`` / ``closed``: ``num_nodes_waiting()`` / ``is_closed()``.
- ``shutdown``: ``shutdown()``; the process stays up (unlike the integration driver),
  so that on c10d a store host can shut down without taking the store with it.
- ``threads``: the names of the live threads.
- ``fds``: the open descriptors, and for each TCP socket its local and remote port.
- ``drop``: drop the handler (and its store) and collect garbage.
- ``exit``: exit at once.

Warnings of rdzv (a failed heartbeat) go to stderr, where a test can read them.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from rdzv import RendezvousParameters, get_rendezvous_handler


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Socket inode -> (local port, remote port, state) for this machine's TCP sockets."""
    sockets: dict[str, tuple[int, int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            sockets[inode] = (
                int(local.rsplit(":", 1)[1], 16),
                int(remote.rsplit(":", 1)[1], 16),
                state,
            )
    return sockets


def open_fds() -> dict[str, Any]:
    """Every open descriptor of this process, and the TCP ones with their ports."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue  # the descriptor listdir itself used, closed since
    table = _tcp_sockets()
    tcp = []
    for target in targets:
        if target.startswith("socket:["):
            entry = table.get(target[len("socket:[") : -1])
            if entry is not None:
                tcp.append({"local_port": entry[0], "remote_port": entry[1], "state": entry[2]})
    return {"count": len(targets), "tcp": tcp}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(message)s")
    config = json.loads(sys.argv[1])
    params = RendezvousParameters(
        config["backend"],
        config["endpoint"],
        config["run_id"],
        config["min_nodes"],
        config["max_nodes"],
        config.get("local_addr", "127.0.0.1"),
        **config.get("options", {}),
    )
    before = open_fds()["count"]
    try:
        handler: Any = get_rendezvous_handler(params)
    except Exception as e:
        say(event="error", type=type(e).__name__, message=str(e))
        return
    threads = sorted(t.name for t in threading.enumerate())
    say(event="ready", node=str(handler.node), pid=os.getpid(), fds_before=before, threads=threads)
    for line in sys.stdin:
        command = line.strip()
        started = time.monotonic()
        try:
            if command == "next":
                info = handler.next_rendezvous()
                say(
                    event="round",
                    rank=info.rank,
                    world_size=info.world_size,
                    round=handler.round,
                    node=str(handler.node),
                    elapsed=time.monotonic() - started,
                )
            elif command == "waiting":
                say(event="waiting", count=handler.num_nodes_waiting())
            elif command == "closed":
                say(event="closed", value=handler.is_closed())
            elif command == "shutdown":
                say(event="shutdown", value=handler.shutdown(), elapsed=time.monotonic() - started)
            elif command == "threads":
                say(event="threads", names=sorted(t.name for t in threading.enumerate()))
            elif command == "fds":
                say(event="fds", **open_fds())
            elif command == "drop":
                handler = None
                gc.collect()
                say(event="dropped")
            elif command == "exit":
                return
            else:
                say(event="error", type="UsageError", message=f"unknown command {command!r}")
        except Exception as e:
            say(
                event="error",
                type=type(e).__name__,
                message=str(e),
                elapsed=time.monotonic() - started,
            )


if __name__ == "__main__":
    main()
