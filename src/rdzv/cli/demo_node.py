"""One node of ``rdzv demo``, in its own process: a launcher's loop, reporting as it goes.

Usage: ``python -m rdzv.cli.demo_node '<json>'`` (``backend``, ``endpoint``,
``run_id``, ``min_nodes``, ``max_nodes``, ``options``). The node calls
``next_rendezvous()``, then polls ``num_nodes_waiting()`` as a launcher does and
rendezvous again when it is above 0, until its parent writes ``stop`` on its
standard input; then it shuts the handler down (which closes the rendezvous) and
exits. It writes one JSON object per line on standard output:

- ``{"event": "ready", "node", "pid", "port"}``: the handler exists (``port``: the
  TCP store's, on the node that hosts it);
- ``{"event": "round", "round", "rank", "world_size", "seconds", "master"}``;
- ``{"event": "waiting", "count"}``: ``num_nodes_waiting()`` went above 0;
- ``{"event": "error", "type", "message"}`` (then exit status 1);
- ``{"event": "stopped", "ok"}``: ``shutdown()`` returned ``ok``.

The node ignores SIGINT: Ctrl-C in a terminal reaches the whole process group,
and the parent, which handles it, ends its nodes. If the parent dies, standard
input closes and the node exits at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from rdzv.api import RendezvousError, RendezvousParameters
from rdzv.dynamic.handler import DynamicRendezvousHandler, create_handler

__all__ = ["main"]

POLL_INTERVAL = 0.1
"""Seconds between two ``num_nodes_waiting()`` calls (torchrun's agent polls every 30 s;
the demo wants to show the reaction, not to spare the backend)."""

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one event line (whole, then flushed: the parent reads lines)."""
    line = json.dumps({"event": event, **fields})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _watch_stdin(stop: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
            return
    # End of input before "stop": the parent is gone; leave no orphan behind.
    os._exit(0)


def _create(params: RendezvousParameters) -> tuple[DynamicRendezvousHandler, int | None]:
    if params.backend == "etcd-v2":
        from rdzv.backends.etcd import create_backend as create_etcd  # noqa: PLC0415

        backend, store = create_etcd(params)
        return create_handler(store, backend, params), None
    if params.backend == "etcd-v3":
        from rdzv.backends.etcd_v3 import create_backend as create_etcd_v3  # noqa: PLC0415

        backend_v3, store_v3 = create_etcd_v3(params)
        return create_handler(store_v3, backend_v3, params), None
    from rdzv.backends.c10d import create_backend as create_c10d  # noqa: PLC0415
    from rdzv.store.tcp import TCPStore  # noqa: PLC0415

    backend_c10d, store_c10d = create_c10d(params)
    port = store_c10d.port if isinstance(store_c10d, TCPStore) and store_c10d.server else None
    return create_handler(store_c10d, backend_c10d, params), port


def run(config: dict[str, Any]) -> int:
    """Run the node described by ``config``; return its exit status."""
    params = RendezvousParameters(
        config["backend"],
        config["endpoint"],
        config["run_id"],
        config["min_nodes"],
        config["max_nodes"],
        local_addr="127.0.0.1",
        **config.get("options", {}),
    )
    stop = threading.Event()
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    try:
        handler, port = _create(params)
        emit("ready", node=str(handler.node), pid=os.getpid(), port=port)
        while not stop.is_set():
            started = time.monotonic()
            info = handler.next_rendezvous()
            boot = info.bootstrap_store_info
            emit(
                "round",
                round=handler.round,
                rank=info.rank,
                world_size=info.world_size,
                seconds=round(time.monotonic() - started, 3),
                master=f"{boot.master_addr}:{boot.master_port}",
            )
            while not stop.wait(POLL_INTERVAL):
                waiting = handler.num_nodes_waiting()
                if waiting > 0:
                    emit("waiting", count=waiting)
                    break
        emit("stopped", ok=handler.shutdown())
        return 0
    except (RendezvousError, ValueError) as e:
        emit("error", type=type(e).__name__, message=str(e))
        return 1


def main() -> int:
    """Entry point of ``python -m rdzv.cli.demo_node``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.argv[1])
    if config.get("verbose"):
        logging.basicConfig(
            level=logging.DEBUG,
            format=f"%(asctime)s node {config.get('index', '?')} %(levelname)s %(name)s: "
            "%(message)s",
            stream=sys.stderr,
        )
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
