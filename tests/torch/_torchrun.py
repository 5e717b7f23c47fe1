"""Running ``torchrun`` agents as separate process groups, and cleaning up after them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRAIN_SCRIPT = str(Path(__file__).with_name("_train.py"))


def torchrun_command() -> list[str]:
    """The ``torchrun`` of this interpreter's environment (the module when no script)."""
    script = Path(sys.executable).with_name("torchrun")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float) -> None:
    """Block until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.1)


def _is_our_trainer(pid: int) -> bool:
    # A pid from a marker file may have been reused once the trainer exited.
    try:
        return TRAIN_SCRIPT.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Agent:
    """One torchrun agent in a new session; its output goes to a file."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*torchrun_command(), *args, TRAIN_SCRIPT],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**env, "RDZV_TEST_NODE": name},
            start_new_session=True,
        )

    def wait(self, timeout: float) -> int:
        """The agent's exit code; fails with its log when it runs longer than ``timeout``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"torchrun {self.name} still runs after {timeout} s\n{self.output()}"
            ) from None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the agent's process group (its trainers run in sessions of their own)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, grace: float = 15) -> None:
        """SIGTERM (torchrun then stops its trainers), SIGKILL after ``grace`` seconds."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Job:
    """The torchrun agents of one test and the files their trainers write."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.agents: list[Agent] = []
        self.env = {
            **os.environ,
            "RDZV_TEST_DIR": str(workdir),
            "GLOO_SOCKET_IFNAME": "lo",
            "TP_SOCKET_IFNAME": "lo",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, args: list[str], **env: str) -> Agent:
        agent = Agent(name, args, self.workdir, {**self.env, **env})
        self.agents.append(agent)
        return agent

    def starts(self) -> list[dict[str, Any]]:
        """What each trainer start recorded after its all-reduce, oldest first."""
        paths = sorted(self.workdir.glob("start-*.json"), key=lambda p: p.stat().st_mtime)
        return [json.loads(p.read_text()) for p in paths]

    def logs(self) -> str:
        return "\n".join(f"--- torchrun {a.name}\n{a.output()[-6000:]}" for a in self.agents)

    def wait_for_starts(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        """Block until ``predicate(starts)`` holds; fail with the agents' logs after
        ``timeout`` or once every agent has exited."""
        deadline = time.monotonic() + timeout
        while not predicate(starts := self.starts()):
            if time.monotonic() > deadline or all(
                a.process.poll() is not None for a in self.agents
            ):
                raise AssertionError(f"no {what}: {starts}\n{self.logs()}")
            time.sleep(0.2)
        return starts

    def kill_trainers(self, node: str | None = None) -> None:
        """SIGKILL the sessions of the trainers started (of ``node`` only, when given)."""
        for path in self.workdir.glob("pid-*"):
            pid = int(path.read_text())
            if node is not None and not any(
                r["pid"] == pid and r["node"] == node for r in self.starts()
            ):
                continue
            if _is_our_trainer(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.kill_trainers()
