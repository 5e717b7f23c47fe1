"""The reaper: a dropped object's release never runs inside the garbage collector."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from rdzv._reaper import track

_BOUND = 10.0


class Owner:
    """Something that holds a resource; ``cycle`` keeps it for the collector alone."""

    def __init__(self) -> None:
        self.cycle = self


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {_BOUND} s: {what}"
        time.sleep(0.01)


def test_an_explicit_release_runs_once_on_the_callers_thread() -> None:
    ran: list[str] = []
    owner = Owner()
    release = track(owner, lambda: ran.append(threading.current_thread().name), "owner")
    release()
    release()
    assert ran == [threading.current_thread().name]
    assert not release.alive
    del owner
    gc.collect()
    time.sleep(0.05)
    assert len(ran) == 1


def test_a_collected_owners_release_runs_on_the_reaper_not_in_the_collector() -> None:
    ran: list[str] = []
    done = threading.Event()

    def release() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    owner = Owner()
    track(owner, release, "owner")
    del owner
    gc.collect()
    assert done.wait(_BOUND)
    assert ran == ["rdzv-reaper"]


def test_a_collection_under_the_lock_a_release_needs_does_not_deadlock() -> None:
    # The deadlock of issue 20: a thread holds a lock, a collection on that very
    # thread frees an object whose release takes the same lock.
    lock = threading.Lock()
    released = threading.Event()

    def release() -> None:
        with lock:
            released.set()

    owner = Owner()
    track(owner, release, "owner")
    del owner
    with lock:
        gc.collect()  # before the reaper, this never returned
        assert not released.is_set()
    assert released.wait(_BOUND)


def test_a_failing_release_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = threading.Event()

    def fail() -> None:
        raise OSError("the disk is gone")

    first, second = Owner(), Owner()
    track(first, fail, "broken thing")
    track(second, done.set, "owner")
    with caplog.at_level(logging.ERROR, logger="rdzv._reaper"):
        del first, second
        gc.collect()
        assert done.wait(_BOUND)
    assert "Releasing a dropped broken thing failed" in caplog.text


def test_the_reaper_thread_ends_once_nothing_is_tracked() -> None:
    # In a fresh interpreter: in this one, other tests' objects may still be tracked.
    script = textwrap.dedent(
        """
        import time
        from rdzv._reaper import reaper_alive, track

        class Owner:
            pass

        owner = Owner()
        release = track(owner, lambda: None, "owner")
        assert reaper_alive()
        release()
        deadline = time.monotonic() + 10
        while reaper_alive():
            assert time.monotonic() < deadline, "the reaper still runs 10 s after"
            time.sleep(0.01)
        print("ended", flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout == "ended\n", result.stderr


def test_releases_still_pending_run_at_interpreter_exit() -> None:
    script = textwrap.dedent(
        """
        from rdzv._reaper import track

        class Owner:
            pass

        kept = Owner()
        track(kept, lambda: print("released at exit", flush=True), "owner")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "released at exit\n"
