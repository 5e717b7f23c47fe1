"""Time a legacy etcd rendezvous (backend ``etcd``) of N node processes, rdzv vs torch.

Run: ``python benchmarks/legacy_etcd.py [--nodes 4] [--repeat 5]``. Starts its own
etcd on loopback (rdzv.EtcdServer). Each repetition starts N fresh processes of
one library on a new run id (``min_nodes = max_nodes = N``, so no last call),
lets each build its handler, then tells all of them to go at once and measures
until the last one has its rank: the time of the rendezvous itself, without
process start-up or imports. torch's column is skipped when torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import uuid

from rdzv.etcd_server import EtcdServer


def node(config: dict[str, object]) -> None:
    """One node: build the handler, say ready, wait for ``go``, rendezvous, report."""
    args = ("etcd", config["endpoint"], config["run_id"], config["nodes"], config["nodes"])
    options = {"etcd_prefix": config["prefix"], "timeout": 120}
    if config["impl"] == "torch":
        from torch.distributed.elastic.rendezvous import RendezvousParameters
        from torch.distributed.elastic.rendezvous.etcd_rendezvous import create_rdzv_handler

        handler = create_rdzv_handler(RendezvousParameters(*args, **options))
    else:
        from rdzv import RendezvousParameters as Params
        from rdzv import get_rendezvous_handler

        handler = get_rendezvous_handler(Params(*args, **options))
    print("ready", flush=True)
    sys.stdin.readline()
    info = handler.next_rendezvous()
    print(json.dumps({"rank": info.rank, "world_size": info.world_size}), flush=True)
    sys.stdin.readline()  # stay in the round until every node has reported


def one_rendezvous(impl: str, endpoint: str, nodes: int) -> float:
    config = {
        "impl": impl,
        "endpoint": endpoint,
        "run_id": uuid.uuid4().hex[:8],
        "nodes": nodes,
        "prefix": f"/bench-legacy/{uuid.uuid4().hex[:8]}",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--node", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(nodes)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {impl} node failed to start")
        started = time.perf_counter()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        ranks = []
        for process in processes:
            assert process.stdout is not None
            ranks.append(json.loads(process.stdout.readline())["rank"])
        elapsed = time.perf_counter() - started
        if sorted(ranks) != list(range(nodes)):
            raise RuntimeError(f"{impl} nodes got ranks {ranks}")
        return elapsed
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        node(json.loads(args.node))
        return

    impls = ["rdzv"]
    if importlib.util.find_spec("torch") is not None:
        impls.append("torch")
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    with EtcdServer() as server:
        # Alternate the libraries so that both see the same machine load.
        for _ in range(args.repeat):
            for impl in impls:
                times[impl].append(one_rendezvous(impl, server.get_endpoint(), args.nodes))

    print(f"legacy etcd rendezvous of {args.nodes} processes, {args.repeat} runs each")
    print(f"{'library':<8} {'median':>9} {'min':>9} {'max':>9}")
    for impl in ("rdzv", "torch"):
        if impl not in times:
            print(f"{impl:<8} {'not installed':>9}")
            continue
        runs = times[impl]
        print(f"{impl:<8} {statistics.median(runs):8.3f}s {min(runs):8.3f}s {max(runs):8.3f}s")
    if "torch" in times:
        ratio = statistics.median(times["torch"]) / statistics.median(times["rdzv"])
        print(f"torch / rdzv (median): {ratio:.1f}x")


if __name__ == "__main__":
    main()
