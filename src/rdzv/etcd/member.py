"""One member of a local etcd cluster: its ports, data, log and process, and its faults.

:class:`~rdzv.etcd.cluster.EtcdCluster` starts several of these on loopback.
A member keeps its ports and data across a kill and a restart, so a restarted
member rejoins the cluster as itself.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
from typing import Any

from rdzv.etcd.process import (
    EtcdServerError,
    EtcdServerTimeoutError,
    spawn,
    summarize_log_line,
)

__all__ = ["HOST", "EtcdMember"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"

_STOP_GRACE_PERIOD = 5.0
_KILL_WAIT = 10.0
_LOG_TAIL_LINES = 10


class EtcdMember:
    """A member of a local cluster, named ``m<index>``; started and stopped by its cluster.

    Attributes:
        index: its place in the cluster's list (and in the endpoint list).
        client_port, peer_port: where it serves clients and other members.
        data_dir, log_path: its data directory and the file that gets its output.
    """

    def __init__(
        self, index: int, client_port: int, peer_port: int, data_dir: str, log_path: str
    ) -> None:
        self.index = index
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def name(self) -> str:
        """The member's etcd name (``--name``)."""
        return f"m{self.index}"

    @property
    def endpoint(self) -> str:
        """``host:port`` of its client API, as rendezvous endpoints are written."""
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """``http://host:port`` of its client API."""
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``http://host:port`` where the other members reach it."""
        return f"http://{HOST}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """Its process id while it runs (paused or not), else ``None``."""
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def is_running(self) -> bool:
        """Whether its process is alive (a paused member is)."""
        return self.pid is not None

    def launch(self, command: list[str]) -> None:
        """Start its etcd process with ``command``; return at once (see :meth:`answers`).

        Raises:
            EtcdServerError: the binary could not be run.
        """
        self.process, _ = spawn(command, self.log_path)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, as a crash; wait for the process to go.

        Raises:
            EtcdServerTimeoutError: it is still there 10 s after SIGKILL.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        self.paused = False
        try:
            process.wait(_KILL_WAIT)
        except subprocess.TimeoutExpired:
            raise EtcdServerTimeoutError(
                f"etcd member {self.name} (pid {process.pid}) did not exit within "
                f"{_KILL_WAIT:.0f} s of SIGKILL: it is stuck in the kernel."
            ) from None

    def stop(self) -> None:
        """SIGTERM (after SIGCONT if paused), then SIGKILL if it lingers."""
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return
        process.terminate()
        if self.paused:
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(_STOP_GRACE_PERIOD)
        except subprocess.TimeoutExpired:
            logger.warning("etcd member %s ignored SIGTERM; killing it.", self.name)
        self.kill()

    def pause(self) -> None:
        """SIGSTOP: the member hangs, its sockets open, as a hung or partitioned host."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def _signal(self, signum: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            raise EtcdServerError(f"etcd member {self.name} is not running.")
        os.kill(pid, signum)

    def answers(self, timeout: float) -> bool:
        """Whether it serves a linearizable v3 read now (it then has a leader)."""
        return self.post("/v3/kv/range", {"key": "AA=="}, timeout) is not None

    def post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """POST JSON to its client API; the answer, or ``None`` on any failure."""
        connection = http.client.HTTPConnection(HOST, self.client_port, timeout=timeout)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
        if response.status != 200:
            return None
        try:
            result = json.loads(data)
        except ValueError:
            return None
        return result if isinstance(result, dict) else None

    def log_tail(self) -> str:
        """Its last log lines, summarised, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(summarize_log_line(line) for line in lines[-_LOG_TAIL_LINES:])
