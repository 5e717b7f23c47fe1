"""Driving rendezvous nodes that run in their own OS processes (see ``_node.py``)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

NODE_SCRIPT = str(Path(__file__).with_name("_node.py"))


class Node:
    """One node process; commands go to its stdin, JSON events come from its stdout."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, NODE_SCRIPT, json.dumps(config)],
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

    def expect(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """The next event, which must be ``event``; fails with the node's stderr otherwise."""
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {event!r} within {timeout} s\n{self.stderr()}") from None
        if got is None:
            raise AssertionError(f"the node exited before {event!r}\n{self.stderr()}")
        if got["event"] != event:
            raise AssertionError(f"expected {event!r}, got {got}\n{self.stderr()}")
        return got

    def ask(self, command: str, event: str, timeout: float = 30) -> dict[str, Any]:
        self.send(command)
        return self.expect(event, timeout)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._stderr.close()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (absent, or a zombie awaiting its reaper).

    A process reaped between the open and the read of its ``stat`` makes the read
    fail with ``ProcessLookupError``: it is gone too (a clean-clone CI run met it).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True
