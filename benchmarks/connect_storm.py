"""A TCP-store connect storm: N clients connect at once, ``set`` and ``get`` a key each.

This is what a job's nodes do to the store host at the start of a c10d rendezvous.
The server runs in a process of its own (rdzv's ``TCPStoreServer``, or torch
2.13's ``TCPStore`` master when torch is installed), so that its memory can be
read: its peak RSS, and its RSS with every client connected, per connection. The
clients are threads spread over worker processes; they start together at a moment
on the system-wide monotonic clock, and each holds its connection until every
client is done. "seconds" is from that moment to the last client's ``get``.

    python benchmarks/connect_storm.py --clients 1024 4096 [--workers 4] [--impl rdzv torch]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import threading
import time
import traceback
import warnings
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

# torch's TCPStore logs a warning per client socket on loopback without a host name.
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

_START_DELAY = 2.0
"""Seconds between telling the workers the start moment and the moment itself."""
_CLIENT_TIMEOUT = 120.0


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _server_main(impl: str, conn: Connection) -> None:
    """Host a store and answer "rss" until told "stop"."""
    if impl == "rdzv":
        from rdzv.store.tcp_server import TCPStoreServer

        server: Any = TCPStoreServer("127.0.0.1", 0).start()
        port = server.port
    else:
        import torch.distributed as dist

        server = dist.TCPStore(
            "127.0.0.1",
            0,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=_CLIENT_TIMEOUT),
        )
        port = server.port
    conn.send(("port", port, _rss_kib("VmRSS")))
    while True:
        command = conn.recv()
        if command == "stop":
            break
        conn.send(("rss", _rss_kib("VmRSS"), _rss_kib("VmHWM")))
    if impl == "rdzv":
        server.stop()


def _client(impl: str, port: int, index: int) -> Any:
    if impl == "rdzv":
        from rdzv.store.tcp import TCPStore

        return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=_CLIENT_TIMEOUT))
    import torch.distributed as dist

    return dist.TCPStore(
        "127.0.0.1",
        port,
        is_master=False,
        wait_for_workers=False,
        timeout=timedelta(seconds=_CLIENT_TIMEOUT),
    )


def _worker_main(impl: str, port: int, indices: list[int], start: float, conn: Connection) -> None:
    """Run one thread per client; report (seconds, error) per client once all are done."""
    if impl == "torch":
        import torch.distributed  # noqa: F401 - imported before the start moment
    else:
        import rdzv.store.tcp  # noqa: F401
    threading.stack_size(256 * 1024)
    results: list[tuple[float, str | None]] = []
    lock = threading.Lock()
    release = threading.Event()
    stores: list[Any] = []

    def run(index: int) -> None:
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        error = None
        try:
            store = _client(impl, port, index)
            store.set(f"storm/{index}", b"x" * 16)
            store.get(f"storm/{index}")
            with lock:
                stores.append(store)
        except Exception as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        with lock:
            results.append((time.monotonic() - start, error))
        release.wait(_CLIENT_TIMEOUT * 2)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in indices]
    for thread in threads:
        thread.start()
    while True:
        with lock:
            if len(results) == len(indices):
                break
        time.sleep(0.05)
    conn.send(results)
    conn.recv()  # the server's memory has been read: let go
    release.set()
    for store in stores:
        if hasattr(store, "close"):
            store.close()
    for thread in threads:
        thread.join(10)
    conn.send("done")


def measure(impl: str, clients: int, workers: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_server_main, args=(impl, child), daemon=True)
    server.start()
    try:
        _, port, idle_rss = parent.recv()
        start = time.monotonic() + _START_DELAY + clients / 2000
        pipes, processes = [], []
        for w in range(workers):
            mine, theirs = ctx.Pipe()
            indices = list(range(w, clients, workers))
            process = ctx.Process(
                target=_worker_main, args=(impl, port, indices, start, theirs), daemon=True
            )
            process.start()
            pipes.append(mine)
            processes.append(process)
        results: list[tuple[float, str | None]] = []
        for pipe in pipes:
            if not pipe.poll(_CLIENT_TIMEOUT * 3):
                raise TimeoutError("a worker did not report")
            results.extend(pipe.recv())
        parent.send("rss")
        _, connected_rss, peak_rss = parent.recv()
        for pipe in pipes:
            pipe.send("release")
        for pipe in pipes:
            if pipe.poll(60):
                pipe.recv()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        parent.send("stop")
    finally:
        server.join(30)
        if server.is_alive():
            server.kill()
    errors = [e for _, e in results if e is not None]
    return {
        "impl": impl,
        "clients": clients,
        "seconds": max(t for t, _ in results),
        "failed": len(errors),
        "first_error": errors[0] if errors else "",
        "peak_rss_mib": peak_rss / 1024,
        "kib_per_connection": (connected_rss - idle_rss) / clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--workers", type=int, default=4, help="client processes")
    parser.add_argument("--impl", nargs="+", default=["rdzv", "torch"], choices=["rdzv", "torch"])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    impls = list(args.impl)
    if "torch" in impls and importlib.util.find_spec("torch") is None:
        print("torch is not installed: measuring rdzv only.")
        impls.remove("torch")
    header = f"{'store':<8}{'clients':>8}{'seconds':>9}{'failed':>8}{'peak RSS MiB':>14}"
    print(header + f"{'KiB/conn':>10}  first error", flush=True)
    for clients in args.clients:
        for _ in range(args.repeat):
            for impl in impls:
                try:
                    r = measure(impl, clients, args.workers)
                except Exception:
                    print(f"{impl:<8}{clients:>8}  did not finish:\n{traceback.format_exc()}")
                    continue
                print(
                    f"{r['impl']:<8}{r['clients']:>8}{r['seconds']:>9.2f}{r['failed']:>8}"
                    f"{r['peak_rss_mib']:>14.1f}{r['kib_per_connection']:>10.1f}  "
                    f"{r['first_error']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
