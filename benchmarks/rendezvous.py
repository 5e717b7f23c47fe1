"""Rendezvous time of rdzv against torch's own handler, measured in one run.

Scenario ``first``: N nodes (threads of this process) call ``next_rendezvous``
together with min = max = N. Each implementation's backend is wrapped in a
counter, so the table also gives backend requests per node and bytes written.

    python benchmarks/rendezvous.py --backend etcd-v2 c10d --nodes 4 32 --json out.json

torch columns appear when torch is importable. Every node has its own handler
(and, for c10d, its own store client), as separate machines would.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

from rdzv import RendezvousBackend, RendezvousParameters, create_handler
from rdzv.backends import c10d as rdzv_c10d
from rdzv.backends import etcd as rdzv_etcd
from rdzv.dynamic.backend import HeartbeatBoard, IntentLog
from rdzv.etcd_server import EtcdServer


class Counter:
    """Requests and bytes written through a backend, shared by the nodes of a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.writes = 0
        self.bytes_written = 0

    def count(self, written: bytes | None = None) -> None:
        with self.lock:
            self.requests += 1
            if written is not None:
                self.writes += 1
                self.bytes_written += len(written)


class CountingBackend(RendezvousBackend):
    """rdzv backend wrapper that counts what goes to the real backend."""

    def __init__(self, inner: RendezvousBackend, counter: Counter) -> None:
        self._inner, self._counter = inner, counter

    @property
    def name(self) -> str:
        return self._inner.name

    def get_state(self) -> Any:
        self._counter.count()
        return self._inner.get_state()

    def set_state(self, state: bytes, token: Any = None) -> Any:
        self._counter.count(state)
        return self._inner.set_state(state, token)

    def wait_for_change(self, token: Any, timeout: float) -> Any:
        self._counter.count()
        return self._inner.wait_for_change(token, timeout)


class CountingSideChannels(CountingBackend, IntentLog, HeartbeatBoard):
    """Counting wrapper for backends with join intents and heartbeat records."""

    _inner: Any

    def post_intent(self, record: bytes) -> None:
        self._counter.count(record)
        self._inner.post_intent(record)

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        self._counter.count()
        result: tuple[list[bytes], int] = self._inner.read_intents(cursor)
        return result

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self._counter.count(record)
        self._inner.beat(name, record, ttl)

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        self._counter.count()
        result: dict[str, bytes] = self._inner.read_beats(names)
        return result


def counting(inner: RendezvousBackend, counter: Counter) -> CountingBackend:
    """Wrap ``inner``, keeping the side channels it offers."""
    if isinstance(inner, IntentLog) and isinstance(inner, HeartbeatBoard):
        return CountingSideChannels(inner, counter)
    return CountingBackend(inner, counter)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rdzv_handlers(backend: str, endpoint: str, n: int, counter: Counter) -> list[Any]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    handlers = []
    for _ in range(n):
        params = RendezvousParameters(
            backend, endpoint, run_id, n, n, "127.0.0.1", join_timeout=300, read_timeout=60
        )
        module = rdzv_etcd if backend == "etcd-v2" else rdzv_c10d
        inner, store = module.create_backend(params)  # type: ignore[attr-defined]
        handlers.append(create_handler(store, counting(inner, counter), params))
    return handlers


def torch_handlers(backend: str, endpoint: str, n: int, counter: Counter) -> list[Any]:
    from torch.distributed.elastic.rendezvous import RendezvousParameters as TorchParams
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        RendezvousBackend as TorchBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        create_handler as torch_create_handler,
    )

    if backend == "etcd-v2":
        from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import create_backend
    else:
        from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import create_backend

    class TorchCounting(TorchBackend):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        @property
        def name(self) -> str:
            return str(self._inner.name)

        def get_state(self) -> Any:
            counter.count()
            return self._inner.get_state()

        def set_state(self, state: bytes, token: Any = None) -> Any:
            counter.count(state)
            return self._inner.set_state(state, token)

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    handlers = []
    for _ in range(n):
        params = TorchParams(
            backend, endpoint, run_id, n, n, "127.0.0.1", join_timeout=300, read_timeout=60
        )
        inner, store = create_backend(params)
        handlers.append(torch_create_handler(store, TorchCounting(inner), params))
    return handlers


def first(make: Callable[[], list[Any]]) -> tuple[float, bool]:
    """Seconds until every node has its rank, and whether the ranks are 0..N-1."""
    handlers = make()
    ranks: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def join(handler: Any) -> None:
        try:
            info = handler.next_rendezvous()
            with lock:
                ranks.append(info.rank)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=join, args=(h,), daemon=True) for h in handlers]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for handler in handlers:
        stop = getattr(handler, "_stop_heartbeats", None)
        if stop is not None:
            stop()
    if errors:
        print(f"    error: {type(errors[0]).__name__}: {errors[0]}")
    return elapsed, not errors and sorted(ranks) == list(range(len(handlers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", default=["etcd-v2", "c10d"])
    parser.add_argument("--nodes", nargs="+", type=int, default=[4, 32])
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401

        impls = ["rdzv", "torch"]
    except ImportError:
        impls = ["rdzv"]
        print("torch is not installed: measuring rdzv only")

    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        etcd = stack.enter_context(EtcdServer()) if "etcd-v2" in args.backend else None
        for backend in args.backend:
            for n in args.nodes:
                row: dict[str, Any] = {"scenario": "first", "backend": backend, "nodes": n}
                for impl in impls:
                    times, ok, counter = [], True, Counter()
                    for _ in range(args.repeat):
                        endpoint = (
                            etcd.get_endpoint()
                            if etcd is not None and backend == "etcd-v2"
                            else f"127.0.0.1:{free_port()}"
                        )
                        counter = Counter()
                        make = rdzv_handlers if impl == "rdzv" else torch_handlers
                        elapsed, good = first(partial(make, backend, endpoint, n, counter))
                        times.append(elapsed)
                        ok = ok and good
                    row[impl] = {
                        "seconds": statistics.median(times),
                        "ok": ok,
                        "requests_per_node": counter.requests / n,
                        "writes_per_node": counter.writes / n,
                        "bytes_written": counter.bytes_written,
                    }
                results.append(row)
                print_row(row, impls)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def print_row(row: dict[str, Any], impls: list[str]) -> None:
    cells = [f"{row['scenario']:6} {row['backend']:8} N={row['nodes']:<5}"]
    for impl in impls:
        r = row[impl]
        cells.append(
            f"{impl}: {r['seconds']:7.3f} s {r['requests_per_node']:6.1f} req/node "
            f"{r['writes_per_node']:5.1f} writes/node {r['bytes_written'] / 1024:8.1f} KiB"
            + ("" if r["ok"] else " FAILED")
        )
    if "torch" in row and row["rdzv"]["seconds"] > 0:
        cells.append(f"torch/rdzv: {row['torch']['seconds'] / row['rdzv']['seconds']:.1f}x")
    print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
