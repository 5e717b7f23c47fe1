"""One process of the object-lifetime stress test (``test_lifetimes.py``).

Usage: ``python _lifetime_worker.py SECONDS THREADS SEED DIR``.

``THREADS`` threads create TCP stores (hosts, shared hosts and clients), file stores
and c10d handlers for ``SECONDS`` seconds and drop each one inside a reference
cycle, so that only the garbage collector frees it, on whichever thread it happens
to run. A profile hook on every thread (the store servers' loop threads included,
from their first call) forces ``gc.collect()`` at random calls. Nothing is closed
by hand.

The last line printed is a JSON object: what was created, the collections forced,
the errors raised, and the threads, file descriptors and store servers before and
after; the exit status is 1 if there was an error. A hang makes ``faulthandler``
print every thread's stack and exit with status 1.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from rdzv.api import RendezvousParameters
from rdzv.registry import get_rendezvous_handler
from rdzv.store.file import FileStore
from rdzv.store.tcp import TCPStore

LOOPBACK = "127.0.0.1"
SERVER_THREAD = "rdzv-tcp-store-server"
COLLECT_EVERY = 2_000
"""A forced collection once in this many profiled calls, on average."""
SETTLE_SECONDS = 20.0


def _threads() -> Counter[str]:
    return Counter(t.name.split(":")[0] for t in threading.enumerate())


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _servers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(SERVER_THREAD))


class Stress:
    def __init__(self, seconds: float, seed: int, directory: str) -> None:
        self.deadline = time.monotonic() + seconds
        self.seed = seed
        self.directory = directory
        self.created: Counter[str] = Counter()
        self.collections = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        rng: random.Random | None = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = random.Random(f"{self.seed}-{threading.get_ident()}")
        if rng.randrange(COLLECT_EVERY) == 0:
            gc.collect()
            self.collections += 1

    def drop(self, kind: str, obj: object) -> None:
        """Leave ``obj`` in a reference cycle: only the collector can free it."""
        cycle: list[object] = [obj]
        cycle.append(cycle)
        with self._lock:
            self.created[kind] += 1

    def run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-worker-{index}")
        actions = [self.tcp_host, self.tcp_shared, self.tcp_client, self.file, self.c10d]
        while time.monotonic() < self.deadline:
            try:
                rng.choice(actions)(rng)
            except Exception as e:
                with self._lock:
                    self.errors.append(f"{type(e).__name__}: {e}")

    def tcp_host(self, rng: random.Random) -> None:
        shared = rng.random() < 0.5
        self.drop("tcp host", TCPStore(LOOPBACK, 0, is_master=True, multi_tenant=shared))

    def tcp_shared(self, rng: random.Random) -> None:
        first = TCPStore(LOOPBACK, 0, is_master=True, multi_tenant=True)
        second = TCPStore(LOOPBACK, first.port, is_master=True, multi_tenant=True)
        self.drop("tcp host", first)
        self.drop("tcp shared host", second)

    def tcp_client(self, rng: random.Random) -> None:
        host = TCPStore(LOOPBACK, 0, is_master=True, multi_tenant=True)
        client = TCPStore(LOOPBACK, host.port, timeout=timedelta(seconds=10))
        client.set("key", b"value")
        self.drop("tcp client", client)
        self.drop("tcp host", host)

    def file(self, rng: random.Random) -> None:
        path = os.path.join(self.directory, f"store-{rng.randrange(8)}")
        store = FileStore(path, world_size=-1)
        store.add("count", 1)
        self.drop("file store", store)

    def c10d(self, rng: random.Random) -> None:
        params = RendezvousParameters(
            "c10d", f"{LOOPBACK}:0", f"run-{rng.randrange(1 << 30)}", 1, 1, is_host=True
        )
        self.drop("c10d handler", get_rendezvous_handler(params))


def _settle(before_threads: int, before_fds: int) -> None:
    """Collect until every dropped object is released, or ``SETTLE_SECONDS`` pass."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        gc.collect()
        if threading.active_count() <= before_threads and _fds() <= before_fds:
            return
        time.sleep(0.1)


def main() -> int:
    seconds, threads, seed, directory = (
        float(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    faulthandler.dump_traceback_later(seconds + SETTLE_SECONDS + 60, exit=True)
    before = {"threads": threading.active_count(), "fds": _fds(), "servers": _servers()}
    stress = Stress(seconds, seed, directory)
    threading.setprofile(stress.profile)
    sys.setprofile(stress.profile)
    workers = [
        threading.Thread(target=stress.run, args=(i,), name=f"stress-{i}") for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sys.setprofile(None)
    threading.setprofile(None)  # type: ignore[arg-type]
    _settle(before["threads"], before["fds"])
    faulthandler.cancel_dump_traceback_later()
    after = {"threads": threading.active_count(), "fds": _fds(), "servers": _servers()}
    report = {
        "created": dict(stress.created),
        "collections": stress.collections,
        "errors": stress.errors,
        "before": before,
        "after": after,
        "left": {k: v for k, v in _threads().items() if k != "MainThread"},
    }
    print(json.dumps(report), flush=True)
    return 1 if stress.errors else 0


if __name__ == "__main__":
    sys.exit(main())
