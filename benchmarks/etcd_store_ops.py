"""Time EtcdServer start-up and sequential EtcdStore operations, rdzv vs torch.

Run: ``python benchmarks/etcd_store_ops.py [--ops 1000] [--starts 5]``. Starts its
own etcd on loopback (rdzv.EtcdServer); torch's column is skipped when torch is
not installed. Each op is a set of a new key followed by a get of it, so the store
grows as the run goes: torch's get reads the whole prefix directory each time,
rdzv's reads the one key.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from rdzv.etcd_server import EtcdServer
from rdzv.store.etcd import EtcdStore


def time_starts(count: int) -> list[float]:
    times = []
    for _ in range(count):
        server = EtcdServer()
        started = time.perf_counter()
        server.start()
        times.append(time.perf_counter() - started)
        server.stop()
    return times


def time_set_get(store: Any, ops: int) -> float:
    started = time.perf_counter()
    for i in range(ops):
        key = f"key-{i}"
        store.set(key, b"value-%d" % i)
        if store.get(key) != b"value-%d" % i:
            raise AssertionError(f"{key} read back wrong")
    return time.perf_counter() - started


def time_add(store: Any, ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        store.add("counter", 1)
    return time.perf_counter() - started


def torch_store_factory() -> Callable[[Any, str], Any] | None:
    try:
        from torch.distributed.elastic.rendezvous.etcd_store import (
            EtcdStore as TorchEtcdStore,
        )
    except ImportError:
        return None
    return TorchEtcdStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    starts = time_starts(args.starts)
    print(
        f"EtcdServer.start() until ready: median {statistics.median(starts) * 1000:.0f} ms, "
        f"min {min(starts) * 1000:.0f} ms, max {max(starts) * 1000:.0f} ms "
        f"over {args.starts} starts"
    )

    torch_factory = torch_store_factory()
    with EtcdServer() as server:
        client = server.get_client()
        run = uuid.uuid4().hex[:8]
        rows: list[tuple[str, float, float | None]] = []
        ours = EtcdStore(client, f"/bench-{run}/rdzv")
        theirs = torch_factory(client, f"/bench-{run}/torch") if torch_factory else None
        for label, measure in (
            (f"{args.ops} x (set new key + get it)", time_set_get),
            (f"{args.ops} x add(counter, 1)", time_add),
        ):
            mine = measure(ours, args.ops)
            other = measure(theirs, args.ops) if theirs is not None else None
            rows.append((label, mine, other))

    print()
    print(f"{'operation':<36} {'rdzv':>12} {'torch':>12}")
    for label, mine, other in rows:
        other_text = f"{other:10.3f} s" if other is not None else "not installed"
        print(f"{label:<36} {mine:10.3f} s {other_text:>12}")
    for label, mine, other in rows:
        if other is not None:
            print(
                f"  {label}: rdzv {1000 * mine / args.ops:.2f} ms/op, "
                f"torch {1000 * other / args.ops:.2f} ms/op ({other / mine:.1f}x)"
            )


if __name__ == "__main__":
    main()
