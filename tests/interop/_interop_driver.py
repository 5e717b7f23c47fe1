"""Driving the node processes of ``_interop_node.py`` from a test."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_SCRIPT = str(Path(__file__).with_name("_interop_node.py"))


class Node:
    """One node process of ``impl`` (torch or rdzv): commands in, JSON events out."""

    def __init__(self, impl: str, config: dict[str, Any]) -> None:
        self.impl = impl
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, NODE_SCRIPT, json.dumps({**config, "impl": impl})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._events.put(json.loads(line))
        self._events.put(None)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The next event, which must be ``event``; fails with the node's stderr otherwise."""
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.impl} node: no {event!r} within {timeout} s\n{self.stderr()}"
            ) from None
        if got is None:
            raise AssertionError(f"{self.impl} node exited before {event!r}\n{self.stderr()}")
        if got["event"] != event:
            raise AssertionError(
                f"{self.impl} node: expected {event!r}, got {got}\n{self.stderr()}"
            )
        return got

    def ask(self, command: str, event: str, timeout: float = 60) -> dict[str, Any]:
        self.send(command)
        return self.expect(event, timeout)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
