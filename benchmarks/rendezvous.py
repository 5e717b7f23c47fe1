"""Rendezvous benchmarks: rdzv against torch's dynamic rendezvous, measured in one run.

    python benchmarks/rendezvous.py                       # everything (long)
    python benchmarks/rendezvous.py --scenario first --backend c10d --nodes 8 256
    python benchmarks/rendezvous.py --scenario first --backend etcd-v2 etcd-v3 --nodes 256 \
        --impl rdzv --members 3              # also on a 3-member cluster, and the failover pause

Scenarios (see scenarios.py): ``first``, ``failure``, ``scaleup``, ``steady``; backends
``etcd-v2`` (an etcd started here), ``etcd-v3`` (rdzv only: an etcd started here with
its v2 API off, as etcd 3.6) and ``c10d`` (a TCP store master hosted here).
torch's cells run when torch is importable, up to ``--torch-max-nodes``. Nodes are
spread over worker processes (harness.py), each node with its own handler and
backend client. Prints a table per scenario and the targets, and writes every
result to a JSON file (``--json``, default ``benchmarks/results/<timestamp>.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import failover_pauses
from harness import (
    BACKENDS,
    IMPLS,
    CellTimeout,
    WorkerError,
    Workers,
    store_master,
)
from scenarios import (
    RUNNERS,
    SCENARIOS,
    STUCK_KEPT,
    Options,
    Run,
    RunResult,
    stuck_summary,
    worker_count,
)

from rdzv.etcd.cluster import EtcdCluster
from rdzv.etcd_server import EtcdServer

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_NODES = (2, 8, 32, 128, 256, 512, 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    add("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    add("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    add("--nodes", nargs="+", type=int, default=list(DEFAULT_NODES), help="values of N")
    add("--repeat", type=int, default=3, help="runs per cell; tables show the median")
    add("--time-limit", type=float, default=300, help="seconds per rdzv run before DNF")
    add("--torch-time-limit", type=float, default=120, help="seconds per torch run before DNF")
    add("--torch-max-nodes", type=int, default=256, help="skip torch above this N")
    add("--poll", type=float, default=0.25, help="agent poll interval (failure, scaleup)")
    add("--failure-interval", type=float, default=1.0, help="keep-alive interval in failure")
    add("--failure-attempts", type=int, default=3, help="keep_alive_max_attempt in failure")
    add("--failure-last-call", type=float, default=0.1)
    add("--failure-wait", type=float, default=30, help="seconds survivors poll before DNF")
    add("--scaleup-last-call", type=float, default=1.0)
    add("--scaleup-wait", type=float, default=30, help="seconds the others poll before DNF")
    add("--steady-interval", type=float, default=5.0, help="keep-alive interval in steady")
    add("--steady-duration", type=float, default=30.0)
    add("--steady-poll", type=float, default=5.0, help="num_nodes_waiting poll in steady")
    add(
        "--torch-no-store-sharing",
        action="store_true",
        help="set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torch: each round's rank 0 then "
        "publishes the master address, which a node new in a later round waits for",
    )
    add(
        "--members",
        type=int,
        default=1,
        help="above 1: the etcd backends' cells run again on a cluster of that many members "
        "(rows 'etcd-v2 xN'), and the failover pause is measured",
    )
    add("--failover-nodes", type=int, default=32, help="N of the failover pause (--members)")
    add(
        "--etcd-data-under",
        type=Path,
        help="make the single etcd's data directory under this one (a tmpfs such as "
        "/dev/shm shows what etcd's disk costs); default: the system's temporary directory",
    )
    add(
        "--switch-interval",
        type=float,
        help="GIL switch interval of the worker processes, seconds (default: Python's "
        "0.005): a worker runs up to a thousand node threads, which one machine each would "
        "not share; a longer interval cuts their hand-offs of the GIL",
    )
    add("--nodes-per-worker", type=int, default=64)
    add("--max-workers", type=int, default=4)
    add("--profile", type=Path, help="directory: workers save yappi CPU profiles there")
    add("--json", type=Path, help="result file (default benchmarks/results/<timestamp>.json)")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        poll=args.poll,
        failure_interval=args.failure_interval,
        failure_attempts=args.failure_attempts,
        failure_last_call=args.failure_last_call,
        failure_wait=args.failure_wait,
        scaleup_last_call=args.scaleup_last_call,
        scaleup_wait=args.scaleup_wait,
        steady_interval=args.steady_interval,
        steady_duration=args.steady_duration,
        steady_poll=args.steady_poll,
        nodes_per_worker=args.nodes_per_worker,
        max_workers=args.max_workers,
        torch_store_sharing=not args.torch_no_store_sharing,
        switch_interval=args.switch_interval,
    )


@contextlib.contextmanager
def endpoint_for(impl: str, backend: str, etcds: dict[str, str]) -> Iterator[str]:
    if backend in etcds:
        yield etcds[backend]
    else:
        with store_master(impl) as endpoint:
            yield endpoint


def run_once(
    scenario: str,
    impl: str,
    backend: str,
    n: int,
    limit: float,
    options: Options,
    etcds: dict[str, str],
    profile: str | None,
) -> RunResult:
    """One repeat on fresh workers; they are killed when it ends, however it ends.

    Each phase of the run (the unmeasured first round of a multi-phase scenario,
    then the measured phase) gets ``limit`` seconds.
    """
    workers = Workers(worker_count(n, options), profile, options.switch_interval)
    run: Run | None = None
    try:
        with contextlib.ExitStack() as stack:
            endpoint = stack.enter_context(endpoint_for(impl, backend, etcds))
            stack.callback(workers.stop)  # before the store master goes
            try:
                workers.start(time.monotonic() + 120)
                run = Run(impl, backend, n, endpoint, workers, limit, options)
                return RUNNERS[scenario](run)
            except CellTimeout:
                # Asked here, while the workers still run: the stack stops them on its way
                # out (asked after that, no worker ever answered).
                status = workers.status()
                phase = run.phase if run is not None else "start-up"
                stuck = status["stuck"]
                return RunResult(
                    finished=False,
                    counts=status["counts"],
                    note=f"did not finish in {limit:g} s ({phase}: {status['completed']} of "
                    f"{n} nodes through, as {status['answered']} of {workers.count} workers "
                    f"told); {len(stuck)} still running: {stuck_summary(stuck)}",
                    stuck=stuck[:STUCK_KEPT],
                )
    except WorkerError as e:
        return RunResult(note=str(e).strip().splitlines()[0])
    finally:
        workers.stop()


def summarize(cell: dict[str, Any], runs: list[RunResult]) -> dict[str, Any]:
    """The cell's record: medians over the runs that finished, means of their counts."""
    done = [r for r in runs if r.finished and r.ok and r.seconds is not None]
    n = cell["nodes"]
    cell["runs"] = [vars(r) for r in runs]
    cell["finished"] = sum(r.finished for r in runs)
    cell["ok"] = bool(runs) and all(r.ok for r in runs)
    cell["status"] = (
        "ok" if cell["ok"] else "DNF" if any(not r.finished for r in runs) else "FAILED"
    )
    cell["note"] = next((r.note for r in runs if r.note), "")
    if not done:
        return cell
    cell["seconds"] = statistics.median(r.seconds for r in done if r.seconds is not None)
    for key in sorted({k for r in done for k in r.extra}):
        values = [r.extra[key] for r in done if r.extra.get(key) is not None]
        if values:
            cell[key] = statistics.median(values)
    for key in ("requests", "writes", "bytes_written", "bytes_read"):
        cell[key] = statistics.mean(r.counts[key] for r in done)
    cell["requests_per_node"] = cell["requests"] / n
    cell["writes_per_node"] = cell["writes"] / n
    ops: dict[str, float] = {}
    for r in done:
        for op, count in r.counts["ops"].items():
            ops[op] = ops.get(op, 0) + count / len(done) / n
    cell["ops_per_node"] = dict(sorted(ops.items()))
    return cell


def run_cell(
    scenario: str,
    impl: str,
    backend: str,
    n: int,
    args: argparse.Namespace,
    options: Options,
    etcds: dict[str, str],
    label: str | None = None,
) -> dict[str, Any]:
    """One cell; ``etcds`` maps each etcd backend to its endpoint, ``label`` names the row."""
    cell: dict[str, Any] = {
        "scenario": scenario,
        "backend": label or backend,
        "nodes": n,
        "impl": impl,
        "workers": worker_count(n, options),
    }
    if impl == "torch" and n > args.torch_max_nodes:
        cell["status"] = "skipped"
        cell["note"] = f"torch skipped above --torch-max-nodes {args.torch_max_nodes}"
        return cell
    if impl == "torch" and backend == "etcd-v3":
        cell["status"] = "skipped"
        cell["note"] = "torch has no etcd v3 backend"
        return cell
    limit = args.torch_time_limit if impl == "torch" else args.time_limit
    if scenario == "steady":
        limit += options.steady_duration
    runs: list[RunResult] = []
    for _ in range(args.repeat):
        profile = None
        if args.profile is not None:
            profile = str(args.profile / f"{scenario}-{backend}-{n}-{impl}-{len(runs)}")
            os.makedirs(profile, exist_ok=True)
        result = run_once(scenario, impl, backend, n, limit, options, etcds, profile)
        runs.append(result)
        seconds = "DNF" if result.seconds is None else f"{result.seconds:.3f} s"
        print(f"  {scenario} {label or backend} N={n} {impl}: {seconds} {result.note}", flush=True)
        if not result.finished:
            break  # a run that timed out once is not worth its time limit again
    return summarize(cell, runs)


def _seconds(cell: dict[str, Any], key: str = "seconds") -> str:
    if cell.get("status") == "skipped":
        return "skip"
    if key not in cell:
        return str(cell.get("status", "-"))
    if cell[key] is None:
        return "-"
    return f"{cell[key]:.3f}" + ("" if cell["ok"] else "*")


def _per_node(cell: dict[str, Any], key: str, digits: int = 1) -> str:
    return f"{cell[key]:.{digits}f}" if key in cell else "-"


def _kib(cell: dict[str, Any], key: str) -> str:
    return f"{cell[key] / 1024:.1f}" if key in cell else "-"


def _ratio(torch: dict[str, Any] | None, rdzv: dict[str, Any] | None, key: str) -> str:
    if torch is None or rdzv is None or key not in rdzv:
        return "-"
    if torch.get("status") in ("DNF", "FAILED"):
        return f"torch {torch['status']}"
    if key not in torch or not rdzv[key]:
        return "-"
    return f"{torch[key] / rdzv[key]:.1f}x"


COLUMNS: dict[str, list[tuple[str, Any]]] = {
    "first": [
        ("s", _seconds),
        ("req/node", lambda c: _per_node(c, "requests_per_node")),
        ("wr/node", lambda c: _per_node(c, "writes_per_node", 2)),
        ("KiB wr", lambda c: _kib(c, "bytes_written")),
    ],
    "failure": [
        ("seen p50", lambda c: _seconds(c, "seen_median")),
        ("seen s", lambda c: _seconds(c, "seen")),
        ("done p50", lambda c: _seconds(c, "done_median")),
        ("done s", _seconds),
        ("req/node", lambda c: _per_node(c, "requests_per_node")),
        ("wr/node", lambda c: _per_node(c, "writes_per_node", 2)),
        ("KiB wr", lambda c: _kib(c, "bytes_written")),
    ],
    "scaleup": [
        ("seen s", lambda c: _seconds(c, "seen")),
        ("done s", _seconds),
        ("rounds", lambda c: _per_node(c, "rounds", 0)),
        ("req/node", lambda c: _per_node(c, "requests_per_node")),
        ("wr/node", lambda c: _per_node(c, "writes_per_node", 2)),
        ("KiB wr", lambda c: _kib(c, "bytes_written")),
    ],
    "steady": [
        ("req/s", lambda c: _per_node(c, "requests_per_second")),
        ("wr/s", lambda c: _per_node(c, "writes_per_second")),
        ("KiB wr/s", lambda c: _kib(c, "bytes_written_per_second")),
        ("KiB rd/s", lambda c: _kib(c, "bytes_read_per_second")),
    ],
}
RATIO_KEY = {
    "first": "seconds",
    "failure": "seconds",
    "scaleup": "seconds",
    "steady": "bytes_written_per_second",
}


def table(scenario: str, cells: list[dict[str, Any]], impls: list[str]) -> str:
    """The scenario's table: one row per backend and N, a column group per implementation."""
    columns = COLUMNS[scenario]
    header = ["backend", "N"]
    if scenario == "failure":
        header.append("target s")
    for impl in impls:
        header += [f"{impl} {name}" for name, _ in columns]
    ratio_name = "torch/rdzv " + ("bytes/s" if scenario == "steady" else "s")
    if len(impls) == 2:
        header.append(ratio_name)
    rows = [header]
    keys = list(
        dict.fromkeys((c["backend"], c["nodes"]) for c in cells if c["scenario"] == scenario)
    )
    notes: list[str] = []
    for backend, n in keys:
        found = {
            c["impl"]: c
            for c in cells
            if (c["scenario"], c["backend"], c["nodes"]) == (scenario, backend, n)
        }
        row = [backend, str(n)]
        if scenario == "failure":
            target = next((c["target"] for c in found.values() if "target" in c), None)
            row.append("-" if target is None else f"{target:.1f}")
        for impl in impls:
            cell = found.get(impl)
            row += [render(cell) if cell else "-" for _, render in columns]
            if cell and cell.get("note") and cell.get("status") != "skipped":
                notes.append(f"{backend} N={n} {impl} ({cell['status']}): {cell['note']}")
        if len(impls) == 2:
            row.append(_ratio(found.get("torch"), found.get("rdzv"), RATIO_KEY[scenario]))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"== {scenario} ==", *lines, *(f"  note: {n}" for n in notes)])


def _find(cells: list[dict[str, Any]], scenario: str, backend: str, n: int, impl: str) -> Any:
    for c in cells:
        if (c["scenario"], c["backend"], c["nodes"], c["impl"]) == (scenario, backend, n, impl):
            return c
    return None


def targets(cells: list[dict[str, Any]], backends: list[str]) -> list[dict[str, str]]:
    """Each target, per backend: MET, NOT MET or NOT MEASURED, with the figures."""
    out: list[dict[str, str]] = []

    def add(name: str, backend: str, met: bool | None, detail: str) -> None:
        status = "NOT MEASURED" if met is None else "MET" if met else "NOT MET"
        out.append({"target": name, "backend": backend, "status": status, "detail": detail})

    for b in backends:
        rdzv, torch = _find(cells, "first", b, 8, "rdzv"), _find(cells, "first", b, 8, "torch")
        if rdzv and torch and "seconds" in rdzv and "seconds" in torch:
            ratio = torch["seconds"] / rdzv["seconds"]
            detail = f"torch {torch['seconds']:.3f} s / rdzv {rdzv['seconds']:.3f} s = {ratio:.1f}x"
            add("first N=8: >=10x faster than torch", b, ratio >= 10, detail)
        else:
            add("first N=8: >=10x faster than torch", b, None, "needs both cells")

        rdzv = _find(cells, "first", b, 1024, "rdzv")
        if rdzv and rdzv.get("status") in ("ok", "DNF", "FAILED"):
            s = rdzv.get("seconds")
            met = s is not None and s < 20 and rdzv["ok"]
            add("first N=1024: < 20 s", b, met, f"{s:.2f} s" if s else rdzv["note"])
        else:
            add("first N=1024: < 20 s", b, None, "cell not run")

        rdzv, torch = _find(cells, "first", b, 256, "rdzv"), _find(cells, "first", b, 256, "torch")
        name = "first N=256: >=5x faster than torch (or torch fails)"
        if rdzv and torch and rdzv.get("ok") and torch.get("status") in ("DNF", "FAILED"):
            add(name, b, True, f"rdzv {rdzv['seconds']:.2f} s, torch {torch['status']}")
        elif rdzv and torch and "seconds" in rdzv and "seconds" in torch:
            ratio = torch["seconds"] / rdzv["seconds"]
            detail = f"torch {torch['seconds']:.2f} s / rdzv {rdzv['seconds']:.2f} s = {ratio:.1f}x"
            add(name, b, ratio >= 5, detail)
        else:
            add(name, b, None, "needs both cells")

        rdzv = _find(cells, "first", b, 256, "rdzv")
        if rdzv and "writes_per_node" in rdzv:
            w = rdzv["writes_per_node"]
            add("first N=256: <= 3 backend writes per node", b, w <= 3, f"{w:.2f} writes/node")
        else:
            add("first N=256: <= 3 backend writes per node", b, None, "cell not run")

        rdzv, torch = (
            _find(cells, "steady", b, 256, "rdzv"),
            _find(cells, "steady", b, 256, "torch"),
        )
        name = "steady N=256: bytes written/s <= 1/10 of torch's"
        key = "bytes_written_per_second"
        if rdzv and torch and key in rdzv and key in torch:
            r, t = rdzv[key], torch[key]
            detail = (
                f"rdzv {r / 1024:.2f} KiB/s, torch {t / 1024:.1f} KiB/s ({t / max(r, 1e-9):.0f}x)"
            )
            add(name, b, r <= t / 10, detail)
        else:
            add(name, b, None, "needs both cells")

        for cell in cells:
            if (cell["scenario"], cell["backend"], cell["impl"]) != ("failure", b, "rdzv"):
                continue
            name = f"failure N={cell['nodes']}: survivors done within expiry + 1 s"
            s, target = cell.get("seconds"), cell.get("target")
            if s is None or target is None:
                add(name, b, False, f"{cell['status']}: {cell['note']}")
            else:
                add(name, b, s <= target, f"{s:.2f} s (target {target:.1f} s)")
    return out


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def torch_importable() -> str | None:
    """torch's version when its rendezvous imports, else None."""
    try:
        import torch
        import torch.distributed.elastic.rendezvous.dynamic_rendezvous
    except ImportError:
        return None
    return str(torch.__version__)


def pauses(backends: list[str], args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Measure and print the failover pause of each etcd backend; keep it in ``meta``."""
    print(f"== failover pause (leader SIGKILLed, {args.members} members) ==")
    print(f"{'backend':>8}  {'N':>4}  {'median s':>8}  runs")
    found = []
    for backend in backends:
        result = failover_pauses(backend, args.members, args.failover_nodes, args.repeat)
        found.append(result)
        runs = " ".join(f"{p:.2f}" for p in result["pauses"])
        print(f"{backend:>8}  {result['nodes']:>4}  {result['median']:>8.2f}  {runs}", flush=True)
    meta["failover_pause"] = found


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop workers


@contextlib.contextmanager
def _data_dir(under: Path) -> Iterator[str]:
    """A new directory under ``under`` for one etcd's data, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rdzv-bench-etcd-", dir=under) as path:
        yield path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile is not None and importlib.util.find_spec("yappi") is None:
        # Checked here: a worker that failed to import it left the run waiting.
        sys.exit("--profile needs yappi in this interpreter: pip install yappi")
    signal.signal(signal.SIGTERM, _terminate)
    options = options_from(args)
    impls = list(args.impl)
    meta = metadata(args)
    if "torch" in impls:
        version = torch_importable()
        meta["torch"] = version
        if version is None:
            impls.remove("torch")
            print("torch is not importable: measuring rdzv only", flush=True)
    path = args.json or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    cells: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            # One etcd per etcd backend: etcd-v3's has no v2 API, as etcd 3.6.
            etcd_backends = [b for b in ("etcd-v2", "etcd-v3") if b in args.backend]
            under = args.etcd_data_under
            etcds = {
                backend: stack.enter_context(
                    EtcdServer(
                        None if under is None else stack.enter_context(_data_dir(under)),
                        enable_v2=backend == "etcd-v2",
                    )
                ).get_endpoint()
                for backend in etcd_backends
            }
            clusters = {
                backend: stack.enter_context(
                    EtcdCluster(args.members, enable_v2=backend == "etcd-v2")
                ).endpoint
                for backend in etcd_backends
                if args.members > 1
            }
            for scenario in args.scenario:
                for backend in args.backend:
                    for n in args.nodes:
                        if n < 2 and scenario != "first":
                            continue
                        for impl in impls:
                            cells.append(run_cell(scenario, impl, backend, n, args, options, etcds))
                            if backend in clusters:
                                label = f"{backend} x{args.members}"
                                cells.append(
                                    run_cell(
                                        scenario, impl, backend, n, args, options, clusters, label
                                    )
                                )
                print(table(scenario, cells, impls), flush=True)
            if clusters:
                stack.close()  # the clusters' members go before the pauses start their own
                pauses(etcd_backends, args, meta)
    finally:
        if cells:
            results = targets(cells, args.backend)
            print("\n== all tables ==")
            for scenario in args.scenario:
                print(table(scenario, cells, impls), "\n")
            print("== targets (reported, not asserted) ==")
            for t in results:
                print(f"{t['status']:>12}  {t['backend']:8} {t['target']}: {t['detail']}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps({"meta": meta, "cells": cells, "targets": results}, indent=2)
            )
            print(f"results written to {path}")


if __name__ == "__main__":
    main()
