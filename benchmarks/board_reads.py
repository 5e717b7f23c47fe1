"""What one liveness check of a few suspects costs on the etcd backends' heartbeat board.

Starts its own etcd (v2 API on), writes ``--beats`` heartbeats under one run, and
times ``read_beats`` for 2 names (read by key) and for ``FEW_BEATS + 1`` names
(one listing of the whole board): client CPU and wall milliseconds a check. In a
re-formation every survivor about to write checks its suspects, so a check that
lists the board costs O(N), and all of them O(N^2). Nothing is asserted.

    python benchmarks/board_reads.py --beats 1024 --checks 100
"""

from __future__ import annotations

import argparse
import time

from rdzv import RendezvousParameters
from rdzv.backends.etcd import create_backend as create_v2
from rdzv.backends.etcd_v3 import create_backend as create_v3
from rdzv.etcd.server import EtcdServer

WARMUP = 5
"""Untimed checks before the clock starts."""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--beats", type=int, default=1024, help="heartbeats on the board (1024)")
    parser.add_argument("--checks", type=int, default=100, help="timed checks a cell (100)")
    args = parser.parse_args()
    with EtcdServer() as server:
        print(f"{'backend':<8} {'names':<13} {'cpu ms':>7} {'wall ms':>8}")
        for name, create in (("etcd-v2", create_v2), ("etcd-v3", create_v3)):
            params = RendezvousParameters(name, server.get_endpoint(), f"board-{name}", 1, 1)
            backend, _ = create(params)
            for k in range(args.beats):
                backend.beat(f"node-{k}", b"1733400000.123456", ttl=300)
            few = ["node-1", "node-2"]
            many = [f"node-{k}" for k in range(backend.FEW_BEATS + 1)]
            for names, label in ((few, "2 by key"), (many, f"{len(many)} listing")):
                for _ in range(WARMUP):
                    backend.read_beats(names)
                cpu, wall = time.process_time(), time.monotonic()
                for _ in range(args.checks):
                    backend.read_beats(names)
                cpu_ms = (time.process_time() - cpu) / args.checks * 1e3
                wall_ms = (time.monotonic() - wall) / args.checks * 1e3
                print(f"{name:<8} {label:<13} {cpu_ms:>7.2f} {wall_ms:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
