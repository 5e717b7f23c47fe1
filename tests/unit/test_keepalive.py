"""The keep-alive thread: stopping it never waits without bound."""

from __future__ import annotations

import threading

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
