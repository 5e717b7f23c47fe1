"""The keep-alive thread: stopping it never waits without bound; an error does not end it."""

from __future__ import annotations

import logging
import threading

import pytest

from rdzv.dynamic.keepalive import KeepAliveThread


class _Beater:
    def __init__(self, hang: threading.Event | None = None) -> None:
        self.hang = hang
        self.started = threading.Event()

    def beat(self) -> float:
        self.started.set()
        if self.hang is not None:
            self.hang.wait()
        return 0.01


def test_stop_ends_the_thread_and_says_so() -> None:
    beater = _Beater()
    thread = KeepAliveThread(beater.beat, 0.0, "test-keep-alive")
    assert beater.started.wait(5)
    assert thread.stop(5.0)


def test_stop_gives_up_on_a_beat_that_hangs_after_its_timeout() -> None:
    release = threading.Event()
    beater = _Beater(release)
    thread = KeepAliveThread(beater.beat, 0.0, "test-keep-alive")
    assert beater.started.wait(5)
    assert not thread.stop(0.05)  # the beat is still in flight: stop returns anyway
    release.set()
    assert thread.stop(5.0)


class _FailsOnce:
    def __init__(self) -> None:
        self.calls = 0
        self.again = threading.Event()

    def beat(self) -> float:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("a bug")
        self.again.set()
        return 60.0


def test_an_unexpected_error_of_a_beat_is_logged_and_the_beats_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ended by it, the thread left its node to be dropped, join again (which did not
    start it again), and be dropped again, for ever."""
    beater = _FailsOnce()
    thread = KeepAliveThread(beater.beat, 0.0, "test-keep-alive")
    try:
        assert beater.again.wait(5)
    finally:
        assert thread.stop(5.0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "test-keep-alive" in errors[0].message and errors[0].exc_info
