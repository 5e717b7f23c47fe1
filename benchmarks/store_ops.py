"""Throughput of ``set`` and ``get`` on rdzv's TCPStore, and on torch's when torch is installed.

Each client runs in its own process (so that clients do not share a GIL with each
other or with the server); the server is hosted by this process, as a master
``TCPStore`` would be. Every client sets, then gets, its own keys with 64-byte
values; ops/s is the total count over the slowest client's time.

    python benchmarks/store_ops.py [--ops 5000] [--clients 1 8]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import multiprocessing
import time
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from typing import Any

from rdzv.store.tcp import TCPStore

VALUE = b"x" * 64


def _torch_tcp_store() -> Any:
    # Imported only when used: torch is optional and slow to import.
    return importlib.import_module("torch.distributed").TCPStore


def _client_store(kind: str, port: int) -> Any:
    if kind == "rdzv":
        return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=60))
    return _torch_tcp_store()(
        "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60), wait_for_workers=False
    )


def _master_store(kind: str) -> Any:
    if kind == "rdzv":
        return TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=60))
    return _torch_tcp_store()(
        "127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False
    )


def _run_client(
    kind: str, port: int, client: int, ops: int, barrier: Barrier, results: Any
) -> None:
    store = _client_store(kind, port)
    keys = [f"bench/{client}/{i}" for i in range(ops)]
    barrier.wait()
    started = time.perf_counter()
    for key in keys:
        store.set(key, VALUE)
    set_seconds = time.perf_counter() - started
    barrier.wait()
    started = time.perf_counter()
    for key in keys:
        store.get(key)
    get_seconds = time.perf_counter() - started
    results.put((set_seconds, get_seconds))
    if hasattr(store, "close"):
        store.close()


def measure(kind: str, clients: int, ops: int) -> tuple[float, float]:
    """Return (set ops/s, get ops/s) for ``clients`` concurrent client processes."""
    ctx = multiprocessing.get_context("spawn")
    master = _master_store(kind)
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_run_client, args=(kind, master.port, c, ops, barrier, results))
        for c in range(clients)
    ]
    for p in processes:
        p.start()
    timings = [results.get(timeout=600) for _ in processes]
    for p in processes:
        p.join(60)
    if hasattr(master, "close"):
        master.close()
    total = clients * ops
    return total / max(t[0] for t in timings), total / max(t[1] for t in timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="sets (and gets) per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    kinds = ["rdzv"]
    if importlib.util.find_spec("torch") is not None:
        kinds.append("torch")
    else:
        print("torch is not installed: measuring rdzv only.")
    print(f"{'store':<16}{'clients':>8}{'set ops/s':>12}{'get ops/s':>12}")
    for clients in args.clients:
        for kind in kinds:
            set_rate, get_rate = measure(kind, clients, args.ops)
            label = f"{kind} TCPStore"
            print(f"{label:<16}{clients:>8}{set_rate:>12,.0f}{get_rate:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
