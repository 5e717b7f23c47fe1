"""Scale by simulation: the real protocol at 1,000 to 100,000 nodes, in virtual time.

    python benchmarks/simulate.py                                  # the whole table
    python benchmarks/simulate.py --scenario first --nodes 1000 10000 --latency tcp
    nox -s simulate -- --nodes 1000 10000 100000

Each cell runs one simulated job (rdzv.sim) on a latency model of etcd (writes ~1 ms,
fsynced, one member) or of rdzv's TCP store (~20 us a request, one event loop):
every node runs the real protocol and the shell's own perform(), and the backend's
server applies requests one at a time, so load shows up as queueing. Scenarios, as
in benchmarks/rendezvous.py:

- first:    N nodes start within 0.1 s, min = max = N: seconds until all have a rank;
- failure:  a round of N (min N-1, keep-alive 1 s x 3, last call 0.1 s); one node dies:
            seconds from its death until the N-1 survivors are in a new round;
- scaleup:  a round of N-1 (min N-1, max N, last call 1 s); one node arrives:
            seconds from its arrival until all N are in one round.

With --step-ms, the nodes share a host of --cores CPUs (rdzv.sim.Host), as the
benchmarks run them: every step of a node (handling a reply, a timer) takes that
much CPU, and waits for a free core; --record-us adds the CPU each record of a log
or board read costs the node that parses it. "cpu wait" is the mean wait of a step;
"false" counts live nodes dropped while their heartbeat was on the board (none, if
sound).

Per node: backend requests, writes, KiB written and read (state, intents, heartbeats,
watch notifications), and the server's busy time. "wall" is what the simulation
itself took on this machine. A cell that the simulation cannot finish within
--budget seconds of wall time shows "budget", with how far into the run it got.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rdzv.sim import ETCD, TCP_STORE, Host, Latency, Scenario, World, failure_scenario
from rdzv.sim.sharing import SharedStates

LATENCIES: dict[str, Latency] = {"etcd": ETCD, "tcp": TCP_STORE}
SEGMENTS = {"etcd": 256, "tcp": 1500}  # records a log segment holds (etcd-v2, c10d)
RESULTS = Path(__file__).resolve().parent / "results"


def _job(
    scenario: str, n: int, latency: str, first_done: float, host: Host | None
) -> tuple[Scenario, float]:
    """The scenario, and the moment its measurement starts."""
    common: dict[str, Any] = {
        "host": host,
        "latency": LATENCIES[latency],
        "segment_records": SEGMENTS[latency],
        "arrival": 0.1,
        "join_timeout": 3600.0,
        "reconnect_window": 60.0,
    }
    if scenario == "first":
        return Scenario(nodes=n, min_nodes=n, max_nodes=n, interval=5.0, **common), 0.0
    if scenario == "failure":
        crash = first_done + 2.0
        job = failure_scenario(n, crash, LATENCIES[latency], SEGMENTS[latency], host=host)
        return job, crash
    arrival = first_done + 2.0
    job = Scenario(
        nodes=n - 1,
        min_nodes=n - 1,
        max_nodes=n,
        interval=5.0,
        last_call=1.0,
        poll=0.25,
        late=(arrival,),
        **common,
    )
    return job, arrival


def run_cell(
    scenario: str,
    n: int,
    latency: str,
    first_done: float,
    budget: float,
    host: Host | None = None,
) -> dict[str, Any]:
    job, start = _job(scenario, n, latency, first_done, host)
    world = World(job, seed=n, shared=SharedStates())
    began = time.perf_counter()
    result = world.run(stop=lambda: time.perf_counter() - began > budget)
    wall = time.perf_counter() - began
    survivors = [i for i in range(job.total_nodes) if i not in {c for c, _ in job.faults.crashes}]
    done = [result.last_done_at.get(i) for i in survivors]
    finished = all(t is not None and t >= start for t in done) and not result.violations
    traffic = result.traffic
    nodes = job.total_nodes
    return {
        "scenario": scenario,
        "latency": latency,
        "nodes": n,
        "seconds": max(t for t in done if t is not None) - start if finished else None,
        "stopped": result.stopped,
        "simulated": result.ended_at,
        "first_round": max(result.done_at.values(), default=0.0),
        "requests_per_node": traffic.requests / nodes,
        "writes_per_node": traffic.writes / nodes,
        "kib_written_per_node": traffic.bytes_written / nodes / 1024,
        "kib_read_per_node": traffic.bytes_read / nodes / 1024,
        "lost_writes": traffic.lost_writes,
        "server_busy": world.server.busy,
        "rounds": result.rounds,
        "steps": result.steps,
        "false_deaths": result.false_deaths,
        "cpu_wait": 0.0 if world.cores is None else world.cores.waited / max(result.steps, 1),
        "wall": wall,
        "violations": list(result.violations),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario",
        nargs="+",
        default=["first", "failure", "scaleup"],
        choices=["first", "failure", "scaleup"],
    )
    parser.add_argument("--nodes", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--latency", nargs="+", default=["tcp", "etcd"], choices=list(LATENCIES))
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds of wall time per cell (900)"
    )
    parser.add_argument(
        "--step-ms", type=float, help="CPU milliseconds a node's step takes on a shared host"
    )
    parser.add_argument("--cores", type=int, default=2, help="the shared host's cores (2)")
    parser.add_argument(
        "--record-us",
        type=float,
        default=0.0,
        help="CPU microseconds a record of a log or board read costs (with --step-ms)",
    )
    args = parser.parse_args(argv)
    if args.record_us and args.step_ms is None:
        parser.error("--record-us needs --step-ms: it is CPU time on the shared host")
    host = (
        None
        if args.step_ms is None
        else Host(args.cores, args.step_ms / 1000, args.record_us / 1e6)
    )
    rows: list[dict[str, Any]] = []
    header = (
        f"{'scenario':<9}{'backend':<6}{'N':>8}{'sim s':>9}{'req/node':>10}{'wr/node':>9}"
        f"{'KiB wr/n':>10}{'KiB rd/n':>11}{'server s':>10}{'lost':>7}{'wall s':>9}"
        f"{'cpu wait':>10}{'false':>7}"
    )
    print(header)
    print("-" * len(header))
    for latency in args.latency:
        for n in args.nodes:
            first = run_cell("first", n, latency, 0.0, args.budget, host)
            for scenario in args.scenario:
                if scenario == "first":
                    row = first
                elif first["seconds"] is None:
                    print(f"{scenario:<9}{latency:<6}{n:>8}  not run: the first round did not form")
                    continue
                else:
                    row = run_cell(scenario, n, latency, first["first_round"], args.budget, host)
                rows.append(row)
                seconds = "DNF" if row["seconds"] is None else f"{row['seconds']:.2f}"
                if row["stopped"]:
                    seconds = "budget"
                print(
                    f"{scenario:<9}{latency:<6}{n:>8}{seconds:>9}"
                    f"{row['requests_per_node']:>10.1f}{row['writes_per_node']:>9.2f}"
                    f"{row['kib_written_per_node']:>10.2f}{row['kib_read_per_node']:>11.1f}"
                    f"{row['server_busy']:>10.2f}{row['lost_writes']:>7}{row['wall']:>9.1f}"
                    f"{1000 * row['cpu_wait']:>8.0f}ms{row['false_deaths']:>7}",
                    flush=True,
                )
                for violation in row["violations"][:3]:
                    print(f"  ! {violation}", flush=True)
                if row["stopped"]:
                    print(
                        f"  ! over the budget of {args.budget:g} s of wall time, "
                        f"{row['simulated']:.2f} s into the simulated run",
                        flush=True,
                    )
    out = args.json or RESULTS / f"simulate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
