"""A rendezvous node in its own process, driven by its test through stdin and stdout.

Usage: ``python _node.py '<json>'`` with ``backend``, ``endpoint``, ``run_id``,
``min_nodes``, ``max_nodes`` and ``options``. It reads one command per line and
answers with one JSON object per line:

- ``next``: ``next_rendezvous()`` -> ``{"event": "round", "rank", "world_size", "round",
  "master_addr", "master_port"}`` or ``{"event": "error", "type", "message"}``
- ``waiting``: ``{"event": "waiting", "count": num_nodes_waiting()}``
- ``closed``: ``{"event": "closed", "value": is_closed()}``
- ``set K V`` / ``get K``: the round store -> ``{"event": "value", "value"}``
- ``shutdown``: ``shutdown()`` then exit; ``exit``: exit at once (keep-alive stops).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rdzv import RendezvousError, RendezvousInfo, RendezvousParameters, get_rendezvous_handler


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
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
    try:
        handler = get_rendezvous_handler(params)
    except (RendezvousError, ValueError) as e:
        say(event="error", type=type(e).__name__, message=str(e))
        return
    say(event="ready")
    info: RendezvousInfo | None = None
    for line in sys.stdin:
        command, *args = line.split()
        try:
            if command == "next":
                info = handler.next_rendezvous()
                boot = info.bootstrap_store_info
                say(
                    event="round",
                    rank=info.rank,
                    world_size=info.world_size,
                    round=handler.round,  # type: ignore[attr-defined]
                    master_addr=boot.master_addr,
                    master_port=boot.master_port,
                )
            elif command == "waiting":
                say(event="waiting", count=handler.num_nodes_waiting())
            elif command == "closed":
                say(event="closed", value=handler.is_closed())
            elif command == "set" and info is not None:
                info.store.set(args[0], args[1])
                say(event="value", value=args[1])
            elif command == "get" and info is not None:
                say(event="value", value=info.store.get(args[0]).decode())
            elif command == "shutdown":
                say(event="shutdown", value=handler.shutdown())
                return
            elif command == "exit":
                return
            else:
                say(event="error", type="UsageError", message=f"unknown command {line!r}")
        except RendezvousError as e:
            say(event="error", type=type(e).__name__, message=str(e))


if __name__ == "__main__":
    main()
