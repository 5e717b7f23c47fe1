"""What the fault tests share: node processes, a store server process, state readers.

Every process started here is stopped by the code that started it, also when a
test fails: :class:`Nodes` and :class:`StoreServerProcess` are context managers,
and only the pids they started are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import etcd

from rdzv.backends.c10d import C10dRendezvousBackend
from rdzv.backends.etcd import EtcdRendezvousBackend
from rdzv.core import RendezvousState, decode_state
from rdzv.etcd_server import EtcdServer
from rdzv.store.tcp import TCPStore

HERE = Path(__file__).parent
NODE_SCRIPT = str(HERE / "_fault_node.py")
SERVER_SCRIPT = str(HERE / "_store_server.py")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return False


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class Node:
    """One node process (``_fault_node.py``); commands to its stdin, JSON events from stdout."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
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
        self.id = ""
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._events.put(json.loads(line))
        self._events.put(None)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def next_event(self, timeout: float) -> dict[str, Any]:
        """The next event, whatever it is; fails if none comes or the process exited."""
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s\n{self.stderr()}") from None
        if got is None:
            raise AssertionError(f"the node exited\n{self.stderr()}")
        return got

    def expect(self, event: str, timeout: float = 60) -> dict[str, Any]:
        """The next event, which must be ``event``; fails with the node's stderr otherwise."""
        got = self.next_event(timeout)
        if got["event"] != event:
            raise AssertionError(f"expected {event!r}, got {got}\n{self.stderr()}")
        return got

    def ask(self, command: str, event: str, timeout: float = 60) -> dict[str, Any]:
        self.send(command)
        return self.expect(event, timeout)

    def pending(self) -> bool:
        """Whether an event arrived that nobody has taken yet."""
        return not self._events.empty()

    def stderr(self, tail: int | None = 6000) -> str:
        """What the node wrote to stderr: the last ``tail`` characters, or all of it."""
        self._stderr.seek(0)
        text = self._stderr.read()
        return text if tail is None else text[-tail:]

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.thaw()
            try:
                self.send("exit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        with contextlib.suppress(OSError):
            self._stderr.close()


class Nodes:
    """Starts node processes of one run and stops them all on exit."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.all: list[Node] = []

    def start(self, count: int = 1, **overrides: Any) -> list[Node]:
        """Start ``count`` nodes: the first alone (on c10d it hosts the store), then the rest
        all at once; return once every one is ready."""
        config = {**self.base, **overrides}
        config["options"] = {**self.base.get("options", {}), **overrides.get("options", {})}
        started: list[Node] = []
        for batch in ([0], range(1, count)):
            spawned = [Node(config) for _ in batch]
            self.all.extend(spawned)
            for node in spawned:
                node.ready = node.expect("ready", 60)
                node.id = node.ready["node"]
            started.extend(spawned)
        return started

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for node in self.all:
            node.close()


def join(nodes: list[Node], timeout: float = 90) -> list[dict[str, Any]]:
    """``next`` on every node at once; their ``round`` events."""
    for node in nodes:
        node.send("next")
    return [node.expect("round", timeout) for node in nodes]


def assert_one_round(rounds: list[dict[str, Any]], size: int) -> None:
    """Every node in the same round of ``size`` with ranks ``0..size-1``."""
    assert len({r["round"] for r in rounds}) == 1, rounds
    assert {r["world_size"] for r in rounds} == {size}, rounds
    assert sorted(r["rank"] for r in rounds) == list(range(size)), rounds


# -- reading the state as a node would, without joining ------------------------------------


@contextlib.contextmanager
def state_reader(
    backend: str, endpoint: str, run_id: str
) -> Iterator[Callable[[], RendezvousState | None]]:
    """A function that reads and decodes the run's state (``None``: no state)."""
    host, port = endpoint.rsplit(":", 1)
    if backend == "etcd-v2":
        client = etcd.Client(host=host, port=int(port), read_timeout=10)
        etcd_backend = EtcdRendezvousBackend(client, run_id)

        def read_etcd() -> RendezvousState | None:
            result = etcd_backend.get_state()
            return None if result is None else decode_state(result[0])

        yield read_etcd
        return
    with TCPStore(host, int(port), timeout=timedelta(seconds=10)) as store:
        c10d_backend = C10dRendezvousBackend(store, run_id)

        def read_c10d() -> RendezvousState | None:
            result = c10d_backend.get_state()
            return None if result is None else decode_state(result[0])

        yield read_c10d


def participant_ids(state: RendezvousState | None) -> set[str]:
    return set() if state is None else {str(n) for n in state.participants}


# -- a TCP store server in a process of its own ---------------------------------------------


class StoreServerProcess:
    """``_store_server.py``: a TCPStoreServer alone in a process, so that its RSS is its own."""

    def __init__(self, token: str | None = None, handshake_timeout: float = 10.0) -> None:
        args = [sys.executable, SERVER_SCRIPT, "--handshake-timeout", str(handshake_timeout)]
        env = dict(os.environ)
        env.pop("RDZV_AUTH_TOKEN", None)
        if token is not None:
            env["RDZV_AUTH_TOKEN"] = token
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError("the store server process did not start")
        self.port = int(json.loads(line)["port"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, command: str) -> dict[str, Any]:
        """``connections`` (open connections) or ``memory`` (RSS, peak RSS in KiB)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> StoreServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def etcd_endpoint(server: EtcdServer) -> dict[str, Any]:
    return {"backend": "etcd-v2", "endpoint": server.get_endpoint()}
