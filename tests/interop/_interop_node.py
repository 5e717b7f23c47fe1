"""A legacy etcd rendezvous node of torch or of rdzv, in its own process, driven through stdin.

Usage: ``python _interop_node.py '<json>'`` with ``impl`` (``torch`` or ``rdzv``),
``endpoint``, ``run_id``, ``min_nodes``, ``max_nodes`` and ``options``. One command
per line on stdin, one JSON event per line on stdout:

- ``next``: ``{"event": "round", "rank", "world_size", "version", "master_addr",
  "master_port"}`` or ``{"event": "error", "type", "message"}``; ``version`` is read
  from the round's store prefix (``.../v_<n>/kv/``), the same for both libraries;
- ``set K V`` / ``get K``: the round's ``EtcdStore``;
- ``waiting`` / ``closed``: ``num_nodes_waiting()`` / ``is_closed()``;
- ``shutdown``: ``shutdown()`` then exit; ``exit``: exit at once.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def make_handler(config: dict[str, Any]) -> tuple[Any, type[BaseException]]:
    """The handler of the library ``config["impl"]`` names, and that library's error base."""
    args = (
        "etcd",
        config["endpoint"],
        config["run_id"],
        config["min_nodes"],
        config["max_nodes"],
        "127.0.0.1",
    )
    # Imported here: an rdzv node must run without torch in its process.
    if config["impl"] == "torch":
        from torch.distributed.elastic.rendezvous import (  # noqa: PLC0415
            RendezvousError as TorchError,
        )
        from torch.distributed.elastic.rendezvous import (  # noqa: PLC0415
            RendezvousParameters as TorchParams,
        )
        from torch.distributed.elastic.rendezvous.etcd_rendezvous import (  # noqa: PLC0415
            create_rdzv_handler,
        )

        return create_rdzv_handler(TorchParams(*args, **config["options"])), TorchError
    from rdzv import (  # noqa: PLC0415
        RendezvousError,
        RendezvousParameters,
        get_rendezvous_handler,
    )

    params = RendezvousParameters(*args, **config["options"])
    return get_rendezvous_handler(params), RendezvousError


def main() -> None:
    config = json.loads(sys.argv[1])
    handler, error_type = make_handler(config)
    say(event="ready")
    info: Any = None
    for line in sys.stdin:
        command, *args = line.split()
        try:
            if command == "next":
                info = handler.next_rendezvous()
                match = re.search(r"/v_(\d+)/kv/?$", info.store.prefix)
                boot = info.bootstrap_store_info
                say(
                    event="round",
                    rank=info.rank,
                    world_size=info.world_size,
                    version=int(match.group(1)) if match else None,
                    master_addr=boot.master_addr,
                    master_port=boot.master_port,
                )
            elif command == "set":
                info.store.set(args[0], args[1])
                say(event="value", value=args[1])
            elif command == "get":
                say(event="value", value=info.store.get(args[0]).decode())
            elif command == "waiting":
                say(event="waiting", count=handler.num_nodes_waiting())
            elif command == "closed":
                say(event="closed", value=handler.is_closed())
            elif command == "shutdown":
                say(event="shutdown", value=handler.shutdown())
                return
            elif command == "exit":
                return
            else:
                say(event="error", type="UsageError", message=f"unknown command {line!r}")
        except error_type as e:
            say(event="error", type=type(e).__name__, message=str(e))


if __name__ == "__main__":
    main()
