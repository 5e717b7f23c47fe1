"""Work done in other OS processes by the TCP and file store tests.

Run as a script, so that each worker process imports only rdzv (a spawned
multiprocessing worker would import pytest as well, which on a loaded machine costs
seconds for eight of them)::

    python _store_workers.py tcp|file PORT|PATH add KEY TIMES
    python _store_workers.py tcp|file PORT|PATH set_after KEY VALUE DELAY

The result is printed as JSON on one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rdzv.store.base import Store
from rdzv.store.file import FileStore
from rdzv.store.tcp import TCPStore


def set_after(store: Store, key: str, value: bytes, delay: float) -> float:
    """Sleep ``delay`` seconds, set ``key``; return the wall-clock time of the set."""
    time.sleep(delay)
    store.set(key, value)
    return time.time()


def add_many(store: Store, key: str, times: int) -> list[int]:
    """Count in under ``ready``, wait for ``go``, add 1 to ``key`` ``times`` times.

    Returns every value ``add`` returned.
    """
    store.add("ready", 1)
    store.wait(["go"])
    return [store.add(key, 1) for _ in range(times)]


def start(kind: str, where: object, action: str, *args: object) -> subprocess.Popen[str]:
    """Run this module in a new Python process with the given arguments (see the top)."""
    command = [sys.executable, str(Path(__file__)), kind, str(where), action, *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str], timeout: float = 60) -> Any:
    """Wait for a worker started by :func:`start` and return what it printed."""
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"worker exited with {process.returncode}"
    return json.loads(out)


def stop(*processes: subprocess.Popen[str]) -> None:
    """Kill the workers still running (a test failed) and reap them all."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def wait_until_ready(store: Store, workers: int, timeout: float = 60) -> None:
    """Return once ``workers`` processes running ``add_many`` have counted in."""
    deadline = time.monotonic() + timeout
    while int(store.get_if_exists("ready") or 0) < workers:
        assert time.monotonic() < deadline, "the workers did not start in time"
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    kind, where, action, key, *rest = argv
    timeout = timedelta(seconds=30)
    store: Store
    if kind == "tcp":
        store = TCPStore("127.0.0.1", int(where), timeout=timeout)
    else:
        store = FileStore(where, timeout=timeout)
    with store:
        if action == "add":
            result: object = add_many(store, key, int(rest[0]))
        else:
            result = set_after(store, key, rest[0].encode(), float(rest[1]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
