"""256 store clients at once, on the TCP store and on EtcdStore: no error, no add lost.

The clients are 4 processes of 64 threads, each thread with a client of its own
(``_load_worker.py``). The run lasts ``$RDZV_FAULTS_LOAD_SECONDS`` (10 s by
default, as in CI; ``benchmarks/faults.py`` runs 60 s).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import etcd
from _faults import HERE, LOOPBACK, StoreServerProcess

from rdzv.etcd_server import EtcdServer
from rdzv.store.etcd import EtcdStore
from rdzv.store.tcp import TCPStore

WORKER_SCRIPT = str(HERE / "_load_worker.py")
PROCESSES, THREADS = 4, 64


@contextlib.contextmanager
def _workers(kind: str, endpoint: str) -> Iterator[list[subprocess.Popen[str]]]:
    workers: list[subprocess.Popen[str]] = []
    try:
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()


def _run_load(kind: str, endpoint: str, seconds: float) -> list[dict[str, Any]]:
    """Start the workers, let them connect, run them together; their results."""
    with _workers(kind, endpoint) as workers:
        for index in range(PROCESSES):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        WORKER_SCRIPT,
                        kind,
                        endpoint,
                        str(index),
                        str(THREADS),
                        str(seconds),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", "a load worker did not start"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=seconds + 180)
            assert worker.returncode == 0, f"a load worker exited with {worker.returncode}"
            results.append(json.loads(out))
        return results


def _check_and_summarise(results: list[dict[str, Any]], final_shared: int) -> dict[str, Any]:
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[:10]
    shared = sorted(v for r in results for v in r["shared"])
    # Each add returned a distinct total, and together they are 1..N: none lost, none twice.
    assert shared == list(range(1, len(shared) + 1)), "the shared counter lost or doubled adds"
    assert final_shared == len(shared)
    ops = sum(r["ops"] for r in results)
    seconds = max(r["seconds"] for r in results)
    assert all(count > 0 for r in results for count in r["own"].values()), "a client starved"
    return {
        "clients": PROCESSES * THREADS,
        "operations": ops,
        "ops_per_s": round(ops / seconds),
        "shared_adds": len(shared),
        "run_s": seconds,
        "slowest_shared_add_s": max(r["slowest_add"] for r in results),
    }


def test_256_clients_on_the_tcp_store_lose_no_add(
    load_seconds: float, record: Callable[..., None]
) -> None:
    """set/get/add from 256 clients for the whole run: no error, every get reads what its
    client set, every add counted exactly once, and the server's memory stays bounded."""
    with StoreServerProcess() as server:
        before = server.ask("memory")
        results = _run_load("tcp", f"{LOOPBACK}:{server.port}", load_seconds)
        with TCPStore(LOOPBACK, server.port, timeout=timedelta(seconds=30)) as store:
            final = int(store.get("load/shared"))
            for result in results:
                for name, adds in result["own"].items():
                    assert int(store.get(f"load/{name}/count")) == adds
        after = server.ask("memory")
    summary = _check_and_summarise(results, final)
    record(**summary, server_rss_before_kib=before["VmRSS"], server_peak_rss_kib=after["VmHWM"])


def test_256_clients_on_etcd_store_lose_no_add(
    etcd_server: EtcdServer, load_seconds: float, record: Callable[..., None]
) -> None:
    """The same load on EtcdStore, where add is a compare-and-swap loop that 256 clients
    contend on: no error, and every add counted exactly once. (An add in progress when
    the time is up finishes first: under this contention the run overshoots.)"""
    with contextlib.suppress(etcd.EtcdKeyNotFound):
        etcd_server.get_client().delete("/rdzv-load", recursive=True)
    started = time.monotonic()
    results = _run_load("etcd", etcd_server.get_endpoint(), load_seconds)
    store = EtcdStore(etcd_server.get_client(), "/rdzv-load", timeout=timedelta(seconds=30))
    final = int(store.get("load/shared"))
    for result in results:
        for name, adds in result["own"].items():
            assert int(store.get(f"load/{name}/count")) == adds
    summary = _check_and_summarise(results, final)
    record(**summary, wall_s=time.monotonic() - started)
