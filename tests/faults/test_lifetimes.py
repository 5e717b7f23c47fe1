"""Objects dropped without being closed, and collected anywhere: nothing hangs or leaks.

TCP stores (hosts, shared hosts, clients), file stores and c10d handlers are made
by several threads in several processes and dropped inside reference cycles, so
that the garbage collector frees them on whatever thread it runs, also inside a
store server's start-up; ``_lifetime_worker.py`` forces collections at random
calls. Before finalizers handed their work to the reaper, a collection inside
``_start_server`` ran a dropped store's finalizer, which waited for the lock its
own thread held: this test hung on its first seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _faults import HERE

WORKER_SCRIPT = str(HERE / "_lifetime_worker.py")
PROCESSES, THREADS, SECONDS = 2, 4, 15.0
_HANG_GRACE = 120.0
"""The worker's own watchdog fires after SECONDS + 80 s; this bounds the test beyond it."""


def test_dropped_stores_and_handlers_neither_hang_nor_leak(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, str(SECONDS), str(THREADS), str(seed), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCESSES)
    ]
    reports: list[dict[str, Any]] = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=SECONDS + _HANG_GRACE)
            assert worker.returncode == 0, f"a worker hung or failed:\n{out[-2000:]}\n{err}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    for report in reports:
        before, after = report["before"], report["after"]
        assert after["servers"] == 0, report
        assert after["threads"] <= before["threads"], report
        assert after["fds"] <= before["fds"], report
    created: dict[str, int] = {}
    for report in reports:
        for kind, count in report["created"].items():
            created[kind] = created.get(kind, 0) + count
    record(
        objects=sum(created.values()),
        **{kind.replace(" ", "_"): count for kind, count in sorted(created.items())},
        collections=sum(r["collections"] for r in reports),
        threads=[(r["before"]["threads"], r["after"]["threads"]) for r in reports],
        fds=[(r["before"]["fds"], r["after"]["fds"]) for r in reports],
        servers=[(r["before"]["servers"], r["after"]["servers"]) for r in reports],
    )
