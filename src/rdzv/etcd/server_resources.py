"""What an :class:`~rdzv.etcd.server.EtcdServer` must release: its process and its paths.

Kept apart from the server so that the reaper (:mod:`rdzv._reaper`) can release
them without holding the server alive: when the server is collected, at
interpreter exit, or on :meth:`~rdzv.etcd.server.EtcdServer.stop`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile

from rdzv.etcd.process import EtcdServerTimeoutError

__all__ = ["ServerResources"]

# The server's own messages: they keep the name they were always logged under.
logger = logging.getLogger("rdzv.etcd.server")

_STOP_GRACE_PERIOD = 10.0
_KILL_WAIT = 10.0
"""Seconds to wait for etcd to exit after SIGKILL: only a process stuck in the kernel is slower."""


class ServerResources:
    """The etcd process of a server and the paths it created, with who may release them.

    Attributes:
        owner_pid: the process that started etcd; only it releases anything.
        process: the running etcd, or ``None``.
        owned_paths: the temporary directory and log that :meth:`remove_paths` removes.
    """

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.process: subprocess.Popen[bytes] | None = None
        self.owned_paths: list[str] = []

    def prepare_paths(self, data_dir: str | None, log_path: str | None) -> tuple[str, str]:
        """The data directory and log file to use, made and owned where ``None``.

        A ``data_dir`` given is created if missing (and kept); a temporary one, like
        the log file, is removed by :meth:`remove_paths`.
        """
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="rdzv-etcd-data-")
            self.owned_paths.append(data_dir)
        else:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="rdzv-etcd-", suffix=".log")
            os.close(handle)
            self.owned_paths.append(log_path)
        return data_dir, log_path

    def stop_process(self, kill: bool = False) -> None:
        """Stop etcd: SIGTERM then SIGKILL after the grace period, or SIGKILL at once.

        Raises:
            EtcdServerTimeoutError: etcd is still there ``_KILL_WAIT`` s after SIGKILL.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if not kill:
            process.terminate()
            try:
                process.wait(_STOP_GRACE_PERIOD)
                return
            except subprocess.TimeoutExpired:
                logger.warning("etcd (pid %d) ignored SIGTERM; killing it.", process.pid)
        process.kill()
        try:
            process.wait(_KILL_WAIT)
        except subprocess.TimeoutExpired:
            raise EtcdServerTimeoutError(
                f"etcd (pid {process.pid}) did not exit within {_KILL_WAIT:.0f} s of SIGKILL: "
                "it is stuck in the kernel (`ps -o stat= -p PID` shows D for a stuck disk). "
                "It is left to the operating system; its data directory is kept."
            ) from None

    def remove_paths(self) -> None:
        """Remove the owned paths (directories with their contents); missing ones are fine."""
        for path in self.owned_paths:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
        self.owned_paths.clear()

    def release(self) -> None:
        """Stop etcd and remove the owned paths, in the process that started etcd only."""
        # A forked child inherits the finalizer; only the process that started
        # etcd may stop it.
        if os.getpid() != self.owner_pid:
            return
        self.stop_process()
        self.remove_paths()
