"""The test suites' watchdog: a hang prints every thread's stack and ends the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_HANGING_TEST = """
import gc
import threading


class Owner:
    def __init__(self):
        self.cycle = self


def test_a_finalizer_that_waits_for_a_lock_its_thread_holds():
    import weakref

    # Two finalizers wait for the lock this thread holds: a timeout raised in the
    # first is discarded by Python, and the second waits for ever.
    lock = threading.Lock()
    owners = [Owner(), Owner()]
    for owner in owners:
        weakref.finalize(owner, lock.acquire)
    del owner, owners
    with lock:
        gc.collect()
"""


def test_a_hang_inside_a_finalizer_prints_every_stack_and_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(_HANGING_TEST)
    # The project's own configuration, with the timeout shortened for the test.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            "--timeout=2",
            str(tmp_path / "test_hang.py"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Timeout" in output, output
    assert "test_a_finalizer_that_waits_for_a_lock_its_thread_holds" in output, output
