"""What one ``num_nodes_waiting()`` poll of an unchanged state costs, per backend.

A launcher polls every node's handler every few tenths of a second (torchrun: 0.1 s),
so on a thousand nodes the polls are most of what a quiet job asks of its backend.
Starts its own etcd (v2 API on, so both etcd backends meet one server) and a TCP
store in this process, forms a round of ``--nodes`` handlers (threads), and times
``--polls`` polls of one of them: wall and CPU microseconds of this process a
poll, and etcd's CPU a poll (from ``/proc``, at 10 ms granularity). For ``c10d``
the store's server runs in this process, so its CPU is in the client column.
Nothing is asserted.

    python benchmarks/poll_cost.py --nodes 256 --polls 2000
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid

from rdzv import RendezvousHandler, RendezvousParameters, get_rendezvous_handler
from rdzv.etcd.server import EtcdServer
from rdzv.store.tcp import TCPStore

WARMUP = 100
"""Untimed polls before the clock starts."""


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def form_round(params: list[RendezvousParameters]) -> list[RendezvousHandler]:
    """A handler per parameters, all in one round (a thread each)."""
    handlers = [get_rendezvous_handler(p) for p in params]
    threads = [threading.Thread(target=h.next_rendezvous) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return handlers


def measure(handler: RendezvousHandler, polls: int, etcd_pid: int | None) -> tuple[float, ...]:
    """Wall, client CPU and etcd CPU microseconds a poll."""
    for _ in range(WARMUP):
        handler.num_nodes_waiting()
    etcd_before = process_cpu(etcd_pid) if etcd_pid else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(polls):
        handler.num_nodes_waiting()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    etcd = process_cpu(etcd_pid) - etcd_before if etcd_pid else 0.0
    return wall / polls * 1e6, cpu / polls * 1e6, etcd / polls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, default=256, help="nodes in the round (256)")
    parser.add_argument("--polls", type=int, default=2000, help="timed polls a backend (2000)")
    parser.add_argument(
        "--backend", nargs="+", default=["c10d", "etcd-v2", "etcd-v3"], help="backends to time"
    )
    args = parser.parse_args()
    print(f"{args.nodes} nodes in the round, {args.polls} polls of one of them")
    print(f"{'backend':<8} {'wall us':>8} {'cpu us':>8} {'etcd us':>8}")
    with EtcdServer() as server:
        for backend in args.backend:
            run_id = f"poll-{uuid.uuid4().hex[:8]}"
            store: TCPStore | None = None
            if backend == "c10d":
                store = TCPStore("127.0.0.1", 0, is_master=True)
                endpoint, options = f"127.0.0.1:{store.port}", {"is_host": "false"}
            else:
                endpoint, options = server.get_endpoint(), {}
            params = RendezvousParameters(
                backend, endpoint, run_id, args.nodes, args.nodes, "127.0.0.1", **options
            )
            handlers = form_round([params] * args.nodes)
            pid = server.pid if backend != "c10d" else None
            wall, cpu, etcd = measure(handlers[-1], args.polls, pid)
            etcd_column = f"{etcd:8.0f}" if pid else f"{'-':>8}"
            print(f"{backend:<8} {wall:8.0f} {cpu:8.0f} {etcd_column}", flush=True)
            for handler in handlers:
                handler.shutdown()
            if store is not None:
                store.close()


if __name__ == "__main__":
    main()
