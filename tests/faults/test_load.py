"""256 store clients at once, on the TCP store and on EtcdStore: no error, no add lost.

The clients are 4 processes of 64 threads, each thread with a client of its own
(``_load_worker.py``). The run lasts ``$RDZV_FAULTS_LOAD_SECONDS`` (10 s by
default, as in CI; ``benchmarks/faults.py`` runs 60 s).

On the TCP store all 256 clients add to one counter (``add`` is one request the
server applies). EtcdStore's ``add`` is a read and compare-and-swap loop, which
256 clients on one key turn into a queue draining at a handful of adds a second on
2 cores (the run then overshoots by most of a minute): there they share 16
counters, 16 clients each.
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
def _workers() -> Iterator[list[subprocess.Popen[str]]]:
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


def _run_load(kind: str, endpoint: str, seconds: float, counters: int) -> list[dict[str, Any]]:
    """Start the workers, let them connect, run them together; their results."""
    with _workers() as workers:
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
                        str(counters),
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


def _check_and_summarise(results: list[dict[str, Any]], final: dict[str, int]) -> dict[str, Any]:
    """Check every result against the final counters; the figures of the run."""
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[:10]
    adds = 0
    for counter, total in final.items():
        returned = sorted(v for r in results for v in r["shared"].get(counter, []))
        # Each add returned a distinct total, together 1..N: none lost, none counted twice.
        assert returned == list(range(1, len(returned) + 1)), f"counter {counter} lost adds"
        assert total == len(returned), f"counter {counter}: {total}, {len(returned)} adds"
        adds += total
    ops = sum(r["ops"] for r in results)
    seconds = max(r["seconds"] for r in results)
    assert all(count > 0 for r in results for count in r["own"].values()), "a client starved"
    return {
        "clients": PROCESSES * THREADS,
        "operations": ops,
        "ops_per_s": round(ops / seconds),
        "shared_counters": len(final),
        "shared_adds": adds,
        "run_s": seconds,
        "slowest_shared_add_s": max(r["slowest_add"] for r in results),
    }


def test_256_clients_on_the_tcp_store_lose_no_add(
    load_seconds: float, record: Callable[..., None]
) -> None:
    """set/get/add from 256 clients for the whole run, all adding to one counter: no
    error, every get reads what its client set, every add counted exactly once."""
    with StoreServerProcess() as server:
        before = server.ask("memory")
        results = _run_load("tcp", f"{LOOPBACK}:{server.port}", load_seconds, counters=1)
        with TCPStore(LOOPBACK, server.port, timeout=timedelta(seconds=30)) as store:
            final = {"0": int(store.get("load/shared/0"))}
            for result in results:
                for name, adds in result["own"].items():
                    assert int(store.get(f"load/{name}/count")) == adds
        after = server.ask("memory")
    summary = _check_and_summarise(results, final)
    record(**summary, server_rss_before_kib=before["VmRSS"], server_peak_rss_kib=after["VmHWM"])


def test_256_clients_on_etcd_store_lose_no_add(
    etcd_server: EtcdServer, load_seconds: float, record: Callable[..., None]
) -> None:
    """The same load on EtcdStore, where add is a compare-and-swap loop (16 clients
    contend on each of 16 counters): no error, every add counted exactly once."""
    with contextlib.suppress(etcd.EtcdKeyNotFound):
        etcd_server.get_client().delete("/rdzv-load", recursive=True)
    started = time.monotonic()
    results = _run_load("etcd", etcd_server.get_endpoint(), load_seconds, counters=16)
    store = EtcdStore(etcd_server.get_client(), "/rdzv-load", timeout=timedelta(seconds=30))
    final = {str(n): int(store.get(f"load/shared/{n}")) for n in range(16)}
    for result in results:
        for name, adds in result["own"].items():
            assert int(store.get(f"load/{name}/count")) == adds
    summary = _check_and_summarise(results, final)
    record(**summary, wall_s=time.monotonic() - started)
