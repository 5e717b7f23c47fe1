"""What watching costs the backend: requests per second of one watcher on an idle round.

An idle round of N nodes (default 256): a complete state of N participants and one
heartbeat record per node, refreshed every keep-alive interval by a thread that
stands in for the nodes (their writes are not counted). One watcher
(:func:`rdzv.watch`'s :class:`~rdzv.watching.Watcher`) follows it for ``--seconds``;
every call it makes to the backend is counted (``wait_for_change`` counts one
request however long it waits).

    python benchmarks/watch_cost.py                       # c10d and etcd-v2, 256 nodes
    python benchmarks/watch_cost.py --backend c10d --interval 1 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rdzv import RendezvousParameters
from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState, encode_state
from rdzv.core.intents import encode_beat
from rdzv.etcd_server import EtcdServer
from rdzv.store.tcp import TCPStoreServer
from rdzv.watching import Snapshot, Watcher, open_source

COUNTED = ("get_state", "wait_for_change", "read_beats", "read_intents", "set_state")


def idle_state(nodes: int, now: float) -> RendezvousState:
    members = [NodeDesc(f"10.0.{i // 250}.{i % 250}", 1000 + i, 0) for i in range(nodes)]
    return RendezvousState(
        round=3,
        complete=True,
        world_size=nodes,
        participants={node: rank for rank, node in enumerate(members)},
        last_heartbeats=dict.fromkeys(members, now),
    )


def count_calls(backend: Any, counts: collections.Counter[str]) -> None:
    """Wrap the backend's methods on the instance, so that isinstance checks still hold."""
    for name in COUNTED:
        method = getattr(backend, name)

        def counted(*args: Any, _method: Callable[..., Any] = method, _name: str = name) -> Any:
            counts[_name] += 1
            return _method(*args)

        setattr(backend, name, counted)


def measure(params: RendezvousParameters, nodes: int, seconds: float) -> dict[str, float]:
    interval = float(params.config["keep_alive_interval"])
    writer = open_source(params)
    state = idle_state(nodes, time.time())
    writer.backend.set_state(encode_state(state))
    names = [str(node) for node in state.participants]
    stop = threading.Event()

    def beat() -> None:  # the nodes' heartbeats: not the watcher's requests
        while not stop.is_set():
            for name in names:
                writer.backend.beat(name, encode_beat(time.time()), 3 * interval)
            stop.wait(interval)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    counts: collections.Counter[str] = collections.Counter()
    settings = RendezvousSettings(
        params.run_id, 1, 1, keep_alive_interval=timedelta(seconds=interval)
    )

    def opener() -> Any:
        source = open_source(params)
        count_calls(source.backend, counts)
        return source

    watcher = Watcher(opener, settings, params.endpoint)
    snapshots = 0

    def follow() -> None:
        nonlocal snapshots
        for item in watcher:
            snapshots += isinstance(item, Snapshot)

    following = threading.Thread(target=follow, daemon=True)
    following.start()
    time.sleep(2 * interval)  # past the first reads: the steady state
    counts.clear()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    measured = dict(counts)
    watcher.stop()
    stop.set()
    following.join(timeout=10)
    beater.join(timeout=10)
    watcher.close()
    writer.close()
    result = {name: measured.get(name, 0) / elapsed for name in COUNTED}
    result["total"] = sum(measured.values()) / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", nargs="+", default=["c10d", "etcd-v2"])
    parser.add_argument("--nodes", type=int, default=256)
    parser.add_argument("--interval", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"one watcher, an idle complete round of {args.nodes} nodes, {args.seconds:g} s each")
    print(f"{'backend':<8} {'interval':>8}  {'req/s':>6}  " + "  ".join(COUNTED))
    for backend in args.backend:
        for interval in args.interval:
            run_id = f"bench-{backend}-{interval:g}"
            options: dict[str, Any] = {"keep_alive_interval": interval, "read_timeout": 10}
            if backend == "c10d":
                with TCPStoreServer("127.0.0.1", 0) as server:
                    params = RendezvousParameters(
                        "c10d", f"127.0.0.1:{server.port}", run_id, 1, 1, is_host=False, **options
                    )
                    rates = measure(params, args.nodes, args.seconds)
            else:
                with EtcdServer() as etcd:
                    params = RendezvousParameters(
                        backend, etcd.get_endpoint(), run_id, 1, 1, **options
                    )
                    rates = measure(params, args.nodes, args.seconds)
            detail = "  ".join(f"{rates[name]:.2f}" for name in COUNTED)
            print(f"{backend:<8} {interval:>7g}s  {rates['total']:>6.2f}  {detail}", flush=True)


if __name__ == "__main__":
    main()
