"""One process of the load test: THREADS store clients doing set/get/add for SECONDS.

Usage: ``python _load_worker.py tcp|etcd HOST:PORT WORKER THREADS SECONDS COUNTERS``.

Every thread has a client of its own (a ``TCPStore``, or an ``EtcdStore`` on its own
etcd client). Once all are connected the worker prints ``ready`` and waits for a
line on stdin; then each thread loops: ``set`` its key, ``get`` it back (it must
read what it wrote), ``add`` 1 to a shared counter (client ``i`` of the whole
test uses counter ``i % COUNTERS``) and ``add`` 1 to its own counter (which must
return how many adds it made). At the end the worker prints one JSON line:
operations done, errors, every value each shared counter's ``add`` returned (to
check that each add was counted exactly once), each thread's count of its own
adds, and the slowest add to a shared counter.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import timedelta

import etcd

from rdzv.store.base import Store
from rdzv.store.etcd import EtcdStore
from rdzv.store.tcp import TCPStore

SHARED = "load/shared/{}"
TIMEOUT = timedelta(seconds=60)


def connect(kind: str, host: str, port: int) -> Store:
    if kind == "tcp":
        return TCPStore(host, port, timeout=TIMEOUT)
    client = etcd.Client(host=host, port=port, read_timeout=60)
    return EtcdStore(client, "/rdzv-load", timeout=TIMEOUT)


class Client:
    def __init__(self, store: Store, name: str, counter: int) -> None:
        self.store = store
        self.name = name
        self.counter = counter
        self.ops = 0
        self.own_adds = 0
        self.shared: list[int] = []
        self.slowest_add = 0.0
        self.errors: list[str] = []

    def run(self, until: float) -> None:
        key, counter = f"load/{self.name}/key", f"load/{self.name}/count"
        shared = SHARED.format(self.counter)
        i = 0
        try:
            while time.monotonic() < until:
                value = f"{self.name}:{i}".encode()
                self.store.set(key, value)
                got = self.store.get(key)
                if got != value:
                    self.errors.append(f"{self.name}: get returned {got!r}, not {value!r}")
                    return
                started = time.monotonic()
                self.shared.append(self.store.add(shared, 1))
                self.slowest_add = max(self.slowest_add, time.monotonic() - started)
                own = self.store.add(counter, 1)
                self.own_adds += 1
                if own != self.own_adds:
                    self.errors.append(f"{self.name}: own counter {own}, {self.own_adds} adds")
                    return
                self.ops += 4
                i += 1
        except Exception as e:
            self.errors.append(f"{self.name}: {type(e).__name__}: {e}")


def main(argv: list[str]) -> None:
    kind, endpoint, worker, threads, seconds, counters = argv
    host, port = endpoint.rsplit(":", 1)
    first = int(worker) * int(threads)
    clients = [
        Client(connect(kind, host, int(port)), f"w{worker}t{t}", (first + t) % int(counters))
        for t in range(int(threads))
    ]
    print("ready", flush=True)
    sys.stdin.readline()
    until = time.monotonic() + float(seconds)
    started = time.monotonic()
    runners = [threading.Thread(target=c.run, args=(until,)) for c in clients]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    elapsed = time.monotonic() - started
    result = {
        "ops": sum(c.ops for c in clients),
        "seconds": elapsed,
        "errors": [e for c in clients for e in c.errors],
        "shared": {
            str(n): sorted(v for c in clients if c.counter == n for v in c.shared)
            for n in sorted({c.counter for c in clients})
        },
        "own": {c.name: c.own_adds for c in clients},
        "slowest_add": max(c.slowest_add for c in clients),
    }
    for client in clients:
        client.store.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
